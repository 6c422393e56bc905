// Added tokens: found by a byte trie in the raw or normalized text and cut out as pieces of their own,
// with HF's single_word / lstrip / rstrip rules.
#include <algorithm>

#include "components/tokenizer/tokenizer_pipeline.h"

namespace automodel::tokenizer::detail {

void Matcher::add(const std::string& pattern, const AddedToken* t) {
  if (pattern.empty()) return;
  int n = 0;
  for (unsigned char c : pattern) {
    auto it = nodes[n].next.find(c);
    if (it == nodes[n].next.end()) {
      nodes.push_back(Node{});
      int child = static_cast<int>(nodes.size()) - 1;
      nodes[n].next.emplace(c, child);
      n = child;
    } else {
      n = it->second;
    }
  }
  if (nodes[n].token < 0) {
    nodes[n].token = static_cast<int>(tokens.size());
    tokens.push_back(t);
  }
}

std::vector<std::tuple<size_t, size_t, const AddedToken*>> Matcher::find(std::string_view s) const {
  std::vector<std::tuple<size_t, size_t, const AddedToken*>> out;
  for (size_t i = 0; i < s.size();) {
    int n = 0, best = -1;
    size_t best_end = 0;
    for (size_t k = i; k < s.size(); ++k) {
      auto it = nodes[n].next.find(static_cast<unsigned char>(s[k]));
      if (it == nodes[n].next.end()) break;
      n = it->second;
      if (nodes[n].token >= 0) {
        best = nodes[n].token;
        best_end = k + 1;
      }
    }
    if (best >= 0) {
      out.emplace_back(i, best_end, tokens[static_cast<size_t>(best)]);
      i = best_end;
    } else {
      ++i;
    }
  }
  return out;
}

namespace {

uint32_t last_char(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  size_t len;
  return u::decode_at(s, i, &len);
}

}  // namespace

void split_added(Piece p, const Matcher& m, std::vector<Piece>& out) {
  if (m.empty() || p.s.empty()) {
    if (!p.s.empty()) out.push_back(std::move(p));
    return;
  }
  std::string_view s = p.s;
  size_t start_offset = 0;
  for (auto [start, stop, t] : m.find(s)) {
    if (t->single_word) {
      bool start_space = true;
      if (start != 0) {
        uint32_t c = last_char(s.substr(0, start));
        start_space = !u::is_word_char(c);
      }
      bool stop_space = true;
      if (stop != s.size()) {
        size_t len;
        uint32_t c = u::decode_at(s, stop, &len);
        stop_space = !u::is_word_char(c);
      }
      if (!start_space || !stop_space) continue;
    }
    if (t->lstrip) {
      size_t ns = start;
      while (ns > 0) {
        size_t k = ns - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        size_t len;
        if (!u::is_whitespace(u::decode_at(s, k, &len))) break;
        ns = k;
      }
      start = std::max(ns, start_offset);
    }
    if (t->rstrip) {
      while (stop < s.size()) {
        size_t len;
        if (!u::is_whitespace(u::decode_at(s, stop, &len))) break;
        stop += len;
      }
    }
    if (start_offset < start) out.push_back(slice(p, start_offset, start));
    Piece tok = slice(p, start, stop);
    tok.token = t->id;
    out.push_back(std::move(tok));
    start_offset = stop;
  }
  if (start_offset < s.size()) out.push_back(slice(p, start_offset, s.size()));
}

}  // namespace automodel::tokenizer::detail

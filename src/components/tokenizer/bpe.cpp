// The BPE model: a word's characters (or byte-fallback / unk ids) merged by rank, and its construction
// from tokenizer.json's vocab and merges.
#include <algorithm>
#include <cstdio>
#include <queue>

#include "components/tokenizer/tokenizer_pipeline.h"
#include "core/error.h"

namespace automodel::tokenizer::detail {

void Bpe::tokenize(std::string_view w, std::vector<Tok>& out) const {
  if (w.empty()) return;
  if (ignore_merges) {
    auto it = vocab.find(w);
    if (it != vocab.end()) {
      out.push_back({it->second, 0, w.size()});
      return;
    }
  }
  struct Sym {
    int64_t id;
    int prev, next;
    size_t len;
  };
  std::vector<Sym> syms;
  syms.reserve(w.size());
  std::string buf;
  auto push = [&](int64_t id, size_t len) {
    int n = static_cast<int>(syms.size());
    syms.push_back({id, n - 1, -1, len});
    if (n > 0) syms[n - 1].next = n;
  };
  bool last_unk = false;
  for (size_t i = 0; i < w.size();) {
    size_t len = u::utf8_len(static_cast<unsigned char>(w[i]));
    if (i + len > w.size()) len = 1;
    std::string_view c = w.substr(i, len);
    bool first = i == 0, last = i + len == w.size();
    Vocab::const_iterator it;
    if ((!prefix.empty() && !first) || (!suffix.empty() && last)) {
      buf.clear();
      if (!first) buf += prefix;
      buf += c;
      if (last) buf += suffix;
      it = vocab.find(std::string_view(buf));
    } else {
      it = vocab.find(c);
    }
    if (it != vocab.end()) {
      push(it->second, len);
      last_unk = false;
    } else if (byte_fallback && have_bytes && [&] {
                 for (char ch : c)
                   if (byte_ids[static_cast<unsigned char>(ch)] < 0) return false;
                 return true;
               }()) {
      for (char ch : c) push(byte_ids[static_cast<unsigned char>(ch)], 1);
      last_unk = false;
    } else if (unk) {
      if (fuse_unk && last_unk)
        syms.back().len += len;
      else
        push(*unk, len);
      last_unk = true;
    } else if (!unk_token.empty()) {
      throw Error("the text has a character that is not in the vocabulary (" + std::string(c) +
                      "), and the unk_token for it, '" + unk_token + "', is not in the vocabulary either",
                  "tokenizer.json model.unk_token",
                  "add '" + unk_token + "' to model.vocab, or set model.unk_token to a token of the vocabulary");
    }
    i += len;
  }
  struct Cand {
    int32_t rank;
    int pos;
    int64_t new_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> q;
  auto consider = [&](int pos) {
    int nx = syms[pos].next;
    if (nx < 0) return;
    auto it = merges.find(key(syms[pos].id, syms[nx].id));
    if (it != merges.end()) q.push({it->second.first, pos, it->second.second});
  };
  for (int k = 0; k + 1 < static_cast<int>(syms.size()); ++k) consider(k);
  while (!q.empty()) {
    Cand c = q.top();
    q.pop();
    Sym& s = syms[c.pos];
    if (s.len == 0 || s.next < 0) continue;
    Sym& r = syms[s.next];
    auto it = merges.find(key(s.id, r.id));
    if (it == merges.end() || it->second.second != c.new_id || it->second.first != c.rank) continue;
    s.id = c.new_id;
    s.len += r.len;
    r.len = 0;
    s.next = r.next;
    if (s.next >= 0) syms[s.next].prev = c.pos;
    if (s.prev >= 0) consider(s.prev);
    consider(c.pos);
  }
  size_t off = 0;
  for (int k = syms.empty() ? -1 : 0; k >= 0; k = syms[k].next) {
    out.push_back({syms[k].id, off, off + syms[k].len});
    off += syms[k].len;
  }
}

std::unique_ptr<Bpe> make_model(const json& j) {
  if (!j.is_object()) throw Error("'model' must be an object, got " + std::string(j.type_name()), "model");
  std::string where = where_of("model", j);
  std::string type = json_str(j, "type", where, "BPE");
  if (type != "BPE") throw Error("unsupported model type '" + type + "'", where, "only BPE tokenizers are supported");
  if (j.contains("dropout") && !j["dropout"].is_null())
    throw Error("BPE dropout is not supported (it must be null)", where);
  if (!j.contains("vocab") || !j["vocab"].is_object())
    throw Error("'model.vocab' must be an object {token: id}, got " +
                    std::string(j.contains("vocab") ? j["vocab"].type_name() : "nothing"),
                where);
  if (!j.contains("merges") || j["merges"].is_null())
    throw Error("'model.merges' is missing (the tokenizers package rejects a BPE model without it)", where,
                "add \"merges\": [] for a model without merges");
  auto m = std::make_unique<Bpe>();
  int64_t max_id = -1;
  for (auto it = j["vocab"].begin(); it != j["vocab"].end(); ++it) {
    int64_t id = json_token_id(it.value(), "vocabulary token '" + it.key() + "'", where + " vocab");
    m->vocab.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  // Dense ids index a vector; sparse ones (a few tokens with ids in the billions) go to a map instead of a vector
  // of billions of strings.
  if (max_id < static_cast<int64_t>(4 * m->vocab.size() + 4096)) {
    m->id_to_token.resize(static_cast<size_t>(max_id + 1));
    for (const auto& [tok, id] : m->vocab) m->id_to_token[static_cast<size_t>(id)] = tok;
  } else {
    for (const auto& [tok, id] : m->vocab) m->sparse_id_to_token[id] = tok;
  }
  m->unk_token = json_str(j, "unk_token", where);
  if (!m->unk_token.empty()) {
    auto it = m->vocab.find(m->unk_token);
    if (it != m->vocab.end()) m->unk = it->second;
  }
  m->prefix = json_str(j, "continuing_subword_prefix", where);
  m->suffix = json_str(j, "end_of_word_suffix", where);
  m->fuse_unk = json_bool(j, "fuse_unk", false, where);
  m->byte_fallback = json_bool(j, "byte_fallback", false, where);
  m->ignore_merges = json_bool(j, "ignore_merges", false, where);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = m->vocab.find(std::string_view(name));
    m->byte_ids[b] = it == m->vocab.end() ? -1 : it->second;
    if (it != m->vocab.end()) m->have_bytes = true;
  }
  const json& merges = json_list(j, "merges", where);
  const char* const merge_forms = "merges must all be \"a b\" strings or all [\"a\", \"b\"] pairs";
  bool strings = !merges.empty() && merges[0].is_string();
  int32_t rank = 0;
  for (const auto& mj : merges) {
    std::string a, b;
    std::string at = where + " merges[" + std::to_string(rank) + "]";
    if (strings && mj.is_string()) {
      std::string s = mj.get<std::string>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw Error("merge '" + s + "' is not two tokens separated by one space", at);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (!strings && mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
      a = mj[0].get<std::string>();
      b = mj[1].get<std::string>();
    } else {
      throw Error(std::string(merge_forms) + ", got " + mj.dump(), at);
    }
    auto ia = m->vocab.find(a), ib = m->vocab.find(b);
    if (ia == m->vocab.end() || ib == m->vocab.end())
      throw Error("merge '" + a + " " + b + "' uses token '" + (ia == m->vocab.end() ? a : b) +
                      "', which is not in the vocabulary",
                  at, "add the token to model.vocab or remove the merge");
    std::string merged = a + (b.size() >= m->prefix.size() ? b.substr(m->prefix.size()) : b);
    auto im = m->vocab.find(merged);
    if (im == m->vocab.end())
      throw Error("merge '" + a + " " + b + "' makes '" + merged + "', which is not in the vocabulary", at,
                  "add the token to model.vocab or remove the merge");
    // A repeated merge takes its last rank, as in the tokenizers package (a map filled in order).
    m->merges.insert_or_assign(Bpe::key(ia->second, ib->second), std::make_pair(rank++, im->second));
  }
  return m;
}

}  // namespace automodel::tokenizer::detail

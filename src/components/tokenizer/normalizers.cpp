// Normalizers: rewrite a piece's text (Replace, Lowercase, NFC/NFD/NFKC/NFKD, Strip, Prepend, Sequence),
// keeping each byte's range of original bytes.
#include <algorithm>

#include "components/tokenizer/tokenizer_pipeline.h"
#include "core/error.h"

namespace automodel::tokenizer::detail {

void ReplaceNormalizer::apply(Piece& p) const {
  auto matches = pattern.find_all(p);
  if (matches.empty()) return;
  Piece out;
  size_t prev = 0;
  for (auto [a, b] : matches) {
    out.s.append(p.s, prev, a - prev);
    out.al.insert(out.al.end(), p.al.begin() + static_cast<std::ptrdiff_t>(prev),
                  p.al.begin() + static_cast<std::ptrdiff_t>(a));
    out.s += content;
    out.al.insert(out.al.end(), content.size(), Range{p.al[a].a, p.al[b - 1].b});
    prev = b;
  }
  out.s.append(p.s, prev, std::string::npos);
  out.al.insert(out.al.end(), p.al.begin() + static_cast<std::ptrdiff_t>(prev), p.al.end());
  p.s = std::move(out.s);
  p.al = std::move(out.al);
}

namespace {

struct SequenceNormalizer : Normalizer {
  std::vector<NormalizerPtr> items;
  void apply(Piece& p) const override {
    for (const auto& n : items) n->apply(p);
  }
  bool keeps_newline_cut() const override {
    for (const auto& n : items)
      if (!n->keeps_newline_cut()) return false;
    return true;
  }
};

struct PrependNormalizer : Normalizer {
  std::string prefix;
  void apply(Piece& p) const override { prepend(p, prefix); }
};

struct LowercaseNormalizer : Normalizer {
  bool keeps_newline_cut() const override { return true; }  // one character at a time
  void apply(Piece& p) const override {
    map_chars(p, [](uint32_t cp, std::string_view bytes, std::string& out) {
      if (cp < 0x80) {
        out += static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
      } else {
        (void)bytes;
        out += u::lowercase(cp);
      }
    });
  }
};

struct UnicodeNormalizer : Normalizer {
  std::string form;
  // Segment by segment, and every ASCII character starts a segment (ASCII never composes with what precedes it).
  bool keeps_newline_cut() const override { return true; }
  void apply(Piece& p) const override {
    bool ascii = std::all_of(p.s.begin(), p.s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (ascii) return;
    auto bounds = u::normalization_boundaries(p.s, form);
    Piece out;
    for (size_t k = 0; k + 1 < bounds.size(); ++k) {
      size_t a = bounds[k], b = bounds[k + 1];
      std::string seg = u::normalize(std::string_view(p.s).substr(a, b - a), form);
      if (seg == std::string_view(p.s).substr(a, b - a)) {
        out.s += seg;
        out.al.insert(out.al.end(), p.al.begin() + static_cast<std::ptrdiff_t>(a),
                      p.al.begin() + static_cast<std::ptrdiff_t>(b));
      } else {
        // As the tokenizers package aligns: the k-th output character takes the k-th input character's
        // range (the last one's when the output is longer).
        std::vector<Range> in_ranges;
        for (size_t i = a; i < b;) {
          size_t len;
          u::decode_at(p.s, i, &len);
          in_ranges.push_back(Range{p.al[i].a, p.al[i + len - 1].b});
          i += len;
        }
        // When each input character normalizes on its own to a run of the output, the run takes its range.
        std::vector<size_t> owner;
        size_t n_out = 0;
        for (size_t i = 0; i < seg.size(); ++n_out) {
          size_t len;
          u::decode_at(seg, i, &len);
          i += len;
        }
        {
          size_t ci = 0;
          for (size_t i = a; i < b; ++ci) {
            size_t len;
            u::decode_at(p.s, i, &len);
            std::string one = u::normalize(std::string_view(p.s).substr(i, len), form);
            for (size_t k = 0; k < one.size();) {
              size_t l2;
              u::decode_at(one, k, &l2);
              owner.push_back(ci);
              k += l2;
            }
            i += len;
          }
        }
        size_t k = 0;
        for (size_t i = 0; i < seg.size(); ++k) {
          size_t len;
          u::decode_at(seg, i, &len);
          size_t src = owner.size() == n_out ? owner[k] : std::min(k, in_ranges.size() - 1);
          out.al.insert(out.al.end(), len, in_ranges[src]);
          i += len;
        }
        out.s += seg;
      }
    }
    p.s = std::move(out.s);
    p.al = std::move(out.al);
  }
};

struct StripNormalizer : Normalizer {
  bool left = true, right = true;
  void apply(Piece& p) const override {
    size_t a = 0, b = p.s.size();
    if (left) {
      while (a < b) {
        size_t len;
        if (!u::is_whitespace(u::decode_at(p.s, a, &len))) break;
        a += len;
      }
    }
    if (right) {
      while (b > a) {
        size_t start = b - 1;
        while (start > a && (static_cast<unsigned char>(p.s[start]) & 0xC0) == 0x80) --start;
        size_t len;
        if (!u::is_whitespace(u::decode_at(p.s, start, &len))) break;
        b = start;
      }
    }
    if (a != 0 || b != p.s.size()) p = slice(p, a, b);
  }
};

}  // namespace

NormalizerPtr make_normalizer(const json& j) {
  std::string type = component_type(j, "normalizer");
  if (type.empty()) return nullptr;
  std::string where = "normalizer " + type;
  if (type == "Sequence") {
    auto s = std::make_unique<SequenceNormalizer>();
    for (const auto& item : json_list(j, "normalizers", where))
      if (auto n = make_normalizer(item)) s->items.push_back(std::move(n));
    return s;
  }
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prefix = json_str(j, "prepend", where);
    return n;
  }
  if (type == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    n->pattern = parse_pattern(j.contains("pattern") ? j["pattern"] : json(), where);
    n->content = json_str(j, "content", where);
    return n;
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    auto n = std::make_unique<UnicodeNormalizer>();
    n->form = type;
    return n;
  }
  if (type == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    n->left = json_bool(j, "strip_left", true, where);
    n->right = json_bool(j, "strip_right", true, where);
    return n;
  }
  throw Error("unsupported normalizer type '" + type + "'", where,
              "supported: Sequence, Prepend, Replace, Lowercase, NFC, NFD, NFKC, NFKD, Strip");
}

}  // namespace automodel::tokenizer::detail

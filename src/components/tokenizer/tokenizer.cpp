// tokenizer.json pipeline: added tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor, and
// the decoder chain. Offsets are tracked per normalized byte as a range of original bytes, as the
// `tokenizers` package's NormalizedString does.
#include "components/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <queue>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "components/tokenizer/unicode.h"
#include "core/error.h"
#include "io/hf_dir.h"

namespace automodel::tokenizer {

using json = nlohmann::json;
namespace u = unicode;

namespace {

struct Range {
  size_t a = 0, b = 0;
};

// A piece of text: its (normalized) bytes and, per byte, the range of original bytes it came from.
struct Piece {
  std::string s;
  std::vector<Range> al;
  int64_t token = -1;  // an added token's id when this piece is one
};

Piece slice(const Piece& p, size_t a, size_t b) {
  Piece out;
  out.s = p.s.substr(a, b - a);
  out.al.assign(p.al.begin() + static_cast<std::ptrdiff_t>(a), p.al.begin() + static_cast<std::ptrdiff_t>(b));
  return out;
}

// Rebuilds p, replacing each character by f(cp, bytes); new bytes take the character's original range.
template <class F>
void map_chars(Piece& p, F&& f) {
  Piece out;
  out.s.reserve(p.s.size());
  out.al.reserve(p.s.size());
  for (size_t i = 0; i < p.s.size();) {
    size_t len;
    uint32_t cp = u::decode_at(p.s, i, &len);
    Range r{p.al[i].a, p.al[i + len - 1].b};
    size_t before = out.s.size();
    f(cp, std::string_view(p.s).substr(i, len), out.s);
    out.al.insert(out.al.end(), out.s.size() - before, r);
    i += len;
  }
  p.s = std::move(out.s);
  p.al = std::move(out.al);
}

// Inserts s at the front; it takes the first character's original range.
void prepend(Piece& p, const std::string& s) {
  if (p.s.empty()) return;
  size_t len;
  u::decode_at(p.s, 0, &len);
  Range r{p.al[0].a, p.al[len - 1].b};
  p.s.insert(0, s);
  p.al.insert(p.al.begin(), s.size(), r);
}

std::string where_of(const std::string& component, const json& j) {
  std::string type = j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "?";
  return component + " " + type;
}

std::string json_str(const json& j, const char* key, const std::string& where, const std::string& fallback = "") {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string()) throw Error(std::string("field '") + key + "' must be a string", where);
  return j[key].get<std::string>();
}
bool json_bool(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return j[key].get<bool>();
}

// ---------------------------------------------------------------- patterns (Replace, Split)

// A pattern: {"String": s} (literal) or {"Regex": r}.
struct Pattern {
  std::string literal;
  std::shared_ptr<u::Regex> regex;
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    if (regex) return regex->find_all(s);
    std::vector<std::pair<size_t, size_t>> out;
    if (literal.empty()) return out;
    for (size_t pos = s.find(literal); pos != std::string_view::npos; pos = s.find(literal, pos + literal.size()))
      out.emplace_back(pos, pos + literal.size());
    return out;
  }
};

Pattern parse_pattern(const json& j, const std::string& where) {
  Pattern p;
  if (j.is_object() && j.contains("String")) {
    p.literal = j["String"].get<std::string>();
  } else if (j.is_object() && j.contains("Regex")) {
    p.regex = std::make_shared<u::Regex>(j["Regex"].get<std::string>());
  } else {
    throw Error("pattern must be {\"String\": ...} or {\"Regex\": ...}", where);
  }
  return p;
}

// ---------------------------------------------------------------- normalizers

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(Piece& p) const = 0;
};
using NormalizerPtr = std::unique_ptr<Normalizer>;

struct SequenceNormalizer : Normalizer {
  std::vector<NormalizerPtr> items;
  void apply(Piece& p) const override {
    for (const auto& n : items) n->apply(p);
  }
};

struct PrependNormalizer : Normalizer {
  std::string prefix;
  void apply(Piece& p) const override { prepend(p, prefix); }
};

struct ReplaceNormalizer : Normalizer {
  Pattern pattern;
  std::string content;
  void apply(Piece& p) const override {
    auto matches = pattern.find_all(p.s);
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
};

struct LowercaseNormalizer : Normalizer {
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

NormalizerPtr make_normalizer(const json& j) {
  if (j.is_null()) return nullptr;
  std::string where = where_of("normalizer", j);
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    auto s = std::make_unique<SequenceNormalizer>();
    for (const auto& item : j.at("normalizers"))
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
    n->pattern = parse_pattern(j.at("pattern"), where);
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
    n->left = json_bool(j, "strip_left", true);
    n->right = json_bool(j, "strip_right", true);
    return n;
  }
  throw Error("unsupported normalizer type '" + type + "'", where,
              "supported: Sequence, Prepend, Replace, Lowercase, NFC, NFD, NFKC, NFKD, Strip");
}

// ---------------------------------------------------------------- splitting (HF SplitDelimiterBehavior)

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return Behavior::Removed;
  if (s == "Isolated") return Behavior::Isolated;
  if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::MergedWithNext;
  if (s == "Contiguous") return Behavior::Contiguous;
  throw Error("unknown split behavior '" + s + "'", where);
}

// Splits p at `matches` (sorted, non-overlapping byte ranges) and appends the non-empty pieces to out.
void split_piece(const Piece& p, const std::vector<std::pair<size_t, size_t>>& matches, Behavior behavior, bool invert,
                 std::vector<Piece>& out) {
  struct Part {
    size_t a, b;
    bool match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  for (auto [a, b] : matches) {
    if (prev != a) parts.push_back({prev, a, false});
    parts.push_back({a, b, true});
    prev = b;
  }
  if (prev != p.s.size()) parts.push_back({prev, p.s.size(), false});
  if (invert)
    for (auto& x : parts) x.match = !x.match;
  std::vector<std::pair<size_t, size_t>> keep;
  switch (behavior) {
    case Behavior::Removed:
      for (auto& x : parts)
        if (!x.match) keep.emplace_back(x.a, x.b);
      break;
    case Behavior::Isolated:
      for (auto& x : parts) keep.emplace_back(x.a, x.b);
      break;
    case Behavior::MergedWithPrevious: {
      bool prev_match = false;
      for (auto& x : parts) {
        if (x.match && !prev_match && !keep.empty())
          keep.back().second = x.b;
        else
          keep.emplace_back(x.a, x.b);
        prev_match = x.match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prev_match = false;
      for (size_t k = parts.size(); k-- > 0;) {
        auto& x = parts[k];
        if (x.match && !prev_match && !keep.empty())
          keep.back().first = x.a;
        else
          keep.emplace_back(x.a, x.b);
        prev_match = x.match;
      }
      std::reverse(keep.begin(), keep.end());
      break;
    }
    case Behavior::Contiguous: {
      bool prev_match = false;
      for (auto& x : parts) {
        if (x.match == prev_match && !keep.empty())
          keep.back().second = x.b;
        else
          keep.emplace_back(x.a, x.b);
        prev_match = x.match;
      }
      break;
    }
  }
  for (auto [a, b] : keep)
    if (a != b) out.push_back(slice(p, a, b));
}

// Matches of single characters satisfying pred.
template <class Pred>
std::vector<std::pair<size_t, size_t>> char_matches(std::string_view s, Pred&& pred) {
  std::vector<std::pair<size_t, size_t>> m;
  for (size_t i = 0; i < s.size();) {
    size_t len;
    uint32_t cp = u::decode_at(s, i, &len);
    if (pred(cp)) m.emplace_back(i, i + len);
    i += len;
  }
  return m;
}

// ---------------------------------------------------------------- pre-tokenizers

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  // Rewrites the pieces that are not added tokens.
  virtual void apply(std::vector<Piece>& pieces) const = 0;
};
using PreTokenizerPtr = std::unique_ptr<PreTokenizer>;

// Applies f(piece, out) to every non-token piece.
template <class F>
void for_splits(std::vector<Piece>& pieces, F&& f) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (auto& p : pieces) {
    if (p.token >= 0)
      out.push_back(std::move(p));
    else
      f(p, out);
  }
  pieces = std::move(out);
}

const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct ByteTables {
  std::string byte_to_utf8[256];
  std::unordered_map<uint32_t, uint8_t> char_to_byte;
  ByteTables() {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    uint32_t cps[256];
    std::vector<bool> have(256, false);
    for (int b : bs) {
      have[b] = true;
      cps[b] = static_cast<uint32_t>(b);
    }
    uint32_t n = 0;
    for (int b = 0; b < 256; ++b)
      if (!have[b]) cps[b] = 256 + n++;
    for (int b = 0; b < 256; ++b) {
      u::append_utf8(byte_to_utf8[b], cps[b]);
      char_to_byte[cps[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

struct ByteLevelPre : PreTokenizer {
  bool add_prefix_space = false, use_regex = true;
  std::shared_ptr<u::Regex> re;
  void apply(std::vector<Piece>& pieces) const override {
    const auto& bt = byte_tables();
    for_splits(pieces, [&](Piece& p, std::vector<Piece>& out) {
      if (add_prefix_space && (p.s.empty() || p.s[0] != ' ')) prepend(p, " ");
      std::vector<Piece> parts;
      if (use_regex)
        split_piece(p, re->find_all(p.s), Behavior::Isolated, false, parts);
      else if (!p.s.empty())
        parts.push_back(std::move(p));
      for (auto& q : parts) {
        Piece m;
        m.s.reserve(q.s.size() * 2);
        m.al.reserve(q.s.size() * 2);
        for (size_t i = 0; i < q.s.size(); ++i) {
          const std::string& c = bt.byte_to_utf8[static_cast<unsigned char>(q.s[i])];
          m.s += c;
          m.al.insert(m.al.end(), c.size(), q.al[i]);
        }
        out.push_back(std::move(m));
      }
    });
  }
};

struct SplitPre : PreTokenizer {
  Pattern pattern;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  void apply(std::vector<Piece>& pieces) const override {
    for_splits(pieces, [&](Piece& p, std::vector<Piece>& out) {
      split_piece(p, pattern.find_all(p.s), behavior, invert, out);
    });
  }
};

enum class PrependScheme { Always, First, Never };

struct MetaspacePre : PreTokenizer {
  std::string replacement = "\xE2\x96\x81";
  PrependScheme scheme = PrependScheme::Always;
  bool split = true;
  void apply(std::vector<Piece>& pieces) const override {
    ReplaceNormalizer rep;
    rep.pattern.literal = " ";
    rep.content = replacement;
    for_splits(pieces, [&](Piece& p, std::vector<Piece>& out) {
      rep.apply(p);
      bool starts = p.s.compare(0, replacement.size(), replacement) == 0;
      if (!starts && !p.s.empty()) {
        if (scheme == PrependScheme::Always || (scheme == PrependScheme::First && p.al[0].a == 0))
          prepend(p, replacement);
      }
      if (split) {
        Pattern pat;
        pat.literal = replacement;
        split_piece(p, pat.find_all(p.s), Behavior::MergedWithNext, false, out);
      } else if (!p.s.empty()) {
        out.push_back(std::move(p));
      }
    });
  }
};

struct CharClassPre : PreTokenizer {
  bool (*pred)(uint32_t) = nullptr;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  void apply(std::vector<Piece>& pieces) const override {
    for_splits(pieces, [&](Piece& p, std::vector<Piece>& out) {
      split_piece(p, char_matches(p.s, pred), behavior, invert, out);
    });
  }
};

struct SequencePre : PreTokenizer {
  std::vector<PreTokenizerPtr> items;
  void apply(std::vector<Piece>& pieces) const override {
    for (const auto& t : items) t->apply(pieces);
  }
};

PreTokenizerPtr make_pre_tokenizer(const json& j) {
  if (j.is_null()) return nullptr;
  std::string where = where_of("pre_tokenizer", j);
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    auto s = std::make_unique<SequencePre>();
    for (const auto& item : j.at("pretokenizers"))
      if (auto t = make_pre_tokenizer(item)) s->items.push_back(std::move(t));
    return s;
  }
  if (type == "ByteLevel") {
    auto t = std::make_unique<ByteLevelPre>();
    t->add_prefix_space = json_bool(j, "add_prefix_space", true);
    t->use_regex = json_bool(j, "use_regex", true);
    if (t->use_regex) t->re = std::make_shared<u::Regex>(kGpt2Regex);
    return t;
  }
  if (type == "Split") {
    auto t = std::make_unique<SplitPre>();
    t->pattern = parse_pattern(j.at("pattern"), where);
    t->behavior = parse_behavior(json_str(j, "behavior", where, "Isolated"), where);
    t->invert = json_bool(j, "invert", false);
    return t;
  }
  if (type == "Metaspace") {
    auto t = std::make_unique<MetaspacePre>();
    t->replacement = json_str(j, "replacement", where, t->replacement);
    t->split = json_bool(j, "split", true);
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      std::string s = j["prepend_scheme"].get<std::string>();
      if (s == "always")
        t->scheme = PrependScheme::Always;
      else if (s == "first")
        t->scheme = PrependScheme::First;
      else if (s == "never")
        t->scheme = PrependScheme::Never;
      else
        throw Error("unknown prepend_scheme '" + s + "'", where);
    } else if (j.contains("add_prefix_space")) {
      t->scheme = json_bool(j, "add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
    }
    return t;
  }
  if (type == "Digits") {
    auto t = std::make_unique<CharClassPre>();
    t->pred = u::is_numeric;
    t->behavior = json_bool(j, "individual_digits", false) ? Behavior::Isolated : Behavior::Contiguous;
    return t;
  }
  if (type == "Punctuation") {
    auto t = std::make_unique<CharClassPre>();
    t->pred = u::is_punctuation;
    t->behavior = parse_behavior(json_str(j, "behavior", where, "Isolated"), where);
    return t;
  }
  if (type == "WhitespaceSplit") {
    auto t = std::make_unique<CharClassPre>();
    t->pred = u::is_whitespace;
    t->behavior = Behavior::Removed;
    return t;
  }
  if (type == "Whitespace") {
    auto t = std::make_unique<SplitPre>();
    // The Rust regex crate's \w and \s (PCRE2's \w lacks marks): \w+|[^\w\s]+
    const std::string w = R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D})";
    const std::string sp = R"(\t-\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
    t->pattern.regex = std::make_shared<u::Regex>("[" + w + "]+|[^" + w + sp + "]+");
    t->behavior = Behavior::Removed;
    t->invert = true;
    return t;
  }
  throw Error("unsupported pre_tokenizer type '" + type + "'", where,
              "supported: Sequence, ByteLevel, Split, Metaspace, Digits, Punctuation, Whitespace, WhitespaceSplit");
}

// ---------------------------------------------------------------- BPE model

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int64_t, SvHash, std::equal_to<>>;

struct PairHash {
  size_t operator()(uint64_t k) const { return std::hash<uint64_t>{}(k * 0x9E3779B97F4A7C15ull); }
};

struct Bpe {
  Vocab vocab;
  std::vector<std::string> id_to_token;
  std::unordered_map<uint64_t, std::pair<int32_t, int64_t>, PairHash> merges;  // (a,b) -> (rank, new id)
  std::optional<int64_t> unk;
  std::string unk_token, prefix, suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  int64_t byte_ids[256];
  bool have_bytes = false;

  static uint64_t key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

  struct Tok {
    int64_t id;
    size_t a, b;  // byte range in the word
  };

  void tokenize(std::string_view w, std::vector<Tok>& out) const {
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
};

std::unique_ptr<Bpe> make_model(const json& j) {
  std::string where = where_of("model", j);
  std::string type = j.value("type", "BPE");
  if (type != "BPE") throw Error("unsupported model type '" + type + "'", where, "only BPE tokenizers are supported");
  if (j.contains("dropout") && !j["dropout"].is_null())
    throw Error("BPE dropout is not supported (it must be null)", where);
  auto m = std::make_unique<Bpe>();
  int64_t max_id = -1;
  for (auto it = j.at("vocab").begin(); it != j.at("vocab").end(); ++it) {
    int64_t id = it.value().get<int64_t>();
    m->vocab.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  m->id_to_token.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [tok, id] : m->vocab) m->id_to_token[static_cast<size_t>(id)] = tok;
  m->unk_token = json_str(j, "unk_token", where);
  if (!m->unk_token.empty()) {
    auto it = m->vocab.find(m->unk_token);
    if (it == m->vocab.end()) throw Error("unk_token '" + m->unk_token + "' is not in the vocabulary", where);
    m->unk = it->second;
  }
  m->prefix = json_str(j, "continuing_subword_prefix", where);
  m->suffix = json_str(j, "end_of_word_suffix", where);
  m->fuse_unk = json_bool(j, "fuse_unk", false);
  m->byte_fallback = json_bool(j, "byte_fallback", false);
  m->ignore_merges = json_bool(j, "ignore_merges", false);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = m->vocab.find(std::string_view(name));
    m->byte_ids[b] = it == m->vocab.end() ? -1 : it->second;
    if (it != m->vocab.end()) m->have_bytes = true;
  }
  int32_t rank = 0;
  if (j.contains("merges") && !j["merges"].is_null()) {
    for (const auto& mj : j["merges"]) {
      std::string a, b;
      if (mj.is_string()) {
        std::string s = mj.get<std::string>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          throw Error("merge '" + s + "' is not two tokens separated by one space", where);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mj.is_array() && mj.size() == 2) {
        a = mj[0].get<std::string>();
        b = mj[1].get<std::string>();
      } else {
        throw Error("a merge must be \"a b\" or [a, b]", where);
      }
      auto ia = m->vocab.find(a), ib = m->vocab.find(b);
      if (ia == m->vocab.end() || ib == m->vocab.end())
        throw Error("merge '" + a + " " + b + "' uses a token missing from the vocabulary", where);
      std::string merged = a + (b.size() >= m->prefix.size() ? b.substr(m->prefix.size()) : b);
      auto im = m->vocab.find(merged);
      if (im == m->vocab.end()) throw Error("merged token '" + merged + "' is not in the vocabulary", where);
      m->merges.emplace(Bpe::key(ia->second, ib->second), std::make_pair(rank++, im->second));
    }
  }
  return m;
}

// ---------------------------------------------------------------- added tokens

struct AddedToken {
  int64_t id;
  std::string content;
  std::string token;  // id_to_token / decode form: the normalized content for normalized tokens, as HF
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Leftmost-longest literal matching over a byte trie.
struct Matcher {
  struct Node {
    std::unordered_map<unsigned char, int> next;
    int token = -1;  // index into `tokens`
  };
  std::vector<Node> nodes{Node{}};
  std::vector<const AddedToken*> tokens;

  bool empty() const { return tokens.empty(); }
  void add(const std::string& pattern, const AddedToken* t) {
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
  // Non-overlapping leftmost-longest matches: (start, end, token).
  std::vector<std::tuple<size_t, size_t, const AddedToken*>> find(std::string_view s) const {
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
};

uint32_t last_char(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  size_t len;
  return u::decode_at(s, i, &len);
}

// HF AddedVocabulary::find_matches + split_with_indices on one piece.
void split_added(const Piece& p, const Matcher& m, std::vector<Piece>& out) {
  if (m.empty() || p.s.empty()) {
    if (!p.s.empty()) out.push_back(p);
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

// ---------------------------------------------------------------- post-processors

struct Enc {
  std::vector<int64_t> ids;
  std::vector<Range> offsets;
  std::vector<uint8_t> special;
};

struct PostProcessor {
  virtual ~PostProcessor() = default;
  virtual void apply(Enc& e, bool add_special, const std::function<std::string(int64_t)>& tok,
                     std::string_view text) const = 0;
};
using PostProcessorPtr = std::unique_ptr<PostProcessor>;

struct ByteLevelPost : PostProcessor {
  bool trim_offsets = true, add_prefix_space = true;
  void apply(Enc& e, bool, const std::function<std::string(int64_t)>& tok, std::string_view text) const override {
    if (!trim_offsets) return;
    static const std::string space_char = "\xC4\xA0";  // byte-level 'Ġ'
    for (size_t i = 0; i < e.ids.size(); ++i) {
      std::string t = tok(e.ids[i]);
      auto is_sp = [&](uint32_t cp) { return cp == 0x120 || u::is_whitespace(cp); };
      size_t lead = 0, trail = 0;
      std::vector<uint32_t> cps;
      for (size_t k = 0; k < t.size();) {
        size_t len;
        cps.push_back(u::decode_at(t, k, &len));
        k += len;
      }
      while (lead < cps.size() && is_sp(cps[lead])) ++lead;
      while (trail < cps.size() && is_sp(cps[cps.size() - 1 - trail])) ++trail;
      Range& r = e.offsets[i];
      // The tokenizers package trims in characters of the input (its Python offsets are character
      // offsets), so a space that add_prefix_space inserted moves the start past a whole character.
      if (lead > 0) {
        bool first = i == 0 || r.a == 0;
        if (first && add_prefix_space && lead == 1) lead = 0;
        for (size_t k = 0; k < lead && r.a < r.b; ++k) r.a += u::utf8_len(static_cast<unsigned char>(text[r.a]));
        r.a = std::min(r.a, r.b);
      }
      if (trail > 0 && r.b >= trail) {
        for (size_t k = 0; k < trail && r.b > r.a; ++k) {
          --r.b;
          while (r.b > r.a && (static_cast<unsigned char>(text[r.b]) & 0xC0) == 0x80) --r.b;
        }
      }
    }
  }
};

struct TemplatePost : PostProcessor {
  struct Item {
    bool is_special;
    std::string name;  // special token name or sequence "A"/"B"
  };
  std::vector<Item> single;
  std::unordered_map<std::string, std::vector<int64_t>> special_ids;
  void apply(Enc& e, bool add_special, const std::function<std::string(int64_t)>&, std::string_view) const override {
    if (!add_special) return;
    Enc out;
    for (const auto& it : single) {
      if (it.is_special) {
        for (int64_t id : special_ids.at(it.name)) {
          out.ids.push_back(id);
          out.offsets.push_back({0, 0});
          out.special.push_back(1);
        }
      } else {
        out.ids.insert(out.ids.end(), e.ids.begin(), e.ids.end());
        out.offsets.insert(out.offsets.end(), e.offsets.begin(), e.offsets.end());
        out.special.insert(out.special.end(), e.special.begin(), e.special.end());
      }
    }
    e = std::move(out);
  }
};

struct SequencePost : PostProcessor {
  std::vector<PostProcessorPtr> items;
  void apply(Enc& e, bool add_special, const std::function<std::string(int64_t)>& tok,
             std::string_view text) const override {
    for (const auto& p : items) p->apply(e, add_special, tok, text);
  }
};

PostProcessorPtr make_post_processor(const json& j) {
  if (j.is_null()) return nullptr;
  std::string where = where_of("post_processor", j);
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    auto s = std::make_unique<SequencePost>();
    for (const auto& item : j.at("processors"))
      if (auto p = make_post_processor(item)) s->items.push_back(std::move(p));
    return s;
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPost>();
    p->trim_offsets = json_bool(j, "trim_offsets", true);
    p->add_prefix_space = json_bool(j, "add_prefix_space", true);
    return p;
  }
  if (type == "TemplateProcessing") {
    auto p = std::make_unique<TemplatePost>();
    for (const auto& item : j.at("single")) {
      if (item.contains("SpecialToken")) {
        p->single.push_back({true, item["SpecialToken"].at("id").get<std::string>()});
      } else if (item.contains("Sequence")) {
        std::string id = item["Sequence"].at("id").get<std::string>();
        if (id != "A") throw Error("single template uses sequence $" + id, where);
        p->single.push_back({false, id});
      } else {
        throw Error("unknown template item " + item.dump(), where);
      }
    }
    for (auto it = j.at("special_tokens").begin(); it != j.at("special_tokens").end(); ++it)
      p->special_ids[it.key()] = it.value().at("ids").get<std::vector<int64_t>>();
    for (const auto& item : p->single)
      if (item.is_special && !p->special_ids.count(item.name))
        throw Error("template special token '" + item.name + "' is not in special_tokens", where);
    return p;
  }
  throw Error("unsupported post_processor type '" + type + "'", where,
              "supported: Sequence, ByteLevel, TemplateProcessing");
}

// ---------------------------------------------------------------- decoders

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};
using DecoderPtr = std::unique_ptr<Decoder>;

struct ByteLevelDec : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    const auto& bt = byte_tables();
    std::string bytes;
    for (const auto& t : tokens) {
      std::string tb;
      bool ok = true;
      for (size_t k = 0; k < t.size();) {
        size_t len;
        uint32_t cp = u::decode_at(t, k, &len);
        auto it = bt.char_to_byte.find(cp);
        if (it == bt.char_to_byte.end()) {
          ok = false;
          break;
        }
        tb += static_cast<char>(it->second);
        k += len;
      }
      bytes += ok ? tb : t;
    }
    tokens.assign(1, u::from_utf8_lossy(bytes));
  }
};

struct MetaspaceDec : Decoder {
  std::string replacement = "\xE2\x96\x81";
  PrependScheme scheme = PrependScheme::Always;
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t k = 0; k < t.size();) {
        if (t.compare(k, replacement.size(), replacement) == 0) {
          if (!(i == 0 && scheme != PrependScheme::Never)) out += ' ';
          k += replacement.size();
        } else {
          out += t[k++];
        }
      }
      tokens[i] = std::move(out);
    }
  }
};

struct ReplaceDec : Decoder {
  Pattern pattern;
  std::string content;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      auto m = pattern.find_all(t);
      if (m.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (auto [a, b] : m) {
        out.append(t, prev, a - prev);
        out += content;
        prev = b;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }
};

struct ByteFallbackDec : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t nbytes = 0;
    auto flush = [&] {
      if (nbytes == 0) return;
      if (u::valid_utf8(bytes))
        out.push_back(bytes);
      else
        for (size_t k = 0; k < nbytes; ++k) out.push_back("\xEF\xBF\xBD");
      bytes.clear();
      nbytes = 0;
    };
    for (auto& t : tokens) {
      unsigned v = 0;
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
      };
      if (t.size() == 6 && t[0] == '<' && t[1] == '0' && t[2] == 'x' && t[5] == '>' && hex(t[3]) >= 0 &&
          hex(t[4]) >= 0) {
        v = static_cast<unsigned>(hex(t[3]) * 16 + hex(t[4]));
        bytes += static_cast<char>(v);
        ++nbytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

struct FuseDec : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

struct StripDec : Decoder {
  std::string content;
  size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::pair<size_t, size_t>> chars;
      for (size_t k = 0; k < t.size();) {
        size_t len;
        u::decode_at(t, k, &len);
        chars.emplace_back(k, len);
        k += len;
      }
      size_t a = 0, b = chars.size();
      for (size_t n = 0; n < start && a < b && t.compare(chars[a].first, chars[a].second, content) == 0; ++n) ++a;
      for (size_t n = 0; n < stop && b > a && t.compare(chars[b - 1].first, chars[b - 1].second, content) == 0; ++n)
        --b;
      size_t ba = a < chars.size() ? chars[a].first : t.size();
      size_t bb = b < chars.size() ? chars[b].first : t.size();
      t = t.substr(ba, bb - ba);
    }
  }
};

struct SequenceDec : Decoder {
  std::vector<DecoderPtr> items;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& d : items) d->apply(tokens);
  }
};

DecoderPtr make_decoder(const json& j) {
  if (j.is_null()) return nullptr;
  std::string where = where_of("decoder", j);
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    auto s = std::make_unique<SequenceDec>();
    for (const auto& item : j.at("decoders"))
      if (auto d = make_decoder(item)) s->items.push_back(std::move(d));
    return s;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDec>();
    d->replacement = json_str(j, "replacement", where, d->replacement);
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      std::string s = j["prepend_scheme"].get<std::string>();
      d->scheme = s == "never" ? PrependScheme::Never : s == "first" ? PrependScheme::First : PrependScheme::Always;
    } else if (j.contains("add_prefix_space")) {
      d->scheme = json_bool(j, "add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
    }
    return d;
  }
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDec>();
    d->pattern = parse_pattern(j.at("pattern"), where);
    d->content = json_str(j, "content", where);
    return d;
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (type == "Fuse") return std::make_unique<FuseDec>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDec>();
    d->content = json_str(j, "content", where, " ");
    d->start = j.value("start", 0);
    d->stop = j.value("stop", 0);
    return d;
  }
  throw Error("unsupported decoder type '" + type + "'", where,
              "supported: Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip");
}

std::optional<std::string> token_field(const json& cfg, const char* key) {
  if (!cfg.is_object() || !cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw Error(std::string("field '") + key + "' must be a string or an AddedToken object", "tokenizer_config.json");
}

}  // namespace

// ---------------------------------------------------------------- Impl

struct Tokenizer::Impl {
  NormalizerPtr normalizer;
  PreTokenizerPtr pre_tokenizer;
  std::unique_ptr<Bpe> model;
  PostProcessorPtr post_processor;
  DecoderPtr decoder;
  std::vector<AddedToken> added;
  std::unordered_map<int64_t, size_t> added_by_id;
  Vocab added_by_content;
  Matcher raw_matcher, normalized_matcher;

  std::string token_of(int64_t id) const {
    auto it = added_by_id.find(id);
    if (it != added_by_id.end()) return added[it->second].token;
    if (id >= 0 && static_cast<size_t>(id) < model->id_to_token.size())
      return model->id_to_token[static_cast<size_t>(id)];
    return "";
  }
};

Tokenizer Tokenizer::from_json(const json& j, const std::string& where) {
  auto impl = std::make_shared<Impl>();
  try {
    if (!j.is_object() || !j.contains("model")) throw Error("not a tokenizer.json (no 'model')", where);
    for (const char* key : {"truncation", "padding"})
      if (j.contains(key) && !j[key].is_null())
        throw Error(std::string("'") + key + "' in tokenizer.json is not supported (it must be null)", where);
    impl->model = make_model(j.at("model"));
    impl->normalizer = make_normalizer(j.value("normalizer", json()));
    impl->pre_tokenizer = make_pre_tokenizer(j.value("pre_tokenizer", json()));
    impl->post_processor = make_post_processor(j.value("post_processor", json()));
    impl->decoder = make_decoder(j.value("decoder", json()));
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& t : j["added_tokens"]) {
        AddedToken a;
        a.id = t.at("id").get<int64_t>();
        a.content = t.at("content").get<std::string>();
        a.single_word = t.value("single_word", false);
        a.lstrip = t.value("lstrip", false);
        a.rstrip = t.value("rstrip", false);
        a.normalized = t.value("normalized", false);
        a.special = t.value("special", false);
        impl->added.push_back(a);
      }
    }
  } catch (const json::exception& e) {
    throw Error(std::string("malformed tokenizer.json: ") + e.what(), where);
  }
  for (size_t k = 0; k < impl->added.size(); ++k) {
    impl->added_by_id[impl->added[k].id] = k;
    impl->added_by_content[impl->added[k].content] = impl->added[k].id;
  }
  for (auto& a : impl->added) {
    a.token = a.content;
    if (a.normalized && impl->normalizer) {
      Piece p;
      p.s = a.content;
      p.al.assign(p.s.size(), Range{});
      impl->normalizer->apply(p);
      impl->normalized_matcher.add(p.s, &a);
      a.token = p.s;
    } else if (a.normalized) {
      impl->normalized_matcher.add(a.content, &a);
    } else {
      impl->raw_matcher.add(a.content, &a);
    }
  }
  Tokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

Tokenizer Tokenizer::from_file(const std::string& path) { return from_json(io::read_json_file(path), path); }

Tokenizer Tokenizer::from_pretrained(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path dir(io::resolve_model_dir(name));
  fs::path tj = dir / "tokenizer.json";
  if (!fs::exists(tj)) throw Error("no tokenizer.json in the model directory", dir.string());
  Tokenizer t = from_file(tj.string());
  fs::path cj = dir / "tokenizer_config.json";
  if (fs::exists(cj)) {
    t.config_ = io::read_json_file(cj.string());
    const json& c = t.config_;
    t.bos_token_ = token_field(c, "bos_token");
    t.eos_token_ = token_field(c, "eos_token");
    t.pad_token_ = token_field(c, "pad_token");
    t.unk_token_ = token_field(c, "unk_token");
    if (c.contains("add_bos_token") && c["add_bos_token"].is_boolean())
      t.add_bos_token_ = c["add_bos_token"].get<bool>();
    if (c.contains("add_eos_token") && c["add_eos_token"].is_boolean())
      t.add_eos_token_ = c["add_eos_token"].get<bool>();
    if (c.contains("model_max_length") && c["model_max_length"].is_number()) {
      double v = c["model_max_length"].get<double>();
      t.model_max_length_ = v >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(v);
    }
  }
  return t;
}

Tokenizer::Encoding Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  if (!u::valid_utf8(text)) throw Error("text is not valid UTF-8", "Tokenizer::encode");
  Piece whole;
  whole.s = std::string(text);
  whole.al.resize(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t len = u::utf8_len(static_cast<unsigned char>(text[i]));
    for (size_t k = 0; k < len; ++k) whole.al[i + k] = Range{i, i + len};
    i += len;
  }
  // 1. added tokens on the raw text; 2. normalize the rest; 3. normalized added tokens.
  std::vector<Piece> pieces, raw;
  split_added(whole, m.raw_matcher, raw);
  for (auto& p : raw) {
    if (p.token >= 0) {
      pieces.push_back(std::move(p));
      continue;
    }
    if (m.normalizer) m.normalizer->apply(p);
    split_added(p, m.normalized_matcher, pieces);
  }
  if (m.pre_tokenizer) m.pre_tokenizer->apply(pieces);
  Enc e;
  std::vector<Bpe::Tok> toks;
  for (const auto& p : pieces) {
    if (p.token >= 0) {
      e.ids.push_back(p.token);
      e.offsets.push_back(p.al.empty() ? Range{} : Range{p.al.front().a, p.al.back().b});
      e.special.push_back(0);
      continue;
    }
    toks.clear();
    m.model->tokenize(p.s, toks);
    for (const auto& t : toks) {
      e.ids.push_back(t.id);
      e.offsets.push_back(t.b > t.a ? Range{p.al[t.a].a, p.al[t.b - 1].b} : Range{});
      e.special.push_back(0);
    }
  }
  if (m.post_processor)
    m.post_processor->apply(
        e, add_special_tokens, [&](int64_t id) { return m.token_of(id); }, text);
  Encoding out;
  out.ids = std::move(e.ids);
  out.special_tokens_mask = std::move(e.special);
  out.offsets.reserve(e.offsets.size());
  for (const auto& r : e.offsets) out.offsets.emplace_back(r.a, r.b);
  return out;
}

std::vector<Tokenizer::Encoding> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                         bool add_special_tokens) const {
  std::vector<Encoding> out(texts.size());
  std::vector<std::string> errors(texts.size());
  const long n = static_cast<long>(texts.size());
#pragma omp parallel for schedule(dynamic, 16)
  for (long i = 0; i < n; ++i) {
    try {
      out[static_cast<size_t>(i)] = encode(texts[static_cast<size_t>(i)], add_special_tokens);
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(i)] = e.what();
    }
  }
  for (size_t i = 0; i < errors.size(); ++i)
    if (!errors[i].empty()) throw Error(errors[i], detail::str("Tokenizer::encode_batch, text ", i));
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    auto it = m.added_by_id.find(id);
    if (it != m.added_by_id.end()) {
      if (skip_special_tokens && m.added[it->second].special) continue;
      tokens.push_back(m.added[it->second].token);
    } else if (id >= 0 && static_cast<size_t>(id) < m.model->id_to_token.size() &&
               !m.model->id_to_token[static_cast<size_t>(id)].empty()) {
      tokens.push_back(m.model->id_to_token[static_cast<size_t>(id)]);
    }
  }
  if (!m.decoder) {
    std::string out;
    for (size_t k = 0; k < tokens.size(); ++k) out += (k ? " " : "") + tokens[k];
    return out;
  }
  m.decoder->apply(tokens);
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

std::optional<int64_t> Tokenizer::token_to_id(const std::string& token) const {
  auto it = impl_->added_by_content.find(token);
  if (it != impl_->added_by_content.end()) return it->second;
  auto jt = impl_->model->vocab.find(token);
  if (jt != impl_->model->vocab.end()) return jt->second;
  return std::nullopt;
}

std::string Tokenizer::id_to_token(int64_t id) const { return impl_->token_of(id); }

int64_t Tokenizer::vocab_size() const {
  int64_t n = static_cast<int64_t>(impl_->model->vocab.size());
  for (const auto& a : impl_->added)
    if (!impl_->model->vocab.count(a.content)) ++n;
  return n;
}

}  // namespace automodel::tokenizer

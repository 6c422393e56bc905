// Pre-tokenizers: split pieces into words (ByteLevel, Split, Metaspace, Digits, Punctuation, Whitespace,
// WhitespaceSplit, Sequence), with HF's split behaviors and GPT-2's byte-to-character tables.
#include <algorithm>

#include "components/tokenizer/tokenizer_pipeline.h"
#include "core/error.h"

namespace automodel::tokenizer::detail {

ByteTables::ByteTables() {
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

const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

namespace {

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

// The split regexes for which a cut after the '\n' of "x\ny" (x, y printable ASCII) is proven safe: GPT-2's (also the
// ByteLevel pre-tokenizer's), Llama 3's and Qwen 2's (and their tokenizer.json files). None has a lookbehind or an
// anchor, so the matches from y on do not depend on what precedes y. Every alternative that can contain '\n' is
// made of whitespace and newlines only (\s+(?!\S), \s+, \s*[\r\n]+), or, in Llama 3's and Qwen 2's, of
// punctuation followed by newlines ( ?[^\s\p{L}\p{N}]+[\r\n]*); [^\r\n\p{L}\p{N}]?\p{L}+ cannot start at a
// newline. So the match holding the '\n' holds neither y (no alternative continues past [\r\n]* or a whitespace run
// into a non-space) nor, unless it is the punctuation-and-newlines one, x; it ends right before y. No attempt that
// starts before the '\n' reads past it, except those ending at it, which stop at y as they stop at the end of
// "...x\n"; and the one attempt starting at the '\n' matches "\n" whether y or the end follows (\s+(?!\S) fails
// before y where \s+ then matches, and succeeds at the end). Hence "...x\n" and "y..." split apart exactly as their
// concatenation does.
bool newline_cut_proven(const std::string& regex) {
  static const char* const proven[] = {
      kGpt2Regex,
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
  };
  for (const char* p : proven)
    if (regex == p) return true;
  return false;
}

struct ByteLevelPre : PreTokenizer {
  bool add_prefix_space = false, use_regex = true;
  std::shared_ptr<u::Regex> re;
  // GPT-2's regex (see newline_cut_proven); a prefix space would be added to the piece that starts at y.
  bool cuts_after_newline() const override { return use_regex && !add_prefix_space; }
  void apply(std::vector<Piece>& pieces) const override {
    const auto& bt = byte_tables();
    for_splits(pieces, [&](Piece& p, std::vector<Piece>& out) {
      if (add_prefix_space && (p.s.empty() || p.s[0] != ' ')) prepend(p, " ");
      std::vector<Piece> parts;
      if (use_regex)
        split_piece(p, find_all_in(*re, p, "pre_tokenizer ByteLevel"), Behavior::Isolated, false, parts);
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
  bool newline_cut = false;  // set by make_pre_tokenizer where it is proven
  bool cuts_after_newline() const override { return newline_cut; }
  void apply(std::vector<Piece>& pieces) const override {
    for_splits(pieces,
               [&](Piece& p, std::vector<Piece>& out) { split_piece(p, pattern.find_all(p), behavior, invert, out); });
  }
};

struct MetaspacePre : PreTokenizer {
  std::string replacement = "\xE2\x96\x81";
  PrependScheme scheme = PrependScheme::Always;
  bool split = true;
  bool piecewise() const override { return scheme != PrependScheme::First; }
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
  bool newline_cut = false;
  bool cuts_after_newline() const override { return newline_cut; }
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
  // The first stage makes the cut a piece boundary; the later ones then see the same pieces either way.
  bool cuts_after_newline() const override { return !items.empty() && items[0]->cuts_after_newline() && piecewise(); }
  bool piecewise() const override {
    for (const auto& t : items)
      if (!t->piecewise()) return false;
    return true;
  }
};

}  // namespace

PreTokenizerPtr make_pre_tokenizer(const json& j) {
  std::string type = component_type(j, "pre_tokenizer");
  if (type.empty()) return nullptr;
  std::string where = "pre_tokenizer " + type;
  if (type == "Sequence") {
    auto s = std::make_unique<SequencePre>();
    for (const auto& item : json_list(j, "pretokenizers", where))
      if (auto t = make_pre_tokenizer(item)) s->items.push_back(std::move(t));
    return s;
  }
  if (type == "ByteLevel") {
    auto t = std::make_unique<ByteLevelPre>();
    t->add_prefix_space = json_bool(j, "add_prefix_space", true, where);
    t->use_regex = json_bool(j, "use_regex", true, where);
    if (t->use_regex) t->re = std::make_shared<u::Regex>(kGpt2Regex);
    return t;
  }
  if (type == "Split") {
    auto t = std::make_unique<SplitPre>();
    t->pattern = parse_pattern(j.contains("pattern") ? j["pattern"] : json(), where);
    t->behavior = parse_behavior(json_str(j, "behavior", where, "Isolated"), where);
    t->invert = json_bool(j, "invert", false, where);
    t->newline_cut = t->pattern.regex && t->behavior == Behavior::Isolated && !t->invert &&
                     newline_cut_proven(t->pattern.regex->pattern());
    return t;
  }
  if (type == "Metaspace") {
    auto t = std::make_unique<MetaspacePre>();
    t->replacement = json_str(j, "replacement", where, t->replacement);
    if (t->replacement.empty() || u::utf8_len(static_cast<unsigned char>(t->replacement[0])) != t->replacement.size())
      throw Error("Metaspace replacement '" + t->replacement + "' must be exactly one character", where);
    t->split = json_bool(j, "split", true, where);
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      std::string s = json_str(j, "prepend_scheme", where);
      if (s == "always")
        t->scheme = PrependScheme::Always;
      else if (s == "first")
        t->scheme = PrependScheme::First;
      else if (s == "never")
        t->scheme = PrependScheme::Never;
      else
        throw Error("unknown prepend_scheme '" + s + "'", where);
    } else if (j.contains("add_prefix_space")) {
      t->scheme = json_bool(j, "add_prefix_space", true, where) ? PrependScheme::Always : PrependScheme::Never;
    }
    return t;
  }
  if (type == "Digits") {
    auto t = std::make_unique<CharClassPre>();
    t->pred = u::is_numeric;
    t->behavior = json_bool(j, "individual_digits", false, where) ? Behavior::Isolated : Behavior::Contiguous;
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
    t->newline_cut = true;  // the '\n' is removed, and pieces never span it
    return t;
  }
  if (type == "Whitespace") {
    auto t = std::make_unique<SplitPre>();
    // The Rust regex crate's \w and \s (PCRE2's \w lacks marks): \w+|[^\w\s]+
    const std::string w = R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D})";
    const std::string sp = R"(\t-\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
    t->pattern.regex = std::make_shared<u::Regex>("[" + w + "]+|[^" + w + sp + "]+");
    t->pattern.stage = "pre_tokenizer Whitespace";
    // x and y each belong to a match (\w+ or a run of other non-spaces), neither of which can hold the '\n'.
    t->newline_cut = true;
    t->behavior = Behavior::Removed;
    t->invert = true;
    return t;
  }
  throw Error("unsupported pre_tokenizer type '" + type + "'", where,
              "supported: Sequence, ByteLevel, Split, Metaspace, Digits, Punctuation, Whitespace, WhitespaceSplit");
}

}  // namespace automodel::tokenizer::detail

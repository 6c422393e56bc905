#pragma once
// Internal to the tokenizer: the text pieces the tokenizer.json pipeline passes between its stages, the
// stage interfaces with their make_* factories (one .cpp per stage), and helpers the stages share.
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "components/tokenizer/tokenizer.h"
#include "components/tokenizer/unicode.h"

namespace automodel::tokenizer::detail {

using json = nlohmann::json;
namespace u = unicode;

struct Range {
  size_t a = 0, b = 0;
};

// A piece of text: its (normalized) bytes and, per byte, the range of original bytes it came from.
struct Piece {
  std::string s;
  std::vector<Range> al;
  int64_t token = -1;  // an added token's id when this piece is one
};

inline Piece slice(const Piece& p, size_t a, size_t b) {
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
inline void prepend(Piece& p, const std::string& s) {
  if (p.s.empty()) return;
  size_t len;
  u::decode_at(p.s, 0, &len);
  Range r{p.al[0].a, p.al[len - 1].b};
  p.s.insert(0, s);
  p.al.insert(p.al.begin(), s.size(), r);
}

// Typed access to tokenizer.json fields: a field of the wrong type is an automodel::Error naming it (`where` names the
// component, e.g. "pre_tokenizer Split"); absent or null fields give the fallback.
std::string where_of(const std::string& component, const json& j);
std::string json_str(const json& j, const char* key, const std::string& where, const std::string& fallback = "");
bool json_bool(const json& j, const char* key, bool fallback, const std::string& where = "");
size_t json_size(const json& j, const char* key, size_t fallback, const std::string& where);
// A component entry: null (absent) or an object with a string "type"; returns the type ("" for null).
std::string component_type(const json& j, const std::string& component);
// A list field (required): its elements.
const json& json_list(const json& j, const char* key, const std::string& where);
// A token id as the `tokenizers` package reads it (a u32): an integer in [0, 2^32); 5.0, "5", -1 are errors.
int64_t json_token_id(const json& v, const std::string& what, const std::string& where);

// ---------------------------------------------------------------- patterns (Replace, Split)

// A PCRE2 failure (the match limit on a pathological input, ...) as an automodel::Error naming the stage, the pattern
// and the input: an excerpt of `subject` at the failure and `input_offset`, its byte offset in the encoded text.
[[noreturn]] void regex_failed(const u::RegexMatchError& e, const u::Regex& re, std::string_view subject,
                               size_t input_offset, const std::string& stage);
// Matches of `re` in a piece, failures reported with their offset in the original text.
inline std::vector<std::pair<size_t, size_t>> find_all_in(const u::Regex& re, const Piece& p,
                                                          const std::string& stage) {
  try {
    return re.find_all(p.s);
  } catch (const u::RegexMatchError& e) {
    regex_failed(e, re, p.s, e.offset < p.al.size() ? p.al[e.offset].a : e.offset, stage);
  }
}

// A pattern: {"String": s} (literal) or {"Regex": r}; `stage` names where it is used, for errors.
struct Pattern {
  std::string literal;
  std::shared_ptr<u::Regex> regex;
  std::string stage;
  std::vector<std::pair<size_t, size_t>> find_all(const Piece& p) const {
    if (regex) return find_all_in(*regex, p, stage);
    return find_all(std::string_view(p.s));
  }
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    if (regex) {
      try {
        return regex->find_all(s);
      } catch (const u::RegexMatchError& e) {
        regex_failed(e, *regex, s, e.offset, stage);
      }
    }
    std::vector<std::pair<size_t, size_t>> out;
    if (literal.empty()) return out;
    for (size_t pos = s.find(literal); pos != std::string_view::npos; pos = s.find(literal, pos + literal.size()))
      out.emplace_back(pos, pos + literal.size());
    return out;
  }
};

Pattern parse_pattern(const json& j, const std::string& where);

// ---------------------------------------------------------------- normalizers

// Streamed encoding (stream_encode.cpp) cuts a text after a newline that has a printable ASCII character on each side
// ("x\ny"); the stages say whether such a cut leaves their output unchanged.
struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(Piece& p) const = 0;
  // Normalizing "...x\n" and "y..." apart gives the two halves of normalizing "...x\ny...", and x, '\n', y stay
  // printable ASCII and a newline (per character mappings and Unicode normalization: ASCII starts a segment).
  virtual bool keeps_newline_cut() const { return false; }
};
using NormalizerPtr = std::unique_ptr<Normalizer>;

// Also the space replacement of the Metaspace pre-tokenizer.
struct ReplaceNormalizer : Normalizer {
  Pattern pattern;
  std::string content;
  void apply(Piece& p) const override;
};

NormalizerPtr make_normalizer(const json& j);

// ---------------------------------------------------------------- pre-tokenizers

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  // Rewrites the pieces that are not added tokens.
  virtual void apply(std::vector<Piece>& pieces) const = 0;
  // Always ends a piece right after the '\n' of "x\ny" and starts one at y, and splits "...x\n" and "y..." into
  // the same pieces apart as together (see the proofs at the overrides).
  virtual bool cuts_after_newline() const { return false; }
  // Works on each piece alone, without looking at its offsets in the text (all but Metaspace's prepend_scheme
  // "first", which asks whether a piece starts the text).
  virtual bool piecewise() const { return true; }
};
using PreTokenizerPtr = std::unique_ptr<PreTokenizer>;

enum class PrependScheme { Always, First, Never };  // Metaspace pre-tokenizer and decoder

// GPT-2's byte <-> printable character mapping (ByteLevel pre-tokenizer and decoder).
struct ByteTables {
  std::string byte_to_utf8[256];
  std::unordered_map<uint32_t, uint8_t> char_to_byte;
  ByteTables();
};
const ByteTables& byte_tables();

PreTokenizerPtr make_pre_tokenizer(const json& j);

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
  // id -> token: a vector when the ids are dense, else a map (tokenizers allows any ids below 2^32, e.g. 2^31).
  std::vector<std::string> id_to_token;
  std::unordered_map<int64_t, std::string> sparse_id_to_token;
  const std::string* token(int64_t id) const {
    if (id >= 0 && static_cast<size_t>(id) < id_to_token.size())
      return id_to_token[static_cast<size_t>(id)].empty() ? nullptr : &id_to_token[static_cast<size_t>(id)];
    auto it = sparse_id_to_token.find(id);
    return it == sparse_id_to_token.end() ? nullptr : &it->second;
  }
  std::unordered_map<uint64_t, std::pair<int32_t, int64_t>, PairHash> merges;  // (a,b) -> (rank, new id)
  std::optional<int64_t> unk;  // unset when unk_token is absent or (accepted, as tokenizers does) not in the vocab
  std::string unk_token, prefix, suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  int64_t byte_ids[256];
  bool have_bytes = false;

  static uint64_t key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

  struct Tok {
    int64_t id;
    size_t a, b;  // byte range in the word
  };

  void tokenize(std::string_view w, std::vector<Tok>& out) const;
};

std::unique_ptr<Bpe> make_model(const json& j);

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
  void add(const std::string& pattern, const AddedToken* t);
  // Non-overlapping leftmost-longest matches: (start, end, token).
  std::vector<std::tuple<size_t, size_t, const AddedToken*>> find(std::string_view s) const;
};

// HF AddedVocabulary::find_matches + split_with_indices on one piece.
void split_added(Piece p, const Matcher& m, std::vector<Piece>& out);

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
  // The ids it puts before and after the encoding's own (which it leaves as they are); false if it does more.
  virtual bool ids_around(bool add_special, std::vector<int64_t>& before, std::vector<int64_t>& after) const = 0;
};
using PostProcessorPtr = std::unique_ptr<PostProcessor>;

PostProcessorPtr make_post_processor(const json& j);

// ---------------------------------------------------------------- decoders

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};
using DecoderPtr = std::unique_ptr<Decoder>;

DecoderPtr make_decoder(const json& j);

}  // namespace automodel::tokenizer::detail

namespace automodel::tokenizer {

struct Tokenizer::Impl {
  detail::NormalizerPtr normalizer;
  detail::PreTokenizerPtr pre_tokenizer;
  std::unique_ptr<detail::Bpe> model;
  detail::PostProcessorPtr post_processor;
  detail::DecoderPtr decoder;
  std::vector<detail::AddedToken> added;
  std::unordered_map<int64_t, size_t> added_by_id;
  detail::Vocab added_by_content;
  detail::Matcher raw_matcher, normalized_matcher;
  // Streamed encoding: whether the pipeline keeps a cut after the '\n' of "x\ny" (stream_encode.cpp), and the first
  // bytes of the added tokens (raw and normalized), before which it never cuts.
  bool newline_cut = false;
  bool added_token_starts_with[256] = {};

  std::string token_of(int64_t id) const {
    auto it = added_by_id.find(id);
    if (it != added_by_id.end()) return added[it->second].token;
    const std::string* t = model->token(id);
    return t ? *t : "";
  }
};

}  // namespace automodel::tokenizer

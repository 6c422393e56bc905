#pragma once
// UTF-8 helpers, Unicode character classes (ICU) and PCRE2 regexes for the tokenizer.
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace automodel::tokenizer::unicode {

// Length of the UTF-8 sequence starting with byte `b` (1 for an invalid lead byte).
inline size_t utf8_len(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b >> 5) == 0x6) return 2;
  if ((b >> 4) == 0xE) return 3;
  if ((b >> 3) == 0x1E) return 4;
  return 1;
}
// Code point at s[i] (valid UTF-8 assumed); sets len.
uint32_t decode_at(std::string_view s, size_t i, size_t* len);
void append_utf8(std::string& out, uint32_t cp);
bool valid_utf8(std::string_view s);
// Offset of the first byte that does not start a valid UTF-8 sequence, npos if s is valid.
size_t invalid_utf8_at(std::string_view s);
// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD.
std::string from_utf8_lossy(std::string_view bytes);

bool is_whitespace(uint32_t cp);     // Unicode White_Space (Rust char::is_whitespace)
bool is_alphanumeric(uint32_t cp);   // Rust char::is_alphanumeric
bool is_word_char(uint32_t cp);      // regex \w: Alphabetic, M, Nd, Pc, Join_Control
bool is_numeric(uint32_t cp);        // general category Nd, Nl, No
bool is_punctuation(uint32_t cp);    // ASCII punctuation or general category P*
std::string lowercase(uint32_t cp);  // full lowercase mapping of one character
// Normalization form "NFC", "NFD", "NFKC" or "NFKD" of s.
std::string normalize(std::string_view s, const std::string& form);
// Splits s into segments that normalize independently (boundaries before characters that start one).
std::vector<size_t> normalization_boundaries(std::string_view s, const std::string& form);

// pcre2_match gave up (a resource limit) or failed while searching from byte `offset` of the subject.
struct RegexMatchError : std::runtime_error {
  RegexMatchError(const std::string& msg, int pcre2_code, bool limit, size_t at)
      : std::runtime_error(msg), code(pcre2_code), resource_limit(limit), offset(at) {}
  int code;
  bool resource_limit;  // the match, depth, heap or JIT stack limit: the input, not the pattern, is at fault
  size_t offset;
};

// A PCRE2 regex in UTF + UCP mode (JIT-compiled).
class Regex {
 public:
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping matches as byte ranges [start, end), left to right; RegexMatchError when PCRE2 fails.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;
  const std::string& pattern() const { return pattern_; }

 private:
  void* code_ = nullptr;
  std::string pattern_;
};

}  // namespace automodel::tokenizer::unicode

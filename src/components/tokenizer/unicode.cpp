#include "components/tokenizer/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "core/error.h"

namespace automodel::tokenizer::unicode {

uint32_t decode_at(std::string_view s, size_t i, size_t* len) {
  unsigned char b = static_cast<unsigned char>(s[i]);
  size_t n = utf8_len(b);
  if (i + n > s.size()) n = 1;
  *len = n;
  if (n == 1) return b;
  uint32_t cp = b & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace {
// Length of the valid UTF-8 sequence at s[i], or 0 with *bad set to the maximal invalid subpart length.
size_t valid_seq(std::string_view s, size_t i, size_t* bad) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b = at(i);
  *bad = 1;
  if (b < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    n = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    n = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    n = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < n; ++k) {
    if (i + k >= s.size()) {
      *bad = k;
      return 0;
    }
    unsigned char c = at(i + k);
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (c < l || c > h) {
      *bad = k;
      return 0;
    }
  }
  return n;
}
}  // namespace

bool valid_utf8(std::string_view s) { return invalid_utf8_at(s) == std::string_view::npos; }

size_t invalid_utf8_at(std::string_view s) {
  size_t bad;
  for (size_t i = 0; i < s.size();) {
    size_t n = valid_seq(s, i, &bad);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string from_utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t bad;
  for (size_t i = 0; i < s.size();) {
    size_t n = valid_seq(s, i, &bad);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      i += bad;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

bool is_whitespace(uint32_t cp) {
  return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool is_numeric(uint32_t cp) {
  int t = u_charType(static_cast<UChar32>(cp));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_alphanumeric(uint32_t cp) {
  return u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_ALPHABETIC) || is_numeric(cp);
}

bool is_word_char(uint32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  UChar32 c = static_cast<UChar32>(cp);
  int t = u_charType(c);
  return u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK ||
         t == U_COMBINING_SPACING_MARK || t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION ||
         u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL);
}

bool is_punctuation(uint32_t cp) {
  if (cp < 0x80)
    return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
           (cp >= 0x7B && cp <= 0x7E);
  int t = u_charType(static_cast<UChar32>(cp));
  return t == U_DASH_PUNCTUATION || t == U_START_PUNCTUATION || t == U_END_PUNCTUATION ||
         t == U_CONNECTOR_PUNCTUATION || t == U_OTHER_PUNCTUATION || t == U_INITIAL_PUNCTUATION ||
         t == U_FINAL_PUNCTUATION;
}

namespace {
std::u16string to_u16(std::string_view s) {
  std::u16string out(s.size() + 1, u'\0');
  int32_t len = 0;
  UErrorCode err = U_ZERO_ERROR;
  u_strFromUTF8(reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &len, s.data(),
                static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) throw Error("invalid UTF-8 text", "tokenizer normalizer");
  out.resize(static_cast<size_t>(len));
  return out;
}
std::string to_u8(const std::u16string& s) {
  std::string out(s.size() * 3 + 1, '\0');
  int32_t len = 0;
  UErrorCode err = U_ZERO_ERROR;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &len, reinterpret_cast<const UChar*>(s.data()),
              static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) throw Error("UTF-16 to UTF-8 conversion failed", "tokenizer normalizer");
  out.resize(static_cast<size_t>(len));
  return out;
}
const UNormalizer2* normalizer_for(const std::string& form) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  if (form == "NFC")
    n = unorm2_getNFCInstance(&err);
  else if (form == "NFD")
    n = unorm2_getNFDInstance(&err);
  else if (form == "NFKC")
    n = unorm2_getNFKCInstance(&err);
  else if (form == "NFKD")
    n = unorm2_getNFKDInstance(&err);
  if (!n || U_FAILURE(err)) throw Error("unknown normalization form " + form, "tokenizer normalizer");
  return n;
}
}  // namespace

std::string lowercase(uint32_t cp) {
  std::string one;
  append_utf8(one, cp);
  std::u16string in = to_u16(one), out(8, u'\0');
  UErrorCode err = U_ZERO_ERROR;
  int32_t n = u_strToLower(reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()),
                           reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()), "", &err);
  if (U_FAILURE(err)) return one;
  out.resize(static_cast<size_t>(n));
  return to_u8(out);
}

std::string normalize(std::string_view s, const std::string& form) {
  const UNormalizer2* n = normalizer_for(form);
  std::u16string in = to_u16(s);
  std::u16string out(in.size() * 4 + 16, u'\0');
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = unorm2_normalize(n, reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()),
                                 reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    out.assign(static_cast<size_t>(len) + 1, u'\0');
    err = U_ZERO_ERROR;
    len = unorm2_normalize(n, reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()),
                           reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &err);
  }
  if (U_FAILURE(err)) throw Error("normalization failed", "tokenizer normalizer " + form);
  out.resize(static_cast<size_t>(len));
  return to_u8(out);
}

std::vector<size_t> normalization_boundaries(std::string_view s, const std::string& form) {
  const UNormalizer2* n = normalizer_for(form);
  std::vector<size_t> b;
  for (size_t i = 0; i < s.size();) {
    size_t len;
    uint32_t cp = decode_at(s, i, &len);
    if (i == 0 || unorm2_hasBoundaryBefore(n, static_cast<UChar32>(cp))) b.push_back(i);
    i += len;
  }
  b.push_back(s.size());
  return b;
}

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  int errcode = 0;
  PCRE2_SIZE erroff = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                   &errcode, &erroff, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(errcode, buf, sizeof(buf));
    throw Error(detail::str("cannot compile regex /", pattern, "/ at offset ", erroff, ": ",
                            reinterpret_cast<const char*>(buf)),
                "tokenizer regex");
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

namespace {

// The JIT's stack: PCRE2's default of 32 KiB runs out on long runs that a lookahead such as \s+(?!\S) backtracks
// over; 8 MiB per thread (allocated on first use) matches what the interpreter could use.
pcre2_match_context* match_context() {
  struct Context {
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_match_context* context = pcre2_match_context_create(nullptr);
    Context() { pcre2_jit_stack_assign(context, nullptr, stack); }
    ~Context() {
      pcre2_match_context_free(context);
      pcre2_jit_stack_free(stack);
    }
  };
  thread_local Context c;
  return c.context;
}

}  // namespace

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view s) const {
  auto* code = static_cast<pcre2_code*>(code_);
  thread_local pcre2_match_data* md = pcre2_match_data_create(32, nullptr);
  pcre2_match_context* mc = match_context();
  std::vector<std::pair<size_t, size_t>> out;
  size_t pos = 0;
  uint32_t opts = PCRE2_NO_UTF_CHECK;
  while (pos <= s.size()) {
    int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, opts, md, mc);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(rc, buf, sizeof(buf));
      bool limit = rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
                   rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_NOMEMORY;
      throw RegexMatchError(detail::str(reinterpret_cast<const char*>(buf), " (PCRE2 error ", rc, ")"), rc, limit, pos);
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t a = ov[0], b = ov[1];
    if (b == a) {  // empty match: skip one character
      if (a >= s.size()) break;
      pos = a + utf8_len(static_cast<unsigned char>(s[a]));
      continue;
    }
    out.emplace_back(a, b);
    pos = b;
  }
  return out;
}

}  // namespace automodel::tokenizer::unicode

#include "components/tokenizer/jinja_util.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>

namespace automodel::tokenizer::jinja {

bool is_py_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1f);
}

size_t utf8_char_len(std::string_view s, size_t k) {
  unsigned char c = static_cast<unsigned char>(s[k]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  return std::min(n, s.size() - k);
}

uint32_t decode_cp(std::string_view ch) {
  unsigned char c = static_cast<unsigned char>(ch[0]);
  if (c < 0x80 || ch.size() == 1) return c;
  uint32_t cp = c & (ch.size() == 2 ? 0x1F : ch.size() == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < ch.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(ch[k]) & 0x3F);
  return cp;
}

// Python's str.isspace() for one code point.
bool is_space_cp(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Python's str.strip/lstrip/rstrip (whitespace, or the code points of `chars`).
std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right) {
  bool ws = !chars || chars->is_none() || chars->is_undefined();
  if (!ws && !chars->is_string()) fail("strip arg must be None or str");
  std::vector<std::string> set = ws ? std::vector<std::string>{} : utf8_chars(chars->s);
  auto strip_it = [&](std::string_view ch) {
    if (ws) return is_space_cp(decode_cp(ch));
    return std::find(set.begin(), set.end(), ch) != set.end();
  };
  std::string_view sv = s;
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && strip_it(sv.substr(b, utf8_char_len(sv, b)))) b += utf8_char_len(sv, b);
  if (right) {
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && e - start < 4) --start;
      size_t len = utf8_char_len(sv, start);
      if (start + len != e) start = e - 1;  // a stray continuation byte is a character of its own
      if (!strip_it(sv.substr(start, e - start))) break;
      e = start;
    }
  }
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string capitalize(const std::string& s) {
  std::string out = lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}
static bool is_alpha_byte(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || (static_cast<unsigned char>(c) >= 0x80);
}

// Python str.title(): uppercase after a non-letter, lowercase after a letter.
std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_letter = false;
  for (char& c : out) {
    bool letter = is_alpha_byte(c);
    if (std::isalpha(static_cast<unsigned char>(c)))
      c = static_cast<char>(prev_letter ? std::tolower(static_cast<unsigned char>(c))
                                        : std::toupper(static_cast<unsigned char>(c)));
    prev_letter = letter;
  }
  return out;
}

// Jinja's title filter: words start after runs of [-\s({\[<].
std::string jinja_title(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (char c : s) {
    bool sep = c == '-' || is_py_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
    if (sep) {
      out += c;
      word_start = true;
    } else {
      out += static_cast<char>(word_start ? std::toupper(static_cast<unsigned char>(c))
                                          : std::tolower(static_cast<unsigned char>(c)));
      word_start = false;
    }
  }
  return out;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` between every character (and at both ends).
    int64_t n = 0;
    for (size_t k = 0; k < s.size();) {
      size_t len = utf8_char_len(s, k);
      if (count < 0 || n < count) {
        check_string_size(out.size() + to.size() + (s.size() - k), "the result of replace()");
        out += to;
        ++n;
      }
      out.append(s, k, len);
      k += len;
    }
    if (count < 0 || n < count) out += to;
    check_string_size(out.size(), "the result of replace()");
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t f = s.find(from, pos);
    if (f == std::string::npos) break;
    check_string_size(out.size() + (f - pos) + to.size() + (s.size() - f - from.size()), "the result of replace()");
    out.append(s, pos, f - pos);
    out += to;
    pos = f + from.size();
    ++n;
  }
  return out + s.substr(pos);
}

List py_split(const std::string& s, const Value* sep, int64_t maxsplit) {
  List out;
  if (!sep || sep->is_none()) {
    std::string_view sv = s;
    size_t k = 0;
    int64_t n = 0;
    auto space = [&](size_t i) { return is_space_cp(decode_cp(sv.substr(i, utf8_char_len(sv, i)))); };
    while (true) {
      while (k < s.size() && space(k)) k += utf8_char_len(sv, k);
      if (k >= s.size()) break;
      check_list_size(out.size() + 1, "the result of split()");
      if (maxsplit >= 0 && n >= maxsplit) {
        out.push_back(Value::string(strip_chars(s.substr(k), nullptr, false, true)));
        break;
      }
      size_t start = k;
      while (k < s.size() && !space(k)) k += utf8_char_len(sv, k);
      out.push_back(Value::string(s.substr(start, k - start)));
      ++n;
    }
    return out;
  }
  if (!sep->is_string()) fail("split() separator must be a string");
  if (sep->s.empty()) fail("ValueError: empty separator");
  size_t pos = 0;
  int64_t n = 0;
  while (maxsplit < 0 || n < maxsplit) {
    size_t f = s.find(sep->s, pos);
    if (f == std::string::npos) break;
    check_list_size(out.size() + 2, "the result of split()");
    out.push_back(Value::string(s.substr(pos, f - pos)));
    pos = f + sep->s.size();
    ++n;
  }
  out.push_back(Value::string(s.substr(pos)));
  return out;
}

std::string html_escape(const std::string& s) {
  size_t n = s.size();
  for (char c : s) n += c == '&' || c == '<' || c == '>' || c == '"' || c == '\'' ? 4 : 0;
  check_string_size(n, "the escaped string");
  std::string out;
  out.reserve(n);
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

const Value* arg(List& args, KwArgs& kwargs, size_t pos, const char* name) {
  if (pos < args.size()) return &args[pos];
  for (auto& kv : kwargs)
    if (kv.first == name) return &kv.second;
  return nullptr;
}

int64_t int_arg(List& args, KwArgs& kwargs, size_t pos, const char* name, int64_t fallback) {
  const Value* v = arg(args, kwargs, pos, name);
  if (!v || v->is_none() || v->is_undefined()) return fallback;
  if (v->kind == Value::Kind::Int) return v->i;
  if (v->kind == Value::Kind::Bool) return v->b;
  fail(std::string("expected an integer for '") + name + "', got " + kind_name(*v));
}

bool bool_arg(List& args, KwArgs& kwargs, size_t pos, const char* name, bool fallback) {
  const Value* v = arg(args, kwargs, pos, name);
  return v ? v->truthy() : fallback;
}

const std::string& str_of(const Value& v, const char* what) {
  if (!v.is_string()) fail(std::string(what) + " expects a string, got " + kind_name(v));
  return v.s;
}

std::string percent_format(const std::string& fmt, const Value& args) {
  List items = args.is_list() && args.tuple ? *args.list : List{args};
  size_t next = 0;
  std::string out;
  for (size_t k = 0; k < fmt.size(); ++k) {
    if (fmt[k] != '%') {
      out += fmt[k];
      continue;
    }
    if (++k >= fmt.size()) fail("incomplete format");
    int precision = -1;
    if (fmt[k] == '.') {
      precision = 0;
      while (++k < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[k]))) {
        precision = precision * 10 + (fmt[k] - '0');
        if (precision > 1000) fail("format precision too large");
      }
      if (k >= fmt.size()) fail("incomplete format");
    }
    char conv = fmt[k];
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (next >= items.size()) fail("not enough arguments for format string");
    check_string_size(out.size(), "the formatted string");
    const Value& v = items[next++];
    if (conv == 's')
      out += to_str(v);
    else if (conv == 'r')
      out += repr(v);
    else if (conv == 'd' || conv == 'i')
      out += std::to_string(v.kind == Value::Kind::Int ? v.i : checked_int(v.as_double()));
    else if (conv == 'f') {
      int n = std::snprintf(nullptr, 0, "%.*f", precision < 0 ? 6 : precision, v.as_double());
      std::string b(static_cast<size_t>(n) + 1, '\0');
      std::snprintf(b.data(), b.size(), "%.*f", precision < 0 ? 6 : precision, v.as_double());
      b.resize(static_cast<size_t>(n));
      out += b;
    } else
      fail(std::string("unsupported format character '") + conv + "'");
  }
  if (next < items.size()) fail("not all arguments converted during string formatting");
  return out;
}

// Python's str.format with {}, {0}, {name} and {{ }} (no format specs).
std::string brace_format(const std::string& fmt, List& args, KwArgs& kwargs) {
  std::string out;
  size_t auto_index = 0;
  for (size_t k = 0; k < fmt.size(); ++k) {
    char c = fmt[k];
    if (c == '{' && k + 1 < fmt.size() && fmt[k + 1] == '{') {
      out += '{';
      ++k;
    } else if (c == '}' && k + 1 < fmt.size() && fmt[k + 1] == '}') {
      out += '}';
      ++k;
    } else if (c == '{') {
      size_t e = fmt.find('}', k);
      if (e == std::string::npos) fail("Single '{' encountered in format string");
      std::string field = fmt.substr(k + 1, e - k - 1);
      if (field.find_first_of(":!.[") != std::string::npos) fail("format specs are not supported in str.format");
      const Value* v = nullptr;
      if (field.empty() || std::isdigit(static_cast<unsigned char>(field[0]))) {
        size_t idx = field.empty() ? auto_index++ : std::strtoull(field.c_str(), nullptr, 10);
        if (idx >= args.size()) fail("Replacement index " + std::to_string(idx) + " out of range");
        v = &args[idx];
      } else {
        for (auto& kv : kwargs)
          if (kv.first == field) v = &kv.second;
        if (!v) fail("KeyError: '" + field + "'");
      }
      out += to_str(*v);
      check_string_size(out.size(), "the formatted string");
      k = e;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace automodel::tokenizer::jinja

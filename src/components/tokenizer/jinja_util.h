#pragma once
// Internal helpers of the Jinja built-ins: Python string semantics and argument access.
#include <cstdint>
#include <string>
#include <string_view>

#include "components/tokenizer/jinja_value.h"

namespace automodel::tokenizer::jinja {

bool is_py_space(char c);
uint32_t decode_cp(std::string_view ch);
// Byte length of the (possibly invalid) UTF-8 character starting at s[k], never past the end of s.
size_t utf8_char_len(std::string_view s, size_t k);
bool is_space_cp(uint32_t cp);  // Python's str.isspace() for one code point
std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right);
std::string lower(std::string s);
std::string upper(std::string s);
std::string capitalize(const std::string& s);
std::string py_title(const std::string& s);     // str.title()
std::string jinja_title(const std::string& s);  // the `title` filter
std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count);
List py_split(const std::string& s, const Value* sep, int64_t maxsplit);
std::string html_escape(const std::string& s);
std::string percent_format(const std::string& fmt, const Value& args);         // fmt % args
std::string brace_format(const std::string& fmt, List& args, KwArgs& kwargs);  // fmt.format(...)

// Argument `name` at position `pos` or as a keyword (nullptr if absent).
const Value* arg(List& args, KwArgs& kwargs, size_t pos, const char* name);
int64_t int_arg(List& args, KwArgs& kwargs, size_t pos, const char* name, int64_t fallback);
bool bool_arg(List& args, KwArgs& kwargs, size_t pos, const char* name, bool fallback);
const std::string& str_of(const Value& v, const char* what);

}  // namespace automodel::tokenizer::jinja

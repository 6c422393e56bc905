#include "components/tokenizer/jinja_lexer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "components/tokenizer/jinja_value.h"
#include "components/tokenizer/unicode.h"

namespace automodel::tokenizer::jinja {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string rstrip_ws(const std::string& s) {
  size_t n = s.size();
  while (n > 0 && is_space(s[n - 1])) --n;
  return s.substr(0, n);
}

class Lexer {
 public:
  explicit Lexer(const std::string& src) : src_(src) {}

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t start = find_tag_start(pos_);
      std::string text = src_.substr(pos_, start - pos_);
      if (start == src_.size()) {
        emit_text(text);
        break;
      }
      char kind = src_[start + 1];  // '{', '%' or '#'
      char sign = start + 2 < src_.size() ? src_[start + 2] : '\0';
      if (sign != '-' && sign != '+') sign = '\0';
      if (sign == '-') {
        text = rstrip_ws(text);
      } else if (sign != '+' && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size()) {
          bool all_ws = true;
          for (size_t k = l_pos; k < text.size(); ++k) all_ws = all_ws && is_space(text[k]);
          if (all_ws) text = text.substr(0, l_pos);
        }
      }
      emit_text(text);
      advance_to(start + 2 + (sign ? 1 : 0));
      if (kind == '#') {
        size_t end = src_.find("#}", pos_);
        if (end == std::string::npos) fail_at("unterminated comment: missing '#}'");
        bool minus = end > pos_ && src_[end - 1] == '-';
        bool plus = end > pos_ && src_[end - 1] == '+';
        advance_to(end + 2);
        line_starting = finish_end(minus, !plus);
      } else if (kind == '%' && raw_begins()) {
        line_starting = lex_raw();
      } else {
        line_starting = lex_tag(kind == '{');
      }
    }
    out_.push_back(Token{Tok::Eof, "", line_, 0, 0});
    return out_;
  }

 private:
  const std::string& src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> out_;

  [[noreturn]] void fail_at(const std::string& msg) { fail("line " + std::to_string(line_) + ": " + msg); }

  void advance_to(size_t p) {
    for (size_t k = pos_; k < p && k < src_.size(); ++k)
      if (src_[k] == '\n') ++line_;
    pos_ = p;
  }

  size_t find_tag_start(size_t from) const {
    for (size_t k = from; k + 1 < src_.size(); ++k)
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) return k;
    return src_.size();
  }

  void emit_text(const std::string& text) {
    if (!text.empty()) out_.push_back(Token{Tok::Text, text, line_, 0, 0});
  }

  // After a tag end: `-` strips all following whitespace; otherwise trim_blocks drops one newline.
  bool finish_end(bool minus, bool trim_newline) {
    if (minus) {
      size_t p = pos_;
      while (p < src_.size() && is_space(src_[p])) ++p;
      bool nl = p > pos_ && src_[p - 1] == '\n';
      advance_to(p);
      return nl;
    }
    if (trim_newline && pos_ < src_.size() && src_[pos_] == '\n') {
      advance_to(pos_ + 1);
      return true;
    }
    return false;
  }

  bool raw_begins() const {
    size_t p = pos_;
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && is_space(src_[p])) ++p;
    return src_.compare(p, 2, "%}") == 0 || src_.compare(p, 3, "-%}") == 0;
  }

  bool lex_raw() {
    size_t p = src_.find("%}", pos_);
    bool minus = src_[p - 1] == '-';
    advance_to(p + 2);
    if (minus) finish_end(true, false);
    // Find {%[-+]? endraw [-+]?%}
    size_t search = pos_;
    while (true) {
      size_t s = src_.find("{%", search);
      if (s == std::string::npos) fail_at("missing {% endraw %}");
      size_t q = s + 2;
      char sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q++] : '\0';
      while (q < src_.size() && is_space(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) {
        search = s + 2;
        continue;
      }
      q += 6;
      while (q < src_.size() && is_space(src_[q])) ++q;
      char esign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q++] : '\0';
      if (src_.compare(q, 2, "%}") != 0) fail_at("malformed {% endraw %}");
      std::string body = src_.substr(pos_, s - pos_);
      if (sign == '-') {
        body = rstrip_ws(body);
      } else if (sign != '+') {
        size_t l_pos = body.rfind('\n');
        if (l_pos != std::string::npos) {
          bool all_ws = l_pos + 1 < body.size();
          for (size_t k = l_pos + 1; k < body.size(); ++k) all_ws = all_ws && is_space(body[k]);
          if (all_ws) body = body.substr(0, l_pos + 1);
        }
      }
      emit_text(body);
      advance_to(q + 2);
      return finish_end(esign == '-', esign != '+');
    }
  }

  // Tokens of one {{ ... }} or {% ... %}; returns whether the consumed end ended with a newline.
  bool lex_tag(bool is_var) {
    out_.push_back(Token{is_var ? Tok::VarBegin : Tok::BlockBegin, "", line_, 0, 0});
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && is_space(src_[pos_])) advance_to(pos_ + 1);
      if (pos_ >= src_.size())
        fail_at(is_var ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'");
      const char* end = is_var ? "}}" : "%}";
      if (depth == 0) {
        bool minus = src_[pos_] == '-' && src_.compare(pos_ + 1, 2, end) == 0;
        bool plus = !is_var && src_[pos_] == '+' && src_.compare(pos_ + 1, 2, end) == 0;
        if (minus || plus || src_.compare(pos_, 2, end) == 0) {
          out_.push_back(Token{is_var ? Tok::VarEnd : Tok::BlockEnd, "", line_, 0, 0});
          advance_to(pos_ + (minus || plus ? 3 : 2));
          return finish_end(minus, !is_var && !plus);
        }
      }
      char c = src_[pos_];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos_;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        out_.push_back(Token{Tok::Name, src_.substr(pos_, e - pos_), line_, 0, 0});
        advance_to(e);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number();
      } else if (c == '\'' || c == '"') {
        lex_string(c);
      } else {
        static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "/", "*", "%", "~", "[",
                                    "]",  "(",  ")",  "{",  "}",  "<",  ">", "=", ".", ":", "|", ",", ";"};
        std::string op;
        for (const char* o : ops)
          if (src_.compare(pos_, std::char_traits<char>::length(o), o) == 0) {
            op = o;
            break;
          }
        if (op.empty()) fail_at(std::string("unexpected character '") + c + "' in tag");
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") --depth;
        out_.push_back(Token{Tok::Op, op, line_, 0, 0});
        advance_to(pos_ + op.size());
      }
    }
  }

  void lex_number() {
    size_t e = pos_;
    auto digits = [&] {
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
    };
    digits();
    bool is_float = false;
    if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      ++e;
      digits();
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t k = e + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        is_float = true;
        e = k;
        digits();
      }
    }
    std::string text;
    for (size_t k = pos_; k < e; ++k)
      if (src_[k] != '_') text += src_[k];
    Token t{is_float ? Tok::Float : Tok::Int, text, line_, 0, 0};
    if (is_float) {
      t.f = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      t.i = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE)
        fail_at("integer literal " + text +
                " does not fit in 64 bits (Python's integers are unbounded, the template interpreter's are not)");
    }
    out_.push_back(t);
    advance_to(e);
  }

  void lex_string(char quote) {
    std::string out;
    size_t k = pos_ + 1;
    int start_line = line_;
    while (true) {
      if (k >= src_.size()) fail_at("unterminated string literal");
      char c = src_[k];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++k;
        continue;
      }
      if (k + 1 >= src_.size()) fail_at("unterminated string literal");
      char n = src_[k + 1];
      k += 2;
      auto hex = [&](int count) {
        if (k + count > src_.size()) fail_at("truncated \\x/\\u escape in string literal");
        uint32_t v = static_cast<uint32_t>(std::strtoul(src_.substr(k, count).c_str(), nullptr, 16));
        k += count;
        unicode::append_utf8(out, v);
      };
      switch (n) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\n': break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default:
          if (n >= '0' && n <= '7') {
            uint32_t v = static_cast<uint32_t>(n - '0');
            for (int d = 0; d < 2 && k < src_.size() && src_[k] >= '0' && src_[k] <= '7'; ++d, ++k)
              v = v * 8 + static_cast<uint32_t>(src_[k] - '0');
            unicode::append_utf8(out, v);
          } else {
            out += '\\';
            out += n;
          }
      }
    }
    out_.push_back(Token{Tok::String, out, start_line, 0, 0});
    advance_to(k + 1);
  }
};

}  // namespace

std::vector<Token> lex(const std::string& source) {
  // Jinja normalises \r\n and \r to \n in template source.
  std::string src;
  src.reserve(source.size());
  for (size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      src += '\n';
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      src += source[k];
    }
  }
  // keep_trailing_newline=False: one trailing newline of the source is dropped.
  if (!src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(src).run();
}

}  // namespace automodel::tokenizer::jinja

// Scalar typing as NeMo Automodel sees it (PyYAML's YAML 1.1 resolver + translate_value's ast.literal_eval),
// ${ENV} interpolation and CLI overrides.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "components/config/builder.h"
#include "components/config/config.h"
#include "core/error.h"

namespace automodel::config {

namespace {

std::string strip_underscores(const std::string& s) {
  std::string out;
  for (char c : s)
    if (c != '_') out += c;
  return out;
}

// Parses digits (no sign, no prefix) in `base`; false on overflow or bad digits.
bool parse_int(const std::string& digits, int base, bool negative, int64_t& out) {
  if (digits.empty()) return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(digits.c_str(), &end, base);
  if (errno != 0 || *end != '\0') return false;
  unsigned long long limit = negative ? 9223372036854775808ull : 9223372036854775807ull;
  if (v > limit) return false;
  out = negative ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
  return true;
}

// Linear matchers for the number grammars below (std::regex recurses once per character: a long scalar overflowed
// the stack). Each advances p over what it matches.
bool in_set(const std::string& s, size_t p, const char* set) {
  return p < s.size() && s[p] != '\0' && std::strchr(set, s[p]) != nullptr;
}
// [set]*: how many characters it took.
size_t skip_all(const std::string& s, size_t& p, const char* set) {
  size_t start = p;
  while (in_set(s, p, set)) ++p;
  return p - start;
}
// Python's digit groups: [set](_?[set])*, or (_?[set])+ after a base prefix (0x_1f is valid).
bool python_digits(const std::string& s, size_t& p, const char* set, bool after_prefix = false) {
  if (!after_prefix && !in_set(s, p, set)) return false;
  size_t groups = 0;
  while (true) {
    if (in_set(s, p, set)) {
      ++p;
    } else if (p < s.size() && s[p] == '_' && in_set(s, p + 1, set)) {
      p += 2;
    } else {
      return groups > 0;
    }
    ++groups;
  }
}
bool skip_prefix(const std::string& s, size_t& p, const char* prefix) {
  size_t n = std::strlen(prefix);
  if (s.compare(p, n, prefix) != 0) return false;
  p += n;
  return true;
}

constexpr const char* kDec = "0123456789";
constexpr const char* kOct = "01234567";
constexpr const char* kBin = "01";
constexpr const char* kHex = "0123456789abcdefABCDEF";

// Python 3 integer literals without sign: 0x.., 0o.., 0b.., decimal without leading zeros, or zeros.
bool python_int_syntax(const std::string& t) {
  size_t p = 0;
  bool ok = skip_prefix(t, p, "0x") || skip_prefix(t, p, "0X")   ? python_digits(t, p, kHex, true)
            : skip_prefix(t, p, "0o") || skip_prefix(t, p, "0O") ? python_digits(t, p, kOct, true)
            : skip_prefix(t, p, "0b") || skip_prefix(t, p, "0B") ? python_digits(t, p, kBin, true)
            : in_set(t, 0, "123456789")                          ? python_digits(t, p, kDec)
                                                                 : python_digits(t, p, "0");
  return ok && p == t.size();
}

// Python 3 float literals without sign: 1.5, .5, 1., 1e5, 1.5e-3 (digit groups may hold single underscores).
bool python_float_syntax(const std::string& t) {
  size_t p = 0;
  bool whole = python_digits(t, p, kDec), dot = false;
  if (p < t.size() && t[p] == '.') {
    ++p;
    dot = true;
    bool fraction = python_digits(t, p, kDec);
    if (!whole && !fraction) return false;
  } else if (!whole) {
    return false;
  }
  if (p < t.size() && (t[p] == 'e' || t[p] == 'E')) {
    ++p;
    if (p < t.size() && (t[p] == '+' || t[p] == '-')) ++p;
    if (!python_digits(t, p, kDec)) return false;
  } else if (!dot) {
    return false;
  }
  return p == t.size();
}

// YAML 1.1's [eE][-+][0-9]+, when present.
bool yaml_exponent(const std::string& t, size_t& p) {
  if (p < t.size() && (t[p] == 'e' || t[p] == 'E')) {
    ++p;
    if (!in_set(t, p, "+-")) return false;
    ++p;
    return skip_all(t, p, kDec) > 0;
  }
  return true;
}

// YAML 1.1's sexagesimal groups (:[0-5]?[0-9])+; false when there are none or one is malformed.
bool yaml_sexagesimal(const std::string& t, size_t& p) {
  size_t groups = 0;
  while (p < t.size() && t[p] == ':') {
    ++p;
    if (in_set(t, p, "012345") && in_set(t, p + 1, kDec)) {
      p += 2;
    } else if (in_set(t, p, kDec)) {
      ++p;
    } else {
      return false;
    }
    ++groups;
  }
  return groups > 0;
}

// PyYAML's int resolver: [-+]?(0b[0-1_]+ | 0[0-7_]+ | 0 | [1-9][0-9_]* | 0x[0-9a-fA-F_]+ |
// [1-9][0-9_]*(:[0-5]?[0-9])+).
bool yaml_int_syntax(const std::string& t) {
  size_t p = in_set(t, 0, "+-") ? 1 : 0;
  if (skip_prefix(t, p, "0b")) return skip_all(t, p, "01_") > 0 && p == t.size();
  if (skip_prefix(t, p, "0x")) return skip_all(t, p, "0123456789abcdefABCDEF_") > 0 && p == t.size();
  if (skip_prefix(t, p, "0")) return p == t.size() || (skip_all(t, p, "01234567_") > 0 && p == t.size());
  if (!in_set(t, p, "123456789")) return false;
  skip_all(t, p, "0123456789_");
  if (p == t.size()) return true;
  return yaml_sexagesimal(t, p) && p == t.size();
}

// PyYAML's float resolver: [-+]?[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)? | \.[0-9_]+([eE][-+][0-9]+)?
// | [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]* | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN).
bool yaml_float_syntax(const std::string& t) {
  if (t == ".nan" || t == ".NaN" || t == ".NAN") return true;
  const bool signed_ = in_set(t, 0, "+-");
  size_t p = signed_ ? 1 : 0;
  const std::string rest = t.substr(p);
  if (rest == ".inf" || rest == ".Inf" || rest == ".INF") return true;
  if (p < t.size() && t[p] == '.') {
    if (signed_) return false;
    ++p;
    return skip_all(t, p, "0123456789_") > 0 && yaml_exponent(t, p) && p == t.size();
  }
  if (!in_set(t, p, kDec)) return false;
  skip_all(t, p, "0123456789_");
  bool sexagesimal = p < t.size() && t[p] == ':';
  if (sexagesimal && !yaml_sexagesimal(t, p)) return false;
  if (p >= t.size() || t[p] != '.') return false;
  ++p;
  skip_all(t, p, "0123456789_");
  if (!sexagesimal && !yaml_exponent(t, p)) return false;
  return p == t.size();
}

// Base-60 digits groups "a:b:c" as an integer; false beyond int64 (kept as a string, as other big integers).
bool parse_sexagesimal(const std::string& v, bool negative, int64_t& out) {
  unsigned long long acc = 0;
  const unsigned long long limit = negative ? 9223372036854775808ull : 9223372036854775807ull;
  size_t start = 0;
  while (true) {
    size_t colon = v.find(':', start);
    std::string part = v.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    int64_t group = 0;
    if (!parse_int(part, 10, false, group)) return false;
    if (acc > (limit - static_cast<unsigned long long>(group)) / 60) return false;
    acc = acc * 60 + static_cast<unsigned long long>(group);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  out = negative ? static_cast<int64_t>(0 - acc) : static_cast<int64_t>(acc);
  return true;
}

bool parse_float(const std::string& text, double& out) {
  errno = 0;
  char* end = nullptr;
  out = std::strtod(text.c_str(), &end);
  return !text.empty() && *end == '\0';
}

// ast.literal_eval over the subset of Python literals a config holds: numbers (with one sign), strings, None,
// True, False, lists, tuples (as lists), dicts (keys as strings) and sets (as lists). Anything else fails.
class PyLiteral {
 public:
  explicit PyLiteral(const std::string& s) : s_(s) {}

  bool parse(ConfigNode& out) {
    ws();
    if (!value(out)) return false;
    ws();
    if (p_ < s_.size() && s_[p_] == ',') {  // a bare tuple: 1, 2
      ConfigNode list = ConfigNode::list();
      list.push_back(std::move(out));
      while (p_ < s_.size() && s_[p_] == ',') {
        ++p_;
        ws();
        if (p_ == s_.size()) break;
        ConfigNode item;
        if (!value(item)) return false;
        list.push_back(std::move(item));
        ws();
      }
      out = std::move(list);
    }
    return p_ == s_.size();
  }

 private:
  void ws() {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\t' || s_[p_] == '\n' || s_[p_] == '\r')) ++p_;
  }
  bool at_end_of_token() const {
    if (p_ >= s_.size()) return true;
    char c = s_[p_];
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == ']' || c == ')' || c == '}' || c == ':';
  }

  bool value(ConfigNode& out) {
    if (++depth_ > 100) return false;
    bool ok = value_inner(out);
    --depth_;
    return ok;
  }

  bool value_inner(ConfigNode& out) {
    if (p_ >= s_.size()) return false;
    char c = s_[p_];
    if (c == '\'' || c == '"') return string_value(out);
    if (c == '[') return sequence(out, ']');
    if (c == '(') return sequence(out, ')');
    if (c == '{') return braces(out);
    if (c == '+' || c == '-' || c == '.' || (c >= '0' && c <= '9')) return number(out);
    for (const char* name : {"None", "True", "False"}) {
      std::string n(name);
      if (s_.compare(p_, n.size(), n) == 0) {
        size_t save = p_;
        p_ += n.size();
        if (!at_end_of_token()) {
          p_ = save;
          return false;
        }
        out = n == "None" ? ConfigNode() : ConfigNode::boolean(n == "True");
        return true;
      }
    }
    return false;
  }

  bool string_value(ConfigNode& out) {
    std::string text;
    bool any = false;
    while (p_ < s_.size() && (s_[p_] == '\'' || s_[p_] == '"')) {
      char q = s_[p_];
      if (s_.compare(p_, 3, std::string(3, q)) == 0) return false;  // triple quotes: not supported
      ++p_;
      while (true) {
        if (p_ >= s_.size() || s_[p_] == '\n') return false;
        char c = s_[p_++];
        if (c == q) break;
        if (c != '\\') {
          text += c;
          continue;
        }
        if (p_ >= s_.size()) return false;
        char e = s_[p_++];
        switch (e) {
          case '\\': text += '\\'; break;
          case '\'': text += '\''; break;
          case '"': text += '"'; break;
          case 'n': text += '\n'; break;
          case 't': text += '\t'; break;
          case 'r': text += '\r'; break;
          case '0': text += '\0'; break;
          case '\n': break;
          default:
            text += '\\';  // Python keeps unknown escapes
            text += e;
        }
      }
      any = true;
      ws();  // adjacent literals concatenate: 'a' 'b'
    }
    out = ConfigNode::string(text);
    return any;
  }

  bool sequence(ConfigNode& out, char close) {
    ++p_;
    ConfigNode list = ConfigNode::list();
    bool comma = false;
    ws();
    while (p_ < s_.size() && s_[p_] != close) {
      ConfigNode item;
      if (!value(item)) return false;
      list.push_back(std::move(item));
      ws();
      if (p_ < s_.size() && s_[p_] == ',') {
        ++p_;
        comma = true;
        ws();
      } else if (p_ < s_.size() && s_[p_] != close) {
        return false;
      }
    }
    if (p_ >= s_.size()) return false;
    ++p_;
    if (close == ')' && list.size() == 1 && !comma) {  // (x) is x
      out = list[0];
      return true;
    }
    out = std::move(list);
    return true;
  }

  static std::string key_text(const ConfigNode& k) {
    switch (k.kind()) {
      case ConfigNode::Kind::Null: return "None";
      case ConfigNode::Kind::Bool: return k.as_bool() ? "True" : "False";
      case ConfigNode::Kind::Int: return std::to_string(k.as_int());
      case ConfigNode::Kind::Double: {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.17g", k.as_double());
        return buf;
      }
      case ConfigNode::Kind::String: return k.as_string();
      default: return "";
    }
  }

  bool braces(ConfigNode& out) {
    ++p_;
    ws();
    ConfigNode result;  // map or (for a set) list
    bool is_map = true, first = true;
    // A dict's keys in order with their last values (Python keeps a repeated key where it first came).
    std::vector<std::string> keys;
    std::vector<ConfigNode> values;
    std::unordered_map<std::string, size_t> index;
    while (p_ < s_.size() && s_[p_] != '}') {
      ConfigNode k;
      if (!value(k)) return false;
      ws();
      if (first) {
        is_map = p_ < s_.size() && s_[p_] == ':';
        result = is_map ? ConfigNode::map() : ConfigNode::list();
        first = false;
      }
      if (is_map) {
        if (p_ >= s_.size() || s_[p_] != ':' || !k.is_scalar()) return false;
        ++p_;
        ws();
        ConfigNode v;
        if (!value(v)) return false;
        auto [at, fresh] = index.emplace(key_text(k), keys.size());
        if (fresh) {
          keys.push_back(at->first);
          values.push_back(std::move(v));
        } else {
          values[at->second] = std::move(v);
        }
      } else {
        result.push_back(std::move(k));
      }
      ws();
      if (p_ < s_.size() && s_[p_] == ',') {
        ++p_;
        ws();
      } else if (p_ < s_.size() && s_[p_] != '}') {
        return false;
      }
    }
    if (p_ >= s_.size()) return false;
    ++p_;
    for (size_t i = 0; i < keys.size(); ++i) detail::Builder::append(result, std::move(keys[i]), std::move(values[i]));
    out = first ? ConfigNode::map() : std::move(result);
    return true;
  }

  bool number(ConfigNode& out) {
    bool negative = false;
    if (s_[p_] == '+' || s_[p_] == '-') {
      negative = s_[p_] == '-';
      ++p_;
      ws();
    }
    size_t start = p_;
    bool hex = s_.compare(p_, 2, "0x") == 0 || s_.compare(p_, 2, "0X") == 0;
    while (p_ < s_.size()) {
      char c = s_[p_];
      bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
                ((c == '+' || c == '-') && !hex && p_ > start && (s_[p_ - 1] == 'e' || s_[p_ - 1] == 'E'));
      if (!ok) break;
      ++p_;
    }
    std::string tok = s_.substr(start, p_ - start);
    if (!at_end_of_token()) return false;
    if (python_int_syntax(tok)) {
      std::string d = strip_underscores(tok);
      int base = 10;
      if (d.size() > 1 && d[0] == '0' && (d[1] == 'x' || d[1] == 'X')) base = 16;
      if (d.size() > 1 && d[0] == '0' && (d[1] == 'o' || d[1] == 'O')) base = 8;
      if (d.size() > 1 && d[0] == '0' && (d[1] == 'b' || d[1] == 'B')) base = 2;
      if (base != 10) d = d.substr(2);
      int64_t v = 0;
      if (!parse_int(d, base, negative, v)) return false;  // beyond int64: kept as a string
      out = ConfigNode::integer(v);
      return true;
    }
    if (python_float_syntax(tok)) {
      double v = 0;
      if (!parse_float(strip_underscores(tok), v)) return false;
      out = ConfigNode::real(negative ? -v : v);
      return true;
    }
    return false;
  }

  const std::string& s_;
  size_t p_ = 0;
  int depth_ = 0;
};

// PyYAML's YAML 1.1 implicit resolvers (bool, int, float, null) for a plain scalar.
bool yaml11_resolve(const std::string& t, ConfigNode& out) {
  static const char* const kNulls[] = {"~", "null", "Null", "NULL", ""};
  static const char* const kBools[] = {"yes",   "Yes",   "YES",   "no", "No", "NO", "true", "True", "TRUE",
                                       "false", "False", "FALSE", "on", "On", "ON", "off",  "Off",  "OFF"};
  auto one_of = [&](const auto& words) {
    return std::any_of(std::begin(words), std::end(words), [&](const char* w) { return t == w; });
  };
  if (one_of(kNulls)) {
    out = ConfigNode();
    return true;
  }
  if (one_of(kBools)) {
    char c = t[0];
    out = ConfigNode::boolean(c == 'y' || c == 'Y' || c == 't' || c == 'T' || t == "on" || t == "On" || t == "ON");
    return true;
  }
  if (yaml_int_syntax(t)) {
    std::string v = strip_underscores(t);
    bool negative = false;
    if (v[0] == '-' || v[0] == '+') {
      negative = v[0] == '-';
      v = v.substr(1);
    }
    int64_t r = 0;
    bool ok;
    if (v == "0") {
      ok = true;
    } else if (v.rfind("0b", 0) == 0) {
      ok = parse_int(v.substr(2), 2, negative, r);
    } else if (v.rfind("0x", 0) == 0) {
      ok = parse_int(v.substr(2), 16, negative, r);
    } else if (v.find(':') != std::string::npos) {
      ok = parse_sexagesimal(v, negative, r);
    } else if (v[0] == '0') {
      ok = parse_int(v.substr(1), 8, negative, r);
    } else {
      ok = parse_int(v, 10, negative, r);
    }
    if (!ok) return false;
    out = ConfigNode::integer(r);
    return true;
  }
  if (yaml_float_syntax(t)) {
    std::string v = strip_underscores(t);
    for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    double sign = 1;
    if (v[0] == '-' || v[0] == '+') {
      sign = v[0] == '-' ? -1 : 1;
      v = v.substr(1);
    }
    double r = 0;
    if (v == ".inf") {
      r = INFINITY;
    } else if (v == ".nan") {
      r = NAN;
    } else if (v.find(':') != std::string::npos) {
      size_t start = 0;
      while (true) {
        size_t colon = v.find(':', start);
        r = r * 60 +
            std::strtod(v.substr(start, colon == std::string::npos ? std::string::npos : colon - start).c_str(),
                        nullptr);
        if (colon == std::string::npos) break;
        start = colon + 1;
      }
    } else if (!parse_float(v, r)) {
      return false;
    }
    out = ConfigNode::real(sign * r);
    return true;
  }
  return false;
}

bool is_env_name(const std::string& s) {
  const char* first = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_";
  size_t p = 0;
  if (!in_set(s, p, first)) return false;
  skip_all(s, p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789");
  return p == s.size();
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t");
  return s.substr(a, b - a + 1);
}

}  // namespace

ConfigNode translate_value(const std::string& text) {
  if (text == "none" || text == "None") return ConfigNode();
  if (text == "true" || text == "True") return ConfigNode::boolean(true);
  if (text == "false" || text == "False") return ConfigNode::boolean(false);
  // ast.literal_eval strips leading spaces and tabs.
  size_t lead = text.find_first_not_of(" \t");
  std::string body = lead == std::string::npos ? "" : text.substr(lead);
  ConfigNode out;
  PyLiteral parser(body);
  if (!body.empty() && parser.parse(out)) return out;
  return ConfigNode::string(text);
}

ConfigNode type_plain_scalar(const std::string& text) {
  ConfigNode out;
  if (yaml11_resolve(text, out)) return out;
  return translate_value(text);
}

std::string interpolate_env(const std::string& text, const std::string& where) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text.compare(i, 3, "\\${") == 0) {
      out += "${";
      i += 3;
      continue;
    }
    if (text.compare(i, 2, "${") != 0) {
      out += text[i++];
      continue;
    }
    size_t close = text.find('}', i + 2);
    std::string pre = where.empty() ? "" : where + ": ";
    if (close == std::string::npos)
      throw Error(pre + "unterminated '${' in \"" + text + "\"", where, "write ${VAR} or ${VAR,default}");
    std::string inner = text.substr(i + 2, close - i - 2);
    std::string body = inner.rfind("oc.env:", 0) == 0 ? inner.substr(7) : inner;
    size_t comma = body.find(',');
    std::string name = trim(body.substr(0, comma));
    bool has_default = comma != std::string::npos;
    std::string fallback = has_default ? trim(body.substr(comma + 1)) : "";
    if (!is_env_name(name))
      throw Error(pre + "'${" + inner + "}' is not an environment variable reference", where,
                  "only ${VAR}, ${VAR,default}, ${oc.env:VAR} and ${oc.env:VAR,default} are supported");
    if (const char* v = std::getenv(name.c_str())) {
      out += v;
    } else if (has_default) {
      out += fallback;
    } else {
      throw Error(pre + "environment variable '" + name + "' is not set (used as ${" + inner + "})", where,
                  "export " + name + "=..., or give a default: ${" + name + ",default}");
    }
    i = close + 1;
  }
  return out;
}

std::vector<Override> parse_overrides(const std::vector<std::string>& args) {
  std::vector<Override> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& tok = args[i];
    if (tok.rfind("--", 0) != 0)
      throw Error("unexpected argument '" + tok + "'", "command line", "overrides are --a.b.c value or --a.b.c=value");
    std::string body = tok.substr(tok.find_first_not_of('-'));
    if (tok.find_first_not_of('-') == std::string::npos) body.clear();
    Override o;
    size_t eq = body.find('=');
    if (eq != std::string::npos) {
      o.key = body.substr(0, eq);
      o.text = body.substr(eq + 1);
    } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      o.key = body;
      o.text = args[++i];
    } else {
      o.key = body;
      o.text = "True";
    }
    if (o.key.empty() || o.key.front() == '.' || o.key.back() == '.' || o.key.find("..") != std::string::npos)
      throw Error("bad override '" + tok + "': empty key", "command line", "write --a.b.c value");
    std::string last = o.key.substr(o.key.rfind('.') == std::string::npos ? 0 : o.key.rfind('.') + 1);
    bool name_only = last == "_target_" || (last.size() >= 3 && last.compare(last.size() - 3, 3, "_fn") == 0);
    o.value = name_only ? ConfigNode::string(o.text) : translate_value(o.text);
    o.value.set_origin("command line --" + o.key, 0);
    out.push_back(std::move(o));
  }
  return out;
}

void apply_overrides(ConfigNode& root, const std::vector<Override>& overrides) {
  if (root.is_null()) root = ConfigNode::map();
  for (const Override& o : overrides) root.set(o.key, o.value);
}

}  // namespace automodel::config

// YAML text <-> ConfigNode: reading through yaml-cpp with per-node file and line, writing block YAML that reads
// back into an equal tree.
// GCC 12+ reports a false -Wdangling-pointer inside yaml-cpp 0.7's inlined Node accessors.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "components/config/builder.h"
#include "components/config/config.h"
#include "core/error.h"

namespace automodel::config {

namespace {

bool is_name_only_key(const std::string& key) {
  return key == "_target_" || (key.size() >= 3 && key.compare(key.size() - 3, 3, "_fn") == 0);
}

std::string where_at(const std::string& source, int line) { return source + ":" + std::to_string(line); }

// The dotted path for a message, its start only when it is long (a deep or aliased path repeats itself).
std::string describe_path(const std::string& path) {
  if (path.empty()) return "the document root";
  return "'" + (path.size() > 80 ? path.substr(0, 77) + "..." : path) + "'";
}

// yaml-cpp shares an anchored node among its aliases (the graph is cyclic when an alias sits inside its own anchor);
// the reader expands aliases into copies as PyYAML does, so it bounds the depth, the number of values and their
// bytes, and refuses cycles. Every YAML::Node is held by value: yaml-cpp's iterators hand out temporaries.
struct Reader {
  std::string source;
  size_t values = 0, bytes = 0;
  std::vector<YAML::Node> open;  // the lists and maps being converted, outermost first

  int line_of(const YAML::Node& n, int fallback) const {
    int l = n.Mark().line;
    return l >= 0 ? l + 1 : fallback;
  }

  void count(const std::string& path, size_t text_bytes, int line) {
    ++values;
    bytes += path.size() + text_bytes;
    if (values <= kMaxYamlValues && bytes <= kMaxYamlBytes) return;
    throw Error(where_at(source, line) + ": " + describe_path(path) + ": the YAML expands to more than " +
                    (values > kMaxYamlValues ? std::to_string(kMaxYamlValues) + " values"
                                             : std::to_string(kMaxYamlBytes >> 20) + " MiB of keys and text") +
                    " (each alias *name repeats its whole anchored node; nested aliases multiply)",
                where_at(source, line),
                "a recipe needs a few hundred values: write the repeated part once, or anchor smaller parts");
  }

  // Registers a list or map about to be converted; an Error when it is already open (an alias inside its own
  // anchored node) or too deep.
  void enter(const YAML::Node& n, const std::string& path, int line) {
    for (const YAML::Node& outer : open)
      if (outer.is(n))
        throw Error(where_at(source, line) + ": " + describe_path(path) +
                        " is an alias of a list or map that contains it (an anchor/alias cycle)",
                    where_at(source, line), "an alias may only repeat a node outside itself: copy the values instead");
    if (open.size() >= kMaxYamlDepth)
      throw Error(where_at(source, line) + ": " + describe_path(path) + ": lists and maps nested more than " +
                      std::to_string(kMaxYamlDepth) + " levels deep (aliases expanded)",
                  where_at(source, line),
                  "a recipe needs a few levels: check for unbalanced brackets or aliases that nest their anchors");
    open.push_back(n);
  }

  ConfigNode scalar(const YAML::Node& n, const std::string& key, const std::string& path, int line) const {
    std::string text = n.Scalar();
    bool plain = n.Tag() == "?";
    std::string where = where_at(source, line) + ": " + (path.empty() ? "value" : "'" + path + "'");
    bool interpolated = text.find("${") != std::string::npos;
    if (interpolated) text = interpolate_env(text, where);
    if (is_name_only_key(key)) return ConfigNode::string(text);
    if (plain && !interpolated) return type_plain_scalar(text);
    return translate_value(text);
  }

  ConfigNode convert(const YAML::Node& n, const std::string& key, const std::string& path, int line) {
    count(path, n.IsScalar() ? n.Scalar().size() : 0, line);
    ConfigNode out;
    switch (n.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null: break;
      case YAML::NodeType::Scalar: out = scalar(n, key, path, line); break;
      case YAML::NodeType::Sequence: out = sequence(n, key, path, line); break;
      case YAML::NodeType::Map: out = map(n, path, line); break;
    }
    detail::Builder::place(out, path);  // a list or map is already there; a literal_eval'ed scalar is not
    out.set_origin(source, line);
    return out;
  }

  ConfigNode sequence(const YAML::Node& n, const std::string& key, const std::string& path, int line) {
    enter(n, path, line);
    ConfigNode out = ConfigNode::list();
    detail::Builder::place(out, path);
    for (YAML::const_iterator it = n.begin(); it != n.end(); ++it) {
      const YAML::Node item = *it;
      std::string index = std::to_string(out.size());
      out.push_back(convert(item, key, path.empty() ? index : path + "." + index, line_of(item, line)));
    }
    open.pop_back();
    return out;
  }

  ConfigNode map(const YAML::Node& n, const std::string& path, int line) {
    enter(n, path, line);
    ConfigNode out = ConfigNode::map();
    detail::Builder::place(out, path);
    std::unordered_map<std::string, int> key_lines;
    std::vector<ConfigNode> merges;  // `<<: *anchor` (PyYAML merges them; explicit keys win)
    for (YAML::const_iterator it = n.begin(); it != n.end(); ++it) {
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      int kline = line_of(key, line);
      if (!key.IsScalar())
        throw Error(where_at(source, kline) + ": only scalar keys are supported in a config", where_at(source, kline),
                    "write the key as a plain string");
      std::string name = key.Scalar();
      std::string p = path.empty() ? name : path + "." + name;
      bool merge = name == "<<" && key.Tag() == "?";
      ConfigNode child = convert(value, name, p, kline);
      if (merge) {
        merges.push_back(std::move(child));
        continue;
      }
      auto [first, fresh] = key_lines.emplace(name, kline);
      if (!fresh)
        throw Error(where_at(source, kline) + ": key '" + p + "' is given twice, at lines " +
                        std::to_string(first->second) + " and " + std::to_string(kline) +
                        " (PyYAML would keep the second silently)",
                    where_at(source, kline), "keep one of them (merge the two sections into one)");
      detail::Builder::append(out, std::move(name), std::move(child));
    }
    for (const ConfigNode& m : merges) {
      std::vector<const ConfigNode*> maps;
      if (m.is_list())
        for (size_t i = 0; i < m.size(); ++i) maps.push_back(&m[i]);
      else
        maps.push_back(&m);
      for (const ConfigNode* mm : maps) {
        if (!mm->is_map())
          throw Error(m.where() + ": '<<' merges only maps", m.where(), "merge an anchored map: <<: *name");
        for (size_t i = 0; i < mm->size(); ++i)
          if (key_lines.emplace(mm->keys()[i], m.line()).second) detail::Builder::append(out, mm->keys()[i], (*mm)[i]);
      }
    }
    open.pop_back();
    return out;
  }
};

bool plain_safe(const std::string& s) {
  if (s.empty()) return false;
  char f = s[0];
  if (!(std::isalnum(static_cast<unsigned char>(f)) || f == '_' || f == '/' || f == '.')) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '/' || c == '-' || c == '+'))
      return false;
  return true;
}

std::string double_quoted(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string python_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    switch (c) {
      case '\'': out += "\\'"; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\0': out += "\\0"; break;
      default: out += c;
    }
  }
  return out + "'";
}

std::string escape_interpolation(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 2, "${") == 0) out += '\\';
    out += s[i];
  }
  return out;
}

std::string format_double(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, res.ptr);
  // PyYAML's float needs a '.' and a signed exponent.
  size_t e = s.find('e');
  std::string mant = e == std::string::npos ? s : s.substr(0, e);
  std::string exp = e == std::string::npos ? "" : s.substr(e + 1);
  if (mant.find('.') == std::string::npos) mant += ".0";
  if (!exp.empty() && exp[0] != '-' && exp[0] != '+') exp = "+" + exp;
  return exp.empty() ? mant : mant + "e" + exp;
}

std::string scalar_text(const ConfigNode& n, bool name_only) {
  switch (n.kind()) {
    case ConfigNode::Kind::Null: return "null";
    case ConfigNode::Kind::Bool: return n.as_bool() ? "true" : "false";
    case ConfigNode::Kind::Int: return std::to_string(n.as_int());
    case ConfigNode::Kind::Double: return format_double(n.as_double());
    case ConfigNode::Kind::String: {
      const std::string& s = n.as_string();
      ConfigNode self = ConfigNode::string(s);
      bool interp = s.find("${") != std::string::npos;
      if (name_only) {
        bool nullish = s == "null" || s == "Null" || s == "NULL" || s == "~";
        return plain_safe(s) && !nullish && !interp ? s : double_quoted(escape_interpolation(s));
      }
      if (plain_safe(s) && !interp && type_plain_scalar(s) == self) return s;
      if (translate_value(s) == self) return double_quoted(escape_interpolation(s));
      return double_quoted(escape_interpolation(python_quoted(s)));
    }
    case ConfigNode::Kind::List: return "[]";
    case ConfigNode::Kind::Map: return "{}";
  }
  return "";
}

bool block(const ConfigNode& n) { return (n.is_map() || n.is_list()) && n.size() > 0; }

void emit(const ConfigNode& n, int indent, bool name_only, std::string& out) {
  std::string pad(static_cast<size_t>(indent), ' ');
  if (n.is_map()) {
    for (size_t i = 0; i < n.size(); ++i) {
      const std::string& k = n.keys()[i];
      bool key_plain = plain_safe(k) && k != "<<" && type_plain_scalar(k) == ConfigNode::string(k);
      out += pad + (key_plain ? k : double_quoted(k)) + ":";
      bool child_name_only = is_name_only_key(k);
      if (block(n[i])) {
        out += "\n";
        emit(n[i], indent + 2, child_name_only, out);
      } else {
        out += " " + scalar_text(n[i], child_name_only) + "\n";
      }
    }
  } else if (n.is_list()) {
    for (size_t i = 0; i < n.size(); ++i) {
      out += pad + "-";
      if (block(n[i])) {
        out += "\n";
        emit(n[i], indent + 2, name_only, out);
      } else {
        out += " " + scalar_text(n[i], name_only) + "\n";
      }
    }
  } else {
    out += pad + scalar_text(n, name_only) + "\n";
  }
}

}  // namespace

ConfigNode parse_yaml(const std::string& text, const std::string& source_name) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's parser recurses per nesting level and stops itself (about 500 flow levels) with a message that
    // says only "bad file".
    std::string where = source_name + ":" + std::to_string(e.mark.line + 1);
    throw Error(where + ": lists and maps nested too deeply for the YAML parser", where,
                "a recipe needs a few levels: check for unbalanced brackets");
  } catch (const YAML::Exception& e) {
    std::string where = source_name + ":" + std::to_string(e.mark.line + 1);
    throw Error(where + ": YAML syntax error: " + e.msg, where, "fix the YAML at that line (indentation, ':' spacing)");
  }
  Reader reader;
  reader.source = source_name;
  return reader.convert(root, "", "", reader.line_of(root, 1));
}

ConfigNode load_yaml(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open config file '" + path + "'", path, "check the path given with -c/--config");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_yaml(ss.str(), path);
}

std::string ConfigNode::to_yaml() const {
  std::string out;
  if (block(*this)) {
    emit(*this, 0, false, out);
  } else {
    out = scalar_text(*this, false) + "\n";
  }
  return out;
}

}  // namespace automodel::config

#include "components/tokenizer/jinja_value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "components/tokenizer/chat_template.h"

namespace automodel::tokenizer::jinja {

namespace lim = template_limits;

void fail(const std::string& msg) { throw TemplateError(msg); }
void fail_limit(const std::string& msg, const std::string& hint) { throw LimitError(msg, hint); }

void check_string_size(size_t bytes, const char* what) {
  if (bytes > lim::kMaxStringBytes)
    fail_limit(std::string(what) + " would be " + std::to_string(bytes) + " bytes, over the string size limit of " +
                   std::to_string(lim::kMaxStringBytes) + " bytes",
               "no chat template needs strings this large: fix the template (a repetition, join or replace that "
               "grows without bound)");
}

void check_list_size(size_t items, const char* what) {
  if (items > lim::kMaxListItems)
    fail_limit(std::string(what) + " would have " + std::to_string(items) + " items, over the list size limit of " +
                   std::to_string(lim::kMaxListItems),
               "no chat template needs lists this long: fix the template");
}

void check_value_depth(int depth, const char* what) {
  if (depth > lim::kMaxNesting)
    fail_limit(std::string(what) + " nests more than " + std::to_string(lim::kMaxNesting) +
                   " lists/dicts/namespaces deep (or contains itself)",
               "no chat template needs values nested this deep: fix the template (a namespace attribute set to "
               "itself, or a loop that wraps a value again and again)");
}

namespace {
[[noreturn]] void overflow(const char* op) {
  fail(std::string("integer overflow in '") + op +
       "': the result does not fit in 64 bits (Python's integers are unbounded, the template interpreter's are not)");
}
}  // namespace

int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) overflow("+");
  return r;
}
int64_t checked_sub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) overflow("-");
  return r;
}
int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) overflow("*");
  return r;
}
int64_t checked_int(double v) {
  if (std::isnan(v)) fail("cannot convert float NaN to integer");
  if (std::isinf(v)) fail("cannot convert float infinity to integer");
  // [-2^63, 2^63) is exactly representable at both ends as doubles.
  if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0))
    fail("integer overflow: " + format_float(v) + " does not fit in 64 bits");
  return static_cast<int64_t>(v);
}

namespace {

// Lists and dicts are freed through a queue rather than recursively, so that freeing a value nested a million levels
// deep (a loop can build one) does not overflow the stack: a container whose last reference goes away while another
// is being freed waits in the queue.
struct Reclaimer {
  std::vector<List*> lists;
  std::vector<Dict*> dicts;
  bool draining = false;
};
thread_local Reclaimer reclaimer;

template <class T>
void reclaim(T* p) {
  Reclaimer& r = reclaimer;
  if constexpr (std::is_same_v<T, List>)
    r.lists.push_back(p);
  else
    r.dicts.push_back(p);
  if (r.draining) return;
  r.draining = true;
  while (!r.lists.empty() || !r.dicts.empty()) {
    if (!r.lists.empty()) {
      List* l = r.lists.back();
      r.lists.pop_back();
      delete l;
    } else {
      Dict* d = r.dicts.back();
      r.dicts.pop_back();
      delete d;
    }
  }
  r.draining = false;
}

}  // namespace

const Value* Dict::find(const std::string& key) const {
  for (const auto& kv : items)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

void Dict::set(const std::string& key, Value value) {
  for (auto& kv : items)
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  items.emplace_back(key, std::move(value));
}

Value Value::undefined(std::string name) {
  Value v;
  v.s = std::move(name);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::boolean(bool x) {
  Value v;
  v.kind = Kind::Bool;
  v.b = x;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.kind = Kind::Int;
  v.i = x;
  return v;
}
Value Value::number(double x) {
  Value v;
  v.kind = Kind::Float;
  v.f = x;
  return v;
}
Value Value::string(std::string x) {
  Value v;
  v.kind = Kind::String;
  v.s = std::move(x);
  return v;
}
Value Value::make_list(List items, bool is_tuple) {
  Value v;
  v.kind = Kind::List;
  v.tuple = is_tuple;
  v.list = std::shared_ptr<List>(new List(std::move(items)), [](List* l) { reclaim(l); });
  return v;
}
Value Value::make_dict(Dict d) {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::shared_ptr<Dict>(new Dict(std::move(d)), [](Dict* p) { reclaim(p); });
  return v;
}
Value Value::make_namespace(Dict d) {
  Value v = make_dict(std::move(d));
  v.kind = Kind::Namespace;
  return v;
}
Value Value::callable(std::string name, std::function<Value(List&, KwArgs&)> f) {
  Value v;
  v.kind = Kind::Callable;
  v.fn = std::make_shared<Callable>(Callable{std::move(name), std::move(f)});
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j, int depth) {
  if (depth > lim::kMaxNesting)
    fail_limit(
        "the template context (messages, tools) nests more than " + std::to_string(lim::kMaxNesting) + " levels deep",
        "flatten the messages / tools JSON");
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return integer(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return number(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const auto& e : j) items.push_back(from_json(e, depth + 1));
      return make_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.items.emplace_back(it.key(), from_json(it.value(), depth + 1));
      return make_dict(std::move(d));
    }
    default: fail("unsupported JSON value in the template context");
  }
}

double Value::as_double() const {
  switch (kind) {
    case Kind::Bool: return b ? 1 : 0;
    case Kind::Int: return static_cast<double>(i);
    case Kind::Float: return f;
    default: fail(std::string("expected a number, got ") + kind_name(*this));
  }
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return b;
    case Kind::Int: return i != 0;
    case Kind::Float: return f != 0;
    case Kind::String: return !s.empty();
    case Kind::List: return !list->empty();
    case Kind::Dict: return !dict->items.empty();
    default: return true;
  }
}

const char* kind_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::None: return "NoneType";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::String: return "str";
    case Value::Kind::List: return v.tuple ? "tuple" : "list";
    case Value::Kind::Dict: return "dict";
    case Value::Kind::Namespace: return "Namespace";
    case Value::Kind::Callable: return "function";
  }
  return "?";
}

std::string format_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return std::signbit(v) ? "-0.0" : "0.0";
  char buf[64];
  int prec = 1;
  for (; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  // buf = [-]d.ddde[+-]XX
  std::string s(buf);
  bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  size_t e = s.find('e');
  int exp10 = std::atoi(s.c_str() + e + 1);
  std::string digits;
  for (size_t k = 0; k < e; ++k)
    if (s[k] != '.') digits += s[k];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out;
  if (exp10 >= -5 + 1 && exp10 < 16) {
    if (exp10 >= 0) {
      std::string ip = digits.substr(0, std::min(digits.size(), static_cast<size_t>(exp10 + 1)));
      while (static_cast<int>(ip.size()) < exp10 + 1) ip += '0';
      std::string fp = digits.size() > static_cast<size_t>(exp10 + 1) ? digits.substr(exp10 + 1) : "0";
      out = ip + "." + fp;
    } else {
      out = "0." + std::string(static_cast<size_t>(-exp10 - 1), '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    out += eb;
  }
  return neg ? "-" + out : out;
}

static std::string repr_string(const std::string& s) {
  char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == static_cast<unsigned char>(q))
      out += std::string("\\") + q;
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else
      out += static_cast<char>(c);
  }
  return out + q;
}

std::string repr(const Value& v, int depth) {
  switch (v.kind) {
    case Value::Kind::String: return repr_string(v.s);
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::List: {
      check_value_depth(depth + 1, "the value printed");
      std::string out = v.tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        out += (k ? ", " : "") + repr((*v.list)[k], depth + 1);
        check_string_size(out.size(), "the printed list");
      }
      if (v.tuple && v.list->size() == 1) out += ",";
      return out + (v.tuple ? ")" : "]");
    }
    case Value::Kind::Dict: {
      check_value_depth(depth + 1, "the value printed");
      std::string out = "{";
      bool first = true;
      for (const auto& kv : v.dict->items) {
        out += (first ? "" : ", ") + repr_string(kv.first) + ": " + repr(kv.second, depth + 1);
        check_string_size(out.size(), "the printed dict");
        first = false;
      }
      return out + "}";
    }
    default: return to_str(v, depth);
  }
}

std::string to_str(const Value& v, int depth) {
  switch (v.kind) {
    case Value::Kind::Undefined: return "";
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return v.b ? "True" : "False";
    case Value::Kind::Int: return std::to_string(v.i);
    case Value::Kind::Float: return format_float(v.f);
    case Value::Kind::String: return v.s;
    case Value::Kind::Namespace: return "<Namespace " + repr(Value::make_dict(*v.dict), depth) + ">";
    case Value::Kind::Callable: return "<function " + v.fn->name + ">";
    default: return repr(v, depth);
  }
}

bool equals(const Value& a, const Value& b, int depth) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Value::Kind::Float && b.kind != Value::Kind::Float)
      return (a.kind == Value::Kind::Bool ? a.b : a.i) == (b.kind == Value::Kind::Bool ? b.b : b.i);
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return true;
    case Value::Kind::String: return a.s == b.s;
    case Value::Kind::List:
      if (a.list == b.list) return true;
      if (a.list->size() != b.list->size()) return false;
      check_value_depth(depth + 1, "a compared value");
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equals((*a.list)[k], (*b.list)[k], depth + 1)) return false;
      return true;
    case Value::Kind::Dict:
    case Value::Kind::Namespace: {
      if (a.dict == b.dict) return true;
      if (a.kind == Value::Kind::Namespace || a.dict->items.size() != b.dict->items.size()) return false;
      check_value_depth(depth + 1, "a compared value");
      for (const auto& kv : a.dict->items) {
        const Value* o = b.dict->find(kv.first);
        if (!o || !equals(kv.second, *o, depth + 1)) return false;
      }
      return true;
    }
    case Value::Kind::Callable: return a.fn == b.fn;
    default: return false;
  }
}

int compare(const Value& a, const Value& b, int depth) {
  if (a.is_number() && b.is_number()) {
    double x = a.as_double(), y = b.as_double();
    if (a.kind != Value::Kind::Float && b.kind != Value::Kind::Float) {
      int64_t p = a.kind == Value::Kind::Bool ? a.b : a.i, q = b.kind == Value::Kind::Bool ? b.b : b.i;
      return p < q ? -1 : p > q;
    }
    return x < y ? -1 : x > y;
  }
  if (a.is_string() && b.is_string()) return a.s < b.s ? -1 : a.s > b.s;
  if (a.is_list() && b.is_list()) {
    check_value_depth(depth + 1, "a compared value");
    size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      if (equals((*a.list)[k], (*b.list)[k], depth + 1)) continue;
      return compare((*a.list)[k], (*b.list)[k], depth + 1);
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size();
  }
  fail(std::string("'<' not supported between instances of '") + kind_name(a) + "' and '" + kind_name(b) + "'");
}

static std::string json_string(const std::string& s, bool ensure_ascii) {
  std::string out = "\"";
  for (const auto& ch : utf8_chars(s)) {
    unsigned char c = static_cast<unsigned char>(ch[0]);
    if (c >= 0x80 && ch.size() > 1) {
      if (!ensure_ascii) {
        out += ch;
        continue;
      }
      uint32_t cp = c & (ch.size() == 2 ? 0x1F : ch.size() == 3 ? 0x0F : 0x07);
      for (size_t k = 1; k < ch.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(ch[k]) & 0x3F);
      char b[16];
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(b, sizeof b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
      } else {
        std::snprintf(b, sizeof b, "\\u%04x", cp);
      }
      out += b;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ensure_ascii && c >= 0x7f)) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

static void dump_json(const Value& v, int indent, const std::string& isep, const std::string& ksep, bool sort_keys,
                      bool ascii, int level, std::string& out) {
  auto newline = [&](int lvl) {
    size_t spaces = static_cast<size_t>(indent) * static_cast<size_t>(lvl);
    check_string_size(out.size() + 1 + spaces, "the JSON text");
    out += "\n";
    out.append(spaces, ' ');
  };
  check_value_depth(level, "the value given to tojson");
  check_string_size(out.size(), "the JSON text");
  switch (v.kind) {
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.b ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.i); return;
    case Value::Kind::Float:
      if (std::isnan(v.f))
        out += "NaN";
      else if (std::isinf(v.f))
        out += v.f > 0 ? "Infinity" : "-Infinity";
      else
        out += format_float(v.f);
      return;
    case Value::Kind::String: out += json_string(v.s, ascii); return;
    case Value::Kind::List: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += isep;
        if (indent >= 0) newline(level + 1);
        dump_json((*v.list)[k], indent, isep, ksep, sort_keys, ascii, level + 1, out);
      }
      if (indent >= 0) newline(level);
      out += "]";
      return;
    }
    case Value::Kind::Dict: {
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.dict->items) items.push_back(&kv);
      if (sort_keys) std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += "{";
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += isep;
        if (indent >= 0) newline(level + 1);
        out += json_string(items[k]->first, ascii) + ksep;
        dump_json(items[k]->second, indent, isep, ksep, sort_keys, ascii, level + 1, out);
      }
      if (indent >= 0) newline(level);
      out += "}";
      return;
    }
    default: {
      std::string type = v.is_undefined() ? "Undefined" : kind_name(v);
      fail("Object of type " + type + " is not JSON serializable");
    }
  }
}

std::string to_json(const Value& v, int indent, const std::string& item_sep, const std::string& key_sep, bool sort_keys,
                    bool ensure_ascii) {
  std::string out;
  dump_json(v, indent, item_sep, key_sep, sort_keys, ensure_ascii, 0, out);
  return out;
}

std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t k = 0; k < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[k]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    n = std::min(n, s.size() - k);
    out.push_back(s.substr(k, n));
    k += n;
  }
  return out;
}

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

}  // namespace automodel::tokenizer::jinja

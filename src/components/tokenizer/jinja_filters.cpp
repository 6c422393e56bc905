// The filters of transformers' Jinja environment (Jinja2's built-ins, tojson as transformers overrides it).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "components/tokenizer/jinja_builtins.h"
#include "components/tokenizer/jinja_util.h"

namespace automodel::tokenizer::jinja {
namespace {

Value attr_path(const Value& v, const Value& attribute) {
  if (attribute.kind == Value::Kind::Int) return get_item(v, attribute);
  Value cur = v;
  const std::string& path = str_of(attribute, "attribute");
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                               [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    errno = 0;
    long long index = std::strtoll(part.c_str(), nullptr, 10);
    cur = digits && errno == 0 ? get_item(cur, Value::integer(index)) : get_item(cur, Value::string(part));
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return cur;
}

int sort_compare(const Value& a, const Value& b, bool case_sensitive) {
  if (!case_sensitive && a.is_string() && b.is_string())
    return compare(Value::string(lower(a.s)), Value::string(lower(b.s)));
  return compare(a, b);
}

Value to_int(const Value& v, const Value& fallback) {
  switch (v.kind) {
    case Value::Kind::Int: return v;
    case Value::Kind::Bool: return Value::integer(v.b);
    case Value::Kind::Float: return std::isfinite(v.f) ? Value::integer(checked_int(v.f)) : fallback;
    case Value::Kind::String: {
      std::string t = strip_chars(v.s, nullptr, true, true);
      t.erase(std::remove(t.begin(), t.end(), '_'), t.end());
      if (t.empty()) return fallback;
      char* end = nullptr;
      errno = 0;
      long long i = std::strtoll(t.c_str(), &end, 10);
      if (*end == '\0') {
        if (errno == ERANGE) fail("integer overflow: '" + t + "' does not fit in 64 bits");
        return Value::integer(i);
      }
      double d = std::strtod(t.c_str(), &end);
      if (*end == '\0' && std::isfinite(d)) return Value::integer(checked_int(d));
      return fallback;
    }
    default: return fallback;
  }
}

Value to_float(const Value& v, const Value& fallback) {
  if (v.is_number()) return Value::number(v.as_double());
  if (v.is_string()) {
    std::string t = strip_chars(v.s, nullptr, true, true);
    char* end = nullptr;
    double d = std::strtod(t.c_str(), &end);
    if (!t.empty() && *end == '\0') return Value::number(d);
  }
  return fallback;
}

Value py_round(const Value& v, int64_t precision, const std::string& method) {
  if (!v.is_number()) fail(std::string("round expects a number, got ") + kind_name(v));
  double scale = std::pow(10.0, static_cast<double>(precision));
  double x = v.as_double();
  if (method == "ceil") return Value::number(std::ceil(x * scale) / scale);
  if (method == "floor") return Value::number(std::floor(x * scale) / scale);
  if (method != "common") fail("method must be 'common', 'ceil' or 'floor'");
  if (v.kind != Value::Kind::Float && precision >= 0) return Value::integer(v.kind == Value::Kind::Bool ? v.b : v.i);
  double y = x * scale;
  double r = std::nearbyint(y);  // round-half-even like Python's round()
  return Value::number(r / scale);
}

List select_items(const Value& input, List& args, bool by_attr, bool select) {
  List out;
  size_t off = by_attr ? 1 : 0;
  if (by_attr && args.empty()) fail("selectattr/rejectattr need an attribute name");
  std::string test = args.size() > off ? str_of(args[off], "test name") : "";
  List test_args(args.begin() + static_cast<std::ptrdiff_t>(std::min(args.size(), off + 1)), args.end());
  for (const auto& item : iterate(input)) {
    Value v = by_attr ? attr_path(item, args[0]) : item;
    bool ok = test.empty() ? v.truthy() : apply_test(test, v, test_args);
    if (ok == select) out.push_back(item);
  }
  return out;
}

// Python's `fmt % args` for %s, %r, %d/%i, %f/%.Nf and %%.
}  // namespace

bool has_filter(const std::string& n) {
  static const char* names[] = {"abs",    "attr",       "capitalize", "count",     "d",       "default", "dictsort",
                                "e",      "escape",     "first",      "float",     "indent",  "int",     "items",
                                "join",   "last",       "length",     "list",      "lower",   "map",     "max",
                                "min",    "reject",     "rejectattr", "replace",   "reverse", "round",   "safe",
                                "select", "selectattr", "sort",       "string",    "sum",     "title",   "tojson",
                                "trim",   "unique",     "upper",      "wordcount", "center",  "format"};
  for (const char* x : names)
    if (n == x) return true;
  return false;
}

Value apply_filter(const std::string& n, const Value& v, List& args, KwArgs& kw) {
  using K = Value::Kind;
  auto undefined_fail = [&] {
    if (v.is_undefined()) fail(v.s.empty() ? "filter '" + n + "' on an undefined value" : v.s);
  };
  if (n == "default" || n == "d") {
    const Value* def = arg(args, kw, 0, "default_value");
    bool boolean = bool_arg(args, kw, 1, "boolean", false);
    if (v.is_undefined() || (boolean && !v.truthy())) return def ? *def : Value::string("");
    return v;
  }
  if (n == "length" || n == "count") {
    switch (v.kind) {
      case K::Undefined: return Value::integer(0);
      case K::String: return Value::integer(static_cast<int64_t>(utf8_length(v.s)));
      case K::List: return Value::integer(static_cast<int64_t>(v.list->size()));
      case K::Dict:
      case K::Namespace: return Value::integer(static_cast<int64_t>(v.dict->items.size()));
      default: fail(std::string("object of type '") + kind_name(v) + "' has no len()");
    }
  }
  if (n == "string") return Value::string(to_str(v));
  if (n == "safe") return v.is_string() ? v : Value::string(to_str(v));
  if (n == "e" || n == "escape") return Value::string(html_escape(to_str(v)));
  if (n == "trim") return Value::string(strip_chars(to_str(v), arg(args, kw, 0, "chars"), true, true));
  if (n == "upper") return Value::string(upper(to_str(v)));
  if (n == "lower") return Value::string(lower(to_str(v)));
  if (n == "capitalize") return Value::string(capitalize(to_str(v)));
  if (n == "title") return Value::string(jinja_title(to_str(v)));
  if (n == "replace") {
    const Value* from = arg(args, kw, 0, "old");
    const Value* to = arg(args, kw, 1, "new");
    if (!from || !to) fail("replace needs two arguments");
    return Value::string(replace_all(to_str(v), to_str(*from), to_str(*to), int_arg(args, kw, 2, "count", -1)));
  }
  if (n == "tojson") {
    const Value* ind = arg(args, kw, 0, "indent");
    int indent = -1;
    if (ind && !ind->is_none()) {
      if (ind->kind != K::Int) fail("tojson indent must be an integer");
      // Clamped to int; an indent that large fails the string size check at its first line break anyway.
      indent = static_cast<int>(std::clamp<int64_t>(ind->i, -1, INT32_MAX));
    }
    std::string isep = indent >= 0 ? "," : ", ", ksep = ": ";
    if (const Value* sep = arg(args, kw, 99, "separators"); sep && !sep->is_none()) {
      if (!sep->is_list() || sep->list->size() != 2) fail("tojson separators must be a pair of strings");
      isep = str_of((*sep->list)[0], "separators");
      ksep = str_of((*sep->list)[1], "separators");
    }
    return Value::string(to_json(v, indent, isep, ksep, bool_arg(args, kw, 99, "sort_keys", false),
                                 bool_arg(args, kw, 99, "ensure_ascii", false)));
  }
  if (n == "join") {
    std::string sep = args.empty() && !arg(args, kw, 0, "d") ? "" : to_str(*arg(args, kw, 0, "d"));
    const Value* attribute = arg(args, kw, 1, "attribute");
    std::string out;
    bool first = true;
    for (const auto& it : iterate(v)) {
      std::string piece = to_str(attribute ? attr_path(it, *attribute) : it);
      check_string_size(out.size() + (first ? 0 : sep.size()) + piece.size(), "the result of |join");
      if (!first) out += sep;
      out += piece;
      first = false;
    }
    return Value::string(out);
  }
  if (n == "list") return Value::make_list(iterate(v));
  if (n == "first") {
    List items = iterate(v);
    return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
  }
  if (n == "last") {
    List items = iterate(v);
    return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
  }
  if (n == "reverse") {
    if (v.is_string()) {
      std::string out;
      out.reserve(v.s.size());
      std::vector<size_t> starts;
      for (size_t k = 0; k < v.s.size(); k += utf8_char_len(v.s, k)) starts.push_back(k);
      for (size_t k = starts.size(); k-- > 0;) out.append(v.s, starts[k], utf8_char_len(v.s, starts[k]));
      return Value::string(out);
    }
    List items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::make_list(items);
  }
  if (n == "items") {
    if (v.is_undefined()) return Value::make_list();
    if (v.kind != K::Dict) fail(std::string("can only get item pairs from a mapping, not ") + kind_name(v));
    List out;
    for (const auto& kv : v.dict->items) out.push_back(Value::make_list({Value::string(kv.first), kv.second}, true));
    return Value::make_list(out);
  }
  if (n == "dictsort") {
    if (v.kind != K::Dict) fail("dictsort expects a mapping");
    bool cs = bool_arg(args, kw, 0, "case_sensitive", false);
    const Value* by = arg(args, kw, 1, "by");
    bool by_value = by && by->is_string() && by->s == "value";
    bool rev = bool_arg(args, kw, 2, "reverse", false);
    List out;
    for (const auto& kv : v.dict->items) out.push_back(Value::make_list({Value::string(kv.first), kv.second}, true));
    std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
      int c = sort_compare((*a.list)[by_value], (*b.list)[by_value], cs);
      return rev ? c > 0 : c < 0;
    });
    return Value::make_list(out);
  }
  if (n == "sort") {
    bool rev = bool_arg(args, kw, 0, "reverse", false);
    bool cs = bool_arg(args, kw, 1, "case_sensitive", false);
    const Value* attribute = arg(args, kw, 2, "attribute");
    List items = iterate(v);
    std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
      int c = attribute ? sort_compare(attr_path(a, *attribute), attr_path(b, *attribute), cs) : sort_compare(a, b, cs);
      return rev ? c > 0 : c < 0;
    });
    return Value::make_list(items);
  }
  if (n == "unique") {
    bool cs = bool_arg(args, kw, 0, "case_sensitive", false);
    const Value* attribute = arg(args, kw, 1, "attribute");
    List out, seen;
    for (const auto& it : iterate(v)) {
      Value key = attribute ? attr_path(it, *attribute) : it;
      if (!cs && key.is_string()) key = Value::string(lower(key.s));
      bool dup = false;
      for (const auto& s : seen) dup = dup || equals(s, key);
      if (!dup) {
        seen.push_back(key);
        out.push_back(it);
      }
    }
    return Value::make_list(out);
  }
  if (n == "min" || n == "max") {
    bool cs = bool_arg(args, kw, 0, "case_sensitive", false);
    const Value* attribute = arg(args, kw, 1, "attribute");
    List items = iterate(v);
    if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
    Value best = items[0];
    for (const auto& it : items) {
      int c = attribute ? sort_compare(attr_path(it, *attribute), attr_path(best, *attribute), cs)
                        : sort_compare(it, best, cs);
      if (n == "min" ? c < 0 : c > 0) best = it;
    }
    return best;
  }
  if (n == "sum") {
    const Value* attribute = arg(args, kw, 0, "attribute");
    const Value* start = arg(args, kw, 1, "start");
    Value total = start ? *start : Value::integer(0);
    for (const auto& it : iterate(v)) total = binary_op("+", total, attribute ? attr_path(it, *attribute) : it);
    return total;
  }
  if (n == "map") {
    List out;
    const Value* attribute = arg(args, kw, 99, "attribute");
    if (attribute) {
      const Value* def = arg(args, kw, 99, "default");
      for (const auto& it : iterate(v)) {
        Value r = attr_path(it, *attribute);
        out.push_back(r.is_undefined() && def ? *def : r);
      }
      return Value::make_list(out);
    }
    if (args.empty()) fail("map needs a filter name or attribute=");
    std::string f = str_of(args[0], "map filter name");
    List rest(args.begin() + 1, args.end());
    for (const auto& it : iterate(v)) {
      List a = rest;
      KwArgs k = kw;
      out.push_back(apply_filter(f, it, a, k));
    }
    return Value::make_list(out);
  }
  if (n == "select" || n == "reject") return Value::make_list(select_items(v, args, false, n == "select"));
  if (n == "selectattr" || n == "rejectattr") return Value::make_list(select_items(v, args, true, n == "selectattr"));
  if (n == "attr") {
    if (args.empty()) fail("attr needs a name");
    return get_attr(v, str_of(args[0], "attr"));
  }
  if (n == "int") {
    const Value* def = arg(args, kw, 0, "default");
    return to_int(v, def ? *def : Value::integer(0));
  }
  if (n == "float") {
    const Value* def = arg(args, kw, 0, "default");
    return to_float(v, def ? *def : Value::number(0.0));
  }
  if (n == "abs") {
    undefined_fail();
    if (v.kind == K::Float) return Value::number(std::fabs(v.f));
    if (v.kind == K::Int && v.i == INT64_MIN) fail("integer overflow in abs(): the result does not fit in 64 bits");
    if (v.kind == K::Int || v.kind == K::Bool) return Value::integer(std::llabs(v.kind == K::Bool ? v.b : v.i));
    fail(std::string("bad operand type for abs(): '") + kind_name(v) + "'");
  }
  if (n == "round") {
    const Value* method = arg(args, kw, 1, "method");
    return py_round(v, int_arg(args, kw, 0, "precision", 0), method ? str_of(*method, "round method") : "common");
  }
  if (n == "wordcount") {
    std::string s = to_str(v);
    int64_t count = 0;
    bool in_word = false;
    for (char c : s) {
      bool w = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || static_cast<unsigned char>(c) >= 0x80;
      if (w && !in_word) ++count;
      in_word = w;
    }
    return Value::integer(count);
  }
  if (n == "indent") {
    const Value* width = arg(args, kw, 0, "width");
    std::string ind;
    if (width && width->is_string()) {
      ind = width->s;
    } else {
      int64_t n = std::max<int64_t>(int_arg(args, kw, 0, "width", 4), 0);
      check_string_size(static_cast<uint64_t>(n), "the indent of |indent");
      ind.assign(static_cast<size_t>(n), ' ');
    }
    bool first = bool_arg(args, kw, 1, "first", false);
    bool blank = bool_arg(args, kw, 2, "blank", false);
    std::string s = to_str(v) + "\n";
    std::vector<std::string> lines;
    for (size_t pos = 0; pos < s.size();) {
      size_t e = s.find('\n', pos);
      lines.push_back(s.substr(pos, e - pos));
      pos = e + 1;
    }
    std::string rv = lines[0];
    check_string_size(s.size() + lines.size() * ind.size(), "the result of |indent");
    for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + ((blank || !lines[k].empty()) ? ind + lines[k] : lines[k]);
    if (first) rv = ind + rv;
    return Value::string(rv);
  }
  if (n == "format") {
    return Value::string(percent_format(to_str(v), Value::make_list(args, true)));
  }
  if (n == "center") {
    std::string s = to_str(v);
    int64_t width = int_arg(args, kw, 0, "width", 80);
    int64_t len = static_cast<int64_t>(utf8_length(s));
    if (len >= width) return Value::string(s);
    check_string_size(s.size() + static_cast<uint64_t>(width - len), "the result of |center");
    int64_t total = width - len, left = total / 2 + (total & width & 1);
    return Value::string(std::string(static_cast<size_t>(left), ' ') + s +
                         std::string(static_cast<size_t>(total - left), ' '));
  }
  fail("no filter named '" + n + "'");
}

}  // namespace automodel::tokenizer::jinja

// The filters of transformers' Jinja environment (Jinja2's built-ins, tojson as transformers overrides it).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>

#include "components/tokenizer/jinja_builtins.h"
#include "components/tokenizer/jinja_util.h"

namespace automodel::tokenizer::jinja {
namespace {

using K = Value::Kind;

// Follows a dotted attribute path ("a.b", "0.name") the way filters' attribute= arguments do.
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

// `item`, or its attribute path when the filter was given attribute=.
Value key_of(const Value& item, const Value* attribute) { return attribute ? attr_path(item, *attribute) : item; }

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

Value select_items(const Value& input, List& args, bool by_attr, bool select) {
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
  return Value::make_list(out);
}

// (key, value) tuples of a mapping, in its order.
List item_pairs(const Dict& d) {
  List out;
  for (const auto& kv : d.items) out.push_back(Value::make_list({Value::string(kv.first), kv.second}, true));
  return out;
}

// ---- the filters: (input, positional arguments, keyword arguments) -> result ----

Value filter_default(const Value& v, List& args, KwArgs& kw) {
  const Value* def = arg(args, kw, 0, "default_value");
  bool boolean = bool_arg(args, kw, 1, "boolean", false);
  if (v.is_undefined() || (boolean && !v.truthy())) return def ? *def : Value::string("");
  return v;
}

Value filter_length(const Value& v, List&, KwArgs&) {
  switch (v.kind) {
    case K::Undefined: return Value::integer(0);
    case K::String: return Value::integer(static_cast<int64_t>(utf8_length(v.s)));
    case K::List: return Value::integer(static_cast<int64_t>(v.list->size()));
    case K::Dict:
    case K::Namespace: return Value::integer(static_cast<int64_t>(v.dict->items.size()));
    default: fail(std::string("object of type '") + kind_name(v) + "' has no len()");
  }
}

Value filter_escape(const Value& v, List&, KwArgs&) { return Value::string(html_escape(to_str(v))); }

Value filter_replace(const Value& v, List& args, KwArgs& kw) {
  const Value* from = arg(args, kw, 0, "old");
  const Value* to = arg(args, kw, 1, "new");
  if (!from || !to) fail("replace needs two arguments");
  return Value::string(replace_all(to_str(v), to_str(*from), to_str(*to), int_arg(args, kw, 2, "count", -1)));
}

Value filter_tojson(const Value& v, List& args, KwArgs& kw) {
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

Value filter_join(const Value& v, List& args, KwArgs& kw) {
  std::string sep = args.empty() && !arg(args, kw, 0, "d") ? "" : to_str(*arg(args, kw, 0, "d"));
  const Value* attribute = arg(args, kw, 1, "attribute");
  std::string out;
  bool first = true;
  for (const auto& it : iterate(v)) {
    std::string piece = to_str(key_of(it, attribute));
    check_string_size(out.size() + (first ? 0 : sep.size()) + piece.size(), "the result of |join");
    if (!first) out += sep;
    out += piece;
    first = false;
  }
  return Value::string(out);
}

Value filter_first(const Value& v, List&, KwArgs&) {
  List items = iterate(v);
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}

Value filter_last(const Value& v, List&, KwArgs&) {
  List items = iterate(v);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

Value filter_reverse(const Value& v, List&, KwArgs&) {
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

Value filter_items(const Value& v, List&, KwArgs&) {
  if (v.is_undefined()) return Value::make_list();
  if (v.kind != K::Dict) fail(std::string("can only get item pairs from a mapping, not ") + kind_name(v));
  return Value::make_list(item_pairs(*v.dict));
}

Value filter_dictsort(const Value& v, List& args, KwArgs& kw) {
  if (v.kind != K::Dict) fail("dictsort expects a mapping");
  bool cs = bool_arg(args, kw, 0, "case_sensitive", false);
  const Value* by = arg(args, kw, 1, "by");
  bool by_value = by && by->is_string() && by->s == "value";
  bool rev = bool_arg(args, kw, 2, "reverse", false);
  List out = item_pairs(*v.dict);
  std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
    int c = sort_compare((*a.list)[by_value], (*b.list)[by_value], cs);
    return rev ? c > 0 : c < 0;
  });
  return Value::make_list(out);
}

Value filter_sort(const Value& v, List& args, KwArgs& kw) {
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

Value filter_unique(const Value& v, List& args, KwArgs& kw) {
  bool cs = bool_arg(args, kw, 0, "case_sensitive", false);
  const Value* attribute = arg(args, kw, 1, "attribute");
  List out, seen;
  for (const auto& it : iterate(v)) {
    Value key = key_of(it, attribute);
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

// |min and |max: the first item no other item is below (min) or above (max).
Value extreme(const Value& v, List& args, KwArgs& kw, bool min) {
  bool cs = bool_arg(args, kw, 0, "case_sensitive", false);
  const Value* attribute = arg(args, kw, 1, "attribute");
  List items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  Value best = items[0];
  for (const auto& it : items) {
    int c = attribute ? sort_compare(attr_path(it, *attribute), attr_path(best, *attribute), cs)
                      : sort_compare(it, best, cs);
    if (min ? c < 0 : c > 0) best = it;
  }
  return best;
}

Value filter_sum(const Value& v, List& args, KwArgs& kw) {
  const Value* attribute = arg(args, kw, 0, "attribute");
  const Value* start = arg(args, kw, 1, "start");
  Value total = start ? *start : Value::integer(0);
  for (const auto& it : iterate(v)) total = binary_op("+", total, key_of(it, attribute));
  return total;
}

Value filter_map(const Value& v, List& args, KwArgs& kw) {
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

Value filter_attr(const Value& v, List& args, KwArgs&) {
  if (args.empty()) fail("attr needs a name");
  return get_attr(v, str_of(args[0], "attr"));
}

Value filter_int(const Value& v, List& args, KwArgs& kw) {
  const Value* def = arg(args, kw, 0, "default");
  return to_int(v, def ? *def : Value::integer(0));
}

Value filter_float(const Value& v, List& args, KwArgs& kw) {
  const Value* def = arg(args, kw, 0, "default");
  return to_float(v, def ? *def : Value::number(0.0));
}

Value filter_abs(const Value& v, List&, KwArgs&) {
  if (v.is_undefined()) fail(v.s.empty() ? "filter 'abs' on an undefined value" : v.s);
  if (v.kind == K::Float) return Value::number(std::fabs(v.f));
  if (v.kind == K::Int && v.i == INT64_MIN) fail("integer overflow in abs(): the result does not fit in 64 bits");
  if (v.kind == K::Int || v.kind == K::Bool) return Value::integer(std::llabs(v.kind == K::Bool ? v.b : v.i));
  fail(std::string("bad operand type for abs(): '") + kind_name(v) + "'");
}

Value filter_round(const Value& v, List& args, KwArgs& kw) {
  const Value* method = arg(args, kw, 1, "method");
  return py_round(v, int_arg(args, kw, 0, "precision", 0), method ? str_of(*method, "round method") : "common");
}

Value filter_wordcount(const Value& v, List&, KwArgs&) {
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

Value filter_indent(const Value& v, List& args, KwArgs& kw) {
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

Value filter_center(const Value& v, List& args, KwArgs& kw) {
  std::string s = to_str(v);
  int64_t width = int_arg(args, kw, 0, "width", 80);
  int64_t len = static_cast<int64_t>(utf8_length(s));
  if (len >= width) return Value::string(s);
  check_string_size(s.size() + static_cast<uint64_t>(width - len), "the result of |center");
  int64_t total = width - len, left = total / 2 + (total & width & 1);
  return Value::string(std::string(static_cast<size_t>(left), ' ') + s +
                       std::string(static_cast<size_t>(total - left), ' '));
}

using Filter = Value (*)(const Value& input, List& args, KwArgs& kwargs);

// Every filter by name: apply_filter runs them and `is filter` asks for them, so the two cannot disagree.
const std::map<std::string, Filter>& filters() {
  static const std::map<std::string, Filter> table = {
      {"abs", filter_abs},
      {"attr", filter_attr},
      {"capitalize", [](const Value& v, List&, KwArgs&) { return Value::string(capitalize(to_str(v))); }},
      {"center", filter_center},
      {"count", filter_length},
      {"d", filter_default},
      {"default", filter_default},
      {"dictsort", filter_dictsort},
      {"e", filter_escape},
      {"escape", filter_escape},
      {"first", filter_first},
      {"float", filter_float},
      {"format", [](const Value& v, List& args,
                    KwArgs&) { return Value::string(percent_format(to_str(v), Value::make_list(args, true))); }},
      {"indent", filter_indent},
      {"int", filter_int},
      {"items", filter_items},
      {"join", filter_join},
      {"last", filter_last},
      {"length", filter_length},
      {"list", [](const Value& v, List&, KwArgs&) { return Value::make_list(iterate(v)); }},
      {"lower", [](const Value& v, List&, KwArgs&) { return Value::string(lower(to_str(v))); }},
      {"map", filter_map},
      {"max", [](const Value& v, List& args, KwArgs& kw) { return extreme(v, args, kw, /*min=*/false); }},
      {"min", [](const Value& v, List& args, KwArgs& kw) { return extreme(v, args, kw, /*min=*/true); }},
      {"reject", [](const Value& v, List& args, KwArgs&) { return select_items(v, args, false, false); }},
      {"rejectattr", [](const Value& v, List& args, KwArgs&) { return select_items(v, args, true, false); }},
      {"replace", filter_replace},
      {"reverse", filter_reverse},
      {"round", filter_round},
      {"safe", [](const Value& v, List&, KwArgs&) { return v.is_string() ? v : Value::string(to_str(v)); }},
      {"select", [](const Value& v, List& args, KwArgs&) { return select_items(v, args, false, true); }},
      {"selectattr", [](const Value& v, List& args, KwArgs&) { return select_items(v, args, true, true); }},
      {"sort", filter_sort},
      {"string", [](const Value& v, List&, KwArgs&) { return Value::string(to_str(v)); }},
      {"sum", filter_sum},
      {"title", [](const Value& v, List&, KwArgs&) { return Value::string(jinja_title(to_str(v))); }},
      {"tojson", filter_tojson},
      {"trim", [](const Value& v, List& args,
                  KwArgs& kw) { return Value::string(strip_chars(to_str(v), arg(args, kw, 0, "chars"), true, true)); }},
      {"unique", filter_unique},
      {"upper", [](const Value& v, List&, KwArgs&) { return Value::string(upper(to_str(v))); }},
      {"wordcount", filter_wordcount},
  };
  return table;
}

}  // namespace

bool has_filter(const std::string& name) { return filters().count(name) != 0; }

Value apply_filter(const std::string& name, const Value& input, List& args, KwArgs& kwargs) {
  auto it = filters().find(name);
  if (it == filters().end()) fail("no filter named '" + name + "'");
  return it->second(input, args, kwargs);
}

}  // namespace automodel::tokenizer::jinja

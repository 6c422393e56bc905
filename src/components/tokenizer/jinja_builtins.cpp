#include "components/tokenizer/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>

#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/jinja_util.h"

namespace automodel::tokenizer::jinja {
namespace {

bool starts_or_ends(const std::string& s, const Value& what, bool start) {
  auto one = [&](const std::string& p) {
    if (p.size() > s.size()) return false;
    return start ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0;
  };
  if (what.is_list()) {
    for (const auto& p : *what.list)
      if (one(str_of(p, "startswith/endswith"))) return true;
    return false;
  }
  return one(str_of(what, start ? "startswith" : "endswith"));
}

Value bound(const std::string& name, std::function<Value(List&, KwArgs&)> f) {
  return Value::callable(name, std::move(f));
}

// ---- str methods: (the string, the method's name, arguments) -> result ----

Value str_strip(const std::string& s, const std::string& name, List& a, KwArgs& k) {
  return Value::string(strip_chars(s, arg(a, k, 0, "chars"), name != "rstrip", name != "lstrip"));
}

Value str_split(const std::string& s, const std::string&, List& a, KwArgs& k) {
  return Value::make_list(py_split(s, arg(a, k, 0, "sep"), int_arg(a, k, 1, "maxsplit", -1)));
}

Value str_starts_or_ends(const std::string& s, const std::string& name, List& a, KwArgs& k) {
  const Value* p = arg(a, k, 0, "prefix");
  if (!p) fail(name + "() takes at least 1 argument");
  return Value::boolean(starts_or_ends(s, *p, name == "startswith"));
}

Value str_replace(const std::string& s, const std::string&, List& a, KwArgs& k) {
  if (a.size() < 2) fail("replace() takes at least 2 arguments");
  return Value::string(replace_all(s, str_of(a[0], "replace"), str_of(a[1], "replace"), int_arg(a, k, 2, "count", -1)));
}

// find, rfind (character index or -1) and count.
Value str_find(const std::string& s, const std::string& name, List& a, KwArgs& k) {
  const Value* p = arg(a, k, 0, "sub");
  if (!p) fail(name + "() takes at least 1 argument");
  const std::string& sub = str_of(*p, name.c_str());
  if (name == "find" || name == "rfind") {
    size_t f = name == "find" ? s.find(sub) : s.rfind(sub);
    return Value::integer(f == std::string::npos ? -1 : static_cast<int64_t>(utf8_length(s.substr(0, f))));
  }
  if (sub.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s)) + 1);
  int64_t n = 0;
  for (size_t f = s.find(sub); f != std::string::npos; f = s.find(sub, f + sub.size())) ++n;
  return Value::integer(n);
}

Value str_join(const std::string& s, const std::string&, List& a, KwArgs&) {
  if (a.empty()) fail("join() takes exactly one argument");
  std::string out;
  bool first = true;
  for (const auto& it : iterate(a[0])) {
    const std::string& piece = str_of(it, "join");
    check_string_size(out.size() + (first ? 0 : s.size()) + piece.size(), "the result of join()");
    if (!first) out += s;
    out += piece;
    first = false;
  }
  return Value::string(out);
}

Value str_splitlines(const std::string& s, const std::string&, List&, KwArgs&) {
  List out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t e = s.find('\n', pos);
    if (e == std::string::npos) e = s.size();
    std::string line = s.substr(pos, e - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(Value::string(line));
    pos = e + 1;
  }
  return Value::make_list(out);
}

// isdigit, isspace, isalpha, isalnum, islower, isupper (ASCII classes; islower/isupper need a cased character).
Value str_is(const std::string& s, const std::string& name, List&, KwArgs&) {
  if (s.empty()) return Value::boolean(false);
  bool ok = true, cased = false;
  for (unsigned char c : s) {
    if (name == "isdigit")
      ok = ok && std::isdigit(c);
    else if (name == "isspace")
      ok = ok && is_py_space(static_cast<char>(c));
    else if (name == "isalpha")
      ok = ok && std::isalpha(c);
    else if (name == "isalnum")
      ok = ok && std::isalnum(c);
    else if (name == "islower") {
      ok = ok && !std::isupper(c);
      cased = cased || std::islower(c);
    } else {
      ok = ok && !std::islower(c);
      cased = cased || std::isupper(c);
    }
  }
  return Value::boolean(ok && (name.compare(0, 4, "isup") != 0 && name.compare(0, 4, "islo") != 0 ? true : cased));
}

using StrMethod = Value (*)(const std::string& s, const std::string& name, List& args, KwArgs& kwargs);

const std::map<std::string, StrMethod>& str_methods() {
  static const std::map<std::string, StrMethod> table = {
      {"strip", str_strip},
      {"lstrip", str_strip},
      {"rstrip", str_strip},
      {"split", str_split},
      {"startswith", str_starts_or_ends},
      {"endswith", str_starts_or_ends},
      {"replace", str_replace},
      {"upper", [](const std::string& s, const std::string&, List&, KwArgs&) { return Value::string(upper(s)); }},
      {"lower", [](const std::string& s, const std::string&, List&, KwArgs&) { return Value::string(lower(s)); }},
      {"title", [](const std::string& s, const std::string&, List&, KwArgs&) { return Value::string(py_title(s)); }},
      {"capitalize",
       [](const std::string& s, const std::string&, List&, KwArgs&) { return Value::string(capitalize(s)); }},
      {"find", str_find},
      {"rfind", str_find},
      {"count", str_find},
      {"join", str_join},
      {"format", [](const std::string& s, const std::string&, List& a,
                    KwArgs& k) { return Value::string(brace_format(s, a, k)); }},
      {"splitlines", str_splitlines},
      {"isdigit", str_is},
      {"isspace", str_is},
      {"isalpha", str_is},
      {"isalnum", str_is},
      {"islower", str_is},
      {"isupper", str_is},
  };
  return table;
}

// s.name: the method bound to s.
Value string_method(const Value& obj, const std::string& name) {
  auto it = str_methods().find(name);
  if (it == str_methods().end()) return Value::undefined("'str object' has no attribute '" + name + "'");
  return bound(name, [s = obj.s, name, method = it->second](List& a, KwArgs& k) { return method(s, name, a, k); });
}

Value unsafe(const Value& obj, const std::string& name) {
  std::string msg = "access to attribute '" + name + "' of '" + kind_name(obj) + "' object is unsafe.";
  return bound(name, [msg](List&, KwArgs&) -> Value { fail(msg); });
}

Value dict_method(const Value& obj, const std::string& name) {
  auto d = obj.dict;
  if (name == "items")
    return bound(name, [d](List&, KwArgs&) {
      List out;
      for (const auto& kv : d->items) out.push_back(Value::make_list({Value::string(kv.first), kv.second}, true));
      return Value::make_list(out);
    });
  if (name == "keys")
    return bound(name, [d](List&, KwArgs&) {
      List out;
      for (const auto& kv : d->items) out.push_back(Value::string(kv.first));
      return Value::make_list(out);
    });
  if (name == "values")
    return bound(name, [d](List&, KwArgs&) {
      List out;
      for (const auto& kv : d->items) out.push_back(kv.second);
      return Value::make_list(out);
    });
  if (name == "get")
    return bound(name, [d](List& a, KwArgs& k) {
      if (a.empty()) fail("get() takes at least 1 argument");
      const Value* v = a[0].is_string() ? d->find(a[0].s) : nullptr;
      if (v) return *v;
      const Value* def = arg(a, k, 1, "default");
      return def ? *def : Value::none();
    });
  if (name == "copy") return bound(name, [d](List&, KwArgs&) { return Value::make_dict(*d); });
  if (name == "pop" || name == "update" || name == "setdefault" || name == "clear" || name == "popitem")
    return unsafe(obj, name);
  return Value();
}

Value list_method(const Value& obj, const std::string& name) {
  if (name == "append" || name == "pop" || name == "extend" || name == "insert" || name == "remove" ||
      name == "clear" || name == "sort" || name == "reverse")
    return unsafe(obj, name);
  auto l = obj.list;
  if (name == "index" || name == "count")
    return bound(name, [l, name](List& a, KwArgs&) {
      if (a.empty()) fail(name + "() takes at least 1 argument");
      int64_t n = 0;
      for (size_t k = 0; k < l->size(); ++k)
        if (equals((*l)[k], a[0])) {
          if (name == "index") return Value::integer(static_cast<int64_t>(k));
          ++n;
        }
      if (name == "index") fail("ValueError: value is not in list");
      return Value::integer(n);
    });
  return Value();
}

}  // namespace

List iterate(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::List: return *v.list;
    case Value::Kind::Dict: {
      List out;
      for (const auto& kv : v.dict->items) out.push_back(Value::string(kv.first));
      return out;
    }
    case Value::Kind::String: {
      check_list_size(utf8_length(v.s), "the list of a string's characters");
      List out;
      for (auto& c : utf8_chars(v.s)) out.push_back(Value::string(c));
      return out;
    }
    default: fail(std::string("'") + kind_name(v) + "' object is not iterable");
  }
}

Value get_attr(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Value::Kind::Undefined: fail(obj.s.empty() ? "'" + name + "' of an undefined value" : obj.s);
    case Value::Kind::String: return string_method(obj, name);
    case Value::Kind::Dict: {
      Value m = dict_method(obj, name);
      if (!m.is_undefined()) return m;
      if (const Value* v = obj.dict->find(name)) return *v;
      return Value::undefined("'dict object' has no attribute '" + name + "'");
    }
    case Value::Kind::Namespace: {
      if (const Value* v = obj.dict->find(name)) return *v;
      return Value::undefined("'Namespace object' has no attribute '" + name + "'");
    }
    case Value::Kind::List: {
      Value m = list_method(obj, name);
      if (!m.is_undefined()) return m;
      break;
    }
    default: break;
  }
  return Value::undefined(std::string("'") + kind_name(obj) + " object' has no attribute '" + name + "'");
}

Value get_item(const Value& obj, const Value& key) {
  switch (obj.kind) {
    case Value::Kind::Undefined: fail(obj.s.empty() ? "subscript of an undefined value" : obj.s);
    case Value::Kind::Dict:
    case Value::Kind::Namespace:
      if (key.is_string()) {
        if (const Value* v = obj.dict->find(key.s)) return *v;
        if (obj.kind == Value::Kind::Dict) {
          Value m = dict_method(obj, key.s);
          if (!m.is_undefined()) return m;
        }
      }
      return Value::undefined("'dict object' has no attribute " + repr(key));
    case Value::Kind::List:
    case Value::Kind::String: {
      if (key.is_string()) return get_attr(obj, key.s);
      if (key.kind != Value::Kind::Int && key.kind != Value::Kind::Bool)
        fail(std::string("indices must be integers, not ") + kind_name(key));
      int64_t idx = key.kind == Value::Kind::Bool ? key.b : key.i;
      if (obj.is_list()) {
        int64_t n = static_cast<int64_t>(obj.list->size());
        if (idx < 0) idx += n;
        if (idx < 0 || idx >= n)
          return Value::undefined(std::string("list object has no element ") + std::to_string(key.i));
        return (*obj.list)[static_cast<size_t>(idx)];
      }
      int64_t n = static_cast<int64_t>(utf8_length(obj.s));
      if (idx < 0) idx += n;
      if (idx < 0 || idx >= n) return Value::undefined("str object has no element " + std::to_string(key.i));
      size_t at = 0;
      for (int64_t k = 0; k < idx; ++k) at += utf8_char_len(obj.s, at);
      return Value::string(obj.s.substr(at, utf8_char_len(obj.s, at)));
    }
    default: return Value::undefined(std::string("'") + kind_name(obj) + " object' has no attribute " + repr(key));
  }
}

namespace {

// How many of start, start + step, ... come before stop (Python's range length), in unsigned arithmetic so that no
// step or bound can overflow. step != 0.
uint64_t positions(int64_t start, int64_t stop, int64_t step) {
  if (step > 0 && start < stop)
    return (static_cast<uint64_t>(stop) - static_cast<uint64_t>(start) - 1) / static_cast<uint64_t>(step) + 1;
  if (step < 0 && start > stop)
    return (static_cast<uint64_t>(start) - static_cast<uint64_t>(stop) - 1) / (0 - static_cast<uint64_t>(step)) + 1;
  return 0;
}

}  // namespace

Value slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v) {
  auto opt = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (v.kind == Value::Kind::Int) return v.i;
    if (v.kind == Value::Kind::Bool) return v.b;
    fail(std::string("slice ") + what + " must be an integer or None");
  };
  bool is_str = obj.is_string();
  // A string is sliced through the byte offsets of its characters (not a list of one-character strings).
  std::vector<size_t> char_at;
  if (is_str) {
    for (size_t k = 0; k < obj.s.size(); k += utf8_char_len(obj.s, k)) char_at.push_back(k);
    char_at.push_back(obj.s.size());
  } else if (obj.is_undefined()) {
    fail(obj.s.empty() ? "slice of an undefined value" : obj.s);
  } else if (!obj.is_list()) {
    fail(std::string("'") + kind_name(obj) + "' object is not subscriptable");
  }
  int64_t n = static_cast<int64_t>(is_str ? char_at.size() - 1 : obj.list->size());
  int64_t step = opt(step_v, "step").value_or(1);
  if (step == 0) fail("slice step cannot be zero");
  auto norm = [&](std::optional<int64_t> v, int64_t dflt, int64_t lo, int64_t hi) {
    if (!v) return dflt;
    int64_t x = *v < 0 ? *v + n : *v;
    return std::clamp(x, lo, hi);
  };
  int64_t start, stop;
  if (step > 0) {
    start = norm(opt(start_v, "start"), 0, 0, n);
    stop = norm(opt(stop_v, "stop"), n, 0, n);
  } else {
    start = norm(opt(start_v, "start"), n - 1, -1, n - 1);
    stop = norm(opt(stop_v, "stop"), -1, -1, n - 1);
  }
  // Counted first so that a huge step cannot overflow.
  uint64_t count = positions(start, stop, step);
  auto position = [&](uint64_t k) {
    return static_cast<size_t>(static_cast<uint64_t>(start) + k * static_cast<uint64_t>(step));
  };
  if (is_str) {
    std::string out;
    for (uint64_t k = 0; k < count; ++k) {
      size_t c = position(k);
      out.append(obj.s, char_at[c], char_at[c + 1] - char_at[c]);
    }
    return Value::string(out);
  }
  List out;
  out.reserve(count);
  for (uint64_t k = 0; k < count; ++k) out.push_back((*obj.list)[position(k)]);
  return Value::make_list(out, obj.tuple);
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Value::Kind::String:
      if (!item.is_string()) fail(std::string("'in <string>' requires string as left operand, not ") + kind_name(item));
      return container.s.find(item.s) != std::string::npos;
    case Value::Kind::List:
      for (const auto& v : *container.list)
        if (equals(v, item)) return true;
      return false;
    case Value::Kind::Dict:
    case Value::Kind::Namespace: return item.is_string() && container.dict->find(item.s) != nullptr;
    case Value::Kind::Undefined: return false;
    default: fail(std::string("argument of type '") + kind_name(container) + "' is not iterable");
  }
}

namespace {

// Python's integer power, failing where the result leaves int64.
int64_t int_pow(int64_t base, int64_t exp) {
  int64_t r = 1;
  bool overflow = false;
  while (exp > 0 && !overflow) {
    if (exp & 1) overflow = __builtin_mul_overflow(r, base, &r);
    exp >>= 1;
    if (exp > 0 && !overflow) overflow = __builtin_mul_overflow(base, base, &base);
  }
  if (overflow)
    fail(
        "integer overflow in '**': the result does not fit in 64 bits (Python's integers are unbounded, the "
        "template interpreter's are not)");
  return r;
}

// Python's floor division and modulo of ints (y != 0).
std::pair<int64_t, int64_t> floor_divmod(int64_t x, int64_t y) {
  if (x == INT64_MIN && y == -1) fail("integer overflow in '//': the result does not fit in 64 bits");
  int64_t q = x / y, r = x % y;
  if (r != 0 && ((r < 0) != (y < 0))) {
    q -= 1;
    r += y;
  }
  return {q, r};
}

int64_t as_int(const Value& v) { return v.kind == Value::Kind::Bool ? static_cast<int64_t>(v.b) : v.i; }

// a op b for two numbers (bools count as ints); ints stay ints except for '/'.
Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  bool ints = (a.kind == Value::Kind::Int || a.kind == Value::Kind::Bool) &&
              (b.kind == Value::Kind::Int || b.kind == Value::Kind::Bool);
  if (op == "+")
    return ints ? Value::integer(checked_add(as_int(a), as_int(b))) : Value::number(a.as_double() + b.as_double());
  if (op == "-")
    return ints ? Value::integer(checked_sub(as_int(a), as_int(b))) : Value::number(a.as_double() - b.as_double());
  if (op == "*")
    return ints ? Value::integer(checked_mul(as_int(a), as_int(b))) : Value::number(a.as_double() * b.as_double());
  if (op == "/") {
    if (b.as_double() == 0) fail("division by zero");
    return Value::number(a.as_double() / b.as_double());
  }
  if (op == "//" || op == "%") {
    if (b.as_double() == 0) fail(op == "%" ? "modulo by zero" : "integer division or modulo by zero");
    if (ints) {
      if (op == "%" && as_int(b) == -1) return Value::integer(0);
      auto [q, r] = floor_divmod(as_int(a), as_int(b));
      return Value::integer(op == "//" ? q : r);
    }
    double x = a.as_double(), y = b.as_double();
    double r = std::fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return Value::number(op == "//" ? std::floor(x / y) : r);
  }
  if (op == "**") {
    if (ints && as_int(b) >= 0) return Value::integer(int_pow(as_int(a), as_int(b)));
    return Value::number(std::pow(a.as_double(), b.as_double()));
  }
  return Value();  // not an arithmetic operator: binary_op goes on
}

// seq * times for a string or a list (times <= 0: empty).
Value repeat(const Value& seq, int64_t times) {
  times = std::max<int64_t>(times, 0);
  size_t unit = seq.is_string() ? seq.s.size() : seq.list->size();
  size_t total;
  if (__builtin_mul_overflow(unit, static_cast<size_t>(times), &total)) total = SIZE_MAX;
  if (seq.is_string())
    check_string_size(total, "the result of '*'");
  else
    check_list_size(total, "the result of '*'");
  if (unit == 0) times = 0;
  if (seq.is_string()) {
    std::string out;
    out.reserve(unit * static_cast<size_t>(times));
    for (int64_t k = 0; k < times; ++k) out += seq.s;
    return Value::string(out);
  }
  List out;
  out.reserve(unit * static_cast<size_t>(times));
  for (int64_t k = 0; k < times; ++k) out.insert(out.end(), seq.list->begin(), seq.list->end());
  return Value::make_list(out);
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    std::string l = to_str(a), r = to_str(b);
    check_string_size(l.size() + r.size(), "the result of '~'");
    return Value::string(l + r);
  }
  if (a.is_undefined() || b.is_undefined())
    fail((a.is_undefined() ? a.s : b.s).empty() ? "operator '" + op + "' on an undefined value"
                                                : (a.is_undefined() ? a.s : b.s));
  if (a.is_number() && b.is_number())
    if (Value r = arithmetic(op, a, b); !r.is_undefined()) return r;
  if (op == "+" && a.is_string() && b.is_string()) {
    check_string_size(a.s.size() + b.s.size(), "the result of '+'");
    return Value::string(a.s + b.s);
  }
  if (op == "%" && a.is_string()) return Value::string(percent_format(a.s, b));
  if (op == "+" && a.is_list() && b.is_list()) {
    check_list_size(a.list->size() + b.list->size(), "the result of '+'");
    List out = *a.list;
    out.insert(out.end(), b.list->begin(), b.list->end());
    return Value::make_list(out, a.tuple);
  }
  auto is_int = [](const Value& v) { return v.kind == Value::Kind::Int || v.kind == Value::Kind::Bool; };
  if (op == "*" && (a.is_string() || a.is_list()) && is_int(b)) return repeat(a, as_int(b));
  if (op == "*" && (b.is_string() || b.is_list()) && is_int(a)) return repeat(b, as_int(a));
  fail("unsupported operand type(s) for " + op + ": '" + kind_name(a) + "' and '" + kind_name(b) + "'");
}

namespace {

using K = Value::Kind;

bool is_even(const Value& v, const char* test) {
  if (v.kind != K::Int && v.kind != K::Bool) fail(std::string("test '") + test + "' expects an integer");
  int64_t x = v.kind == K::Bool ? v.b : v.i;
  return ((x % 2) + 2) % 2 == 0;
}

bool test_sameas(const Value& v, List& args) {
  const Value& o = args[0];
  if (v.kind != o.kind) return false;
  if (v.kind == K::None || v.kind == K::Undefined) return true;
  if (v.kind == K::Bool) return v.b == o.b;
  if (v.is_list()) return v.list == o.list;
  if (v.kind == K::Dict || v.kind == K::Namespace) return v.dict == o.dict;
  return equals(v, o);
}

bool is_iterable(const Value& v, List&) {
  return v.is_string() || v.is_list() || v.kind == K::Dict || v.is_undefined();
}

bool is_equal(const Value& v, List& args) { return equals(v, args[0]); }
bool not_equal(const Value& v, List& args) { return !equals(v, args[0]); }
bool less(const Value& v, List& args) { return compare(v, args[0]) < 0; }
bool less_equal(const Value& v, List& args) { return compare(v, args[0]) <= 0; }
bool greater(const Value& v, List& args) { return compare(v, args[0]) > 0; }
bool greater_equal(const Value& v, List& args) { return compare(v, args[0]) >= 0; }

// A test: (value, arguments) -> bool, and how many arguments it needs.
struct Test {
  bool (*fn)(const Value& value, List& args);
  size_t arguments = 0;
};

// Every test by name: apply_test runs them and `is test` asks for them, so the two cannot disagree.
const std::map<std::string, Test>& tests() {
  static const std::map<std::string, Test> table = {
      {"defined", {[](const Value& v, List&) { return !v.is_undefined(); }}},
      {"undefined", {[](const Value& v, List&) { return v.is_undefined(); }}},
      {"none", {[](const Value& v, List&) { return v.is_none(); }}},
      {"boolean", {[](const Value& v, List&) { return v.kind == K::Bool; }}},
      {"false", {[](const Value& v, List&) { return v.kind == K::Bool && !v.b; }}},
      {"true", {[](const Value& v, List&) { return v.kind == K::Bool && v.b; }}},
      {"integer", {[](const Value& v, List&) { return v.kind == K::Int; }}},
      {"float", {[](const Value& v, List&) { return v.kind == K::Float; }}},
      {"number", {[](const Value& v, List&) { return v.is_number(); }}},
      {"string", {[](const Value& v, List&) { return v.is_string(); }}},
      {"mapping", {[](const Value& v, List&) { return v.kind == K::Dict; }}},
      {"iterable", {is_iterable}},
      {"sequence", {is_iterable}},
      // Undefined defines __call__.
      {"callable", {[](const Value& v, List&) { return v.kind == K::Callable || v.is_undefined(); }}},
      {"even", {[](const Value& v, List&) { return is_even(v, "even"); }}},
      {"odd", {[](const Value& v, List&) { return !is_even(v, "odd"); }}},
      {"divisibleby", {[](const Value& v, List& args) { return binary_op("%", v, args[0]).as_double() == 0; }, 1}},
      {"eq", {is_equal, 1}},
      {"equalto", {is_equal, 1}},
      {"==", {is_equal, 1}},
      {"ne", {not_equal, 1}},
      {"!=", {not_equal, 1}},
      {"lt", {less, 1}},
      {"<", {less, 1}},
      {"lessthan", {less, 1}},
      {"le", {less_equal, 1}},
      {"<=", {less_equal, 1}},
      {"gt", {greater, 1}},
      {">", {greater, 1}},
      {"greaterthan", {greater, 1}},
      {"ge", {greater_equal, 1}},
      {">=", {greater_equal, 1}},
      {"in", {[](const Value& v, List& args) { return contains(args[0], v); }, 1}},
      {"sameas", {test_sameas, 1}},
      {"lower", {[](const Value& v, List&) { return v.is_string() && lower(v.s) == v.s; }}},
      {"upper", {[](const Value& v, List&) { return v.is_string() && upper(v.s) == v.s; }}},
      {"escaped", {[](const Value&, List&) { return false; }}},
      // Jinja2's `name is filter` / `name is test`: whether the value names one (a non-string names none).
      {"filter", {[](const Value& v, List&) { return v.is_string() && has_filter(v.s); }}},
      {"test", {[](const Value& v, List&) { return v.is_string() && has_test(v.s); }}},
  };
  return table;
}

}  // namespace

bool has_test(const std::string& name) { return tests().count(name) != 0; }

bool apply_test(const std::string& name, const Value& value, List& args) {
  auto it = tests().find(name);
  if (it == tests().end()) fail("no test named '" + name + "'");
  if (args.size() < it->second.arguments) fail("test '" + name + "' needs an argument");
  return it->second.fn(value, args);
}

namespace {

// range(stop), range(start, stop[, step]), limited to MAX_RANGE items as in Jinja's sandbox.
Value range(List& a) {
  int64_t start = 0, stop = 0, step = 1;
  auto iv = [](const Value& v) {
    if (v.kind != Value::Kind::Int && v.kind != Value::Kind::Bool) fail("range() arguments must be integers");
    return as_int(v);
  };
  if (a.size() == 1)
    stop = iv(a[0]);
  else if (a.size() >= 2) {
    start = iv(a[0]);
    stop = iv(a[1]);
    if (a.size() >= 3) step = iv(a[2]);
  } else
    fail("range expected at least 1 argument");
  if (step == 0) fail("range() arg 3 must not be zero");
  // The length first, then Jinja's sandbox limit MAX_RANGE.
  uint64_t count = positions(start, stop, step);
  if (count > 100000)
    fail_limit("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).",
               "no chat template needs a range() this long: fix the template");
  List out;
  out.reserve(count);
  for (uint64_t k = 0; k < count; ++k)
    out.push_back(Value::integer(static_cast<int64_t>(static_cast<uint64_t>(start) + k * static_cast<uint64_t>(step))));
  return Value::make_list(out);
}

// dict(mapping, **kwargs) and namespace(mapping, **kwargs): the mapping's items, then the keyword arguments.
Dict dict_of(List& a, KwArgs& k) {
  Dict d;
  if (!a.empty() && a[0].kind == Value::Kind::Dict) d = *a[0].dict;
  for (auto& kv : k) d.set(kv.first, kv.second);
  return d;
}

}  // namespace

Dict make_globals() {
  Dict g;
  g.set("range", Value::callable("range", [](List& a, KwArgs&) { return range(a); }));
  g.set("dict", Value::callable("dict", [](List& a, KwArgs& k) { return Value::make_dict(dict_of(a, k)); }));
  g.set("namespace", Value::callable("namespace", [](List& a, KwArgs& k) {
          Dict d = dict_of(a, k);
          for (auto& kv : d.items)
            if (!kv.first.empty() && kv.first[0] == '_')
              fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + kv.first +
                   "'.");
          return Value::make_namespace(d);
        }));
  g.set("raise_exception", Value::callable("raise_exception", [](List& a, KwArgs& k) -> Value {
          const Value* m = arg(a, k, 0, "message");
          throw RaisedError(m ? to_str(*m) : "");
        }));
  g.set("strftime_now", Value::callable("strftime_now", [](List& a, KwArgs& k) {
          const Value* f = arg(a, k, 0, "format");
          if (!f) fail("strftime_now() needs a format");
          std::time_t now = std::time(nullptr);
          std::tm tm{};
          localtime_r(&now, &tm);
          char buf[512];
          size_t n = std::strftime(buf, sizeof buf, str_of(*f, "strftime_now").c_str(), &tm);
          return Value::string(std::string(buf, n));
        }));
  return g;
}

}  // namespace automodel::tokenizer::jinja

#pragma once
// Values of the chat-template (Jinja2) interpreter: Python-like undefined/none/bool/int/float/str/list/dict,
// namespaces and callables, with Python's str()/repr() and truthiness rules.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace automodel::tokenizer::jinja {

// A template error without a position yet; the evaluator adds the template line and construct.
struct TemplateError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// raise_exception(msg) from a template: the message is passed through unchanged.
struct RaisedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] void fail(const std::string& msg);
// A template went past one of the interpreter's limits (chat_template.h); `hint` says what to do.
struct LimitError : TemplateError {
  LimitError(const std::string& msg, std::string what_to_do) : TemplateError(msg), hint(std::move(what_to_do)) {}
  std::string hint;
};
[[noreturn]] void fail_limit(const std::string& msg, const std::string& hint);

// The size checks every builtin that makes a string or a list runs before it allocates, and int64 arithmetic
// that fails on overflow (Python's ints are unbounded; ours are 64-bit, and signed overflow is undefined).
void check_string_size(size_t bytes, const char* what);
void check_list_size(size_t items, const char* what);
void check_value_depth(int depth, const char* what);
int64_t checked_add(int64_t a, int64_t b);
int64_t checked_sub(int64_t a, int64_t b);
int64_t checked_mul(int64_t a, int64_t b);
// A double as int64 (Python's int(x) truncation); fails for NaN, infinities and values out of range.
int64_t checked_int(double v);

struct Value;
using List = std::vector<Value>;
using KwArgs = std::vector<std::pair<std::string, Value>>;

// Insertion-ordered string-keyed dictionary (JSON objects and Jinja dict literals).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value value);
};

struct Callable {
  std::string name;
  std::function<Value(List& args, KwArgs& kwargs)> fn;
};

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Callable };
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  bool tuple = false;  // a List written as a tuple (repr with parentheses)
  std::string s;       // String value, or the name of an Undefined
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // Dict and Namespace
  std::shared_ptr<Callable> fn;

  static Value undefined(std::string name = "");
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value string(std::string v);
  static Value make_list(List items = {}, bool is_tuple = false);
  static Value make_dict(Dict d = {});
  static Value make_namespace(Dict d = {});
  static Value callable(std::string name, std::function<Value(List&, KwArgs&)> fn);
  static Value from_json(const nlohmann::ordered_json& j, int depth = 0);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_number() const { return kind == Kind::Bool || kind == Kind::Int || kind == Kind::Float; }
  double as_double() const;
  bool truthy() const;
};

const char* kind_name(const Value& v);  // Python type name: 'str', 'int', 'dict', ...
// These recurse into lists and dicts; `depth` counts the levels, which must stay below kMaxNesting (a value that
// contains itself through a namespace would otherwise recurse forever).
std::string to_str(const Value& v, int depth = 0);  // Python str()
std::string repr(const Value& v, int depth = 0);    // Python repr()
std::string format_float(double v);                 // Python repr() of a float
bool equals(const Value& a, const Value& b, int depth = 0);
// <0, 0, >0 like Python's ordering; throws for unorderable types.
int compare(const Value& a, const Value& b, int depth = 0);
// Python json.dumps(v, ensure_ascii, indent, separators, sort_keys); indent < 0 means None.
std::string to_json(const Value& v, int indent, const std::string& item_sep, const std::string& key_sep, bool sort_keys,
                    bool ensure_ascii = false);

// UTF-8 helpers: the characters of a string, and how many there are.
std::vector<std::string> utf8_chars(const std::string& s);
size_t utf8_length(const std::string& s);

}  // namespace automodel::tokenizer::jinja

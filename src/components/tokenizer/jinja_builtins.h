#pragma once
// Jinja2 built-ins as transformers' sandboxed environment exposes them: filters, tests, attribute/item access
// (incl. str/dict/list methods), operators, and the globals (range, dict, namespace, raise_exception,
// strftime_now).
#include <string>

#include "components/tokenizer/jinja_value.h"

namespace automodel::tokenizer::jinja {

Value apply_filter(const std::string& name, const Value& input, List& args, KwArgs& kwargs);
bool apply_test(const std::string& name, const Value& value, List& args);
bool has_filter(const std::string& name);
bool has_test(const std::string& name);

// obj.name (methods of str/dict/list first, then items) and obj[key] (items first, then attributes).
Value get_attr(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

Value binary_op(const std::string& op, const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);
// Items of an iterable: list items, dict keys, string characters; Undefined iterates as empty.
List iterate(const Value& v);

// The global functions of the template environment.
Dict make_globals();

}  // namespace automodel::tokenizer::jinja

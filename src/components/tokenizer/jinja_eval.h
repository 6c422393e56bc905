#pragma once
// Evaluates a parsed Jinja2 template against a context (Jinja2's default Undefined semantics).
#include <string>

#include "components/tokenizer/jinja_ast.h"

namespace automodel::tokenizer::jinja {

// Renders `body` with the variables of `context` on top of the environment globals. Throws automodel::Error naming
// the template line and the construct (raise_exception's message is passed through unchanged).
std::string render(const Body& body, const Dict& context);

}  // namespace automodel::tokenizer::jinja

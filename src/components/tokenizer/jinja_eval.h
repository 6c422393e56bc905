#pragma once
// Evaluates a parsed Jinja2 template against a context (Jinja2's default Undefined semantics).
#include <string>

#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/jinja_ast.h"

namespace automodel::tokenizer::jinja {

// Renders `body` with the variables of `context` on top of the environment globals. Throws automodel::Error naming
// the template line and the construct (raise_exception's message is passed through unchanged), and for a limit of
// chat_template.h, which one. `max_seconds` is the wall-time limit (a parameter so that tests can lower it).
std::string render(const Body& body, const Dict& context, double max_seconds = template_limits::kMaxRenderSeconds);

}  // namespace automodel::tokenizer::jinja

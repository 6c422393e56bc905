#pragma once
// Chat templates: render a conversation with a model's Jinja2 chat template exactly as transformers'
// apply_chat_template(tokenize=False) does.
#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace automodel::tokenizer {

// Limits of the template interpreter. A chat template is code that comes with a downloaded model, so, as Jinja's
// sandbox does, rendering one must not crash, hang or exhaust memory whatever it contains. Each limit is far above
// what real chat templates use (the families in tests/oracle/chat_templates nest blocks and expressions fewer than
// 10 deep, call macros a few levels deep and loop over the messages, tools and content parts); going past one is an
// automodel::Error that names the limit and the template line.
namespace template_limits {
// Nested blocks ({% if %} in {% for %} ...) and nested expressions: brackets, operator chains such as 1+1+...,
// attribute and filter chains, `not not ...`. Also how deep a list, dict or namespace value may nest. Bounds the
// parser's and the interpreter's recursion, so no template can overflow the stack.
inline constexpr int kMaxNesting = 128;
// Nested macro and caller() calls: a macro that calls itself recurses at most this deep.
inline constexpr int kMaxCallDepth = 100;
// Iterations of all {% for %} loops of one render together (nested range() loops cannot run for hours).
inline constexpr int64_t kMaxLoopIterations = 1000000;
// The rendered text, and any string or JSON text a template builds ('x' * 10**12, |join, |tojson, ~, +).
inline constexpr size_t kMaxStringBytes = size_t{64} << 20;
// Items of any list a template builds (list repetition, +, |list of a string). range() itself stops at 100000
// items, as in Jinja's sandbox.
inline constexpr size_t kMaxListItems = 1000000;
// Wall time of one render.
inline constexpr double kMaxRenderSeconds = 20;
// Stack the interpreter may use below its entry, the backstop for the nesting limits combined (blocks in
// expressions in macro calls).
inline constexpr size_t kMaxStackBytes = size_t{2} << 20;
}  // namespace template_limits

// JSON inputs are ordered_json so that objects keep their key order (tojson of tools and tool-call arguments, and
// dict iteration, render keys in the caller's order as Python dicts do); a nlohmann::json converts implicitly.

// Renders a Jinja2 template with transformers' environment (trim_blocks, lstrip_blocks, loopcontrols,
// raise_exception, strftime_now, tojson without HTML escaping). Errors are automodel::Error naming the line.
std::string render_template(const std::string& source, const nlohmann::ordered_json& context);

struct ChatTemplates {
  std::map<std::string, std::string> templates;  // name -> source; a single template is named "default"
  nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object();  // bos_token, eos_token, ... as strings
  std::string source;                                                        // where they were read from (for messages)
};

// Reads <dir>/chat_template.jinja and <dir>/additional_chat_templates/*.jinja (which take priority, as in
// transformers), else tokenizer_config.json's chat_template (a string or a list of {name, template}); plus the special
// tokens.
ChatTemplates load_chat_templates(const std::string& model_dir);

// The template transformers' get_chat_template picks: `template_name` if given; with tools, "tool_use" if present;
// else "default".
const std::string& select_chat_template(const ChatTemplates& t, const std::string& template_name, bool has_tools);

// messages (a JSON array of message objects), add_generation_prompt, tools (null or an array), special tokens and
// `extra` (an object of extra template variables, overriding the special tokens) -> the rendered prompt.
std::string apply_chat_template(const ChatTemplates& templates, const nlohmann::ordered_json& messages,
                                bool add_generation_prompt, const nlohmann::ordered_json& tools = nullptr,
                                const nlohmann::ordered_json& extra = nlohmann::ordered_json::object(),
                                const std::string& template_name = "");

}  // namespace automodel::tokenizer

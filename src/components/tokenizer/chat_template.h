#pragma once
// Chat templates: render a conversation with a model's Jinja2 chat template exactly as transformers'
// apply_chat_template(tokenize=False) does.
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace automodel::tokenizer {

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

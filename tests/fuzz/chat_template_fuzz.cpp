// components/tokenizer's Jinja: the bytes as a chat template source, parsed and rendered with a fixed conversation
// (system, user, assistant with a tool call, tool result), tools, special tokens and add_generation_prompt.
#include <nlohmann/json.hpp>

#include "components/tokenizer/chat_template.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  static const auto messages = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "What is the weather in Paris? Answer in <b>bold</b>."},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "type": "function",
      "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
    {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\": 21}"},
    {"role": "assistant", "content": "It is 21 °C."},
    {"role": "user", "content": ["a", "list", 3]}])");
  static const auto tools = nlohmann::ordered_json::parse(R"([{"type": "function", "function": {
    "name": "get_weather", "description": "Weather", "parameters": {"type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}])");
  tokenizer::ChatTemplates templates;
  templates.templates["default"] = std::string(fuzz::as_text(data, size));
  templates.special_tokens = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"pad_token", "<pad>"}};
  templates.source = "fuzz chat template";
  for (bool generation_prompt : {true, false})
    fuzz::accept_errors([&] { (void)tokenizer::apply_chat_template(templates, messages, generation_prompt, tools); });
  return 0;
}

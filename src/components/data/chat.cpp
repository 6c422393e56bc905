// NeMo ChatDataset over local files: OpenAI `messages` (with tools) or ShareGPT `conversations`.
#include <map>

#include "components/data/formatting.h"
#include "components/data/llm_datasets.h"
#include "components/data/record_fields.h"
#include "components/data/records.h"
#include "core/error.h"

namespace automodel::data {

using ojson = nlohmann::ordered_json;

namespace {

std::string content_text(const ojson& content) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {  // content parts: keep the text ones, space-joined
    std::string out;
    bool first = true;
    for (const ojson& part : content) {
      if (!part.is_object() || !part.contains("text")) continue;
      if (!first) out += " ";
      first = false;
      out += part["text"].is_string() ? part["text"].get<std::string>() : part["text"].dump();
    }
    return out;
  }
  if (content.is_boolean()) return content.get<bool>() ? "True" : "False";
  return content.dump();
}

ojson normalize_tool_calls(const ojson& calls, const std::string& where) {
  if (!calls.is_array()) throw Error("assistant message `tool_calls` must be a list", where, "fix the record");
  ojson out = ojson::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    const ojson& call = calls[i];
    std::string at = where + " tool_calls[" + std::to_string(i) + "]";
    if (!call.is_object()) throw Error("a tool call must be an object", at, "fix the record");
    ojson c = call;
    if (!c.contains("id") || c["id"].is_null() || c["id"] == "")
      c["id"] = "call_" + std::to_string(i);
    else if (!c["id"].is_string())
      throw Error("tool call `id` must be a string", at, "fix the record");
    if (!c.contains("type") || c["type"].is_null() || c["type"] == "")
      c["type"] = "function";
    else if (!c["type"].is_string())
      throw Error("tool call `type` must be a string", at, "fix the record");
    if (!c.contains("function") || !c["function"].is_object())
      throw Error("tool call `function` must be an object", at, "fix the record");
    ojson& fn = c["function"];
    if (!fn.contains("name") || !fn["name"].is_string() || fn["name"].get<std::string>().empty())
      throw Error("tool call `function.name` must be a non-empty string", at, "fix the record");
    if (!fn.contains("arguments") || fn["arguments"].is_null())
      throw Error("tool call `function.arguments` is required", at, "fix the record");
    if (!fn["arguments"].is_string()) fn["arguments"] = python_json_dumps(fn["arguments"]);
    out.push_back(std::move(c));
  }
  return out;
}

ojson sharegpt_to_messages(const ojson& conversations, const std::string& where) {
  static const std::map<std::string, std::string> roles = {
      {"system", "system"},       {"human", "user"},        {"user", "user"},       {"gpt", "assistant"},
      {"assistant", "assistant"}, {"chatgpt", "assistant"}, {"model", "assistant"}, {"bot", "assistant"}};
  if (!conversations.is_array()) throw Error("`conversations` must be a list of turns", where, "fix the record");
  ojson messages = ojson::array();
  for (const ojson& turn : conversations) {
    if (!turn.is_object()) throw Error("each `conversations` turn must be an object", where, "fix the record");
    ojson from = turn.contains("from") ? turn["from"] : turn.value("role", ojson());
    auto it = from.is_string() ? roles.find(from.get<std::string>()) : roles.end();
    if (it == roles.end())
      throw Error("unsupported ShareGPT role " + from.dump() + " in `conversations`", where,
                  "use one of system, human, user, gpt, assistant, chatgpt, model, bot");
    ojson content = turn.contains("value") ? turn["value"] : turn.value("content", ojson(""));
    messages.push_back(ojson{{"role", it->second}, {"content", content}});
  }
  return messages;
}

}  // namespace

ojson chat_record_messages(const ojson& record, const std::string& where) {
  ojson raw;
  if (record.contains("messages") && !record["messages"].is_null())
    raw = record["messages"];
  else if (record.contains("conversations") && !record["conversations"].is_null())
    raw = sharegpt_to_messages(record["conversations"], where);
  if (!raw.is_array())
    throw Error("record has no `messages` list (OpenAI format) or `conversations` list (ShareGPT format)", where,
                "give each record {\"messages\": [{\"role\": ..., \"content\": ...}, ...]}");
  ojson out = ojson::array();
  for (size_t i = 0; i < raw.size(); ++i) {
    const ojson& m = raw[i];
    std::string at = where + " messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw Error("a message must be an object", at, "fix the record");
    std::string role = m.contains("role") && m["role"].is_string() ? m["role"].get<std::string>() : "";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      throw Error(
          "unsupported role " + (m.contains("role") ? m["role"].dump() : std::string("(none)")) + " in messages", at,
          "roles are system, user, assistant and tool");
    ojson n = m;
    n["content"] = content_text(m.value("content", ojson()));
    if (role == "assistant") {
      if (m.contains("reasoning_content")) {
        const ojson& rc = m["reasoning_content"];
        if (rc.is_null())
          n["reasoning_content"] = "";
        else if (!rc.is_string())
          throw Error("`reasoning_content` must be a string", at, "fix the record");
      }
      if (m.contains("tool_calls")) n["tool_calls"] = normalize_tool_calls(m["tool_calls"], at);
    }
    if (role == "tool") {
      const ojson id = m.value("tool_call_id", ojson());
      if (!id.is_string() || id.get<std::string>().empty())
        throw Error("tool message `tool_call_id` must be a non-empty string", at, "fix the record");
    }
    out.push_back(std::move(n));
  }
  return out;
}

ojson chat_record_tools(const ojson& record, const std::string& where) {
  if (!record.contains("tools")) return nullptr;
  ojson tools = record["tools"];
  if (tools.is_string()) {
    try {
      tools = ojson::parse(tools.get<std::string>());
    } catch (const ojson::exception& e) {
      throw Error(std::string("`tools` is a string but not valid JSON: ") + e.what(), where, "fix the record");
    }
  }
  if (tools.is_null()) return nullptr;
  if (!tools.is_array())
    throw Error(std::string("`tools` must be a list or a JSON-encoded list, got ") + tools.type_name(), where,
                "fix the record");
  if (tools.empty()) return nullptr;
  return tools;
}

Dataset make_chat_dataset(const TextTokenizer& tok, const ChatOptions& opts) {
  if (!tok.has_chat_template())
    throw Error("the chat dataset needs a tokenizer with a chat template", "tokenizer",
                "use a tokenizer whose tokenizer_config.json has a chat_template, or set one");
  FormatOptions fmt = make_format_options(opts.seq_length, opts.padding, opts.truncation, opts.answer_only_loss_mask);
  fmt.train_on_last_turn_only = opts.mask_history;
  std::string split = limit_split(opts.split, opts.limit_dataset_samples, "dataset.limit_dataset_samples");
  auto source = std::make_shared<const RecordSource>(opts.path, split);
  Dataset data = detail::lazy_dataset(source, [tok, fmt](const ojson& record, const std::string& where) {
    return format_chat(tok, chat_record_messages(record, where), chat_record_tools(record, where), fmt);
  });
  data = detail::warn_beyond_seq_length(std::move(data), fmt, opts.path);
  check_trainable(data, "chat", opts.path);
  return data;
}

}  // namespace automodel::data

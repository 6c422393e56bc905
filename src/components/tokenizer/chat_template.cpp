#include "components/tokenizer/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "components/tokenizer/jinja_ast.h"
#include "components/tokenizer/jinja_eval.h"
#include "core/error.h"

namespace automodel::tokenizer {
namespace fs = std::filesystem;

std::string render_template(const std::string& source, const nlohmann::ordered_json& context) {
  jinja::Body body;
  try {
    body = jinja::parse_template(source);
  } catch (const jinja::LimitError& e) {
    throw Error(std::string("chat template: ") + e.what(), "chat template", e.hint);
  } catch (const jinja::TemplateError& e) {
    throw Error(std::string("chat template syntax error: ") + e.what(), "chat template");
  }
  jinja::Dict ctx;
  if (!context.is_null()) {
    if (!context.is_object()) throw Error("the template context must be a JSON object", "render_template");
    try {
      for (auto it = context.begin(); it != context.end(); ++it)
        ctx.items.emplace_back(it.key(), jinja::Value::from_json(it.value(), 1));
    } catch (const jinja::LimitError& e) {
      throw Error(e.what(), "chat template context", e.hint);
    }
  }
  try {
    return jinja::render(body, ctx);
  } catch (const jinja::TemplateError& e) {
    throw Error(e.what(), "chat template");
  }
}

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error("cannot read " + p.string(), "load_chat_templates");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

ChatTemplates load_chat_templates(const std::string& model_dir) {
  ChatTemplates t;
  fs::path dir(model_dir);
  if (!fs::is_directory(dir))
    throw Error("not a directory: " + model_dir, "load_chat_templates", "pass the tokenizer/model directory");
  fs::path cfg_path = dir / "tokenizer_config.json";
  nlohmann::ordered_json cfg = nlohmann::ordered_json::object();
  if (fs::exists(cfg_path)) {
    try {
      cfg = nlohmann::ordered_json::parse(read_text(cfg_path));
    } catch (const nlohmann::ordered_json::exception& e) {
      throw Error(std::string("invalid JSON: ") + e.what(), cfg_path.string());
    }
  }
  // Legacy special_tokens_map.json: transformers merges it over the config when the config has no
  // added_tokens_decoder.
  if (!cfg.contains("added_tokens_decoder") && fs::exists(dir / "special_tokens_map.json")) {
    nlohmann::ordered_json stm =
        nlohmann::ordered_json::parse(read_text(dir / "special_tokens_map.json"), nullptr, false);
    if (stm.is_object())
      for (auto it = stm.begin(); it != stm.end(); ++it) cfg[it.key()] = it.value();
  }
  // Special tokens: strings or AddedToken objects {"content": ...}.
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (!cfg.contains(key)) continue;
    const auto& v = cfg[key];
    if (v.is_string())
      t.special_tokens[key] = v;
    else if (v.is_object() && v.contains("content") && v["content"].is_string())
      t.special_tokens[key] = v["content"];
    else if (!v.is_null())
      throw Error(std::string("field '") + key + "' must be a string or an AddedToken object {\"content\": ...}, got " +
                      v.dump(),
                  cfg_path.string(), "fix the field, or remove it");
  }
  // Sidecar files take priority over tokenizer_config.json (transformers' from_pretrained).
  if (fs::exists(dir / "chat_template.jinja")) t.templates["default"] = read_text(dir / "chat_template.jinja");
  if (fs::is_directory(dir / "additional_chat_templates")) {
    for (const auto& entry : fs::directory_iterator(dir / "additional_chat_templates"))
      if (entry.is_regular_file() && entry.path().extension() == ".jinja")
        t.templates[entry.path().stem().string()] = read_text(entry.path());
  }
  if (!t.templates.empty()) {
    t.source = dir.string();
    return t;
  }
  if (fs::exists(dir / "chat_template.json")) {  // processors' legacy sidecar
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(read_text(dir / "chat_template.json"), nullptr, false);
    if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string())
      cfg["chat_template"] = j["chat_template"];
  }
  if (cfg.contains("chat_template")) {
    const auto& ct = cfg["chat_template"];
    if (ct.is_string()) {
      t.templates["default"] = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const auto& item : ct) {
        if (!item.is_object() || !item.contains("name") || !item.contains("template") || !item["name"].is_string() ||
            !item["template"].is_string())
          throw Error("chat_template list entries must be {\"name\": ..., \"template\": ...}", cfg_path.string());
        t.templates[item["name"].get<std::string>()] = item["template"].get<std::string>();
      }
    } else if (!ct.is_null()) {
      throw Error("chat_template must be a string or a list of {name, template}", cfg_path.string());
    }
  }
  t.source = cfg_path.string();
  return t;
}

const std::string& select_chat_template(const ChatTemplates& t, const std::string& template_name, bool has_tools) {
  if (t.templates.empty())
    throw Error("the tokenizer has no chat template", t.source,
                "add chat_template to tokenizer_config.json or a chat_template.jinja file");
  auto names = [&] {
    std::string s;
    for (const auto& kv : t.templates) s += (s.empty() ? "" : ", ") + kv.first;
    return s;
  };
  if (!template_name.empty()) {
    auto it = t.templates.find(template_name);
    if (it == t.templates.end())
      throw Error("no chat template named '" + template_name + "'", t.source, "available: " + names());
    return it->second;
  }
  if (has_tools && t.templates.count("tool_use")) return t.templates.at("tool_use");
  if (t.templates.count("default")) return t.templates.at("default");
  throw Error("this model has several chat templates and none is named 'default'", t.source,
              "pick one with --template NAME; available: " + names());
}

std::string apply_chat_template(const ChatTemplates& templates, const nlohmann::ordered_json& messages,
                                bool add_generation_prompt, const nlohmann::ordered_json& tools,
                                const nlohmann::ordered_json& extra, const std::string& template_name) {
  if (!messages.is_array()) throw Error("messages must be a JSON array of message objects", "apply_chat_template");
  if (!tools.is_null() && !tools.is_array()) throw Error("tools must be a JSON array", "apply_chat_template");
  if (!extra.is_null() && !extra.is_object())
    throw Error("extra variables must be a JSON object", "apply_chat_template");
  const std::string& source = select_chat_template(templates, template_name, !tools.is_null());
  // As transformers: drop None-valued keys, alias the reasoning fields.
  nlohmann::ordered_json chat = nlohmann::ordered_json::array();
  for (const auto& m : messages) {
    if (!m.is_object()) throw Error("chat messages must be objects, got " + m.dump(), "apply_chat_template");
    nlohmann::ordered_json msg = nlohmann::ordered_json::object();
    for (auto it = m.begin(); it != m.end(); ++it)
      if (!it.value().is_null()) msg[it.key()] = it.value();
    // {"thinking": r, **message, "reasoning_content": r} where r is the first of the reasoning fields present.
    for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
      if (!msg.contains(key)) continue;
      nlohmann::ordered_json r = msg[key];
      nlohmann::ordered_json aliased = nlohmann::ordered_json::object();
      aliased["thinking"] = r;
      for (auto it = msg.begin(); it != msg.end(); ++it) aliased[it.key()] = it.value();
      aliased["reasoning_content"] = r;
      msg = std::move(aliased);
      break;
    }
    chat.push_back(msg);
  }
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = chat;
  ctx["tools"] = tools;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = add_generation_prompt;
  for (auto it = templates.special_tokens.begin(); it != templates.special_tokens.end(); ++it)
    ctx[it.key()] = it.value();
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it) ctx[it.key()] = it.value();
  return render_template(source, ctx);
}

}  // namespace automodel::tokenizer

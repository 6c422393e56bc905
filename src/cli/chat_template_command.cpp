// `automodel chat-template`: render a conversation with a tokenizer directory's chat template.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "components/tokenizer/chat_template.h"
#include "core/error.h"
#include "io/hf_dir.h"

namespace automodel::cli {
namespace {

nlohmann::ordered_json read_json(const std::string& path, const char* option) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path, std::string("automodel chat-template --") + option);
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::ordered_json::parse(ss.str());
  } catch (const nlohmann::ordered_json::exception& e) {
    throw Error(std::string("invalid JSON: ") + e.what(), path);
  }
}

}  // namespace

int run_chat_template(const Args& args) {
  const std::string where = "automodel chat-template";
  std::string dir = args.str("tokenizer", "");
  std::string messages_path = args.str("messages", "");
  bool add_generation_prompt = args.flag("add-generation-prompt");
  std::string template_name = args.str("template", "");
  std::string tools_path = args.str("tools", "");
  args.reject_unused("chat-template");
  if (dir.empty() || messages_path.empty())
    throw Error("--tokenizer DIR and --messages FILE.json are required", where,
                "usage: automodel chat-template --tokenizer DIR --messages FILE.json [--add-generation-prompt] "
                "[--template NAME] [--tools FILE.json]");
  auto templates = tokenizer::load_chat_templates(io::resolve_model_dir(dir));
  nlohmann::ordered_json messages = read_json(messages_path, "messages");
  // Accept {"messages": [...]} as well as a bare array.
  if (messages.is_object() && messages.contains("messages")) messages = messages["messages"];
  nlohmann::ordered_json tools = tools_path.empty() ? nlohmann::ordered_json() : read_json(tools_path, "tools");
  std::string out = tokenizer::apply_chat_template(templates, messages, add_generation_prompt, tools,
                                                   nlohmann::ordered_json::object(), template_name);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace automodel::cli

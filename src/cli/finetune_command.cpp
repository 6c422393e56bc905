// `automodel finetune llm -c recipe.yaml [--a.b.c value ...]` and `automodel recipe.yaml [...]`: NeMo Automodel's
// two command forms. Overrides are applied to the YAML before the recipe reads it.
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "components/config/config.h"
#include "core/error.h"
#include "core/threads.h"
#include "recipes/llm_finetune.h"

namespace automodel::cli {

namespace {

// Removes `name value` / `name=value` from args and returns the value (nullopt when absent).
std::optional<std::string> take_option(std::vector<std::string>& args, const std::vector<std::string>& names,
                                       const char* usage) {
  for (size_t i = 0; i < args.size(); ++i) {
    for (const auto& name : names) {
      if (args[i] == name) {
        if (i + 1 >= args.size()) throw Error(name + " needs a value", "automodel", usage);
        std::string v = args[i + 1];
        args.erase(args.begin() + i, args.begin() + i + 2);
        return v;
      }
      if (args[i].rfind(name + "=", 0) == 0) {
        std::string v = args[i].substr(name.size() + 1);
        args.erase(args.begin() + i);
        return v;
      }
    }
  }
  return std::nullopt;
}

constexpr const char* kUsage = "automodel finetune llm -c recipe.yaml [--threads N] [--section.key value ...]";

}  // namespace

int run_recipe_file(const std::string& config_path, std::vector<std::string> args) {
  const std::optional<std::string> threads = take_option(args, {"--threads"}, kUsage);
  set_num_threads(threads ? parse_threads(*threads) : 0);
  config::ConfigNode cfg = config::load_yaml(config_path);
  config::apply_overrides(cfg, config::parse_overrides(args));
  recipes::RunResult r = recipes::run_recipe(cfg);
  std::printf("done: %lld steps%s\n", (long long)r.steps_run,
              r.last_checkpoint.empty() ? "" : (", last checkpoint " + r.last_checkpoint).c_str());
  return 0;
}

int run_finetune(std::vector<std::string> args) {
  if (args.empty() || args[0] != "llm")
    throw Error("`automodel finetune` needs a domain: llm", "automodel finetune", kUsage);
  args.erase(args.begin());
  const std::string config_path = take_option(args, {"-c", "--config"}, kUsage).value_or("");
  if (config_path.empty()) throw Error("no recipe given", "automodel finetune llm", kUsage);
  return run_recipe_file(config_path, std::move(args));
}

}  // namespace automodel::cli

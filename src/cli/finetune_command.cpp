// `automodel finetune llm -c recipe.yaml [--a.b.c value ...]` and `automodel recipe.yaml [...]`: NeMo Automodel's
// two command forms. Overrides are applied to the YAML before the recipe reads it.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "components/config/config.h"
#include "components/distributed/communicator.h"
#include "components/launcher/local_launch.h"
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

constexpr const char* kUsage =
    "automodel finetune llm|vlm -c recipe.yaml [--nproc-per-node N] [--threads N] [--section.key value ...]";

int parse_nproc(const std::string& text) {
  const bool digits = !text.empty() && text.size() <= 5 &&
                      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  const int n = digits ? std::stoi(text) : 0;
  if (n < 1 || n > 4096)
    throw Error("--nproc-per-node needs a number of ranks from 1 to 4096, got '" + text + "'", "command line",
                "e.g. --nproc-per-node 2");
  return n;
}

}  // namespace

int run_recipe_file(const std::string& config_path, std::vector<std::string> args) {
  return run_recipe_command({config_path}, config_path, std::move(args));
}

int run_recipe_command(const std::vector<std::string>& command, const std::string& config_path,
                       std::vector<std::string> args) {
  // NeMo's --nproc-per-node: this command again, as that many MPI ranks on this machine.
  if (const std::optional<std::string> nproc = take_option(args, {"--nproc-per-node", "--nproc_per_node"}, kUsage)) {
    const int n = parse_nproc(*nproc);
    if (distributed::launched_by_mpi())
      throw Error("--nproc-per-node inside an MPI job", "automodel",
                  "either launch with mpirun/srun or with --nproc-per-node, not both");
    if (n > 1) {
      std::vector<std::string> again = command;
      again.insert(again.end(), args.begin(), args.end());
      launcher::exec_local_ranks(n, again);
    }
  }
  distributed::Communicator& world = distributed::world();
  const std::optional<std::string> threads = take_option(args, {"--threads"}, kUsage);
  set_num_threads(threads ? parse_threads(*threads) : 0, world.local_size());
  config::ConfigNode cfg = config::load_yaml(config_path);
  config::apply_overrides(cfg, config::parse_overrides(args));
  recipes::RunResult r = recipes::run_recipe(cfg);
  if (world.rank() == 0)
    std::printf("done: %lld steps%s\n", (long long)r.steps_run,
                r.last_checkpoint.empty() ? "" : (", last checkpoint " + r.last_checkpoint).c_str());
  return 0;
}

int run_finetune(std::vector<std::string> args) {
  // llm and vlm run the same recipe: the model section decides whether the model (and its data) take images.
  if (args.empty() || (args[0] != "llm" && args[0] != "vlm"))
    throw Error("`automodel finetune` needs a domain: llm or vlm", "automodel finetune", kUsage);
  const std::string domain = args[0];
  args.erase(args.begin());
  const std::string config_path = take_option(args, {"-c", "--config"}, kUsage).value_or("");
  if (config_path.empty()) throw Error("no recipe given", "automodel finetune " + domain, kUsage);
  return run_recipe_command({"finetune", domain, "-c", config_path}, config_path, std::move(args));
}

}  // namespace automodel::cli

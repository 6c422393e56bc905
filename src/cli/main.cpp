// automodel: the one entry point. Subcommands are added here as the layers below grow.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"

namespace {

constexpr const char* kUsage =
    "usage: automodel <command> [options]\n"
    "\n"
    "commands:\n"
    "  demo      train a tiny transformer on synthetic data and print the loss falling\n"
    "            [--steps N=200] [--threads N] [--seed S=0] [--checkpoint] [--lr LR=3e-3]\n"
    "\n"
    "  --help    this text;  --version  the version\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace automodel;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::puts("automodel 0.1.0");
    return 0;
  }
  try {
    cli::Args parsed = cli::parse_args(std::vector<std::string>(args.begin() + 1, args.end()));
    if (args[0] == "demo") return cli::run_demo(parsed);
    throw Error("unknown command '" + args[0] + "'", "automodel", "run `automodel --help` for the commands");
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 70;
  }
}

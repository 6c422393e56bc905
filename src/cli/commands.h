#pragma once
// The subcommands of the automodel executable; each returns the process exit code.
#include "cli/args.h"

namespace automodel::cli {

int run_demo(const Args& args);

}  // namespace automodel::cli

// `automodel merge-lora --base DIR --adapter DIR --out DIR [--dtype f32|bf16]`: a base model and a
// peft-format LoRA adapter in, a consolidated Hugging Face model directory (W + scale B A) out.
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "components/peft/adapter_io.h"
#include "components/peft/lora.h"
#include "core/error.h"
#include "models/auto_model.h"

namespace automodel::cli {

int run_merge_lora(const Args& args) {
  auto require = [&](const char* name, const char* what) {
    std::string v = args.str(name, "");
    if (v.empty() || v == "true")
      throw Error(std::string("`automodel merge-lora` needs --") + name + " DIR", "command line",
                  std::string("--") + name + ": " + what);
    return v;
  };
  const std::string base = require("base", "the base model directory (or hub id in the local cache)");
  const std::string adapter = require("adapter",
                                      "a peft adapter directory (adapter_config.json + "
                                      "adapter_model.safetensors)");
  const std::string out = require("out", "where to write the merged model");
  const std::string dtype = args.str("dtype", "f32");
  args.reject_unused("merge-lora");
  models::LoadOptions options;
  if (dtype == "bf16" || dtype == "bfloat16")
    options.dtype = DType::bf16;
  else if (dtype != "f32" && dtype != "float32")
    throw Error("unknown --dtype '" + dtype + "'", "command line", "use --dtype f32 or --dtype bf16");
  options.trainable = false;
  auto model = models::AutoModelForCausalLM::from_pretrained(base, options);
  peft::LoadedAdapter loaded = peft::load_adapter(*model, adapter, DType::f32, false);
  peft::save_merged_pretrained(*model, out);
  std::printf("merged %zu LoRA adapters (rank %lld) into %s\n", loaded.modules.size(),
              static_cast<long long>(loaded.config.dim), out.c_str());
  return 0;
}

}  // namespace automodel::cli

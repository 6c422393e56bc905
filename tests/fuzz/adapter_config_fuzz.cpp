// components/peft/adapter_io.cpp: the bytes as a peft adapter_config.json (r, lora_alpha, rank_pattern,
// alpha_pattern, use_rslora, the unsupported-feature flags, ...), loaded with a fixed valid
// adapter_model.safetensors onto a fresh tiny Llama (assets/tiny-llama's config, random weights).
#include "components/peft/adapter_io.h"
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "models/auto_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  static const models::ModelConfig config = models::load_config(fuzz::source_path("assets/tiny-llama").string());
  static const std::filesystem::path dir = [] {
    // Rank-8 adapters on layer 0's q_proj [64 <- 64] and layer 1's v_proj [32 <- 64], in peft's names.
    auto d = fuzz::scratch_dir() / "adapter";
    std::filesystem::create_directories(d);
    const std::string prefix = "base_model.model.model.layers.";
    io::save_safetensors((d / "adapter_model.safetensors").string(),
                         {{prefix + "0.self_attn.q_proj.lora_A.weight", Tensor::full({8, 64}, 0.01)},
                          {prefix + "0.self_attn.q_proj.lora_B.weight", Tensor::full({64, 8}, 0.02)},
                          {prefix + "1.self_attn.v_proj.lora_A.weight", Tensor::full({8, 64}, 0.03)},
                          {prefix + "1.self_attn.v_proj.lora_B.weight", Tensor::full({32, 8}, 0.04)}});
    return d;
  }();
  fuzz::write_file(dir / "adapter_config.json", fuzz::as_text(data, size));
  std::unique_ptr<models::LanguageModel> model = models::AutoModelForCausalLM::from_config(config);
  fuzz::accept_errors([&] { (void)peft::load_adapter(*model, dir.string()); });
  return 0;
}

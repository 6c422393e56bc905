#pragma once
// Registration of the built-in architecture families (one file each). Called once by the
// registry before the first lookup; explicit, so the linker cannot drop a family file.
namespace automodel::models {

void register_llama_family();
void register_mistral_family();
void register_qwen2_family();
void register_qwen3_family();
void register_gemma_family();
void register_gemma2_family();
void register_gemma3_text_family();
void register_phi3_family();
void register_qwen3_moe_family();
void register_mixtral_family();
void register_gpt_oss_family();

}  // namespace automodel::models

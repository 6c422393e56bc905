// models/config.cpp and the family builders: the bytes as a model directory's config.json, read as `automodel
// inspect` reads it (models::load_config: io::read_json_file + ModelConfig::from_json; an image-text model's through
// load_vision_language_config), written back (to_json), and, when the sizes it names are small, built into a model
// (the family's DecoderSpec and the parameters; the vision tower and projector too).
#include "fuzz_util.h"
#include "models/auto_model.h"
#include "models/gemma3_vision.h"
#include "models/idefics3.h"
#include "models/vision_language_model.h"

namespace {

// Parameters the config would allocate, with every size clamped at 0: an upper bound for the usual families.
bool small_enough(const automodel::models::ModelConfig& c) {
  auto dim = [](int64_t v) { return v < 0 ? 0.0 : double(v); };
  const double h = dim(c.hidden_size), heads = dim(c.num_attention_heads), kv = dim(c.num_key_value_heads);
  const double head_dim = c.head_dim > 0 ? dim(c.head_dim) : (heads > 0 ? h / heads : h);
  const double attention = h * head_dim * (2 * heads + 2 * kv);
  const double per_layer = attention + 3 * h * dim(c.intermediate_size) + 4 * h;
  const double total = 2 * dim(c.vocab_size) * h + dim(c.num_hidden_layers) * per_layer;
  return total <= 2e6 && dim(c.num_hidden_layers) <= 64 && dim(c.max_position_embeddings) <= 1e6;
}

bool small_enough(const automodel::models::SiglipVisionConfig& v) {
  const double h = double(v.hidden_size), side = double(v.patches_per_side());
  const double total = side * side * h + h * double(v.num_channels) * double(v.patch_size) * double(v.patch_size) +
                       double(v.num_hidden_layers) * (4 * h * h + 2 * h * double(v.intermediate_size));
  return total <= 2e6 && v.num_hidden_layers <= 64;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  const auto dir = fuzz::scratch_dir() / "model";
  fuzz::write_file(dir / "config.json", fuzz::as_text(data, size));
  fuzz::accept_errors([&] {
    if (models::is_vision_language_model_dir(dir.string())) {
      const models::VisionLanguageConfig config = models::load_vision_language_config(dir.string());
      (void)config.to_json();
      if (small_enough(config.text) && small_enough(config.vision))
        (void)(config.model_type == "gemma3" ? models::build_gemma3_vision_language_model(config, DType::f32)
                                             : models::build_idefics3_vision_language_model(config, DType::f32));
      return;
    }
    models::ModelConfig config = models::load_config(dir.string());
    (void)config.to_json();
    if (small_enough(config)) (void)models::AutoModelForCausalLM::from_config(config);
  });
  return 0;
}

#pragma once
// Idefics3ForConditionalGeneration and SmolVLMForConditionalGeneration (modeling_idefics3.py, modeling_smolvlm.py;
// model_type idefics3 / smolvlm, one architecture): a SigLIP tower with Idefics' bucketed positions for
// partially-padded images, a connector (pixel shuffle by scale_factor, then modality_projection), the image
// features written over the <image> tokens' embeddings, and a Llama decoder, causal everywhere.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "models/vision_language_model.h"

namespace automodel::models {

// Fills `c` (model_type already set) from an idefics3 / smolvlm config.json, with transformers' defaults for what
// it leaves out (text_config: LlamaConfig's with rms_norm_eps 1e-5; vision_config: Idefics3VisionConfig's).
void parse_idefics3_config(const nlohmann::json& j, VisionLanguageConfig& c);

// Checks the connector's geometry and builds the model with its modules' initial values.
std::unique_ptr<VisionLanguageModel> build_idefics3_vision_language_model(const VisionLanguageConfig& config,
                                                                          DType dtype);

// Idefics3VisionEmbeddings' position ids of one tile from its patch mask (rows x cols, row-major, 1 = real): each
// real patch's fractional coordinates (its index over the real patches in the first column / row) bucketed onto the
// side x side position grid in float32 as torch computes them; padded patches get 0. `image` names the tile in the
// Error for a mask whose first patch row or column has no real patch.
std::vector<int64_t> bucketed_position_ids(const std::vector<uint8_t>& patch_mask, int64_t rows, int64_t cols,
                                           int64_t side, int64_t image);

}  // namespace automodel::models

#pragma once
// Gemma3ForConditionalGeneration (modeling_gemma3.py, model_type gemma3), built by vision_language_model.cpp.
#include <memory>

#include "models/vision_language_model.h"

namespace automodel::models {

// transformers' Gemma3TextConfig defaults, for the keys a text_config leaves out (Gemma 3 checkpoints on the Hub
// carry only the keys that differ from them).
nlohmann::json gemma3_text_defaults();

// Checks the Gemma 3 specifics of a parsed config (pooling geometry, token ids) and builds the model with its
// modules' initial values; load_vision_language_model fills the parameters.
std::unique_ptr<VisionLanguageModel> build_gemma3_vision_language_model(const VisionLanguageConfig& config,
                                                                        DType dtype);

}  // namespace automodel::models

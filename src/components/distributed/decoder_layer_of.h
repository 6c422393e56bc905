#pragma once
// Which decoder layer a flat buffer belongs to, from its parameters' Hugging Face names.
#include <cstdint>

#include "nn/flat_params.h"

namespace automodel::distributed {

// l when every slot of `buffer` is under "model.layers.<l>." (at the start of the name, or after a module prefix:
// an image-text model's decoder is "language_model.model.layers.<l>."), else -1 (embeddings, final norm, LM head,
// a vision tower's "encoder.layers.<l>.").
int64_t decoder_layer_of(const nn::FlatParameters& buffer);

}  // namespace automodel::distributed

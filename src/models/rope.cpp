#include "models/rope.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace automodel::models {

int64_t rotary_dim(const ModelConfig& c) { return int64_t(double(c.head_dim) * c.rope.partial_rotary_factor); }

namespace {

// 1 / (scale_i * base^(2i / dim)) in fp32, as torch evaluates `1.0 / (base ** (arange(0, dim, 2).float() / dim))`.
std::vector<float> base_inv_freq(double base, int64_t dim, const std::vector<double>& scale = {}) {
  std::vector<float> inv(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    float exponent = float(2 * i) / float(dim);
    float denom = std::pow(float(base), exponent);
    if (!scale.empty()) denom = float(scale[size_t(i)]) * denom;
    inv[size_t(i)] = 1.0f / denom;
  }
  return inv;
}

void llama3_scale(std::vector<float>& inv, const RopeConfig& r) {
  const double old_len = double(r.original_max_position_embeddings);
  const double low_wavelen = old_len / r.low_freq_factor, high_wavelen = old_len / r.high_freq_factor;
  for (float& f : inv) {
    const float wavelen = float(2 * M_PI) / f;
    float scaled = wavelen > float(low_wavelen) ? f / float(r.factor) : f;
    const bool medium = !(wavelen < float(high_wavelen)) && !(wavelen > float(low_wavelen));
    if (medium) {
      const float smooth =
          (float(old_len) / wavelen - float(r.low_freq_factor)) / float(r.high_freq_factor - r.low_freq_factor);
      scaled = (1 - smooth) * scaled / float(r.factor) + smooth * scaled;
    }
    f = scaled;
  }
}

// YaRN (transformers' _compute_yarn_parameters): the low-frequency dims are interpolated (divided by factor), the
// high-frequency ones kept, with a linear ramp between the dims whose wavelengths make beta_slow and beta_fast
// rotations over the original context. The ramp's ends are computed in double, the frequencies in fp32.
std::vector<float> yarn_inv_freq(const RopeConfig& r, int64_t dim) {
  const double base = r.theta, original = double(r.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return double(dim) * std::log(original / (rotations * 2 * M_PI)) / (2 * std::log(base));
  };
  double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
  if (r.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0), high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;  // as transformers, against a zero-width ramp
  std::vector<float> inv(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float pos_freq = std::pow(float(base), float(2 * i) / float(dim));
    const float extrapolation = 1.0f / pos_freq, interpolation = 1.0f / (float(r.factor) * pos_freq);
    const float ramp = std::clamp((float(i) - float(low)) / float(high - low), 0.0f, 1.0f);
    const float keep = 1.0f - ramp;  // the share of the unscaled (extrapolated) frequency
    inv[size_t(i)] = interpolation * (1.0f - keep) + extrapolation * keep;
  }
  return inv;
}

double yarn_mscale(double factor, double mscale) { return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0; }

double yarn_attention_scaling(const RopeConfig& r) {
  if (r.attention_factor) return *r.attention_factor;
  if (r.mscale != 0 && r.mscale_all_dim != 0)
    return yarn_mscale(r.factor, r.mscale) / yarn_mscale(r.factor, r.mscale_all_dim);
  return yarn_mscale(r.factor, 1.0);
}

}  // namespace

RopeFrequencies rope_frequencies(const ModelConfig& c, int64_t seq_len) {
  const RopeConfig& r = c.rope;
  const int64_t dim = rotary_dim(c);
  AM_CHECK(dim > 0 && dim % 2 == 0 && dim <= c.head_dim, "rotary dimension ", dim, " (head_dim ", c.head_dim,
           " x partial_rotary_factor ", r.partial_rotary_factor, ") must be even and within head_dim");
  RopeFrequencies out;
  std::vector<float> inv;
  if (r.type == "default") {
    inv = base_inv_freq(r.theta, dim);
  } else if (r.type == "linear") {
    inv = base_inv_freq(r.theta, dim);
    for (float& f : inv) f /= float(r.factor);
  } else if (r.type == "dynamic") {
    // NTK-aware: the base grows once the sequence exceeds max_position_embeddings.
    const double len = double(std::max(seq_len, c.max_position_embeddings));
    const double max_pos = double(c.max_position_embeddings);
    const double base = r.theta * std::pow(r.factor * len / max_pos - (r.factor - 1), double(dim) / double(dim - 2));
    inv = base_inv_freq(base, dim);
  } else if (r.type == "llama3") {
    inv = base_inv_freq(r.theta, dim);
    llama3_scale(inv, r);
  } else if (r.type == "longrope") {
    const int64_t orig = r.original_max_position_embeddings;
    const std::vector<double>& ext = seq_len > orig ? r.long_factor : r.short_factor;
    AM_CHECK(int64_t(ext.size()) == dim / 2, "longrope ", seq_len > orig ? "long_factor" : "short_factor", " has ",
             ext.size(), " entries, expected rotary_dim/2 = ", dim / 2);
    inv = base_inv_freq(r.theta, dim, ext);
    double factor = r.factor > 0 ? r.factor : double(c.max_position_embeddings) / double(orig);
    out.attention_scaling = r.attention_factor ? *r.attention_factor
                            : factor <= 1.0    ? 1.0
                                               : std::sqrt(1 + std::log(factor) / std::log(double(orig)));
  } else if (r.type == "yarn") {
    inv = yarn_inv_freq(r, dim);
    out.attention_scaling = yarn_attention_scaling(r);
  } else {
    throw Error("rope_type '" + r.type + "' is not supported", "config.json rope_parameters",
                "supported: default, linear, dynamic, llama3, longrope, yarn");
  }
  out.inv_freq = Tensor::from_vector(inv, {int64_t(inv.size())});
  return out;
}

}  // namespace automodel::models

// The gpt_oss family: its parameters and layer windows from config.json, MXFP4 dequantization (the bit layout and
// the scale bias) and MXFP4 expert checkpoints loading as their dequantized values (saving drops the
// quantization_config), and the errors for bad input: sinks of the wrong shape, an unsupported quant method,
// bad swiglu_limit / YaRN values, MXFP4 tensors that do not pair.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "error_of.h"
#include "io/mxfp4.h"
#include "io/safetensors.h"
#include "models/auto_model.h"
#include "models/rope.h"
#include "ops/view.h"
#include "temp_dir.h"
#include "tiny_model_config.h"

using namespace automodel;
using namespace automodel::models;
using automodel::testing::error_of;
using automodel::testing::TempDir;
using nlohmann::json;

namespace {

json gpt_oss_config(json extra = json::object()) {
  json c = automodel::testing::tiny_model_config("gpt_oss");
  c["num_hidden_layers"] = 3;
  c["num_local_experts"] = 4;
  c["num_experts_per_tok"] = 2;
  c["intermediate_size"] = 32;
  c["head_dim"] = 8;
  c["sliding_window"] = 4;
  c["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 150000.0}, {"factor", 32.0},
                          {"beta_fast", 32.0},   {"beta_slow", 1.0},       {"original_max_position_embeddings", 4096},
                          {"truncate", false}};
  c.update(extra);
  return c;
}

std::unique_ptr<LanguageModel> model_of(const json& config, uint64_t seed = 3) {
  return AutoModelForCausalLM::from_config(ModelConfig::from_json(config, "config.json"), {}, seed);
}

Shape shape_of(const LanguageModel& m, const std::string& name) {
  for (const auto& [n, p] : m.named_parameters())
    if (n == name) return p.shape();
  return {};
}

void write_json(const std::string& path, const json& j) { std::ofstream(path) << j.dump(2); }

// The FP4 (E2M1) values of the codes 0..15.
double fp4(int code) {
  static const double values[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  return (code & 8 ? -1 : 1) * values[code & 7];
}

}  // namespace

TEST(GptOss, ParametersAndWindowsAreTransformers) {
  auto m = model_of(gpt_oss_config());
  EXPECT_EQ(shape_of(*m, "model.layers.0.self_attn.sinks"), (Shape{4}));
  EXPECT_EQ(shape_of(*m, "model.layers.0.self_attn.o_proj.bias"), (Shape{32}));  // attention_bias defaults to true
  EXPECT_EQ(shape_of(*m, "model.layers.1.mlp.router.weight"), (Shape{4, 32}));
  EXPECT_EQ(shape_of(*m, "model.layers.1.mlp.router.bias"), (Shape{4}));
  EXPECT_EQ(shape_of(*m, "model.layers.2.mlp.experts.gate_up_proj"), (Shape{4, 32, 64}));
  EXPECT_EQ(shape_of(*m, "model.layers.2.mlp.experts.gate_up_proj_bias"), (Shape{4, 64}));
  EXPECT_EQ(shape_of(*m, "model.layers.2.mlp.experts.down_proj"), (Shape{4, 32, 32}));
  EXPECT_EQ(shape_of(*m, "model.layers.2.mlp.experts.down_proj_bias"), (Shape{4, 32}));
  // Without layer_types: sliding, full, sliding.
  EXPECT_EQ(m->config().layer_windows, (std::vector<int64_t>{4, 0, 4}));
  auto full = model_of(gpt_oss_config({{"layer_types", {"full_attention", "full_attention", "sliding_attention"}}}));
  EXPECT_EQ(full->config().layer_windows, (std::vector<int64_t>{0, 0, 4}));
}

TEST(GptOss, YarnAttentionScalingIsTransformers) {
  const ModelConfig c = ModelConfig::from_json(gpt_oss_config(), "config.json");
  const RopeFrequencies f = rope_frequencies(c, 16);
  EXPECT_DOUBLE_EQ(f.attention_scaling, 0.1 * std::log(32.0) + 1.0);
  // The highest frequency is kept (extrapolated), the lowest divided by the factor.
  const std::vector<double> inv = f.inv_freq.to_doubles();
  EXPECT_FLOAT_EQ(float(inv.front()), 1.0f);
  EXPECT_NEAR(inv.back(), 1.0 / (32.0 * std::pow(150000.0, 6.0 / 8.0)), 1e-12);
}

TEST(Mxfp4, DequantizesLowNibbleFirstWithScaleBias127) {
  // One row of two blocks: block 0 has every code pair (lo, hi) = (j, 15 - j) at scale 2^0, block 1 the same codes
  // at scale 2^-3 (byte 124).
  std::vector<int32_t> blocks, scales = {127, 124};
  for (int b = 0; b < 2; ++b)
    for (int j = 0; j < 16; ++j) blocks.push_back(j | (15 - j) << 4);
  const Tensor out = io::dequantize_mxfp4(Tensor::from_vector(blocks, {1, 2, 16}), Tensor::from_vector(scales, {1, 2}),
                                          DType::f32, "test");
  ASSERT_EQ(out.shape(), (Shape{1, 64}));
  const std::vector<double> v = out.to_doubles();
  for (int b = 0; b < 2; ++b)
    for (int j = 0; j < 16; ++j) {
      const double s = b == 0 ? 1.0 : 0.125;
      EXPECT_EQ(v[size_t(b * 32 + 2 * j)], fp4(j) * s) << b << " " << j;
      EXPECT_EQ(v[size_t(b * 32 + 2 * j + 1)], fp4(15 - j) * s) << b << " " << j;
    }
  // bf16 holds every value exactly.
  const Tensor bf = io::dequantize_mxfp4(Tensor::from_vector(blocks, {1, 2, 16}), Tensor::from_vector(scales, {1, 2}),
                                         DType::bf16, "test");
  EXPECT_EQ(bf.to_doubles(), v);
}

TEST(Mxfp4, TensorsThatDoNotPairAreAnError) {
  const Tensor blocks = Tensor::zeros({2, 3, 16}, DType::i32), scales = Tensor::full({2, 3}, 127, DType::i32);
  EXPECT_NO_THROW(io::dequantize_mxfp4(blocks, scales, DType::f32, "w"));
  std::string e = error_of([&] {
    io::dequantize_mxfp4(Tensor::zeros({2, 3, 8}, DType::i32), scales, DType::f32, "w");
  });
  EXPECT_NE(e.find("do not pair"), std::string::npos) << e;
  e = error_of([&] { io::dequantize_mxfp4(blocks, Tensor::zeros({2, 4}, DType::i32), DType::f32, "w"); });
  EXPECT_NE(e.find("do not pair"), std::string::npos) << e;
  e = error_of([&] { io::dequantize_mxfp4(Tensor::zeros({2, 3, 16}), scales, DType::f32, "w"); });
  EXPECT_NE(e.find("must be stored as integers"), std::string::npos) << e;
  e = error_of([&] { io::dequantize_mxfp4(blocks, Tensor::full({2, 3}, 300, DType::i32), DType::f32, "w"); });
  EXPECT_NE(e.find("outside a byte"), std::string::npos) << e;
}

// A checkpoint whose experts are MXFP4 blocks and scales (as the GPT-OSS releases hold them) loads as the
// dequantized values, and saves them without the quantization_config.
TEST(GptOss, Mxfp4ExpertsLoadDequantizedAndSaveWithoutQuantizationConfig) {
  TempDir dir;
  auto m = model_of(gpt_oss_config());
  save_pretrained(*m, dir.str());
  io::NamedTensors tensors = io::load_safetensors(dir / "model.safetensors"), quantized;
  std::map<std::string, std::vector<double>> expected;
  int salt = 0;
  for (auto& [name, t] : tensors) {
    const bool gate_up = name.size() > 12 && name.substr(name.size() - 12) == "gate_up_proj";
    const bool down = name.size() > 9 && name.substr(name.size() - 9) == "down_proj";
    if (!gate_up && !down) {
      quantized.emplace_back(name, t);
      continue;
    }
    // [E, in, out] is stored per expert as [out, in]: blocks [E, out, in / 32, 16], scales [E, out, in / 32].
    const int64_t E = t.size(0), in = t.size(1), out = t.size(2), G = in / 32;
    std::vector<int32_t> blocks, scales;
    std::vector<double> value(size_t(E * in * out));
    for (int64_t e = 0; e < E; ++e)
      for (int64_t o = 0; o < out; ++o)
        for (int64_t g = 0; g < G; ++g) {
          const int scale = 120 + (salt++ % 9);
          scales.push_back(scale);
          for (int64_t j = 0; j < 16; ++j) {
            const int lo = int((e + o + g + j + salt) % 16), hi = int((3 * j + o + salt) % 16);
            blocks.push_back(lo | hi << 4);
            for (auto [k, code] : {std::pair{2 * j, lo}, std::pair{2 * j + 1, hi}}) {
              const int64_t i = g * 32 + k;
              value[size_t((e * in + i) * out + o)] = std::ldexp(fp4(code), scale - 127);
            }
          }
        }
    expected[name] = value;
    quantized.emplace_back(name + "_blocks",
                           io::convert_dtype(Tensor::from_vector(blocks, {E, out, G, 16}), DType::i32));
    quantized.emplace_back(name + "_scales", Tensor::from_vector(scales, {E, out, G}));
  }
  ASSERT_EQ(expected.size(), 6u);
  io::save_safetensors(dir / "model.safetensors", quantized);
  json config = read_json(dir / "config.json");
  config["quantization_config"] = {{"quant_method", "mxfp4"}, {"modules_to_not_convert", {"model.layers.*.self_attn"}}};
  write_json(dir / "config.json", config);

  auto loaded = AutoModelForCausalLM::from_pretrained(dir.str());
  for (const auto& [name, p] : loaded->named_parameters())
    if (expected.count(name)) {
      EXPECT_EQ(p.to_doubles(), expected[name]) << name;
    }

  // A bf16 model holds every dequantized value exactly (FP4 values times powers of two).
  LoadOptions bf16;
  bf16.dtype = DType::bf16;
  auto loaded_bf16 = AutoModelForCausalLM::from_pretrained(dir.str(), bf16);
  for (const auto& [name, p] : loaded_bf16->named_parameters())
    if (expected.count(name)) {
      EXPECT_EQ(p.dtype(), DType::bf16);
      EXPECT_EQ(p.to_doubles(), expected[name]) << name;
    }

  TempDir saved;
  save_pretrained(*loaded, saved.str());
  EXPECT_FALSE(read_json(saved / "config.json").contains("quantization_config"));
  const io::NamedTensors written = io::load_safetensors(saved / "model.safetensors");
  for (const auto& [name, t] : written) {
    EXPECT_EQ(name.find("_blocks"), std::string::npos) << name;
    if (expected.count(name)) {
      EXPECT_EQ(t.to_doubles(), expected[name]) << name;
    }
  }
}

TEST(GptOss, BadInputIsAnErrorNamingIt) {
  TempDir dir;
  save_pretrained(*model_of(gpt_oss_config()), dir.str());
  const json good = read_json(dir / "config.json");
  auto load_with = [&](const json& config) {
    write_json(dir / "config.json", config);
    return error_of([&] { AutoModelForCausalLM::from_pretrained(dir.str()); });
  };
  json c = good;
  c["quantization_config"] = {{"quant_method", "gptq"}};
  std::string e = load_with(c);
  EXPECT_NE(e.find("quantization_config.quant_method"), std::string::npos) << e;
  EXPECT_NE(e.find("'gptq' is not supported"), std::string::npos) << e;
  c = good;
  c["swiglu_limit"] = 0;
  e = load_with(c);
  EXPECT_NE(e.find("swiglu_limit"), std::string::npos) << e;
  c = good;
  c["rope_parameters"]["beta_fast"] = -1;
  e = load_with(c);
  EXPECT_NE(e.find("rope_parameters.beta_fast"), std::string::npos) << e;
  c = good;
  c.erase("num_local_experts");
  e = load_with(c);
  EXPECT_NE(e.find("num_local_experts"), std::string::npos) << e;
  // Sinks of the wrong shape in the checkpoint (2 per layer for 4 heads).
  write_json(dir / "config.json", good);
  io::NamedTensors tensors = io::load_safetensors(dir / "model.safetensors");
  for (auto& [name, t] : tensors)
    if (name == "model.layers.1.self_attn.sinks") t = Tensor::zeros({2});
  io::save_safetensors(dir / "model.safetensors", tensors);
  e = error_of([&] { AutoModelForCausalLM::from_pretrained(dir.str()); });
  EXPECT_NE(e.find("model.layers.1.self_attn.sinks"), std::string::npos) << e;
  EXPECT_NE(e.find("[2]"), std::string::npos) << e;
}

// models/generate: KV-cached greedy decoding equals full recomputation, seeded sampling, the
// transformers warper order (temperature, top-k, top-p), eos stopping, sequence log-probs and
// generation_config.json.
#include "models/generate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "core/grad_node.h"
#include "error_of.h"
#include "models/auto_model.h"
#include "ops/softmax.h"
#include "ops/view.h"
#include "temp_dir.h"

using namespace automodel;
using automodel::testing::error_of;
using namespace automodel::models;
using automodel::testing::TempDir;

namespace {

ModelConfig tiny_config() {
  nlohmann::json j = {{"model_type", "llama"},
                      {"architectures", {"LlamaForCausalLM"}},
                      {"vocab_size", 97},
                      {"hidden_size", 32},
                      {"intermediate_size", 64},
                      {"num_hidden_layers", 2},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"head_dim", 8},
                      {"max_position_embeddings", 128},
                      {"rms_norm_eps", 1e-6},
                      {"initializer_range", 0.5},
                      {"eos_token_id", 2},
                      {"bos_token_id", 1}};
  return ModelConfig::from_json(j, "generate_test");
}

const LanguageModel& tiny_model() {
  static std::unique_ptr<LanguageModel> model = [] {
    LoadOptions options;
    options.trainable = false;
    return AutoModelForCausalLM::from_config(tiny_config(), options, 7);
  }();
  return *model;
}

const std::vector<int64_t> kPrompt = {1, 17, 42, 5, 88, 23};

GenerationConfig greedy(int64_t n) {
  GenerationConfig g;
  g.max_new_tokens = n;
  return g;
}

GenerationConfig sampling(int64_t n, uint64_t seed) {
  GenerationConfig g = greedy(n);
  g.do_sample = true;
  g.seed = seed;
  return g;
}

std::vector<float> full_last_logits(const LanguageModel& model, const std::vector<int64_t>& ids) {
  NoGradGuard no_grad;
  const int64_t T = int64_t(ids.size());
  Tensor logits = model.forward(Tensor::from_vector(ids, {1, T}));
  return ops::slice(logits, 1, T - 1, T).to_floats();
}

int64_t argmax(const std::vector<float>& v) { return int64_t(std::max_element(v.begin(), v.end()) - v.begin()); }

}  // namespace

TEST(Generate, GreedyWithCacheMatchesFullRecompute) {
  const LanguageModel& model = tiny_model();
  std::vector<int64_t> got = generate(model, kPrompt, greedy(24));
  ASSERT_EQ(got.size(), 24u);  // no eos ids: all 24
  std::vector<int64_t> seq = kPrompt, expected;
  for (int i = 0; i < 24; ++i) {
    int64_t next = argmax(full_last_logits(model, seq));
    expected.push_back(next);
    seq.push_back(next);
  }
  EXPECT_EQ(got, expected);
  // Not a degenerate model: the continuation is not one repeated token.
  EXPECT_GT(std::count_if(got.begin(), got.end(), [&](int64_t t) { return t != got[0]; }), 0);
}

TEST(Generate, CachedStepLogitsMatchFullForward) {
  const LanguageModel& model = tiny_model();
  NoGradGuard no_grad;
  KVCache cache = model.make_cache(1, 16);
  ForwardOptions options;
  options.cache = &cache;
  std::vector<int64_t> seq = kPrompt;
  model.forward(Tensor::from_vector(seq, {1, int64_t(seq.size())}), options);
  EXPECT_EQ(cache.length, int64_t(seq.size()));
  for (int64_t next : {3, 60, 96}) {
    seq.push_back(next);
    std::vector<float> step =
        model.forward(Tensor::from_vector(std::vector<int64_t>{next}, {1, 1}), options).to_floats();
    std::vector<float> full = full_last_logits(model, seq);
    ASSERT_EQ(step.size(), full.size());
    double max_abs = 0, max_err = 0;
    for (size_t i = 0; i < full.size(); ++i) {
      max_abs = std::max(max_abs, std::abs(double(full[i])));
      max_err = std::max(max_err, std::abs(double(step[i]) - double(full[i])));
    }
    EXPECT_LE(max_err, 1e-5 * max_abs) << "after token " << next;
  }
}

TEST(Generate, SeededSamplingIsReproducibleAndSeedsDiffer) {
  const LanguageModel& model = tiny_model();
  GenerationConfig g = sampling(16, 123);
  std::vector<int64_t> a = generate(model, kPrompt, g), b = generate(model, kPrompt, g);
  EXPECT_EQ(a.size(), 16u);
  EXPECT_EQ(a, b);
  g.seed = 124;
  std::vector<int64_t> c = generate(model, kPrompt, g);
  EXPECT_NE(a, c);
  // Sampling is not greedy.
  GenerationConfig gg = greedy(16);
  EXPECT_NE(a, generate(model, kPrompt, gg));
}

TEST(Generate, TopK1AndTinyTopPAreGreedy) {
  const LanguageModel& model = tiny_model();
  std::vector<int64_t> expected = generate(model, kPrompt, greedy(12));
  GenerationConfig k1 = sampling(12, 5);
  k1.top_k = 1;
  EXPECT_EQ(generate(model, kPrompt, k1), expected);
  GenerationConfig p0 = sampling(12, 9);
  p0.top_p = 1e-6;
  EXPECT_EQ(generate(model, kPrompt, p0), expected);
  GenerationConfig cold = sampling(12, 11);
  cold.temperature = 1e-4;
  EXPECT_EQ(generate(model, kPrompt, cold), expected);
}

TEST(Generate, StopsAfterEos) {
  const LanguageModel& model = tiny_model();
  GenerationConfig g = greedy(20);
  std::vector<int64_t> full = generate(model, kPrompt, g);
  ASSERT_GE(full.size(), 6u);
  // Pick the token at position 4 (its first occurrence) as eos: generation ends right after it.
  const int64_t eos = full[4];
  const size_t first = size_t(std::find(full.begin(), full.end(), eos) - full.begin());
  g.eos_token_ids = {999, eos};
  std::vector<int64_t> cut = generate(model, kPrompt, g);
  EXPECT_EQ(cut, std::vector<int64_t>(full.begin(), full.begin() + long(first) + 1));
  EXPECT_EQ(cut.back(), eos);
}

TEST(Generate, MaxNewTokensAndErrors) {
  const LanguageModel& model = tiny_model();
  EXPECT_TRUE(generate(model, kPrompt, greedy(0)).empty());
  EXPECT_EQ(generate(model, kPrompt, greedy(1)).size(), 1u);
  EXPECT_NE(error_of([&] { generate(model, {}, greedy(4)); }).find("prompt is empty"), std::string::npos);
  EXPECT_NE(error_of([&] {
              generate(model, {1, 97}, greedy(4));
            }).find("token id 97 at position 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { generate(model, {1, -3}, greedy(4)); }).find("outside the vocabulary"), std::string::npos);
  GenerationConfig bad = sampling(4, 0);
  bad.temperature = 0;
  EXPECT_NE(error_of([&] { generate(model, kPrompt, bad); }).find("temperature must be a positive"), std::string::npos);
  bad = sampling(4, 0);
  bad.top_p = 1.5;
  EXPECT_NE(error_of([&] { generate(model, kPrompt, bad); }).find("top_p must be in (0, 1]"), std::string::npos);
}

TEST(Generate, GreedyPicksTheFirstMaximum) {
  Generator gen(0);
  EXPECT_EQ(select_next_token({0.f, 3.f, 1.f, 3.f}, greedy(1), gen), 1);
  EXPECT_EQ(gen.state().offset, 0u);  // greedy draws nothing
}

TEST(Generate, SamplingFollowsTemperatureSoftmax) {
  const std::vector<float> logits = {0.f, 1.f, 2.f, -1.f};
  GenerationConfig g = sampling(1, 0);
  g.temperature = 2.0;
  Generator gen(3);
  const int n = 40000;
  std::vector<int> counts(4, 0);
  for (int i = 0; i < n; ++i) ++counts[size_t(select_next_token(logits, g, gen))];
  double z = 0;
  for (float l : logits) z += std::exp(l / 2.0);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(counts[i] / double(n), std::exp(logits[i] / 2.0) / z, 0.01) << i;
  EXPECT_EQ(gen.state().offset, uint64_t(n));  // one Philox block per draw
}

TEST(Generate, TopKKeepsTiesAndTopPKeepsTheSmallestNucleus) {
  Generator gen(1);
  GenerationConfig k2 = sampling(1, 0);
  k2.top_k = 2;
  // Values 5, 4, 4, 1: the k-th largest is 4 and both 4s stay (as transformers' `scores < kth`).
  std::vector<int> seen(4, 0);
  for (int i = 0; i < 3000; ++i) ++seen[size_t(select_next_token({4.f, 5.f, 1.f, 4.f}, k2, gen))];
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_EQ(seen[2], 0);
  EXPECT_GT(seen[3], 0);

  // Probabilities 0.5, 0.3, 0.15, 0.05 with top_p 0.8: ascending cumulative 0.05, 0.2 (<= 0.2:
  // dropped), 0.5, 1.0 -> {0.5, 0.3} renormalised.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  GenerationConfig p = sampling(1, 0);
  p.top_p = 0.8;
  std::vector<int> counts(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[size_t(select_next_token(logits, p, gen))];
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_NEAR(counts[0] / double(n), 0.625, 0.015);
  // top_p 0.81 needs the 0.15 token too (0.8 < 0.81).
  p.top_p = 0.81;
  counts.assign(4, 0);
  for (int i = 0; i < n; ++i) ++counts[size_t(select_next_token(logits, p, gen))];
  EXPECT_GT(counts[2], 0);
  EXPECT_EQ(counts[3], 0);
}

TEST(Generate, SequenceLogprobsMatchLogSoftmaxOfLogits) {
  const LanguageModel& model = tiny_model();
  std::vector<int64_t> tokens = {1, 17, 42, 5, 88, 23, 96, 0};
  std::vector<double> lp = sequence_logprobs(model, tokens);
  ASSERT_EQ(lp.size(), tokens.size() - 1);
  NoGradGuard no_grad;
  const int64_t T = int64_t(tokens.size());
  std::vector<double> logits = model.forward(Tensor::from_vector(tokens, {1, T})).to_doubles();
  const size_t V = 97;
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    double mx = -1e300, z = 0;
    for (size_t v = 0; v < V; ++v) mx = std::max(mx, logits[i * V + v]);
    for (size_t v = 0; v < V; ++v) z += std::exp(logits[i * V + v] - mx);
    double expected = logits[i * V + size_t(tokens[i + 1])] - mx - std::log(z);
    EXPECT_NEAR(lp[i], expected, 1e-9) << i;
    EXPECT_LT(lp[i], 0);
  }
  EXPECT_NE(error_of([&] { sequence_logprobs(model, {5}); }).find("at least 2 tokens"), std::string::npos);
  EXPECT_NE(error_of([&] { sequence_logprobs(model, {5, 200}); }).find("token id 200"), std::string::npos);
}

TEST(Generate, ReadsGenerationConfig) {
  ModelConfig config = tiny_config();
  TempDir dir;
  GenerationConfig none = read_generation_config(dir.str(), config);  // no file: config.json's eos
  EXPECT_EQ(none.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_FALSE(none.do_sample);

  std::ofstream(dir / "generation_config.json")
      << R"({"do_sample": true, "temperature": 0.6, "top_p": 0.9, "eos_token_id": [128001, 128009],
            "max_length": 4096, "bos_token_id": 1, "transformers_version": "5.0"})";
  GenerationConfig g = read_generation_config(dir.str(), config);
  EXPECT_TRUE(g.do_sample);
  EXPECT_DOUBLE_EQ(g.temperature, 0.6);
  EXPECT_DOUBLE_EQ(g.top_p, 0.9);
  EXPECT_EQ(g.top_k, 50);  // transformers' default when the key is absent
  EXPECT_EQ(g.max_new_tokens, 32);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{128001, 128009}));

  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": 7, "max_new_tokens": 9})";
  g = read_generation_config(dir.str(), config);
  EXPECT_EQ(g.eos_token_ids, std::vector<int64_t>{7});
  EXPECT_EQ(g.max_new_tokens, 9);
  EXPECT_FALSE(g.do_sample);

  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": "two"})";
  std::string e = error_of([&] { read_generation_config(dir.str(), config); });
  EXPECT_NE(e.find("'eos_token_id' should be an integer or a list of integers"), std::string::npos) << e;
  EXPECT_NE(e.find("generation_config.json"), std::string::npos) << e;
  std::ofstream(dir / "generation_config.json") << R"({"temperature": "hot"})";
  e = error_of([&] { read_generation_config(dir.str(), config); });
  EXPECT_NE(e.find("'temperature' should be a number"), std::string::npos) << e;
  std::ofstream(dir / "generation_config.json") << R"({"temperature": )";
  e = error_of([&] { read_generation_config(dir.str(), config); });
  EXPECT_NE(e.find("generation_config.json"), std::string::npos) << e;
}

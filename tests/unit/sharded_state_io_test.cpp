// Optimizer state written in shards by the ranks of a sharded run (checkpoint/sharded_state_io.h) and read back by
// any number of ranks: the ranges tile each tensor, and a missing or inconsistent part is an Error naming it.
#include "components/checkpoint/sharded_state_io.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "error_of.h"
#include "temp_dir.h"

using namespace automodel;
using namespace automodel::checkpoint;
using automodel::testing::error_of;
using automodel::testing::TempDir;

namespace {

// Elements [offset, offset + n) of 0, 1, 2, ... as a tensor.
Tensor iota(int64_t offset, int64_t n) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(double(offset + i));
  return Tensor::from_values(v, {n});
}

// `parts` ranks each write their contiguous part of a 12-element "w.exp_avg" (and a whole 3-element "b.exp_avg").
void save_parts(const std::string& dir, int parts) {
  for (int r = 0; r < parts; ++r) {
    const int64_t n = 12 / parts;
    save_optimizer_shard(dir, r, parts, {{"w.exp_avg", iota(r * n, n)}, {"b.exp_avg", iota(0, 3)}},
                         {{"w.exp_avg", {r * n, n, 12}}}, {{"w", 5}, {"b", 5}}, {{"lr_scheduler_num_steps", 5}});
  }
}

}  // namespace

TEST(ShardedStateIo, ThreeRanksSavedTwoRanksAndOneProcessRead) {
  TempDir dir;
  save_parts(dir.str(), 3);
  // Two ranks of another run: each its half, gathered from the three saved parts.
  for (int r = 0; r < 2; ++r) {
    std::map<std::string, Tensor> state{{"w.exp_avg", Tensor::zeros({6})}, {"b.exp_avg", Tensor::zeros({3})}};
    const OptimizerStateFiles meta = load_optimizer_state_ranges(dir.str(), state, {{"w.exp_avg", {6 * r, 6, 12}}});
    EXPECT_EQ(state["w.exp_avg"].to_doubles(), iota(6 * r, 6).to_doubles());
    EXPECT_EQ(state["b.exp_avg"].to_doubles(), iota(0, 3).to_doubles());
    EXPECT_EQ(meta.step_counts.at("w"), 5);
    EXPECT_EQ(meta.extra.at("lr_scheduler_num_steps"), 5);
    EXPECT_FALSE(meta.extra.contains("shard"));
  }
  // One process: the whole tensor.
  std::map<std::string, Tensor> whole{{"w.exp_avg", Tensor::zeros({12})}, {"b.exp_avg", Tensor::zeros({3})}};
  load_optimizer_state_ranges(dir.str(), whole, {});
  EXPECT_EQ(whole["w.exp_avg"].to_doubles(), iota(0, 12).to_doubles());
}

TEST(ShardedStateIo, AWholeStateIsReadInRanges) {
  TempDir dir;
  save_optimizer_state(dir.str(), {{"w.exp_avg", iota(0, 12)}}, {{"w", 1}}, nlohmann::json::object());
  std::map<std::string, Tensor> state{{"w.exp_avg", Tensor::zeros({4})}};
  load_optimizer_state_ranges(dir.str(), state, {{"w.exp_avg", {8, 4, 12}}});
  EXPECT_EQ(state["w.exp_avg"].to_doubles(), iota(8, 4).to_doubles());
}

TEST(ShardedStateIo, StepCountsComeFromEveryPart) {
  // Each rank counts the parameters its shard touches: 'a' only on rank 0, 'c' only on rank 1.
  TempDir dir;
  save_optimizer_shard(dir.str(), 0, 2, {{"a.exp_avg", iota(0, 2)}}, {}, {{"a", 3}, {"b", 3}}, {});
  save_optimizer_shard(dir.str(), 1, 2, {{"c.exp_avg", iota(0, 2)}}, {}, {{"b", 3}, {"c", 3}}, {});
  std::map<std::string, Tensor> state{{"c.exp_avg", Tensor::zeros({2})}};
  const OptimizerStateFiles meta = load_optimizer_state_ranges(dir.str(), state, {{"c.exp_avg", {0, 2, 2}}});
  EXPECT_EQ(meta.step_counts, (std::map<std::string, int64_t>{{"a", 3}, {"b", 3}, {"c", 3}}));
}

// Two ranks write their stretches of a 10-element "w" (6 + 4) and rank 1 all of a 3-element "b"; three ranks of
// another run (and one process) read theirs.
TEST(ShardedStateIo, ModelWeightShardsReadInAnyCut) {
  TempDir dir;
  const std::string sharded = (dir.path() / "sharded").string();
  const Tensor w = Tensor::zeros({2, 5}), b = Tensor::zeros({3});
  save_model_shard(sharded, 0, {{"w", iota(0, 6)}});
  save_model_shard(sharded, 1, {{"w", iota(6, 4)}, {"b", iota(0, 3)}});
  save_model_shard_index(sharded, {{"w", w}, {"b", b}}, {{{"w", {0, 6, 10}}}, {{"w", {6, 4, 10}}, {"b", {0, 3, 3}}}});
  for (int64_t begin : {0, 4, 8}) {
    const int64_t n = std::min<int64_t>(4, 10 - begin);
    std::map<std::string, Tensor> mine{{"w", Tensor::zeros({n})}};
    load_model_shard(sharded, mine, {{"w", {begin, n, 10}}});
    EXPECT_EQ(mine["w"].to_doubles(), iota(begin, n).to_doubles());
  }
  std::map<std::string, Tensor> whole{{"w", Tensor::zeros({10})}, {"b", Tensor::zeros({3})}};
  load_model_shard(sharded, whole, {{"w", {0, 10, 10}}, {"b", {0, 3, 3}}});
  EXPECT_EQ(whole["w"].to_doubles(), iota(0, 10).to_doubles());
  EXPECT_EQ(whole["b"].to_doubles(), iota(0, 3).to_doubles());

  std::map<std::string, Tensor> wider{{"w", Tensor::zeros({12})}};
  EXPECT_NE(error_of([&] {
              load_model_shard(sharded, wider, {{"w", {0, 12, 12}}});
            })
                .find("has 10 elements in the "
                      "checkpoint, 12 in the model"),
            std::string::npos);
  std::map<std::string, Tensor> unknown{{"v", Tensor::zeros({2})}};
  EXPECT_NE(error_of([&] {
              load_model_shard(sharded, unknown, {{"v", {0, 2, 2}}});
            }).find("model weight 'v' has no entry"),
            std::string::npos);
  std::map<std::string, Tensor> in_bf16{{"b", Tensor::zeros({3}, DType::bf16)}};
  EXPECT_NE(error_of([&] {
              load_model_shard(sharded, in_bf16, {{"b", {0, 3, 3}}});
            }).find("was saved as F32"),
            std::string::npos);
  for (const char* damaged : {R"("text")", R"({"parameters": {"w": {"shape": [1e30], "parts": []}}})"}) {
    std::ofstream(dir.path() / "sharded" / "index.json") << damaged;
    std::map<std::string, Tensor> just_w{{"w", Tensor::zeros({10})}};
    EXPECT_NE(error_of([&] {
                load_model_shard(sharded, just_w, {{"w", {0, 10, 10}}});
              }).find(std::string(damaged).front() == '"' ? "no 'parameters' object" : "not a list of sizes"),
              std::string::npos)
        << damaged;
  }
  save_model_shard_index(sharded, {{"w", w}, {"b", b}}, {{{"w", {0, 6, 10}}}, {{"w", {6, 4, 10}}, {"b", {0, 3, 3}}}});
  std::filesystem::remove(dir.path() / "sharded" / "rank_1.safetensors");
  EXPECT_NE(error_of([&] {
              load_model_shard(sharded, whole, {{"w", {0, 10, 10}}, {"b", {0, 3, 3}}});
            }).find("rank_1.safetensors"),
            std::string::npos);
}

TEST(ShardedStateIo, MissingOrInconsistentPartsAreErrors) {
  TempDir dir;
  save_parts(dir.str(), 2);
  std::map<std::string, Tensor> state{{"w.exp_avg", Tensor::zeros({12})}, {"b.exp_avg", Tensor::zeros({3})}};
  std::map<std::string, Tensor> longer{{"w.exp_avg", Tensor::zeros({16})}, {"b.exp_avg", Tensor::zeros({3})}};
  EXPECT_NE(error_of([&] {
              load_optimizer_state_ranges(dir.str(), longer, {});
            }).find("optimizer state 'w.exp_avg' was saved with 12 elements of f32, this run has 16"),
            std::string::npos);
  std::map<std::string, Tensor> other{{"v.exp_avg", Tensor::zeros({12})}};
  EXPECT_NE(error_of([&] { load_optimizer_state_ranges(dir.str(), other, {}); }).find("has 'b.exp_avg'"),
            std::string::npos);
  {
    std::ofstream damaged(dir.path() / "rank_1" / "optimizer.json");
    damaged << R"({"step_counts": {}, "extra": {"shard": 1e8}})";
  }
  EXPECT_NE(error_of([&] {
              load_optimizer_state_ranges(dir.str(), state, {});
            }).find("the 'shard' entry is not an object with a 'ranges' object"),
            std::string::npos);
  std::filesystem::remove_all(dir.path() / "rank_1");
  EXPECT_NE(error_of([&] {
              load_optimizer_state_ranges(dir.str(), state, {});
            }).find("the optimizer state of rank 1 of 2 is missing"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              load_optimizer_state_ranges((dir.path() / "none").string(), state, {});
            }).find("no optimizer state"),
            std::string::npos);
}

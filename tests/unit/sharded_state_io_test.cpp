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

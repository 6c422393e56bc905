// fsdp2's parameter sharding (components/distributed/sharded_parameters.h) over whatever world runs the tests: one
// process under ctest's plain run, two ranks in the communicator_mpi test. Each rank holds 1/N of every buffer; the
// hooks gather a layer for its forward and backward and free it after; gradients end in the shards summed over the
// ranks.
#include "components/distributed/sharded_parameters.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace automodel;
using namespace automodel::distributed;

namespace {

Communicator& comm() { return world(); }

Tensor param(int64_t n, double first) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = first + double(i);
  Tensor t = Tensor::from_values(v, {n});
  t.set_requires_grad(true);
  return t;
}

// Embeddings, two decoder layers (sizes off any alignment), LM head.
struct Model {
  std::vector<nn::NamedParameters> lists;
  Model() {
    lists.push_back({{"model.embed_tokens.weight", param(100, 0)}});
    lists.push_back({{"model.layers.0.a", param(37, 1000)}, {"model.layers.0.b", param(21, 2000)}});
    lists.push_back({{"model.layers.1.a", param(37, 3000)}, {"model.layers.1.b", param(21, 4000)}});
    lists.push_back({{"lm_head.weight", param(50, 5000)}});
  }
  const Tensor& at(size_t list, size_t i) const { return lists[list][i].second; }
};

}  // namespace

TEST(ShardedParameters, EachRankHoldsItsPartAndLayersExistOnlyWhileTheyRun) {
  Model m;
  ShardedParameters sharded(comm(), m.lists);
  ASSERT_EQ(sharded.shards().size(), 4u);
  // Every parameter element lies in exactly one rank's shard: the ranges tile each parameter.
  int64_t mine = 0;
  for (const auto& [name, r] : sharded.parameter_ranges()) mine += r.numel;
  EXPECT_EQ(comm().all_reduce(mine), 100 + 2 * (37 + 21) + 50);
  // Released until a layer runs: its storage has no memory.
  const Tensor& layer1 = m.at(2, 1);
  EXPECT_FALSE(layer1.storage()->has_memory());
  sharded.begin_step(/*backward=*/true);
  EXPECT_EQ(m.at(0, 0).to_doubles()[99], 99.0);  // the embeddings, gathered for the step
  sharded.hooks()->before_forward(0);
  EXPECT_TRUE(m.at(1, 0).storage()->has_memory());
  EXPECT_EQ(m.at(1, 1).to_doubles()[20], 2020.0);
  sharded.hooks()->after_forward(0);
  EXPECT_FALSE(m.at(1, 0).storage()->has_memory());
  sharded.hooks()->before_forward(1);
  sharded.hooks()->after_forward(1);
  // Backward of layer 1: gathered again, with zeroed gradients; each rank adds (rank + 1) to every gradient.
  sharded.hooks()->before_backward(1);
  EXPECT_EQ(layer1.to_doubles()[0], 4000.0);
  for (const auto& [name, t] : m.lists[2]) {
    Tensor g = t.grad();
    for (int64_t i = 0; i < g.numel(); ++i) g.data<float>()[i] += float(comm().rank() + 1);
  }
  sharded.hooks()->after_backward(1);
  sharded.finish_backward(/*last_micro_batch=*/true);
  EXPECT_FALSE(layer1.storage()->has_memory());
  const float expected = float(comm().size() * (comm().size() + 1) / 2);
  const nn::FlatParameters& shard = sharded.shards()[2];
  for (const auto& slot : shard.slots)
    for (int64_t i = 0; i < slot.numel; ++i) EXPECT_EQ(shard.grad.data<float>()[slot.offset + i], expected);
  sharded.end_step();
  EXPECT_FALSE(m.at(0, 0).storage()->has_memory());
}

TEST(ShardedParameters, NewFullValuesReachTheShards) {
  Model m;
  ShardedParameters sharded(comm(), m.lists);
  sharded.gather_all();
  for (const auto& list : m.lists)
    for (const auto& [name, t] : list)
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = -1.0f;
  sharded.take_shards_from_full();
  sharded.release_all();
  sharded.gather_all();
  EXPECT_EQ(m.at(2, 0).to_doubles(), std::vector<double>(37, -1.0));
  sharded.release_all();
}

// With a slot alignment (AdamW8bit's block), every shard boundary lies on a multiple of it from the start of the
// parameter it cuts, and each shard's slot knows its whole parameter's size.
TEST(ShardedParameters, ShardsCutParametersAtWholeBlocks) {
  std::vector<nn::NamedParameters> lists{{{"model.layers.0.a", param(1000, 0)}, {"model.layers.0.b", param(3, 0)}}};
  ShardedParameters sharded(comm(), lists, nullptr, /*slot_alignment=*/64);
  for (const auto& [name, r] : sharded.parameter_ranges()) EXPECT_EQ(r.offset % 64, 0) << name;
  for (const auto& slot : sharded.shards()[0].slots) EXPECT_EQ(slot.whole, slot.name == "model.layers.0.a" ? 1000 : 3);
  std::map<std::string, int64_t> held;
  for (int r = 0; r < comm().size(); ++r)
    for (const auto& [name, range] : sharded.parameter_ranges(r)) held[name] += range.numel;
  EXPECT_EQ(held, (std::map<std::string, int64_t>{{"model.layers.0.a", 1000}, {"model.layers.0.b", 3}}));
}

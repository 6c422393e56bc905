// The collectives over whatever world runs the tests: one process under ctest's plain run, two ranks in the
// communicator_mpi test (mpirun -np 2 with --gtest_filter=Communicator.*), so each expectation is written for any
// number of ranks.
#include "components/distributed/communicator.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/dtype.h"
#include "error_of.h"

using namespace automodel;
using namespace automodel::distributed;

namespace {

Communicator& comm() { return world(); }

// 1 + 2 + ... + n: the sum of (rank + 1) over the ranks.
double rank_sum() { return comm().size() * (comm().size() + 1) / 2.0; }

}  // namespace

TEST(Communicator, AllReduceSumsEachSupportedDtype) {
  const double mine = comm().rank() + 1;
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    Tensor t = Tensor::from_values({mine, 2 * mine, -mine}, {3}, dt);
    comm().all_reduce(t);
    EXPECT_EQ(t.to_doubles(), (std::vector<double>{rank_sum(), 2 * rank_sum(), -rank_sum()})) << dtype_name(dt);
  }
  EXPECT_EQ(comm().all_reduce(int64_t(comm().rank() + 1)), int64_t(rank_sum()));
  EXPECT_EQ(comm().all_reduce(double(comm().rank()), ReduceOp::max), double(comm().size() - 1));
  Tensor b = Tensor::from_values({double(comm().rank())}, {1}, DType::bf16);
  comm().all_reduce(b, ReduceOp::max);
  EXPECT_EQ(b.item(), double(comm().size() - 1));
}

TEST(Communicator, Bf16PartialSumsRoundOnceEach) {
  // 1 + 2^-8 is not a bf16 value: each rank adds it in fp32 to the running sum, rounded to bf16 at every step.
  Tensor small = Tensor::from_values({comm().rank() == 0 ? 1.0 : 0.00390625}, {1}, DType::bf16);
  comm().all_reduce(small);
  float expected = 1.0f;
  for (int r = 1; r < comm().size(); ++r) expected = bf16_to_float(float_to_bf16(expected + 0.00390625f));
  EXPECT_EQ(small.item(), double(expected));
}

TEST(Communicator, AsyncAllReduceOfALargeBufferCompletes) {
  const int64_t n = 3 << 20;
  Tensor t = Tensor::full({n}, comm().rank() + 1.0);
  std::unique_ptr<Request> r = comm().all_reduce_async(t);
  while (!r->test()) {
  }
  r->wait();  // after completion, a no-op
  const float* p = t.data<float>();
  EXPECT_EQ(p[0], rank_sum());
  EXPECT_EQ(p[n - 1], rank_sum());
}

TEST(Communicator, BroadcastTakesTheRootsValues) {
  const int root = comm().size() - 1;
  Tensor t = Tensor::from_values({double(comm().rank()), 7.0}, {2}, DType::f64);
  comm().broadcast(t, root);
  EXPECT_EQ(t.to_doubles(), (std::vector<double>{double(root), 7.0}));
}

TEST(Communicator, AllGatherTextInRankOrder) {
  const std::vector<std::string> all = comm().all_gather_text(std::string(size_t(comm().rank()), 'x') + "r");
  ASSERT_EQ(int(all.size()), comm().size());
  for (int r = 0; r < comm().size(); ++r) EXPECT_EQ(all[size_t(r)], std::string(size_t(r), 'x') + "r");
  comm().barrier();
}

TEST(Communicator, LocalSizeCountsTheRanksOnThisMachine) {
  EXPECT_GE(comm().local_size(), 1);
  EXPECT_LE(comm().local_size(), comm().size());
  EXPECT_EQ(comm().describe(), "rank " + std::to_string(comm().rank()) + " of " + std::to_string(comm().size()));
}

TEST(Communicator, UnsupportedDtypeIsAnError) {
  if (comm().size() == 1) GTEST_SKIP() << "a world of one reduces nothing";
  Tensor t = Tensor::zeros({2}, DType::i32);
  EXPECT_NE(
      automodel::testing::error_of([&] { comm().all_reduce(t); }).find("all_reduce of i32 tensors is not supported"),
      std::string::npos);
}

TEST(Communicator, AllGatherAndReduceScatterOfShards) {
  const int n = comm().size(), r = comm().rank();
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor shard = Tensor::from_values({double(r), double(10 + r)}, {2}, dt);
    Tensor full = Tensor::zeros({2 * n}, dt);
    comm().all_gather_async(shard, full)->wait();
    std::vector<double> expected;
    for (int k = 0; k < n; ++k) expected.insert(expected.end(), {double(k), double(10 + k)});
    EXPECT_EQ(full.to_doubles(), expected) << dtype_name(dt);
    // Every rank contributes full = [1, 2, ..., 2n] * (rank + 1): rank r's shard is its two elements times sum(k+1).
    std::vector<double> mine;
    for (int i = 0; i < 2 * n; ++i) mine.push_back(double(i + 1) * (r + 1));
    Tensor out = Tensor::zeros({2}, dt);
    comm().reduce_scatter_async(Tensor::from_values(mine, {2 * n}, dt), out)->wait();
    EXPECT_EQ(out.to_doubles(), (std::vector<double>{(2 * r + 1) * rank_sum(), (2 * r + 2) * rank_sum()}))
        << dtype_name(dt);
  }
}

TEST(Communicator, SplitGroupsTheRanksOfOneColor) {
  const int r = comm().rank();
  // Everyone in one group, ranked in reverse; then every rank alone.
  std::unique_ptr<Communicator> all = comm().split(0, comm().size() - 1 - r);
  EXPECT_EQ(all->size(), comm().size());
  EXPECT_EQ(all->rank(), comm().size() - 1 - r);
  EXPECT_EQ(all->all_reduce(int64_t(1)), int64_t(comm().size()));
  std::unique_ptr<Communicator> alone = comm().split(r, 0);
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->all_reduce(int64_t(r + 1)), int64_t(r + 1));
}

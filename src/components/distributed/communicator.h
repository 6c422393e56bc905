#pragma once
// The collectives data parallel needs, behind one seam: MPI on the CPU (mpi_communicator.cpp), NCCL beside it for the
// GPU backend later. A process not started by an MPI launcher is a world of one, in which every collective is the
// identity and MPI is never initialised.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace automodel::distributed {

enum class ReduceOp { sum, max };

// A collective in flight: its buffers must stay untouched until wait() returns.
class Request {
 public:
  virtual ~Request() = default;
  // Lets the collective progress; true once it has completed.
  virtual bool test() = 0;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The ranks of this job on this machine (they share its cores).
  virtual int local_size() const = 0;
  // "rank r of n" for messages.
  std::string describe() const;

  // In place over a contiguous f32, f64, bf16 (each partial sum computed in fp32 and rounded to bf16) or i64 tensor,
  // with the same result on every rank.
  virtual std::unique_ptr<Request> all_reduce_async(const Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) { all_reduce_async(t, op)->wait(); }
  // Sharded data parallel: `full` (contiguous, size() x the numel of `shard`) gets every rank's shard in rank order;
  // `shard` gets this rank's part of the sum of every rank's `full` (summed as all_reduce sums). Same dtype.
  virtual std::unique_ptr<Request> all_gather_async(const Tensor& shard, const Tensor& full) = 0;
  virtual std::unique_ptr<Request> reduce_scatter_async(const Tensor& full, const Tensor& shard) = 0;
  // A scalar reduced over the ranks.
  double all_reduce(double v, ReduceOp op = ReduceOp::sum);
  int64_t all_reduce(int64_t v, ReduceOp op = ReduceOp::sum);
  // t (contiguous, same shape and dtype on every rank) takes root's values.
  virtual void broadcast(const Tensor& t, int root) = 0;
  // Every rank's bytes of `text`, in rank order (for checking that the ranks agree).
  virtual std::vector<std::string> all_gather_text(const std::string& text) = 0;
  virtual void barrier() = 0;
  // The ranks that pass the same `color`, as a communicator of their own, ranked by `key` (MPI_Comm_split); every
  // rank calls it.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  // Ends the whole job now (a rank that cannot go on would otherwise leave the others waiting in a collective).
  [[noreturn]] void abort(int exit_code);
  // How long a collective may wait for the other ranks before it fails with an Error (a rank hung or died).
  virtual void set_timeout(double seconds) { (void)seconds; }

 protected:
  virtual void abort_job(int exit_code) = 0;
};

// True when an MPI launcher (mpirun, srun --mpi=pmix) started this process.
bool launched_by_mpi();

// The job's communicator: MPI's world when launched by MPI (initialised on the first call), else a world of one.
Communicator& world();

// A world of one, for tests and for single-process runs.
std::unique_ptr<Communicator> single_process_communicator();

}  // namespace automodel::distributed

// The Communicator over MPI (OpenMPI on Debian). MPI is initialised on first use, only in a process an MPI launcher
// started, with MPI_THREAD_FUNNELED: only the main thread calls MPI (the kernels' OpenMP threads never do).
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "components/distributed/communicator.h"
#include "core/error.h"

namespace automodel::distributed {

namespace {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string(call) + " failed: " + std::string(text, size_t(len)), "MPI",
              "check that every rank runs the same recipe and that the launcher started all of them");
}

// MPI has no bf16: a 2-byte type and a sum that adds in fp32 and rounds to bf16.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const bf16*>(in);
  auto* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const bf16*>(in);
  auto* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i)
    if (bf16_to_float(a[i]) > bf16_to_float(b[i])) b[i] = a[i];
}

struct MpiTypes {
  MPI_Datatype bf16_type = MPI_DATATYPE_NULL;
  MPI_Op bf16_sum_op = MPI_OP_NULL, bf16_max_op = MPI_OP_NULL;
};

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", seconds);
  return text;
}

// Waits for `requests` (polling: MPI_Wait would block past any deadline), failing after `timeout_seconds`.
void wait_all(std::vector<MPI_Request>& requests, double timeout_seconds, const char* what) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds);
  for (uint64_t polls = 0;; ++polls) {
    int done = 0;
    check_mpi(MPI_Testall(int(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall");
    if (done) return;
    if (polls % 4096 == 4095 && Clock::now() > deadline)
      throw Error("waited more than " + seconds_text(timeout_seconds) + " (dist_env.timeout_minutes)" + " in " + what +
                      ": another rank is hung or has died",
                  "distributed job",
                  "see the other ranks' output; if steps are legitimately that slow, raise dist_env.timeout_minutes");
  }
}

// Several requests for one collective: a buffer longer than an MPI count (int) is reduced in pieces.
struct MpiRequest : Request {
  std::vector<MPI_Request> requests;
  double timeout_seconds = 0;
  bool test() override {
    int done = 0;
    check_mpi(MPI_Testall(int(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall");
    return done != 0;
  }
  void wait() override { wait_all(requests, timeout_seconds, "an all-reduce"); }
};

class MpiCommunicator : public Communicator {
 public:
  // The world, initialising MPI.
  MpiCommunicator() {
    int provided = 0;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    MPI_Comm world;
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &world), "MPI_Comm_dup");
    init(world);
    owns_mpi_ = true;
  }
  // A communicator split from another (MPI already initialised).
  explicit MpiCommunicator(MPI_Comm comm, double timeout_seconds) : timeout_seconds_(timeout_seconds) { init(comm); }

  void init(MPI_Comm comm) {
    comm_ = comm;
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm local;
    check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local), "MPI_Comm_split_type");
    MPI_Comm_size(local, &local_size_);
    MPI_Comm_free(&local);
    MPI_Type_contiguous(2, MPI_BYTE, &types_.bf16_type);
    MPI_Type_commit(&types_.bf16_type);
    MPI_Op_create(bf16_sum, 1, &types_.bf16_sum_op);
    MPI_Op_create(bf16_max, 1, &types_.bf16_max_op);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Op_free(&types_.bf16_sum_op);
    MPI_Op_free(&types_.bf16_max_op);
    MPI_Type_free(&types_.bf16_type);
    MPI_Comm_free(&comm_);
    if (owns_mpi_) MPI_Finalize();
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm part;
    check_mpi(MPI_Comm_split(comm_, color, key, &part), "MPI_Comm_split");
    return std::make_unique<MpiCommunicator>(part, timeout_seconds_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_size() const override { return local_size_; }

  std::unique_ptr<Request> all_reduce_async(const Tensor& t, ReduceOp op) override {
    AM_CHECK(t.is_contiguous(), "all_reduce: the tensor must be contiguous");
    auto [type, mpi_op] = type_and_op(t.dtype(), op);
    auto request = std::make_unique<MpiRequest>();
    request->timeout_seconds = timeout_seconds_;
    char* data = static_cast<char*>(t.raw_data());
    const size_t element = dtype_size(t.dtype());
    for (int64_t done = 0, n = t.numel(); done < n;) {
      const int count = int(std::min<int64_t>(n - done, INT_MAX));
      MPI_Request r;
      check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data + size_t(done) * element, count, type, mpi_op, comm_, &r),
                "MPI_Iallreduce");
      request->requests.push_back(r);
      done += count;
    }
    return request;
  }

  std::unique_ptr<Request> all_gather_async(const Tensor& shard, const Tensor& full) override {
    check_shards(shard, full, "all_gather");
    auto request = std::make_unique<MpiRequest>();
    request->timeout_seconds = timeout_seconds_;
    const int64_t bytes = int64_t(shard.nbytes());
    AM_CHECK(bytes <= INT_MAX, "all_gather: a shard of ", bytes, " bytes is larger than one MPI message");
    check_mpi(MPI_Iallgather(shard.raw_data(), int(bytes), MPI_BYTE, full.raw_data(), int(bytes), MPI_BYTE, comm_,
                             &request->requests.emplace_back()),
              "MPI_Iallgather");
    return request;
  }

  std::unique_ptr<Request> reduce_scatter_async(const Tensor& full, const Tensor& shard) override {
    check_shards(shard, full, "reduce_scatter");
    auto [type, op] = type_and_op(shard.dtype(), ReduceOp::sum);
    AM_CHECK(shard.numel() <= INT_MAX, "reduce_scatter: a shard of ", shard.numel(),
             " elements is larger than one MPI message");
    auto request = std::make_unique<MpiRequest>();
    request->timeout_seconds = timeout_seconds_;
    check_mpi(MPI_Ireduce_scatter_block(full.raw_data(), shard.raw_data(), int(shard.numel()), type, op, comm_,
                                        &request->requests.emplace_back()),
              "MPI_Ireduce_scatter_block");
    return request;
  }

  void broadcast(const Tensor& t, int root) override {
    AM_CHECK(t.is_contiguous(), "broadcast: the tensor must be contiguous");
    char* data = static_cast<char*>(t.raw_data());
    std::vector<MPI_Request> requests;
    for (size_t done = 0, n = t.nbytes(); done < n;) {
      const int count = int(std::min<size_t>(n - done, INT_MAX));
      check_mpi(MPI_Ibcast(data + done, count, MPI_BYTE, root, comm_, &requests.emplace_back()), "MPI_Ibcast");
      done += size_t(count);
    }
    wait_all(requests, timeout_seconds_, "a broadcast");
  }

  std::vector<std::string> all_gather_text(const std::string& text) override {
    const int len = int(text.size());
    std::vector<int> lens(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
    std::vector<MPI_Request> requests(1);
    check_mpi(MPI_Iallgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_, &requests[0]), "MPI_Iallgather");
    wait_all(requests, timeout_seconds_, "an all-gather");
    int total = 0;
    for (int r = 0; r < size_; ++r) offsets[size_t(r)] = std::exchange(total, total + lens[size_t(r)]);
    std::string all(size_t(total), '\0');
    check_mpi(MPI_Iallgatherv(text.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, comm_,
                              &requests[0]),
              "MPI_Iallgatherv");
    wait_all(requests, timeout_seconds_, "an all-gather");
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(size_t(offsets[size_t(r)]), size_t(lens[size_t(r)])));
    return out;
  }

  void barrier() override {
    std::vector<MPI_Request> requests(1);
    check_mpi(MPI_Ibarrier(comm_, &requests[0]), "MPI_Ibarrier");
    wait_all(requests, timeout_seconds_, "a barrier");
  }

  void set_timeout(double seconds) override { timeout_seconds_ = seconds; }

  void abort_job(int exit_code) override { MPI_Abort(comm_, exit_code); }

 private:
  void check_shards(const Tensor& shard, const Tensor& full, const char* what) const {
    AM_CHECK(shard.is_contiguous() && full.is_contiguous() && shard.dtype() == full.dtype() &&
                 full.numel() == shard.numel() * size_,
             what, ": the full tensor must hold ", size_, " contiguous shards of the shard's dtype");
  }

  std::pair<MPI_Datatype, MPI_Op> type_and_op(DType dtype, ReduceOp op) const {
    const bool sum = op == ReduceOp::sum;
    switch (dtype) {
      case DType::f32: return {MPI_FLOAT, sum ? MPI_SUM : MPI_MAX};
      case DType::f64: return {MPI_DOUBLE, sum ? MPI_SUM : MPI_MAX};
      case DType::i64: return {MPI_INT64_T, sum ? MPI_SUM : MPI_MAX};
      case DType::bf16: return {types_.bf16_type, sum ? types_.bf16_sum_op : types_.bf16_max_op};
      default: break;
    }
    throw Error(std::string("all_reduce of ") + dtype_name(dtype) + " tensors is not supported", "MPI",
                "reduce f32, f64, bf16 or i64 tensors");
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_size_ = 1;
  double timeout_seconds_ = 30 * 60;  // torch.distributed's default
  bool owns_mpi_ = false;             // the world: finalises MPI when destroyed
  MpiTypes types_;
};

}  // namespace

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

Communicator& world() {
  // Built on first use and kept to the end of the process: MPI_Finalize runs from the static's destructor.
  static std::unique_ptr<Communicator> instance =
      launched_by_mpi() ? std::unique_ptr<Communicator>(std::make_unique<MpiCommunicator>())
                        : single_process_communicator();
  return *instance;
}

}  // namespace automodel::distributed

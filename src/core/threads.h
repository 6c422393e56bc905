#pragma once
// One thread count for the whole process: OpenMP, OpenBLAS (OpenMP build) and oneDNN (OpenMP
// runtime) all follow omp_set_num_threads, so setting it here sets it everywhere.
#include <cstdint>

namespace automodel {

// n <= 0: AUTOMODEL_NUM_THREADS, else OMP_NUM_THREADS, else the cores this process may run on shared among the
// `processes_per_machine` processes of a job that run on this machine (at least one thread each).
void set_num_threads(int n, int processes_per_machine = 1);
int num_threads();
int64_t omp_threads_in_team();
int64_t omp_thread_index();

// Runs fn(begin, end) over [0, n) split into contiguous chunks across threads; serial when the
// work is smaller than `grain` items.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  if (n <= grain || num_threads() == 1) {
    fn(int64_t(0), n);
    return;
  }
#pragma omp parallel
  {
    int64_t nt = omp_threads_in_team();
    int64_t t = omp_thread_index();
    int64_t chunk = (n + nt - 1) / nt;
    int64_t b = t * chunk, e = b + chunk < n ? b + chunk : n;
    if (b < e) fn(b, e);
  }
}

}  // namespace automodel

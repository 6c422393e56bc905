#include "core/threads.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

namespace automodel {

static int env_threads(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  try {
    return std::stoi(v);
  } catch (...) {
    return 0;
  }
}

void set_num_threads(int n, int processes_per_machine) {
  if (n <= 0) n = env_threads("AUTOMODEL_NUM_THREADS");
  if (n <= 0) n = env_threads("OMP_NUM_THREADS");
  if (n <= 0) {
    cpu_set_t allowed;
    n = sched_getaffinity(0, sizeof(allowed), &allowed) == 0 ? CPU_COUNT(&allowed)
                                                             : int(std::thread::hardware_concurrency());
    n /= std::max(1, processes_per_machine);
  }
  if (n <= 0) n = 1;
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }
int64_t omp_threads_in_team() { return omp_get_num_threads(); }
int64_t omp_thread_index() { return omp_get_thread_num(); }

}  // namespace automodel

/* The MPI program the cluster harness tests launch (tests/e2e/test_cluster_harness.py).
 *
 * Each rank prints where it runs, then two allreduces: one int (the latency path) and 1 Mi doubles (large enough
 * that a BTL takes its bulk path, as a gradient allreduce does). With --wait-for-term DIR the ranks then wait for
 * SIGTERM, write DIR/sigterm.<rank> and exit 0: the way a preempted training run saves and leaves. */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { kBulkCount = 1 << 20 };

static volatile sig_atomic_t got_term = 0;

static void on_term(int signo) {
  (void)signo;
  got_term = 1;
}

static void describe_netns(char* out, size_t size) {
  ssize_t n = readlink("/proc/self/ns/net", out, size - 1);
  if (n < 0) n = 0;
  out[n] = '\0';
}

int main(int argc, char** argv) {
  const char* marker_dir = NULL;
  if (argc == 3 && strcmp(argv[1], "--wait-for-term") == 0) {
    marker_dir = argv[2];
  } else if (argc != 1) {
    fprintf(stderr, "usage: %s [--wait-for-term DIR]\n", argv[0]);
    return 2;
  }
  /* Installed and blocked before MPI_Init: a signal that comes early waits for sigsuspend below instead of taking the
   * default action, and none can slip in between testing the flag and suspending. */
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_term;
  sigaction(SIGTERM, &action, NULL);
  sigset_t term_only, before;
  sigemptyset(&term_only);
  sigaddset(&term_only, SIGTERM);
  sigprocmask(SIG_BLOCK, &term_only, &before);

  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  char host[256] = "", netns[64] = "";
  gethostname(host, sizeof host - 1);
  describe_netns(netns, sizeof netns);
  printf("rank %d size %d host %s netns %s\n", rank, size, host, netns);

  int contribution = rank + 1, sum = 0;
  MPI_Allreduce(&contribution, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  double* bulk = malloc(sizeof(double) * kBulkCount);
  double* bulk_sum = malloc(sizeof(double) * kBulkCount);
  if (bulk == NULL || bulk_sum == NULL) MPI_Abort(MPI_COMM_WORLD, 3);
  for (int i = 0; i < kBulkCount; ++i) bulk[i] = (double)(rank + 1) * (i % 7);
  MPI_Allreduce(bulk, bulk_sum, kBulkCount, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  /* Every element must be sum * (i % 7); small integers are exact in doubles. */
  int bulk_ok = 1;
  for (int i = 0; i < kBulkCount; ++i) bulk_ok &= bulk_sum[i] == (double)sum * (i % 7);
  printf("rank %d sum %d bulk %s\n", rank, sum, bulk_ok ? "ok" : "wrong");
  fflush(stdout);
  free(bulk);
  free(bulk_sum);

  if (marker_dir != NULL) {
    char path[4096];
    snprintf(path, sizeof path, "%s/ready.%d", marker_dir, rank);
    FILE* ready = fopen(path, "w");
    if (ready != NULL) fclose(ready);
    sigset_t waiting = before;
    sigdelset(&waiting, SIGTERM);
    while (!got_term) sigsuspend(&waiting);
    snprintf(path, sizeof path, "%s/sigterm.%d", marker_dir, rank);
    FILE* marker = fopen(path, "w");
    if (marker == NULL) return 4;
    fprintf(marker, "rank %d got SIGTERM\n", rank);
    fclose(marker);
    printf("rank %d got SIGTERM\n", rank);
    fflush(stdout);
  }
  MPI_Finalize();
  return 0;
}

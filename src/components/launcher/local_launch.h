#pragma once
// torchrun's --nproc-per-node on MPI: the command that starts N ranks of this program on this machine under mpirun,
// and the exec that replaces the current process with it.
#include <string>
#include <vector>

namespace automodel::launcher {

// mpirun's argv for `nproc` ranks of `program` with `program_args`, on a machine with `cores` cores: no binding (each
// rank sets its own thread count), oversubscription allowed past the core count.
std::vector<std::string> local_launch_command(int nproc, const std::string& program,
                                              const std::vector<std::string>& program_args, int cores);

// Replaces this process with local_launch_command for this executable; returns only by throwing an Error (mpirun
// missing, refused as root, or nproc < 1).
[[noreturn]] void exec_local_ranks(int nproc, const std::vector<std::string>& program_args);

}  // namespace automodel::launcher

#include "components/launcher/local_launch.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "core/error.h"

namespace automodel::launcher {

std::vector<std::string> local_launch_command(int nproc, const std::string& program,
                                              const std::vector<std::string>& program_args, int cores) {
  std::vector<std::string> argv = {"mpirun", "-np", std::to_string(nproc), "--bind-to", "none"};
  if (nproc > cores) argv.push_back("--oversubscribe");
  argv.push_back(program);
  argv.insert(argv.end(), program_args.begin(), program_args.end());
  return argv;
}

void exec_local_ranks(int nproc, const std::vector<std::string>& program_args) {
  if (nproc < 1)
    throw Error("--nproc-per-node must be >= 1, got " + std::to_string(nproc), "automodel", "e.g. --nproc-per-node 2");
  if (geteuid() == 0 && std::getenv("OMPI_ALLOW_RUN_AS_ROOT") == nullptr)
    throw Error("mpirun refuses to start ranks as root", "automodel --nproc-per-node",
                "run as a regular user, or set OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 if "
                "running as root is intended (e.g. in a container)");
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::vector<std::string> argv =
      local_launch_command(nproc, self, program_args, int(std::thread::hardware_concurrency()));
  std::vector<char*> c_argv;
  for (const std::string& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  std::fflush(nullptr);
  execvp(c_argv[0], c_argv.data());
  throw Error(std::string("cannot start mpirun: ") + std::strerror(errno), "automodel --nproc-per-node",
              "install OpenMPI (Debian: apt-get install openmpi-bin) or start the ranks with your own launcher");
}

}  // namespace automodel::launcher

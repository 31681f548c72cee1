// MPI for the CLI's parallel commands: initialised only when a command runs under mpirun.
#include <switchyard/error.h>

#include <cstdlib>

#include "cli/commands.h"

#ifdef SWITCHYARD_HAVE_MPI
#include <mpi.h>

#include "dist/mpi_communicator.h"
#endif

namespace switchyard::cli {
namespace {

bool launched_by_mpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(name)) return true;
  return false;
}

#ifdef SWITCHYARD_HAVE_MPI
// MPI from the first open_world to the end of the program.
struct MpiSession {
  MpiSession() {
    int provided = 0;
    // The watchdog thread may call MPI_Abort while the main thread waits in a collective.
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  }
  ~MpiSession() { MPI_Finalize(); }
};
#endif

}  // namespace

std::unique_ptr<dist::Communicator> open_world(bool required) {
  if (!required && !launched_by_mpirun()) return nullptr;
#ifdef SWITCHYARD_HAVE_MPI
  static MpiSession session;
  return std::make_unique<dist::MpiCommunicator>(MPI_COMM_WORLD);
#else
  if (required)
    fail(
        "--expert-parallel: this switchyard was built without MPI (install libopenmpi-dev and "
        "rebuild with SWITCHYARD_MPI=ON)");
  fail("this process runs under mpirun but switchyard was built without MPI");
#endif
}

}  // namespace switchyard::cli

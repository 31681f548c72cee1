#include "dist/mpi_communicator.h"

#include <switchyard/error.h>

#include <climits>
#include <cstdlib>
#include <vector>

namespace switchyard::dist {
namespace {

void check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  fail("mpi: {} failed: {}", what, std::string(text, size_t(len)));
}

// MPI counts are int: a byte count past INT_MAX is an error, not a wrap-around.
std::vector<int> bytes_of(const int64_t* counts, int n, size_t elem_bytes, const char* what) {
  std::vector<int> out(static_cast<size_t>(n));
  for (int q = 0; q < n; ++q) {
    const int64_t b = counts[q] * int64_t(elem_bytes);
    if (counts[q] < 0 || b > INT_MAX)
      fail("mpi: {} of {} elements of {} bytes for rank {} does not fit MPI's int counts", what,
           counts[q], elem_bytes, q);
    out[size_t(q)] = int(b);
  }
  return out;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  // Errors come back as codes (and then as switchyard::Error), not as an abort with no context.
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  for (auto& [handle, request] : pending_) MPI_Wait(&request, MPI_STATUS_IGNORE);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_WORLD && !finalized) MPI_Comm_free(&comm_);
}

void MpiCommunicator::alltoall(const int64_t* send, int64_t* recv) {
  check(MPI_Alltoall(send, 1, MPI_INT64_T, recv, 1, MPI_INT64_T, comm_), "MPI_Alltoall");
}

void MpiCommunicator::alltoallv(const void* send, const int64_t* send_counts,
                                const int64_t* send_displs, void* recv, const int64_t* recv_counts,
                                const int64_t* recv_displs, size_t elem_bytes) {
  const std::vector<int> sc = bytes_of(send_counts, size_, elem_bytes, "a send");
  const std::vector<int> sd = bytes_of(send_displs, size_, elem_bytes, "a send offset");
  const std::vector<int> rc = bytes_of(recv_counts, size_, elem_bytes, "a receive");
  const std::vector<int> rd = bytes_of(recv_displs, size_, elem_bytes, "a receive offset");
  check(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE,
                      comm_),
        "MPI_Alltoallv");
}

void MpiCommunicator::allgather(int64_t value, int64_t* recv) {
  check(MPI_Allgather(&value, 1, MPI_INT64_T, recv, 1, MPI_INT64_T, comm_), "MPI_Allgather");
}

void MpiCommunicator::allgatherv(const void* send, int64_t count, void* recv,
                                 const int64_t* recv_counts, const int64_t* recv_displs,
                                 size_t elem_bytes) {
  const int64_t bytes = count * int64_t(elem_bytes);
  if (count < 0 || bytes > INT_MAX)
    fail("mpi: an all-gather of {} elements of {} bytes does not fit MPI's int counts", count,
         elem_bytes);
  const std::vector<int> rc = bytes_of(recv_counts, size_, elem_bytes, "a receive");
  const std::vector<int> rd = bytes_of(recv_displs, size_, elem_bytes, "a receive offset");
  check(MPI_Allgatherv(send, int(bytes), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, comm_),
        "MPI_Allgatherv");
}

void MpiCommunicator::allreduce_sum(float* data, int64_t n) {
  if (n > INT_MAX) fail("mpi: an all-reduce of {} floats does not fit MPI's int count", n);
  check(MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_FLOAT, MPI_SUM, comm_), "MPI_Allreduce");
}

void MpiCommunicator::allreduce_sum(double* data, int64_t n) {
  if (n > INT_MAX) fail("mpi: an all-reduce of {} doubles does not fit MPI's int count", n);
  check(MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_DOUBLE, MPI_SUM, comm_), "MPI_Allreduce");
}

int64_t MpiCommunicator::start_allreduce_sum(float* data, int64_t n) {
  if (n > INT_MAX) fail("mpi: an all-reduce of {} floats does not fit MPI's int count", n);
  MPI_Request request;
  check(MPI_Iallreduce(MPI_IN_PLACE, data, int(n), MPI_FLOAT, MPI_SUM, comm_, &request),
        "MPI_Iallreduce");
  pending_[next_handle_] = request;
  return next_handle_++;
}

void MpiCommunicator::wait(int64_t handle) {
  auto it = pending_.find(handle);
  if (it == pending_.end()) fail("mpi: wait on unknown all-reduce handle {}", handle);
  MPI_Request request = it->second;
  pending_.erase(it);
  check(MPI_Wait(&request, MPI_STATUS_IGNORE), "MPI_Wait");
}

void MpiCommunicator::progress() {
  for (auto& entry : pending_) {
    int done = 0;
    check(MPI_Test(&entry.second, &done, MPI_STATUS_IGNORE), "MPI_Test");
  }
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  MPI_Comm sub;
  check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(sub);
}

void MpiCommunicator::abort(int code) {
  MPI_Abort(comm_, code);
  std::abort();
}

}  // namespace switchyard::dist

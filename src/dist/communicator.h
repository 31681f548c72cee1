// The collectives expert and data parallelism need, behind an interface: MPI today
// (src/dist/mpi_communicator.h, built where OpenMPI is found), NCCL later. Counts and offsets are
// in elements of `elem_bytes` each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace switchyard::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // recv[q] = send[rank()] of rank q: one count per rank each way.
  virtual void alltoall(const int64_t* send, int64_t* recv) = 0;
  // Rank q receives send_counts[q] elements from send + send_displs[q]; this rank receives
  // recv_counts[q] elements from rank q at recv + recv_displs[q].
  virtual void alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                         void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                         size_t elem_bytes) = 0;
  // recv (size()) = every rank's value, in rank order.
  virtual void allgather(int64_t value, int64_t* recv) = 0;
  // Every rank's `count` elements, concatenated in rank order into recv (Σ recv_counts); rank q's
  // at recv_displs[q].
  virtual void allgatherv(const void* send, int64_t count, void* recv, const int64_t* recv_counts,
                          const int64_t* recv_displs, size_t elem_bytes) = 0;
  // data (n) = Σ over ranks of data.
  virtual void allreduce_sum(float* data, int64_t n) = 0;
  virtual void allreduce_sum(double* data, int64_t n) = 0;
  // Non-blocking all-reduce (sum) of data (n) in place: returns a handle for wait(); data must
  // stay put until then. progress() lets outstanding ones advance (MPI progresses inside calls).
  virtual int64_t start_allreduce_sum(float* data, int64_t n) = 0;
  virtual void wait(int64_t handle) = 0;
  virtual void progress() = 0;
  // The ranks with the same colour, ordered by key (MPI_Comm_split): a sub-group's communicator.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  // Ends every rank of the job now (a hang or a failure that the others cannot see).
  [[noreturn]] virtual void abort(int code) = 0;
};

}  // namespace switchyard::dist

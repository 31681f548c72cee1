// The collectives expert and data parallelism need, behind an interface: MPI today
// (src/dist/mpi_communicator.h, built where OpenMPI is found), NCCL later. Counts and offsets are
// in elements of `elem_bytes` each.
#pragma once

#include <cstddef>
#include <cstdint>

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
  // data (n) = Σ over ranks of data.
  virtual void allreduce_sum(float* data, int64_t n) = 0;
};

}  // namespace switchyard::dist

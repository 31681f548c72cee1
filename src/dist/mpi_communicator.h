// Communicator over an MPI communicator (MPI_COMM_WORLD by default). MPI_Init is the caller's.
#pragma once

#include <mpi.h>

#include "dist/communicator.h"

namespace switchyard::dist {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void alltoall(const int64_t* send, int64_t* recv) override;
  void alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                 void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                 size_t elem_bytes) override;
  void allreduce_sum(float* data, int64_t n) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace switchyard::dist

// Communicator over an MPI communicator (MPI_COMM_WORLD by default). MPI_Init is the caller's.
#pragma once

#include <mpi.h>

#include <map>

#include "dist/communicator.h"

namespace switchyard::dist {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of a communicator other than MPI_COMM_WORLD (frees it).
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void alltoall(const int64_t* send, int64_t* recv) override;
  void alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                 void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                 size_t elem_bytes) override;
  void allgather(int64_t value, int64_t* recv) override;
  void allgatherv(const void* send, int64_t count, void* recv, const int64_t* recv_counts,
                  const int64_t* recv_displs, size_t elem_bytes) override;
  void allreduce_sum(float* data, int64_t n) override;
  void allreduce_sum(double* data, int64_t n) override;
  int64_t start_allreduce_sum(float* data, int64_t n) override;
  void wait(int64_t handle) override;
  void progress() override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::map<int64_t, MPI_Request> pending_;
  int64_t next_handle_ = 0;
};

}  // namespace switchyard::dist

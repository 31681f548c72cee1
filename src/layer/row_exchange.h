// One deduplicating exchange stage of expert parallelism over a communicator: rows
// (token, destination rank, expert, weight) become each token once per destination rank plus a
// 12-byte entry per row (MPI_Alltoall of the token and row counts, MPI_Alltoallv of the entries
// and the token rows), and the way back: per-token partial sums and per-row values. The flat
// dispatcher is one stage over the expert-parallel group; the hierarchical one is two (across
// nodes to the same local rank, then inside the node).
#pragma once

#include <switchyard/moe_layer.h>

#include <cstdint>
#include <vector>

#include "dist/communicator.h"

namespace switchyard::layer {

class RowExchange {
 public:
  // What travels with each row: its expert, its token among those the source sent to this rank,
  // its combine weight.
  struct RowMeta {
    int32_t expert = 0;
    int32_t slot = 0;
    float weight = 0;
  };
  using Traffic = MoECache::ExpertParallel::Traffic;

  // Rows r < rows, already ordered by destination: token[r] indexes this rank's `tokens` token
  // rows, dest[r] in [0, comm.size()). Exchanges counts and entries; `seconds` gains the time.
  void route(dist::Communicator& comm, const int32_t* token, const int32_t* dest,
             const int32_t* expert, const float* weight, int64_t rows, int64_t tokens,
             double& seconds);
  // After route(): the rows received (in arrival order: by source rank, then as sent), each with
  // its token's index among the tokens received.
  const std::vector<RowMeta>& received_rows() const { return recv_meta_; }
  const std::vector<int64_t>& received_slot() const { return recv_slot_; }
  int64_t received_tokens() const { return recv_tokens_; }
  int64_t sent_rows() const { return int64_t(sent_meta_.size()); }

  // Token rows (this rank's tokens, d) -> (received tokens, d).
  void send_tokens(dist::Communicator& comm, const float* x, int64_t d, std::vector<float>& out,
                   double& seconds) const;
  // Per received token (received tokens, d) -> added into acc (this rank's tokens, d).
  void return_tokens(dist::Communicator& comm, const float* partial, int64_t d, float* acc,
                     double& seconds) const;
  // A value per received row -> a value per routed row (route()'s order).
  void return_rows(dist::Communicator& comm, const float* values, float* out,
                   double& seconds) const;

  // Bytes to and from other ranks of: the entries + token rows (dispatch), token rows (the same
  // direction again or back), per-row floats back.
  void count_dispatch(int rank, int64_t d, Traffic& t) const;
  void count_tokens_back(int rank, int64_t d, Traffic& t) const;
  void count_tokens_forward(int rank, int64_t d, Traffic& t) const;
  void count_rows_back(int rank, Traffic& t) const;

 private:
  std::vector<int64_t> send_counts_, send_displs_, recv_counts_, recv_displs_;  // tokens
  std::vector<int64_t> meta_send_counts_, meta_send_displs_;                    // rows
  std::vector<int64_t> meta_recv_counts_, meta_recv_displs_;
  std::vector<int32_t> sent_token_;  // (tokens sent) by destination
  std::vector<RowMeta> sent_meta_, recv_meta_;
  std::vector<int64_t> recv_slot_;
  int64_t recv_tokens_ = 0;
  std::vector<int32_t> seen_;
  mutable std::vector<float> staging_, back_;
};

}  // namespace switchyard::layer

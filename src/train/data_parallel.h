// Data and expert parallelism of training (`mpirun -np N switchyard train --expert-parallel P`):
// the ranks' layout, this rank's shard of the batch, the gradient all-reduces (bucketed and
// started while backward runs), the global gradient norm, and the expert state gathered for a
// checkpoint. Rank r is expert-parallel rank r % P of data-parallel replica r / P.
#pragma once

#include <switchyard/model.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "dist/communicator.h"

namespace switchyard::training {

using Range = std::pair<size_t, size_t>;  // [begin, end) of the parameter buffer

class DataParallel {
 public:
  // Validates the layout against the model and batch (errors name the flag and values).
  DataParallel(dist::Communicator& world, int expert_parallel, int ranks_per_node,
               const Model& model, int64_t batch);
  // The experts rank world.rank() holds (validates the layout: P divides the ranks and E).
  static ExpertShard shard_of(const dist::Communicator& world, int expert_parallel,
                              int64_t experts);
  int rank() const { return world_.rank(); }
  int ranks() const { return world_.size(); }
  int expert_parallel() const { return P_; }
  dist::Communicator& world() { return world_; }
  // This rank's rows of a (batch, ·) window batch: [first_row, first_row + rows).
  int64_t first_row() const { return first_row_; }
  int64_t rows() const { return rows_; }
  ModelParallel model_parallel() const;

  // Gradient synchronisation of one step: arm() before the last micro-batch's backward (the
  // model reports finished ranges through on_ready), finish() after it.
  void arm() { armed_ = true; }
  void on_ready(std::vector<float>& grads, size_t begin, size_t end);
  void finish(std::vector<float>& grads);
  // The global gradient norm (after finish): dense part once, every expert's part once.
  double grad_norm(const Model& model);
  // The whole of a sharded expert tensor from this rank's rows of it (`mine`), gathered over the
  // expert-parallel group in expert order (collective).
  std::vector<float> gather_expert_tensor(const ParamTensor& t, const std::vector<float>& mine);
  // Σ over ranks.
  double sum(double value);

 private:
  struct Bucket {
    dist::Communicator* comm = nullptr;
    std::vector<Range> pieces;
    std::vector<float> staging;
    int64_t handle = -1;
  };
  void add(Bucket& pending, dist::Communicator* comm, const std::vector<Range>& targets,
           std::vector<float>& grads, size_t begin, size_t end);
  void launch(Bucket& pending, std::vector<float>& grads);

  dist::Communicator& world_;
  int P_ = 1, G_ = 0;
  std::unique_ptr<dist::Communicator> expert_group_;  // this replica's P ranks
  std::unique_ptr<dist::Communicator> expert_data_;   // the replicas of this rank's experts
  int64_t first_row_ = 0, rows_ = 0;
  std::vector<Range> dense_, own_experts_;  // own_experts_: the (sharded) expert tensors
  size_t bucket_floats_ = size_t(1) << 20;  // 4 MiB buckets
  bool armed_ = false;
  Bucket dense_pending_, expert_pending_;
  std::vector<Bucket> in_flight_;
};

}  // namespace switchyard::training

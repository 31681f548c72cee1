#include "train/data_parallel.h"

#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace switchyard::training {
namespace {

bool is_expert_tensor(const ParamTensor& t) {
  return t.name.find(".moe.experts.") != std::string::npos;
}

double sum_sq(const std::vector<float>& g, size_t begin, size_t end) {
  double s = 0.0;
  const float* p = g.data();
  const int64_t b = int64_t(begin), e = int64_t(end);
#pragma omp parallel for simd schedule(static) reduction(+ : s) if (e - b > 65536)
  for (int64_t i = b; i < e; ++i) s += double(p[i]) * p[i];
  return s;
}

size_t total(const std::vector<Range>& pieces) {
  size_t n = 0;
  for (const auto& [b, e] : pieces) n += e - b;
  return n;
}

}  // namespace

ExpertShard DataParallel::shard_of(const dist::Communicator& world, int expert_parallel,
                                   int64_t experts) {
  const int N = world.size(), P = expert_parallel;
  if (P < 1 || N % P != 0)
    fail("train: --expert-parallel {} must divide the {} ranks of the job", P, N);
  if (experts % P != 0)
    fail("train: --expert-parallel {} must divide model.experts = {}", P, experts);
  const int64_t per = experts / P;
  return ExpertShard{int64_t(world.rank() % P) * per, per};
}

DataParallel::DataParallel(dist::Communicator& world, int expert_parallel, int ranks_per_node,
                           const Model& model, int64_t batch)
    : world_(world), P_(expert_parallel), G_(ranks_per_node) {
  const int N = world.size();
  shard_of(world, P_, model.config().experts);  // validates
  if (G_ < 0 || (G_ > 0 && P_ % G_ != 0))
    fail("train: --ranks-per-node {} must divide --expert-parallel {}", G_, P_);
  if (batch % N != 0)
    fail("train: batch = {} must split evenly over the {} ranks (each takes batch / ranks rows)",
         batch, N);
  const int r = world.rank();
  expert_group_ = world.split(r / P_, r % P_);
  expert_data_ = world.split(r % P_, r / P_);
  rows_ = batch / N;
  first_row_ = int64_t(r) * rows_;
  size_t cursor = 0;
  for (const ParamTensor& t : model.tensors()) {
    if (!is_expert_tensor(t)) continue;
    if (t.offset > cursor) dense_.push_back({cursor, t.offset});
    cursor = t.offset + t.size;
    own_experts_.push_back({t.offset, t.offset + t.size});  // this rank's experts only
  }
  if (cursor < model.params().size()) dense_.push_back({cursor, model.params().size()});
}

ModelParallel DataParallel::model_parallel() const {
  const ExpertPlacement placement{world_.size(), P_, G_ > 0 ? G_ : P_};
  return ModelParallel{&world_, expert_group_.get(), 1.0 / double(world_.size()), G_, placement};
}

void DataParallel::add(Bucket& pending, dist::Communicator* comm, const std::vector<Range>& targets,
                       std::vector<float>& grads, size_t begin, size_t end) {
  pending.comm = comm;
  for (const auto& [b, e] : targets) {
    const size_t lo = std::max(b, begin), hi = std::min(e, end);
    if (lo < hi) pending.pieces.push_back({lo, hi});
  }
  if (total(pending.pieces) >= bucket_floats_) launch(pending, grads);
}

void DataParallel::launch(Bucket& pending, std::vector<float>& grads) {
  if (pending.pieces.empty()) return;
  Bucket b = std::move(pending);
  pending = Bucket{};
  b.staging.resize(total(b.pieces));
  size_t at = 0;
  for (const auto& [lo, hi] : b.pieces) {
    std::memcpy(b.staging.data() + at, grads.data() + lo, (hi - lo) * sizeof(float));
    at += hi - lo;
  }
  b.handle = b.comm->start_allreduce_sum(b.staging.data(), int64_t(b.staging.size()));
  in_flight_.push_back(std::move(b));
}

void DataParallel::on_ready(std::vector<float>& grads, size_t begin, size_t end) {
  if (!armed_) return;
  add(dense_pending_, &world_, dense_, grads, begin, end);
  if (expert_data_->size() > 1)
    add(expert_pending_, expert_data_.get(), own_experts_, grads, begin, end);
  // MPI advances non-blocking collectives inside MPI calls: give the ones in flight a turn.
  world_.progress();
  expert_data_->progress();
}

void DataParallel::finish(std::vector<float>& grads) {
  launch(dense_pending_, grads);
  launch(expert_pending_, grads);
  for (Bucket& b : in_flight_) {
    b.comm->wait(b.handle);
    size_t at = 0;
    for (const auto& [lo, hi] : b.pieces) {
      std::memcpy(grads.data() + lo, b.staging.data() + at, (hi - lo) * sizeof(float));
      at += hi - lo;
    }
  }
  in_flight_.clear();
  armed_ = false;
}

double DataParallel::grad_norm(const Model& model) {
  const std::vector<float>& g = model.grads();
  double dense = 0.0, experts = 0.0;
  for (const ParamTensor& t : model.tensors())
    if (t.trainable && !t.frozen && !is_expert_tensor(t))
      dense += sum_sq(g, t.offset, t.offset + t.size);
  for (const auto& [b, e] : own_experts_) experts += sum_sq(g, b, e);
  expert_group_->allreduce_sum(&experts, 1);
  return std::sqrt(dense + experts);
}

std::vector<float> DataParallel::gather_expert_tensor(const ParamTensor& t,
                                                      const std::vector<float>& mine) {
  const int P = expert_group_->size();
  std::vector<int64_t> counts(size_t(P), int64_t(mine.size())), displs(size_t(P), 0);
  for (int q = 1; q < P; ++q) displs[size_t(q)] = displs[size_t(q) - 1] + counts[size_t(q) - 1];
  std::vector<float> whole(mine.size() * size_t(P));
  expert_group_->allgatherv(mine.data(), int64_t(mine.size()), whole.data(), counts.data(),
                            displs.data(), sizeof(float));
  if (t.expert_rows != int64_t(P) * t.shape[0])
    fail("train: tensor '{}' holds {} of {} experts on each of {} ranks", t.name, t.shape[0],
         t.expert_rows, P);
  return whole;
}

double DataParallel::sum(double value) {
  world_.allreduce_sum(&value, 1);
  return value;
}

}  // namespace switchyard::training

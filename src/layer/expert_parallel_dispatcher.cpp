#include "layer/expert_parallel_dispatcher.h"

#include <switchyard/error.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/huge_pages.h"

namespace switchyard::layer {

ExpertParallelDispatcher::ExpertParallelDispatcher(dist::Communicator& comm, int ranks_per_node)
    : comm_(comm), G_(ranks_per_node) {
  const int P = comm.size();
  if (G_ == 0 || G_ == P) {
    G_ = P;
    return;
  }
  if (G_ < 0 || P % G_ != 0)
    fail("expert parallelism: {} ranks per node do not divide the {} ranks", ranks_per_node, P);
  node_ = comm.split(comm.rank() / G_, comm.rank() % G_);
}

int64_t ExpertParallelDispatcher::dispatch_preprocess(RoutingPlan& plan, const float* x, int64_t T,
                                                      int64_t /*d*/, int64_t E, MoECache& c) {
  const int64_t P = comm_.size();
  if (E % P != 0) fail("expert parallelism: {} experts do not divide over {} ranks", E, P);
  for (size_t g = 0; g < plan.capacity.size(); ++g)
    if (plan.capacity[g] > 0)
      fail(
          "expert parallelism: the routing has a capacity ({} in group {}) to apply on this "
          "rank's tokens alone; route across ranks (MoELayer::set_routing_communicator) so that "
          "capacity counts the global batch",
          plan.capacity[g], g);
  const int64_t rows = group_rows(plan, T, E, slots_, c);  // expert order: destination order
  const int64_t per_rank = E / P, local = comm_.rank() % G_;
  E_ = E;
  x_ = x;
  row_token_.resize(size_t(rows));
  row_dest_.resize(size_t(rows));
  row_expert_.resize(size_t(rows));
  row_weight_.resize(size_t(rows));
  row_assignment_.assign(c.row_assignment.begin(), c.row_assignment.end());
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t a = c.row_assignment[size_t(r)], e = plan.expert[size_t(a)];
    const int32_t owner = int32_t(e / per_rank);
    row_token_[size_t(r)] = c.row_token[size_t(r)];
    // Flat: the expert's rank. Hierarchical: the rank of the expert's node with our local index.
    row_dest_[size_t(r)] = hierarchical() ? int32_t(owner / G_ * G_ + local) : owner;
    row_expert_[size_t(r)] = e;
    row_weight_[size_t(r)] = plan.weight[size_t(a)];
  }
  for (auto* t : {&c.ep.dispatch, &c.ep.combine, &c.ep.backward_dispatch, &c.ep.backward_combine})
    t->seconds = 0.0;  // a new forward
  return rows;
}

void ExpertParallelDispatcher::dispatch_communicate(int64_t d, MoECache& c) {
  double& seconds = c.ep.dispatch.seconds;
  const int64_t T = int64_t(c.token_offsets.size()) - 1;
  across_.route(comm_, row_token_.data(), row_dest_.data(), row_expert_.data(), row_weight_.data(),
                int64_t(row_token_.size()), T, seconds);
  across_.send_tokens(comm_, x_, d, tokens1_, seconds);
  if (hierarchical()) {
    // The rows that arrived here, in order of their expert's local rank (stably).
    const auto& meta = across_.received_rows();
    const int64_t n = int64_t(meta.size()), per_rank = E_ / comm_.size();
    b_from_.resize(size_t(n));
    std::iota(b_from_.begin(), b_from_.end(), 0);
    auto local_of = [&](int32_t i) { return int32_t(meta[size_t(i)].expert / per_rank % G_); };
    std::stable_sort(b_from_.begin(), b_from_.end(),
                     [&](int32_t a, int32_t b) { return local_of(a) < local_of(b); });
    b_token_.resize(size_t(n));
    b_dest_.resize(size_t(n));
    b_expert_.resize(size_t(n));
    b_weight_.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      const int32_t from = b_from_[size_t(i)];
      b_token_[size_t(i)] = int32_t(across_.received_slot()[size_t(from)]);
      b_dest_[size_t(i)] = local_of(from);
      b_expert_[size_t(i)] = meta[size_t(from)].expert;
      b_weight_[size_t(i)] = meta[size_t(from)].weight;
    }
    inside_.route(*node_, b_token_.data(), b_dest_.data(), b_expert_.data(), b_weight_.data(), n,
                  across_.received_tokens(), seconds);
    inside_.send_tokens(*node_, tokens1_.data(), d, tokens2_, seconds);
  }
  add_counts(c, d, 0);
}

void ExpertParallelDispatcher::dispatch_postprocess(int64_t d, MoECache& c) {
  const RowExchange& final_stage = last();
  const auto& meta = final_stage.received_rows();
  const int64_t E = E_, P = comm_.size();
  const int64_t first = comm_.rank() * (E / P), end = first + E / P;
  const int64_t received = int64_t(meta.size());
  // Group the received rows by expert, stably (arrival order).
  std::vector<int64_t> per_expert(size_t(E), 0);
  for (const auto& m : meta) {
    if (m.expert < first || m.expert >= end)
      fail("expert parallelism: rank {} received a row for expert {}, held by rank {}",
           comm_.rank(), m.expert, m.expert / (E / P));
    ++per_expert[size_t(m.expert)];
  }
  c.expert_offsets.assign(size_t(E + 1), 0);
  for (int64_t e = 0; e < E; ++e)
    c.expert_offsets[size_t(e + 1)] = c.expert_offsets[size_t(e)] + per_expert[size_t(e)];
  std::vector<int64_t> cursor(c.expert_offsets.begin(), c.expert_offsets.end() - 1);
  recv_position_.resize(size_t(received));
  for (int64_t i = 0; i < received; ++i)
    recv_position_[size_t(i)] = cursor[size_t(meta[size_t(i)].expert)]++;
  const std::vector<float>& tokens = hierarchical() ? tokens2_ : tokens1_;
  resize_on_huge_pages(c.xd, size_t(received * d));
  for (int64_t i = 0; i < received; ++i)
    std::memcpy(c.xd.data() + recv_position_[size_t(i)] * d,
                tokens.data() + final_stage.received_slot()[size_t(i)] * d,
                size_t(d) * sizeof(float));
}

void ExpertParallelDispatcher::sum_by_token(const float* rows, int64_t d, bool weighted,
                                            std::vector<float>& out) const {
  const RowExchange& s = last();
  out.assign(size_t(s.received_tokens() * d), 0.0f);
  const auto& meta = s.received_rows();
  for (size_t i = 0; i < meta.size(); ++i) {
    const float w = weighted ? meta[i].weight : 1.0f;
    const float* src = rows + recv_position_[i] * d;
    float* dst = out.data() + s.received_slot()[i] * d;
    for (int64_t j = 0; j < d; ++j) dst[j] += w * src[j];
  }
}

void ExpertParallelDispatcher::return_partials(const float* partial, int64_t d, float* acc,
                                               double& seconds) {
  if (hierarchical()) {
    acc1_.assign(size_t(across_.received_tokens() * d), 0.0f);
    inside_.return_tokens(*node_, partial, d, acc1_.data(), seconds);
    across_.return_tokens(comm_, acc1_.data(), d, acc, seconds);
  } else {
    across_.return_tokens(comm_, partial, d, acc, seconds);
  }
}

void ExpertParallelDispatcher::combine(MoECache& c, int64_t /*T*/, int64_t d, float* y) {
  sum_by_token(c.out.data(), d, /*weighted=*/true, partial_);
  return_partials(partial_.data(), d, y, c.ep.combine.seconds);
  add_counts(c, d, 1);
}

void ExpertParallelDispatcher::combine_backward(const MoECache& c, const float* dy, int64_t d,
                                                float* dout, float* d_weight) {
  double& seconds = c.ep.backward_dispatch.seconds;
  // dy once per (token, destination), through the same stages as x.
  across_.send_tokens(comm_, dy, d, tokens1_, seconds);
  if (hierarchical()) inside_.send_tokens(*node_, tokens1_.data(), d, tokens2_, seconds);
  const std::vector<float>& g = hierarchical() ? tokens2_ : tokens1_;
  const RowExchange& s = last();
  const auto& meta = s.received_rows();
  // Where the outputs are: dout = weight · dy, ∂L/∂weight = <dy, output>.
  dw_final_.resize(meta.size());
  for (size_t i = 0; i < meta.size(); ++i) {
    const float* gi = g.data() + s.received_slot()[i] * d;
    const float* o = c.out.data() + recv_position_[i] * d;
    float* dst = dout + recv_position_[i] * d;
    double dot = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      dst[j] = meta[i].weight * gi[j];
      dot += double(gi[j]) * o[j];
    }
    dw_final_[i] = float(dot);
  }
  // The weights' gradients back to their assignments, through the stages in reverse.
  dw_src_.resize(row_token_.size());
  if (hierarchical()) {
    std::vector<float> per_b(size_t(inside_.sent_rows()));
    inside_.return_rows(*node_, dw_final_.data(), per_b.data(), seconds);
    dw1_.resize(across_.received_rows().size());
    for (size_t i = 0; i < per_b.size(); ++i) dw1_[size_t(b_from_[i])] = per_b[i];
    across_.return_rows(comm_, dw1_.data(), dw_src_.data(), seconds);
  } else {
    across_.return_rows(comm_, dw_final_.data(), dw_src_.data(), seconds);
  }
  for (size_t r = 0; r < dw_src_.size(); ++r) d_weight[row_assignment_[r]] = dw_src_[r];
  add_counts(c, d, 2);
}

void ExpertParallelDispatcher::dispatch_backward(const MoECache& c, const float* dxd, int64_t /*T*/,
                                                 int64_t d, float* dx) {
  sum_by_token(dxd, d, /*weighted=*/false, partial_);
  return_partials(partial_.data(), d, dx, c.ep.backward_combine.seconds);
  add_counts(c, d, 3);
}

// Phase 0 dispatch, 1 combine, 2 backward dispatch (dy out, weight gradients back), 3 backward
// combine (dx back). Stage 1 is the part across nodes when hierarchical.
void ExpertParallelDispatcher::add_counts(const MoECache& c, int64_t d, int phase) const {
  const MoECache::ExpertParallel& ep = c.ep;
  MoECache::ExpertParallel::Traffic* t[] = {&ep.dispatch, &ep.combine, &ep.backward_dispatch,
                                            &ep.backward_combine};
  if (phase == 0) ep.inter_node = {};
  t[phase]->sent = t[phase]->received = 0;  // its seconds were measured during the exchange
  const int me = comm_.rank();
  auto count_stage = [&](const RowExchange& s, int rank, MoECache::ExpertParallel::Traffic& out) {
    switch (phase) {
      case 0:
        s.count_dispatch(rank, d, out);
        break;
      case 1:
        s.count_tokens_back(rank, d, out);
        break;
      case 2:
        s.count_tokens_forward(rank, d, out);
        s.count_rows_back(rank, out);
        break;
      default:
        s.count_tokens_back(rank, d, out);
        break;
    }
  };
  count_stage(across_, me, *t[phase]);
  if (hierarchical()) {
    count_stage(across_, me, ep.inter_node);
    count_stage(inside_, node_->rank(), *t[phase]);
  }
}

}  // namespace switchyard::layer

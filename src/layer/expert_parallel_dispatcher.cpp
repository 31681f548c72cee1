#include "layer/expert_parallel_dispatcher.h"

#include <switchyard/error.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/huge_pages.h"
#include "kernels/cpu/kernels.h"

namespace switchyard::layer {
namespace {

using RowMeta = MoECache::ExpertParallel::RowMeta;

void prefix(const std::vector<int64_t>& counts, std::vector<int64_t>& displs) {
  displs.assign(counts.size(), 0);
  for (size_t q = 1; q < counts.size(); ++q) displs[q] = displs[q - 1] + counts[q - 1];
}

int64_t sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

// Adds the bytes an exchange moves to and from the other ranks (not this rank's own).
void count(MoECache::ExpertParallel::Traffic& t, const std::vector<int64_t>& out,
           const std::vector<int64_t>& in, int rank, int64_t elem_bytes) {
  for (size_t q = 0; q < out.size(); ++q) {
    if (int(q) == rank) continue;
    t.sent += out[q] * elem_bytes;
    t.received += in[q] * elem_bytes;
  }
}

// Adds the wall time of its scope to c.ep.exchange_seconds.
class ExchangeClock {
 public:
  explicit ExchangeClock(const MoECache& c) : c_(c), start_(std::chrono::steady_clock::now()) {}
  ~ExchangeClock() {
    c_.ep.exchange_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  const MoECache& c_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

int64_t ExpertParallelDispatcher::dispatch_preprocess(RoutingPlan& plan, const float* x, int64_t T,
                                                      int64_t d, int64_t E, MoECache& c) {
  const int64_t P = comm_.size();
  if (E % P != 0) fail("expert parallelism: {} experts do not divide over {} ranks", E, P);
  for (size_t g = 0; g < plan.capacity.size(); ++g)
    if (plan.capacity[g] > 0)
      fail(
          "expert parallelism: the routing has a capacity ({} in group {}) to apply on this "
          "rank's tokens alone; route across ranks (MoELayer::set_routing_communicator) so that "
          "capacity counts the global batch",
          plan.capacity[g], g);
  const int64_t rows = group_rows(plan, T, E, slots_, c);  // in expert order: by destination
  const int64_t per_rank = E / P;
  MoECache::ExpertParallel& ep = c.ep;
  ep.send_counts.assign(size_t(P), 0);
  ep.meta_send_counts.assign(size_t(P), 0);
  ep.sent_token.clear();
  ep.sent_meta.resize(size_t(rows));
  ep.sent_assignment.resize(size_t(rows));
  seen_.assign(size_t(T), 0);
  for (int64_t q = 0; q < P; ++q) {
    const int64_t begin = c.expert_offsets[size_t(q * per_rank)];
    const int64_t end = c.expert_offsets[size_t((q + 1) * per_rank)];
    const int64_t first_token = int64_t(ep.sent_token.size());
    for (int64_t r = begin; r < end; ++r) {
      const int32_t t = c.row_token[size_t(r)], a = c.row_assignment[size_t(r)];
      // seen_ holds (slot + 1) for this destination's tokens; slots of earlier destinations
      // are below first_token, so they read as unseen here.
      int32_t slot = seen_[size_t(t)] - 1 - int32_t(first_token);
      if (seen_[size_t(t)] == 0 || slot < 0) {
        slot = int32_t(int64_t(ep.sent_token.size()) - first_token);
        ep.sent_token.push_back(t);
        seen_[size_t(t)] = int32_t(first_token) + slot + 1;
      }
      ep.sent_meta[size_t(r)] = RowMeta{plan.expert[size_t(a)], slot, plan.weight[size_t(a)]};
      ep.sent_assignment[size_t(r)] = a;
    }
    ep.send_counts[size_t(q)] = int64_t(ep.sent_token.size()) - first_token;
    ep.meta_send_counts[size_t(q)] = end - begin;
  }
  prefix(ep.send_counts, ep.send_displs);
  prefix(ep.meta_send_counts, ep.meta_send_displs);
  const int64_t tokens = int64_t(ep.sent_token.size());
  resize_on_huge_pages(ep.sent_x, size_t(tokens * d));
  cpu::gather_rows(tokens, d, x, ep.sent_token.data(), ep.sent_x.data());
  return rows;
}

void ExpertParallelDispatcher::dispatch_communicate(int64_t d, MoECache& c) {
  MoECache::ExpertParallel& ep = c.ep;
  ep.exchange_seconds = 0.0;  // a new forward
  {
    const ExchangeClock clock(c);
    ep.recv_counts.resize(ep.send_counts.size());
    ep.meta_recv_counts.resize(ep.send_counts.size());
    comm_.alltoall(ep.send_counts.data(), ep.recv_counts.data());
    comm_.alltoall(ep.meta_send_counts.data(), ep.meta_recv_counts.data());
    prefix(ep.recv_counts, ep.recv_displs);
    prefix(ep.meta_recv_counts, ep.meta_recv_displs);
    ep.recv_meta.resize(size_t(sum(ep.meta_recv_counts)));
    comm_.alltoallv(ep.sent_meta.data(), ep.meta_send_counts.data(), ep.meta_send_displs.data(),
                    ep.recv_meta.data(), ep.meta_recv_counts.data(), ep.meta_recv_displs.data(),
                    sizeof(RowMeta));
  }
  resize_on_huge_pages(ep.recv_x, size_t(sum(ep.recv_counts) * d));
  to_experts(c, ep.sent_x.data(), d, ep.recv_x.data());
  ep.dispatch = {};
  count(ep.dispatch, ep.send_counts, ep.recv_counts, comm_.rank(), d * int64_t(sizeof(float)));
  count(ep.dispatch, ep.meta_send_counts, ep.meta_recv_counts, comm_.rank(),
        int64_t(sizeof(RowMeta)));
}

void ExpertParallelDispatcher::dispatch_postprocess(int64_t d, MoECache& c) {
  MoECache::ExpertParallel& ep = c.ep;
  const int64_t E = int64_t(c.expert_offsets.size()) - 1, P = comm_.size();
  const int64_t first = comm_.rank() * (E / P), last = first + E / P;
  const int64_t received = int64_t(ep.recv_meta.size());
  // Group the received rows by expert, stably: by source rank, then as each rank sent them.
  std::vector<int64_t> per_expert(size_t(E), 0);
  ep.recv_slot.resize(size_t(received));
  for (int64_t q = 0, i = 0; q < P; ++q)
    for (int64_t j = 0; j < ep.meta_recv_counts[size_t(q)]; ++j, ++i) {
      const RowMeta& m = ep.recv_meta[size_t(i)];
      if (m.expert < first || m.expert >= last)
        fail("expert parallelism: rank {} received a row for expert {}, held by rank {}",
             comm_.rank(), m.expert, m.expert / (E / P));
      if (m.slot < 0 || m.slot >= ep.recv_counts[size_t(q)])
        fail("expert parallelism: rank {} received a row for token slot {} of {} from rank {}",
             comm_.rank(), m.slot, ep.recv_counts[size_t(q)], q);
      ++per_expert[size_t(m.expert)];
      ep.recv_slot[size_t(i)] = ep.recv_displs[size_t(q)] + m.slot;
    }
  c.expert_offsets.assign(size_t(E + 1), 0);
  for (int64_t e = 0; e < E; ++e)
    c.expert_offsets[size_t(e + 1)] = c.expert_offsets[size_t(e)] + per_expert[size_t(e)];
  std::vector<int64_t> cursor(c.expert_offsets.begin(), c.expert_offsets.end() - 1);
  ep.recv_position.resize(size_t(received));
  for (int64_t i = 0; i < received; ++i)
    ep.recv_position[size_t(i)] = cursor[size_t(ep.recv_meta[size_t(i)].expert)]++;
  resize_on_huge_pages(c.xd, size_t(received * d));
  for (int64_t i = 0; i < received; ++i)
    std::memcpy(c.xd.data() + ep.recv_position[size_t(i)] * d,
                ep.recv_x.data() + ep.recv_slot[size_t(i)] * d, size_t(d) * sizeof(float));
}

void ExpertParallelDispatcher::sum_by_token(const MoECache& c, const float* rows, int64_t d,
                                            bool weighted, std::vector<float>& out) const {
  const MoECache::ExpertParallel& ep = c.ep;
  out.assign(size_t(sum(ep.recv_counts) * d), 0.0f);
  for (size_t i = 0; i < ep.recv_meta.size(); ++i) {
    const float w = weighted ? ep.recv_meta[i].weight : 1.0f;
    const float* src = rows + ep.recv_position[i] * d;
    float* dst = out.data() + ep.recv_slot[i] * d;
    for (int64_t j = 0; j < d; ++j) dst[j] += w * src[j];
  }
}

void ExpertParallelDispatcher::combine(MoECache& c, int64_t T, int64_t d, float* y) {
  MoECache::ExpertParallel& ep = c.ep;
  sum_by_token(c, c.out.data(), d, /*weighted=*/true, tokens_);
  resize_on_huge_pages(ep.sent_out, ep.sent_token.size() * size_t(d));
  to_sources(c, tokens_.data(), d, ep.sent_out.data());
  ep.combine = {};
  count(ep.combine, ep.recv_counts, ep.send_counts, comm_.rank(), d * int64_t(sizeof(float)));
  for (size_t j = 0; j < ep.sent_token.size(); ++j) {
    float* dst = y + int64_t(ep.sent_token[j]) * d;
    const float* src = ep.sent_out.data() + int64_t(j) * d;
    for (int64_t k = 0; k < d; ++k) dst[k] += src[k];
  }
  (void)T;
}

void ExpertParallelDispatcher::combine_backward(const MoECache& c, const float* dy, int64_t d,
                                                float* dout, float* d_weight) {
  const MoECache::ExpertParallel& ep = c.ep;
  // dy once per (token, destination) to the experts' rank.
  const int64_t sent = int64_t(ep.sent_token.size());
  back_.resize(size_t(sent * d));
  cpu::gather_rows(sent, d, dy, ep.sent_token.data(), back_.data());
  tokens_.resize(size_t(sum(ep.recv_counts) * d));
  to_experts(c, back_.data(), d, tokens_.data());
  c.ep.backward_dispatch = {};
  count(c.ep.backward_dispatch, ep.send_counts, ep.recv_counts, comm_.rank(),
        d * int64_t(sizeof(float)));
  // Where the outputs are: dout = weight · dy, ∂L/∂weight = <dy, output>.
  const size_t received = ep.recv_meta.size();
  dw_recv_.resize(received);
  for (size_t i = 0; i < received; ++i) {
    const float* g = tokens_.data() + ep.recv_slot[i] * d;
    const float* o = c.out.data() + ep.recv_position[i] * d;
    float* dst = dout + ep.recv_position[i] * d;
    const float w = ep.recv_meta[i].weight;
    double dot = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      dst[j] = w * g[j];
      dot += double(g[j]) * o[j];
    }
    dw_recv_[i] = float(dot);
  }
  // The weights' gradients back to their assignments.
  dw_sent_.resize(ep.sent_meta.size());
  {
    const ExchangeClock clock(c);
    comm_.alltoallv(dw_recv_.data(), ep.meta_recv_counts.data(), ep.meta_recv_displs.data(),
                    dw_sent_.data(), ep.meta_send_counts.data(), ep.meta_send_displs.data(),
                    sizeof(float));
  }
  for (size_t r = 0; r < dw_sent_.size(); ++r) d_weight[ep.sent_assignment[r]] = dw_sent_[r];
}

void ExpertParallelDispatcher::dispatch_backward(const MoECache& c, const float* dxd, int64_t T,
                                                 int64_t d, float* dx) {
  const MoECache::ExpertParallel& ep = c.ep;
  sum_by_token(c, dxd, d, /*weighted=*/false, tokens_);
  back_.resize(ep.sent_token.size() * size_t(d));
  to_sources(c, tokens_.data(), d, back_.data());
  c.ep.backward_combine = {};
  count(c.ep.backward_combine, ep.recv_counts, ep.send_counts, comm_.rank(),
        d * int64_t(sizeof(float)));
  count(c.ep.backward_combine, ep.meta_recv_counts, ep.meta_send_counts, comm_.rank(),
        int64_t(sizeof(float)));  // the weights' gradients (combine_backward)
  for (size_t j = 0; j < ep.sent_token.size(); ++j) {
    float* dst = dx + int64_t(ep.sent_token[j]) * d;
    const float* src = back_.data() + int64_t(j) * d;
    for (int64_t k = 0; k < d; ++k) dst[k] += src[k];
  }
  (void)T;
}

void ExpertParallelDispatcher::to_experts(const MoECache& c, const float* sent, int64_t d,
                                          float* received) {
  const ExchangeClock clock(c);
  const MoECache::ExpertParallel& ep = c.ep;
  comm_.alltoallv(sent, ep.send_counts.data(), ep.send_displs.data(), received,
                  ep.recv_counts.data(), ep.recv_displs.data(), size_t(d) * sizeof(float));
}

void ExpertParallelDispatcher::to_sources(const MoECache& c, const float* received, int64_t d,
                                          float* sent) {
  const ExchangeClock clock(c);
  const MoECache::ExpertParallel& ep = c.ep;
  comm_.alltoallv(received, ep.recv_counts.data(), ep.recv_displs.data(), sent,
                  ep.send_counts.data(), ep.send_displs.data(), size_t(d) * sizeof(float));
}

}  // namespace switchyard::layer

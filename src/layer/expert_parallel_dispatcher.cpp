#include "layer/expert_parallel_dispatcher.h"

#include <switchyard/error.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/huge_pages.h"
#include "kernels/cpu/kernels.h"

namespace switchyard::layer {
namespace {

void prefix(const std::vector<int64_t>& counts, std::vector<int64_t>& displs) {
  displs.assign(counts.size(), 0);
  for (size_t q = 1; q < counts.size(); ++q) displs[q] = displs[q - 1] + counts[q - 1];
}

int64_t sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

// Adds the bytes an exchange moves to and from the other ranks (not this rank's own rows).
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
          "expert parallelism: the routing has a capacity ({} in group {}); only dropless routing "
          "runs across ranks so far (capacity_factor 0)",
          plan.capacity[g], g);
  const int64_t rows = group_rows(plan, T, E, slots_, c);  // c.expert_offsets: this rank's rows
  const int64_t per_rank = E / P;
  MoECache::ExpertParallel& ep = c.ep;
  ep.send_counts.resize(size_t(P));
  for (int64_t q = 0; q < P; ++q)
    ep.send_counts[size_t(q)] =
        c.expert_offsets[size_t((q + 1) * per_rank)] - c.expert_offsets[size_t(q * per_rank)];
  prefix(ep.send_counts, ep.send_displs);
  ep.sent_expert.resize(size_t(rows));
  for (int64_t r = 0; r < rows; ++r)
    ep.sent_expert[size_t(r)] = plan.expert[size_t(c.row_assignment[size_t(r)])];
  resize_on_huge_pages(ep.sent_x, size_t(rows * d));
  cpu::gather_rows(rows, d, x, c.row_token.data(), ep.sent_x.data());
  return rows;
}

void ExpertParallelDispatcher::dispatch_communicate(int64_t d, MoECache& c) {
  MoECache::ExpertParallel& ep = c.ep;
  ep.exchange_seconds = 0.0;  // a new forward
  int64_t received = 0;
  {
    const ExchangeClock clock(c);
    ep.recv_counts.resize(ep.send_counts.size());
    comm_.alltoall(ep.send_counts.data(), ep.recv_counts.data());
    prefix(ep.recv_counts, ep.recv_displs);
    received = sum(ep.recv_counts);
    ep.recv_expert.resize(size_t(received));
    comm_.alltoallv(ep.sent_expert.data(), ep.send_counts.data(), ep.send_displs.data(),
                    ep.recv_expert.data(), ep.recv_counts.data(), ep.recv_displs.data(),
                    sizeof(int32_t));
  }
  resize_on_huge_pages(ep.recv_x, size_t(received * d));
  forward_rows(c, ep.sent_x.data(), d, ep.recv_x.data());
  ep.dispatch = {};
  count(ep.dispatch, ep.send_counts, ep.recv_counts, comm_.rank(),
        int64_t(sizeof(int32_t)) + d * int64_t(sizeof(float)));
}

void ExpertParallelDispatcher::dispatch_postprocess(int64_t d, MoECache& c) {
  MoECache::ExpertParallel& ep = c.ep;
  const int64_t E = int64_t(c.expert_offsets.size()) - 1, P = comm_.size();
  const int64_t first = comm_.rank() * (E / P), last = first + E / P;
  const int64_t received = int64_t(ep.recv_expert.size());
  // Group the received rows by expert, stably: by source rank, then as each rank sent them.
  std::vector<int64_t> count(size_t(E), 0);
  for (int32_t e : ep.recv_expert) {
    if (e < first || e >= last)
      fail("expert parallelism: rank {} received a row for expert {}, held by rank {}",
           comm_.rank(), e, e / (E / P));
    ++count[size_t(e)];
  }
  c.expert_offsets.assign(size_t(E + 1), 0);
  for (int64_t e = 0; e < E; ++e)
    c.expert_offsets[size_t(e + 1)] = c.expert_offsets[size_t(e)] + count[size_t(e)];
  std::vector<int64_t> cursor(c.expert_offsets.begin(), c.expert_offsets.end() - 1);
  ep.recv_position.resize(size_t(received));
  for (int64_t i = 0; i < received; ++i)
    ep.recv_position[size_t(i)] = cursor[size_t(ep.recv_expert[size_t(i)])]++;
  resize_on_huge_pages(c.xd, size_t(received * d));
  from_arrival_order(c, ep.recv_x.data(), d, c.xd.data());
}

void ExpertParallelDispatcher::combine(MoECache& c, int64_t T, int64_t d, float* y) {
  MoECache::ExpertParallel& ep = c.ep;
  arrival_.resize(ep.recv_position.size() * size_t(d));
  to_arrival_order(c, c.out.data(), d, arrival_.data());
  resize_on_huge_pages(ep.sent_out, c.row_token.size() * size_t(d));
  backward_rows(c, arrival_.data(), d, ep.sent_out.data());
  ep.combine = {};
  count(ep.combine, ep.recv_counts, ep.send_counts, comm_.rank(), d * int64_t(sizeof(float)));
  cpu::combine_rows(T, d, c.token_offsets.data(), c.token_rows.data(), c.row_weight.data(),
                    ep.sent_out.data(), y);
}

void ExpertParallelDispatcher::combine_backward(const MoECache& c, const float* dy, int64_t d,
                                                float* dout, float* d_weight) {
  const int64_t rows = int64_t(c.row_token.size());
  back_.resize(size_t(rows * d));
  d_row_.resize(size_t(rows));
  cpu::combine_rows_backward(rows, d, c.row_token.data(), c.row_weight.data(), dy,
                             c.ep.sent_out.data(), back_.data(), d_row_.data());
  for (int64_t r = 0; r < rows; ++r) d_weight[c.row_assignment[size_t(r)]] = d_row_[size_t(r)];
  arrival_.resize(c.ep.recv_position.size() * size_t(d));
  forward_rows(c, back_.data(), d, arrival_.data());
  c.ep.backward_dispatch = {};
  count(c.ep.backward_dispatch, c.ep.send_counts, c.ep.recv_counts, comm_.rank(),
        d * int64_t(sizeof(float)));
  from_arrival_order(c, arrival_.data(), d, dout);
}

void ExpertParallelDispatcher::dispatch_backward(const MoECache& c, const float* dxd, int64_t T,
                                                 int64_t d, float* dx) {
  const int64_t rows = int64_t(c.row_token.size());
  arrival_.resize(c.ep.recv_position.size() * size_t(d));
  to_arrival_order(c, dxd, d, arrival_.data());
  back_.resize(size_t(rows * d));
  backward_rows(c, arrival_.data(), d, back_.data());
  c.ep.backward_combine = {};
  count(c.ep.backward_combine, c.ep.recv_counts, c.ep.send_counts, comm_.rank(),
        d * int64_t(sizeof(float)));
  ones_.assign(size_t(rows), 1.0f);
  cpu::combine_rows(T, d, c.token_offsets.data(), c.token_rows.data(), ones_.data(), back_.data(),
                    dx);
}

void ExpertParallelDispatcher::to_arrival_order(const MoECache& c, const float* rows, int64_t d,
                                                float* out) const {
  const std::vector<int64_t>& pos = c.ep.recv_position;
  for (size_t i = 0; i < pos.size(); ++i)
    std::memcpy(out + int64_t(i) * d, rows + pos[i] * d, size_t(d) * sizeof(float));
}

void ExpertParallelDispatcher::from_arrival_order(const MoECache& c, const float* rows, int64_t d,
                                                  float* out) const {
  const std::vector<int64_t>& pos = c.ep.recv_position;
  for (size_t i = 0; i < pos.size(); ++i)
    std::memcpy(out + pos[i] * d, rows + int64_t(i) * d, size_t(d) * sizeof(float));
}

void ExpertParallelDispatcher::forward_rows(const MoECache& c, const float* sent, int64_t d,
                                            float* received) {
  const ExchangeClock clock(c);
  const MoECache::ExpertParallel& ep = c.ep;
  comm_.alltoallv(sent, ep.send_counts.data(), ep.send_displs.data(), received,
                  ep.recv_counts.data(), ep.recv_displs.data(), size_t(d) * sizeof(float));
}

void ExpertParallelDispatcher::backward_rows(const MoECache& c, const float* received, int64_t d,
                                             float* sent) {
  const ExchangeClock clock(c);
  const MoECache::ExpertParallel& ep = c.ep;
  comm_.alltoallv(received, ep.recv_counts.data(), ep.recv_displs.data(), sent,
                  ep.send_counts.data(), ep.send_displs.data(), size_t(d) * sizeof(float));
}

}  // namespace switchyard::layer

#include "layer/token_dispatcher.h"

#include <algorithm>

#include "core/huge_pages.h"
#include "kernels/cpu/kernels.h"

namespace switchyard::layer {

int64_t group_rows(RoutingPlan& plan, int64_t T, int64_t E, std::vector<int64_t>& slots,
                   MoECache& c) {
  const int64_t A = int64_t(plan.size());
  const int64_t G = int64_t(plan.capacity.size());
  slots.resize(size_t(std::max(G * E, E)));
  c.expert_offsets.resize(size_t(E + 1));
  c.row_assignment.resize(size_t(A));
  const int64_t rows = cpu::dispatch(A, plan.expert.data(), plan.group.data(), plan.kept.data(),
                                     plan.capacity.data(), G, E, slots.data(),
                                     c.expert_offsets.data(), c.row_assignment.data());
  c.row_assignment.resize(size_t(rows));
  // Per-assignment widths: within each expert, rows by width, descending (stable: plan order
  // among equal widths), so that each (expert, width) segment is contiguous.
  if (plan.width.empty()) {
    c.row_width.clear();
  } else {
    auto by_width = [&](int32_t a, int32_t b) {
      return plan.width[size_t(a)] > plan.width[size_t(b)];
    };
    for (int64_t e = 0; e < E; ++e)
      std::stable_sort(c.row_assignment.begin() + c.expert_offsets[size_t(e)],
                       c.row_assignment.begin() + c.expert_offsets[size_t(e) + 1], by_width);
    c.row_width.resize(size_t(rows));
    for (int64_t r = 0; r < rows; ++r)
      c.row_width[size_t(r)] = plan.width[size_t(c.row_assignment[size_t(r)])];
  }
  c.row_token.resize(size_t(rows));
  c.row_weight.resize(size_t(rows));
  for (int64_t r = 0; r < rows; ++r) {
    c.row_token[size_t(r)] = plan.token[size_t(c.row_assignment[size_t(r)])];
    c.row_weight[size_t(r)] = plan.weight[size_t(c.row_assignment[size_t(r)])];
  }
  c.token_offsets.resize(size_t(T + 1));
  c.token_rows.resize(size_t(rows));
  cpu::rows_by_token(rows, c.row_token.data(), T, c.token_offsets.data(), c.token_rows.data());
  return rows;
}

int64_t LocalDispatcher::dispatch_preprocess(RoutingPlan& plan, const float* x, int64_t T,
                                             int64_t d, int64_t E, MoECache& c) {
  const int64_t rows = group_rows(plan, T, E, slots_, c);
  resize_on_huge_pages(c.xd, size_t(rows * d));
  cpu::gather_rows(rows, d, x, c.row_token.data(), c.xd.data());
  return rows;
}

void LocalDispatcher::combine(MoECache& c, int64_t T, int64_t d, float* y) {
  cpu::combine_rows(T, d, c.token_offsets.data(), c.token_rows.data(), c.row_weight.data(),
                    c.out.data(), y);
}

void LocalDispatcher::combine_backward(const MoECache& c, const float* dy, int64_t d, float* dout,
                                       float* d_weight) {
  const int64_t rows = int64_t(c.row_token.size());
  d_row_.resize(size_t(rows));
  cpu::combine_rows_backward(rows, d, c.row_token.data(), c.row_weight.data(), dy, c.out.data(),
                             dout, d_row_.data());
  for (int64_t r = 0; r < rows; ++r) d_weight[c.row_assignment[size_t(r)]] = d_row_[size_t(r)];
}

void LocalDispatcher::dispatch_backward(const MoECache& c, const float* dxd, int64_t T, int64_t d,
                                        float* dx) {
  ones_.assign(c.row_token.size(), 1.0f);
  cpu::combine_rows(T, d, c.token_offsets.data(), c.token_rows.data(), ones_.data(), dxd, dx);
}

}  // namespace switchyard::layer

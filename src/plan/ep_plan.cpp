// Expert-parallel planning: placements, their per-rank load, all-to-all volume, capacity drops
// and predicted time. The formulas are in docs/distributed.md, section "ep-plan".
#include <switchyard/error.h>
#include <switchyard/plan/ep_plan.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <tuple>

namespace switchyard::plan {

using infer::RoutingTrace;

namespace {

constexpr int64_t kNoCapacity = std::numeric_limits<int64_t>::max();

bool positive_finite(double v) {
  return std::isfinite(v) && v > 0;
}

double parse_number(const std::string& flag, const std::string& item, const std::string& text) {
  size_t used = 0;
  double v = NAN;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !std::isfinite(v))
    fail("{} '{}': '{}' is not a number", flag, item, text);
  return v;
}

// Ranks holding a copy of (l, e), primary first: (L, E).
std::vector<std::vector<int32_t>> holder_lists(const Placement& p) {
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(p.layers * p.experts));
  for (int64_t l = 0; l < p.layers; ++l)
    for (int64_t e = 0; e < p.experts; ++e) {
      auto& h = out[size_t(l * p.experts + e)];
      h.push_back(p.primary(l, e));
      for (int32_t r : p.extra(l, e)) h.push_back(r);
    }
  return out;
}

// (max rank rows, cross-node rows), compared lexicographically.
using Score = std::pair<int64_t, int64_t>;

// One layer's balancing problem: per-expert rows and rows per (node, expert).
struct LayerLoad {
  int64_t experts = 0, ranks = 0;
  const Topology* topo = nullptr;
  std::vector<int64_t> expert_rows;  // (E)
  std::vector<int64_t> node_rows;    // (nodes, E)
  int64_t cross(int64_t e, int64_t rank) const {
    return expert_rows[size_t(e)] - node_rows[size_t(topo->node_of(rank) * experts + e)];
  }
  Score score(const std::vector<int32_t>& assign) const {
    std::vector<int64_t> load(static_cast<size_t>(ranks), 0);
    int64_t cross_rows = 0;
    for (int64_t e = 0; e < experts; ++e) {
      load[size_t(assign[size_t(e)])] += expert_rows[size_t(e)];
      cross_rows += cross(e, assign[size_t(e)]);
    }
    return {*std::max_element(load.begin(), load.end()), cross_rows};
  }
};

// First-improvement pair swaps between ranks until none lowers the score (or 100 passes).
void local_search(const LayerLoad& ll, std::vector<int32_t>& assign) {
  const int64_t E = ll.experts, R = ll.ranks;
  std::vector<int64_t> load(static_cast<size_t>(R), 0);
  int64_t cross_rows = 0;
  for (int64_t e = 0; e < E; ++e) {
    load[size_t(assign[size_t(e)])] += ll.expert_rows[size_t(e)];
    cross_rows += ll.cross(e, assign[size_t(e)]);
  }
  // The three most loaded ranks give the max over the ranks a swap leaves alone in O(1).
  std::vector<int32_t> top;
  auto refresh_top = [&] {
    std::vector<int32_t> order(static_cast<size_t>(R));
    std::iota(order.begin(), order.end(), 0);
    const size_t n = std::min<size_t>(3, order.size());
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(n), order.end(),
                      [&](int32_t a, int32_t b) { return load[size_t(a)] > load[size_t(b)]; });
    top.assign(order.begin(), order.begin() + std::ptrdiff_t(n));
  };
  refresh_top();
  for (int pass = 0; pass < 100; ++pass) {
    bool improved = false;
    for (int64_t a = 0; a < E; ++a)
      for (int64_t b = a + 1; b < E; ++b) {
        const int32_t ra = assign[size_t(a)], rb = assign[size_t(b)];
        if (ra == rb) continue;
        const int64_t delta = ll.expert_rows[size_t(b)] - ll.expert_rows[size_t(a)];
        int64_t new_max = std::max(load[size_t(ra)] + delta, load[size_t(rb)] - delta);
        for (int32_t t : top)
          if (t != ra && t != rb) {
            new_max = std::max(new_max, load[size_t(t)]);
            break;
          }
        const int64_t new_cross =
            cross_rows - ll.cross(a, ra) - ll.cross(b, rb) + ll.cross(a, rb) + ll.cross(b, ra);
        if (Score{new_max, new_cross} < Score{load[size_t(top[0])], cross_rows}) {
          load[size_t(ra)] += delta;
          load[size_t(rb)] -= delta;
          cross_rows = new_cross;
          std::swap(assign[size_t(a)], assign[size_t(b)]);
          refresh_top();
          improved = true;
        }
      }
    if (!improved) break;
  }
}

// The time of one all-to-all phase: max over ranks of latency × peers + bytes / bandwidth, with
// sent and received bytes both counted. `rows` (R, R): rows from src to dst.
double phase_seconds(const std::vector<int64_t>& rows, const Topology& topo,
                     const CostModel& cost) {
  const int64_t R = topo.ranks;
  double worst = 0;
  for (int64_t r = 0; r < R; ++r) {
    int64_t peers_intra = 0, peers_inter = 0, rows_intra = 0, rows_inter = 0;
    for (int64_t p = 0; p < R; ++p) {
      if (p == r) continue;
      const int64_t sent = rows[size_t(r * R + p)], recv = rows[size_t(p * R + r)];
      if (sent + recv == 0) continue;
      const bool same_node = topo.node_of(r) == topo.node_of(p);
      (same_node ? peers_intra : peers_inter) += 1;
      (same_node ? rows_intra : rows_inter) += sent + recv;
    }
    double t = 0;
    if (peers_intra) t += double(peers_intra) * cost.intra_latency_us * 1e-6;
    if (peers_inter) t += double(peers_inter) * cost.inter_latency_us * 1e-6;
    if (rows_intra) t += double(rows_intra) * cost.row_bytes() / (cost.intra_gbps * 1e9);
    if (rows_inter) t += double(rows_inter) * cost.row_bytes() / (cost.inter_gbps * 1e9);
    worst = std::max(worst, t);
  }
  return worst;
}

}  // namespace

void validate(const Topology& topo, int64_t experts) {
  if (topo.ranks < 1) fail("--ranks {}: must be at least 1", topo.ranks);
  if (experts % topo.ranks != 0)
    fail("--ranks {}: must divide the trace's {} experts", topo.ranks, experts);
  if (topo.ranks_per_node < 1 || topo.ranks % topo.ranks_per_node != 0)
    fail("--ranks-per-node {}: must be at least 1 and divide --ranks {}", topo.ranks_per_node,
         topo.ranks);
}

void validate(const CostModel& cost, const Topology& topo) {
  if (cost.hidden < 1) fail("--hidden {}: must be at least 1", cost.hidden);
  if (cost.expert_ff < 1) fail("--expert-ff {}: must be at least 1", cost.expert_ff);
  if (!positive_finite(cost.bytes_per_element))
    fail("--bytes-per-element {}: must be a positive number", cost.bytes_per_element);
  if (!positive_finite(cost.gemm_gflops))
    fail("--gemm-gflops {}: must be a positive number", cost.gemm_gflops);
  auto shown = [](double v) {
    return std::isnan(v) ? std::string("(missing)") : fmt::format("{}", v);
  };
  if (topo.ranks_per_node > 1 && !positive_finite(cost.intra_gbps))
    fail("--link intra={}: {} ranks per node need a positive intra-node bandwidth (GB/s)",
         shown(cost.intra_gbps), topo.ranks_per_node);
  if (topo.nodes() > 1 && !positive_finite(cost.inter_gbps))
    fail("--link inter={}: {} nodes need a positive inter-node bandwidth (GB/s)",
         shown(cost.inter_gbps), topo.nodes());
  for (const auto& [name, v] :
       {std::pair{"intra", cost.intra_latency_us}, std::pair{"inter", cost.inter_latency_us}})
    if (!std::isfinite(v) || v < 0)
      fail("--latency-us {}={}: must be a non-negative number of microseconds", name, v);
}

void validate(const Workload& work) {
  if (work.tokens_per_step < 0)
    fail("--tokens-per-step {}: must be positive (0 = all tokens)", work.tokens_per_step);
  if (!std::isfinite(work.capacity_factor) || work.capacity_factor < 0)
    fail("--capacity-factor {}: must be a positive number", work.capacity_factor);
}

LinkPair parse_link_pair(const std::string& flag, const std::string& value) {
  LinkPair out{NAN, NAN};
  std::stringstream ss(value);
  std::string item;
  bool any = false;
  while (std::getline(ss, item, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos)
      fail("{} '{}': expected intra=NUMBER,inter=NUMBER, got '{}'", flag, value, item);
    const std::string key = item.substr(0, eq);
    const double v = parse_number(flag, value, item.substr(eq + 1));
    if (key == "intra")
      out.intra = v;
    else if (key == "inter")
      out.inter = v;
    else
      fail("{} '{}': unknown key '{}' (expected intra or inter)", flag, value, key);
    any = true;
  }
  if (!any) fail("{} '{}': expected intra=NUMBER,inter=NUMBER", flag, value);
  return out;
}

RoutingTrace concat_traces(const std::vector<RoutingTrace>& traces,
                           const std::vector<std::string>& sources) {
  if (traces.empty()) fail("ep-plan: no traces given (--trace)");
  RoutingTrace out;
  out.layers = traces[0].layers;
  out.experts = traces[0].experts;
  out.meta = traces[0].meta;
  for (size_t f = 0; f < traces.size(); ++f) {
    const RoutingTrace& t = traces[f];
    if (t.layers != out.layers)
      fail("{}: field 'layers' (MoE layers) is {}, but {} has {}", sources[f], t.layers, sources[0],
           out.layers);
    if (t.experts != out.experts)
      fail("{}: field 'experts' is {}, but {} has {}", sources[f], t.experts, sources[0],
           out.experts);
    out.k = std::max(out.k, t.k);
  }
  const int64_t L = out.layers, K = out.k;
  for (const RoutingTrace& t : traces) {
    const int64_t N = t.size();
    out.tokens.insert(out.tokens.end(), t.tokens.begin(), t.tokens.end());
    out.positions.insert(out.positions.end(), t.positions.begin(), t.positions.end());
    out.sequences.insert(out.sequences.end(), t.sequences.begin(), t.sequences.end());
    // Pad each (token, layer) row from t.k slots to K.
    for (int64_t n = 0; n < N; ++n)
      for (int64_t l = 0; l < L; ++l)
        for (int64_t j = 0; j < K; ++j) {
          const bool have = j < t.k;
          const size_t src = size_t((n * L + l) * t.k + j);
          out.ids.push_back(have ? t.ids[src] : -1);
          out.weights.push_back(have ? t.weights[src] : 0.0f);
        }
  }
  return out;
}

std::vector<int32_t> token_ranks(int64_t tokens, int64_t ranks, int64_t tokens_per_step) {
  const int64_t S = tokens_per_step > 0 ? tokens_per_step : std::max<int64_t>(tokens, 1);
  std::vector<int32_t> out(static_cast<size_t>(tokens));
  for (int64_t start = 0; start < tokens; start += S) {
    const int64_t n = std::min(S, tokens - start), base = n / ranks, extra = n % ranks;
    int64_t t = start;
    for (int64_t r = 0; r < ranks; ++r) {
      // The last `extra` ranks take one token more.
      const int64_t share = base + (r >= ranks - extra ? 1 : 0);
      for (int64_t i = 0; i < share; ++i) out[size_t(t++)] = int32_t(r);
    }
  }
  return out;
}

RouteCounts count_routes(const RoutingTrace& trace, const Topology& topo, const Workload& work) {
  RouteCounts c;
  c.layers = trace.layers;
  c.ranks = topo.ranks;
  c.experts = trace.experts;
  c.rows.assign(static_cast<size_t>(c.layers * c.ranks * c.experts), 0);
  const std::vector<int32_t> owner = token_ranks(trace.size(), topo.ranks, work.tokens_per_step);
  const int64_t L = trace.layers, K = trace.k;
  for (int64_t n = 0; n < trace.size(); ++n)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t j = 0; j < K; ++j) {
        const int32_t e = trace.ids[size_t((n * L + l) * K + j)];
        if (e >= 0) ++c.rows[size_t((l * c.ranks + owner[size_t(n)]) * c.experts + e)];
      }
  return c;
}

Placement contiguous_placement(int64_t layers, int64_t experts, const Topology& topo) {
  validate(topo, experts);
  Placement p;
  p.name = "contiguous";
  p.layers = layers;
  p.experts = experts;
  const int64_t per = experts / topo.ranks;
  p.rank.resize(static_cast<size_t>(layers * experts));
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t e = 0; e < experts; ++e) p.rank[size_t(l * experts + e)] = int32_t(e / per);
  p.replicas.assign(static_cast<size_t>(layers * experts), {});
  return p;
}

Placement balanced_placement(const RouteCounts& counts, const Topology& topo) {
  const int64_t L = counts.layers, E = counts.experts, R = topo.ranks;
  Placement p = contiguous_placement(L, E, topo);
  p.name = "balanced";
  const int64_t per = E / R, nodes = topo.nodes();
  for (int64_t l = 0; l < L; ++l) {
    LayerLoad ll;
    ll.experts = E;
    ll.ranks = R;
    ll.topo = &topo;
    ll.expert_rows.assign(static_cast<size_t>(E), 0);
    ll.node_rows.assign(static_cast<size_t>(nodes * E), 0);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t e = 0; e < E; ++e) {
        ll.expert_rows[size_t(e)] += counts.at(l, r, e);
        ll.node_rows[size_t(topo.node_of(r) * E + e)] += counts.at(l, r, e);
      }
    // LPT: heaviest expert first onto the least-loaded rank with room (ties: fewer cross-node
    // rows, then the lower rank).
    std::vector<int32_t> order(static_cast<size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return ll.expert_rows[size_t(a)] > ll.expert_rows[size_t(b)];
    });
    std::vector<int64_t> load(static_cast<size_t>(R), 0), held(static_cast<size_t>(R), 0);
    std::vector<int32_t> lpt(static_cast<size_t>(E), 0);
    for (int32_t e : order) {
      int64_t chosen = -1;
      for (int64_t r = 0; r < R; ++r) {
        if (held[size_t(r)] >= per) continue;
        if (chosen < 0 || std::tuple(load[size_t(r)], ll.cross(e, r)) <
                              std::tuple(load[size_t(chosen)], ll.cross(e, chosen)))
          chosen = r;
      }
      lpt[size_t(e)] = int32_t(chosen);
      load[size_t(chosen)] += ll.expert_rows[size_t(e)];
      ++held[size_t(chosen)];
    }
    local_search(ll, lpt);
    // Also from contiguous: LPT alone does not guarantee beating it.
    std::vector<int32_t> contiguous(p.rank.begin() + l * E, p.rank.begin() + (l + 1) * E);
    local_search(ll, contiguous);
    const std::vector<int32_t>& best = ll.score(lpt) <= ll.score(contiguous) ? lpt : contiguous;
    std::copy(best.begin(), best.end(), p.rank.begin() + l * E);
  }
  return p;
}

int32_t pick_holder(int32_t source, const std::vector<int32_t>& holders, const Topology& topo) {
  for (int32_t h : holders)
    if (h == source) return h;
  for (int32_t h : holders)
    if (topo.node_of(h) == topo.node_of(source)) return h;
  return holders.front();
}

void add_replicas(Placement& p, const RouteCounts& counts, const Topology& topo,
                  int64_t redundant) {
  const int64_t L = p.layers, E = p.experts, R = topo.ranks;
  if (redundant < 0 || redundant > E)
    fail("--redundant {}: must be between 0 and the {} experts", redundant, E);
  if (redundant == 0) return;
  // Equal replica slots per rank, as EPLB gives every rank the same number of physical experts.
  const int64_t slots = (redundant + R - 1) / R;
  std::vector<std::vector<int32_t>> holders = holder_lists(p);
  for (int64_t l = 0; l < L; ++l) {
    std::vector<int64_t> load(static_cast<size_t>(R), 0), expert_rows(static_cast<size_t>(E), 0);
    std::vector<int64_t> used_slots(static_cast<size_t>(R), 0);
    for (int64_t e = 0; e < E; ++e) {
      const auto& h = holders[size_t(l * E + e)];
      for (size_t i = 1; i < h.size(); ++i) ++used_slots[size_t(h[i])];
      for (int64_t r = 0; r < R; ++r) {
        load[size_t(pick_holder(int32_t(r), h, topo))] += counts.at(l, r, e);
        expert_rows[size_t(e)] += counts.at(l, r, e);
      }
    }
    std::vector<int32_t> hot(static_cast<size_t>(E));
    std::iota(hot.begin(), hot.end(), 0);
    std::stable_sort(hot.begin(), hot.end(), [&](int32_t a, int32_t b) {
      return expert_rows[size_t(a)] > expert_rows[size_t(b)];
    });
    for (int64_t i = 0; i < redundant; ++i) {
      const int32_t e = hot[size_t(i)];
      auto& h = holders[size_t(l * E + e)];
      const int64_t home = topo.node_of(h.front());
      // Other nodes' ranks first, least loaded first; then this node's.
      std::vector<int32_t> candidates;
      for (int64_t r = 0; r < R; ++r)
        if (std::find(h.begin(), h.end(), r) == h.end() && used_slots[size_t(r)] < slots)
          candidates.push_back(int32_t(r));
      std::stable_sort(candidates.begin(), candidates.end(), [&](int32_t a, int32_t b) {
        return std::tuple(topo.node_of(a) == home, load[size_t(a)]) <
               std::tuple(topo.node_of(b) == home, load[size_t(b)]);
      });
      const int64_t current_max = *std::max_element(load.begin(), load.end());
      bool placed = false;
      for (int32_t cand : candidates) {
        std::vector<int32_t> trial = h;
        trial.push_back(cand);
        std::vector<int64_t> trial_load = load;
        for (int64_t r = 0; r < R; ++r) {
          trial_load[size_t(pick_holder(int32_t(r), h, topo))] -= counts.at(l, r, e);
          trial_load[size_t(pick_holder(int32_t(r), trial, topo))] += counts.at(l, r, e);
        }
        // A copy that would raise the layer's max rank load is not worth its memory.
        if (*std::max_element(trial_load.begin(), trial_load.end()) > current_max) continue;
        h = std::move(trial);
        load = std::move(trial_load);
        ++used_slots[size_t(cand)];
        p.replicas[size_t(l * E + e)].push_back(cand);
        placed = true;
        break;
      }
      if (!placed) ++p.skipped_replicas;
    }
  }
}

PlanResult evaluate(const RoutingTrace& trace, const Topology& topo, const Placement& placement,
                    const Workload& work, const CostModel& cost) {
  validate(topo, trace.experts);
  validate(work);
  validate(cost, topo);
  if (placement.layers != trace.layers || placement.experts != trace.experts)
    fail("ep-plan: placement '{}' is for {} layers of {} experts, the trace has {} of {}",
         placement.name, placement.layers, placement.experts, trace.layers, trace.experts);
  const int64_t N = trace.size(), L = trace.layers, K = trace.k, E = trace.experts;
  const int64_t R = topo.ranks;
  const int64_t S = work.tokens_per_step > 0 ? work.tokens_per_step : std::max<int64_t>(N, 1);
  const std::vector<int32_t> owner = token_ranks(N, R, work.tokens_per_step);
  // Destination rank of each (layer, expert, source rank): (L, E, R).
  const std::vector<std::vector<int32_t>> holders = holder_lists(placement);
  std::vector<int32_t> dest(static_cast<size_t>(L * E * R));
  for (int64_t le = 0; le < L * E; ++le)
    for (int64_t r = 0; r < R; ++r)
      dest[size_t(le * R + r)] = pick_holder(int32_t(r), holders[size_t(le)], topo);

  PlanResult out;
  out.placement = placement.name;
  out.tokens = N;
  out.ranks = R;
  out.row_bytes = cost.row_bytes();
  out.steps = (N + S - 1) / S;
  out.layers.resize(static_cast<size_t>(L));
  for (LayerPlanStats& s : out.layers) {
    s.rank_rows.assign(static_cast<size_t>(R), 0);
    s.pair_sent = s.pair_recv = s.dedup_sent = s.dedup_recv = s.rank_rows;
  }
  const double flops_per_row = 2.0 * 3.0 * double(cost.hidden) * double(cost.expert_ff);
  std::vector<int64_t> load(static_cast<size_t>(R)), used(static_cast<size_t>(E));
  std::vector<int64_t> pair(static_cast<size_t>(R * R)), dedup(static_cast<size_t>(R * R));
  std::vector<int64_t> seen(static_cast<size_t>(R));  // last token that sent a row to each rank
  for (int64_t start = 0; start < N; start += S) {
    const int64_t end = std::min(N, start + S);
    for (int64_t l = 0; l < L; ++l) {
      LayerPlanStats& st = out.layers[size_t(l)];
      std::fill(load.begin(), load.end(), 0);
      std::fill(used.begin(), used.end(), 0);
      std::fill(pair.begin(), pair.end(), 0);
      std::fill(dedup.begin(), dedup.end(), 0);
      std::fill(seen.begin(), seen.end(), -1);
      int64_t step_rows = 0;
      for (int64_t n = start; n < end; ++n)
        for (int64_t j = 0; j < K; ++j) step_rows += trace.ids[size_t((n * L + l) * K + j)] >= 0;
      // ceil(C · rows / E), less a relative 1e-12 so that 1.1 × 10 gives 11, not 12.
      const double exact = work.capacity_factor * double(step_rows) / double(E);
      const int64_t capacity = work.capacity_factor > 0
                                   ? int64_t(std::ceil(exact - 1e-12 * std::max(1.0, exact)))
                                   : kNoCapacity;
      st.routed_rows += step_rows;
      for (int64_t n = start; n < end; ++n) {
        const int32_t src = owner[size_t(n)];
        for (int64_t j = 0; j < K; ++j) {
          const int32_t e = trace.ids[size_t((n * L + l) * K + j)];
          if (e < 0) continue;
          // Token order, then slot order: rows past the expert's capacity are dropped.
          if (used[size_t(e)] >= capacity) {
            ++st.dropped_rows;
            continue;
          }
          ++used[size_t(e)];
          const int32_t dst = dest[size_t((l * E + e) * R + src)];
          ++load[size_t(dst)];
          if (dst == src) continue;
          ++pair[size_t(src * R + dst)];
          if (seen[size_t(dst)] != n) {
            seen[size_t(dst)] = n;
            ++dedup[size_t(src * R + dst)];
          }
        }
      }
      for (int64_t r = 0; r < R; ++r) st.rank_rows[size_t(r)] += load[size_t(r)];
      for (int64_t a = 0; a < R; ++a)
        for (int64_t b = 0; b < R; ++b) {
          const int64_t pr = pair[size_t(a * R + b)], dr = dedup[size_t(a * R + b)];
          const bool same_node = topo.node_of(a) == topo.node_of(b);
          (same_node ? st.pair_intra_rows : st.pair_inter_rows) += pr;
          (same_node ? st.dedup_intra_rows : st.dedup_inter_rows) += dr;
          st.pair_sent[size_t(a)] += pr;
          st.pair_recv[size_t(b)] += pr;
          st.dedup_sent[size_t(a)] += dr;
          st.dedup_recv[size_t(b)] += dr;
        }
      const double compute = double(*std::max_element(load.begin(), load.end())) * flops_per_row /
                             (cost.gemm_gflops * 1e9);
      // Combine sends every dispatched row back: the transposed matrix, so the same peers,
      // the same sent + received bytes per rank and the same time.
      const double phase = phase_seconds(pair, topo, cost);
      const double dedup_phase = phase_seconds(dedup, topo, cost);
      st.compute_s += compute;
      st.dispatch_s += phase;
      st.combine_s += phase;
      st.overlapped_s += std::max(compute, 2 * phase);
      st.dedup_dispatch_s += dedup_phase;
      st.dedup_combine_s += dedup_phase;
      st.dedup_overlapped_s += std::max(compute, 2 * dedup_phase);
    }
  }
  const double steps = double(std::max<int64_t>(out.steps, 1));
  double sum_imbalance = 0;
  for (LayerPlanStats& st : out.layers) {
    const int64_t total = std::accumulate(st.rank_rows.begin(), st.rank_rows.end(), int64_t(0));
    const int64_t most = *std::max_element(st.rank_rows.begin(), st.rank_rows.end());
    st.max_over_mean = total > 0 ? double(most) * double(R) / double(total) : 0.0;
    sum_imbalance += st.max_over_mean;
    out.max_max_over_mean = std::max(out.max_max_over_mean, st.max_over_mean);
    out.routed_rows += st.routed_rows;
    out.dropped_rows += st.dropped_rows;
    // × 2: dispatch and combine.
    out.pair_intra_bytes_per_step += 2.0 * double(st.pair_intra_rows) * out.row_bytes / steps;
    out.pair_inter_bytes_per_step += 2.0 * double(st.pair_inter_rows) * out.row_bytes / steps;
    out.dedup_intra_bytes_per_step += 2.0 * double(st.dedup_intra_rows) * out.row_bytes / steps;
    out.dedup_inter_bytes_per_step += 2.0 * double(st.dedup_inter_rows) * out.row_bytes / steps;
    out.step_serial_s += (st.dispatch_s + st.compute_s + st.combine_s) / steps;
    out.step_overlapped_s += st.overlapped_s / steps;
    out.dedup_step_serial_s += (st.dedup_dispatch_s + st.compute_s + st.dedup_combine_s) / steps;
    out.dedup_step_overlapped_s += st.dedup_overlapped_s / steps;
  }
  out.mean_max_over_mean = L > 0 ? sum_imbalance / double(L) : 0.0;
  out.dropped_fraction =
      out.routed_rows > 0 ? double(out.dropped_rows) / double(out.routed_rows) : 0.0;
  return out;
}

}  // namespace switchyard::plan

// Expert parallelism against one process: P ranks each route their own share of a global batch
// (ranks' tokens in rank order make the batch) through layer::ExpertParallelDispatcher over MPI,
// holding only their E/P experts (MoEParams::w*_experts); every rank also runs the whole batch in
// one process with the local dispatcher. Forward y, backward dx and the local experts' weight
// gradients of each rank must equal the single-process ones on its tokens, and the all-reduced
// gate gradient the single-process gate gradient (1e-5 of the largest magnitude: the expert
// GEMMs see other row counts); the byte counters of each phase must equal the rows the plan
// moves between this rank and the others. Cases: random top-2 routing; forced routing where rank 1
// sends only to itself, rank P-1 (P > 2) sends nothing and expert 0 gets no token; uneven shards.
// Run under mpirun -np 2 and 4 (tests/dist/dist.cmake). Fixed seed, printed; SWITCHYARD_TEST_SEED
// overrides it.
#include <mpi.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/moe_layer.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "dist/mpi_communicator.h"
#include "layer/expert_parallel_dispatcher.h"

namespace {

using namespace switchyard;

std::vector<float> normal(std::mt19937_64& rng, size_t n, double scale) {
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = float(dist(rng));
  return v;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::abs(x)));
  return m;
}

struct Failure {
  std::string what;
};

void expect_close(const char* what, const float* got, const float* want, int64_t n, double scale,
                  int rank, const std::string& name) {
  for (int64_t i = 0; i < n; ++i)
    if (!(std::abs(double(got[i]) - double(want[i])) <= 1e-5 * std::max(1.0, scale)))
      throw Failure{name + ": rank " + std::to_string(rank) + ": " + what + "[" +
                    std::to_string(i) + "] = " + std::to_string(got[i]) + ", one process gives " +
                    std::to_string(want[i])};
}

// `router` routes the whole batch; `across_ranks`: the ranks route their tokens together
// (MoELayer::set_routing_communicator), else each alone (exact only for token-local routing).
// `ranks_per_node` > 0: the hierarchical dispatcher with that many ranks per node.
void run_case(const std::string& name, bool forced, const nlohmann::json& router, bool across_ranks,
              int ranks_per_node, uint64_t seed, dist::MpiCommunicator& comm) {
  const int P = comm.size(), rank = comm.rank();
  const int64_t d = 12, E = 8, F = 8, k = 2;
  const MoEShape shape{d, E, F, 0};
  std::vector<int64_t> shard(static_cast<size_t>(P)), begin(static_cast<size_t>(P) + 1, 0);
  for (int q = 0; q < P; ++q) {
    shard[size_t(q)] = 9 + 3 * q;  // uneven
    begin[size_t(q) + 1] = begin[size_t(q)] + shard[size_t(q)];
  }
  const int64_t T = begin[size_t(P)], t0 = begin[size_t(rank)], Tr = shard[size_t(rank)];
  std::mt19937_64 rng(seed);
  const std::vector<float> x = normal(rng, size_t(T * d), 1.0),
                           gate = normal(rng, size_t(E * d), 0.5);
  const std::vector<float> w1 = normal(rng, size_t(E * F * d), 0.3),
                           w3 = normal(rng, size_t(E * F * d), 0.3),
                           w2 = normal(rng, size_t(E * d * F), 0.3);
  const std::vector<float> dy = normal(rng, size_t(T * d), 1.0);
  std::vector<int32_t> force(size_t(T * k));
  const int64_t per_rank = E / P;
  std::uniform_int_distribution<int32_t> any(1, int32_t(E - 1));  // never expert 0
  for (int q = 0; q < P; ++q)
    for (int64_t t = begin[size_t(q)]; t < begin[size_t(q) + 1]; ++t) {
      int32_t a = any(rng), b = any(rng);
      while (b == a) b = any(rng);
      if (q == 1) {  // only to rank 1's own experts
        a = int32_t(per_rank + (t % per_rank));
        b = int32_t(per_rank + ((t + 1) % per_rank));
        if (b == a) b = -1;
      }
      if (P > 2 && q == P - 1) a = b = -1;  // sends nothing
      force[size_t(t * k)] = a;
      force[size_t(t * k + 1)] = b;
    }
  const LayerConfig config = parse_layer_config(router, "test_expert_parallel");

  // One process, the whole batch.
  MoELayer whole(config, shape);
  MoEParams pw;
  pw.gate = gate.data();
  pw.w1 = w1.data();
  pw.w3 = w3.data();
  pw.w2 = w2.data();
  MoEBatch bw;
  bw.T = T;
  bw.x = x.data();
  if (forced) {
    bw.forced_experts = force.data();
    bw.forced_k = k;
  }
  MoECache cw;
  std::vector<float> y_ref(size_t(T * d)), dx_ref(size_t(T * d)), dgate_ref(size_t(E * d));
  std::vector<float> dw1_ref(w1.size()), dw3_ref(w3.size()), dw2_ref(w2.size());
  whole.forward(pw, bw, cw, y_ref.data());
  if (router.value("router", "") == "topk" && router.value("capacity_factor", 0.0) > 0 &&
      cw.stats.dropped == 0)
    throw Failure{name + ": the capacity dropped nothing; the case tests no drops"};
  MoEGrads gw;
  gw.gate = dgate_ref.data();
  gw.w1 = dw1_ref.data();
  gw.w3 = dw3_ref.data();
  gw.w2 = dw2_ref.data();
  whole.backward(pw, bw, cw, dy.data(), dx_ref.data(), gw);

  // This rank's share, its experts only.
  MoELayer part(config, shape);
  part.set_dispatcher(std::make_unique<layer::ExpertParallelDispatcher>(comm, ranks_per_node));
  if (across_ranks) part.set_routing_communicator(&comm);
  std::vector<const float*> w1e(size_t(E), nullptr), w3e(size_t(E), nullptr),
      w2e(size_t(E), nullptr);
  std::vector<float> dw1(w1.size(), 0.0f), dw3(w3.size(), 0.0f), dw2(w2.size(), 0.0f);
  std::vector<float*> g1(static_cast<size_t>(E), nullptr), g3(g1), g2(g1);
  for (int64_t e = rank * per_rank; e < (rank + 1) * per_rank; ++e) {
    w1e[size_t(e)] = w1.data() + e * F * d;
    w3e[size_t(e)] = w3.data() + e * F * d;
    w2e[size_t(e)] = w2.data() + e * d * F;
    g1[size_t(e)] = dw1.data() + e * F * d;
    g3[size_t(e)] = dw3.data() + e * F * d;
    g2[size_t(e)] = dw2.data() + e * d * F;
  }
  MoEParams pp;
  pp.gate = gate.data();
  pp.w1_experts = w1e.data();
  pp.w3_experts = w3e.data();
  pp.w2_experts = w2e.data();
  MoEBatch bp;
  bp.T = Tr;
  bp.x = x.data() + t0 * d;
  if (forced) {
    bp.forced_experts = force.data() + t0 * k;
    bp.forced_k = k;
  }
  MoECache cp;
  std::vector<float> y(size_t(Tr * d)), dx(size_t(Tr * d)), dgate(size_t(E * d));
  part.forward(pp, bp, cp, y.data());
  MoEGrads gp;
  gp.gate = dgate.data();
  gp.w1_experts = g1.data();
  gp.w3_experts = g3.data();
  gp.w2_experts = g2.data();
  part.backward(pp, bp, cp, dy.data() + t0 * d, dx.data(), gp);
  comm.allreduce_sum(dgate.data(), int64_t(dgate.size()));

  // The byte counters against the plan: rows between this rank and the others, each way, and
  // tokens (a token goes once to each rank that holds any of its experts).
  int64_t out_rows = 0, in_rows = 0;
  std::set<std::pair<int32_t, int>> out_tokens, in_tokens;  // (token, other rank)
  const RoutingPlan& plan = cw.plan;
  for (size_t a = 0; a < plan.size(); ++a) {
    if (!plan.kept[a]) continue;
    int src = 0;
    while (plan.token[a] >= begin[size_t(src) + 1]) ++src;
    const int dst = int(plan.expert[a] / per_rank);
    if (src == rank && dst != rank) {
      ++out_rows;
      out_tokens.insert({plan.token[a], dst});
    }
    if (dst == rank && src != rank) {
      ++in_rows;
      in_tokens.insert({plan.token[a], src});
    }
  }
  const int64_t row = d * int64_t(sizeof(float)), entry = 12, grad = sizeof(float);
  const int64_t to = int64_t(out_tokens.size()), from = int64_t(in_tokens.size());
  const MoECache::ExpertParallel& ep = cp.ep;
  const std::pair<const char*, std::array<int64_t, 4>> traffic[] = {
      {"dispatch",
       {ep.dispatch.sent, to * row + out_rows * entry, ep.dispatch.received,
        from * row + in_rows * entry}},
      {"combine", {ep.combine.sent, from * row, ep.combine.received, to * row}},
      {"backward dispatch",
       {ep.backward_dispatch.sent, to * row + in_rows * grad, ep.backward_dispatch.received,
        from * row + out_rows * grad}},
      {"backward combine",
       {ep.backward_combine.sent, from * row, ep.backward_combine.received, to * row}}};
  if (ranks_per_node > 0) {
    // Hierarchical: only the first stage crosses nodes, once per (token, node) and row entries.
    const int G = ranks_per_node, node = rank / G, local = rank % G;
    int64_t rows_out = 0, rows_in = 0;
    std::set<std::pair<int32_t, int>> tok_out, tok_in;
    for (size_t a = 0; a < plan.size(); ++a) {
      if (!plan.kept[a]) continue;
      int src = 0;
      while (plan.token[a] >= begin[size_t(src) + 1]) ++src;
      const int dst_node = int(plan.expert[a] / per_rank) / G;
      if (src == rank && dst_node != node) {
        ++rows_out;
        tok_out.insert({plan.token[a], dst_node});
      }
      if (dst_node == node && src / G != node && src % G == local) {
        ++rows_in;
        tok_in.insert({plan.token[a], src});
      }
    }
    const int64_t o = int64_t(tok_out.size()), i = int64_t(tok_in.size());
    const int64_t want_sent =
        o * row + rows_out * entry + i * row + o * row + rows_in * grad + i * row;
    const int64_t want_received =
        i * row + rows_in * entry + o * row + i * row + rows_out * grad + o * row;
    if (ep.inter_node.sent != want_sent || ep.inter_node.received != want_received)
      throw Failure{name + ": rank " + std::to_string(rank) + ": across nodes counted " +
                    std::to_string(ep.inter_node.sent) + " / " +
                    std::to_string(ep.inter_node.received) + " bytes, the plan gives " +
                    std::to_string(want_sent) + " / " + std::to_string(want_received)};
  }
  for (const auto& [phase, v] : traffic)
    if (ranks_per_node == 0)
      if (v[0] != v[1] || v[2] != v[3])
        throw Failure{name + ": rank " + std::to_string(rank) + ": " + phase + " counted " +
                      std::to_string(v[0]) + " bytes sent / " + std::to_string(v[2]) +
                      " received, the plan gives " + std::to_string(v[1]) + " / " +
                      std::to_string(v[3])};

  expect_close("y", y.data(), y_ref.data() + t0 * d, Tr * d, max_abs(y_ref), rank, name);
  expect_close("dx", dx.data(), dx_ref.data() + t0 * d, Tr * d, max_abs(dx_ref), rank, name);
  expect_close("gate grad (all-reduced)", dgate.data(), dgate_ref.data(), E * d, max_abs(dgate_ref),
               rank, name);
  for (int64_t e = rank * per_rank; e < (rank + 1) * per_rank; ++e) {
    expect_close("experts.w1 grad", dw1.data() + e * F * d, dw1_ref.data() + e * F * d, F * d,
                 max_abs(dw1_ref), rank, name);
    expect_close("experts.w3 grad", dw3.data() + e * F * d, dw3_ref.data() + e * F * d, F * d,
                 max_abs(dw3_ref), rank, name);
    expect_close("experts.w2 grad", dw2.data() + e * d * F, dw2_ref.data() + e * d * F, d * F,
                 max_abs(dw2_ref), rank, name);
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int status = 0;
  {
    switchyard::dist::MpiCommunicator comm;
    const char* s = std::getenv("SWITCHYARD_TEST_SEED");
    const uint64_t seed = s ? std::strtoull(s, nullptr, 10) : 20261201;
    if (comm.rank() == 0)
      std::printf("seed %llu (SWITCHYARD_TEST_SEED replays), %d ranks\n",
                  static_cast<unsigned long long>(seed), comm.size());
    using nlohmann::json;
    // Each rank routing alone: no aux losses (batch statistics); the gate gradient's routed part
    // is a sum over tokens. Across ranks: capacity drops, balance and z losses, expert choice.
    const json plain = {{"router", "topk"}, {"k", 2}, {"losses", json::object()}};
    const json capacity = {{"router", "topk"},
                           {"k", 2},
                           {"capacity_factor", 1.0},
                           {"losses", {{"balance", 0.01}, {"z", 0.001}}}};
    const json expert_choice = {{"router", "expert_choice"}, {"capacity_factor", 1.5}};
    struct Case {
      std::string name;
      bool forced;
      json router;
      bool across;
      int ranks_per_node;
    };
    std::vector<Case> cases = {
        {"top-2, random gate", false, plain, false, 0},
        {"forced: rank 1 to itself, the last rank nothing, expert 0 none", true, plain, false, 0},
        {"routed across ranks: top-2, capacity 1.0 (drops), balance + z loss", false, capacity,
         true, 0},
        {"routed across ranks: expert choice", false, expert_choice, true, 0}};
    if (comm.size() == 4) {  // 2 nodes x 2 ranks
      cases.push_back({"hierarchical 2 nodes x 2: top-2, random gate", false, plain, false, 2});
      cases.push_back({"hierarchical 2 nodes x 2: forced", true, plain, false, 2});
      cases.push_back({"hierarchical 2 nodes x 2, routed across ranks: capacity, losses", false,
                       capacity, true, 2});
    }
    for (const auto& [name, forced, router, across, ranks_per_node] : cases) {
      int failed = 0;
      std::string why;
      try {
        run_case(name, forced, router, across, ranks_per_node, seed, comm);
      } catch (const Failure& f) {
        failed = 1;
        why = f.what;
      } catch (const switchyard::Error& e) {
        failed = 1;
        why = name + ": rank " + std::to_string(comm.rank()) + ": " + e.what();
      }
      if (failed) std::fprintf(stderr, "FAIL %s\n", why.c_str());
      int any = 0;
      MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
      if (comm.rank() == 0) std::printf("%s %s\n", any ? "FAIL" : "PASS", name.c_str());
      status |= any;
    }
  }
  MPI_Finalize();
  return status;
}

// Layer benchmarks: the MoE layer against its dense floor (the same FLOPs as one plain GEMM chain)
// on two shapes, plus an estimate of the routing + dispatch + combine overhead. Run through
// bench/run_layer_bench.sh, which puts these next to a PyTorch per-expert loop in one table
// (docs/performance.md).
//
// Shapes: T = 4096 tokens, d = 512, SwiGLU experts, softmax top-k renormalised (dropless):
//   coarse: E = 8,  k = 2, F = 1024
//   fine:   E = 64, k = 8, F = 256
// Both do T·k·6·d·F = 25.8 GFLOP forward; backward counts as 2x forward.
//
// Benchmarks per shape (names "<shape>/<what>"):
//   layer_fwd, layer_fwdbwd           MoELayer::forward (+ backward with every gradient)
//   dense_floor_fwd, dense_floor_fwdbwd  one SwiGLU FFN on T·k rows with cpu::gemm
//   routing_overhead_fwd(_fwdbwd)     the layer with F = 8: routing, dispatch, combine and the
//                                     per-call work that does not scale with F (an estimate:
//                                     its expert GEMMs are F/8 times smaller than the real ones)
//   expert_ffn_f8_fwd(_fwdbwd)        just those F = 8 expert FFNs (cpu::ffn_forward/backward on
//   the
//                                     same groups, threaded like the layer), so that
//                                     routing_overhead - expert_ffn_f8 is the overhead net of them
#include <benchmark/benchmark.h>
#include <omp.h>
#include <switchyard/moe_layer.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace {

using namespace switchyard;

constexpr int64_t kT = 4096;
constexpr int64_t kD = 512;
constexpr int64_t kRoutingF = 8;  // expert width of the routing-overhead estimate

struct Shape {
  const char* name;
  int64_t E, k, F;
};
constexpr Shape kShapes[] = {{"coarse", 8, 2, 1024}, {"fine", 64, 8, 256}};

double forward_flops(const Shape& s, int64_t F) {
  return double(kT * s.k) * 6.0 * double(kD * F);
}

std::vector<float> random_normal(uint64_t seed, size_t n, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// One layer with its weights, gradients, inputs and cache, built once per (shape, F) and reused by
// every run of every benchmark on it (so the cache's buffers are allocated once, at warm-up).
struct LayerSetup {
  std::unique_ptr<MoELayer> layer;
  std::vector<float> x, dy, gate, w1, w3, w2;
  std::vector<float> y, dx, dgate, dw1, dw3, dw2;
  MoECache cache;
  MoEParams params;
  MoEBatch batch;
  MoEGrads grads;

  LayerSetup(const Shape& s, int64_t F) {
    const nlohmann::json json = {{"router", "topk"}, {"k", s.k}};
    layer = std::make_unique<MoELayer>(parse_layer_config(json, "bench_layer"),
                                       MoEShape{kD, s.E, F, 0});
    const int64_t E = s.E;
    const float in_d = 1.0f / std::sqrt(float(kD)), in_f = 1.0f / std::sqrt(float(F));
    x = random_normal(1, size_t(kT * kD), 1.0f);
    dy = random_normal(2, size_t(kT * kD), 1.0f);
    // Random gate, 1/sqrt(d): logits ~ N(0, 1), so the routing is near-balanced.
    gate = random_normal(3, size_t(E * kD), in_d);
    w1 = random_normal(4, size_t(E * F * kD), in_d);
    w3 = random_normal(5, size_t(E * F * kD), in_d);
    w2 = random_normal(6, size_t(E * kD * F), in_f);
    y.resize(x.size());
    dx.resize(x.size());
    dgate.resize(gate.size());
    dw1.resize(w1.size());
    dw3.resize(w3.size());
    dw2.resize(w2.size());
    params = MoEParams{gate.data(), nullptr, w1.data(), w3.data(), w2.data()};
    batch = MoEBatch{kT, x.data(), nullptr, {}, nullptr};
    grads = MoEGrads{dgate.data(), dw1.data(), dw3.data(), dw2.data()};
    // Warm-up: allocates the cache and touches every buffer.
    layer->forward(params, batch, cache, y.data());
    layer->backward(params, batch, cache, dy.data(), dx.data(), grads);
  }

  void forward() { layer->forward(params, batch, cache, y.data()); }
  void backward() { layer->backward(params, batch, cache, dy.data(), dx.data(), grads); }
};

LayerSetup& layer_setup(const Shape& s, int64_t F) {
  static std::map<std::pair<std::string, int64_t>, std::unique_ptr<LayerSetup>> setups;
  auto& slot = setups[{s.name, F}];
  if (!slot) {
    setups.clear();  // one shape's buffers at a time
    setups[{s.name, F}] = std::make_unique<LayerSetup>(s, F);
    return *setups[{s.name, F}];
  }
  return *slot;
}

// The dense floor: one SwiGLU FFN on n = T·k rows, the same GEMM chain as one expert's
// (cpu::ffn_forward / ffn_backward), written out with cpu::gemm.
struct DenseSetup {
  int64_t n, F;
  std::vector<float> x, dout, w1, w3, w2;
  std::vector<float> h1, h3, act, out, dact, dh3, dw1, dw3, dw2, dx;

  DenseSetup(const Shape& s) : n(kT * s.k), F(s.F) {
    const float in_d = 1.0f / std::sqrt(float(kD)), in_f = 1.0f / std::sqrt(float(F));
    x = random_normal(11, size_t(n * kD), 1.0f);
    dout = random_normal(12, size_t(n * kD), 1.0f);
    w1 = random_normal(13, size_t(F * kD), in_d);
    w3 = random_normal(14, size_t(F * kD), in_d);
    w2 = random_normal(15, size_t(kD * F), in_f);
    for (auto* v : {&h1, &h3, &act, &dact, &dh3}) v->resize(size_t(n * F));
    for (auto* v : {&out, &dx}) v->resize(size_t(n * kD));
    for (auto* v : {&dw1, &dw3, &dw2}) v->resize(size_t(F * kD));
    forward();
    backward();
  }

  void forward() {
    const int64_t d = kD;
    cpu::gemm(false, true, n, F, d, 1.0f, x.data(), d, w1.data(), d, 0.0f, h1.data(), F);
    cpu::gemm(false, true, n, F, d, 1.0f, x.data(), d, w3.data(), d, 0.0f, h3.data(), F);
    const int64_t size = n * F;
    float* a = act.data();
    const float* p1 = h1.data();
    const float* p3 = h3.data();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < size; ++i) a[i] = p1[i] / (1.0f + std::exp(-p1[i])) * p3[i];
    cpu::gemm(false, true, n, d, F, 1.0f, act.data(), F, w2.data(), F, 0.0f, out.data(), d);
  }

  void backward() {
    const int64_t d = kD;
    cpu::gemm(true, false, d, F, n, 1.0f, dout.data(), d, act.data(), F, 0.0f, dw2.data(), F);
    cpu::gemm(false, false, n, F, d, 1.0f, dout.data(), d, w2.data(), F, 0.0f, dact.data(), F);
    const int64_t size = n * F;
    float* da = dact.data();
    float* d3 = dh3.data();
    const float* p1 = h1.data();
    const float* p3 = h3.data();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < size; ++i) {
      const float s = 1.0f / (1.0f + std::exp(-p1[i]));
      d3[i] = da[i] * p1[i] * s;
      da[i] = da[i] * p3[i] * s * (1.0f + p1[i] * (1.0f - s));
    }
    cpu::gemm(true, false, F, d, n, 1.0f, dh3.data(), F, x.data(), d, 0.0f, dw3.data(), d);
    cpu::gemm(true, false, F, d, n, 1.0f, dact.data(), F, x.data(), d, 0.0f, dw1.data(), d);
    cpu::gemm(false, false, n, d, F, 1.0f, dact.data(), F, w1.data(), d, 0.0f, dx.data(), d);
    cpu::gemm(false, false, n, d, F, 1.0f, dh3.data(), F, w3.data(), d, 1.0f, dx.data(), d);
  }
};

DenseSetup& dense_setup(const Shape& s) {
  static std::map<std::string, std::unique_ptr<DenseSetup>> setups;
  auto& slot = setups[s.name];
  if (!slot) {
    setups.clear();
    setups[s.name] = std::make_unique<DenseSetup>(s);
    return *setups[s.name];
  }
  return *slot;
}

// The F = 8 layer's expert FFNs alone, on the groups of its last forward (its cache), threaded as
// the layer threads them (src/layer/moe_layer.cpp, for_each_expert): in parallel over experts when
// E >= 2 * threads, else one by one with the GEMMs split across threads.
struct ExpertF8Setup {
  LayerSetup& layer;
  int64_t E, F, rows;
  std::vector<float> dout, dact, dh3, dw, dxd;

  ExpertF8Setup(LayerSetup& l, int64_t E_, int64_t F_)
      : layer(l), E(E_), F(F_), rows(l.cache.expert_offsets[size_t(E_)]) {
    dout = random_normal(21, size_t(rows * kD), 1.0f);
    dact.resize(size_t(rows * F));
    dh3.resize(size_t(rows * F));
    dw.resize(size_t(E * 3 * F * kD));
    dxd.resize(size_t(rows * kD));
  }

  template <typename Fn>
  void for_each_expert(Fn&& fn) {
    const bool by_expert = E >= 2 * omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) if (by_expert)
    for (int64_t e = 0; e < E; ++e) fn(e);
  }

  void forward() {
    MoECache& c = layer.cache;
    const int64_t d = kD;
    for_each_expert([&](int64_t e) {
      const int64_t o = c.expert_offsets[size_t(e)], n = c.expert_offsets[size_t(e) + 1] - o;
      cpu::ffn_forward(cpu::Act::SwiGLU, n, d, F, c.xd.data() + o * d, layer.w1.data() + e * F * d,
                       layer.w3.data() + e * F * d, layer.w2.data() + e * d * F,
                       c.h1.data() + o * F, c.h3.data() + o * F, c.act.data() + o * F,
                       c.out.data() + o * d);
    });
  }

  void backward() {
    MoECache& c = layer.cache;
    const int64_t d = kD;
    for_each_expert([&](int64_t e) {
      const int64_t o = c.expert_offsets[size_t(e)], n = c.expert_offsets[size_t(e) + 1] - o;
      float* w = dw.data() + e * 3 * F * d;
      cpu::ffn_backward(cpu::Act::SwiGLU, n, d, F, c.xd.data() + o * d, layer.w1.data() + e * F * d,
                        layer.w3.data() + e * F * d, layer.w2.data() + e * d * F,
                        c.h1.data() + o * F, c.h3.data() + o * F, c.act.data() + o * F,
                        dout.data() + o * d, dact.data() + o * F, dh3.data() + o * F, w, w + F * d,
                        w + 2 * F * d, dxd.data() + o * d, false);
    });
  }
};

void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void set_routing_counters(benchmark::State& state, const RoutingStats& stats) {
  state.counters["max_vio"] = stats.max_vio;
  state.counters["dropped"] = double(stats.dropped);
  state.counters["exp_per_tok"] = stats.experts_per_token;
}

void bm_layer(benchmark::State& state, Shape s, int64_t F, bool with_backward) {
  LayerSetup& setup = layer_setup(s, F);
  std::map<std::string, double> phase_ms;  // summed over iterations (forward phases)
  for (auto _ : state) {
    setup.forward();
    for (const auto& [phase, ms] : setup.cache.stats.phase_ms) phase_ms[phase] += ms;
    if (with_backward) setup.backward();
    benchmark::DoNotOptimize(setup.y.data());
    benchmark::DoNotOptimize(setup.dx.data());
    benchmark::ClobberMemory();
  }
  if (F == s.F) set_flops(state, forward_flops(s, F) * (with_backward ? 3.0 : 1.0));
  set_routing_counters(state, setup.cache.stats);
  // The layer's own per-phase timers (MoELayer::forward), averaged: a direct measure of the
  // routing, dispatch and combine time inside the real run.
  for (const auto& [phase, ms] : phase_ms)
    state.counters["ms_" + phase] = ms / double(state.iterations());
}

void bm_dense(benchmark::State& state, Shape s, bool with_backward) {
  DenseSetup& setup = dense_setup(s);
  for (auto _ : state) {
    setup.forward();
    if (with_backward) setup.backward();
    benchmark::DoNotOptimize(setup.out.data());
    benchmark::DoNotOptimize(setup.dx.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, forward_flops(s, s.F) * (with_backward ? 3.0 : 1.0));
}

void bm_expert_f8(benchmark::State& state, Shape s, bool with_backward) {
  LayerSetup& layer = layer_setup(s, kRoutingF);
  layer.forward();  // its cache holds the groups and the gathered rows
  ExpertF8Setup setup(layer, s.E, kRoutingF);
  setup.forward();
  if (with_backward) setup.backward();
  for (auto _ : state) {
    setup.forward();
    if (with_backward) setup.backward();
    benchmark::ClobberMemory();
  }
  state.counters["rows"] = double(setup.rows);
}

void configure(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.5);
}

int register_all() {
  cpu::init_blas_threads();
  for (const Shape& s : kShapes) {
    const std::string n = s.name;
    configure(benchmark::RegisterBenchmark((n + "/layer_fwd").c_str(), bm_layer, s, s.F, false));
    configure(benchmark::RegisterBenchmark((n + "/layer_fwdbwd").c_str(), bm_layer, s, s.F, true));
    configure(benchmark::RegisterBenchmark((n + "/dense_floor_fwd").c_str(), bm_dense, s, false));
    configure(benchmark::RegisterBenchmark((n + "/dense_floor_fwdbwd").c_str(), bm_dense, s, true));
    configure(benchmark::RegisterBenchmark((n + "/routing_overhead_fwd").c_str(), bm_layer, s,
                                           kRoutingF, false));
    configure(benchmark::RegisterBenchmark((n + "/routing_overhead_fwdbwd").c_str(), bm_layer, s,
                                           kRoutingF, true));
    configure(
        benchmark::RegisterBenchmark((n + "/expert_ffn_f8_fwd").c_str(), bm_expert_f8, s, false));
    configure(
        benchmark::RegisterBenchmark((n + "/expert_ffn_f8_fwdbwd").c_str(), bm_expert_f8, s, true));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("shapes",
                              "T=4096 d=512 SwiGLU topk-softmax-renorm; coarse E=8 k=2 F=1024; "
                              "fine E=64 k=8 F=256; routing_overhead uses F=8");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

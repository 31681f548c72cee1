// The machine's two ceilings for the inference benchmark (bench/infer/run_infer_bench.sh):
//   - read bandwidth: all OpenMP threads sum a buffer much larger than the last-level cache
//     (default 2 GiB of float32, each thread its static slice, as a decode step streams its
//     weights), best of --repeats timed passes after one untimed pass; also one thread alone;
//   - the dense-GEMM floor: GFLOP/s of cblas_sgemm (OpenBLAS) on the GEMMs of a 512-token
//     prefill of a Qwen3-30B-A3B-shaped layer, y (M, N) = x (M, K) * W^T with W (N, K) row-major as
//     the engine stores weights, threaded as the engine threads it (src/kernels/cpu/kernels.cpp
//     cpu::gemm: OpenBLAS kept single-threaded, OpenMP splits the rows of C, or its columns when it
//     has few rows, into one block per thread); best of --repeats after a warm-up. For information
//     also OpenBLAS's own threading on the same shapes (openblas_set_num_threads).
// Prints one JSON object on stdout.
//
//   bandwidth [--gib 2] [--repeats 5] [--tokens 512] [--gemm-seconds 0.5] [--skip-bandwidth]
//             [--skip-gemm]
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern "C" void openblas_set_num_threads(int num_threads);
extern "C" char* openblas_get_corename(void);
extern "C" char* openblas_get_config(void);

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Freer {
  void operator()(float* p) const { std::free(p); }
};

// Sum of a slice with 8 independent vector accumulators (the loads, not the adds, must bound it).
float sum_slice(const float* __restrict p, int64_t n) {
  constexpr int64_t kLanes = 128;  // 8 x 16 floats: eight AVX-512 registers
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += p[i + j];
  }
  float s = 0.0f;
  for (; i < n; ++i) s += p[i];
  for (int64_t j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// One pass over the buffer by `threads` threads, each its static slice; returns seconds.
double read_pass(const float* buf, int64_t n, int threads, volatile float* sink) {
  const auto t0 = Clock::now();
  float total = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int64_t chunk = (n / T + 1023) / 1024 * 1024;
    const int64_t begin = std::min(n, t * chunk), end = std::min(n, begin + chunk);
    total += sum_slice(buf + begin, end - begin);
  }
  const double s = seconds_since(t0);
  *sink = total;
  return s;
}

struct Bandwidth {
  double best_gbs = 0, median_gbs = 0;
  std::vector<double> passes_gbs;
};

Bandwidth measure_bandwidth(const float* buf, int64_t n, int threads, int repeats) {
  volatile float sink = 0.0f;
  read_pass(buf, n, threads, &sink);  // untimed: faults and TLB warm
  Bandwidth b;
  for (int r = 0; r < repeats; ++r)
    b.passes_gbs.push_back(double(n) * sizeof(float) / read_pass(buf, n, threads, &sink) * 1e-9);
  std::vector<double> sorted = b.passes_gbs;
  std::sort(sorted.begin(), sorted.end());
  b.best_gbs = sorted.back();
  b.median_gbs = sorted[sorted.size() / 2];
  return b;
}

// cpu::gemm's strategy for C = A * B^T (trans_b), A (M, K), B (N, K).
void engine_gemm(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C,
                 int threads) {
  if (threads <= 1 || M * N * K < (int64_t(1) << 18)) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, A, int(K), B,
                int(K), 0.0f, C, int(N));
    return;
  }
  const bool split_rows = M >= N || M >= 32 * threads;
  const int64_t extent = split_rows ? M : N;
  const int64_t unit = split_rows ? 8 : 16;
  const int64_t block = ((extent + threads - 1) / threads + unit - 1) / unit * unit;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int i = 0; i < threads; ++i) {
    const int64_t begin = i * block, end = std::min(extent, begin + block);
    if (begin >= end) continue;
    if (split_rows)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(end - begin), int(N), int(K), 1.0f,
                  A + begin * K, int(K), B, int(K), 0.0f, C + begin * N, int(N));
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(end - begin), int(K), 1.0f,
                  A, int(K), B + begin * K, int(K), 0.0f, C + begin, int(N));
  }
}

void blas_gemm(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, A, int(K), B,
              int(K), 0.0f, C, int(N));
}

struct Shape {
  const char* name;
  const char* what;
  int64_t M, N, K;
};

template <class Fn>
double best_seconds(Fn&& fn, double budget_s, int min_repeats) {
  fn();  // warm-up: packing buffers, page faults of C
  double best = 1e30;
  const auto start = Clock::now();
  for (int r = 0; r < min_repeats || seconds_since(start) < budget_s; ++r) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, seconds_since(t0));
    if (r > 200) break;
  }
  return best;
}

void fill(float* p, int64_t n, uint32_t seed) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = (float(h & 0xFFFF) / 65536.0f - 0.5f) * 0.04f;
  }
}

const char* arg_value(int argc, char** argv, const char* name) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return nullptr;
}

bool has_flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const char* v = nullptr;
  const double gib = (v = arg_value(argc, argv, "--gib")) ? std::atof(v) : 2.0;
  const int repeats = (v = arg_value(argc, argv, "--repeats")) ? std::atoi(v) : 5;
  const int64_t tokens = (v = arg_value(argc, argv, "--tokens")) ? std::atoll(v) : 512;
  const double gemm_budget = (v = arg_value(argc, argv, "--gemm-seconds")) ? std::atof(v) : 0.5;
  const bool skip_bw = has_flag(argc, argv, "--skip-bandwidth");
  const bool skip_gemm = has_flag(argc, argv, "--skip-gemm");
  if (has_flag(argc, argv, "--help") || gib <= 0 || repeats < 1 || tokens < 1) {
    std::fprintf(stderr,
                 "usage: bandwidth [--gib 2] [--repeats 5] [--tokens 512] [--gemm-seconds 0.5] "
                 "[--skip-bandwidth] [--skip-gemm]\n");
    return has_flag(argc, argv, "--help") ? 0 : 2;
  }
  const int threads = omp_get_max_threads();
  openblas_set_num_threads(1);  // as cpu::init_blas_threads: OpenMP owns the cores

  std::string out = "{";
  auto add = [&](const std::string& key, const std::string& value) {
    if (out.size() > 1) out += ", ";
    out += "\"" + key + "\": " + value;
  };
  auto num = [](double x) {
    char b[64];
    std::snprintf(b, sizeof b, "%.6g", x);
    return std::string(b);
  };
  add("threads", std::to_string(threads));
  add("openblas_core", "\"" + std::string(openblas_get_corename()) + "\"");
  {
    std::string config = openblas_get_config();
    while (!config.empty() && config.back() == ' ') config.pop_back();
    add("openblas_config", "\"" + config + "\"");
  }

  if (!skip_bw) {
    const int64_t n = int64_t(gib * double(1ull << 30)) / int64_t(sizeof(float)) / 1024 * 1024;
    std::unique_ptr<float, Freer> buf(
        static_cast<float*>(std::aligned_alloc(64, size_t(n) * sizeof(float))));
    if (!buf) {
      std::fprintf(stderr, "bandwidth: cannot allocate %.2f GiB\n", gib);
      return 1;
    }
    fill(buf.get(), n, 1u);  // first touch by the threads that read it
    const Bandwidth all = measure_bandwidth(buf.get(), n, threads, repeats);
    const Bandwidth one = measure_bandwidth(buf.get(), n, 1, std::max(2, repeats / 2));
    std::string passes = "[";
    for (size_t i = 0; i < all.passes_gbs.size(); ++i)
      passes += (i ? ", " : "") + num(all.passes_gbs[i]);
    passes += "]";
    add("buffer_bytes", std::to_string(n * int64_t(sizeof(float))));
    add("read_gbs", num(all.best_gbs));
    add("read_gbs_median", num(all.median_gbs));
    add("read_gbs_passes", passes);
    add("read_gbs_1thread", num(one.best_gbs));
    std::fprintf(stderr,
                 "bandwidth: read %.1f GB/s with %d threads (median %.1f), %.1f GB/s one thread\n",
                 all.best_gbs, threads, all.median_gbs, one.best_gbs);
  }

  if (!skip_gemm) {
    // Qwen3-30B-A3B's matrices, M = the prompt's tokens: q, k/v, o, the router, an expert's
    // gate/up and down as if all M rows went through it (the dense floor of the expert FLOPs),
    // and one head's attention scores (M x M over head_dim 128) for the attention FLOPs.
    const Shape shapes[] = {
        {"q_proj", "x (M, 2048) -> q (M, 4096)", tokens, 4096, 2048},
        {"kv_proj", "x (M, 2048) -> k or v (M, 512)", tokens, 512, 2048},
        {"o_proj", "attn (M, 4096) -> (M, 2048)", tokens, 2048, 4096},
        {"router", "x (M, 2048) -> logits (M, 128)", tokens, 128, 2048},
        {"expert_gate_up", "x (M, 2048) -> (M, 768), dense", tokens, 768, 2048},
        {"expert_down", "h (M, 768) -> (M, 2048), dense", tokens, 2048, 768},
        {"attn_scores", "q (M, 128) k^T -> (M, M), one head", tokens, tokens, 128},
    };
    int64_t max_a = 0, max_b = 0, max_c = 0;
    for (const Shape& s : shapes) {
      max_a = std::max(max_a, s.M * s.K);
      max_b = std::max(max_b, s.N * s.K);
      max_c = std::max(max_c, s.M * s.N);
    }
    std::vector<float> A(static_cast<size_t>(max_a)), B(static_cast<size_t>(max_b)),
        C(static_cast<size_t>(max_c));
    fill(A.data(), max_a, 2u);
    fill(B.data(), max_b, 3u);
    std::string list = "[";
    for (const Shape& s : shapes) {
      const double flops = 2.0 * double(s.M) * double(s.N) * double(s.K);
      const double t_engine =
          best_seconds([&] { engine_gemm(s.M, s.N, s.K, A.data(), B.data(), C.data(), threads); },
                       gemm_budget, 3);
      openblas_set_num_threads(threads);
      const double t_blas = best_seconds(
          [&] { blas_gemm(s.M, s.N, s.K, A.data(), B.data(), C.data()); }, gemm_budget, 3);
      openblas_set_num_threads(1);
      if (list.size() > 1) list += ", ";
      list += "{\"name\": \"" + std::string(s.name) + "\", \"what\": \"" + s.what +
              "\", \"M\": " + std::to_string(s.M) + ", \"N\": " + std::to_string(s.N) +
              ", \"K\": " + std::to_string(s.K) + ", \"gflops\": " + num(flops / t_engine * 1e-9) +
              ", \"ms\": " + num(t_engine * 1e3) +
              ", \"gflops_openblas_threads\": " + num(flops / t_blas * 1e-9) + "}";
      std::fprintf(
          stderr,
          "bandwidth: sgemm %-15s M=%lld N=%lld K=%lld: %.1f GFLOP/s (OpenBLAS-threaded %.1f)\n",
          s.name, static_cast<long long>(s.M), static_cast<long long>(s.N),
          static_cast<long long>(s.K), flops / t_engine * 1e-9, flops / t_blas * 1e-9);
    }
    list += "]";
    add("gemm_tokens", std::to_string(tokens));
    add("gemm", list);
  }
  out += "}";
  std::printf("%s\n", out.c_str());
  return 0;
}

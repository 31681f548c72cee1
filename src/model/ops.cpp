#include "model/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace switchyard::ops {

void rmsnorm_forward(int64_t N, int64_t C, const float* x, const float* g, double eps, float* y,
                     float* rstd) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x + n * C;
    double ss = 0.0;
    for (int64_t i = 0; i < C; ++i) ss += double(xn[i]) * xn[i];
    const float r = float(1.0 / std::sqrt(ss / double(C) + eps));
    rstd[n] = r;
    for (int64_t i = 0; i < C; ++i) y[n * C + i] = xn[i] * r * g[i];
  }
}

void rmsnorm_backward(int64_t N, int64_t C, const float* x, const float* g, const float* rstd,
                      const float* dy, float* dx, float* dg) {
  // y_i = x_i r g_i, r = (mean x² + eps)^-1/2: dx_i = r g_i dy_i - x_i r³ / C Σ_j dy_j g_j x_j.
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x + n * C;
    const float* dyn = dy + n * C;
    const double r = rstd[n];
    double dot = 0.0;
    for (int64_t i = 0; i < C; ++i) dot += double(dyn[i]) * g[i] * xn[i];
    const double c = r * r * r * dot / double(C);
    for (int64_t i = 0; i < C; ++i) dx[n * C + i] += float(r * g[i] * dyn[i] - xn[i] * c);
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < C; ++i) dg[i] += dy[n * C + i] * x[n * C + i] * rstd[n];
}

void rope(int64_t B, int64_t T, int64_t H, int64_t D, double theta, float* qkv, bool inverse) {
  const int64_t C = H * D, half = D / 2;
  std::vector<float> cos_table(size_t(T * half)), sin_table(size_t(T * half));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(t) * std::pow(theta, -2.0 * double(i) / double(D));
      cos_table[size_t(t * half + i)] = float(std::cos(angle));
      sin_table[size_t(t * half + i)] = float(std::sin(angle) * (inverse ? -1.0 : 1.0));
    }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      float* row = qkv + (b * T + t) * 3 * C;
      for (int64_t part = 0; part < 2; ++part)  // q, then k
        for (int64_t h = 0; h < H; ++h) {
          float* v = row + part * C + h * D;
          for (int64_t i = 0; i < half; ++i) {
            const float c = cos_table[size_t(t * half + i)], s = sin_table[size_t(t * half + i)];
            const float a = v[i], b2 = v[i + half];
            v[i] = a * c - b2 * s;
            v[i + half] = b2 * c + a * s;
          }
        }
    }
}

void attention_forward(int64_t B, int64_t T, int64_t H, int64_t D, const float* qkv, float* probs,
                       float* out) {
  const int64_t C = H * D;
  const float scale = float(1.0 / std::sqrt(double(D)));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const float* q = qkv + b * T * 3 * C + h * D;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* P = probs + (b * H + h) * T * T;  // (T, T)
      cpu::gemm(false, true, T, T, D, scale, q, 3 * C, k, 3 * C, 0.0f, P, T);
      for (int64_t i = 0; i < T; ++i) {
        float* row = P + i * T;
        float max = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j <= i; ++j) max = std::max(max, row[j]);
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - max));
        for (int64_t j = 0; j <= i; ++j) row[j] = float(row[j] / sum);
        for (int64_t j = i + 1; j < T; ++j) row[j] = 0.0f;
      }
      cpu::gemm(false, false, T, D, T, 1.0f, P, T, v, 3 * C, 0.0f, out + b * T * C + h * D, C);
    }
}

void attention_self_importance(int64_t B, int64_t T, int64_t H, const float* probs,
                               float* importance) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      double sum = 0.0;  // Σ_h P[b, h, t, t]
      for (int64_t h = 0; h < H; ++h) sum += double(probs[((b * H + h) * T + t) * T + t]);
      importance[b * T + t] = float(sum / double(H) * double(t + 1));
    }
}

void attention_backward(int64_t B, int64_t T, int64_t H, int64_t D, const float* qkv,
                        const float* probs, const float* dout, float* dqkv, float* scratch) {
  const int64_t C = H * D;
  const float scale = float(1.0 / std::sqrt(double(D)));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const float* q = qkv + b * T * 3 * C + h * D;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* dq = dqkv + b * T * 3 * C + h * D;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      const float* P = probs + (b * H + h) * T * T;
      float* dP = scratch + (b * H + h) * T * T;
      const float* dO = dout + b * T * C + h * D;
      cpu::gemm(false, true, T, T, D, 1.0f, dO, C, v, 3 * C, 0.0f, dP, T);  // dP = dO vᵀ
      cpu::gemm(true, false, T, D, T, 1.0f, P, T, dO, C, 0.0f, dv, 3 * C);  // dv = Pᵀ dO
      for (int64_t i = 0; i < T; ++i) {  // dS = P ⊙ (dP − Σ_j dP P), then the 1/√D scale
        float* row = dP + i * T;
        const float* p = P + i * T;
        double dot = 0.0;
        for (int64_t j = 0; j <= i; ++j) dot += double(row[j]) * p[j];
        for (int64_t j = 0; j <= i; ++j) row[j] = float(p[j] * (row[j] - dot)) * scale;
        for (int64_t j = i + 1; j < T; ++j) row[j] = 0.0f;
      }
      cpu::gemm(false, false, T, D, T, 1.0f, dP, T, k, 3 * C, 0.0f, dq, 3 * C);  // dq = dS k
      cpu::gemm(true, false, T, D, T, 1.0f, dP, T, q, 3 * C, 0.0f, dk, 3 * C);   // dk = dSᵀ q
    }
}

double cross_entropy(int64_t N, int64_t V, const float* logits, const int32_t* targets,
                     float* dlogits, float scale) {
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t n = 0; n < N; ++n) {
    const float* z = logits + n * V;
    const float max = *std::max_element(z, z + V);
    double sum = 0.0;
    for (int64_t j = 0; j < V; ++j) sum += std::exp(double(z[j]) - max);
    const double lse = max + std::log(sum);
    total += lse - z[targets[n]];
    if (dlogits) {
      for (int64_t j = 0; j < V; ++j)
        dlogits[n * V + j] = float(std::exp(double(z[j]) - lse) * scale / double(N));
      dlogits[n * V + targets[n]] -= scale / float(N);
    }
  }
  return total / double(N);
}

namespace {
// log softmax of one row, in double.
void log_softmax_row(int64_t V, const float* z, double* out) {
  const float max = *std::max_element(z, z + V);
  double sum = 0.0;
  for (int64_t j = 0; j < V; ++j) sum += std::exp(double(z[j]) - max);
  const double lse = max + std::log(sum);
  for (int64_t j = 0; j < V; ++j) out[j] = double(z[j]) - lse;
}
}  // namespace

double symmetric_kl(int64_t N, int64_t V, const float* a, const float* b, float* da, float* db,
                    float scale) {
  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
    std::vector<double> la(static_cast<size_t>(V)), lb(static_cast<size_t>(V));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      log_softmax_row(V, a + n * V, la.data());
      log_softmax_row(V, b + n * V, lb.data());
      double kl_pq = 0.0, kl_qp = 0.0;  // KL(p‖q), KL(q‖p)
      for (int64_t j = 0; j < V; ++j) {
        const double p = std::exp(la[size_t(j)]), q = std::exp(lb[size_t(j)]);
        const double diff = la[size_t(j)] - lb[size_t(j)];
        kl_pq += p * diff;
        kl_qp -= q * diff;
      }
      total += 0.5 * (kl_pq + kl_qp);
      if (!da && !db) continue;
      // ∂KL(p‖q)/∂a_j = p_j (log p_j − log q_j − KL(p‖q)), ∂KL(q‖p)/∂a_j = p_j − q_j.
      const double s = double(scale) / double(N);
      for (int64_t j = 0; j < V; ++j) {
        const double p = std::exp(la[size_t(j)]), q = std::exp(lb[size_t(j)]);
        const double diff = la[size_t(j)] - lb[size_t(j)];
        if (da) da[n * V + j] = float(0.5 * s * (p * (diff - kl_pq) + p - q));
        if (db) db[n * V + j] = float(0.5 * s * (q * (-diff - kl_qp) + q - p));
      }
    }
  }
  return total / double(N);
}

}  // namespace switchyard::ops

#include "infer/rope.h"

#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <numbers>

namespace switchyard::infer {

double yarn_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

RopeTable make_rope_table(const RopeConfig& rope, int64_t rot_dim, RopeLayout layout,
                          const std::string& source) {
  RopeTable t;
  t.layout = layout;
  t.rot_dim = rot_dim;
  const int64_t half = rot_dim / 2;
  t.inv_freq.resize(size_t(half));
  // As transformers computes it: base^(2i / dim) in float32.
  for (int64_t i = 0; i < half; ++i)
    t.inv_freq[size_t(i)] =
        1.0 / double(std::pow(float(rope.theta), float(2 * i) / float(rot_dim)));
  const double pi = std::numbers::pi;
  if (rope.type == "default") return t;
  if (rope.type == "linear") {
    for (double& f : t.inv_freq) f /= rope.factor;
    return t;
  }
  if (rope.type == "llama3") {
    const double old_len = double(rope.original_max_positions);
    const double low_wavelen = old_len / rope.low_freq_factor;
    const double high_wavelen = old_len / rope.high_freq_factor;
    for (double& f : t.inv_freq) {
      const double wavelen = 2 * pi / f;
      if (wavelen > low_wavelen) {
        f /= rope.factor;
      } else if (wavelen >= high_wavelen) {  // between: interpolate smoothly
        const double smooth = (old_len / wavelen - rope.low_freq_factor) /
                              (rope.high_freq_factor - rope.low_freq_factor);
        f = (1 - smooth) * f / rope.factor + smooth * f;
      }
    }
    return t;
  }
  if (rope.type == "yarn") {
    const double base = rope.theta, dim = double(rot_dim);
    const double max_pos = double(rope.original_max_positions);
    auto correction_dim = [&](double rotations) {
      return dim * std::log(max_pos / (rotations * 2 * pi)) / (2 * std::log(base));
    };
    double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
    if (rope.truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0);
    high = std::min(high, dim - 1);
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; ++i) {
      const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
      const double extrapolation = 1.0 - ramp;
      const double f = t.inv_freq[size_t(i)];
      t.inv_freq[size_t(i)] = f / rope.factor * (1 - extrapolation) + f * extrapolation;
    }
    if (rope.attention_factor > 0)
      t.attention_factor = rope.attention_factor;
    else if (rope.mscale > 0 && rope.mscale_all_dim > 0)
      t.attention_factor =
          yarn_mscale(rope.factor, rope.mscale) / yarn_mscale(rope.factor, rope.mscale_all_dim);
    else
      t.attention_factor = yarn_mscale(rope.factor, 1.0);
    return t;
  }
  fail("{}: rope type '{}' is not supported (default, linear, llama3, yarn)", source, rope.type);
}

void apply_rope(const RopeTable& table, int64_t rows, int64_t heads, int64_t row_stride,
                int64_t head_stride, const int64_t* positions, float* x) {
  const int64_t half = table.rot_dim / 2;
#pragma omp parallel for schedule(static) if (rows * heads * half > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      // The angle in float32, as transformers forms it (position × inv_freq).
      const float angle = float(positions[r]) * float(table.inv_freq[size_t(i)]);
      c[size_t(i)] = float(std::cos(double(angle)) * table.attention_factor);
      s[size_t(i)] = float(std::sin(double(angle)) * table.attention_factor);
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + r * row_stride + h * head_stride;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = table.layout == RopeLayout::Half ? i : 2 * i;
        const int64_t b = table.layout == RopeLayout::Half ? i + half : 2 * i + 1;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c[size_t(i)] - x1 * s[size_t(i)];
        v[b] = x1 * c[size_t(i)] + x0 * s[size_t(i)];
      }
    }
  }
}

}  // namespace switchyard::infer

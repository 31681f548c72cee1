// The layer's checks of float data: non-finite inputs, and float32 overflow in products.
#pragma once

#include <switchyard/error.h>

#include <cmath>
#include <cstdint>

namespace switchyard::layer {

// `cols` is the length of the last dimension, to report the position as (row, column).
inline void check_finite(const char* name, const float* data, int64_t n, int64_t cols) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(data[i]))
      fail("moe_layer: {} has a non-finite value {} at row {}, column {}", name, data[i], i / cols,
           i % cols);
}

// Finite inputs can still overflow float32 in a product; say so rather than route on NaN.
inline void check_overflow(const char* what, const float* data, int64_t n, int64_t cols) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(data[i]))
      fail(
          "moe_layer: {} overflowed float32 ({} at row {}, column {}): inputs or weights are too "
          "large",
          what, data[i], i / cols, i % cols);
}

}  // namespace switchyard::layer

// Rotary position embeddings with the scaling rules of the Hugging Face families (default,
// linear, llama3, yarn), applied at arbitrary positions (a KV-cache decode step rotates one).
#pragma once

#include <switchyard/infer/model_spec.h>

#include <vector>

namespace switchyard::infer {

struct RopeTable {
  std::vector<double> inv_freq;   // (rot_dim / 2)
  double attention_factor = 1.0;  // yarn scales cos and sin by it
  RopeLayout layout = RopeLayout::Half;
  int64_t rot_dim = 0;
};

// `source` names the config in errors.
RopeTable make_rope_table(const RopeConfig& rope, int64_t rot_dim, RopeLayout layout,
                          const std::string& source);

// Rotates the first rot_dim values of each head in place. x holds rows of `heads` heads each
// `head_stride` apart, rows `row_stride` apart; positions (rows).
void apply_rope(const RopeTable& table, int64_t rows, int64_t heads, int64_t row_stride,
                int64_t head_stride, const int64_t* positions, float* x);

// yarn's magnitude correction, 0.1 · mscale · ln(scale) + 1 (1 for scale ≤ 1).
double yarn_mscale(double scale, double mscale);

}  // namespace switchyard::infer

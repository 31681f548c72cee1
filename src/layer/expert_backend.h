// The experts' FFNs over their slices of the dispatched rows: the CPU GEMMs today, CUDA later
// behind the same interface. The backend owns its scratch. Slices come from the dispatcher's
// c.expert_offsets (E + 1) into c.xd (rows, d); activations saved for backward go to the cache.
#pragma once

#include <switchyard/moe_layer.h>

#include <cstdint>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace switchyard::layer {

// The kernels' form of a configured activation (the layer's experts, the model's dense FFNs).
cpu::Act expert_activation(Activation activation, const SwigluClamp& clamp);

// Expert e's weights and gradient blocks, stacked or per expert (MoEParams::w*_experts); null
// where this process does not hold the expert (or the gradient is not wanted).
const float* expert_w1(const MoEParams& p, const MoEShape& s, int64_t e);
const float* expert_w3(const MoEParams& p, const MoEShape& s, int64_t e);
const float* expert_w2(const MoEParams& p, const MoEShape& s, int64_t e);
float* expert_grad_w1(const MoEGrads& g, const MoEShape& s, int64_t e);
float* expert_grad_w3(const MoEGrads& g, const MoEShape& s, int64_t e);
float* expert_grad_w2(const MoEGrads& g, const MoEShape& s, int64_t e);

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;
  // c.out (rows, d) = FFN_e(c.xd rows of expert e), saving c.h1, c.h3, c.act (rows, F); w1 reads
  // c.gate_in's rows instead of c.xd's where shape.gate_in > 0.
  virtual void forward(cpu::Act act, const MoEShape& shape, const MoEParams& p, MoECache& c) = 0;
  // From dout (rows, d): dxd (rows, d) and the experts' weight gradients (g.w1, g.w3, g.w2 where
  // given; otherwise computed into scratch and dropped). Where w1 reads c.gate_in (shape.gate_in
  // > 0), dgate (rows, gate_in) gets that input's gradient and dxd the part through w3 only.
  virtual void backward(cpu::Act act, const MoEShape& shape, const MoEParams& p, const MoECache& c,
                        const float* dout, const MoEGrads& g, float* dxd, float* dgate) = 0;
};

// OpenBLAS sgemm for float32 experts, the BF16 kernels for BF16 ones (forward only); in parallel
// over experts (largest first) when there are enough of them, else one by one with threaded GEMMs.
class CpuExpertBackend final : public ExpertBackend {
 public:
  void forward(cpu::Act act, const MoEShape& shape, const MoEParams& p, MoECache& c) override;
  void backward(cpu::Act act, const MoEShape& shape, const MoEParams& p, const MoECache& c,
                const float* dout, const MoEGrads& g, float* dxd, float* dgate) override;

 private:
  // Kept across calls: allocating and faulting in (rows, F) buffers on every call cost more than
  // the routing itself.
  std::vector<float> dact_, dh3_, dw_scratch_;
};

}  // namespace switchyard::layer

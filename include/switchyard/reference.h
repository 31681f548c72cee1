// The slow, obviously correct float64 reference of the whole MoE layer, for every router. Written
// for clarity, independently of the fast path (no dispatch, no BLAS): tests compare against it and
// differentiate it by finite differences.
#pragma once

#include <switchyard/config.h>
#include <switchyard/moe_layer.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace switchyard::reference {

struct Params {  // float64 copies of MoEParams; empty vectors = absent
  std::vector<double> gate, gate_bias, w1, w3, w2, shared_w1, shared_w3, shared_w2;
  std::vector<double> shared_gate;  // (d) Qwen2-MoE's shared-expert gate, or empty
  // A logit function's tensors by name (router.NAME in layer files), instead of gate.
  std::map<std::string, std::vector<double>> router;
};

struct Batch {
  int64_t T = 0;
  std::vector<double> x;                 // (T, d)
  std::vector<int64_t> token_ids;        // (T) or empty
  std::vector<int64_t> token_counts;     // (vocab) MaskMoE's training-data id counts, or empty
  std::vector<int64_t> seq_lens;         // empty = one sequence
  std::vector<double> global_counts;     // (R) or empty
  std::vector<double> router_carry;      // (T, C) the previous MoE layer's router carry, or empty
  std::vector<double> token_importance;  // (T) DA-MoE's per-token importance, or empty
};

struct Result {
  std::vector<double> y;        // (T, d)
  std::vector<double> combine;  // (T, E)
  double aux_loss = 0.0;
  std::vector<int64_t> tokens_per_expert;  // (E)
  int64_t dropped = 0;
  std::vector<double> router_carry;  // (T, C) this layer's router carry (RMoE), or empty
  // Σ over kept assignments of (its hidden width, or F) / F, over T (RoutingStats::
  // hidden_per_token); -1 where not computed (SMEAR's merged experts).
  double hidden_per_token = -1.0;
};

// `router_params` are the resolved parameters (Router::params(), with "router" naming the family:
// topk, expert_choice, hash, base, top_p, remoe, smear, soft). `noise` replays the fast path's
// draws.
Result forward(const LayerConfig& config, const nlohmann::json& router_params,
               const MoEShape& shape, int64_t R, const Params& params, const Batch& batch,
               const RouterNoise& noise);

// The router's logits (T, R): x (jittered by `noise`) times gate.weight, or X-MoE's cosine
// logits from params.router where router_params says "logits": "cosine" (likewise the other
// logit functions; "distilled": StableMoE's [W x | K Q[id]], Q with shape.vocab rows; "global":
// SpeechMoE2's W [x ; P m], m the running mean over batch.seq_lens' sequences).
std::vector<double> router_logits(const nlohmann::json& router_params, const MoEShape& shape,
                                  int64_t R, const Params& params, const Batch& batch,
                                  const RouterNoise& noise);
// RMoE's GRU state h (T, recurrent_dim) from the projected input and batch.router_carry: the
// state its logits read and the carry it passes to the next MoE layer.
std::vector<double> recurrent_router_state(const nlohmann::json& router_params,
                                           const MoEShape& shape, const Params& params,
                                           const Batch& batch, const RouterNoise& noise);
// MaskMoE's visible experts (docs/routers/maskmoe.md, section 1): (T, E), 1 where expert e is
// visible to token t's id. Public for the tests' tie rule.
std::vector<uint8_t> maskmoe_visible(const nlohmann::json& router_params,
                                     const std::vector<int64_t>& token_counts,
                                     const std::vector<int64_t>& token_ids, int64_t E);
// The sinkhorn selection's balanced scores of tokens [group.first, group.second) from logits
// (T, R) over the first E outputs: (n, E) row-major. Public for the tests' tie rule.
std::vector<double> sinkhorn_balanced(const std::vector<double>& logits,
                                      std::pair<int64_t, int64_t> group, int64_t E, int64_t R,
                                      double tolerance);

// CompeteSMoE's affinities (docs/routers/competesmoe.md): (T, E) mean softplus of every expert's
// output on every token where the call competes (training, steps >= warmup, the noise's first
// draw below λ); empty where it does not. Public for the tests' tie rule.
std::vector<double> competesmoe_affinities(const LayerConfig& config,
                                           const nlohmann::json& router_params,
                                           const MoEShape& shape, const Params& params,
                                           const Batch& batch, const RouterNoise& noise);

}  // namespace switchyard::reference

// The "logits" parameter any router may take: `linear` (x · gate.weightᵀ), `cosine` (X-MoE),
// `hyper` (HyperRouter), `attention` (Yuan 2.0-M32), `recurrent` (RMoE), `global` (SpeechMoE2)
// or `aoe` (Autonomy-of-Experts: the experts' own low-rank activations), with each function's own
// parameters.
#pragma once

#include <switchyard/config.h>
#include <switchyard/router.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace switchyard::routers {

struct LogitChoice {
  std::unique_ptr<LogitFunction> function;  // null: the linear gate
  nlohmann::json params;                    // "logits" and the chosen function's parameters
  std::string description;                  // for describe(); empty for the linear gate
};

// Reads "logits" and its parameters from r; another function's parameters are errors naming
// the key.
LogitChoice read_logit_function(ParamReader& r, const nlohmann::json& params,
                                const std::string& context);

}  // namespace switchyard::routers

// A routing trace (include/switchyard/infer/trace.h) of one training step: the kept
// (token, expert, weight) choices of every MoE layer over the global batch, for routing-report
// and for ep-plan's predictions against the measured counters of a run across ranks.
#pragma once

#include <switchyard/data.h>
#include <switchyard/infer/trace.h>
#include <switchyard/model.h>

#include <string>

namespace switchyard::training {

// `batch` is the step's whole (global) window batch; `name` goes into the trace's meta.model.
infer::RoutingTrace step_trace(const Model& model, const Batch& batch, const std::string& name);

}  // namespace switchyard::training

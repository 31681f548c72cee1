// Factories of every router; the registry (registry.cpp) lists them by name.
#pragma once

#include <fmt/format.h>
#include <switchyard/router.h>

#include <memory>
#include <string>

namespace switchyard::routers {

using Factory = std::unique_ptr<Router>(const nlohmann::json& params, const std::string& context);

Factory make_topk, make_switch, make_gshard, make_mixtral, make_deepseek_v3, make_adamoe,
    make_sinkhorn, make_adaptive_gating, make_gw_moe, make_locmoe, make_xmoe, make_hyperrouter,
    make_yuan, make_rmoe, make_aoe;
Factory make_expert_choice, make_hash, make_base, make_top_p, make_remoe, make_smear, make_soft,
    make_smile, make_prototype, make_sparsemixer, make_rectify, make_moec, make_thor;
Factory make_maskmoe, make_stablemoe, make_vqmoe, make_speechmoe2, make_competesmoe, make_damoe;
Factory make_duollm, make_flextron;

}  // namespace switchyard::routers

// `switchyard train`, `sample` and `compare`.
#include <fmt/format.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/router.h>
#include <switchyard/train.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"

namespace switchyard::cli {

using nlohmann::json;

namespace {

// The flags train and compare share, applied to a train.json: --steps, --corpus (which keeps the
// config's 'domains') and --init.
void apply_shared_flags(json& j, const TrainFlags& flags) {
  if (flags.steps > 0) j["steps"] = flags.steps;
  if (!flags.corpus.empty()) {
    json data = {{"corpus", flags.corpus}};
    if (j.contains("data") && j["data"].is_object() && j["data"].contains("domains"))
      data["domains"] = j["data"]["domains"];
    j["data"] = data;
  }
  if (!flags.init.empty()) j["init"] = flags.init;
}

}  // namespace

int run_train(const std::string& config_path, const TrainFlags& flags) {
  json j = config_path.empty() ? json::object()
                               : parse_json_strict(read_file_text(config_path), config_path);
  if (!flags.out.empty()) j["out"] = flags.out;
  apply_shared_flags(j, flags);
  if (!flags.router.empty()) {
    if (!j.contains("model")) j["model"] = json::object();
    j["model"]["router"] = {{"router", flags.router}};
  }
  const TrainConfig config =
      parse_train_config(j, config_path.empty() ? std::string("train flags") : config_path);
  TrainOptions options;
  options.resume = flags.resume;
  options.stop_after = flags.stop_after;
  options.expert_parallel = std::max(1, flags.expert_parallel);
  options.timeout_seconds = flags.timeout_seconds;
  options.ranks_per_node = flags.ranks_per_node;
  options.trace_path = flags.trace_path;
  options.trace_step = flags.trace_step;
  // Under mpirun (or asked for parallelism): every rank runs this; rank 0 prints and writes.
  const std::unique_ptr<dist::Communicator> world = open_world(flags.expert_parallel > 0);
  options.world = world.get();
  TrainResult r;
  try {
    r = train(config, options);
  } catch (const std::exception& e) {
    if (!world || world->size() == 1) throw;
    // The other ranks may wait in a collective for this one: end them all, with the reason.
    fmt::print(stderr, "switchyard: error: rank {}: {}\n", world->rank(), e.what());
    std::fflush(stderr);
    world->abort(1);
  }
  if (world && world->rank() != 0) return 0;
  fmt::print("{}: {} steps, train loss {:.4f}, val loss {:.4f}, {:.0f} tokens/s, {:.1f} s -> {}\n",
             config.name, r.steps, r.final_train_loss, r.final_val_loss, r.tokens_per_s,
             r.wall_seconds, config.out);
  return 0;
}

int run_sample(const std::string& checkpoint, const std::string& prompt, int64_t count,
               double temperature, uint64_t seed) {
  const std::string text = sample(checkpoint, prompt, count, temperature, seed);
  fmt::print("{}{}\n", prompt, text);
  return 0;
}

namespace {

// The default comparison at matched active compute: top-1 routers get experts twice as wide as
// the top-2 ones, so every router spends the same expert FLOPs per token.
json default_entries() {
  return json::array({
      {{"name", "balance_loss"},
       {"router", {{"router", "topk"}, {"k", 2}, {"losses", {{"balance", 0.01}}}}}},
      {{"name", "loss_free"},
       {"router",
        {{"router", "deepseek_v3"},
         {"k", 2},
         {"groups", 1},
         {"topk_groups", 1},
         {"score", "sigmoid"},
         {"losses", {{"balance", 0.0001}, {"balance_mode", "sequence"}}}}}},
      {{"name", "switch"}, {"router", {{"router", "switch"}}}, {"d_ff_scale", 2}},
      {{"name", "expert_choice"},
       {"router", {{"router", "expert_choice"}, {"capacity_factor", 2.0}}}},
      {{"name", "hash"}, {"router", {{"router", "hash"}}}, {"d_ff_scale", 2}},
      {{"name", "remoe"}, {"router", {{"router", "remoe"}, {"k", 2}}}},
  });
}

// Presets whose paper defaults need more experts than the comparison model's 8, scaled to it.
json scaled_to_eight_experts(const std::string& name) {
  if (name == "deepseek_v3")  // paper: top-8 of 256 in 8 groups, 4 kept
    return {{"router", name}, {"k", 2}, {"groups", 4}, {"topk_groups", 2}};
  return {{"router", name}};
}

json entry_for_router(const std::string& name) {
  for (const json& e : default_entries())
    if (e.at("name") == name) return e;
  json e = {{"name", name}, {"router", scaled_to_eight_experts(name)}};
  const std::string what = "compare --routers " + name;
  const LayerConfig layer = parse_layer_config(e.at("router"), what);
  const std::unique_ptr<Router> router = make_router(layer.router, layer.router_params, what);
  // Routers whose tokens stand for one expert's compute (top-1, hash, merged experts) get
  // experts twice as wide, to match the top-2 routers' expert FLOPs.
  if (router->nominal_experts_per_token(ModelConfig{}.experts) == 1.0) e["d_ff_scale"] = 2;
  // A router built for one expert count (Duo-LLM's small and big module) gets a model with it.
  if (const int64_t n = router->required_experts(); n > 0) e["model"] = {{"experts", n}};
  // A locality-aware router in one process routes as 4 ranks on 2 nodes would (docs/training.md).
  if (router->traits().needs_placement)
    e["router"]["placement"] = {{"ranks", 4}, {"ranks_per_node", 2}};
  return e;
}

}  // namespace

int run_compare(const std::string& config_path, const TrainFlags& flags,
                const std::vector<std::string>& routers, int64_t seeds,
                const std::string& baseline) {
  json j = config_path.empty() ? json::object()
                               : parse_json_strict(read_file_text(config_path), config_path);
  json entries = j.contains("routers") ? j.at("routers") : default_entries();
  j.erase("routers");
  if (!routers.empty()) {
    entries = json::array();
    for (const auto& r : routers) entries.push_back(entry_for_router(r));
  }
  const std::string out =
      !flags.out.empty() ? flags.out : j.value("out", std::string("runs/compare"));
  apply_shared_flags(j, flags);
  const std::string source = config_path.empty() ? std::string("compare flags") : config_path;
  std::vector<std::string> run_dirs, names;
  for (const json& e : entries) {
    if (!e.is_object() || !e.contains("name") || !e.at("name").is_string() || !e.contains("router"))
      fail("{}: each 'routers' entry needs 'name' and 'router', got {}", source, e.dump());
    if (e.contains("model") && (!e.at("model").is_object() || e.at("model").contains("router")))
      fail(
          "{}: entry '{}': 'model' must be an object of model.json fields to override (not "
          "'router', the entry's own), got {}",
          source, e.at("name").get<std::string>(), e.at("model").dump());
    names.push_back(e.at("name").get<std::string>());
  }
  if (!baseline.empty() && std::find(names.begin(), names.end(), baseline) == names.end())
    fail("compare: --baseline '{}' is not one of the router entries ({})", baseline,
         fmt::join(names, ", "));
  // Every entry's router is checked before anything trains: a bad one would end the comparison
  // after the earlier ones had run.
  for (const json& e : entries) {
    const std::string what = source + " [" + e.at("name").get<std::string>() + "]";
    const LayerConfig layer = parse_layer_config(e.at("router"), what);
    const std::unique_ptr<Router> router = make_router(layer.router, layer.router_params, what);
    // The entry's model (the config's with its own fields over it) is checked whole too.
    json model = j.contains("model") ? j.at("model") : json::object();
    if (e.contains("model")) model.update(e.at("model"));
    model["router"] = e.at("router");
    parse_model_config(model, what + " [model]");
    router->check_shape(model.value("experts", ModelConfig{}.experts), what);
    if (router->traits().needs_placement && !layer.placement.declared())
      fail(
          "{}: router {} routes by locality; in one process declare where tokens and experts "
          "sit, e.g. \"placement\": {{\"ranks\": 4, \"ranks_per_node\": 2}} in its router "
          "object (docs/layer-config.md)",
          what, layer.router);
  }
  const uint64_t first_seed = uint64_t(j.value("seed", int64_t(1)));
  for (const json& e : entries) {
    const std::string name = e.at("name").get<std::string>();
    for (int64_t s = 0; s < seeds; ++s) {
      // One seed: the entry's name and folder as before; several: "name seed S" in name-seedS.
      const uint64_t seed = first_seed + uint64_t(s);
      const std::string label = seeds == 1 ? name : fmt::format("{} seed {}", name, seed);
      json run = j;
      if (!run.contains("model")) run["model"] = json::object();
      // The entry's own model fields (e.g. moe_sublayers, experts), then its router.
      if (e.contains("model")) run["model"].update(e.at("model"));
      run["model"]["router"] = e.at("router");
      const int64_t d_ff = run["model"].value("d_ff", int64_t(256));
      run["model"]["d_ff"] = d_ff * e.value("d_ff_scale", int64_t(1));
      run["name"] = label;
      run["group"] = name;
      run["seed"] = seed;
      run["out"] = (std::filesystem::path(out) / "runs" /
                    (seeds == 1 ? name : fmt::format("{}-seed{}", name, seed)))
                       .string();
      const TrainConfig config = parse_train_config(run, source + " [" + label + "]");
      fmt::print(stderr, "== {} ({} steps)\n", label, config.optim.steps);
      const TrainResult r = train(config, TrainOptions{});
      fmt::print(stderr, "   val loss {:.4f}, {:.0f} tokens/s, {:.1f} s\n", r.final_val_loss,
                 r.tokens_per_s, r.wall_seconds);
      run_dirs.push_back(config.out);
    }
  }
  return run_report(run_dirs, (std::filesystem::path(out) / "report").string(), baseline);
}

}  // namespace switchyard::cli

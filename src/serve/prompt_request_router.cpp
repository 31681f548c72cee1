// The bridge from trained PromptRouters to the gateway's RequestRouter: resolves the client's
// "model" (a configured model, router-<name> or router-<name>-<number>) into ranked models.
#include <switchyard/error.h>
#include <switchyard/gateway.h>
#include <switchyard/llm_router.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace switchyard::serve {
namespace {

// Assumed answer length for the estimated cost of a directly named model.
constexpr double kDirectOutputTokens = 256;

class PromptRequestRouter final : public RequestRouter {
 public:
  explicit PromptRequestRouter(const GatewayConfig& config);
  RouteChoice choose(const std::string& prompt, const std::string& requested) const override;

 private:
  struct Loaded {
    PromptRouterConfig config;
    PromptRouter router;
    bool threshold_rule = false;
    std::vector<int> gateway_model;  // per router model: index in config.models, -1 = not served
    std::vector<size_t> served;      // router models the gateway serves
  };
  RouteChoice choose_direct(const std::string& prompt, int model) const;
  RouteChoice choose_routed(const std::string& prompt, const Loaded& loaded, double value) const;

  GatewayConfig config_;
  std::map<std::string, Loaded> routers_;
};

PromptRequestRouter::PromptRequestRouter(const GatewayConfig& config) : config_(config) {
  for (const auto& [name, rc] : config_.routers) {
    const std::string context = fmt::format("{}: routers.{}", config_.source, name);
    Loaded loaded;
    loaded.config = rc;
    try {
      loaded.router = PromptRouter::load(rc.path);
    } catch (const Error& e) {
      fail("{}: field 'path' = \"{}\": {}", context, rc.path, e.what());
    }
    const PromptRouter& router = loaded.router;
    // A router's model is served by the gateway model of that name, else by the one whose
    // upstream_model it is (data sets name models as their providers do).
    for (size_t m = 0; m < router.models.size(); ++m) {
      const ModelAlias alias = resolve_model_alias(config_, router.models[m]);
      int served_by = alias.kind == ModelAlias::Model ? alias.model : -1;
      for (size_t g = 0; g < config_.models.size() && served_by < 0; ++g)
        if (config_.models[g].upstream_model == router.models[m]) served_by = int(g);
      loaded.gateway_model.push_back(served_by);
      if (served_by >= 0) loaded.served.push_back(m);
    }
    if (loaded.served.empty())
      fail("{}: none of the router's models ({}) is in 'models'", context,
           fmt::join(router.models, ", "));
    loaded.threshold_rule =
        rc.rule == "threshold" || (rc.rule == "auto" && router.models.size() == 2);
    if (loaded.threshold_rule) {
      for (int m : {router.strong, router.weak})
        if (loaded.gateway_model[size_t(m)] < 0)
          fail(
              "{}: the threshold rule needs the router's strong and weak models, and \"{}\" is "
              "not in 'models'",
              context, router.models[size_t(m)]);
    } else if (rc.default_value < 0.0 || rc.default_value > 1.0) {
      fail(
          "{}: field 'default' = {} must be a λ in [0, 1]: this router has {} models and uses "
          "the cost-aware rule",
          context, rc.default_value, router.models.size());
    }
    routers_.emplace(name, std::move(loaded));
  }
}

RouteChoice PromptRequestRouter::choose(const std::string& prompt,
                                        const std::string& requested) const {
  const ModelAlias alias = resolve_model_alias(config_, requested);
  if (alias.kind == ModelAlias::Model) return choose_direct(prompt, alias.model);
  if (alias.kind == ModelAlias::Router) {
    const auto it = routers_.find(alias.router);
    if (it != routers_.end()) return choose_routed(prompt, it->second, alias.value);
  }
  std::vector<std::string> names;
  for (const auto& m : config_.models) names.push_back(m.name);
  for (const auto& [name, unused] : routers_) names.push_back("router-" + name);
  throw UnknownModelError(
      fmt::format("The model '{}' does not exist. Use one of: {} (a router alias may end in "
                  "-<threshold or λ>, e.g. router-<name>-0.3)",
                  requested, fmt::join(names, ", ")));
}

RouteChoice PromptRequestRouter::choose_direct(const std::string& prompt, int model) const {
  RouteChoice choice;
  choice.ranked_models.push_back(config_.models[size_t(model)].name);
  for (size_t m = 0; m < config_.models.size(); ++m)
    if (int(m) != model) choice.ranked_models.push_back(config_.models[m].name);
  choice.estimated_cost =
      estimate_call_cost(config_.models[size_t(model)], prompt.size(), kDirectOutputTokens);
  return choice;
}

RouteChoice PromptRequestRouter::choose_routed(const std::string& prompt, const Loaded& loaded,
                                               double value) const {
  const PromptRouter& router = loaded.router;
  const size_t M = router.models.size();
  std::vector<double> q(M), c(M);
  router.predict(prompt, q.data(), c.data());
  const double setting = std::isnan(value) ? loaded.config.default_value : value;

  size_t chosen = 0;
  if (loaded.threshold_rule) {
    chosen = size_t(choose_threshold(q.data(), router.strong, router.weak, setting));
  } else {
    if (setting < 0.0 || setting > 1.0)
      fail("router-{}-{}: λ = {} is outside [0, 1] (router '{}' uses the cost-aware rule)",
           loaded.config.name, setting, setting, loaded.config.name);
    // The cost-aware argmax over the models the gateway serves.
    std::vector<double> qs, cs;
    for (size_t m : loaded.served) {
      qs.push_back(q[m]);
      cs.push_back(c[m]);
    }
    chosen = loaded.served[size_t(
        choose_cost_aware(qs.data(), cs.data(), qs.size(), setting, router.cost_scale))];
  }

  RouteChoice choice;
  choice.router = loaded.config.name;
  choice.threshold = setting;
  std::vector<size_t> rest;
  for (size_t m : loaded.served)
    if (m != chosen) rest.push_back(m);
  std::stable_sort(rest.begin(), rest.end(), [&](size_t a, size_t b) { return q[a] > q[b]; });
  choice.ranked_models.push_back(config_.models[size_t(loaded.gateway_model[chosen])].name);
  for (size_t m : rest)
    choice.ranked_models.push_back(config_.models[size_t(loaded.gateway_model[m])].name);
  // Models the router does not know come last, in the config's order.
  for (const auto& m : config_.models)
    if (std::find(choice.ranked_models.begin(), choice.ranked_models.end(), m.name) ==
        choice.ranked_models.end())
      choice.ranked_models.push_back(m.name);

  const UpstreamConfig& model = config_.models[size_t(loaded.gateway_model[chosen])];
  choice.estimated_cost = estimate_call_cost(model, prompt.size(), router.cost.output_tokens);
  if (std::isnan(choice.estimated_cost) && router.cost.source() != "rank")
    choice.estimated_cost = c[chosen];
  return choice;
}

}  // namespace

std::shared_ptr<const RequestRouter> make_prompt_request_router(const GatewayConfig& config) {
  return std::make_shared<PromptRequestRouter>(config);
}

}  // namespace switchyard::serve

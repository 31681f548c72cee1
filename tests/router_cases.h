// The one table of MoE layer cases (tests/router_cases.json) that drives the router checks: the
// float64 reference, finite differences, the routing invariants and the PyTorch golden (which
// reads the same file). A check takes the cases that carry its section, with the sizes in it.
#pragma once

#include <gtest/gtest.h>
#include <switchyard/config.h>
#include <switchyard/router.h>

#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace switchyard::testing_support {

inline const char* kRouterCaseChecks[] = {"reference", "gradients", "golden", "invariants"};

struct RouterCase {
  std::string name;
  nlohmann::json config;  // a layer.json object
  nlohmann::json sizes;   // the check's section: problem sizes and options
};

inline const nlohmann::json& router_case_table() {
  static const nlohmann::json table = [] {
    const std::string path = std::string(SWITCHYARD_SOURCE_DIR) + "/tests/router_cases.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read " + path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    nlohmann::json j = parse_json_strict(text, path);
    std::set<std::string> names;
    for (const nlohmann::json& c : j.at("cases")) {
      const std::string name = c.at("name").get<std::string>();
      if (!names.insert(name).second) throw std::runtime_error(path + ": duplicate case " + name);
      for (const auto& [key, value] : c.items()) {
        bool known = key == "name" || key == "config";
        for (const char* check : kRouterCaseChecks) known |= key == check;
        if (!known) throw std::runtime_error(path + ": case " + name + ": unknown key " + key);
      }
      // The C++ checks' size keys (the golden's are checked by test_golden.py).
      const std::map<std::string, std::set<std::string>> sizes = {
          {"reference",
           {"Es", "Fs", "shared_gate", "sequences", "global_counts", "gate_bias", "router_carry",
            "ties"}},
          {"gradients", {"T", "E", "Fs", "shared_gate", "sequences", "gate_bias", "router_carry"}},
          {"invariants", {}}};
      for (const auto& [check, keys] : sizes)
        if (c.contains(check))
          for (const auto& [key, value] : c.at(check).items())
            if (!keys.count(key))
              throw std::runtime_error(path + ": case " + name + ": unknown " + check + " key " +
                                       key);
    }
    return j;
  }();
  return table;
}

// gtest prints a failing case by name and config.
inline void PrintTo(const RouterCase& c, std::ostream* os) {
  *os << c.name << " " << c.config.dump();
}

// The cases that run under `check`.
inline std::vector<RouterCase> router_cases_for(const std::string& check) {
  std::vector<RouterCase> out;
  for (const nlohmann::json& c : router_case_table().at("cases"))
    if (c.contains(check)) out.push_back({c.at("name"), c.at("config"), c.at(check)});
  return out;
}

// A router added to the registry without cases under `check` would go unchecked there.
inline void expect_every_router_has_cases(const std::string& check) {
  std::set<std::string> covered;
  for (const RouterCase& c : router_cases_for(check))
    covered.insert(c.config.at("router").get<std::string>());
  for (const RouterEntry& entry : router_registry())
    EXPECT_TRUE(covered.count(entry.name)) << "router '" << entry.name << "' has no case with a \""
                                           << check << "\" section in tests/router_cases.json";
}

}  // namespace switchyard::testing_support

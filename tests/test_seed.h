// The base seed of the randomised tests. CI runs them with a fixed seed (the default, printed on
// failure); the soak target (`cmake --build --preset release --target soak`) runs them with
// fresh seeds. SWITCHYARD_TEST_SEED=N replays seed N, SWITCHYARD_TEST_SEED=random draws one.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

namespace switchyard::testing_support {

inline constexpr uint64_t kDefaultTestSeed = 20261201;

inline uint64_t test_base_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("SWITCHYARD_TEST_SEED");
    if (env == nullptr || *env == '\0') return kDefaultTestSeed;
    if (std::string(env) != "random") return uint64_t(std::stoull(env));
    std::random_device rd;  // 48 bits: the seed is printed and pasted back
    return ((uint64_t(rd()) << 32) ^ uint64_t(rd())) & uint64_t(0xffffffffffffULL);
  }();
  return seed;
}

}  // namespace switchyard::testing_support

// The inference engine on Hugging Face checkpoints (src/infer/): transformers goldens
// (../shared/data/hf-tiny), KV-cache decode against full recomputation, batching, sharded and
// BF16/F16 folders, both config.json forms, sampling, and bad or corrupted folders.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/infer/engine.h>
#include <switchyard/infer/generate.h>
#include <switchyard/infer/trace.h>
#include <switchyard/safetensors.h>

#include <bit>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <random>
#include <set>

#include "../scratch_dir.h"
#include "infer/blocks.h"
#include "kernels/cpu/kernels.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using switchyard::Error;
using switchyard::infer::KVCache;
using switchyard::infer::Model;
using switchyard::testing_support::ScratchDir;
using testing::AllOf;
using testing::HasSubstr;

const uint64_t kSeed = 20261201;

fs::path tiny_dir(const std::string& name) {
  return fs::path(SWITCHYARD_SOURCE_DIR) / ".." / "shared" / "data" / "hf-tiny" / name;
}

#define SKIP_WITHOUT_TINY(name)                                                  \
  if (!fs::exists(tiny_dir(name) / "golden.json")) {                             \
    GTEST_SKIP() << "transformers goldens absent at " << tiny_dir(name).string() \
                 << " (expected ../shared/data/hf-tiny beside the repository)";  \
  }

json read_json(const fs::path& p) {
  return switchyard::parse_json_strict(switchyard::read_file_text(p.string()), p.string());
}

// All-position logits of each sequence run alone from an empty cache.
std::vector<float> full_logits(Model& m, const std::vector<int32_t>& ids) {
  KVCache c = m.new_cache();
  std::vector<Model::Chunk> chunks = {{&c, ids}};
  std::vector<float> logits;
  m.forward(chunks, true, logits);
  return logits;
}

// max |a - b| / max |b|: the relative error the goldens are held to.
double rel_error(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    err = std::max(err, std::abs(double(a[i]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return err / scale;
}

std::vector<double> flatten(const json& j) {
  std::vector<double> out;
  std::function<void(const json&)> walk = [&](const json& v) {
    if (v.is_array())
      for (const json& x : v) walk(x);
    else
      out.push_back(v.get<double>());
  };
  walk(j);
  return out;
}

std::vector<int32_t> random_ids(std::mt19937_64& rng, int64_t n, int64_t V) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = int32_t(rng() % uint64_t(V));
  return ids;
}

class Golden : public testing::TestWithParam<std::string> {};

TEST_P(Golden, LogitsRouterLogitsAndGreedyGenerationMatchTransformers) {
  SKIP_WITHOUT_TINY(GetParam());
  const json g = read_json(tiny_dir(GetParam()) / "golden.json");
  auto model = Model::load(tiny_dir(GetParam()).string());
  const auto ids = g["input_ids"];
  const int64_t B = int64_t(ids.size()), T = int64_t(ids[0].size());
  std::vector<std::vector<int32_t>> seqs;
  for (const json& row : ids) seqs.push_back(row.get<std::vector<int32_t>>());
  std::vector<KVCache> caches(static_cast<size_t>(B));
  std::vector<Model::Chunk> chunks;
  for (int64_t b = 0; b < B; ++b) {
    caches[size_t(b)] = model->new_cache();
    chunks.push_back({&caches[size_t(b)], seqs[size_t(b)]});
  }
  switchyard::infer::ForwardCapture capture;
  capture.router_logits = true;
  std::vector<float> logits;
  model->forward(chunks, true, logits, &capture);
  EXPECT_EQ(int64_t(logits.size()), B * T * model->spec().vocab);
  EXPECT_LT(rel_error(logits, flatten(g["logits"])), 1e-4);
  ASSERT_EQ(capture.logits.size(), g["router_logits"].size());
  for (size_t i = 0; i < capture.logits.size(); ++i)
    EXPECT_LT(rel_error(capture.logits[i], flatten(g["router_logits"][i])), 1e-4) << "layer " << i;

  const auto prefix = g["generate_prefix"][0].get<std::vector<int32_t>>();
  const auto expect = g["generate"][0].get<std::vector<int32_t>>();
  switchyard::infer::GenerateOptions o;
  o.max_new_tokens = int64_t(expect.size() - prefix.size());
  const auto out = switchyard::infer::generate(*model, {prefix}, o, {});
  std::vector<int32_t> all = prefix;
  all.insert(all.end(), out[0].begin(), out[0].end());
  EXPECT_EQ(all, expect);
}

INSTANTIATE_TEST_SUITE_P(HfTiny, Golden, testing::Values("mixtral", "qwen3_moe"));

class Engine : public testing::TestWithParam<std::string> {};

TEST_P(Engine, KVCacheDecodeEqualsFullRecomputation) {
  SKIP_WITHOUT_TINY(GetParam());
  auto model = Model::load(tiny_dir(GetParam()).string());
  const int64_t V = model->spec().vocab;
  std::mt19937_64 rng(kSeed);
  const auto ids = random_ids(rng, 24, V);
  const auto full = full_logits(*model, ids);
  // Prefill 9, then one token at a time; also a chunk of 5 in the middle.
  KVCache c = model->new_cache();
  std::vector<float> logits;
  int64_t at = 0;
  for (int64_t n : {9, 1, 1, 5, 1, 1, 1, 1, 1, 1, 1, 1}) {
    std::vector<Model::Chunk> chunks = {{&c, std::span<const int32_t>(ids.data() + at, size_t(n))}};
    model->forward(chunks, false, logits);
    at += n;
    double err = 0, scale = 0;
    for (int64_t j = 0; j < V; ++j) {
      err = std::max(err, double(std::abs(logits[size_t(j)] - full[size_t((at - 1) * V + j)])));
      scale = std::max(scale, double(std::abs(full[size_t((at - 1) * V + j)])));
    }
    EXPECT_LT(err, 1e-5 * scale + 1e-7) << "position " << at - 1;
  }
  EXPECT_EQ(at, 24);
  EXPECT_EQ(c.length, 24);
}

TEST_P(Engine, BatchedSequencesEqualTheSequencesRunAlone) {
  SKIP_WITHOUT_TINY(GetParam());
  auto model = Model::load(tiny_dir(GetParam()).string());
  const int64_t V = model->spec().vocab;
  std::mt19937_64 rng(kSeed + 1);
  std::vector<std::vector<int32_t>> seqs;
  for (int64_t n : {7, 1, 13, 4}) seqs.push_back(random_ids(rng, n, V));
  std::vector<KVCache> caches;
  for (size_t i = 0; i < seqs.size(); ++i) caches.push_back(model->new_cache());
  // Sequence 3 already has a prefix in its cache: a decode step batched with prefills.
  const auto prefix = random_ids(rng, 6, V);
  std::vector<Model::Chunk> first = {{&caches[3], prefix}};
  std::vector<float> logits;
  model->forward(first, false, logits);
  std::vector<Model::Chunk> chunks;
  for (size_t i = 0; i < seqs.size(); ++i) chunks.push_back({&caches[i], seqs[i]});
  model->forward(chunks, true, logits);
  int64_t row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::vector<int32_t> alone_ids = seqs[i];
    if (i == 3) alone_ids.insert(alone_ids.begin(), prefix.begin(), prefix.end());
    const auto alone = full_logits(*model, alone_ids);
    const int64_t skip = i == 3 ? int64_t(prefix.size()) : 0;
    for (size_t t = 0; t < seqs[i].size(); ++t, ++row)
      for (int64_t j = 0; j < V; ++j)
        ASSERT_NEAR(logits[size_t(row * V + j)], alone[size_t((skip + int64_t(t)) * V + j)], 1e-5)
            << "sequence " << i << " token " << t;
  }
}

TEST_P(Engine, ShardedBf16F16AndConfigFormsLoadTheSameModel) {
  SKIP_WITHOUT_TINY(GetParam());
  const fs::path src = tiny_dir(GetParam());
  ScratchDir dir;
  const auto weights = switchyard::read_safetensors((src / "model.safetensors").string());
  std::mt19937_64 rng(kSeed + 2);
  const auto ids = random_ids(rng, 12, 512);
  // Each dtype: the same weights rounded to it, stored as F32 (one file) and as the dtype in three
  // shards with an index; both must give identical logits.
  for (const switchyard::DType dtype :
       {switchyard::DType::F32, switchyard::DType::BF16, switchyard::DType::F16}) {
    const std::string name = switchyard::dtype_name(dtype);
    switchyard::SafetensorsFile rounded, narrow;
    for (const auto& [tensor, data] : weights.tensors) {
      std::vector<float> v = data.to_f32(tensor);
      switchyard::TensorData t = switchyard::TensorData::from_f32(data.shape, v);
      if (dtype != switchyard::DType::F32) {
        t.dtype = dtype;
        t.bytes.resize(v.size() * 2);
        for (size_t i = 0; i < v.size(); ++i) {
          uint16_t bits = 0;
          if (dtype == switchyard::DType::BF16) {
            const uint32_t u = std::bit_cast<uint32_t>(v[i]);
            bits = uint16_t((u + 0x7FFF + ((u >> 16) & 1)) >> 16);  // round to nearest even
          } else {
            bits = std::bit_cast<uint16_t>(static_cast<_Float16>(v[i]));
          }
          std::memcpy(t.bytes.data() + 2 * i, &bits, 2);
        }
        std::vector<float> back(v.size());
        switchyard::convert_to_f32(dtype, t.bytes.data(), v.size(), back.data());
        v = back;
      }
      narrow.tensors[tensor] = t;
      rounded.tensors[tensor] = switchyard::TensorData::from_f32(data.shape, v);
    }
    const fs::path one = dir.root() / (name + "-one"), sharded = dir.root() / (name + "-sharded");
    fs::create_directories(one);
    fs::create_directories(sharded);
    fs::copy_file(src / "config.json", one / "config.json");
    switchyard::write_safetensors((one / "model.safetensors").string(), rounded);
    // transformers 4.x config form in the sharded copy: rope_theta at the top level.
    json config = read_json(src / "config.json");
    config["rope_theta"] = config["rope_parameters"]["rope_theta"];
    config.erase("rope_parameters");
    dir.write((sharded / "config.json").string(), config.dump(2));
    std::vector<switchyard::SafetensorsFile> shards(3);
    json map = json::object();
    size_t i = 0;
    for (const auto& [tensor, data] : narrow.tensors) {
      const size_t s = i++ % 3;
      shards[s].tensors[tensor] = data;
      map[tensor] = fmt::format("model-{:05d}-of-00003.safetensors", s + 1);
    }
    for (size_t s = 0; s < 3; ++s)
      switchyard::write_safetensors(
          (sharded / fmt::format("model-{:05d}-of-00003.safetensors", s + 1)).string(), shards[s]);
    dir.write((sharded / "model.safetensors.index.json").string(),
              json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump());
    auto a = Model::load(one.string());
    switchyard::infer::LoadOptions widen;
    widen.keep_bf16 = false;
    auto b = Model::load(sharded.string(), widen);
    const auto want = full_logits(*a, ids);
    EXPECT_EQ(want, full_logits(*b, ids)) << name;
    // Kept in BF16 with float32 inputs: the same values through the BF16 kernels, summed in
    // another order. Kept in BF16 with rounded inputs (the default): BF16 tolerance, and not
    // the float32 result (F32 and F16 tensors are read as float32: nothing rounds).
    auto max_rel_error = [&](const std::vector<float>& got) {
      double err = 0, scale = 0;
      for (size_t j = 0; j < want.size(); ++j) {
        err = std::max(err, double(std::abs(got[j] - want[j])));
        scale = std::max(scale, double(std::abs(want[j])));
      }
      return err / scale;
    };
    switchyard::infer::LoadOptions exact;
    exact.round_bf16_activations = false;
    auto c = Model::load(sharded.string(), exact);
    const auto kept = full_logits(*c, ids);
    ASSERT_EQ(kept.size(), want.size());
    EXPECT_LT(max_rel_error(kept), 1e-5) << name;
    auto r = Model::load(sharded.string());
    const auto kept_rounded = full_logits(*r, ids);
    ASSERT_EQ(kept_rounded.size(), want.size());
    const double rounded_err = max_rel_error(kept_rounded);
    EXPECT_LT(rounded_err, 3e-2) << name;
    if (dtype == switchyard::DType::BF16)
      EXPECT_GT(rounded_err, 1e-6) << name << ": the default arithmetic did not round";
    else
      EXPECT_LT(rounded_err, 1e-5) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(HfTiny, Engine, testing::Values("mixtral", "qwen3_moe"));

// The BF16-weight GEMM against a float64 reference: odd sizes, 1 to 4 rows (decode) and more,
// float32 activations (the per-row path, widen-then-sgemm) or BF16-rounded ones (the AVX-512 BF16
// dot-product tiles of 4 x 4 with their remainders, or the float32 paths on the rounded values),
// with and without each instruction set. With rounded activations the reference multiplies the
// rounded values, so every path is held to 1e-5.
TEST(Bf16Kernels, GemmMatchesAFloat64Reference) {
  using switchyard::cpu::Bf16Activations;
  std::mt19937_64 rng(kSeed + 10);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto bf16_of = [](float f) {  // round to nearest even, independently of the kernel's code
    const uint32_t u = std::bit_cast<uint32_t>(f);
    const uint32_t lsb = (u >> 16) & 1u;
    return uint16_t((u + 0x7fffu + lsb) >> 16);
  };
  auto widen = [](uint16_t b) { return double(std::bit_cast<float>(uint32_t(b) << 16)); };
  struct Path {
    bool simd, dot;
  };
  for (const Path path : {Path{true, true}, Path{true, false}, Path{false, false}}) {
    switchyard::cpu::set_bf16_simd(path.simd);
    switchyard::cpu::set_bf16_dot(path.dot);
    for (const Bf16Activations acts : {Bf16Activations::Float32, Bf16Activations::Round})
      for (int64_t M : {1, 2, 3, 4, 5, 7, 9, 133})
        for (int64_t N : {1, 3, 4, 6, 17, 130})
          for (int64_t K : {1, 15, 16, 31, 32, 33, 64, 100, 300}) {
            std::vector<float> A(size_t(M * K)), C(size_t(M * N));
            std::vector<uint16_t> W(size_t(N * K));
            for (float& a : A) a = normal(rng);
            for (uint16_t& w : W) w = uint16_t(std::bit_cast<uint32_t>(normal(rng)) >> 16);
            switchyard::cpu::gemm_bf16w(M, N, K, A.data(), W.data(), C.data(), acts);
            const bool rounded = acts == Bf16Activations::Round;
            for (int64_t m = 0; m < M; ++m)
              for (int64_t n = 0; n < N; ++n) {
                double ref = 0, mag = 0;
                for (int64_t k = 0; k < K; ++k) {
                  const float a = A[size_t(m * K + k)];
                  const double x = rounded ? widen(bf16_of(a)) : double(a);
                  const double p = x * widen(W[size_t(n * K + k)]);
                  ref += p;
                  mag += std::abs(p);
                }
                ASSERT_NEAR(C[size_t(m * N + n)], ref, 1e-5 * mag + 1e-6)
                    << "simd " << path.simd << " dot " << path.dot << " rounded " << rounded
                    << " M " << M << " N " << N << " K " << K;
              }
          }
  }
  switchyard::cpu::set_bf16_simd(true);
  switchyard::cpu::set_bf16_dot(true);
  if (!switchyard::cpu::bf16_simd_available())
    std::cout << "note: no AVX-512 here, only the portable BF16 paths were tested\n";
  else if (!switchyard::cpu::bf16_dot_available())
    std::cout << "note: no AVX-512 BF16 here, the dot-product tiles were not tested\n";
}

// Attention (stacked query heads of a KV head, two GEMMs per block of queries) against the
// obviously correct loop in float64: GQA and not, queries appended to a cache (pos0 > 0),
// sliding windows shorter and longer than the context, one query (decode) and several blocks.
TEST(AttentionBlock, MatchesAFloat64Loop) {
  std::mt19937_64 rng(kSeed + 11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Case {
    int64_t n, pos0, H, Hkv, Dq, Dv, window;
  };
  for (const Case c :
       {Case{1, 0, 4, 4, 8, 8, 0}, Case{1, 37, 8, 2, 16, 12, 0}, Case{23, 0, 8, 2, 16, 16, 0},
        Case{70, 5, 32, 4, 8, 8, 0}, Case{40, 9, 6, 3, 8, 5, 7}, Case{1, 30, 4, 1, 8, 8, 4},
        Case{130, 0, 2, 2, 4, 4, 1000}, Case{17, 3, 4, 2, 8, 8, 1}}) {
    const int64_t L = c.pos0 + c.n;
    std::vector<float> q(size_t(c.n * c.H * c.Dq)), K(size_t(L * c.Hkv * c.Dq)),
        V(size_t(L * c.Hkv * c.Dv)), out(size_t(c.n * c.H * c.Dv));
    for (float& x : q) x = normal(rng);
    for (float& x : K) x = normal(rng);
    for (float& x : V) x = normal(rng);
    const float scale = 0.7f;
    switchyard::infer::blocks::attention(c.n, c.pos0, c.H, c.Hkv, c.Dq, c.Dv, q.data(), K.data(),
                                         V.data(), scale, c.window, out.data());
    const int64_t group = c.H / c.Hkv;
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t h = 0; h < c.H; ++h) {
        const int64_t pos = c.pos0 + i, kv = h / group;
        const int64_t first = c.window > 0 ? std::max<int64_t>(0, pos - c.window + 1) : 0;
        std::vector<double> p;
        double max = -INFINITY, sum = 0;
        for (int64_t j = first; j <= pos; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < c.Dq; ++e)
            dot += double(q[size_t((i * c.H + h) * c.Dq + e)]) *
                   K[size_t((j * c.Hkv + kv) * c.Dq + e)];
          p.push_back(dot * scale);
          max = std::max(max, p.back());
        }
        for (double& x : p) sum += (x = std::exp(x - max));
        for (int64_t e = 0; e < c.Dv; ++e) {
          double o = 0;
          for (int64_t j = first; j <= pos; ++j)
            o += p[size_t(j - first)] / sum * V[size_t((j * c.Hkv + kv) * c.Dv + e)];
          ASSERT_NEAR(out[size_t((i * c.H + h) * c.Dv + e)], o, 1e-5)
              << "n " << c.n << " pos0 " << c.pos0 << " H " << c.H << " Hkv " << c.Hkv << " window "
              << c.window << " query " << i << " head " << h;
        }
      }
  }
}

TEST(Sampling, GreedyTopKTopPAndTheSeed) {
  using switchyard::infer::Sampler;
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f, 0.5f};
  EXPECT_EQ(Sampler({}).sample(logits.data(), 5), 1);  // first of equal maxima
  Sampler top1({1.0, 1, 1.0, 7});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(top1.sample(logits.data(), 5), 1);
  Sampler nucleus({1.0, 0, 0.4, 7});  // the top token alone holds 0.4 of the mass
  for (int i = 0; i < 20; ++i) EXPECT_EQ(nucleus.sample(logits.data(), 5), 1);
  Sampler a({0.7, 0, 0.95, 3}), b({0.7, 0, 0.95, 3});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(logits.data(), 5), b.sample(logits.data(), 5));
  // Frequencies follow softmax(logits / T): 20000 draws, each within 5 standard deviations.
  Sampler s({2.0, 0, 1.0, kSeed});
  std::vector<int> count(5, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++count[size_t(s.sample(logits.data(), 5))];
  double z = 0;
  for (float l : logits) z += std::exp(l / 2.0);
  for (int j = 0; j < 5; ++j) {
    const double p = std::exp(logits[size_t(j)] / 2.0) / z;
    EXPECT_NEAR(count[size_t(j)] / double(n), p, 5 * std::sqrt(p * (1 - p) / n)) << j;
  }
  // top_k = 2: only the two tied maxima are ever drawn.
  Sampler k2({5.0, 2, 1.0, kSeed});
  for (int i = 0; i < 200; ++i) EXPECT_THAT(k2.sample(logits.data(), 5), testing::AnyOf(1, 3));
}

TEST(Generate, StopsAtAStopTokenAndKeepsIt) {
  SKIP_WITHOUT_TINY("mixtral");
  auto model = Model::load(tiny_dir("mixtral").string());
  const json g = read_json(tiny_dir("mixtral") / "golden.json");
  const auto prefix = g["generate_prefix"][0].get<std::vector<int32_t>>();
  const auto expect = g["generate"][0].get<std::vector<int32_t>>();
  switchyard::infer::GenerateOptions o;
  o.max_new_tokens = 8;
  o.stop_ids = {expect[prefix.size() + 2]};  // the third generated token
  std::vector<int32_t> streamed;
  const auto out =
      switchyard::infer::generate(*model, {prefix, prefix}, o, [&](size_t s, int32_t id) {
        if (s == 0) streamed.push_back(id);
      });
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], std::vector<int32_t>(expect.begin() + long(prefix.size()),
                                         expect.begin() + long(prefix.size()) + 3));
  EXPECT_EQ(out[1], out[0]);
  EXPECT_EQ(streamed, out[0]);
}

// ---- Bad and corrupted folders: an Error naming the file, the tensor or the field. ----

class BadFolder : public testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(tiny_dir("mixtral") / "golden.json"))
      GTEST_SKIP() << "transformers goldens absent at " << tiny_dir("mixtral").string();
    folder = dir.root() / "m";
    fs::create_directories(folder);
    fs::copy_file(tiny_dir("mixtral") / "config.json", folder / "config.json");
    fs::copy_file(tiny_dir("mixtral") / "model.safetensors", folder / "model.safetensors");
    config = read_json(folder / "config.json");
    weights = switchyard::read_safetensors((folder / "model.safetensors").string());
  }
  void write_config() { dir.write((folder / "config.json").string(), config.dump()); }
  void write_weights() {
    switchyard::write_safetensors((folder / "model.safetensors").string(), weights);
  }
  void expect_error(const std::vector<std::string>& parts) {
    try {
      Model::load(folder.string());
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      for (const auto& p : parts) EXPECT_THAT(e.what(), HasSubstr(p));
    }
  }
  ScratchDir dir;
  fs::path folder;
  json config;
  switchyard::SafetensorsFile weights;
};

TEST_F(BadFolder, MissingExtraMisShapedAndWrongDtypeTensors) {
  const std::string gate = "model.layers.1.block_sparse_moe.gate.weight";
  const auto keep = weights.tensors[gate];
  weights.tensors.erase(gate);
  write_weights();
  expect_error({"model.safetensors", gate, "missing"});
  weights.tensors[gate] = switchyard::TensorData::from_f32({7, 64}, std::vector<float>(7 * 64));
  write_weights();
  expect_error({"model.safetensors", gate, "[7, 64]", "[8, 64]"});
  weights.tensors[gate] = switchyard::TensorData::from_i64({8, 64}, std::vector<int64_t>(8 * 64));
  write_weights();
  expect_error({gate, "I64"});
  weights.tensors[gate] = keep;
  weights.tensors["model.layers.0.mlp.mystery.weight"] =
      switchyard::TensorData::from_f32({2}, {1, 2});
  write_weights();
  expect_error({"model.layers.0.mlp.mystery.weight", "not a weight of MixtralForCausalLM"});
}

TEST_F(BadFolder, ConfigValues) {
  config["architectures"] = {"GPTNeoXForCausalLM"};
  write_config();
  expect_error({"config.json", "architectures", "GPTNeoXForCausalLM", "MixtralForCausalLM"});
  config["architectures"] = {"MixtralForCausalLM"};
  config["hidden_act"] = "gelu";
  write_config();
  expect_error({"config.json", "hidden_act", "gelu"});
  config["hidden_act"] = "silu";
  config["rope_parameters"]["rope_type"] = "longrope";
  write_config();
  expect_error({"config.json", "rope_type", "longrope"});
  config["rope_parameters"]["rope_type"] = "default";
  config["num_key_value_heads"] = 3;
  write_config();
  expect_error({"config.json", "num_key_value_heads", "3"});
  config["num_key_value_heads"] = 2;
  config["num_experts_per_tok"] = 9;
  write_config();
  expect_error({"config.json", "num_experts_per_tok", "9"});
  config["num_experts_per_tok"] = "two";
  write_config();
  expect_error({"config.json", "num_experts_per_tok", "integer"});
  dir.write((folder / "config.json").string(), "{\"architectures\": [\"MixtralForCausalLM\"");
  expect_error({"config.json"});
  fs::remove(folder / "config.json");
  expect_error({"config.json", "not found"});
}

TEST_F(BadFolder, TruncatedAndCorruptedShards) {
  const std::string path = (folder / "model.safetensors").string();
  const auto bytes = switchyard::read_file_bytes(path);
  // Cut at several places: inside the size field, the header, the data.
  for (size_t cut : {size_t(3), size_t(200), bytes.size() / 2, bytes.size() - 1}) {
    switchyard::write_file_atomic(path, std::span<const uint8_t>(bytes.data(), cut));
    expect_error({"model.safetensors"});
  }
  // Random byte flips in the header: an error or a model, never a crash.
  std::mt19937_64 rng(kSeed + 3);
  for (int trial = 0; trial < 40; ++trial) {
    auto copy = bytes;
    for (int f = 0; f < 3; ++f) copy[8 + rng() % 600] ^= uint8_t(1u << (rng() % 8));
    switchyard::write_file_atomic(path, copy);
    try {
      Model::load(folder.string());
    } catch (const Error&) {
    }
  }
}

TEST_F(BadFolder, IndexNamingAMissingFileOrTheWrongShard) {
  fs::rename(folder / "model.safetensors", folder / "model-00001-of-00001.safetensors");
  json map = json::object();
  for (const auto& [tensor, data] : weights.tensors)
    map[tensor] = "model-00001-of-00001.safetensors";
  map["model.norm.weight"] = "model-00002-of-00002.safetensors";
  dir.write((folder / "model.safetensors.index.json").string(), json{{"weight_map", map}}.dump());
  expect_error({"model.safetensors.index.json", "model-00002-of-00002.safetensors"});
  map.erase("model.norm.weight");
  dir.write((folder / "model.safetensors.index.json").string(), json{{"weight_map", map}}.dump());
  expect_error({"model.safetensors.index.json", "model.norm.weight", "not in 'weight_map'"});
  dir.write((folder / "model.safetensors.index.json").string(), "{\"weight_map\": 3}");
  expect_error({"model.safetensors.index.json", "weight_map"});
}

}  // namespace

// ---- Routing control at inference ----

namespace routing_tests {

using switchyard::infer::ForwardCapture;
using switchyard::infer::LoadOptions;

ForwardCapture capture_forward(Model& m, const std::vector<int32_t>& ids,
                               std::vector<float>& logits) {
  KVCache c = m.new_cache();
  std::vector<Model::Chunk> chunks = {{&c, ids}};
  ForwardCapture cap;
  cap.router_logits = cap.decisions = true;
  m.forward(chunks, true, logits, &cap);
  return cap;
}

LoadOptions with(const json& routing) {
  LoadOptions o;
  o.routing = routing;
  o.routing_source = "test routing";
  return o;
}

TEST(RoutingControl, TheCheckpointsOwnRuleGivesTheSameLogits) {
  SKIP_WITHOUT_TINY("qwen3_moe");
  const std::string dir = tiny_dir("qwen3_moe").string();
  auto base = Model::load(dir);
  auto same = Model::load(dir, with({{"router", base->spec().router}}));
  std::mt19937_64 rng(kSeed + 4);
  const auto ids = random_ids(rng, 11, 512);
  EXPECT_EQ(full_logits(*base, ids), full_logits(*same, ids));
}

// Per token and layer: exactly k distinct experts, none disabled, and the weights the
// renormalised softmax of the chosen logits (Qwen3-MoE's rule with norm_topk_prob).
TEST(RoutingControl, KAndDisabledExpertsKeepTheRoutingInvariants) {
  SKIP_WITHOUT_TINY("qwen3_moe");
  const json routing = {
      {"k", 3}, {"disabled_experts", {0, 5, 11}}, {"layers", {{"1", {{"k", 2}}}}}};
  auto m = Model::load(tiny_dir("qwen3_moe").string(), with(routing));
  std::mt19937_64 rng(kSeed + 5);
  const auto ids = random_ids(rng, 20, 512);
  std::vector<float> logits;
  const ForwardCapture cap = capture_forward(*m, ids, logits);
  ASSERT_EQ(cap.routing.size(), 2u);
  for (size_t l = 0; l < 2; ++l) {
    const size_t k = l == 0 ? 3 : 2;
    const auto& d = cap.routing[l];
    const auto& z = cap.logits[l];  // (T, 16), -inf where disabled
    for (int32_t t = 0; t < 20; ++t) {
      std::vector<int32_t> chosen;
      double denom = 0, wsum = 0;
      for (size_t a = 0; a < d.row.size(); ++a)
        if (d.row[a] == t) {
          chosen.push_back(d.expert[a]);
          denom += std::exp(double(z[size_t(t * 16 + d.expert[a])]));
        }
      std::set<int32_t> distinct(chosen.begin(), chosen.end());
      ASSERT_EQ(chosen.size(), k) << "layer " << l << " token " << t;
      EXPECT_EQ(distinct.size(), k);
      for (int32_t e : {0, 5, 11}) EXPECT_FALSE(distinct.count(e)) << e;
      for (int e : {0, 5, 11}) EXPECT_TRUE(std::isinf(z[size_t(t * 16 + e)]));
      // The chosen are the k largest of the live logits.
      double kth = INFINITY;
      for (int32_t e : chosen) kth = std::min(kth, double(z[size_t(t * 16 + e)]));
      for (int e = 0; e < 16; ++e)
        if (!distinct.count(e)) {
          EXPECT_LE(z[size_t(t * 16 + e)], kth);
        }
      for (size_t a = 0; a < d.row.size(); ++a)
        if (d.row[a] == t) {
          EXPECT_NEAR(d.weight[a], std::exp(double(z[size_t(t * 16 + d.expert[a])])) / denom, 1e-6);
          wsum += d.weight[a];
        }
      EXPECT_NEAR(wsum, 1.0, 1e-6);
    }
  }
}

// Disabling experts in the engine equals deleting them from the checkpoint.
TEST(RoutingControl, DisabledExpertsEqualAPrunedCheckpoint) {
  SKIP_WITHOUT_TINY("mixtral");
  const fs::path src = tiny_dir("mixtral");
  ScratchDir dir;
  const fs::path pruned = dir.root() / "pruned";
  fs::create_directories(pruned);
  const std::set<int> gone = {2, 6};
  auto w = switchyard::read_safetensors((src / "model.safetensors").string());
  switchyard::SafetensorsFile out;
  for (auto& [name, t] : w.tensors) {
    const auto at = name.find(".experts.");
    if (at != std::string::npos) {
      const int e = std::stoi(name.substr(at + 9));
      if (gone.count(e)) continue;
      const int renumbered =
          e - int(std::count_if(gone.begin(), gone.end(), [&](int g) { return g < e; }));
      const auto dot = name.find('.', at + 9);
      out.tensors[name.substr(0, at + 9) + std::to_string(renumbered) + name.substr(dot)] = t;
    } else if (name.find("gate.weight") != std::string::npos) {
      const auto v = t.to_f32(name);
      std::vector<float> kept;
      for (int e = 0; e < 8; ++e)
        if (!gone.count(e)) kept.insert(kept.end(), v.begin() + e * 64, v.begin() + (e + 1) * 64);
      out.tensors[name] = switchyard::TensorData::from_f32({6, 64}, kept);
    } else {
      out.tensors[name] = t;
    }
  }
  switchyard::write_safetensors((pruned / "model.safetensors").string(), out);
  json config = read_json(src / "config.json");
  config["num_local_experts"] = 6;
  dir.write((pruned / "config.json").string(), config.dump());
  auto a = Model::load(src.string(), with({{"disabled_experts", {2, 6}}}));
  auto b = Model::load(pruned.string());
  std::mt19937_64 rng(kSeed + 6);
  const auto ids = random_ids(rng, 15, 512);
  const auto la = full_logits(*a, ids), lb = full_logits(*b, ids);
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) ASSERT_NEAR(la[i], lb[i], 1e-6) << i;
  EXPECT_LT(a->parameter_count(), Model::load(src.string())->parameter_count());
}

TEST(RoutingControl, BadOverridesNameTheField) {
  SKIP_WITHOUT_TINY("qwen3_moe");
  const std::string dir = tiny_dir("qwen3_moe").string();
  auto expect_error = [&](const json& routing, const std::vector<std::string>& parts) {
    try {
      Model::load(dir, with(routing));
      ADD_FAILURE() << "no error for " << routing.dump();
    } catch (const Error& e) {
      for (const auto& p : parts) EXPECT_THAT(e.what(), HasSubstr(p)) << routing.dump();
    }
  };
  expect_error({{"kk", 2}}, {"test routing", "kk"});
  expect_error({{"k", 0}}, {"test routing", "'k'", "0"});
  expect_error({{"disabled_experts", {16}}}, {"disabled_experts", "16"});
  expect_error({{"disabled_experts", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}},
               {"k = 4", "3 are left"});
  expect_error({{"layers", {{"2", {{"k", 1}}}}}}, {"layers.2", "[0, 2)"});
  expect_error({{"bias", {1, 2}}}, {"bias", "16 numbers"});
  expect_error({{"router", {{"router", "expert_choice"}}}, {"bias", std::vector<float>(16, 0.f)}},
               {"expert_choice", "selection bias"});
  expect_error({{"router", {{"router", "nope"}}}}, {"test routing", "nope"});
  // The experts are SwiGLU: a rule naming another activation is refused, not run as SwiGLU.
  expect_error({{"router", {{"router", "mixtral"}, {"activation", "swiglu_clamped"}}}},
               {"test routing", "router.activation", "swiglu_clamped", "SwiGLU"});
  expect_error({{"router", {{"router", "mixtral"}, {"swiglu_limit", 7.0}}}},
               {"router.swiglu_limit", "7"});
}

TEST(RoutingControl, ASelectionBiasSteersTheChoice) {
  SKIP_WITHOUT_TINY("qwen3_moe");
  std::vector<float> bias(16, 0.0f);
  bias[7] = 100.0f;  // expert 7 always chosen, its weight still from the unbiased scores
  auto m = Model::load(tiny_dir("qwen3_moe").string(), with({{"bias", bias}}));
  std::mt19937_64 rng(kSeed + 7);
  std::vector<float> logits;
  const ForwardCapture cap = capture_forward(*m, random_ids(rng, 9, 512), logits);
  for (const auto& d : cap.routing) {
    int sevens = 0;
    for (int32_t e : d.expert) sevens += e == 7;
    EXPECT_EQ(sevens, 9);
  }
}

// "gate" swaps in another router's weight: the model's own gives the same logits; a zero gate
// makes every score equal, so top-4 takes experts 0..3 (ties to the lower id) at 1/4 each.
TEST(RoutingControl, AGateFromAnotherFileReplacesTheRouter) {
  SKIP_WITHOUT_TINY("qwen3_moe");
  const std::string dir = tiny_dir("qwen3_moe").string();
  ScratchDir scratch;
  const auto w = switchyard::read_safetensors(dir + "/model.safetensors");
  switchyard::SafetensorsFile gates;
  gates.tensors["own"] = w.tensors.at("model.layers.1.mlp.gate.weight");
  gates.tensors["zero"] = switchyard::TensorData::from_f32({16, 64}, std::vector<float>(16 * 64));
  gates.tensors["small"] = switchyard::TensorData::from_f32({8, 64}, std::vector<float>(8 * 64));
  const std::string file = scratch.path("gates.safetensors");
  switchyard::write_safetensors(file, gates);
  auto gate = [&](const char* tensor) {
    return json{{"layers", {{"1", {{"gate", {{"file", file}, {"tensor", tensor}}}}}}}};
  };
  std::mt19937_64 rng(kSeed + 11);
  const auto ids = random_ids(rng, 7, 512);
  auto base = Model::load(dir);
  auto own = Model::load(dir, with(gate("own")));
  EXPECT_EQ(full_logits(*base, ids), full_logits(*own, ids));
  auto zero = Model::load(dir, with(gate("zero")));
  std::vector<float> logits;
  const ForwardCapture cap = capture_forward(*zero, ids, logits);
  ASSERT_EQ(cap.routing.size(), 2u);
  std::vector<int> per_expert(16, 0);
  for (size_t a = 0; a < cap.routing[1].expert.size(); ++a) {
    ++per_expert[size_t(cap.routing[1].expert[a])];
    EXPECT_FLOAT_EQ(cap.routing[1].weight[a], 0.25f);
  }
  for (int e = 0; e < 16; ++e) EXPECT_EQ(per_expert[size_t(e)], e < 4 ? 7 : 0) << e;
  EXPECT_THAT([&] { Model::load(dir, with(gate("small"))); },
              testing::ThrowsMessage<Error>(AllOf(HasSubstr("small"), HasSubstr("[16, 64]"))));
  EXPECT_THAT([&] { Model::load(dir, with(gate("nope"))); },
              testing::ThrowsMessage<Error>(HasSubstr("'nope'")));
  EXPECT_THAT(
      [&] {
        Model::load(dir, with({{"gate", {{"file", file}}}}));
      },
      testing::ThrowsMessage<Error>(HasSubstr("'tensor'")));
}

}  // namespace routing_tests

// ---- Traces and replay ----

namespace trace_tests {

using switchyard::infer::ForwardCapture;
using switchyard::infer::LoadOptions;
using switchyard::infer::RoutingTrace;
using switchyard::infer::TraceRecorder;

LoadOptions with(const json& routing) {
  LoadOptions o;
  o.routing = routing;
  o.routing_source = "test routing";
  return o;
}

// Forward of B sequences as one batch, recording a trace when `recorder` is given.
std::vector<float> run(Model& m, const std::vector<std::vector<int32_t>>& seqs,
                       TraceRecorder* recorder, const RoutingTrace* replay) {
  std::vector<KVCache> caches;
  for (size_t i = 0; i < seqs.size(); ++i) caches.push_back(m.new_cache());
  std::vector<Model::Chunk> chunks;
  std::vector<int64_t> sequence;
  for (size_t i = 0; i < seqs.size(); ++i) {
    chunks.push_back({&caches[i], seqs[i]});
    sequence.push_back(int64_t(i));
  }
  ForwardCapture cap;
  cap.decisions = cap.router_logits = recorder != nullptr;
  switchyard::infer::ForwardReplay rows;
  if (replay) rows = switchyard::infer::replay_rows(*replay, chunks, sequence, "test trace");
  std::vector<float> logits;
  m.forward(chunks, true, logits, &cap, replay ? &rows : nullptr);
  if (recorder) recorder->add(chunks, sequence, cap);
  return logits;
}

TEST(Trace, GenerateRecordsEveryTokenAndRoundTrips) {
  SKIP_WITHOUT_TINY("mixtral");
  auto m = Model::load(tiny_dir("mixtral").string());
  TraceRecorder recorder(*m, true);
  switchyard::infer::GenerateOptions o;
  o.max_new_tokens = 6;
  o.capture_decisions = o.capture_router_logits = true;
  o.on_forward = [&](std::span<const Model::Chunk> chunks, const std::vector<int64_t>& seq,
                     const ForwardCapture& cap) { recorder.add(chunks, seq, cap); };
  const std::vector<int32_t> a = {5, 9, 11, 300}, b = {7, 8};
  const auto out = switchyard::infer::generate(*m, {a, b}, o, {});
  const RoutingTrace t = recorder.finish("tiny", {"prose", "code"});
  // Every token fed to the model: the prompt and all generated tokens but the last.
  EXPECT_EQ(t.size(), int64_t(a.size() + b.size() + 2 * 5));
  EXPECT_EQ(t.layers, 2);
  EXPECT_EQ(t.k, 2);
  for (int64_t s : {0, 1}) {
    std::vector<int64_t> tokens;
    std::vector<int64_t> positions;
    for (int64_t n = 0; n < t.size(); ++n)
      if (t.sequences[size_t(n)] == s) {
        tokens.push_back(t.tokens[size_t(n)]);
        positions.push_back(t.positions[size_t(n)]);
      }
    std::vector<int64_t> want(s == 0 ? a.begin() : b.begin(), s == 0 ? a.end() : b.end());
    want.insert(want.end(), out[size_t(s)].begin(), out[size_t(s)].end() - 1);
    EXPECT_EQ(tokens, want);
    for (size_t i = 0; i < positions.size(); ++i) EXPECT_EQ(positions[i], int64_t(i));
  }
  for (int64_t n = 0; n < t.size(); ++n)
    for (int64_t l = 0; l < 2; ++l) {
      const float w0 = t.weights[size_t((n * 2 + l) * 2)],
                  w1 = t.weights[size_t((n * 2 + l) * 2 + 1)];
      EXPECT_NEAR(w0 + w1, 1.0f, 1e-6);
      EXPECT_NE(t.ids[size_t((n * 2 + l) * 2)], t.ids[size_t((n * 2 + l) * 2 + 1)]);
    }
  ScratchDir dir;
  const std::string path = dir.path("t.safetensors");
  switchyard::infer::write_trace(path, t);
  const RoutingTrace back = switchyard::infer::read_trace(path);
  EXPECT_EQ(back.ids, t.ids);
  EXPECT_EQ(back.weights, t.weights);
  EXPECT_EQ(back.logits, t.logits);
  EXPECT_EQ(back.tokens, t.tokens);
  EXPECT_EQ(back.meta, t.meta);
  EXPECT_EQ(back.meta["labels"], json({"prose", "code"}));
}

// Replaying a trace gives the logits of the run that recorded it: on the same model, and, for a
// run with experts disabled, on the full model (top-k's renormalised weights over the same
// experts are the same numbers).
TEST(Trace, ReplayReproducesTheRecordedRun) {
  SKIP_WITHOUT_TINY("qwen3_moe");
  const std::string dir = tiny_dir("qwen3_moe").string();
  std::mt19937_64 rng(kSeed + 8);
  const std::vector<std::vector<int32_t>> seqs = {random_ids(rng, 9, 512), random_ids(rng, 5, 512)};
  auto pruned = Model::load(dir, with({{"disabled_experts", {1, 4, 9}}}));
  TraceRecorder recorder(*pruned, false);
  const auto want = run(*pruned, seqs, &recorder, nullptr);
  const RoutingTrace t = recorder.finish(dir);
  auto full = Model::load(dir);
  const auto replayed = run(*full, seqs, nullptr, &t);
  ASSERT_EQ(replayed.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(replayed[i], want[i], 1e-6) << i;
  EXPECT_GT(std::abs(run(*full, seqs, nullptr, nullptr)[0] - want[0]) +
                std::abs(run(*full, seqs, nullptr, nullptr)[100] - want[100]),
            0.0f);  // the replay is not simply the full model's own routing
  // A token that differs from the recorded one is refused.
  auto other = seqs;
  other[1][2] = (other[1][2] + 1) % 512;
  EXPECT_THAT([&] { run(*full, other, nullptr, &t); },
              testing::ThrowsMessage<Error>(HasSubstr("sequence 1 position 2 was token")));
  // A router that cannot weigh given experts is refused.
  auto ec = Model::load(dir, with({{"router", {{"router", "expert_choice"}}}}));
  EXPECT_THAT([&] { run(*ec, seqs, nullptr, &t); },
              testing::ThrowsMessage<Error>(HasSubstr("cannot replay")));
  // A model without the recorded experts is refused.
  auto fewer = Model::load(dir, with({{"disabled_experts", {0, 2, 3, 5, 6, 7, 8, 10, 11, 12}}}));
  try {
    run(*fewer, seqs, nullptr, &t);
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("does not hold"));
  }
}

TEST(Trace, CorruptedTracesAreNamedErrors) {
  SKIP_WITHOUT_TINY("mixtral");
  auto m = Model::load(tiny_dir("mixtral").string());
  TraceRecorder recorder(*m, false);
  std::mt19937_64 rng(kSeed + 9);
  run(*m, {random_ids(rng, 4, 512)}, &recorder, nullptr);
  ScratchDir dir;
  const std::string path = dir.path("t.safetensors");
  switchyard::infer::write_trace(path, recorder.finish("tiny"));
  EXPECT_THROW(switchyard::infer::write_trace(dir.path("t.bin"), recorder.finish("tiny")), Error);
  auto file = switchyard::read_safetensors(path);
  const auto original = file.tensors["experts"];
  auto ids = original;
  reinterpret_cast<int32_t*>(ids.bytes.data())[3] = 99;
  file.tensors["experts"] = ids;
  switchyard::write_safetensors(path, file);
  EXPECT_THAT([&] { switchyard::infer::read_trace(path); },
              testing::ThrowsMessage<Error>(AllOf(HasSubstr("experts"), HasSubstr("99"))));
  file.tensors["experts"] = original;
  file.tensors.erase("weights");
  switchyard::write_safetensors(path, file);
  EXPECT_THAT([&] { switchyard::infer::read_trace(path); },
              testing::ThrowsMessage<Error>(HasSubstr("'weights' is missing")));
  dir.write("t.json", "{\"format\": \"other\"}");
  EXPECT_THAT([&] { switchyard::infer::read_trace(path); },
              testing::ThrowsMessage<Error>(HasSubstr("format")));
  std::filesystem::remove(dir.path("t.json"));
  EXPECT_THAT([&] { switchyard::infer::read_trace(path); },
              testing::ThrowsMessage<Error>(HasSubstr("metadata file is missing")));
}

}  // namespace trace_tests

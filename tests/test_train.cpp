// The training loop: resume reproduces the uninterrupted run exactly, checkpoints are atomic and
// validated, bad configs name the field, and a tiny model learns the synthetic data.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/model.h>
#include <switchyard/safetensors.h>
#include <switchyard/train.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace switchyard {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("switchyard_train_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

json router_json(const std::string& name) {
  if (name == "loss_free")  // DeepSeek-V3's bias balancing on a small layer
    return {{"router", "deepseek_v3"}, {"k", 2}, {"groups", 1}, {"topk_groups", 1}};
  if (name == "maskmoe")  // 2 of the 4 experts visible to the frequent ids, 1 to the others
    return {{"router", "maskmoe"}, {"k", 2}, {"visible_experts", 2}};
  if (name == "stablemoe")  // the switch at step 7: the 5-step first part stops before it
    return {{"router", "stablemoe"}, {"stage1_steps", 7}, {"distill_dim", 8}};
  if (name == "stablemoe_switched")  // S₁ = ⌊0.25 · 12⌋ = 3: the first part stops after it
    return {{"router", "stablemoe"}, {"stage1_fraction", 0.25}, {"distill_dim", 8}};
  if (name == "competesmoe")  // competes on about half the calls from step 2 on
    return {{"router", "competesmoe"}, {"competition", 0.5}, {"warmup_steps", 2}};
  if (name == "competesmoe_fraction")  // W = ⌊0.25 · 12⌋ = 3 from the run's schedule
    return {{"router", "competesmoe"}, {"competition", 0.7}, {"warmup_fraction", 0.25}};
  return {{"router", name}};
}

json tiny_config(const fs::path& out, const std::string& router = "mixtral") {
  return {{"model",
           {{"d_model", 32},
            {"n_layers", 2},
            {"n_heads", 2},
            {"seq_len", 32},
            {"experts", 4},
            {"d_ff", 32},
            {"dense_d_ff", 64},
            {"moe_every", 1},
            {"router", router_json(router)}}},
          {"data", {{"synthetic", true}}},
          {"batch", 4},
          {"steps", 12},
          {"lr", 0.01},
          {"warmup_steps", 2},
          {"eval_every", 4},
          {"eval_batches", 2},
          {"checkpoint_every", 3},
          {"seed", 7},
          {"out", out.string()}};
}

std::vector<json> read_metrics(const fs::path& dir) {
  std::vector<json> rows;
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

TrainOptions quiet() {
  TrainOptions o;
  o.quiet = true;
  return o;
}

// Trains config j uninterrupted into dir/whole and, into dir/parts, its first `stop_after` steps;
// returns the parts run's config, for resume_run.
TrainConfig train_whole_and_first_part(const fs::path& dir, json j, int64_t stop_after) {
  j["out"] = (dir / "whole").string();
  train(parse_train_config(j, "test"), quiet());
  j["out"] = (dir / "parts").string();
  const TrainConfig parts = parse_train_config(j, "test");
  TrainOptions first = quiet();
  first.stop_after = stop_after;
  train(parts, first);
  return parts;
}

void resume_run(const TrainConfig& config) {
  TrainOptions rest = quiet();
  rest.resume = true;
  train(config, rest);
}

class Resume : public ::testing::TestWithParam<std::string> {};

TEST_P(Resume, ReproducesTheUninterruptedRun) {
  const std::string router = GetParam();
  const fs::path dir = temp_dir("resume_" + router);
  const TrainConfig whole = parse_train_config(tiny_config(dir / "whole", router), "test");
  const TrainConfig parts = parse_train_config(tiny_config(dir / "parts", router), "test");
  train(whole, quiet());
  TrainOptions first = quiet();
  first.stop_after = 5;
  train(parts, first);
  EXPECT_EQ(read_metrics(dir / "parts").size(), 5u);
  TrainOptions rest = quiet();
  rest.resume = true;
  train(parts, rest);
  const auto a = read_metrics(dir / "whole"), b = read_metrics(dir / "parts");
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["train_loss"], b[i]["train_loss"]) << "step " << i;
    EXPECT_EQ(a[i].value("val_loss", -1.0), b[i].value("val_loss", -1.0)) << "step " << i;
    EXPECT_EQ(a[i]["layers"][0]["load"], b[i]["layers"][0]["load"]) << "step " << i;
    for (size_t l = 0; l < a[i]["layers"].size(); ++l)
      EXPECT_EQ(a[i]["layers"][l]["routing_digest"], b[i]["layers"][l]["routing_digest"])
          << "step " << i << " layer " << l;
  }
  fs::remove_all(dir);
}

// Routers with non-gradient state (bias, λ) and training noise (jitter) must resume exactly too;
// vqmoe: a logit function with three tensors of their own (the codebook never decays).
INSTANTIATE_TEST_SUITE_P(Routers, Resume,
                         ::testing::Values("mixtral", "switch", "loss_free", "remoe", "maskmoe",
                                           "thor", "stablemoe", "stablemoe_switched", "vqmoe",
                                           "competesmoe", "competesmoe_fraction"));

// StableMoE across a resume (docs/routers/stablemoe.md, section 8): the checkpoint after the
// switch holds the steps taken and stage 2; the resumed run restores the frozen flags, so the
// distilled router (Q, K) is the same at the end as at the stop and as in the uninterrupted run;
// and from the switch on the probe batch's routing never fluctuates.
TEST(Train, StableMoEStaysFrozenAcrossResumeAndStopsFluctuating) {
  const fs::path dir = temp_dir("stablemoe");
  json j = tiny_config(dir / "whole", "stablemoe_switched");
  j["eval_every"] = 1;
  const TrainConfig parts = train_whole_and_first_part(dir, j, 5);
  auto checkpoint = [&](const std::string& run) {
    return read_safetensors((dir / run / "checkpoint" / "model.safetensors").string());
  };
  const SafetensorsFile stopped = checkpoint("parts");
  const json layers = json::parse(stopped.metadata.at("state"))["model_state"]["moe_layers"];
  ASSERT_EQ(layers.size(), 2u);
  for (const json& layer : layers) EXPECT_EQ(layer["router"], json({{"steps", 5}, {"stage", 2}}));
  resume_run(parts);
  const SafetensorsFile resumed = checkpoint("parts"), uninterrupted = checkpoint("whole");
  for (const char* layer : {"0", "1"})
    for (const char* name : {"token_embedding", "token_centroids"}) {
      const std::string key = std::string("layers.") + layer + ".moe.router." + name;
      SCOPED_TRACE(key);
      EXPECT_EQ(resumed.tensors.at(key).to_f32(key), stopped.tensors.at(key).to_f32(key));
      EXPECT_EQ(resumed.tensors.at(key).to_f32(key), uninterrupted.tensors.at(key).to_f32(key));
    }
  const std::string w = "layers.0.moe.router.centroids";
  EXPECT_NE(resumed.tensors.at(w).to_f32(w), stopped.tensors.at(w).to_f32(w)) << "W learns on";
  const auto rows = read_metrics(dir / "parts");
  ASSERT_EQ(rows.size(), 12u);
  for (size_t i = 3; i < rows.size(); ++i)
    for (size_t l = 0; l < 2; ++l) {
      ASSERT_TRUE(rows[i]["layers"][l].contains("fluctuation")) << "step " << i;
      EXPECT_EQ(rows[i]["layers"][l]["fluctuation"], 0.0) << "step " << i << " layer " << l;
      EXPECT_EQ(rows[i]["layers"][l]["losses"]["router"], 0.0) << "step " << i << " layer " << l;
    }
  fs::remove_all(dir);
}

// MaskMoE's masks come from the training split's token counts, counted once before the first step
// and kept in the checkpoint: every MoE layer holds the same counts, a resumed run routes every
// step exactly as the uninterrupted one, and sampling from the checkpoint routes with them too.
TEST(Train, MaskMoECountsTheTrainingDataAndResumesWithThem) {
  const fs::path dir = temp_dir("maskmoe");
  json j = tiny_config(dir / "whole", "maskmoe");
  j["steps"] = 6;
  resume_run(train_whole_and_first_part(dir, j, 2));

  const SafetensorsFile ckpt =
      read_safetensors((dir / "parts" / "checkpoint" / "model.safetensors").string());
  const json layers = json::parse(ckpt.metadata.at("state"))["model_state"]["moe_layers"];
  ASSERT_EQ(layers.size(), 2u);
  const auto counts = layers[0]["router"]["token_counts"].get<std::vector<int64_t>>();
  ASSERT_EQ(counts.size(), 256u);  // the model's vocabulary
  EXPECT_EQ(layers[1]["router"]["token_counts"], layers[0]["router"]["token_counts"]);
  EXPECT_GT(counts['+'], 0);  // the synthetic data: arithmetic and words
  EXPECT_GT(counts['e'], counts['Q']);
  EXPECT_EQ(counts['Q'], 0);

  const auto a = read_metrics(dir / "whole"), b = read_metrics(dir / "parts");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t l = 0; l < 2; ++l) {
      EXPECT_EQ(a[i]["layers"][l]["routing_digest"], b[i]["layers"][l]["routing_digest"])
          << "step " << i << " layer " << l;
      EXPECT_EQ(a[i]["train_loss"], b[i]["train_loss"]) << "step " << i;
    }
  EXPECT_EQ(sample((dir / "parts" / "checkpoint").string(), "1+2=", 8, 0.5, 3),
            sample((dir / "whole" / "checkpoint").string(), "1+2=", 8, 0.5, 3));
  fs::remove_all(dir);
}

TEST(Train, LearnsTheSyntheticData) {
  const fs::path dir = temp_dir("learn");
  json j = tiny_config(dir / "run");
  j["steps"] = 60;
  train(parse_train_config(j, "test"), quiet());
  const auto rows = read_metrics(dir / "run");
  ASSERT_EQ(rows.size(), 60u);
  const double first = rows.front()["train_loss"], last = rows.back()["val_loss"];
  EXPECT_GT(first, 5.0);  // ≈ ln 256 at initialisation
  EXPECT_LT(last, 3.0);   // the arithmetic and word patterns are learnable
  const json run = json::parse(read_file_text((dir / "run" / "run.json").string()));
  EXPECT_EQ(run["domains"], json({"arithmetic", "words"}));
  EXPECT_TRUE(rows.back()["layers"][0].contains("domain_mi"));
  EXPECT_TRUE(rows.back()["layers"][0].contains("fluctuation"));
  const std::string text = sample((dir / "run" / "checkpoint").string(), "12+3", 40, 0.5, 1);
  EXPECT_EQ(text.size(), 40u);
  fs::remove_all(dir);
}

// Fine-tuning: `init` starts a fresh run (another router over the same tensors, one domain) from
// an earlier run's parameters, with fresh optimiser moments and step count.
TEST(Train, InitStartsFromAnEarlierRunsParameters) {
  const fs::path dir = temp_dir("init");
  json pre = tiny_config(dir / "pre");
  pre["steps"] = 6;
  train(parse_train_config(pre, "test"), quiet());
  const std::string ckpt = (dir / "pre" / "checkpoint").string();
  const SafetensorsFile trained = read_safetensors(ckpt + "/model.safetensors");

  json ft = tiny_config(dir / "ft", "gw_moe");
  ft["init"] = ckpt;
  ft["data"]["domains"] = {"words"};
  ft["steps"] = 1;
  ft["lr"] = 0.0;  // no update: the checkpoint must hold exactly the parameters it started from
  ft["warmup_steps"] = 0;
  ft["weight_decay"] = 0.0;
  const TrainConfig config = parse_train_config(ft, "ft.json");
  EXPECT_EQ(config.to_json()["init"], ckpt);
  EXPECT_EQ(config.to_json()["data"]["domains"], json({"words"}));
  train(config, quiet());
  const SafetensorsFile after =
      read_safetensors((dir / "ft" / "checkpoint" / "model.safetensors").string());
  int compared = 0;
  for (const auto& [name, t] : after.tensors) {
    if (name.starts_with("optim.")) continue;
    ASSERT_TRUE(trained.tensors.count(name)) << name;
    EXPECT_EQ(t.to_f32(name), trained.tensors.at(name).to_f32(name)) << name;
    ++compared;
  }
  EXPECT_GT(compared, 10);
  const auto rows = read_metrics(dir / "ft");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(
      json::parse(read_file_text((dir / "ft" / "checkpoint" / "checkpoint.json").string()))["step"],
      1);

  // Tensors that do not match, and a folder without a checkpoint, are errors naming the config.
  json wider = ft;
  wider["model"]["experts"] = 8;
  try {
    train(parse_train_config(wider, "wider.json"), quiet());
    ADD_FAILURE() << "init from a 4-expert checkpoint into 8 experts was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("field 'init' of wider.json"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("gate.weight"));
  }
  json nowhere = ft;
  nowhere["init"] = (dir / "none").string();
  try {
    train(parse_train_config(nowhere, "nowhere.json"), quiet());
    ADD_FAILURE() << "init from a missing checkpoint was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("nowhere.json: field 'init'"));
  }
  fs::remove_all(dir);
}

// Routers that do not route by logits (hash) hold no gate tensor: nothing unused is trained or
// saved.
// CartesianMoE's sub-layers (model moe_sublayers = 2) under the loss-free router: every
// sub-layer is its own MoE layer with its own selection bias, so the state, the metrics rows and
// the checkpoint tensors are per sub-layer, and a resumed run reproduces the uninterrupted one.
TEST(Train, MoESublayersResumeAndCheckpointPerSubLayer) {
  const fs::path dir = temp_dir("sublayers");
  json j = tiny_config(dir, "loss_free");
  j["model"]["moe_sublayers"] = 2;
  j["model"]["d_ff"] = 16;
  j["model"]["shared_d_ff"] = 8;
  const TrainConfig parts = train_whole_and_first_part(dir, j, 5);
  resume_run(parts);
  const auto a = read_metrics(dir / "whole"), b = read_metrics(dir / "parts");
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i]["layers"].size(), 4u) << "2 MoE layers of 2 sub-layers each";
    EXPECT_EQ(a[i]["train_loss"], b[i]["train_loss"]) << "step " << i;
    EXPECT_EQ(a[i].value("val_loss", -1.0), b[i].value("val_loss", -1.0)) << "step " << i;
    for (size_t l = 0; l < a[i]["layers"].size(); ++l)
      EXPECT_EQ(a[i]["layers"][l]["routing_digest"], b[i]["layers"][l]["routing_digest"])
          << "step " << i << " layer " << l;
  }
  const SafetensorsFile whole =
      read_safetensors((dir / "whole" / "checkpoint" / "model.safetensors").string());
  const SafetensorsFile resumed =
      read_safetensors((dir / "parts" / "checkpoint" / "model.safetensors").string());
  for (const char* name :
       {"layers.0.sub0.moe.gate.weight", "layers.0.sub0.moe.gate.bias", "layers.0.sub1.norm",
        "layers.0.sub1.moe.gate.weight", "layers.0.sub1.moe.gate.bias",
        "layers.1.sub1.moe.experts.w2", "layers.1.sub1.moe.shared.w1"}) {
    ASSERT_TRUE(whole.tensors.count(name)) << name;
    EXPECT_EQ(whole.tensors.at(name).to_f32(name), resumed.tensors.at(name).to_f32(name)) << name;
  }
  EXPECT_FALSE(whole.tensors.count("layers.0.moe.gate.weight"));
  EXPECT_FALSE(whole.tensors.count("layers.0.sub0.norm")) << "sub-layer 0 reads mlp_norm's output";
  // The selection biases moved, each its own way (the routers are apart).
  EXPECT_NE(whole.tensors.at("layers.0.sub0.moe.gate.bias").to_f32("b0"),
            whole.tensors.at("layers.0.sub1.moe.gate.bias").to_f32("b1"));
  fs::remove_all(dir);
}

// MindSkip (model attention_skip) under the loss-free router: a resumed run reproduces the
// uninterrupted one, skip decisions and the skip routers' weights included, and the metrics carry
// the skip rates (training and validation).
TEST(Train, AttentionSkipResumesExactly) {
  const fs::path dir = temp_dir("attention_skip");
  json j = tiny_config(dir, "loss_free");
  j["model"]["attention_skip"] = {{"layers", "all"}, {"loss", 0.05}};
  const TrainConfig parts = train_whole_and_first_part(dir, j, 5);
  resume_run(parts);
  const auto a = read_metrics(dir / "whole"), b = read_metrics(dir / "parts");
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["train_loss"], b[i]["train_loss"]) << "step " << i;
    EXPECT_EQ(a[i]["aux_loss"], b[i]["aux_loss"]) << "step " << i;
    ASSERT_TRUE(a[i].contains("attention_skip")) << "step " << i;
    ASSERT_EQ(a[i]["attention_skip"].size(), 2u);
    EXPECT_EQ(a[i]["attention_skip"], b[i]["attention_skip"]) << "step " << i;
    EXPECT_EQ(a[i].contains("val_loss"), a[i].contains("val_attention_skip")) << "step " << i;
    EXPECT_EQ(a[i].value("val_attention_skip", json()), b[i].value("val_attention_skip", json()));
  }
  const SafetensorsFile whole =
      read_safetensors((dir / "whole" / "checkpoint" / "model.safetensors").string());
  const SafetensorsFile resumed =
      read_safetensors((dir / "parts" / "checkpoint" / "model.safetensors").string());
  ASSERT_TRUE(whole.tensors.count("layers.0.attn_skip.weight"));
  ASSERT_TRUE(whole.tensors.count("layers.1.attn_skip.weight"));
  for (const auto& [name, t] : whole.tensors)
    EXPECT_EQ(t.to_f32(name), resumed.tensors.at(name).to_f32(name)) << name;
  fs::remove_all(dir);
}

// Router-Tuning: from a base checkpoint without skip routers (init), only the skip routers learn;
// every other tensor, the selection bias the loss-free router would move included, ends
// bit-identical to the base checkpoint. The run log lists the tensors init did not have.
TEST(Train, RouterTuningChangesOnlyTheSkipRouters) {
  const fs::path dir = temp_dir("router_tuning");
  json base = tiny_config(dir / "base", "loss_free");
  base["steps"] = 6;
  train(parse_train_config(base, "base.json"), quiet());
  const std::string ckpt = (dir / "base" / "checkpoint").string();
  const SafetensorsFile trained = read_safetensors(ckpt + "/model.safetensors");

  json rt = tiny_config(dir / "rt", "loss_free");
  rt["model"]["attention_skip"] = {{"layers", "all"}, {"loss", 0.1}};
  rt["init"] = ckpt;
  rt["router_tuning"] = true;
  rt["steps"] = 5;
  rt["lr"] = 0.05;
  const TrainConfig config = parse_train_config(rt, "rt.json");
  EXPECT_EQ(config.to_json()["router_tuning"], true);
  train(config, quiet());
  const SafetensorsFile after =
      read_safetensors((dir / "rt" / "checkpoint" / "model.safetensors").string());
  const Model fresh(config.model, config.seed);  // the skip routers' initialisation
  int frozen = 0, tuned = 0;
  for (const auto& [name, t] : after.tensors) {
    if (name.starts_with("optim.")) continue;
    if (name.find(".attn_skip.") != std::string::npos) {
      const ParamTensor& pt = fresh.tensor(name);
      const std::vector<float> init(fresh.params().begin() + long(pt.offset),
                                    fresh.params().begin() + long(pt.offset + pt.size));
      EXPECT_NE(t.to_f32(name), init) << name << " did not learn";
      ++tuned;
      continue;
    }
    ASSERT_TRUE(trained.tensors.count(name)) << name;
    EXPECT_EQ(t.to_f32(name), trained.tensors.at(name).to_f32(name)) << name << " changed";
    ++frozen;
  }
  EXPECT_EQ(tuned, 2);
  EXPECT_GT(frozen, 10);
  const json run = json::parse(read_file_text((dir / "rt" / "run.json").string()));
  EXPECT_EQ(run["init_missing"], json({"layers.0.attn_skip.weight", "layers.1.attn_skip.weight"}));

  // Router-Tuning needs the skip routers; init still refuses any other missing tensor.
  json no_skip = rt;
  no_skip["model"].erase("attention_skip");
  try {
    parse_train_config(no_skip, "no_skip.json");
    ADD_FAILURE() << "router_tuning without attention_skip was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("no_skip.json: field 'router_tuning'"));
  }
  json shared = rt;
  shared["model"]["shared_d_ff"] = 8;
  shared["out"] = (dir / "shared").string();
  try {
    train(parse_train_config(shared, "shared.json"), quiet());
    ADD_FAILURE() << "init without the shared expert's tensors was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("shared.w1"));
  }
  fs::remove_all(dir);
}

TEST(Train, GatelessRoutersHoldNoGate) {
  const fs::path dir = temp_dir("gateless");
  json j = tiny_config(dir / "run", "hash");
  j["steps"] = 2;
  train(parse_train_config(j, "test"), quiet());
  const SafetensorsFile file =
      read_safetensors((dir / "run" / "checkpoint" / "model.safetensors").string());
  EXPECT_FALSE(file.tensors.count("layers.0.moe.gate.weight"));
  EXPECT_TRUE(file.tensors.count("layers.0.moe.experts.w1"));
  fs::remove_all(dir);
}

TEST(Train, CheckpointFilesAreCompleteAndNoTemporariesRemain) {
  const fs::path dir = temp_dir("atomic");
  train(parse_train_config(tiny_config(dir / "run"), "test"), quiet());
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
  EXPECT_TRUE(fs::exists(dir / "run" / "checkpoint" / "model.safetensors"));
  fs::remove_all(dir);
}

TEST(Train, CorruptCheckpointIsRejectedAndLeftIntact) {
  const fs::path dir = temp_dir("corrupt");
  const TrainConfig config = parse_train_config(tiny_config(dir / "run"), "test");
  TrainOptions first = quiet();
  first.stop_after = 3;
  train(config, first);
  const fs::path weights = dir / "run" / "checkpoint" / "model.safetensors";
  std::string bytes = read_file_text(weights.string());
  bytes.resize(bytes.size() / 2);  // truncated
  write_file_atomic(weights.string(), bytes);
  const std::string metrics_before = read_file_text((dir / "run" / "metrics.jsonl").string());
  TrainOptions rest = quiet();
  rest.resume = true;
  try {
    train(config, rest);
    ADD_FAILURE() << "resume from a truncated checkpoint did not fail";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("model.safetensors"));
  }
  EXPECT_EQ(read_file_text(weights.string()), bytes);
  EXPECT_EQ(read_file_text((dir / "run" / "metrics.jsonl").string()), metrics_before);
  fs::remove_all(dir);
}

TEST(Train, BadConfigsNameTheField) {
  const fs::path dir = temp_dir("bad");
  auto expect_error = [&](json j, const std::string& needle) {
    try {
      parse_train_config(j, "train.json");
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(needle)) << j.dump();
      EXPECT_THAT(e.what(), ::testing::HasSubstr("train.json"));
    }
  };
  json j = tiny_config(dir);
  j["stpes"] = 3;
  expect_error(j, "stpes");
  j = tiny_config(dir);
  j["steps"] = 0;
  expect_error(j, "steps");
  j = tiny_config(dir);
  j["lr"] = "fast";
  expect_error(j, "lr");
  j = tiny_config(dir);
  j["model"]["n_heads"] = 3;
  expect_error(j, "n_heads");
  j = tiny_config(dir);
  j["model"]["router"] = {{"router", "mixtral"}, {"k", 9}};
  expect_error(j, "k");
  j = tiny_config(dir);
  j["data"] = {{"synthetic", true}, {"corpus", "x"}};
  expect_error(j, "exactly one");
  for (const json& bad :
       {json::array(), json::array({7}), json::array({0, 0}), json("1"), json::array({1.5})}) {
    j = tiny_config(dir);
    j["model"]["moe_layers"] = bad;
    expect_error(j, "moe_layers");
  }
  j = tiny_config(dir);
  j["model"]["moe_layers"] = {1};
  j["model"]["moe_every"] = 2;
  expect_error(j, "not both");
  j = tiny_config(dir);
  j["model"]["shared_expert_gate"] = true;  // and no shared expert
  expect_error(j, "shared_expert_gate");
  for (const json& bad : {json(0), json(9), json("two"), json(1.5)}) {
    j = tiny_config(dir);
    j["model"]["moe_sublayers"] = bad;
    expect_error(j, "moe_sublayers");
  }
  j = tiny_config(dir);
  j["model"]["moe_sublayers"] = 2;
  j["model"]["moe_every"] = 3;  // 2 layers: no MoE layer to split
  expect_error(j, "moe_sublayers");
  j = tiny_config(dir);
  j["data"] = {{"corpus", (dir / "missing").string()}};
  const TrainConfig c = parse_train_config(j, "train.json");
  EXPECT_THROW(train(c, quiet()), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace switchyard

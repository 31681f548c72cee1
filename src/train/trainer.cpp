// The training loop: data, model, AdamW, evaluation, metrics, checkpoints and resume.
#include <fmt/format.h>
#include <switchyard/data.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/safetensors.h>
#include <switchyard/train.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "train/data_parallel.h"
#include "train/training_trace.h"
#include "train/watchdog.h"

namespace switchyard {

using nlohmann::json;
namespace fs = std::filesystem;

json TrainConfig::to_json() const {
  json data_json = json::object();
  if (!data.corpus.empty()) data_json["corpus"] = data.corpus;
  if (!data.text_files.empty()) data_json["text"] = data.text_files;
  if (!data.bin_train.empty())
    data_json["bin"] = {{"train", data.bin_train}, {"val", data.bin_val}};
  if (data.synthetic) data_json["synthetic"] = true;
  data_json["val_fraction"] = data.val_fraction;
  if (!data.domains.empty()) data_json["domains"] = data.domains;
  json j = {{"model", model.to_json()},
            {"data", data_json},
            {"batch", batch},
            {"grad_accum", grad_accum},
            {"steps", optim.steps},
            {"lr", optim.lr},
            {"warmup_steps", optim.warmup_steps},
            {"min_lr_ratio", optim.min_lr_ratio},
            {"weight_decay", optim.weight_decay},
            {"grad_clip", optim.grad_clip},
            {"eval_every", eval_every},
            {"eval_batches", eval_batches},
            {"checkpoint_every", checkpoint_every},
            {"log_every", log_every},
            {"seed", seed},
            {"out", out},
            {"name", name},
            {"group", group}};
  if (!init.empty()) j["init"] = init;
  if (router_tuning) j["router_tuning"] = true;
  return j;
}

TrainConfig parse_train_config(const json& j, const std::string& source) {
  ParamReader r(j, source);
  TrainConfig c;
  c.model = parse_model_config(r.get_object("model", json::object()), source + " [model]");
  const json data = r.get_object("data", {{"synthetic", true}});
  {
    ParamReader d(data, source + " [data]");
    c.data.corpus = d.get_string("corpus", "");
    c.data.text_files = d.get_string_list("text");
    if (d.has("bin")) {
      ParamReader b(d.get_object("bin", json::object()), source + " [data.bin]");
      c.data.bin_train = b.get_string("train", "");
      c.data.bin_val = b.get_string("val", "");
      b.finish();
      if (c.data.bin_train.empty() || c.data.bin_val.empty())
        fail("{} [data.bin]: needs 'train' and 'val' shard paths", source);
    }
    c.data.synthetic = d.get_bool("synthetic", false);
    c.data.val_fraction = d.get_double("val_fraction", 0.05, 1e-6, 0.5);
    c.data.domains = d.get_string_list("domains");
    d.finish();
    const int sources = int(!c.data.corpus.empty()) + int(!c.data.text_files.empty()) +
                        int(!c.data.bin_train.empty()) + int(c.data.synthetic);
    if (sources != 1)
      fail("{} [data]: give exactly one of 'corpus', 'text', 'bin', 'synthetic' (got {})", source,
           sources);
  }
  c.batch = r.get_int("batch", c.batch, 1, 1 << 16);
  c.grad_accum = r.get_int("grad_accum", c.grad_accum, 1, 1 << 16);
  c.optim.steps = r.get_int("steps", c.optim.steps, 1, int64_t(1) << 40);
  c.optim.lr = r.get_double("lr", c.optim.lr, 0.0, 10.0);
  c.optim.warmup_steps =
      r.get_int("warmup_steps", std::min<int64_t>(20, c.optim.steps / 10), 0, int64_t(1) << 40);
  c.optim.min_lr_ratio = r.get_double("min_lr_ratio", c.optim.min_lr_ratio, 0.0, 1.0);
  c.optim.weight_decay = r.get_double("weight_decay", c.optim.weight_decay, 0.0, 10.0);
  c.optim.grad_clip = r.get_double("grad_clip", c.optim.grad_clip, 0.0, 1e6);
  c.eval_every = r.get_int("eval_every", c.eval_every, 1, int64_t(1) << 40);
  c.eval_batches = r.get_int("eval_batches", c.eval_batches, 1, 1 << 16);
  c.checkpoint_every = r.get_int("checkpoint_every", c.checkpoint_every, 1, int64_t(1) << 40);
  c.log_every = r.get_int("log_every", c.log_every, 1, int64_t(1) << 40);
  c.seed = uint64_t(r.get_int("seed", 1, 0, INT64_MAX));
  c.out = r.get_string("out", c.out);
  c.name = r.get_string("name", "");
  c.group = r.get_string("group", "");
  c.init = r.get_string("init", "");
  c.router_tuning = r.get_bool("router_tuning", false);
  r.finish();
  if (c.router_tuning && !c.model.attention_skip.enabled)
    fail(
        "{}: field 'router_tuning' = true trains only the attention-skip routers, but the model "
        "config has no 'attention_skip' (docs/routers/mindskip.md)",
        source);
  c.source = source;
  if (c.name.empty()) c.name = c.model.router.value("router", "mixtral");
  if (c.group.empty()) c.group = c.name;
  return c;
}

TrainConfig load_train_config(const std::string& path) {
  return parse_train_config(parse_json_strict(read_file_text(path), path), path);
}

namespace {

// Two synthetic domains with learnable structure: counting arithmetic and a word Markov chain.
void synthetic_data(TokenData& train, TokenData& val) {
  std::mt19937_64 rng(12345);
  const std::vector<std::string> words = {"the", "cat", "sat", "on",   "a",   "mat",  "dog",  "ran",
                                          "to",  "red", "big", "tree", "and", "then", "slept"};
  auto make = [&](TokenData& out, int docs) {
    out.domain_names = {"arithmetic", "words"};
    for (int d = 0; d < docs; ++d) {
      const int domain = d % 2;
      std::string text;
      while (text.size() < 400) {
        if (domain == 0) {
          const int a = int(rng() % 50), b = int(rng() % 50);
          text += fmt::format("{}+{}={}; ", a, b, a + b);
        } else {
          size_t w = rng() % words.size();
          for (int i = 0; i < 8; ++i) {
            text += words[w] + " ";
            w = (w * 7 + 3 + rng() % 2) % words.size();
          }
          text += ". ";
        }
      }
      out.documents.push_back({out.size(), int64_t(text.size()), domain});
      for (unsigned char ch : text) {
        out.tokens.push_back(ch);
        out.domains.push_back(uint8_t(domain));
      }
    }
  };
  make(train, 400);
  make(val, 20);
}

struct Dataset {
  TokenData train, val;
};

Dataset load_data(const DataConfig& d, const std::string& source) {
  Dataset ds;
  if (!d.corpus.empty()) {
    ds.train = load_byte_corpus(d.corpus, "train");
    ds.val = load_byte_corpus(d.corpus, "val");
  } else if (!d.text_files.empty()) {
    ds.train = load_text_files(d.text_files);
    ds.val = split_validation(ds.train, d.val_fraction);
  } else if (!d.bin_train.empty()) {
    ds.train = load_bin_shard(d.bin_train);
    ds.val = load_bin_shard(d.bin_val, ds.train.vocab_size);
  } else {
    synthetic_data(ds.train, ds.val);
  }
  if (!d.domains.empty()) {
    ds.train = select_domains(ds.train, d.domains, source + " [data] (training split)");
    ds.val = select_domains(ds.val, d.domains, source + " [data] (validation split)");
  }
  return ds;
}

// Occurrences of every token id in a split (MaskMoE's masks come from the training split's).
std::vector<int64_t> token_counts(const TokenData& data, int64_t vocab) {
  std::vector<int64_t> counts(size_t(vocab), 0);
  for (const uint16_t id : data.tokens) {
    if (id >= vocab)
      fail("train: token id {} of the training data is outside the vocabulary [0, {})", id, vocab);
    ++counts[id];
  }
  return counts;
}

// Splits a (B, T+1) window batch into inputs and targets (B, T).
void split_batch(const Batch& b, std::vector<int32_t>& in, std::vector<int32_t>& target) {
  const int64_t T = b.seq_len;
  in.resize(size_t(b.batch * T));
  target.resize(size_t(b.batch * T));
  for (int64_t i = 0; i < b.batch; ++i)
    for (int64_t t = 0; t < T; ++t) {
      in[size_t(i * T + t)] = b.tokens[size_t(i * (T + 1) + t)];
      target[size_t(i * T + t)] = b.tokens[size_t(i * (T + 1) + t + 1)];
    }
}

// Rows [first, first + rows) of a window batch: a rank's shard under data parallelism.
Batch shard_of(const Batch& b, int64_t first, int64_t rows) {
  if (first == 0 && rows == b.batch) return b;
  const size_t W = size_t(b.seq_len + 1);
  Batch s;
  s.batch = rows;
  s.seq_len = b.seq_len;
  s.offsets.assign(b.offsets.begin() + first, b.offsets.begin() + first + rows);
  s.tokens.assign(b.tokens.begin() + long(size_t(first) * W),
                  b.tokens.begin() + long(size_t(first + rows) * W));
  s.domains.assign(b.domains.begin() + long(size_t(first) * W),
                   b.domains.begin() + long(size_t(first + rows) * W));
  return s;
}

// Order-independent digest of a routing plan's kept (token, expert) pairs: equal digests mean
// the same routing (the parallel tests compare runs with it).
uint64_t routing_digest(const RoutingPlan& plan) {
  uint64_t sum = 0;
  for (size_t a = 0; a < plan.size(); ++a) {
    if (!plan.kept[a]) continue;
    uint64_t h = (uint64_t(uint32_t(plan.token[a])) << 32) ^ uint64_t(uint32_t(plan.expert[a]));
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    sum += h;
  }
  return sum;
}

json layer_step_json(const RoutingStats& s, int64_t index) {
  const double assignments = double(std::max<int64_t>(1, s.assignments));
  return {{"layer", index},
          {"load", s.tokens_per_expert},
          {"max_vio", s.max_vio},
          {"cv", s.cv},
          // Capacity drops only; what the router declined itself is declined_frac.
          {"dropped_frac", double(s.dropped - s.declined) / assignments},
          {"declined_frac", double(s.declined) / assignments},
          {"entropy", s.entropy},
          {"experts_per_token", s.experts_per_token},
          {"hidden_per_token", s.hidden_per_token},
          {"losses", s.losses}};
}

// Top-1 expert of every token in a plan (highest weight; -1 when the token routed nowhere).
std::vector<int32_t> top1_experts(const MoECache& cache) {
  const int64_t T = cache.routing_tokens();
  std::vector<int32_t> top(size_t(T), -1);
  std::vector<float> best(size_t(T), -1.0f);
  const RoutingPlan& plan = cache.routing_plan();
  if (!cache.sequences.empty() && plan.size() > 0 && cache.groups.size() == 1 &&
      cache.groups[0].second == int64_t(cache.sequences.size()) &&
      int64_t(cache.sequences.size()) != T) {
    return top;  // SMEAR routes sequences, not tokens
  }
  for (size_t a = 0; a < plan.size(); ++a) {
    const int32_t t = plan.token[a];
    if (plan.weight[a] > best[size_t(t)]) {
      best[size_t(t)] = plan.weight[a];
      top[size_t(t)] = plan.expert[a];
    }
  }
  return top;
}

// Mutual information (bits) between the domain of a token and each expert it was routed to.
double mutual_information(const std::vector<std::vector<double>>& joint) {
  double total = 0.0;
  std::vector<double> pd(joint.size(), 0.0), pe(joint.empty() ? 0 : joint[0].size(), 0.0);
  for (size_t d = 0; d < joint.size(); ++d)
    for (size_t e = 0; e < joint[d].size(); ++e) {
      total += joint[d][e];
      pd[d] += joint[d][e];
      pe[e] += joint[d][e];
    }
  if (total <= 0) return 0.0;
  double mi = 0.0;
  for (size_t d = 0; d < joint.size(); ++d)
    for (size_t e = 0; e < joint[d].size(); ++e)
      if (joint[d][e] > 0)
        mi += joint[d][e] / total * std::log2(joint[d][e] * total / (pd[d] * pe[e]));
  return mi;
}

struct Evaluation {
  double loss = 0.0;
  std::vector<std::vector<int64_t>> load;               // (layers, E)
  std::vector<std::vector<std::vector<double>>> joint;  // (layers, domains, E)
  std::vector<std::vector<int32_t>> probe_top1;         // (layers, probe tokens)
  // Per skipping layer (attention_skip): the skip rate and mean score over the batches.
  std::vector<double> skip_rate, skip_score;
};

Evaluation evaluate(Model& model, const BatchSampler& sampler, int64_t batches, int num_domains,
                    training::DataParallel* dp) {
  Evaluation ev;
  const int64_t L = model.num_moe_layers(), E = model.config().experts;
  ev.load.assign(size_t(L), std::vector<int64_t>(size_t(E), 0));
  ev.joint.assign(size_t(L), std::vector<std::vector<double>>(size_t(std::max(1, num_domains)),
                                                              std::vector<double>(size_t(E), 0.0)));
  std::vector<int32_t> in, target;
  for (int64_t i = 0; i < batches; ++i) {
    const Batch b = sampler.eval_batch(i, batches);
    const Batch mine = dp ? shard_of(b, dp->first_row(), dp->rows()) : b;
    split_batch(mine, in, target);
    const double loss = model.forward(in.data(), target.data(), mine.batch, mine.seq_len, false);
    ev.loss += (dp ? dp->sum(loss / double(dp->ranks())) : loss) / double(batches);
    const std::vector<AttentionSkipStats> skips = model.attention_skip_stats();
    ev.skip_rate.resize(skips.size(), 0.0);
    ev.skip_score.resize(skips.size(), 0.0);
    for (size_t j = 0; j < skips.size(); ++j) {
      const double rate =
          dp ? dp->sum(skips[j].skip_rate / double(dp->ranks())) : skips[j].skip_rate;
      const double score =
          dp ? dp->sum(skips[j].mean_score / double(dp->ranks())) : skips[j].mean_score;
      ev.skip_rate[j] += rate / double(batches);
      ev.skip_score[j] += score / double(batches);
    }
    const auto caches = model.layer_caches();
    for (int64_t l = 0; l < L; ++l) {
      const MoECache& c = *caches[size_t(l)];
      for (int64_t e = 0; e < E; ++e)
        ev.load[size_t(l)][size_t(e)] += c.stats.tokens_per_expert[size_t(e)];
      if (i == 0) ev.probe_top1.push_back(top1_experts(c));
      // The routing of the whole batch (every rank's tokens under data parallelism).
      const RoutingPlan& plan = c.routing_plan();
      if (num_domains > 0 && c.routing_tokens() == b.batch * b.seq_len)
        for (size_t a = 0; a < plan.size(); ++a) {
          if (!plan.kept[a]) continue;
          const int64_t t = plan.token[a], row = t / b.seq_len, col = t % b.seq_len;
          const int domain = b.domains[size_t(row * (b.seq_len + 1) + col)];
          ev.joint[size_t(l)][size_t(domain)][size_t(plan.expert[a])] += 1.0;
        }
    }
  }
  return ev;
}

// One rank's expert-parallel traffic over a step's micro-batches (all MoE layers, forward and
// backward), gathered to every rank for the metrics row.
struct RankCounters {
  double dispatch_sent = 0, dispatch_received = 0, combine_sent = 0, combine_received = 0;
  double backward_sent = 0, backward_received = 0, exchange_seconds = 0, expert_rows = 0;
  double inter_node_sent = 0, inter_node_received = 0;
  double dispatch_seconds = 0, combine_seconds = 0, backward_seconds = 0;  // by phase

  void add(const Model& model) {
    for (const MoECache* c : model.layer_caches()) {
      const MoECache::ExpertParallel& ep = c->ep;
      dispatch_sent += double(ep.dispatch.sent);
      dispatch_received += double(ep.dispatch.received);
      combine_sent += double(ep.combine.sent);
      combine_received += double(ep.combine.received);
      backward_sent += double(ep.backward_dispatch.sent + ep.backward_combine.sent);
      backward_received += double(ep.backward_dispatch.received + ep.backward_combine.received);
      exchange_seconds += ep.exchange_seconds();
      dispatch_seconds += ep.dispatch.seconds;
      combine_seconds += ep.combine.seconds;
      backward_seconds += ep.backward_dispatch.seconds + ep.backward_combine.seconds;
      inter_node_sent += double(ep.inter_node.sent);
      inter_node_received += double(ep.inter_node.received);
      expert_rows += double(c->expert_offsets.empty() ? 0 : c->expert_offsets.back());
    }
  }

  json gather(training::DataParallel& dp, double step_seconds) const {
    const std::vector<double> mine = {
        dispatch_sent,       dispatch_received, combine_sent,    combine_received, backward_sent,
        backward_received,   exchange_seconds,  expert_rows,     step_seconds,     inter_node_sent,
        inter_node_received, dispatch_seconds,  combine_seconds, backward_seconds};
    const int64_t K = int64_t(mine.size()), P = dp.ranks();
    std::vector<double> all(size_t(K * P));
    std::vector<int64_t> counts(size_t(P), K), displs(static_cast<size_t>(P));
    for (int64_t q = 0; q < P; ++q) displs[size_t(q)] = q * K;
    dp.world().allgatherv(mine.data(), K, all.data(), counts.data(), displs.data(), sizeof(double));
    json ranks = json::array();
    double max_rows = 0, sum_rows = 0, max_step = 0, sum_step = 0, sum_exchange = 0;
    std::vector<double> sum_phase(3, 0.0);
    for (int64_t q = 0; q < P; ++q) {
      const double* v = all.data() + q * K;
      ranks.push_back(
          {{"rank", q},
           {"dispatch_bytes_sent", v[0]},
           {"dispatch_bytes_received", v[1]},
           {"combine_bytes_sent", v[2]},
           {"combine_bytes_received", v[3]},
           {"backward_bytes_sent", v[4]},
           {"backward_bytes_received", v[5]},
           {"all_to_all_ms", v[6] * 1e3},
           {"expert_rows", v[7]},
           {"step_ms", v[8] * 1e3},
           {"inter_node_bytes_sent", v[9]},
           {"inter_node_bytes_received", v[10]},
           {"all_to_all_ms_by_phase",
            {{"dispatch", v[11] * 1e3}, {"combine", v[12] * 1e3}, {"backward", v[13] * 1e3}}}});
      max_rows = std::max(max_rows, v[7]);
      sum_rows += v[7];
      max_step = std::max(max_step, v[8]);
      sum_step += v[8];
      sum_exchange += v[6];
      for (int i = 0; i < 3; ++i) sum_phase[size_t(i)] += v[11 + i];
    }
    auto ratio = [](double max, double sum, double n) { return sum > 0 ? max * n / sum : 1.0; };
    auto share = [&](double seconds) { return sum_step > 0 ? seconds / sum_step : 0.0; };
    return {{"ranks", ranks},
            {"expert_rows_imbalance", ratio(max_rows, sum_rows, double(P))},
            {"step_time_imbalance", ratio(max_step, sum_step, double(P))},
            {"all_to_all_share", share(sum_exchange)},
            {"all_to_all_share_by_phase",
             {{"dispatch", share(sum_phase[0])},
              {"combine", share(sum_phase[1])},
              {"backward", share(sum_phase[2])}}}};
  }
};

std::string format_duration(double seconds) {
  const int64_t s = int64_t(std::max(0.0, seconds));
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{}:{:02}", s / 60, s % 60);
}

// Every rank calls it (a sharded tensor is gathered from the ranks that hold its experts); the
// writer writes the one-process checkpoint.
void write_checkpoint(const std::string& dir, const Model& model, AdamW& optim,
                      const TrainConfig& config, int64_t step, const json& extra,
                      training::DataParallel* dp, bool writer) {
  SafetensorsFile file;
  for (const auto& t : model.tensors()) {
    auto whole = [&](const std::vector<float>& v) {
      std::vector<float> mine(v.begin() + long(t.offset), v.begin() + long(t.offset + t.size));
      if (t.expert_rows > 0) {
        if (!dp) fail("train: a sharded expert tensor '{}' without ranks to gather from", t.name);
        mine = dp->gather_expert_tensor(t, mine);
      }
      return TensorData::from_f32(t.full_shape(), std::move(mine));
    };
    file.tensors[t.name] = whole(model.params());
    if (t.trainable) {
      file.tensors["optim.m." + t.name] = whole(optim.m());
      file.tensors["optim.v." + t.name] = whole(optim.v());
    }
  }
  if (!writer) return;
  json state = {{"step", step}, {"model_state", model.state()}, {"extra", extra}};
  file.metadata["state"] = state.dump();
  fs::create_directories(dir);
  // The weights first, then the JSON that points at a complete step: a crash in between leaves
  // the previous checkpoint's JSON, which the resume check rejects by its step mismatch.
  write_safetensors(dir + "/model.safetensors", file);
  write_file_atomic(dir + "/checkpoint.json",
                    json{{"step", step}, {"config", config.to_json()}}.dump(2) + "\n");
}

// A fresh run's starting point from an earlier run's checkpoint folder (TrainConfig::init): its
// parameters only; the optimiser moments, the step and the routers' state are not carried over.
// The attention-skip routers may be missing (a base model for Router-Tuning): returned, they keep
// their initialisation.
std::vector<std::string> load_initial_parameters(Model& model, const std::string& dir,
                                                 const std::string& source) {
  const std::string path = dir + "/model.safetensors";
  if (!fs::is_regular_file(path))
    fail("{}: field 'init' = '{}': no checkpoint there (missing '{}')", source, dir, path);
  const SafetensorsFile file = read_safetensors(path);
  SafetensorsFile params;
  for (const auto& [name, t] : file.tensors)
    if (!name.starts_with("optim.")) params.tensors[name] = t;
  return model.load_safetensors(params, fmt::format("{} (field 'init' of {})", path, source),
                                /*allow_missing_attention_skip=*/true);
}

// Keeps the metrics lines of steps before `step` (a resumed run rewrites what follows).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    json row;
    try {
      row = json::parse(line);
    } catch (const json::exception&) {
      fail("{}:{}: not JSON; cannot resume", path, number);
    }
    if (row.value("step", int64_t(-1)) < step) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace

TrainResult train(const TrainConfig& config, const TrainOptions& options) {
  const Dataset data = load_data(config.data, config.source);
  const int64_t T = config.model.seq_len, B = config.batch;
  if (data.train.size() <= T + 1 || data.val.size() <= T + 1)
    fail("train: the data is too small for seq_len = {} (train {} tokens, validation {})", T,
         data.train.size(), data.val.size());
  if (data.train.vocab_size > config.model.vocab_size)
    fail("train: the data has vocabulary {} but model.vocab_size = {}", data.train.vocab_size,
         config.model.vocab_size);
  const bool parallel = options.world && options.world->size() > 1;
  if (!parallel && options.expert_parallel > 1)
    fail("train: --expert-parallel {} needs a job of several ranks (mpirun -np N switchyard train)",
         options.expert_parallel);
  // Under expert parallelism a rank holds its experts only (parameters, gradients, moments).
  Model model(config.model, config.seed,
              parallel ? training::DataParallel::shard_of(*options.world, options.expert_parallel,
                                                          config.model.experts)
                       : ExpertShard{});
  // Router-Tuning: only the attention-skip routers learn (the flags survive state changes).
  model.set_router_tuning(config.router_tuning);
  std::vector<std::string> init_missing;  // init's tensors left at their initialisation
  AdamW optim(config.optim, model.params().size());
  BatchSampler train_sampler(data.train, B, T, config.seed);
  const BatchSampler val_sampler(data.val, B, T, config.seed);
  const int num_domains = int(data.val.domain_names.size());
  // Data and expert parallelism: this rank's shard of every batch, rank 0 writes the run folder.
  std::unique_ptr<training::DataParallel> dp;
  std::unique_ptr<training::Watchdog> watchdog;
  if (parallel) {
    dp = std::make_unique<training::DataParallel>(*options.world, options.expert_parallel,
                                                  options.ranks_per_node, model, B);
    model.set_parallel(dp->model_parallel());
    model.set_gradient_ready([&](size_t b, size_t e) { dp->on_ready(model.grads(), b, e); });
    dist::Communicator* world = options.world;
    watchdog = std::make_unique<training::Watchdog>(dp->rank(), options.timeout_seconds,
                                                    [world] { world->abort(2); });
  }
  const bool writer = !dp || dp->rank() == 0;
  const int64_t first_row = dp ? dp->first_row() : 0, my_rows = dp ? dp->rows() : B;
  auto global_mean = [&](double local) {
    return dp ? dp->sum(local / double(dp->ranks())) : local;
  };

  if (writer) fs::create_directories(config.out);
  const std::string metrics_path = config.out + "/metrics.jsonl";
  const std::string ckpt_dir = config.out + "/checkpoint";
  int64_t start = 0;
  std::vector<std::vector<int32_t>> previous_probe;
  double wall_before = 0.0;
  if (options.resume) {
    try {
      const json meta = parse_json_strict(read_file_text(ckpt_dir + "/checkpoint.json"),
                                          ckpt_dir + "/checkpoint.json");
      const SafetensorsFile file = read_safetensors(ckpt_dir + "/model.safetensors");
      const auto it = file.metadata.find("state");
      if (it == file.metadata.end())
        fail("{}/model.safetensors: no 'state' metadata; not a switchyard checkpoint", ckpt_dir);
      const json state = json::parse(it->second);
      start = state.at("step").get<int64_t>();
      if (meta.at("step").get<int64_t>() != start)
        fail("{}: checkpoint.json is at step {} but model.safetensors at step {}", ckpt_dir,
             meta.at("step").get<int64_t>(), start);
      if (meta.at("config").at("model") != config.model.to_json())
        fail("{}: the checkpoint's model config differs from this run's", ckpt_dir);
      SafetensorsFile params;
      for (const auto& [name, t] : file.tensors) {
        if (name.starts_with("optim.")) continue;
        params.tensors[name] = t;
      }
      model.load_safetensors(params, ckpt_dir + "/model.safetensors");
      for (const auto& t : model.tensors()) {
        if (!t.trainable) continue;
        for (const char* which : {"optim.m.", "optim.v."}) {
          auto f = file.tensors.find(which + t.name);
          if (f == file.tensors.end())
            fail("{}/model.safetensors: missing '{}{}'", ckpt_dir, which, t.name);
          if (f->second.shape != t.full_shape())
            fail("{}: '{}{}' has the wrong shape", ckpt_dir, which, t.name);
          const std::vector<float> v = shard_of_tensor(t, f->second.to_f32(which + t.name));
          std::vector<float>& dst = std::string(which) == "optim.m." ? optim.m() : optim.v();
          std::copy(v.begin(), v.end(), dst.begin() + long(t.offset));
        }
      }
      model.set_state(state.at("model_state"), ckpt_dir);
      const json& extra = state.at("extra");
      previous_probe = extra.at("probe").get<std::vector<std::vector<int32_t>>>();
      wall_before = extra.at("wall_seconds").get<double>();
      if (writer) truncate_metrics(metrics_path, start);
    } catch (const json::exception& e) {
      fail("{}: malformed checkpoint: {}", ckpt_dir, e.what());
    }
  } else {
    if (!config.init.empty()) {
      init_missing = load_initial_parameters(model, config.init, config.source);
      if (writer && !options.quiet && !init_missing.empty())
        fmt::print(stderr,
                   "{}: init from '{}': {} attention-skip router tensor(s) not in that checkpoint "
                   "keep their initialisation: {}\n",
                   config.name, config.init, init_missing.size(), fmt::join(init_missing, ", "));
    }
    if (writer) write_file_atomic(metrics_path, std::string());
  }
  // Routers that route by the training data's token frequencies get them once, before the first
  // step; a resumed run has them from the checkpoint's router state.
  if (!options.resume && model.needs_token_frequencies())
    model.set_token_frequencies(token_counts(data.train, config.model.vocab_size));
  // Routers with a step-dependent rule see the run's length; a resumed run's steps taken are in
  // their state.
  model.set_schedule(TrainingSchedule{config.optim.steps});
  train_sampler.skip_to(start);

  json run = {{"name", config.name},
              {"group", config.group},
              {"router", config.model.router},
              {"model", config.model.to_json()},
              {"train", config.to_json()},
              {"params", model.parameter_count()},
              {"active_params", model.active_parameter_count()},
              {"tokens_per_step", B * T * config.grad_accum},
              {"domains", data.val.domain_names}};
  if (!init_missing.empty()) run["init_missing"] = init_missing;
  if (dp)
    run["parallel"] = {{"ranks", dp->ranks()},
                       {"expert_parallel", dp->expert_parallel()},
                       {"ranks_per_node", options.ranks_per_node},
                       {"parameter_floats_per_rank", model.params().size()}};
  if (writer) write_file_atomic(config.out + "/run.json", run.dump(2) + "\n");

  std::ofstream metrics;
  if (writer) metrics.open(metrics_path, std::ios::app);
  const bool tty = writer && isatty(STDERR_FILENO) && !options.quiet;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  TrainResult result;
  std::vector<int32_t> in, target;
  const int64_t steps = config.optim.steps;
  const int64_t last =
      options.stop_after >= 0 ? std::min(steps, start + options.stop_after) : steps;
  double last_val = std::nan("");
  for (int64_t step = start; step < last; ++step) {
    const auto step_start = std::chrono::steady_clock::now();
    if (watchdog) watchdog->beat(step);
    model.zero_grads();
    double train_loss = 0.0, aux = 0.0;
    std::vector<RoutingStats> stats;
    std::vector<AttentionSkipStats> skips;  // the first micro-batch's
    std::vector<uint64_t> digests;
    RankCounters counters;
    for (int64_t micro = 0; micro < config.grad_accum; ++micro) {
      // Micro-batches come from consecutive sampler steps: step s uses batches s·A .. s·A + A − 1.
      const Batch whole = train_sampler.batch_at(step * config.grad_accum + micro);
      const Batch b = shard_of(whole, first_row, my_rows);
      split_batch(b, in, target);
      const double loss = model.forward(in.data(), target.data(), my_rows, T, true);
      train_loss += global_mean(loss) / double(config.grad_accum);
      aux += model.aux_loss() / double(config.grad_accum);
      if (dp && micro + 1 == config.grad_accum) dp->arm();  // all-reduce as backward finishes
      model.backward(1.0f / float(config.grad_accum));
      counters.add(model);
      if (micro == 0) {
        for (const RoutingStats* st : model.layer_stats()) stats.push_back(*st);
        skips = model.attention_skip_stats();
        for (const MoECache* c : model.layer_caches())
          digests.push_back(routing_digest(c->routing_plan()));
        if (writer && !options.trace_path.empty() && step == options.trace_step)
          infer::write_trace(options.trace_path, training::step_trace(model, whole, config.name));
      }
    }
    if (dp) dp->finish(model.grads());
    const double grad_norm =
        optim.step(model, step, dp ? dp->grad_norm(model) : AdamW::grad_norm(model));
    model.update_router_state();
    const double step_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    json row = {{"step", step},
                {"tokens", (step + 1) * B * T * config.grad_accum},
                {"lr", optim.learning_rate(step)},
                {"train_loss", train_loss},
                {"aux_loss", aux},
                {"grad_norm", grad_norm},
                {"tokens_per_s", double(B * T * config.grad_accum) / step_seconds}};
    json layers = json::array();
    for (size_t l = 0; l < stats.size(); ++l) {
      layers.push_back(layer_step_json(stats[l], int64_t(l)));
      layers.back()["routing_digest"] = fmt::format("{:016x}", digests[l]);
    }
    if (!skips.empty()) {  // MindSkip: this rank's first micro-batch
      json rows = json::array();
      for (const AttentionSkipStats& sk : skips)
        rows.push_back({{"layer", sk.layer},
                        {"skip_rate", sk.skip_rate},
                        {"mean_score", sk.mean_score},
                        {"losses", {{"attention_skip", sk.loss}}}});
      row["attention_skip"] = rows;
    }
    if (dp) row["parallel"] = counters.gather(*dp, step_seconds);
    if (!std::isfinite(train_loss))
      fail("train: the training loss became {} at step {} (try a lower lr)", train_loss, step);

    const bool eval_now = (step + 1) % config.eval_every == 0 || step + 1 == steps;
    if (eval_now) {
      const Evaluation ev =
          evaluate(model, val_sampler, config.eval_batches, num_domains, dp.get());
      row["val_loss"] = last_val = ev.loss;
      for (size_t l = 0; l < stats.size(); ++l) {
        layers[l]["val_load"] = ev.load[l];
        if (num_domains > 0) layers[l]["domain_mi"] = mutual_information(ev.joint[l]);
        if (l < previous_probe.size() && previous_probe[l].size() == ev.probe_top1[l].size()) {
          int64_t changed = 0;
          for (size_t t = 0; t < ev.probe_top1[l].size(); ++t)
            changed += previous_probe[l][t] != ev.probe_top1[l][t];
          layers[l]["fluctuation"] = double(changed) / double(ev.probe_top1[l].size());
        }
      }
      previous_probe = ev.probe_top1;
      if (!ev.skip_rate.empty()) {
        json rows = json::array();
        for (size_t j = 0; j < ev.skip_rate.size(); ++j)
          rows.push_back({{"layer", skips.size() > j ? skips[j].layer : int64_t(j)},
                          {"skip_rate", ev.skip_rate[j]},
                          {"mean_score", ev.skip_score[j]}});
        row["val_attention_skip"] = rows;
      }
    }
    row["layers"] = layers;
    if (writer) metrics << row.dump() << "\n" << std::flush;
    result.steps = step + 1;
    result.final_train_loss = train_loss;
    result.final_val_loss = last_val;

    const double done = double(step + 1 - start), total = double(last - start);
    const double eta = elapsed() / done * (total - done);
    const double tps = double((step + 1 - start) * B * T * config.grad_accum) / elapsed();
    if (tty) {
      const int width = 30, filled = int(width * double(step + 1) / double(steps));
      fmt::print(stderr, "\r[{}{}] step {}/{} loss {:.3f} val {:.3f} {:.1f}k tok/s ETA {}  ",
                 std::string(size_t(filled), '='), std::string(size_t(width - filled), ' '),
                 step + 1, steps, train_loss, last_val, tps / 1000.0, format_duration(eta));
    } else if (writer && !options.quiet && ((step + 1) % config.log_every == 0 || eval_now)) {
      fmt::print(stderr, "{} step {}/{} loss {:.4f}{} {:.0f} tok/s ETA {}\n", config.name, step + 1,
                 steps, train_loss, eval_now ? fmt::format(" val {:.4f}", last_val) : "", tps,
                 format_duration(eta));
    }
    if ((step + 1) % config.checkpoint_every == 0 || step + 1 == last) {
      // Every rank's experts (parameters and moments) come to rank 0, which writes them.
      write_checkpoint(ckpt_dir, model, optim, config, step + 1,
                       {{"probe", previous_probe}, {"wall_seconds", wall_before + elapsed()}},
                       dp.get(), writer);
    }
  }
  if (tty) fmt::print(stderr, "\n");
  result.wall_seconds = wall_before + elapsed();
  result.tokens_per_s =
      double((last - start) * B * T * config.grad_accum) / std::max(1e-9, elapsed());
  run["wall_seconds"] = result.wall_seconds;
  run["tokens_per_s"] = result.tokens_per_s;
  if (writer) write_file_atomic(config.out + "/run.json", run.dump(2) + "\n");
  return result;
}

std::string sample(const std::string& checkpoint_dir, const std::string& prompt, int64_t count,
                   double temperature, uint64_t seed) {
  const json meta = parse_json_strict(read_file_text(checkpoint_dir + "/checkpoint.json"),
                                      checkpoint_dir + "/checkpoint.json");
  const TrainConfig config =
      parse_train_config(meta.at("config"), checkpoint_dir + "/checkpoint.json");
  Model model(config.model, config.seed);
  const SafetensorsFile file = read_safetensors(checkpoint_dir + "/model.safetensors");
  SafetensorsFile params;
  for (const auto& [name, t] : file.tensors)
    if (!name.starts_with("optim.")) params.tensors[name] = t;
  model.load_safetensors(params, checkpoint_dir + "/model.safetensors");
  // The routers' state (MaskMoE's token counts) as training left it.
  if (const auto it = file.metadata.find("state"); it != file.metadata.end())
    model.set_state(json::parse(it->second).at("model_state"), checkpoint_dir);
  std::vector<int32_t> context;
  for (unsigned char ch : prompt) context.push_back(ch);
  if (context.empty()) context.push_back('\n');
  std::mt19937_64 rng(seed);
  std::string out;
  const int64_t V = config.model.vocab_size;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t T = std::min<int64_t>(int64_t(context.size()), config.model.seq_len);
    model.forward(context.data() + context.size() - size_t(T), nullptr, 1, T, false);
    const float* z = model.logits().data() + (T - 1) * V;
    std::vector<double> p(static_cast<size_t>(V));
    const double max = *std::max_element(z, z + V);
    for (int64_t j = 0; j < V; ++j)
      p[size_t(j)] = std::exp((z[j] - max) / std::max(1e-6, temperature));
    std::discrete_distribution<int32_t> pick(p.begin(), p.end());
    const int32_t next = pick(rng);
    context.push_back(next);
    out.push_back(char(next));
  }
  return out;
}

}  // namespace switchyard

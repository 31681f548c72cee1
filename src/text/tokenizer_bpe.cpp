#include "text/tokenizer_bpe.h"

#include <switchyard/error.h>

#include <algorithm>
#include <queue>

#include "text/tokenizer_utf8.h"

namespace switchyard::text {

namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Optional string fields that these models set to null or "" when unused.
void require_unset(const Field& model, std::string_view key) {
  const auto field = model.find(key);
  if (field &&
      !(field->json().is_string() && field->json().get_ref<const std::string&>().empty())) {
    field->fail(fmt::format("is {}; switchyard supports BPE models without it", field->preview()));
  }
}

}  // namespace

BpeModel::BpeModel(const Field& model) {
  const Field type = model.at("type");
  if (type.string() != "BPE") {
    type.fail(fmt::format("is \"{}\", which switchyard does not support (supported: BPE)",
                          type.string()));
  }
  require_unset(model, "continuing_subword_prefix");
  require_unset(model, "end_of_word_suffix");
  if (const auto dropout = model.find("dropout")) {
    if (!dropout->json().is_number() || dropout->json().get<double>() != 0.0) {
      dropout->fail(
          fmt::format("is {}; BPE dropout is for training, not inference", dropout->preview()));
    }
  }
  byte_fallback_ = model.boolean_or("byte_fallback", false);
  fuse_unk_ = model.boolean_or("fuse_unk", false);
  ignore_merges_ = model.boolean_or("ignore_merges", false);

  const Field vocab = model.at("vocab");
  vocab_.reserve(vocab.object().size());
  for (const auto& [token, value] : vocab.object()) {
    // Fields are built only for errors: naming 150k paths would double the load time.
    const int64_t id = value.is_number_integer() ? value.get<int64_t>() : -1;
    vocab_.emplace(token, id >= 0 && id <= Field::kMaxId ? static_cast<int32_t>(id)
                                                         : vocab.member(token, value).id());
  }

  if (const auto unk = model.find("unk_token")) {
    const auto id = find(unk->string());
    if (!id) unk->fail(fmt::format("is \"{}\", which is not in model.vocab", unk->string()));
    unk_id_ = *id;
  }

  byte_ids_.fill(-1);
  if (byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      byte_ids_[b] = find(fmt::format("<0x{:02X}>", b)).value_or(-1);
    }
  }

  const Field merges = model.at("merges");
  merges_.reserve(merges.array().size());
  for (size_t rank = 0; rank < merges.array().size(); ++rank) {
    const nlohmann::json& merge = merges.array()[rank];
    std::string_view left;
    std::string_view right;
    if (merge.is_string()) {
      const std::string_view line = merge.get_ref<const std::string&>();
      const size_t space = line.find(' ');
      if (space != std::string_view::npos && space > 0 && space + 1 < line.size()) {
        left = line.substr(0, space);
        right = line.substr(space + 1);
      }
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get_ref<const std::string&>();
      right = merge[1].get_ref<const std::string&>();
    }
    if (left.empty() || right.empty()) {
      const Field field = merges.at(rank);
      if (field.json().is_array() && field.array().size() == 2) {
        field.at(0).string();
        field.at(1).string();
      }
      field.fail(
          fmt::format("is {}; expected \"left right\" or [\"left\", \"right\"]", field.preview()));
    }
    const auto id_of = [&](std::string_view part) {
      const auto id = find(part);
      if (!id) {
        merges.at(rank).fail(fmt::format("names \"{}\", which is not in model.vocab", part));
      }
      return *id;
    };
    const int32_t left_id = id_of(left);
    const int32_t right_id = id_of(right);
    // A repeated pair keeps its last rank, as the Rust and JS implementations do.
    merges_[pair_key(left_id, right_id)] = {static_cast<int32_t>(rank),
                                            id_of(std::string(left) + std::string(right))};
  }
}

std::optional<int32_t> BpeModel::find(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

std::optional<BpeModel::Merge> BpeModel::merge_of(int32_t left, int32_t right) const {
  const auto it = merges_.find(pair_key(left, right));
  if (it == merges_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::encode(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto id = find(word)) {
      ids.push_back(*id);
      return;
    }
  }
  if (word.size() >= kCachedWordBytes) {
    merge_word(word, ids);
    return;
  }
  CacheShard& shard = cache_[StringHash{}(word) % cache_.size()];
  {
    std::lock_guard lock(shard.mutex);
    const auto it = shard.words.find(word);
    if (it != shard.words.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids;
  merge_word(word, word_ids);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  std::lock_guard lock(shard.mutex);
  if (shard.words.size() >= kShardEntries) shard.words.clear();
  shard.words.emplace(word, std::move(word_ids));
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  // Symbols form a linked list over their initial positions; a merge keeps the left position.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1});
  };
  bool previous_unknown = false;
  for (size_t pos = 0; pos < word.size();) {
    const size_t length = utf8::sequence_length(static_cast<unsigned char>(word[pos]));
    const std::string_view c = word.substr(pos, length);
    pos += length;
    if (const auto id = find(c)) {
      add(*id);
      previous_unknown = false;
      continue;
    }
    if (byte_fallback_ && std::all_of(c.begin(), c.end(), [&](char b) {
          return byte_ids_[static_cast<unsigned char>(b)] >= 0;
        })) {
      for (const char b : c) add(byte_ids_[static_cast<unsigned char>(b)]);
      previous_unknown = false;
      continue;
    }
    if (!unk_id_) continue;  // without an unknown token the character is dropped
    if (!(fuse_unk_ && previous_unknown)) add(*unk_id_);
    previous_unknown = true;
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto consider = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    if (const auto merge = merge_of(symbols[pos].id, symbols[next].id)) {
      queue.push({merge->rank, pos, merge->merged});
    }
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) consider(pos);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    // Skip candidates whose symbols were merged away or changed since they were queued.
    if (left.id < 0 || left.next < 0) continue;
    const auto current = merge_of(left.id, symbols[left.next].id);
    if (!current || current->merged != top.merged) continue;
    Symbol& right = symbols[left.next];
    left.id = top.merged;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int32_t pos = 0; pos >= 0; pos = symbols[pos].next) ids.push_back(symbols[pos].id);
}

}  // namespace switchyard::text

// The BPE model of tokenizer.json: vocabulary, ranked merges, unknown-token and byte-fallback
// rules, and a cache of encoded words shared by all threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/tokenizer_json_field.h"

namespace switchyard::text {

// Hash for unordered maps keyed by std::string that are searched with std::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename Value>
using StringMap = std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // Reads the "model" object; fails unless its type is BPE.
  explicit BpeModel(const Field& model);
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-tokenized word.
  void encode(std::string_view word, std::vector<int32_t>& ids) const;

  const StringMap<int32_t>& vocab() const { return vocab_; }
  std::optional<int32_t> find(std::string_view token) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;
  std::optional<Merge> merge_of(int32_t left, int32_t right) const;

  StringMap<int32_t> vocab_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  std::array<int32_t, 256> byte_ids_{};         // <0xXX> tokens when byte_fallback, else -1
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  // Words are short and repeat; long ones (Llama's whole-text pieces) are not worth keeping.
  static constexpr size_t kCachedWordBytes = 256;
  static constexpr size_t kShardEntries = 4096;
  struct CacheShard {
    std::mutex mutex;
    StringMap<std::vector<int32_t>> words;
  };
  mutable std::array<CacheShard, 16> cache_;
};

}  // namespace switchyard::text

// Added tokens (tokenizer.json "added_tokens"): found in the text before anything else, with the
// leftmost-longest rule, and honouring single_word, lstrip and rstrip.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace switchyard::text {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// A piece of text: an added token (token >= 0) or plain text (token == -1).
struct TextSegment {
  size_t begin;
  size_t end;
  int32_t token;
};

class AddedTokenMatcher {
 public:
  // Matches `pattern` (the token's content, or its normalized form) as `token`.
  void add(std::string_view pattern, const AddedToken& token);
  // Cuts `text` into plain text and added tokens; whitespace that lstrip/rstrip absorb belongs
  // to the token's segment. Empty plain segments are left out.
  std::vector<TextSegment> split(std::string_view text) const;

 private:
  struct Entry {
    int32_t id;
    bool single_word;
    bool lstrip;
    bool rstrip;
  };
  // The longest pattern starting at `pos`, as an index into tokens_ with its length.
  bool longest_at(std::string_view text, size_t pos, size_t& entry, size_t& length) const;

  // A byte trie: node 0 is the root; edges are keyed by (node << 8 | byte).
  std::unordered_map<uint64_t, uint32_t> edges_;
  std::vector<int64_t> terminal_{-1};  // node -> entry index, or -1
  std::vector<Entry> tokens_;
  bool first_byte_[256] = {};
};

}  // namespace switchyard::text

#include "text/tokenizer_added_tokens.h"

#include "text/tokenizer_utf8.h"

namespace switchyard::text {

void AddedTokenMatcher::add(std::string_view pattern, const AddedToken& token) {
  uint32_t node = 0;
  for (const char c : pattern) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
    const auto [it, inserted] = edges_.emplace(key, static_cast<uint32_t>(terminal_.size()));
    if (inserted) terminal_.push_back(-1);
    node = it->second;
  }
  first_byte_[static_cast<unsigned char>(pattern.front())] = true;
  if (terminal_[node] >= 0) return;  // the first token with this pattern wins
  terminal_[node] = static_cast<int64_t>(tokens_.size());
  tokens_.push_back({token.id, token.single_word, token.lstrip, token.rstrip});
}

bool AddedTokenMatcher::longest_at(std::string_view text, size_t pos, size_t& entry,
                                   size_t& length) const {
  if (!first_byte_[static_cast<unsigned char>(text[pos])]) return false;
  uint32_t node = 0;
  bool found = false;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto it =
        edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[i]));
    if (it == edges_.end()) break;
    node = it->second;
    if (terminal_[node] >= 0) {
      entry = static_cast<size_t>(terminal_[node]);
      length = i + 1 - pos;
      found = true;
    }
  }
  return found;
}

std::vector<TextSegment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<TextSegment> segments;
  size_t done = 0;  // end of the last segment
  size_t pos = 0;
  while (pos < text.size()) {
    size_t index = 0;
    size_t length = 0;
    if (!longest_at(text, pos, index, length)) {
      ++pos;
      continue;
    }
    const Entry& token = tokens_[index];
    size_t begin = pos;
    size_t end = pos + length;
    pos = end;  // matches never overlap, even when single_word discards one
    if (token.single_word &&
        ((begin > 0 &&
          utf8::is_word_char(utf8::decode_at(text, utf8::start_before(text, begin)))) ||
         (end < text.size() && utf8::is_word_char(utf8::decode_at(text, end))))) {
      continue;
    }
    if (token.lstrip) {
      while (begin > done) {
        const size_t previous = utf8::start_before(text, begin);
        if (!utf8::is_white_space(utf8::decode_at(text, previous))) break;
        begin = previous;
      }
    }
    if (token.rstrip) {
      while (end < text.size() && utf8::is_white_space(utf8::decode_at(text, end))) {
        end += utf8::sequence_length(static_cast<unsigned char>(text[end]));
      }
      pos = end;
    }
    if (begin > done) segments.push_back({done, begin, -1});
    segments.push_back({begin, end, token.id});
    done = end;
  }
  if (done < text.size()) segments.push_back({done, text.size(), -1});
  return segments;
}

}  // namespace switchyard::text

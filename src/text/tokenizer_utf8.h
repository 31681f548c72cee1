// UTF-8 helpers for the tokenizer: validation, lossy decoding of byte strings and the two
// character classes the added-token rules need.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace switchyard::text::utf8 {

// Byte offset of the first ill-formed sequence in `text`, or std::string_view::npos.
size_t find_invalid(std::string_view text);

// Length of the sequence that starts with `lead` in valid UTF-8.
inline size_t sequence_length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// The code point at byte `pos` of valid UTF-8.
char32_t decode_at(std::string_view text, size_t pos);
// Where the character that ends at byte `end` (> 0) of valid UTF-8 starts.
size_t start_before(std::string_view text, size_t end);

void append(std::string& out, char32_t code_point);

// Decodes bytes to valid UTF-8, replacing each maximal ill-formed subpart with U+FFFD (the
// WHATWG TextDecoder and Rust's from_utf8_lossy rule).
std::string decode_lossy(std::string_view bytes);

// The Unicode White_Space property.
bool is_white_space(char32_t c);
// A word character as in Rust's regex \w: letters, marks, Nd, Nl, Pc and the joiners.
bool is_word_char(char32_t c);

}  // namespace switchyard::text::utf8

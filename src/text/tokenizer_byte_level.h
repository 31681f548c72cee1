// GPT-2's byte-level alphabet: each byte maps to one printable character (bytes that are already
// printable map to themselves, the others to U+0100 onwards), so that byte-level BPE vocabularies
// are plain strings.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace switchyard::text::byte_level {

// Appends the byte-level characters of every byte of `bytes`.
void encode(std::string_view bytes, std::string& out);
// The byte a byte-level character stands for, if it is one.
std::optional<unsigned char> byte_of(char32_t c);

}  // namespace switchyard::text::byte_level

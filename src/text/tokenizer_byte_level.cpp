#include "text/tokenizer_byte_level.h"

#include <array>

#include "text/tokenizer_utf8.h"

namespace switchyard::text::byte_level {

namespace {

struct Tables {
  std::array<std::string, 256> chars;  // byte -> UTF-8 of its character
  std::array<int, 0x144> bytes;        // code point -> byte, or -1

  Tables() {
    bytes.fill(-1);
    const auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = printable(b) ? static_cast<char32_t>(b) : next++;
      utf8::append(chars[b], c);
      bytes[c] = b;
    }
  }
};

const Tables& tables() {
  static const Tables instance;
  return instance;
}

}  // namespace

void encode(std::string_view bytes, std::string& out) {
  const auto& chars = tables().chars;
  for (const char b : bytes) out += chars[static_cast<unsigned char>(b)];
}

std::optional<unsigned char> byte_of(char32_t c) {
  const auto& bytes = tables().bytes;
  if (c >= bytes.size() || bytes[c] < 0) return std::nullopt;
  return static_cast<unsigned char>(bytes[c]);
}

}  // namespace switchyard::text::byte_level

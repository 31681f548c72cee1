#include "text/jinja_string.h"

#include <fmt/format.h>

#include <algorithm>

namespace switchyard::text::jinja {

namespace {

constexpr char32_t kEscapedByteBase = 0xDC00;

bool is_continuation(unsigned char b) {
  return (b & 0xC0) == 0x80;
}

// Length of the valid UTF-8 sequence at s[i], or 0.
std::size_t sequence_length(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const std::size_t left = s.size() - i;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return left >= 2 && is_continuation(at(1)) ? 2 : 0;
  if (b >= 0xE0 && b <= 0xEF) {
    if (left < 3 || !is_continuation(at(1)) || !is_continuation(at(2))) return 0;
    if (b == 0xE0 && at(1) < 0xA0) return 0;   // overlong
    if (b == 0xED && at(1) >= 0xA0) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    if (left < 4 || !is_continuation(at(1)) || !is_continuation(at(2)) || !is_continuation(at(3))) {
      return 0;
    }
    if (b == 0xF0 && at(1) < 0x90) return 0;   // overlong
    if (b == 0xF4 && at(1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

bool in_set(char32_t c, const std::u32string& set) {
  return set.find(c) != std::u32string::npos;
}

// Python's repr() escapes these instead of printing them; a subset of !str.isprintable() that
// covers controls, spaces other than ' ', and the common format characters.
bool non_printable(char32_t c) {
  return c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
         (c >= 0x205F && c <= 0x2064) || c == 0x3000 || (c >= 0xD800 && c <= 0xDFFF) || c == 0xFEFF;
}

bool is_ascii_lower(char c) {
  return c >= 'a' && c <= 'z';
}
bool is_ascii_upper(char c) {
  return c >= 'A' && c <= 'Z';
}
char to_upper(char c) {
  return is_ascii_lower(c) ? static_cast<char>(c - 'a' + 'A') : c;
}
char to_lower(char c) {
  return is_ascii_upper(c) ? static_cast<char>(c - 'A' + 'a') : c;
}

}  // namespace

std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t n = sequence_length(s, i);
    const auto b = static_cast<unsigned char>(s[i]);
    if (n == 0) {
      out.push_back(kEscapedByteBase + b);
      ++i;
      continue;
    }
    char32_t c = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
    for (std::size_t k = 1; k < n; ++k)
      c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(c);
    i += n;
  }
  return out;
}

std::string encode_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char32_t c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c >= kEscapedByteBase + 0x80 && c <= kEscapedByteBase + 0xFF) {
      out.push_back(static_cast<char>(c - kEscapedByteBase));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::string strip(std::string_view s, const std::optional<std::string>& chars, StripSide side) {
  const std::u32string text = decode_utf8(s);
  const std::u32string set = chars ? decode_utf8(*chars) : std::u32string();
  auto strippable = [&](char32_t c) { return chars ? in_set(c, set) : is_space(c); };
  std::size_t begin = 0;
  std::size_t end = text.size();
  if (side != StripSide::Right) {
    while (begin < end && strippable(text[begin])) ++begin;
  }
  if (side != StripSide::Left) {
    while (end > begin && strippable(text[end - 1])) --end;
  }
  return encode_utf8(std::u32string_view(text).substr(begin, end - begin));
}

std::optional<std::vector<std::string>> split(std::string_view s,
                                              const std::optional<std::string>& sep,
                                              std::int64_t maxsplit) {
  std::vector<std::string> parts;
  if (!sep) {
    const std::u32string text = decode_utf8(s);
    std::size_t i = 0;
    while (true) {
      while (i < text.size() && is_space(text[i])) ++i;
      if (i == text.size()) break;
      if (maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) == maxsplit) {
        parts.push_back(encode_utf8(std::u32string_view(text).substr(i)));
        break;
      }
      std::size_t j = i;
      while (j < text.size() && !is_space(text[j])) ++j;
      parts.push_back(encode_utf8(std::u32string_view(text).substr(i, j - i)));
      i = j;
    }
    return parts;
  }
  if (sep->empty()) return std::nullopt;
  std::size_t start = 0;
  while (maxsplit < 0 || static_cast<std::int64_t>(parts.size()) < maxsplit) {
    const std::size_t found = s.find(*sep, start);
    if (found == std::string_view::npos) break;
    parts.emplace_back(s.substr(start, found - start));
    start = found + sep->size();
  }
  parts.emplace_back(s.substr(start));
  return parts;
}

std::string replace(std::string_view s, std::string_view old_sub, std::string_view new_sub,
                    std::int64_t count) {
  std::string out;
  std::int64_t done = 0;
  auto more = [&] { return count < 0 || done < count; };
  if (old_sub.empty()) {
    // Python inserts `new` before every code point and at the end.
    const std::u32string text = decode_utf8(s);
    for (const char32_t c : text) {
      if (more()) {
        out += new_sub;
        ++done;
      }
      out += encode_utf8(std::u32string_view(&c, 1));
    }
    if (more()) out += new_sub;
    return out;
  }
  std::size_t start = 0;
  while (more()) {
    const std::size_t found = s.find(old_sub, start);
    if (found == std::string_view::npos) break;
    out += s.substr(start, found - start);
    out += new_sub;
    start = found + old_sub.size();
    ++done;
  }
  out += s.substr(start);
  return out;
}

std::string ascii_upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), to_upper);
  return out;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), to_lower);
  return out;
}

std::string ascii_title(std::string_view s) {
  std::u32string text = decode_utf8(s);
  bool after_letter = false;
  for (char32_t& c : text) {
    const bool ascii_letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (ascii_letter) {
      const char ch = static_cast<char>(c);
      c = static_cast<char32_t>(after_letter ? to_lower(ch) : to_upper(ch));
    }
    const bool other_letter =
        (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7) || (c >= 0x370 && c <= 0x52F);
    after_letter = ascii_letter || other_letter;
  }
  return encode_utf8(text);
}

std::string title_words(std::string_view s) {
  const std::u32string text = decode_utf8(s);
  auto separator = [](char32_t c) {
    return is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
  };
  std::string out;
  bool word_start = true;
  for (const char32_t c : text) {
    std::string ch = encode_utf8(std::u32string_view(&c, 1));
    if (separator(c)) {
      word_start = true;
    } else {
      ch = word_start ? ascii_upper(ch) : ascii_lower(ch);
      word_start = false;
    }
    out += ch;
  }
  return out;
}

std::string ascii_capitalize(std::string_view s) {
  std::string out = ascii_lower(s);
  if (!out.empty()) out[0] = to_upper(out[0]);
  return out;
}

std::string python_repr(std::string_view s) {
  const bool double_quote =
      s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos;
  const char quote = double_quote ? '"' : '\'';
  std::string out(1, quote);
  for (const char32_t c : decode_utf8(s)) {
    if (c == '\\' || c == static_cast<char32_t>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (non_printable(c)) {
      out += c < 0x100 ? fmt::format("\\x{:02x}", static_cast<unsigned>(c))
                       : fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    } else {
      out += encode_utf8(std::u32string_view(&c, 1));
    }
  }
  out += quote;
  return out;
}

std::string json_quote(std::string_view s, bool ensure_ascii) {
  std::string out = "\"";
  for (const char32_t c : decode_utf8(s)) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20 || (ensure_ascii && c >= 0x7F && c < 0x10000)) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else if (ensure_ascii && c >= 0x10000) {
          const char32_t v = c - 0x10000;
          out += fmt::format("\\u{:04x}\\u{:04x}", static_cast<unsigned>(0xD800 + (v >> 10)),
                             static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
        } else {
          out += encode_utf8(std::u32string_view(&c, 1));
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace switchyard::text::jinja

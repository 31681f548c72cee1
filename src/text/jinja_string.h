// Python str operations on UTF-8 strings, by code point. Bytes that are not valid UTF-8 map to
// U+DC80..U+DCFF and back (Python's surrogateescape), so nothing is lost or replaced.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard::text::jinja {

std::u32string decode_utf8(std::string_view s);
std::string encode_utf8(std::u32string_view s);

// str.isspace() for one code point.
bool is_space(char32_t c);

enum class StripSide { Both, Left, Right };
// str.strip(chars): chars unset strips whitespace.
std::string strip(std::string_view s, const std::optional<std::string>& chars, StripSide side);

// str.split(sep, maxsplit): sep unset splits on runs of whitespace. An empty sep returns nullopt
// (Python's ValueError).
std::optional<std::vector<std::string>> split(std::string_view s,
                                              const std::optional<std::string>& sep,
                                              std::int64_t maxsplit);

// str.replace(old, new, count); count < 0 replaces all.
std::string replace(std::string_view s, std::string_view old_sub, std::string_view new_sub,
                    std::int64_t count);

// These change ASCII letters only; other code points pass through.
std::string ascii_upper(std::string_view s);
std::string ascii_lower(std::string_view s);
// str.title(): Latin, Greek and Cyrillic letters count as cased when finding word starts.
std::string ascii_title(std::string_view s);
std::string ascii_capitalize(std::string_view s);
// jinja2's title filter: each word (after whitespace, '-', '(', '{', '[' or '<') gets its first
// character upper-cased and the rest lower-cased.
std::string title_words(std::string_view s);

// repr() of a str: single quotes unless the text has ' and no ".
std::string python_repr(std::string_view s);
// A JSON string literal as json.dumps writes it.
std::string json_quote(std::string_view s, bool ensure_ascii);

}  // namespace switchyard::text::jinja

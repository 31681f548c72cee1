// The patterns of tokenizer.json (Split, Replace): Oniguruma regular expressions, run with PCRE2,
// or literal strings.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer_json_field.h"

namespace switchyard::text {

struct Span {
  size_t begin;
  size_t end;
};

// Rewrites the escapes whose meaning differs between Oniguruma (the engine tokenizer.json
// patterns are written for) and PCRE2 with PCRE2_UCP: \s and \S (Oniguruma: White_Space; PCRE2
// adds U+180E), \w, \W, \b, \B (Oniguruma: letters, marks, Nd, Pc) and \h, \H (Oniguruma: hex
// digits; PCRE2: horizontal space). Fails with `where` on Oniguruma-only syntax that PCRE2
// would read differently: nested classes, class intersections (&&), \W or \H inside a class.
std::string oniguruma_to_pcre2(std::string_view pattern, const std::string& where);

class Regex {
 public:
  // Compiles `pattern` (Oniguruma syntax) for UTF-8 text; errors start with `where`.
  Regex(std::string_view pattern, const std::string& where);
  // Non-empty, non-overlapping matches, leftmost first, in valid UTF-8 `text`.
  std::vector<Span> find_all(std::string_view text) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
};

// A tokenizer.json pattern: {"String": literal} or {"Regex": Oniguruma pattern}.
class Pattern {
 public:
  explicit Pattern(const Field& field);
  std::vector<Span> find_all(std::string_view text) const;

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;
};

}  // namespace switchyard::text

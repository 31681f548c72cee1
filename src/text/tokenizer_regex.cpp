#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/tokenizer_regex.h"

#include <pcre2.h>
#include <switchyard/error.h>

#include <cctype>
#include <new>

namespace switchyard::text {

namespace {

constexpr std::string_view kWordClass = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";
constexpr std::string_view kHexClass = "0-9A-Fa-f";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) {
    return fmt::format("error {}", code);
  }
  return reinterpret_cast<const char*>(buffer);
}

[[noreturn]] void reject(std::string_view pattern, const std::string& where, size_t at,
                         std::string_view what) {
  fail("{} = \"{}\": {} at offset {} is Oniguruma syntax that PCRE2 reads differently", where,
       pattern, what, at);
}

// Length of the POSIX class ("[:alpha:]", "[:^digit:]") that `text` starts with, or 0.
size_t posix_class_length(std::string_view text) {
  if (text.size() < 4 || text[1] != ':') return 0;
  size_t i = 2;
  if (text[i] == '^') ++i;
  const size_t name = i;
  while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
  if (i == name || text.substr(i, 2) != ":]") return 0;
  return i + 2;
}

// Per-thread match state: PCRE2 compiled code is shareable, match data and JIT stacks are not.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);

  MatchScratch() {
    if (data == nullptr || context == nullptr) throw std::bad_alloc();
    if (jit_stack != nullptr) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
};

MatchScratch& scratch() {
  thread_local MatchScratch instance;
  return instance;
}

}  // namespace

std::string oniguruma_to_pcre2(std::string_view pattern, const std::string& where) {
  std::string out;
  bool in_class = false;
  size_t class_body = 0;  // offset of the first character inside the current class
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      switch (e) {
        case 's':
          out += "\\p{White_Space}";
          break;
        case 'S':
          out += "\\P{White_Space}";
          break;
        case 'w':
          out += in_class ? std::string(kWordClass) : fmt::format("[{}]", kWordClass);
          break;
        case 'h':
          out += in_class ? std::string(kHexClass) : fmt::format("[{}]", kHexClass);
          break;
        case 'W':
        case 'H':
          if (in_class) reject(pattern, where, i - 1, fmt::format("\\{} inside a class", e));
          out += fmt::format("[^{}]", e == 'W' ? kWordClass : kHexClass);
          break;
        case 'b':
        case 'B':
          if (in_class) {  // a backspace in both engines
            out += "\\b";
          } else {
            const std::string w = fmt::format("[{}]", kWordClass);
            out += e == 'b' ? fmt::format("(?:(?<={0})(?!{0})|(?<!{0})(?={0}))", w)
                            : fmt::format("(?:(?<={0})(?={0})|(?<!{0})(?!{0}))", w);
          }
          break;
        default:
          out += c;
          out += e;
      }
      continue;
    }
    if (in_class) {
      if (c == '[') {
        const size_t length = posix_class_length(pattern.substr(i));
        if (length == 0) reject(pattern, where, i, "a nested character class");
        out.append(pattern.substr(i, length));
        i += length - 1;
        continue;
      }
      if (c == '&' && i + 1 < pattern.size() && pattern[i + 1] == '&') {
        reject(pattern, where, i, "a class intersection (&&)");
      }
      if (c == ']' && i != class_body) in_class = false;
      out += c;
      continue;
    }
    out += c;
    if (c == '[') {
      in_class = true;
      class_body = i + 1;
      if (class_body < pattern.size() && pattern[class_body] == '^') {
        out += '^';
        ++i;
        ++class_body;
      }
    }
  }
  return out;
}

struct Regex::Code {
  pcre2_code* code = nullptr;
  std::string pattern;
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(std::string_view pattern, const std::string& where) {
  auto code = std::make_shared<Code>();
  code->pattern = pattern;
  const std::string translated = oniguruma_to_pcre2(pattern, where);
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  if (context == nullptr) throw std::bad_alloc();
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  // Oniguruma's Ruby syntax: ^ and $ are line anchors, . stops at \n.
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C,
                             &error, &offset, context);
  pcre2_compile_context_free(context);
  if (code->code == nullptr) {
    fail("{} = \"{}\" does not compile: {} (at offset {} of the PCRE2 form \"{}\")", where, pattern,
         pcre2_message(error), offset, translated);
  }
  pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE);  // without JIT, matching is only slower
  code_ = std::move(code);
}

std::vector<Span> Regex::find_all(std::string_view text) const {
  MatchScratch& state = scratch();
  std::vector<Span> spans;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start < text.size()) {
    const uint32_t options = PCRE2_NOTEMPTY | PCRE2_NO_UTF_CHECK;
    int rc =
        pcre2_match(code_->code, subject, text.size(), start, options, state.data, state.context);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code_->code, subject, text.size(), start, options | PCRE2_NO_JIT, state.data,
                       state.context);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      fail("encode: pattern \"{}\" failed on a piece of {} bytes: {}", code_->pattern, text.size(),
           pcre2_message(rc));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    spans.push_back({ovector[0], ovector[1]});
    start = ovector[1];
  }
  return spans;
}

Pattern::Pattern(const Field& field) {
  const auto& members = field.object();
  if (members.size() == 1 && members.begin()->first == "String") {
    literal_ = field.at("String").string();
    if (literal_.empty()) field.at("String").fail("is empty");
  } else if (members.size() == 1 && members.begin()->first == "Regex") {
    const Field regex = field.at("Regex");
    regex_ = std::make_shared<const Regex>(regex.string(), regex.where());
  } else {
    std::string keys;
    for (const auto& member : members) {
      keys += fmt::format("{}\"{}\"", keys.empty() ? "" : ", ", member.first);
    }
    field.fail(fmt::format("must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {{{}}}", keys));
  }
}

std::vector<Span> Pattern::find_all(std::string_view text) const {
  if (regex_) return regex_->find_all(text);
  std::vector<Span> spans;
  for (size_t at = text.find(literal_); at != std::string_view::npos;
       at = text.find(literal_, at + literal_.size())) {
    spans.push_back({at, at + literal_.size()});
  }
  return spans;
}

}  // namespace switchyard::text

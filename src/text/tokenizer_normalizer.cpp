#include "text/tokenizer_normalizer.h"

#include <switchyard/error.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "text/tokenizer_regex.h"

namespace switchyard::text {

namespace {

class UnicodeForm : public Normalizer {
 public:
  UnicodeForm(std::string name, utf8proc_option_t options)
      : name_(std::move(name)), options_(options) {}

  std::string normalize(std::string text) const override {
    // ASCII is invariant under every normalization form.
    if (std::all_of(text.begin(), text.end(), [](char c) { return (c & 0x80) == 0; })) return text;
    utf8proc_uint8_t* result = nullptr;
    const utf8proc_ssize_t length =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                     static_cast<utf8proc_ssize_t>(text.size()), &result, options_);
    if (length < 0) fail("encode: {} normalization failed: {}", name_, utf8proc_errmsg(length));
    std::string out(reinterpret_cast<const char*>(result), static_cast<size_t>(length));
    std::free(result);
    return out;
  }

 private:
  std::string name_;
  utf8proc_option_t options_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string text) const override {
    return text.empty() ? text : prefix_ + text;
  }

 private:
  std::string prefix_;
};

class Replace : public Normalizer {
 public:
  Replace(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string normalize(std::string text) const override {
    std::string out;
    size_t done = 0;
    for (const Span& span : pattern_.find_all(text)) {
      out.append(text, done, span.begin - done);
      out += content_;
      done = span.end;
    }
    if (done == 0) return text;
    out.append(text, done);
    return out;
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string normalize(std::string text) const override {
    for (const auto& step : steps_) text = step->normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> parse_normalizer(const Field& field) {
  const std::string type = field.at("type").string();
  const auto form = [&](int options) {
    return std::make_unique<UnicodeForm>(type,
                                         static_cast<utf8proc_option_t>(UTF8PROC_STABLE | options));
  };
  if (type == "NFC") return form(UTF8PROC_COMPOSE);
  if (type == "NFD") return form(UTF8PROC_DECOMPOSE);
  if (type == "NFKC") return form(UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFKD") return form(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  if (type == "Prepend") return std::make_unique<Prepend>(field.at("prepend").string());
  if (type == "Replace") {
    return std::make_unique<Replace>(Pattern(field.at("pattern")), field.at("content").string());
  }
  if (type == "Sequence") {
    const Field list = field.at("normalizers");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.array().size(); ++i) steps.push_back(parse_normalizer(list.at(i)));
    return std::make_unique<Sequence>(std::move(steps));
  }
  field.at("type").fail(fmt::format(
      "is \"{}\", which switchyard does not support (supported: NFC, NFD, NFKC, NFKD, Prepend, "
      "Replace, Sequence)",
      type));
}

}  // namespace switchyard::text

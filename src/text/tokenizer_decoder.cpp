#include "text/tokenizer_decoder.h"

#include <switchyard/error.h>

#include "text/tokenizer_byte_level.h"
#include "text/tokenizer_regex.h"
#include "text/tokenizer_utf8.h"

namespace switchyard::text {

namespace {

size_t count(const Field& field) {
  const int64_t value = field.integer();
  if (value < 0) field.fail(fmt::format("is {}; it must not be negative", value));
  return static_cast<size_t>(value);
}

class ByteLevel : public Decoder {
 public:
  // All tokens become one string: their characters' bytes, decoded as UTF-8 (invalid sequences
  // become U+FFFD). A token with a character outside the byte alphabet (an added token such as
  // "<｜User｜>") contributes its own bytes.
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      const size_t start = bytes.size();
      bool mapped = true;
      for (size_t pos = 0; pos < token.size() && mapped;) {
        const auto byte = byte_level::byte_of(utf8::decode_at(token, pos));
        if (byte) bytes += static_cast<char>(*byte);
        mapped = byte.has_value();
        pos += utf8::sequence_length(static_cast<unsigned char>(token[pos]));
      }
      if (!mapped) bytes.replace(start, std::string::npos, token);
    }
    tokens.assign(1, utf8::decode_lossy(bytes));
  }
};

class Metaspace : public Decoder {
 public:
  explicit Metaspace(const Field& field) : replacement_(field.at("replacement").character()) {
    const std::string scheme = field.string_or("prepend_scheme", "always");
    if (scheme != "always" && scheme != "first" && scheme != "never") {
      field.at("prepend_scheme")
          .fail(fmt::format("is \"{}\"; expected always, first or never", scheme));
    }
    strip_first_ = scheme != "never" && field.boolean_or("add_prefix_space", true);
  }
  // The replacement becomes a space, except in the first token where (when the pre-tokenizer
  // prepends) every replacement character is dropped, as the Rust implementation does.
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& token = tokens[i];
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && strip_first_)) out += ' ';
          pos += replacement_.size();
        } else {
          out += token[pos++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class Replace : public Decoder {
 public:
  explicit Replace(const Field& field)
      : pattern_(field.at("pattern")), content_(field.at("content").string()) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      const auto spans = pattern_.find_all(token);
      if (spans.empty()) continue;
      std::string out;
      size_t done = 0;
      for (const Span& span : spans) {
        out.append(token, done, span.begin - done);
        out += content_;
        done = span.end;
      }
      out.append(token, done);
      token = std::move(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class ByteFallback : public Decoder {
 public:
  // Runs of <0xXX> tokens become the string of their bytes, or one U+FFFD per byte when the run
  // is not valid UTF-8 (the Rust rule).
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string run;
    size_t run_length = 0;
    const auto flush = [&] {
      if (run_length == 0) return;
      if (utf8::find_invalid(run) == std::string::npos) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run_length; ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      run.clear();
      run_length = 0;
    };
    for (std::string& token : tokens) {
      if (const auto byte = byte_of(token)) {
        run += static_cast<char>(*byte);
        ++run_length;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static std::optional<unsigned char> byte_of(const std::string& token) {
    if (token.size() != 6 || !token.starts_with("<0x") || token[5] != '>') return std::nullopt;
    const auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int high = hex(token[3]);
    const int low = hex(token[4]);
    if (high < 0 || low < 0) return std::nullopt;
    return static_cast<unsigned char>(high * 16 + low);
  }
};

class Fuse : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

class Strip : public Decoder {
 public:
  explicit Strip(const Field& field)
      : content_(field.at("content").character()),
        start_(count(field.at("start"))),
        stop_(count(field.at("stop"))) {}
  // Removes up to `start` leading and `stop` trailing `content` characters from each token.
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      size_t begin = 0;
      for (size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0; ++i) {
        begin += content_.size();
      }
      size_t end = token.size();
      for (size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                         token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_;
  size_t stop_;
};

class Sequence : public Decoder {
 public:
  explicit Sequence(const Field& field) {
    const Field list = field.at("decoders");
    for (size_t i = 0; i < list.array().size(); ++i) steps_.push_back(parse_decoder(list.at(i)));
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> parse_decoder(const Field& field) {
  const std::string type = field.at("type").string();
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "Metaspace") return std::make_unique<Metaspace>(field);
  if (type == "Replace") return std::make_unique<Replace>(field);
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") return std::make_unique<Strip>(field);
  if (type == "Sequence") return std::make_unique<Sequence>(field);
  field.at("type").fail(fmt::format(
      "is \"{}\", which switchyard does not support (supported: ByteLevel, Metaspace, Replace, "
      "ByteFallback, Fuse, Strip, Sequence)",
      type));
}

}  // namespace switchyard::text

#include "text/tokenizer_pre_tokenizer.h"

#include <switchyard/error.h>

#include <algorithm>

#include "text/tokenizer_byte_level.h"
#include "text/tokenizer_regex.h"
#include "text/tokenizer_utf8.h"

namespace switchyard::text {

namespace {

// What a split does with the matched delimiters (Rust tokenizers' SplitDelimiterBehavior).
enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Segment {
  size_t begin;
  size_t end;
  bool is_match;
};

Behavior parse_behavior(const Field& field) {
  const std::string name = field.string();
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  field.fail(fmt::format(
      "is \"{}\"; expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous",
      name));
}

// The matches and the gaps between them, covering [0, size).
std::vector<Segment> segments_of(const std::vector<Span>& matches, size_t size, bool invert) {
  std::vector<Segment> segments;
  size_t done = 0;
  for (const Span& match : matches) {
    if (match.begin > done) segments.push_back({done, match.begin, invert});
    segments.push_back({match.begin, match.end, !invert});
    done = match.end;
  }
  if (done < size) segments.push_back({done, size, invert});
  return segments;
}

// Groups the segments of `piece` by `behavior` and appends the non-empty pieces to `out`.
void split_piece(const Piece& piece, const std::vector<Segment>& segments, Behavior behavior,
                 std::vector<Piece>& out) {
  std::vector<Segment> kept;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kRemoved:
      std::copy_if(segments.begin(), segments.end(), std::back_inserter(kept),
                   [](const Segment& s) { return !s.is_match; });
      break;
    case Behavior::kIsolated:
      kept = segments;
      break;
    case Behavior::kContiguous:
      for (const Segment& s : segments) {
        if (!kept.empty() && s.is_match == previous_match) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Segment& s : segments) {
        if (!kept.empty() && s.is_match && !previous_match) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto s = segments.rbegin(); s != segments.rend(); ++s) {
        if (!kept.empty() && s->is_match && !previous_match) {
          kept.back().begin = s->begin;
        } else {
          kept.push_back(*s);
        }
        previous_match = s->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  for (const Segment& s : kept) {
    if (s.end > s.begin) {
      out.push_back({piece.text.substr(s.begin, s.end - s.begin), piece.at_start && s.begin == 0});
    }
  }
}

// Every occurrence of each character that `match` accepts, one span per character.
template <typename Predicate>
std::vector<Span> char_matches(std::string_view text, Predicate match) {
  std::vector<Span> spans;
  for (size_t pos = 0; pos < text.size();) {
    const size_t length = utf8::sequence_length(static_cast<unsigned char>(text[pos]));
    if (match(text.substr(pos, length))) spans.push_back({pos, pos + length});
    pos += length;
  }
  return spans;
}

class ByteLevel : public PreTokenizer {
 public:
  explicit ByteLevel(const Field& field)
      : add_prefix_space_(field.at("add_prefix_space").boolean()) {
    if (field.boolean_or("use_regex", true)) {
      // GPT-2's pattern, as the Rust tokenizers library writes it.
      regex_ = std::make_unique<Regex>(
          R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
          field.where());
    }
  }

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (Piece& piece : pieces) {
      if (add_prefix_space_ && piece.text.front() != ' ') piece.text.insert(0, 1, ' ');
      std::vector<Piece> words;
      if (regex_) {
        split_piece(piece, segments_of(regex_->find_all(piece.text), piece.text.size(), false),
                    Behavior::kIsolated, words);
      } else {
        words.push_back(std::move(piece));
      }
      for (const Piece& word : words) {
        Piece mapped{"", word.at_start};
        byte_level::encode(word.text, mapped.text);
        out.push_back(std::move(mapped));
      }
    }
    pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class Split : public PreTokenizer {
 public:
  explicit Split(const Field& field)
      : pattern_(field.at("pattern")),
        behavior_(parse_behavior(field.at("behavior"))),
        invert_(field.boolean_or("invert", false)) {}

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const Piece& piece : pieces) {
      split_piece(piece, segments_of(pattern_.find_all(piece.text), piece.text.size(), invert_),
                  behavior_, out);
    }
    pieces = std::move(out);
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

class Digits : public PreTokenizer {
 public:
  explicit Digits(const Field& field)
      : behavior_(field.boolean_or("individual_digits", false) ? Behavior::kIsolated
                                                               : Behavior::kContiguous) {}

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const Piece& piece : pieces) {
      const auto digits = char_matches(piece.text, [](std::string_view c) {
        return c.size() == 1 && c[0] >= '0' && c[0] <= '9';
      });
      split_piece(piece, segments_of(digits, piece.text.size(), false), behavior_, out);
    }
    pieces = std::move(out);
  }

 private:
  Behavior behavior_;
};

class Metaspace : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };

  explicit Metaspace(const Field& field) : replacement_(field.at("replacement").character()) {
    const std::string scheme = field.string_or("prepend_scheme", "always");
    if (scheme == "always") {
      prepend_ = Prepend::kAlways;
    } else if (scheme == "first") {
      prepend_ = Prepend::kFirst;
    } else if (scheme == "never") {
      prepend_ = Prepend::kNever;
    } else {
      field.at("prepend_scheme")
          .fail(fmt::format("is \"{}\"; expected always, first or never", scheme));
    }
    // Files from before prepend_scheme say add_prefix_space instead.
    if (!field.boolean_or("add_prefix_space", true)) {
      if (prepend_ != Prepend::kNever && field.find("prepend_scheme")) {
        field.at("add_prefix_space")
            .fail(fmt::format("is false but prepend_scheme is \"{}\"", scheme));
      }
      prepend_ = Prepend::kNever;
    }
    split_ = field.boolean_or("split", true);
  }

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const Piece& piece : pieces) {
      Piece replaced{"", piece.at_start};
      for (const char c : piece.text) {
        if (c == ' ') {
          replaced.text += replacement_;
        } else {
          replaced.text += c;
        }
      }
      const bool prepend =
          prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && piece.at_start);
      if (prepend && !replaced.text.starts_with(replacement_)) {
        replaced.text.insert(0, replacement_);
      }
      if (!split_) {
        out.push_back(std::move(replaced));
        continue;
      }
      const auto marks =
          char_matches(replaced.text, [&](std::string_view c) { return c == replacement_; });
      split_piece(replaced, segments_of(marks, replaced.text.size(), false),
                  Behavior::kMergedWithNext, out);
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  Prepend prepend_ = Prepend::kAlways;
  bool split_ = true;
};

class Sequence : public PreTokenizer {
 public:
  explicit Sequence(const Field& field) {
    const Field list = field.at("pretokenizers");
    for (size_t i = 0; i < list.array().size(); ++i) {
      steps_.push_back(parse_pre_tokenizer(list.at(i)));
    }
  }

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const Field& field) {
  const std::string type = field.at("type").string();
  if (type == "ByteLevel") return std::make_unique<ByteLevel>(field);
  if (type == "Split") return std::make_unique<Split>(field);
  if (type == "Digits") return std::make_unique<Digits>(field);
  if (type == "Metaspace") return std::make_unique<Metaspace>(field);
  if (type == "Sequence") return std::make_unique<Sequence>(field);
  field.at("type").fail(fmt::format(
      "is \"{}\", which switchyard does not support (supported: ByteLevel, Split, Digits, "
      "Metaspace, Sequence)",
      type));
}

}  // namespace switchyard::text

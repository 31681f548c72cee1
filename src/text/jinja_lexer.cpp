// Template source → tokens. Whitespace control follows jinja2's lexer with transformers'
// settings: "-" on a tag strips the whitespace beside it, trim_blocks drops the newline after a
// block or comment tag, lstrip_blocks drops the spaces and tabs before one on its own line, and
// "+" on a block or comment tag turns both off for that side.
#include <fmt/format.h>

#include "text/jinja_ast.h"
#include "text/jinja_string.h"

namespace switchyard::text::jinja {

namespace {

std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (std::size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline=False
  return out;
}

bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_name_char(char c) {
  return is_name_start(c) || is_digit(c);
}
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(normalize_newlines(source)) {}

  std::vector<Token> run() {
    std::size_t i = 0;
    bool line_starting = true;
    while (i < src_.size()) {
      const std::size_t tag = find_tag(i);
      std::string text = src_.substr(i, tag - i);
      const Pos text_pos = at(i);
      if (tag == src_.size()) {
        emit_text(std::move(text), text_pos);
        break;
      }
      const char kind = src_[tag + 1];
      const char modifier = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      const bool minus = modifier == '-';
      const bool plus = modifier == '+' && kind != '{';
      if (minus) {
        text = strip(text, std::nullopt, StripSide::Right);
      } else if (!plus && kind != '{') {
        lstrip_block_line(text, line_starting);
      }
      emit_text(std::move(text), text_pos);
      i = tag + 2 + ((minus || plus) ? 1 : 0);
      if (kind == '#') {
        i = skip_comment(tag, i, line_starting);
      } else {
        i = lex_tag(tag, i, kind == '%', line_starting);
      }
    }
    tokens_.push_back(Token{TokenType::End, "", at(src_.size()), 0, 0.0});
    return std::move(tokens_);
  }

 private:
  // Line and column (in code points) of src_[index]; tokens are made left to right, so the walk
  // resumes from the previous call.
  Pos at(std::size_t index) const {
    if (index < at_index_) {
      at_index_ = 0;
      at_pos_ = Pos{};
    }
    for (; at_index_ < index; ++at_index_) {
      const auto b = static_cast<unsigned char>(src_[at_index_]);
      if (b == '\n') {
        ++at_pos_.line;
        at_pos_.column = 1;
      } else if ((b & 0xC0) != 0x80) {
        ++at_pos_.column;
      }
    }
    return at_pos_;
  }

  std::size_t find_tag(std::size_t from) const {
    for (std::size_t k = from; k + 1 < src_.size(); ++k) {
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) {
        return k;
      }
    }
    return src_.size();
  }

  void emit_text(std::string text, Pos pos) {
    if (!text.empty()) tokens_.push_back(Token{TokenType::Text, std::move(text), pos, 0, 0.0});
  }

  // lstrip_blocks: a block or comment tag preceded on its line only by spaces and tabs loses
  // them; the text counts as on the tag's line from its start when the previous tag ended a line.
  static void lstrip_block_line(std::string& text, bool line_starting) {
    const std::size_t newline = text.rfind('\n');
    if (newline == std::string::npos && !line_starting) return;
    const std::size_t start = newline == std::string::npos ? 0 : newline + 1;
    if (text.find_first_not_of(" \t", start) == std::string::npos) text.resize(start);
  }

  // Skips whitespace after a "-" tag end; returns the new index and whether it ended a line.
  std::size_t skip_space(std::size_t i, bool& line_starting) const {
    const std::size_t start = i;
    while (i < src_.size()) {
      const std::size_t len = utf8_length(i);
      const std::u32string c = decode_utf8(std::string_view(src_).substr(i, len));
      if (c.size() != 1 || !is_space(c[0])) break;
      i += len;
    }
    line_starting = i > start && src_[i - 1] == '\n';
    return i;
  }

  std::size_t utf8_length(std::size_t i) const {
    std::size_t n = 1;
    while (i + n < src_.size() && (static_cast<unsigned char>(src_[i + n]) & 0xC0) == 0x80 &&
           n < 4) {
      ++n;
    }
    return n;
  }

  // After a block or comment tag: "-" strips the following whitespace, "+" keeps it, otherwise
  // trim_blocks drops one newline.
  std::size_t after_tag(std::size_t i, bool minus, bool plus, bool& line_starting) const {
    if (minus) return skip_space(i, line_starting);
    if (!plus && i < src_.size() && src_[i] == '\n') {
      line_starting = true;
      return i + 1;
    }
    line_starting = false;
    return i;
  }

  std::size_t skip_comment(std::size_t tag, std::size_t i, bool& line_starting) const {
    const std::size_t end = src_.find("#}", i);
    if (end == std::string::npos) fail_at(at(tag), "comment opened here is not closed with #}");
    const bool minus = end > i && src_[end - 1] == '-';
    const bool plus = end > i && src_[end - 1] == '+';
    return after_tag(end + 2, minus, plus, line_starting);
  }

  std::size_t lex_tag(std::size_t tag, std::size_t i, bool block, bool& line_starting) {
    tokens_.push_back(
        Token{block ? TokenType::BlockBegin : TokenType::VarBegin, "", at(tag), 0, 0.0});
    const std::size_t first_token = tokens_.size();
    const std::string close = block ? "%}" : "}}";
    const std::string minus_close = "-" + close;
    const std::string plus_close = "+" + close;
    int depth = 0;
    while (true) {
      while (i < src_.size() && (src_[i] == ' ' || src_[i] == '\t' || src_[i] == '\n')) ++i;
      if (i >= src_.size()) {
        fail_at(at(tag), fmt::format("tag opened here is not closed with {}", block ? "%}" : "}}"));
      }
      if (block && tokens_.size() == first_token + 1 && tokens_.back().type == TokenType::Name &&
          tokens_.back().value == "raw") {
        fail_at(tokens_.back().pos, "unsupported statement 'raw'");
      }
      if (depth == 0) {
        const std::string_view rest = std::string_view(src_).substr(i);
        const bool minus = rest.substr(0, 3) == minus_close;
        const bool plus = block && rest.substr(0, 3) == plus_close;
        if (minus || plus || rest.substr(0, 2) == close) {
          tokens_.push_back(
              Token{block ? TokenType::BlockEnd : TokenType::VarEnd, "", at(i), 0, 0.0});
          i += (minus || plus) ? 3 : 2;
          if (block) return after_tag(i, minus, plus, line_starting);
          if (minus) return skip_space(i, line_starting);
          line_starting = false;
          return i;
        }
      }
      i = lex_token(i, depth);
    }
  }

  std::size_t lex_token(std::size_t i, int& depth) {
    const Pos pos = at(i);
    const char c = src_[i];
    if (is_name_start(c)) {
      std::size_t j = i;
      while (j < src_.size() && is_name_char(src_[j])) ++j;
      tokens_.push_back(Token{TokenType::Name, src_.substr(i, j - i), pos, 0, 0.0});
      return j;
    }
    if (is_digit(c)) return lex_number(i, pos);
    if (c == '\'' || c == '"') return lex_string(i, pos);
    static const char* const two[] = {"**", "//", "==", "!=", "<=", ">="};
    for (const char* op : two) {
      if (src_.compare(i, 2, op) == 0) {
        tokens_.push_back(Token{TokenType::Operator, op, pos, 0, 0.0});
        return i + 2;
      }
    }
    if (std::string_view("+-*/%~<>=()[]{},.:|").find(c) == std::string_view::npos) {
      const std::size_t len = utf8_length(i);
      fail_at(pos, fmt::format("unexpected character '{}'", src_.substr(i, len)));
    }
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') {
      if (depth == 0) fail_at(pos, fmt::format("unexpected '{}'", c));
      --depth;
    }
    tokens_.push_back(Token{TokenType::Operator, std::string(1, c), pos, 0, 0.0});
    return i + 1;
  }

  std::size_t lex_number(std::size_t i, Pos pos) {
    std::size_t j = i;
    while (j < src_.size() && is_digit(src_[j])) ++j;
    bool is_float = false;
    if (j + 1 < src_.size() && src_[j] == '.' && is_digit(src_[j + 1])) {
      is_float = true;
      ++j;
      while (j < src_.size() && is_digit(src_[j])) ++j;
    }
    if (j < src_.size() && (src_[j] == 'e' || src_[j] == 'E')) {
      std::size_t k = j + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < src_.size() && is_digit(src_[k])) {
        is_float = true;
        j = k;
        while (j < src_.size() && is_digit(src_[j])) ++j;
      }
    }
    const std::string text = src_.substr(i, j - i);
    Token token{is_float ? TokenType::Float : TokenType::Integer, text, pos, 0, 0.0};
    if (is_float) {
      token.number = std::stod(text);
    } else {
      try {
        token.integer = std::stoll(text);
      } catch (const std::out_of_range&) {
        fail_at(pos, fmt::format("integer literal {} does not fit in 64 bits", text));
      }
    }
    tokens_.push_back(std::move(token));
    return j;
  }

  // Python's unicode-escape rules, as jinja2 decodes string literals: unknown escapes keep their
  // backslash.
  std::size_t lex_string(std::size_t i, Pos pos) {
    const char quote = src_[i];
    std::string value;
    std::size_t j = i + 1;
    auto hex_escape = [&](std::size_t digits) {
      char32_t code = 0;
      for (std::size_t k = 0; k < digits; ++k) {
        const int h = j + 1 + k < src_.size() ? hex_value(src_[j + 1 + k]) : -1;
        if (h < 0) fail_at(at(j - 1), "truncated \\x, \\u or \\U escape in string literal");
        code = code * 16 + static_cast<char32_t>(h);
      }
      if (code > 0x10FFFF) fail_at(at(j - 1), "\\U escape beyond U+10FFFF in string literal");
      value += encode_utf8(std::u32string_view(&code, 1));
      j += 1 + digits;
    };
    while (true) {
      if (j >= src_.size()) fail_at(pos, "string literal is not closed");
      const char c = src_[j];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++j;
        continue;
      }
      ++j;  // the backslash
      if (j >= src_.size()) fail_at(pos, "string literal is not closed");
      const char e = src_[j];
      switch (e) {
        case '\n':
          ++j;
          break;
        case '\\':
          value += '\\';
          ++j;
          break;
        case '\'':
          value += '\'';
          ++j;
          break;
        case '"':
          value += '"';
          ++j;
          break;
        case 'a':
          value += '\a';
          ++j;
          break;
        case 'b':
          value += '\b';
          ++j;
          break;
        case 'f':
          value += '\f';
          ++j;
          break;
        case 'n':
          value += '\n';
          ++j;
          break;
        case 'r':
          value += '\r';
          ++j;
          break;
        case 't':
          value += '\t';
          ++j;
          break;
        case 'v':
          value += '\v';
          ++j;
          break;
        case 'x':
          hex_escape(2);
          break;
        case 'u':
          hex_escape(4);
          break;
        case 'U':
          hex_escape(8);
          break;
        case 'N':
          fail_at(at(j - 1), "unsupported \\N{...} escape in string literal");
        default:
          if (e >= '0' && e <= '7') {
            char32_t code = 0;
            std::size_t k = 0;
            while (k < 3 && j < src_.size() && src_[j] >= '0' && src_[j] <= '7') {
              code = code * 8 + static_cast<char32_t>(src_[j] - '0');
              ++j, ++k;
            }
            value += encode_utf8(std::u32string_view(&code, 1));
          } else {
            value += '\\';
          }
      }
    }
    tokens_.push_back(Token{TokenType::String, std::move(value), pos, 0, 0.0});
    return j + 1;
  }

  std::string src_;
  std::vector<Token> tokens_;
  mutable std::size_t at_index_ = 0;
  mutable Pos at_pos_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) {
  return Lexer(source).run();
}

}  // namespace switchyard::text::jinja

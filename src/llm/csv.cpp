#include <switchyard/csv.h>
#include <switchyard/error.h>

#include <utility>

namespace switchyard {

CsvReader::CsvReader(std::string_view text, std::string source)
    : text_(text), source_(std::move(source)) {
  // A UTF-8 byte order mark is not part of the first header name.
  if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
}

bool CsvReader::next(CsvRecord& record) {
  record.fields.clear();
  record.line = line_;
  if (pos_ >= text_.size()) return false;

  std::string field;
  const std::size_t n = text_.size();
  while (true) {
    field.clear();
    if (pos_ < n && text_[pos_] == '"') {
      const std::size_t quote_line = line_;
      ++pos_;
      while (true) {
        if (pos_ >= n) fail("{}:{}: unterminated quoted field", source_, quote_line);
        const char c = text_[pos_];
        if (c == '"') {
          if (pos_ + 1 < n && text_[pos_ + 1] == '"') {
            field.push_back('"');
            pos_ += 2;
            continue;
          }
          ++pos_;
          break;
        }
        if (c == '\n') ++line_;
        field.push_back(c);
        ++pos_;
      }
      // After the closing quote only a separator or a record end may follow.
      const bool at_end = pos_ >= n || text_[pos_] == ',' || text_[pos_] == '\n' ||
                          (text_[pos_] == '\r' && pos_ + 1 < n && text_[pos_ + 1] == '\n');
      if (!at_end) {
        fail("{}:{}: unexpected character '{}' after a closing quote (field {})", source_, line_,
             text_[pos_], record.fields.size() + 1);
      }
    } else {
      while (pos_ < n) {
        const char c = text_[pos_];
        if (c == ',' || c == '\n' || (c == '\r' && pos_ + 1 < n && text_[pos_ + 1] == '\n')) break;
        if (c == '"') {
          // RFC 4180 allows quotes only in quoted fields; guessing here could merge records.
          fail("{}:{}: quote inside an unquoted field (field {})", source_, line_,
               record.fields.size() + 1);
        }
        field.push_back(c);
        ++pos_;
      }
    }
    record.fields.push_back(field);
    if (pos_ >= n) return true;
    if (text_[pos_] == ',') {
      ++pos_;
      continue;
    }
    pos_ += text_[pos_] == '\r' ? 2 : 1;
    ++line_;
    return true;
  }
}

std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& source) {
  std::vector<CsvRecord> records;
  CsvReader reader(text, source);
  CsvRecord record;
  while (reader.next(record)) records.push_back(record);
  return records;
}

}  // namespace switchyard

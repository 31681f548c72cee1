// A small RFC 4180 CSV parser: quoted fields with embedded commas, newlines and doubled quotes,
// LF or CRLF record ends. Malformed quoting throws switchyard::Error naming the source and line.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard {

struct CsvRecord {
  std::vector<std::string> fields;
  std::size_t line = 0;  // 1-based physical line on which the record starts
};

class CsvReader {
 public:
  // `text` must outlive the reader; `source` names it in error messages (usually the file path).
  CsvReader(std::string_view text, std::string source);

  // Reads the next record into `record`; false at the end of the text. A trailing record end at
  // the end of the text does not make an extra empty record.
  bool next(CsvRecord& record);

 private:
  std::string_view text_;
  std::string source_;
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
};

// Parses the whole text at once.
std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& source);

}  // namespace switchyard

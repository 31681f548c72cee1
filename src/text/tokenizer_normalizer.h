// tokenizer.json normalizers: NFC, NFD, NFKC, NFKD, Prepend, Replace and Sequence.
#pragma once

#include <memory>
#include <string>

#include "text/tokenizer_json_field.h"

namespace switchyard::text {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8; so is the result.
  virtual std::string normalize(std::string text) const = 0;
};

// nullptr for a null normalizer.
std::unique_ptr<Normalizer> parse_normalizer(const Field& field);

}  // namespace switchyard::text

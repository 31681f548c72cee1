// tokenizer.json pre-tokenizers: ByteLevel, Split, Digits, Metaspace and Sequence. Each one cuts
// the pieces of normalized text into smaller pieces; the model then encodes every piece alone.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer_json_field.h"

namespace switchyard::text {

struct Piece {
  std::string text;
  bool at_start;  // begins at offset 0 of the input (Metaspace's prepend_scheme "first")
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their sub-pieces, in order; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// nullptr for a null pre-tokenizer.
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const Field& field);

}  // namespace switchyard::text

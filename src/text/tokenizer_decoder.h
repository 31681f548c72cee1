// tokenizer.json decoders: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip and Sequence.
// Each rewrites the list of token strings; decode joins what the last one leaves.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer_json_field.h"

namespace switchyard::text {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// nullptr for a null decoder.
std::unique_ptr<Decoder> parse_decoder(const Field& field);

}  // namespace switchyard::text

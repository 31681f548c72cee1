// tokenizer.json post-processors: TemplateProcessing (special tokens around the sequence, such as
// Llama's BOS), ByteLevel (offsets only, so nothing to do for ids) and Sequence.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "text/tokenizer_json_field.h"

namespace switchyard::text {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
};

// nullptr for a null post-processor. `is_token` says whether an id names a token; template
// special tokens must.
std::unique_ptr<PostProcessor> parse_post_processor(const Field& field,
                                                    const std::function<bool(int32_t)>& is_token);

}  // namespace switchyard::text

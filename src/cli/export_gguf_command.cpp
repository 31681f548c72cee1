// `switchyard export-gguf`: a Hugging Face folder, with its routing overrides, as a GGUF file
// for llama.cpp.
#include <fmt/format.h>
#include <switchyard/infer/gguf.h>

#include "cli/commands.h"

namespace switchyard::cli {

int run_export_gguf(const InferFlags& flags, const std::string& out_path,
                    const std::string& dtype) {
  infer::GgufExportOptions options;
  options.routing = routing_overrides(flags, options.routing_source);
  options.dtype = dtype;
  const infer::GgufExportReport r = infer::export_gguf(flags.model, out_path, options);
  for (const std::string& note : r.notes) fmt::print(stderr, "switchyard: note: {}\n", note);
  fmt::print(stderr, "switchyard: wrote {} ({}, {} tensors, {}, {} bytes", out_path, r.architecture,
             r.tensors, r.dtype, r.bytes);
  if (r.experts > 0) fmt::print(stderr, ", {} experts, k = {}", r.experts, r.k);
  fmt::print(stderr, ")\n");
  return 0;
}

}  // namespace switchyard::cli

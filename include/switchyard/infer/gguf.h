// GGUF v3 files (ggml's docs/gguf.md): a streaming writer, and the export of a Hugging Face
// folder to the architecture names, metadata keys and tensor names llama.cpp loads.
//
// Layout: "GGUF", version 3, tensor count (u64), key/value count (u64), the key/values, the
// tensor infos (name, dimensions innermost first, ggml type, offset from the data start), zero
// padding to general.alignment, then each tensor's data at its aligned offset.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

namespace switchyard::infer {

enum class GgufValueType : uint32_t {
  UInt8 = 0,
  Int8 = 1,
  UInt16 = 2,
  Int16 = 3,
  UInt32 = 4,
  Int32 = 5,
  Float32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  UInt64 = 10,
  Int64 = 11,
  Float64 = 12,
};

// ggml tensor types the writer produces.
enum class GgufTensorType : uint32_t { F32 = 0, F16 = 1, BF16 = 30 };

const char* gguf_tensor_type_name(GgufTensorType type);  // "F32", "F16", "BF16"
size_t gguf_tensor_type_size(GgufTensorType type);       // bytes per element

// One metadata value, encoded as it is stored (little-endian) after its type field.
class GgufValue {
 public:
  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue str(const std::string& v);
  static GgufValue u32_array(std::span<const uint32_t> v);
  static GgufValue i32_array(std::span<const int32_t> v);
  static GgufValue u64_array(std::span<const uint64_t> v);
  static GgufValue f32_array(std::span<const float> v);
  static GgufValue bool_array(const std::vector<bool>& v);
  static GgufValue str_array(const std::vector<std::string>& v);

  GgufValueType type() const { return type_; }
  const std::vector<uint8_t>& payload() const { return payload_; }

 private:
  GgufValueType type_ = GgufValueType::UInt32;
  std::vector<uint8_t> payload_;
};

// Receives a tensor's elements in row-major order as float32 and stores them in the tensor's
// type (BF16 and F16 round to nearest even).
class GgufTensorSink {
 public:
  virtual ~GgufTensorSink() = default;
  virtual void write(std::span<const float> values) = 0;
};

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = 32);

  // Keys must be unique, ASCII, at most 65535 bytes. general.alignment is written from the
  // constructor's value; setting it here is an error.
  void set(const std::string& key, GgufValue value);
  bool has(const std::string& key) const;

  // `shape` row-major (PyTorch order, outermost first); stored innermost first as GGUF wants.
  // `produce` streams exactly the tensor's elements into the sink when the file is written.
  using Producer = std::function<void(GgufTensorSink&)>;
  void add_tensor(const std::string& name, std::vector<int64_t> shape, GgufTensorType type,
                  Producer produce);

  size_t tensor_count() const { return tensors_.size(); }
  uint64_t data_bytes() const;  // tensor data with padding

  // Streams the file to a temporary file beside `path`, fsyncs and renames it over `path`; on
  // any error the temporary file is removed and `path` is untouched.
  void write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    GgufTensorType type;
    Producer produce;
    uint64_t offset = 0;  // from the start of the data section
    uint64_t bytes = 0;
  };
  uint32_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
  uint64_t data_end_ = 0;
};

struct GgufExportOptions {
  // Routing overrides as routing_control.h reads them; null = the checkpoint's routing.
  nlohmann::json routing;
  std::string routing_source = "routing overrides";  // for messages
  std::string dtype;                                 // "f32", "bf16", "f16"; "" = checkpoint's
  uint32_t alignment = 32;
};

struct GgufExportReport {
  std::string architecture;  // llama.cpp's name, e.g. "qwen3moe"
  std::string dtype;         // of the 2-D weights
  size_t tensors = 0;
  uint64_t bytes = 0;              // of the file
  int64_t experts = 0, k = 0;      // per MoE layer, after the overrides (0 for dense models)
  std::vector<std::string> notes;  // where llama.cpp will differ (e.g. no sliding window)
};

// Hugging Face folder -> GGUF for llama.cpp: architectures llama (Llama, Mistral, Mixtral),
// qwen2, qwen3, qwen2moe, qwen3moe, olmoe and deepseek2 (DeepSeek-V3). Disabled experts are
// removed (gate rows, expert tensors, correction bias), `k` sets expert_used_count. What GGUF or
// llama.cpp cannot express (another router, a capacity factor, a selection bias, a config field
// llama.cpp's graph ignores) is an Error naming the source, field and value.
GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path,
                             const GgufExportOptions& options = {});

}  // namespace switchyard::infer

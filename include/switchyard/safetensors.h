// Reader and writer for the safetensors format: 8-byte little-endian header length, a JSON header
// mapping names to {dtype, shape, data_offsets} (plus optional "__metadata__"), then the raw data.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace switchyard {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType dtype);  // "F32", ... as written in the header
size_t dtype_size(DType dtype);

struct TensorData {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // little-endian, row-major

  int64_t numel() const;
  // Converting accessors: floating dtypes convert to float; integer dtypes to int64.
  // They throw Error naming `name` when the dtype cannot convert (e.g. to_i64 on F32).
  std::vector<float> to_f32(const std::string& name = "tensor") const;
  std::vector<double> to_f64(const std::string& name = "tensor") const;
  std::vector<int64_t> to_i64(const std::string& name = "tensor") const;

  static TensorData from_f32(std::vector<int64_t> shape, const std::vector<float>& values);
  static TensorData from_f64(std::vector<int64_t> shape, const std::vector<double>& values);
  static TensorData from_i64(std::vector<int64_t> shape, const std::vector<int64_t>& values);
};

struct SafetensorsFile {
  std::map<std::string, TensorData> tensors;
  std::map<std::string, std::string> metadata;
};

// Where a tensor's bytes are: [begin, end) counted from the start of the data section.
struct TensorEntry {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

struct SafetensorsHeader {
  std::map<std::string, TensorEntry> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // bytes before the data section: 8 + header size
};

// Parses and validates the header of a file of `file_size` bytes of which `bytes` holds at least
// the beginning up to the end of the header (a memory map holds it all): every entry's dtype,
// shape and offsets, the offsets against the file size, overlaps, duplicate keys.
SafetensorsHeader parse_safetensors_header(std::span<const uint8_t> bytes, uint64_t file_size,
                                           const std::string& source);

// `count` floating values (F64, F32, F16, BF16) -> float; other dtypes are an Error.
void convert_to_f32(DType dtype, const uint8_t* src, size_t count, float* dst);

// Parse bytes already in memory; `source` names the file in error messages.
SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes, const std::string& source);
SafetensorsFile read_safetensors(const std::string& path);
std::vector<uint8_t> serialize_safetensors(const SafetensorsFile& file);
// Atomic: writes a temporary file beside `path`, fsyncs, then renames over it.
void write_safetensors(const std::string& path, const SafetensorsFile& file);

}  // namespace switchyard

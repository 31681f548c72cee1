#include "switchyard/safetensors.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

#include "switchyard/error.h"
#include "switchyard/file_util.h"

namespace switchyard {

// Tensor bytes are little-endian on disk and are copied straight into host-order values.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three levels deep (header, entry, shape); anything far deeper is garbage
// and is refused early so no later recursive code (e.g. dump) sees it.
constexpr int kMaxHeaderDepth = 16;
constexpr const char* kMetadataKey = "__metadata__";

constexpr DType kAllDTypes[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                                DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};

std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType dtype : kAllDTypes) {
    if (name == dtype_name(dtype)) return dtype;
  }
  return std::nullopt;
}

bool is_float_dtype(DType dtype) {
  return dtype == DType::F64 || dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}

bool is_int_dtype(DType dtype) {
  return dtype == DType::I64 || dtype == DType::I32 || dtype == DType::I16 || dtype == DType::I8 ||
         dtype == DType::U8 || dtype == DType::BOOL;
}

// Short, safe description of a JSON value for error messages: scalars verbatim (clipped),
// containers only by type, so a hostile header cannot blow up the message or recurse deeply.
std::string describe(const json& value) {
  if (!value.is_primitive()) return value.type_name();
  std::string text = value.dump();
  if (text.size() > 64) text = text.substr(0, 64) + "...";
  return text;
}

// The value of a JSON integer that fits in int64 (negative allowed); nullopt for anything else,
// including floats like 2.0 and integers beyond int64.
std::optional<int64_t> as_int64(const json& value) {
  if (value.is_number_unsigned()) {
    const auto u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  return std::nullopt;
}

std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// Byte count the shape and dtype require; throws if the tensor's own bytes disagree.
size_t checked_element_count(const TensorData& tensor, const std::string& name) {
  const int64_t count = tensor.numel();
  const auto need = checked_mul(count, static_cast<int64_t>(dtype_size(tensor.dtype)));
  if (!need || static_cast<uint64_t>(*need) != tensor.bytes.size()) {
    fail("tensor '{}': {} bytes do not match shape {} of dtype {}", name, tensor.bytes.size(),
         shape_text(tensor.shape), dtype_name(tensor.dtype));
  }
  return static_cast<size_t>(count);
}

template <typename T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

// IEEE 754 binary16 -> binary32; every half value is exactly representable as a float.
float half_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1Fu;
  const uint32_t mantissa = half & 0x3FFu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) {
    // Infinity or NaN; the NaN payload is kept.
    return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  }
  // Normal: rebias the exponent from 15 to 127.
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// bfloat16 is the upper half of a binary32.
float bf16_to_float(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

template <typename Out>
std::vector<Out> decode_floats(const TensorData& tensor, const std::string& name,
                               const char* target) {
  if (!is_float_dtype(tensor.dtype)) {
    fail("tensor '{}': cannot convert dtype {} to {}", name, dtype_name(tensor.dtype), target);
  }
  const size_t count = checked_element_count(tensor, name);
  const size_t width = dtype_size(tensor.dtype);
  const uint8_t* data = tensor.bytes.data();
  std::vector<Out> out(count);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* p = data + i * width;
    switch (tensor.dtype) {
      case DType::F64:
        out[i] = static_cast<Out>(load<double>(p));
        break;
      case DType::F32:
        out[i] = static_cast<Out>(load<float>(p));
        break;
      case DType::F16:
        out[i] = static_cast<Out>(half_to_float(load<uint16_t>(p)));
        break;
      default:  // BF16; is_float_dtype excluded everything else
        out[i] = static_cast<Out>(bf16_to_float(load<uint16_t>(p)));
        break;
    }
  }
  return out;
}

template <typename T>
TensorData make_tensor(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  TensorData tensor;
  tensor.dtype = dtype;
  tensor.shape = std::move(shape);
  const int64_t count = tensor.numel();
  if (static_cast<uint64_t>(count) != values.size()) {
    fail("tensor shape {} holds {} elements but {} values were given", shape_text(tensor.shape),
         count, values.size());
  }
  tensor.bytes.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(tensor.bytes.data(), values.data(), tensor.bytes.size());
  return tensor;
}

// nlohmann's messages quote raw input bytes; escape anything non-printable so the message stays
// valid UTF-8 (e.g. when a caller later embeds it in JSON).
std::string printable(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7F) {
      out += c;
    } else {
      out += fmt::format("\\x{:02x}", byte);
    }
  }
  return out;
}

// Parses the header text, refusing duplicate keys (which nlohmann would silently collapse to the
// last one, letting a file hide a tensor) and absurd nesting.
json parse_header_json(const uint8_t* begin, const uint8_t* end, const std::string& source) {
  std::vector<std::set<std::string>> open_objects;
  json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxHeaderDepth) {
          fail("{}: header JSON nests deeper than {} levels", source, kMaxHeaderDepth);
        }
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!open_objects.back().insert(key).second) {
          fail("{}: header JSON has duplicate key '{}'", source, key);
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(begin, end, check);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", source, printable(e.what()));
  }
}

std::map<std::string, std::string> parse_metadata(const json& value, const std::string& source) {
  if (!value.is_object()) {
    fail("{}: '{}' must be an object of strings, got {}", source, kMetadataKey, value.type_name());
  }
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      fail("{}: '{}' value for key '{}' must be a string, got {}", source, kMetadataKey, key,
           describe(item));
    }
    metadata.emplace(key, item.get<std::string>());
  }
  return metadata;
}

struct ByteRange {
  int64_t begin;
  int64_t end;
  std::string name;
};

// Validates one header entry against the size of the data section.
TensorEntry parse_tensor(const std::string& name, const json& entry, uint64_t data_size,
                         const std::string& source) {
  if (!entry.is_object()) {
    fail("{}: tensor '{}': entry must be an object, got {}", source, name, describe(entry));
  }
  for (const auto& [field, unused] : entry.items()) {
    if (field != "dtype" && field != "shape" && field != "data_offsets") {
      fail("{}: tensor '{}': unknown field '{}'", source, name, field);
    }
  }
  auto field = [&](const char* key) -> const json& {
    const auto it = entry.find(key);
    if (it == entry.end()) fail("{}: tensor '{}': missing field '{}'", source, name, key);
    return *it;
  };

  TensorEntry tensor;
  const json& dtype = field("dtype");
  if (!dtype.is_string()) {
    fail("{}: tensor '{}': field 'dtype' must be a string, got {}", source, name, describe(dtype));
  }
  const auto parsed_dtype = dtype_from_name(dtype.get_ref<const std::string&>());
  if (!parsed_dtype) {
    fail("{}: tensor '{}': unknown dtype {}", source, name, describe(dtype));
  }
  tensor.dtype = *parsed_dtype;

  const json& shape = field("shape");
  if (!shape.is_array()) {
    fail("{}: tensor '{}': field 'shape' must be an array, got {}", source, name, describe(shape));
  }
  int64_t count = 1;
  for (const json& dim : shape) {
    const auto value = as_int64(dim);
    if (!value) {
      fail("{}: tensor '{}': field 'shape' has entry {} that is not an int64 integer", source, name,
           describe(dim));
    }
    if (*value < 0) {
      fail("{}: tensor '{}': field 'shape' has negative dimension {}", source, name, *value);
    }
    const auto product = checked_mul(count, *value);
    if (!product) fail("{}: tensor '{}': field 'shape' element count overflows", source, name);
    count = *product;
    tensor.shape.push_back(*value);
  }
  const auto byte_count = checked_mul(count, static_cast<int64_t>(dtype_size(tensor.dtype)));
  if (!byte_count) {
    fail("{}: tensor '{}': byte size of shape {} overflows", source, name,
         shape_text(tensor.shape));
  }

  const json& offsets = field("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) {
    fail("{}: tensor '{}': field 'data_offsets' must be an array of two integers, got {}", source,
         name, describe(offsets));
  }
  const auto begin = as_int64(offsets[0]);
  const auto end = as_int64(offsets[1]);
  if (!begin || !end || *begin < 0 || *end < 0) {
    fail("{}: tensor '{}': field 'data_offsets' must hold non-negative integers, got [{}, {}]",
         source, name, describe(offsets[0]), describe(offsets[1]));
  }
  if (*begin > *end) {
    fail("{}: tensor '{}': field 'data_offsets' begin {} is after end {}", source, name, *begin,
         *end);
  }
  if (static_cast<uint64_t>(*end) > data_size) {
    fail("{}: tensor '{}': field 'data_offsets' end {} is beyond the {}-byte data buffer", source,
         name, *end, data_size);
  }
  if (*end - *begin != *byte_count) {
    fail("{}: tensor '{}': field 'data_offsets' spans {} bytes but shape {} of {} needs {}", source,
         name, *end - *begin, shape_text(tensor.shape), dtype_name(tensor.dtype), *byte_count);
  }

  tensor.begin = static_cast<uint64_t>(*begin);
  tensor.end = static_cast<uint64_t>(*end);
  return tensor;
}

void check_no_overlap(std::vector<ByteRange> ranges, const std::string& source) {
  // Empty tensors own no bytes, so they cannot overlap anything.
  std::erase_if(ranges, [](const ByteRange& r) { return r.begin == r.end; });
  std::sort(ranges.begin(), ranges.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const ByteRange& prev = ranges[i - 1];
    const ByteRange& cur = ranges[i];
    if (cur.begin < prev.end) {
      fail("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) have overlapping data_offsets", source,
           prev.name, prev.begin, prev.end, cur.name, cur.begin, cur.end);
    }
  }
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F64:
      return "F64";
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::I16:
      return "I16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::BOOL:
      return "BOOL";
  }
  return "UNKNOWN";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  fail("invalid DType value {}", static_cast<int>(dtype));
}

int64_t TensorData::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) fail("tensor shape {} has a negative dimension", shape_text(shape));
    const auto product = checked_mul(count, dim);
    if (!product) fail("tensor shape {} element count overflows", shape_text(shape));
    count = *product;
  }
  return count;
}

std::vector<float> TensorData::to_f32(const std::string& name) const {
  return decode_floats<float>(*this, name, "F32");
}

std::vector<double> TensorData::to_f64(const std::string& name) const {
  return decode_floats<double>(*this, name, "F64");
}

std::vector<int64_t> TensorData::to_i64(const std::string& name) const {
  if (!is_int_dtype(dtype)) {
    fail("tensor '{}': cannot convert dtype {} to I64", name, dtype_name(dtype));
  }
  const size_t count = checked_element_count(*this, name);
  const size_t width = dtype_size(dtype);
  std::vector<int64_t> out(count);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* p = bytes.data() + i * width;
    switch (dtype) {
      case DType::I64:
        out[i] = load<int64_t>(p);
        break;
      case DType::I32:
        out[i] = load<int32_t>(p);
        break;
      case DType::I16:
        out[i] = load<int16_t>(p);
        break;
      case DType::I8:
        out[i] = load<int8_t>(p);
        break;
      case DType::U8:
        out[i] = *p;
        break;
      default:  // BOOL: any non-zero byte is true
        out[i] = *p != 0 ? 1 : 0;
        break;
    }
  }
  return out;
}

TensorData TensorData::from_f32(std::vector<int64_t> shape, const std::vector<float>& values) {
  return make_tensor(DType::F32, std::move(shape), values);
}

TensorData TensorData::from_f64(std::vector<int64_t> shape, const std::vector<double>& values) {
  return make_tensor(DType::F64, std::move(shape), values);
}

TensorData TensorData::from_i64(std::vector<int64_t> shape, const std::vector<int64_t>& values) {
  return make_tensor(DType::I64, std::move(shape), values);
}

SafetensorsHeader parse_safetensors_header(std::span<const uint8_t> bytes, uint64_t file_size,
                                           const std::string& source) {
  if (file_size < 8 || bytes.size() < 8) {
    fail("{}: file is {} bytes, shorter than the 8-byte header size", source, file_size);
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[static_cast<size_t>(i)];
  if (header_size > kMaxHeaderBytes) {
    fail("{}: header size {} exceeds the {}-byte limit", source, header_size, kMaxHeaderBytes);
  }
  if (header_size > file_size - 8) {
    fail("{}: header size {} is larger than the {} bytes after the size field", source, header_size,
         file_size - 8);
  }
  if (header_size > bytes.size() - 8) fail("{}: header is not in the given bytes", source);
  const uint8_t* header_begin = bytes.data() + 8;
  const json header = parse_header_json(header_begin, header_begin + header_size, source);
  if (!header.is_object()) {
    fail("{}: header must be a JSON object, got {}", source, describe(header));
  }

  SafetensorsHeader out;
  out.data_offset = 8 + header_size;
  const uint64_t data_size = file_size - out.data_offset;
  std::vector<ByteRange> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      out.metadata = parse_metadata(entry, source);
      continue;
    }
    TensorEntry tensor = parse_tensor(name, entry, data_size, source);
    ranges.push_back(ByteRange{int64_t(tensor.begin), int64_t(tensor.end), name});
    out.tensors.emplace(name, std::move(tensor));
  }
  check_no_overlap(std::move(ranges), source);
  return out;
}

SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes, const std::string& source) {
  SafetensorsHeader header = parse_safetensors_header(bytes, bytes.size(), source);
  SafetensorsFile file;
  file.metadata = std::move(header.metadata);
  const uint8_t* data = bytes.data() + header.data_offset;
  for (auto& [name, entry] : header.tensors) {
    TensorData tensor;
    tensor.dtype = entry.dtype;
    tensor.shape = std::move(entry.shape);
    // Offsets were checked against the file size, so this copy is bounded by it.
    tensor.bytes.assign(data + entry.begin, data + entry.end);
    file.tensors.emplace(name, std::move(tensor));
  }
  return file;
}

void convert_to_f32(DType dtype, const uint8_t* src, size_t count, float* dst) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::BF16:
      for (size_t i = 0; i < count; ++i) dst[i] = bf16_to_float(load<uint16_t>(src + 2 * i));
      return;
    case DType::F16:
      for (size_t i = 0; i < count; ++i) dst[i] = half_to_float(load<uint16_t>(src + 2 * i));
      return;
    case DType::F64:
      for (size_t i = 0; i < count; ++i) dst[i] = static_cast<float>(load<double>(src + 8 * i));
      return;
    default:
      fail("cannot convert dtype {} to F32", dtype_name(dtype));
  }
}

SafetensorsFile read_safetensors(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return parse_safetensors(bytes, path);
}

std::vector<uint8_t> serialize_safetensors(const SafetensorsFile& file) {
  json header = json::object();
  if (!file.metadata.empty()) header[kMetadataKey] = file.metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : file.tensors) {
    if (name == kMetadataKey) fail("cannot write a tensor named '{}'", kMetadataKey);
    const size_t size = checked_element_count(tensor, name) * dtype_size(tensor.dtype);
    header[name] = json{{"dtype", dtype_name(tensor.dtype)},
                        {"shape", tensor.shape},
                        {"data_offsets", json::array({offset, offset + size})}};
    offset += size;
  }

  std::string text;
  try {
    text = header.dump();  // compact
  } catch (const json::exception& e) {
    // e.g. a tensor name or metadata string that is not valid UTF-8
    fail("cannot serialize safetensors header: {}", e.what());
  }
  // Trailing spaces are valid JSON whitespace; they make the data start 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kMaxHeaderBytes) {
    fail("safetensors header is {} bytes, over the {}-byte limit readers accept", text.size(),
         kMaxHeaderBytes);
  }

  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  const uint64_t header_size = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(header_size >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const auto& [name, tensor] : file.tensors) {
    out.insert(out.end(), tensor.bytes.begin(), tensor.bytes.end());
  }
  return out;
}

void write_safetensors(const std::string& path, const SafetensorsFile& file) {
  write_file_atomic(path, serialize_safetensors(file));
}

}  // namespace switchyard

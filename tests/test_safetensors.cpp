// Tests for the safetensors reader/writer and the atomic file helpers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "switchyard/error.h"
#include "switchyard/file_util.h"
#include "switchyard/safetensors.h"
#include "test_seed.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr DType kAllDTypes[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                                DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};

// Builds a file the way Python's safetensors does: no padding, header length as written.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  const uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(size >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<uint8_t> make_file(const std::string& header, size_t data_size) {
  return make_file(header, std::vector<uint8_t>(data_size, 0));
}

uint64_t header_size_of(const std::vector<uint8_t>& file) {
  uint64_t size = 0;
  for (int i = 7; i >= 0; --i) size = (size << 8) | file[static_cast<size_t>(i)];
  return size;
}

// Expects parsing to fail with a switchyard::Error whose message contains every piece.
void expect_parse_error(const std::vector<uint8_t>& bytes, const std::vector<std::string>& pieces) {
  try {
    parse_safetensors(bytes, "bad.safetensors");
    ADD_FAILURE() << "parse succeeded, expected an Error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("bad.safetensors"));
    for (const std::string& piece : pieces) EXPECT_THAT(e.what(), HasSubstr(piece));
  }
}

// Raw tensor with a deterministic byte pattern, so any dtype round-trips bit-exactly.
TensorData patterned(DType dtype, std::vector<int64_t> shape, uint8_t seed) {
  TensorData tensor;
  tensor.dtype = dtype;
  tensor.shape = std::move(shape);
  tensor.bytes.resize(static_cast<size_t>(tensor.numel()) * dtype_size(dtype));
  for (size_t i = 0; i < tensor.bytes.size(); ++i) {
    tensor.bytes[i] = static_cast<uint8_t>(seed + 37 * i);
  }
  if (dtype == DType::BOOL) {
    for (uint8_t& b : tensor.bytes) b &= 1;
  }
  return tensor;
}

void expect_same(const SafetensorsFile& a, const SafetensorsFile& b) {
  EXPECT_EQ(a.metadata, b.metadata);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, tensor] : a.tensors) {
    SCOPED_TRACE(name);
    const auto it = b.tensors.find(name);
    ASSERT_NE(it, b.tensors.end());
    EXPECT_EQ(tensor.dtype, it->second.dtype);
    EXPECT_EQ(tensor.shape, it->second.shape);
    EXPECT_EQ(tensor.bytes, it->second.bytes);
  }
}

// A file exercising every dtype, scalars, zero-size tensors and metadata.
SafetensorsFile sample_file() {
  SafetensorsFile file;
  uint8_t seed = 1;
  for (DType dtype : kAllDTypes) {
    const std::string name = dtype_name(dtype);
    file.tensors["matrix_" + name] = patterned(dtype, {3, 5}, seed++);
    file.tensors["scalar_" + name] = patterned(dtype, {}, seed++);
    file.tensors["empty_" + name] = patterned(dtype, {4, 0, 2}, seed++);
  }
  file.metadata = {{"format", "pt"}, {"note", "unicode \xc3\xa9 ok"}, {"empty", ""}};
  return file;
}

TEST(Safetensors, DTypeNamesAndSizes) {
  EXPECT_STREQ(dtype_name(DType::F64), "F64");
  EXPECT_STREQ(dtype_name(DType::BF16), "BF16");
  EXPECT_STREQ(dtype_name(DType::BOOL), "BOOL");
  EXPECT_EQ(dtype_size(DType::F64), 8u);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
  EXPECT_EQ(dtype_size(DType::F32), 4u);
  EXPECT_EQ(dtype_size(DType::I32), 4u);
  EXPECT_EQ(dtype_size(DType::F16), 2u);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::I16), 2u);
  EXPECT_EQ(dtype_size(DType::I8), 1u);
  EXPECT_EQ(dtype_size(DType::U8), 1u);
  EXPECT_EQ(dtype_size(DType::BOOL), 1u);
}

TEST(Safetensors, NumelOfScalarIsOne) {
  TensorData scalar;
  EXPECT_EQ(scalar.numel(), 1);
  scalar.shape = {2, 0, 7};
  EXPECT_EQ(scalar.numel(), 0);
  scalar.shape = {2, 3, 7};
  EXPECT_EQ(scalar.numel(), 42);
  scalar.shape = {2, -1};
  EXPECT_THROW(scalar.numel(), Error);
}

TEST(Safetensors, RoundTripEveryDType) {
  const SafetensorsFile file = sample_file();
  const std::vector<uint8_t> bytes = serialize_safetensors(file);
  expect_same(file, parse_safetensors(bytes, "memory"));
  // Serialization is deterministic.
  EXPECT_EQ(bytes, serialize_safetensors(parse_safetensors(bytes, "memory")));
}

TEST(Safetensors, RoundTripEmptyFile) {
  const SafetensorsFile empty;
  const std::vector<uint8_t> bytes = serialize_safetensors(empty);
  const SafetensorsFile back = parse_safetensors(bytes, "memory");
  EXPECT_TRUE(back.tensors.empty());
  EXPECT_TRUE(back.metadata.empty());
}

TEST(Safetensors, RoundTripConvertedValues) {
  SafetensorsFile file;
  file.tensors["f32"] = TensorData::from_f32({2, 2}, {1.5f, -2.0f, 0.0f, 1e30f});
  file.tensors["f64"] = TensorData::from_f64({3}, {1e-300, -3.25, 7.0});
  file.tensors["i64"] = TensorData::from_i64({}, {std::numeric_limits<int64_t>::min()});  // scalar
  file.tensors["none"] = TensorData::from_f32({0}, {});
  const SafetensorsFile back = parse_safetensors(serialize_safetensors(file), "memory");

  EXPECT_EQ(back.tensors.at("f32").to_f32(), (std::vector<float>{1.5f, -2.0f, 0.0f, 1e30f}));
  EXPECT_EQ(back.tensors.at("f32").to_f64(), (std::vector<double>{1.5, -2.0, 0.0, 1e30f}));
  EXPECT_EQ(back.tensors.at("f64").to_f64(), (std::vector<double>{1e-300, -3.25, 7.0}));
  EXPECT_EQ(back.tensors.at("f64").to_f32(), (std::vector<float>{0.0f, -3.25f, 7.0f}));
  EXPECT_EQ(back.tensors.at("i64").to_i64(),
            (std::vector<int64_t>{std::numeric_limits<int64_t>::min()}));
  EXPECT_EQ(back.tensors.at("i64").shape, std::vector<int64_t>{});
  EXPECT_TRUE(back.tensors.at("none").to_f32().empty());
}

TEST(Safetensors, IntegerConversions) {
  auto raw = [](DType dtype, std::vector<uint8_t> bytes) {
    TensorData t;
    t.dtype = dtype;
    t.shape = {static_cast<int64_t>(bytes.size() / dtype_size(dtype))};
    t.bytes = std::move(bytes);
    return t;
  };
  EXPECT_EQ(raw(DType::I32, {0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0, 0, 0}).to_i64(),
            (std::vector<int64_t>{-1, 2}));
  EXPECT_EQ(raw(DType::I16, {0x00, 0x80, 0x34, 0x12}).to_i64(),
            (std::vector<int64_t>{-32768, 0x1234}));
  EXPECT_EQ(raw(DType::I8, {0x80, 0x7F}).to_i64(), (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(raw(DType::U8, {0x80, 0xFF}).to_i64(), (std::vector<int64_t>{128, 255}));
  EXPECT_EQ(raw(DType::BOOL, {0, 1, 2}).to_i64(), (std::vector<int64_t>{0, 1, 1}));
}

TEST(Safetensors, HalfAndBFloat16Conversion) {
  const std::vector<uint16_t> halves = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF,
                                        0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00};
  TensorData half;
  half.dtype = DType::F16;
  half.shape = {static_cast<int64_t>(halves.size())};
  half.bytes.resize(halves.size() * 2);
  std::memcpy(half.bytes.data(), halves.data(), half.bytes.size());
  const std::vector<float> f = half.to_f32("half");
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -2.0f);
  EXPECT_EQ(f[2], 65504.0f);
  EXPECT_EQ(f[3], std::ldexp(1.0f, -24));            // smallest subnormal
  EXPECT_EQ(f[4], 1023.0f * std::ldexp(1.0f, -24));  // largest subnormal
  EXPECT_EQ(f[5], 0.0f);
  EXPECT_FALSE(std::signbit(f[5]));
  EXPECT_EQ(f[6], 0.0f);
  EXPECT_TRUE(std::signbit(f[6]));
  EXPECT_EQ(f[7], std::numeric_limits<float>::infinity());
  EXPECT_EQ(f[8], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f[9]));
  const std::vector<double> d = half.to_f64("half");
  EXPECT_EQ(d[2], 65504.0);
  EXPECT_EQ(d[3], std::ldexp(1.0, -24));

  const std::vector<uint16_t> bf16s = {0x3F80, 0xC0A0, 0x7F80, 0x0001};
  TensorData bf16;
  bf16.dtype = DType::BF16;
  bf16.shape = {2, 2};
  bf16.bytes.resize(8);
  std::memcpy(bf16.bytes.data(), bf16s.data(), 8);
  const std::vector<float> b = bf16.to_f32();
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -5.0f);
  EXPECT_EQ(b[2], std::numeric_limits<float>::infinity());
  EXPECT_EQ(b[3], std::bit_cast<float>(uint32_t{0x00010000}));
}

TEST(Safetensors, ConversionRejectsWrongDType) {
  const TensorData floats = TensorData::from_f32({2}, {1.0f, 2.0f});
  try {
    floats.to_i64("router.weight");
    ADD_FAILURE() << "to_i64 on F32 succeeded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("router.weight"));
    EXPECT_THAT(e.what(), HasSubstr("F32"));
  }
  const TensorData ints = TensorData::from_i64({1}, {3});
  try {
    ints.to_f32("expert_ids");
    ADD_FAILURE() << "to_f32 on I64 succeeded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("expert_ids"));
    EXPECT_THAT(e.what(), HasSubstr("I64"));
  }
  EXPECT_THROW(ints.to_f64(), Error);
}

TEST(Safetensors, ConversionRejectsInconsistentBytes) {
  TensorData broken = TensorData::from_f32({2}, {1.0f, 2.0f});
  broken.bytes.pop_back();
  EXPECT_THROW(broken.to_f32("broken"), Error);
  SafetensorsFile file;
  file.tensors["broken"] = broken;
  EXPECT_THROW(serialize_safetensors(file), Error);
}

TEST(Safetensors, FromValuesRejectsShapeMismatch) {
  EXPECT_THROW(TensorData::from_f32({2, 3}, {1.0f, 2.0f}), Error);
  EXPECT_THROW(TensorData::from_f64({}, {}), Error);  // a scalar needs one value
  EXPECT_THROW(TensorData::from_i64({-1}, {1}), Error);
  EXPECT_NO_THROW(TensorData::from_i64({}, {7}));
}

TEST(Safetensors, WriterRefusesReservedName) {
  SafetensorsFile file;
  file.tensors["__metadata__"] = TensorData::from_f32({1}, {1.0f});
  EXPECT_THROW(serialize_safetensors(file), Error);
}

TEST(Safetensors, SerializedLayoutIsAlignedSortedAndCompact) {
  SafetensorsFile file;
  file.tensors["b"] = TensorData::from_f32({3}, {1, 2, 3});
  file.tensors["a"] = TensorData::from_i64({1}, {9});
  const std::vector<uint8_t> bytes = serialize_safetensors(file);
  const uint64_t n = header_size_of(bytes);
  EXPECT_EQ((8 + n) % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 8 + 12);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<ptrdiff_t>(n));
  EXPECT_EQ(header.find("__metadata__"), std::string::npos);
  EXPECT_EQ(header.find('\n'), std::string::npos);
  EXPECT_THAT(header, HasSubstr(R"("a":{"data_offsets":[0,8],"dtype":"I64","shape":[1]})"));
  EXPECT_THAT(header, HasSubstr(R"("b":{"data_offsets":[8,20],"dtype":"F32","shape":[3]})"));
  // Data follows in name order: a's int64 then b's floats.
  EXPECT_EQ(bytes[8 + n], 9);
  float first_b = 0;
  std::memcpy(&first_b, bytes.data() + 8 + n + 8, 4);
  EXPECT_EQ(first_b, 1.0f);
}

TEST(Safetensors, ParsesPythonStyleFile) {
  // As written by Python: keys in insertion order, no padding, unaligned header length, spaces
  // after separators.
  const std::string header =
      R"({"__metadata__": {"format": "pt"}, "w": {"dtype": "F16", "shape": [2], )"
      R"("data_offsets": [0, 4]}, "ids": {"dtype": "I64", "shape": [], "data_offsets": [4, 12]}, )"
      R"("b": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [12, 14]}})";
  ASSERT_NE(header.size() % 8, 0u);
  const std::vector<uint8_t> data = {0x00, 0x3C, 0x00, 0xC0,              // F16 1, -2
                                     0x05, 0,    0,    0,    0, 0, 0, 0,  // I64 5
                                     0x80, 0x3F};                         // BF16 1
  const SafetensorsFile file = parse_safetensors(make_file(header, data), "python.safetensors");
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(file.tensors.size(), 3u);
  EXPECT_EQ(file.tensors.at("w").to_f32(), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(file.tensors.at("ids").to_i64(), (std::vector<int64_t>{5}));
  EXPECT_EQ(file.tensors.at("b").shape, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(file.tensors.at("b").to_f64(), (std::vector<double>{1.0}));
}

TEST(Safetensors, AcceptsTrailingSpacesAndUnusedData) {
  const std::string header = R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}     )";
  const SafetensorsFile file = parse_safetensors(make_file(header, 5), "m");
  EXPECT_EQ(file.tensors.at("x").bytes.size(), 2u);
}

TEST(Safetensors, ReadAndWriteFiles) {
  const fs::path dir =
      fs::temp_directory_path() / ("switchyard_st_" + std::to_string(::getpid()) + "_readwrite");
  fs::create_directories(dir);
  const std::string path = (dir / "model.safetensors").string();
  const SafetensorsFile file = sample_file();
  write_safetensors(path, file);
  expect_same(file, read_safetensors(path));
  fs::remove_all(dir);

  try {
    read_safetensors(path);
    ADD_FAILURE() << "reading a missing file succeeded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
  }
}

// ---- Malformed files: each must raise Error naming the source and the offending part. ----

struct MalformedCase {
  std::string label;
  std::vector<uint8_t> bytes;
  std::vector<std::string> pieces;  // substrings the error message must contain
};

std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}

std::vector<MalformedCase> malformed_cases() {
  std::vector<uint8_t> huge_header = make_file("{}", 0);
  huge_header[3] = 0x10;  // claims a 256 MiB header
  std::vector<uint8_t> past_end = make_file("{}", 0);
  past_end[0] = 100;
  const std::string deep(100000, '[');

  return {
      {"short_file", {1, 2, 3, 4}, {"shorter than"}},
      {"header_over_limit", huge_header, {"header size", "limit"}},
      {"header_past_end", past_end, {"header size 100"}},
      {"invalid_json", make_file(R"({"a": )", 0), {"not valid JSON"}},
      {"invalid_utf8", make_file("{\"\xff\":1}", 0), {"not valid JSON", "\\xff"}},
      {"header_not_object", make_file("[1,2]", 0), {"must be a JSON object", "array"}},
      {"deep_nesting", make_file(deep, 0), {"nests deeper"}},
      {"duplicate_tensor",
       make_file(R"({"w":)" + entry(R"("U8")", "[1]", "[0,1]") + R"(,"w":)" +
                     entry(R"("U8")", "[1]", "[1,2]") + "}",
                 2),
       {"duplicate key 'w'"}},
      {"entry_not_object", make_file(R"({"w":5})", 0), {"'w'", "object"}},
      {"missing_dtype",
       make_file(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", 1),
       {"'w'", "missing field 'dtype'"}},
      {"missing_shape",
       make_file(R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", 1),
       {"'w'", "missing field 'shape'"}},
      {"missing_offsets",
       make_file(R"({"w":{"dtype":"U8","shape":[1]}})", 1),
       {"'w'", "missing field 'data_offsets'"}},
      {"extra_field",
       make_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"bias":true}})", 1),
       {"'w'", "unknown field 'bias'"}},
      {"dtype_not_string",
       make_file(R"({"w":)" + entry("4", "[1]", "[0,1]") + "}", 1),
       {"'w'", "'dtype'", "4"}},
      {"unknown_dtype",
       make_file(R"({"w":)" + entry(R"("F8_E4M3")", "[1]", "[0,1]") + "}", 1),
       {"'w'", "unknown dtype", "F8_E4M3"}},
      {"shape_not_array",
       make_file(R"({"w":)" + entry(R"("U8")", R"("1")", "[0,1]") + "}", 1),
       {"'w'", "'shape'"}},
      {"shape_float",
       make_file(R"({"w":)" + entry(R"("U8")", "[1.5]", "[0,1]") + "}", 1),
       {"'w'", "'shape'", "1.5"}},
      {"shape_too_big",
       make_file(R"({"w":)" + entry(R"("U8")", "[18446744073709551615]", "[0,1]") + "}", 1),
       {"'w'", "'shape'", "18446744073709551615"}},
      {"shape_negative",
       make_file(R"({"w":)" + entry(R"("U8")", "[2,-3]", "[0,1]") + "}", 1),
       {"'w'", "'shape'", "negative", "-3"}},
      {"shape_overflow",
       make_file(R"({"w":)" + entry(R"("U8")", "[4294967296,4294967296]", "[0,1]") + "}", 1),
       {"'w'", "overflow"}},
      {"byte_size_overflow",
       make_file(R"({"w":)" + entry(R"("F64")", "[4611686018427387904]", "[0,1]") + "}", 1),
       {"'w'", "overflow"}},
      {"offsets_not_array",
       make_file(R"({"w":)" + entry(R"("U8")", "[1]", "0") + "}", 1),
       {"'w'", "'data_offsets'"}},
      {"offsets_three",
       make_file(R"({"w":)" + entry(R"("U8")", "[1]", "[0,1,2]") + "}", 1),
       {"'w'", "'data_offsets'"}},
      {"offsets_negative",
       make_file(R"({"w":)" + entry(R"("U8")", "[1]", "[-1,0]") + "}", 1),
       {"'w'", "'data_offsets'", "-1"}},
      {"offsets_float",
       make_file(R"({"w":)" + entry(R"("U8")", "[1]", "[0,1.0]") + "}", 1),
       {"'w'", "'data_offsets'"}},
      {"offsets_string",
       make_file(R"({"w":)" + entry(R"("U8")", "[1]", R"([0,"1"])") + "}", 1),
       {"'w'", "'data_offsets'"}},
      {"offsets_reversed",
       make_file(R"({"w":)" + entry(R"("U8")", "[0]", "[1,0]") + "}", 1),
       {"'w'", "'data_offsets'", "after"}},
      {"offsets_past_data",
       make_file(R"({"w":)" + entry(R"("U8")", "[4]", "[0,4]") + "}", 3),
       {"'w'", "'data_offsets'", "beyond", "3-byte"}},
      {"offsets_huge",
       make_file(
           R"({"w":)" + entry(R"("U8")", "[1]", "[9223372036854775806,9223372036854775807]") + "}",
           3),
       {"'w'", "beyond"}},
      {"size_mismatch",
       make_file(R"({"w":)" + entry(R"("F32")", "[2,2]", "[0,12]") + "}", 16),
       {"'w'", "spans 12 bytes", "needs 16"}},
      {"overlap",
       make_file(R"({"a":)" + entry(R"("F32")", "[2]", "[0,8]") + R"(,"b":)" +
                     entry(R"("U8")", "[4]", "[6,10]") + "}",
                 10),
       {"'a'", "'b'", "overlapping"}},
      {"metadata_not_object", make_file(R"({"__metadata__":["x"]})", 0), {"__metadata__"}},
      {"metadata_value_not_string",
       make_file(R"({"__metadata__":{"epochs":3}})", 0),
       {"__metadata__", "'epochs'", "string"}},
  };
}

// Keeps test names and failure output readable instead of dumping the struct's bytes.
void PrintTo(const MalformedCase& c, std::ostream* os) {
  *os << c.label;
}

class MalformedTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedTest, RaisesError) {
  expect_parse_error(GetParam().bytes, GetParam().pieces);
}

INSTANTIATE_TEST_SUITE_P(Safetensors, MalformedTest, ::testing::ValuesIn(malformed_cases()),
                         [](const auto& param_info) { return param_info.param.label; });

TEST(Safetensors, ZeroSizeTensorsMayShareOffsets) {
  const std::string header = R"({"a":)" + entry(R"("F32")", "[0]", "[4,4]") + R"(,"b":)" +
                             entry(R"("F32")", "[1]", "[0,4]") + R"(,"c":)" +
                             entry(R"("I8")", "[3,0]", "[2,2]") + "}";
  const SafetensorsFile file = parse_safetensors(make_file(header, 4), "m");
  EXPECT_EQ(file.tensors.size(), 3u);
}

// ---- Randomised corruption: parsing never crashes and only ever throws switchyard::Error. ----

uint64_t corruption_seed() {
  return testing_support::test_base_seed();
}

// Writes the header length field so that it matches the file's real header length.
void set_header_size(std::vector<uint8_t>& file, uint64_t size) {
  for (int i = 0; i < 8; ++i) file[static_cast<size_t>(i)] = static_cast<uint8_t>(size >> (8 * i));
}

std::vector<uint8_t> corrupt(std::vector<uint8_t> file, std::mt19937_64& rng) {
  auto pick = [&](size_t bound) {  // uniform in [0, bound)
    return bound == 0 ? size_t{0} : std::uniform_int_distribution<size_t>(0, bound - 1)(rng);
  };
  const uint64_t header_size = header_size_of(file);
  const size_t header_end = 8 + static_cast<size_t>(header_size);
  static constexpr char kJsonChars[] = "{}[]:,\" -+.eE0123456789_abcdfnlrstu\\";
  const int mutations = 1 + static_cast<int>(pick(3));
  for (int m = 0; m < mutations && !file.empty(); ++m) {
    switch (pick(8)) {
      case 0:  // flip a bit anywhere
        file[pick(file.size())] ^= static_cast<uint8_t>(1u << pick(8));
        break;
      case 1:  // random byte in the header (most interesting region)
        if (header_end <= file.size() && header_size > 0) {
          file[8 + pick(header_size)] = static_cast<uint8_t>(pick(256));
        }
        break;
      case 2:  // truncate
        file.resize(pick(file.size() + 1));
        break;
      case 3: {  // insert garbage somewhere
        const size_t at = pick(file.size() + 1);
        std::vector<uint8_t> junk(1 + pick(16));
        for (uint8_t& b : junk) b = static_cast<uint8_t>(pick(256));
        file.insert(file.begin() + static_cast<ptrdiff_t>(at), junk.begin(), junk.end());
        break;
      }
      case 4:  // replace a header character with a JSON-ish one, keeping the length valid
        if (header_end <= file.size() && header_size > 0) {
          file[8 + pick(header_size)] =
              static_cast<uint8_t>(kJsonChars[pick(sizeof kJsonChars - 1)]);
        }
        break;
      case 5:  // tweak a digit in the header (offsets and shapes)
        if (header_end <= file.size()) {
          for (int tries = 0; tries < 32; ++tries) {
            const size_t at = 8 + pick(header_size);
            if (at < header_end && file[at] >= '0' && file[at] <= '9') {
              file[at] = static_cast<uint8_t>('0' + pick(10));
              if (pick(4) == 0) file.insert(file.begin() + static_cast<ptrdiff_t>(at), '9');
              break;
            }
          }
        }
        break;
      case 6:  // delete a header span and fix the length so the JSON (not the framing) breaks
        if (header_end <= file.size() && header_size > 1) {
          const size_t at = 8 + pick(header_size);
          const size_t len = std::min<size_t>(1 + pick(8), header_end - at);
          file.erase(file.begin() + static_cast<ptrdiff_t>(at),
                     file.begin() + static_cast<ptrdiff_t>(at + len));
          set_header_size(file, header_size - len);
        }
        break;
      default:  // random header length field
        if (file.size() >= 8) {
          set_header_size(file, pick(2) == 0 ? pick(file.size()) : rng());
        }
        break;
    }
  }
  return file;
}

TEST(Safetensors, RandomCorruptionOnlyThrowsError) {
  const uint64_t seed = corruption_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) +
               " (rerun with SWITCHYARD_TEST_SEED=" + std::to_string(seed) + ")");
  // Also printed up front: a sanitizer abort kills the process before SCOPED_TRACE can report.
  std::cout << "corruption seed " << seed << std::endl;
  std::mt19937_64 rng(seed);

  SafetensorsFile small;
  small.tensors["router.weight"] = TensorData::from_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  small.tensors["expert_ids"] = TensorData::from_i64({3}, {0, 7, 1});
  small.tensors["scale"] = patterned(DType::BF16, {}, 9);
  small.tensors["gate"] = patterned(DType::F16, {2, 2}, 3);
  small.tensors["mask"] = patterned(DType::BOOL, {4}, 1);
  small.tensors["none"] = patterned(DType::I16, {0, 3}, 1);
  small.metadata = {{"format", "pt"}, {"experts", "8"}};
  const std::vector<uint8_t> valid = serialize_safetensors(small);
  const std::vector<uint8_t> python_style = make_file(
      R"({"__metadata__": {"a": "b"}, "x": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},)"
      R"( "y": {"dtype": "I32", "shape": [1], "data_offsets": [4, 8]}})",
      std::vector<uint8_t>{0, 0x3C, 0, 0xC0, 1, 2, 3, 4});

  constexpr int kIterations = 4000;
  int parsed = 0;
  for (int i = 0; i < kIterations; ++i) {
    const std::vector<uint8_t> bytes = corrupt(i % 2 == 0 ? valid : python_style, rng);
    try {
      const SafetensorsFile file = parse_safetensors(bytes, "fuzz");
      ++parsed;
      // Whatever parses must be internally consistent and round-trip.
      for (const auto& [name, tensor] : file.tensors) {
        ASSERT_EQ(tensor.bytes.size(),
                  static_cast<size_t>(tensor.numel()) * dtype_size(tensor.dtype))
            << "iteration " << i << " tensor " << name;
      }
      const SafetensorsFile again = parse_safetensors(serialize_safetensors(file), "again");
      ASSERT_EQ(again.tensors.size(), file.tensors.size()) << "iteration " << i;
    } catch (const Error&) {
      // Expected for most corruptions.
    } catch (const std::exception& e) {
      FAIL() << "iteration " << i << ": unexpected exception: " << e.what();
    } catch (...) {
      FAIL() << "iteration " << i << ": unexpected non-standard exception";
    }
  }
  // Sanity: the mutations are neither all fatal nor all harmless.
  EXPECT_GT(parsed, 0);
  EXPECT_LT(parsed, kIterations);
}

// ---- Atomic file writes ----

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("switchyard_fu_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Names of leftover temporary files in the test folder.
  std::vector<std::string> temp_files() const {
    std::vector<std::string> names;
    for (const auto& item : fs::directory_iterator(dir_)) {
      const std::string name = item.path().filename().string();
      if (name.find(".tmp.") != std::string::npos) names.push_back(name);
    }
    return names;
  }

  fs::path dir_;
};

TEST_F(FileUtilTest, WriteCreatesAndReadsBack) {
  const std::string path = (dir_ / "new.txt").string();
  write_file_atomic(path, std::string("hello\nworld"));
  EXPECT_EQ(read_file_text(path), "hello\nworld");
  const std::vector<uint8_t> bytes = {0, 1, 2, 255};
  write_file_atomic(path, std::span<const uint8_t>(bytes));
  EXPECT_EQ(read_file_bytes(path), bytes);
  write_file_atomic(path, std::string());
  EXPECT_TRUE(read_file_bytes(path).empty());
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(FileUtilTest, WriteReplacesExistingFile) {
  const std::string path = (dir_ / "config.json").string();
  write_file_atomic(path, std::string(10000, 'x'));
  write_file_atomic(path, std::string("short"));
  EXPECT_EQ(read_file_text(path), "short");
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(FileUtilTest, ReadMissingFileNamesPath) {
  const std::string path = (dir_ / "missing.bin").string();
  try {
    read_file_bytes(path);
    ADD_FAILURE() << "read of a missing file succeeded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr(std::strerror(ENOENT)));
  }
  EXPECT_THROW(read_file_text(path), Error);
  EXPECT_THROW(read_file_bytes(dir_.string()), Error);  // a directory is not a file
}

TEST_F(FileUtilTest, WriteIntoMissingDirectoryThrowsAndLeavesNoTemp) {
  const std::string path = (dir_ / "no_such_dir" / "out.bin").string();
  try {
    write_file_atomic(path, std::string("data"));
    ADD_FAILURE() << "write into a missing directory succeeded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
  }
  EXPECT_FALSE(fs::exists(dir_ / "no_such_dir"));
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(FileUtilTest, WriteOverDirectoryKeepsItIntact) {
  const fs::path target = dir_ / "taken";
  fs::create_directories(target);
  write_file_atomic((target / "inner.txt").string(), std::string("keep me"));
  try {
    write_file_atomic(target.string(), std::string("data"));
    ADD_FAILURE() << "write over a directory succeeded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(target.string()));
  }
  EXPECT_TRUE(fs::is_directory(target));
  EXPECT_EQ(read_file_text((target / "inner.txt").string()), "keep me");
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(FileUtilTest, FailedWriteKeepsOriginalContent) {
  // Make write() itself fail part-way with EFBIG by capping the file size; unlike permission
  // tricks this also works when the tests run as root.
  const std::string path = (dir_ / "weights.bin").string();
  write_file_atomic(path, std::string("original"));

  struct rlimit old_limit {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  struct rlimit capped = old_limit;
  capped.rlim_cur = 64 * 1024;
  if (old_limit.rlim_max != RLIM_INFINITY && old_limit.rlim_max < capped.rlim_cur) {
    GTEST_SKIP() << "file size limit already below the test size";
  }
  auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of being killed
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &capped), 0);
  bool threw = false;
  try {
    write_file_atomic(path, std::string(1024 * 1024, 'n'));
  } catch (const Error& e) {
    threw = true;
    EXPECT_THAT(e.what(), HasSubstr(path));
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  ::signal(SIGXFSZ, old_handler);

  EXPECT_TRUE(threw);
  EXPECT_EQ(read_file_text(path), "original");
  EXPECT_TRUE(temp_files().empty());
}

}  // namespace
}  // namespace switchyard

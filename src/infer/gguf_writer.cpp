// The GGUF v3 writer: metadata and tensor infos in memory, tensor data streamed from producers
// into a temporary file that is renamed over the target once complete.
#include <fcntl.h>
#include <fmt/ranges.h>
#include <switchyard/error.h>
#include <switchyard/infer/gguf.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace switchyard::infer {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint32_t kVersion = 3;

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  // resize + memcpy, not insert: GCC 12 reports a false stringop-overflow for small inserts.
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));  // the host is little-endian (x86-64, aarch64)
}

void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  const size_t at = out.size();
  out.resize(at + n);
  if (n > 0) std::memcpy(out.data() + at, p, n);
}

void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  put_bytes(out, s.data(), s.size());
}

uint64_t align_up(uint64_t offset, uint64_t alignment) {
  return offset + (alignment - offset % alignment) % alignment;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

uint16_t float_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u, abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return uint16_t(sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (abs < 0x38800000u) {  // below 2^-14: a subnormal half, in units of 2^-24
    float a;
    std::memcpy(&a, &abs, 4);
    return uint16_t(sign | uint32_t(std::nearbyint(a * 16777216.0f)));
  }
  uint32_t h = ((((abs >> 23) - 127 + 15) << 10) | ((abs & 0x7fffffu) >> 13));
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry rounds up to inf
  return uint16_t(sign | h);
}

// Buffered writes to a file descriptor; errors name the target path.
class FileOut {
 public:
  FileOut(int fd, std::string path) : fd_(fd), path_(std::move(path)) { buf_.reserve(kBuf); }
  void bytes(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    if (buf_.size() + n > kBuf) flush();
    if (n >= kBuf) {
      raw(b, n);
    } else {
      put_bytes(buf_, b, n);
    }
    written_ += n;
  }
  void zeros(size_t n) {
    static const uint8_t zero[64] = {};
    while (n > 0) {
      const size_t m = std::min(n, sizeof(zero));
      bytes(zero, m);
      n -= m;
    }
  }
  void flush() {
    raw(buf_.data(), buf_.size());
    buf_.clear();
  }
  uint64_t written() const { return written_; }

 private:
  static constexpr size_t kBuf = size_t(1) << 22;
  void raw(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0)
        fail("{}: cannot write: {}", path_, std::system_category().message(errno ? errno : EIO));
      p += w;
      n -= size_t(w);
    }
  }
  int fd_;
  std::string path_;
  std::vector<uint8_t> buf_;
  uint64_t written_ = 0;
};

class Sink final : public GgufTensorSink {
 public:
  Sink(FileOut& out, GgufTensorType type, uint64_t count, const std::string& name)
      : out_(out), type_(type), left_(count), name_(name) {}
  void write(std::span<const float> values) override {
    if (values.size() > left_)
      fail("GGUF tensor '{}': the producer wrote more elements than its shape holds", name_);
    left_ -= values.size();
    if (type_ == GgufTensorType::F32) {
      out_.bytes(values.data(), values.size() * 4);
      return;
    }
    tmp_.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i)
      tmp_[i] = type_ == GgufTensorType::BF16 ? float_to_bf16(values[i]) : float_to_f16(values[i]);
    out_.bytes(tmp_.data(), tmp_.size() * 2);
  }
  uint64_t left() const { return left_; }

 private:
  FileOut& out_;
  GgufTensorType type_;
  uint64_t left_;
  const std::string& name_;
  std::vector<uint16_t> tmp_;
};

template <typename T>
void put_array(std::vector<uint8_t>& payload, GgufValueType elem, std::span<const T> v) {
  put<uint32_t>(payload, uint32_t(elem));
  put<uint64_t>(payload, v.size());
  for (const T& x : v) put<T>(payload, x);
}

}  // namespace

const char* gguf_tensor_type_name(GgufTensorType type) {
  switch (type) {
    case GgufTensorType::F32:
      return "F32";
    case GgufTensorType::F16:
      return "F16";
    case GgufTensorType::BF16:
      return "BF16";
  }
  return "?";
}

size_t gguf_tensor_type_size(GgufTensorType type) {
  return type == GgufTensorType::F32 ? 4 : 2;
}

#define SWITCHYARD_GGUF_SCALAR(fn, T, tag) \
  GgufValue GgufValue::fn(T v) {           \
    GgufValue out;                         \
    out.type_ = GgufValueType::tag;        \
    put<T>(out.payload_, v);               \
    return out;                            \
  }
SWITCHYARD_GGUF_SCALAR(u32, uint32_t, UInt32)
SWITCHYARD_GGUF_SCALAR(i32, int32_t, Int32)
SWITCHYARD_GGUF_SCALAR(u64, uint64_t, UInt64)
SWITCHYARD_GGUF_SCALAR(f32, float, Float32)
#undef SWITCHYARD_GGUF_SCALAR

GgufValue GgufValue::boolean(bool v) {
  GgufValue out;
  out.type_ = GgufValueType::Bool;
  put<uint8_t>(out.payload_, v ? 1 : 0);
  return out;
}

GgufValue GgufValue::str(const std::string& v) {
  GgufValue out;
  out.type_ = GgufValueType::String;
  put_string(out.payload_, v);
  return out;
}

#define SWITCHYARD_GGUF_ARRAY(fn, T, tag)              \
  GgufValue GgufValue::fn(std::span<const T> v) {      \
    GgufValue out;                                     \
    out.type_ = GgufValueType::Array;                  \
    put_array<T>(out.payload_, GgufValueType::tag, v); \
    return out;                                        \
  }
SWITCHYARD_GGUF_ARRAY(u32_array, uint32_t, UInt32)
SWITCHYARD_GGUF_ARRAY(i32_array, int32_t, Int32)
SWITCHYARD_GGUF_ARRAY(u64_array, uint64_t, UInt64)
SWITCHYARD_GGUF_ARRAY(f32_array, float, Float32)
#undef SWITCHYARD_GGUF_ARRAY

GgufValue GgufValue::bool_array(const std::vector<bool>& v) {
  GgufValue out;
  out.type_ = GgufValueType::Array;
  put<uint32_t>(out.payload_, uint32_t(GgufValueType::Bool));
  put<uint64_t>(out.payload_, v.size());
  for (bool b : v) put<uint8_t>(out.payload_, b ? 1 : 0);
  return out;
}

GgufValue GgufValue::str_array(const std::vector<std::string>& v) {
  GgufValue out;
  out.type_ = GgufValueType::Array;
  put<uint32_t>(out.payload_, uint32_t(GgufValueType::String));
  put<uint64_t>(out.payload_, v.size());
  for (const std::string& s : v) put_string(out.payload_, s);
  return out;
}

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || alignment % 8 != 0)
    fail("GGUF: general.alignment = {} must be a positive multiple of 8", alignment);
  kv_.emplace_back("general.alignment", GgufValue::u32(alignment));
}

bool GgufWriter::has(const std::string& key) const {
  for (const auto& [k, v] : kv_)
    if (k == key) return true;
  return false;
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  if (key.empty() || key.size() > 65535) fail("GGUF: key '{}' must be 1 to 65535 bytes long", key);
  for (unsigned char c : key)
    if (c < 0x20 || c > 0x7e) fail("GGUF: key '{}' must be printable ASCII", key);
  if (has(key)) fail("GGUF: key '{}' is set twice", key);
  kv_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, std::vector<int64_t> shape,
                            GgufTensorType type, Producer produce) {
  if (name.empty() || name.size() > 64)
    fail("GGUF: tensor name '{}' must be 1 to 64 bytes long", name);
  if (shape.empty() || shape.size() > 4)
    fail("GGUF: tensor '{}' has {} dimensions (1 to 4)", name, shape.size());
  for (const Tensor& t : tensors_)
    if (t.name == name) fail("GGUF: tensor '{}' is added twice", name);
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 1) fail("GGUF: tensor '{}' has shape [{}]", name, fmt::join(shape, ", "));
    count *= uint64_t(d);
  }
  Tensor t{name, std::move(shape), type, std::move(produce)};
  t.offset = align_up(data_end_, alignment_);
  t.bytes = count * gguf_tensor_type_size(type);
  data_end_ = t.offset + t.bytes;
  tensors_.push_back(std::move(t));
}

uint64_t GgufWriter::data_bytes() const {
  return align_up(data_end_, alignment_);
}

void GgufWriter::write(const std::string& path) const {
  std::vector<uint8_t> head;
  put<uint32_t>(head, kMagic);
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kv_.size());
  for (const auto& [key, value] : kv_) {
    put_string(head, key);
    put<uint32_t>(head, uint32_t(value.type()));
    put_bytes(head, value.payload().data(), value.payload().size());
  }
  for (const Tensor& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, uint32_t(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put<uint64_t>(head, uint64_t(*it));
    put<uint32_t>(head, uint32_t(t.type));
    put<uint64_t>(head, t.offset);
  }

  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string temp = (target.parent_path() / ("." + target.filename().string() + ".tmp." +
                                                    std::to_string(::getpid())))
                               .string();
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot create '{}': {}", path, temp, std::system_category().message(errno));
  bool closed = false;
  try {
    FileOut out(fd, path);
    out.bytes(head.data(), head.size());
    out.zeros(size_t(align_up(head.size(), alignment_) - head.size()));
    const uint64_t data_start = out.written();
    for (const Tensor& t : tensors_) {
      out.zeros(size_t(data_start + t.offset - out.written()));
      Sink sink(out, t.type, t.bytes / gguf_tensor_type_size(t.type), t.name);
      t.produce(sink);
      if (sink.left() != 0)
        fail("GGUF tensor '{}': the producer wrote {} elements too few for shape [{}]", t.name,
             sink.left(), fmt::join(t.shape, ", "));
    }
    out.zeros(size_t(data_start + data_bytes() - out.written()));
    out.flush();
    if (::fsync(fd) != 0) fail("{}: fsync failed: {}", path, std::system_category().message(errno));
    closed = true;
    if (::close(fd) != 0) fail("{}: close failed: {}", path, std::system_category().message(errno));
  } catch (...) {
    if (!closed) ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    fail("{}: cannot rename '{}' over it: {}", path, temp, std::system_category().message(err));
  }
}

}  // namespace switchyard::infer

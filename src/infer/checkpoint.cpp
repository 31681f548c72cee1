#include <fcntl.h>
#include <fmt/ranges.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/infer/checkpoint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/huge_pages.h"

namespace switchyard::infer {

namespace fs = std::filesystem;
using nlohmann::json;

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("{}: cannot stat: {}", path, std::strerror(errno));
  }
  size_ = uint64_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail("{}: cannot map {} bytes: {}", path, size_, std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the map keeps the file
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::release(uint64_t offset, uint64_t bytes) const {
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = (offset + page - 1) / page * page, end = (offset + bytes) / page * page;
  if (end > begin) ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);
}

namespace {

// Adds the tensors of one shard; `expected` (from the index) must all be in it.
void add_shard(const std::string& path, int index, std::vector<std::unique_ptr<MappedFile>>& files,
               std::map<std::string, CheckpointTensor>& tensors) {
  if (!fs::is_regular_file(path)) fail("{}: file not found", path);
  files.push_back(std::make_unique<MappedFile>(path));
  const MappedFile& file = *files.back();
  const SafetensorsHeader header =
      parse_safetensors_header({file.data(), size_t(file.size())}, file.size(), path);
  for (const auto& [name, entry] : header.tensors) {
    CheckpointTensor t;
    t.dtype = entry.dtype;
    t.shape = entry.shape;
    t.data = file.data() + header.data_offset + entry.begin;
    t.bytes = entry.end - entry.begin;
    t.file = index;
    if (!tensors.emplace(name, std::move(t)).second)
      fail("{}: tensor '{}' is also in another shard", path, name);
  }
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& dir) {
  Checkpoint c;
  c.dir_ = dir;
  if (!fs::is_directory(dir)) fail("{}: not a folder (expected a Hugging Face model folder)", dir);
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  if (fs::exists(index_path)) {
    const json index = parse_json_strict(read_file_text(index_path), index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail("{}: field 'weight_map' (an object of tensor name -> shard file) is missing",
           index_path);
    std::map<std::string, std::string> expected;  // tensor -> shard
    std::vector<std::string> shards;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().empty() ||
          file.get<std::string>().find('/') != std::string::npos)
        fail("{}: field 'weight_map.{}' = {} is not a file name in the folder", index_path, name,
             file.dump());
      expected[name] = file.get<std::string>();
      if (std::find(shards.begin(), shards.end(), expected[name]) == shards.end())
        shards.push_back(expected[name]);
    }
    for (const std::string& shard : shards) {
      const std::string path = (fs::path(dir) / shard).string();
      if (!fs::exists(path))
        fail("{}: field 'weight_map' names shard '{}', which is not in {}", index_path, shard, dir);
      add_shard(path, int(c.files_.size()), c.files_, c.tensors_);
    }
    for (const auto& [name, shard] : expected) {
      const auto it = c.tensors_.find(name);
      if (it == c.tensors_.end())
        fail("{}: tensor '{}' is listed in 'weight_map' under '{}' but that shard lacks it",
             index_path, name, shard);
      if (fs::path(c.files_[size_t(it->second.file)]->path()).filename() != shard)
        fail("{}: tensor '{}' is listed under '{}' but is in '{}'", index_path, name, shard,
             c.files_[size_t(it->second.file)]->path());
    }
    for (const auto& [name, t] : c.tensors_)
      if (!expected.count(name))
        fail("{}: tensor '{}' of {} is not in 'weight_map'", index_path, name,
             c.files_[size_t(t.file)]->path());
  } else {
    const std::string path = (fs::path(dir) / "model.safetensors").string();
    if (!fs::exists(path))
      fail("{}: neither model.safetensors nor model.safetensors.index.json is in the folder", dir);
    add_shard(path, 0, c.files_, c.tensors_);
  }
  return c;
}

const CheckpointTensor& Checkpoint::tensor(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    std::vector<std::string> names;
    for (const auto& f : files_) names.push_back(fs::path(f->path()).filename().string());
    fail("{}: tensor '{}' is missing from the checkpoint (read {})", dir_, name,
         fmt::join(names, ", "));
  }
  return it->second;
}

std::string Checkpoint::file_of(const std::string& name) const {
  return files_[size_t(tensor(name).file)]->path();
}

DType Checkpoint::main_dtype() const {
  std::map<DType, uint64_t> bytes;
  for (const auto& [name, t] : tensors_) bytes[t.dtype] += t.bytes;
  DType best = DType::F32;
  uint64_t most = 0;
  for (const auto& [dtype, n] : bytes)
    if (n > most) best = dtype, most = n;
  return best;
}

void Checkpoint::skip(const std::string& name, const std::vector<int64_t>& shape) const {
  const CheckpointTensor& t = tensor(name);
  if (t.shape != shape)
    fail("{}: tensor '{}' has shape [{}], the config needs [{}]", file_of(name), name,
         fmt::join(t.shape, ", "), fmt::join(shape, ", "));
  read_.insert(name);
}

void Checkpoint::read_f32(const std::string& name, const std::vector<int64_t>& shape,
                          float* dst) const {
  skip(name, shape);
  const CheckpointTensor& t = tensor(name);
  if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16)
    fail("{}: tensor '{}' has dtype {}; weights must be F32, BF16 or F16", file_of(name), name,
         dtype_name(t.dtype));
  const size_t count = size_t(t.bytes / dtype_size(t.dtype));
  convert_to_f32(t.dtype, t.data, count, dst);
  const MappedFile& file = *files_[size_t(t.file)];
  file.release(uint64_t(t.data - file.data()), t.bytes);
}

std::vector<float> Checkpoint::read_f32(const std::string& name,
                                        const std::vector<int64_t>& shape) const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> out;
  resize_on_huge_pages(out, static_cast<size_t>(n));
  read_f32(name, shape, out.data());
  return out;
}

void Checkpoint::read_bf16(const std::string& name, const std::vector<int64_t>& shape,
                           uint16_t* dst) const {
  skip(name, shape);
  const CheckpointTensor& t = tensor(name);
  if (t.dtype != DType::BF16)
    fail("{}: tensor '{}' has dtype {}, not BF16", file_of(name), name, dtype_name(t.dtype));
  std::memcpy(dst, t.data, t.bytes);
  const MappedFile& file = *files_[size_t(t.file)];
  file.release(uint64_t(t.data - file.data()), t.bytes);
}

std::vector<uint16_t> Checkpoint::read_bf16(const std::string& name,
                                            const std::vector<int64_t>& shape) const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<uint16_t> out;
  resize_on_huge_pages(out, static_cast<size_t>(n));
  read_bf16(name, shape, out.data());
  return out;
}

std::vector<std::string> Checkpoint::unread() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : tensors_)
    if (!read_.count(name)) out.push_back(name);
  return out;
}

}  // namespace switchyard::infer

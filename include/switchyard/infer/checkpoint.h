// A Hugging Face model folder's weights: model.safetensors, or shards listed by
// model.safetensors.index.json, memory-mapped read-only. Tensors are validated when the folder is
// opened and converted to float32 when the model reads them, so the file is never read into memory
// twice; the pages of a tensor are released once it has been read.
#pragma once

#include <switchyard/safetensors.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace switchyard::infer {

// A read-only memory map of one file (closed on destruction).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tells the kernel the pages of [offset, offset + bytes) are not needed any more.
  void release(uint64_t offset, uint64_t bytes) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

struct CheckpointTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the map of `file`
  uint64_t bytes = 0;
  int file = 0;  // index into Checkpoint::files()
};

class Checkpoint {
 public:
  // Opens `dir`: model.safetensors.index.json when present (every shard it names must exist and
  // every tensor must be in the shard the index names), else model.safetensors. Errors name the
  // folder, the file, the tensor and the field.
  static Checkpoint open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const CheckpointTensor& tensor(const std::string& name) const;
  const std::map<std::string, CheckpointTensor>& tensors() const { return tensors_; }
  std::string file_of(const std::string& name) const;
  // The dtype most weights have (by bytes): the file's compute dtype.
  DType main_dtype() const;

  // Converts tensor `name` into dst (float32), checking that its shape is `shape`; marks it read.
  void read_f32(const std::string& name, const std::vector<int64_t>& shape, float* dst) const;
  std::vector<float> read_f32(const std::string& name, const std::vector<int64_t>& shape) const;
  // The raw bits of a BF16 tensor (an Error for another dtype), shape checked, marked read.
  void read_bf16(const std::string& name, const std::vector<int64_t>& shape, uint16_t* dst) const;
  std::vector<uint16_t> read_bf16(const std::string& name, const std::vector<int64_t>& shape) const;
  // Checks the shape of a tensor the model does not use (a disabled expert) and marks it read.
  void skip(const std::string& name, const std::vector<int64_t>& shape) const;
  // Tensors never read: a checkpoint with extra tensors is an error after loading.
  std::vector<std::string> unread() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, CheckpointTensor> tensors_;
  mutable std::set<std::string> read_;
};

}  // namespace switchyard::infer

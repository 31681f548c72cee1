#include "switchyard/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

#include "switchyard/error.h"

namespace switchyard {
namespace {

// Thread-safe equivalent of strerror(err).
std::string errno_text(int err) {
  return std::system_category().message(err);
}

// Closes a descriptor on scope exit unless release() was called.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// Best effort: makes a completed rename durable. Some filesystems refuse fsync on directories,
// and the data itself is already safe, so errors are ignored.
void sync_parent_directory(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) parent = ".";
  const int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Cleans up after a failed atomic write: closes `fd` (if still open) and removes the temporary
// file, so neither a stray file nor a changed target is left behind.
[[noreturn]] void abandon_write(const std::string& path, const std::string& temp, int fd,
                                const char* step, int err) {
  if (fd >= 0) ::close(fd);
  ::unlink(temp.c_str());
  fail("cannot write '{}': {} failed: {}", path, step, errno_text(err));
}

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open '{}': {}", path, errno_text(errno));
  FdGuard guard(fd);

  // The size from fstat is only a hint (the file may change, or be a pipe); read until EOF.
  // The extra byte lets the common case see EOF without growing the buffer.
  size_t capacity = 64 * 1024;
  struct stat info {};
  if (::fstat(fd, &info) == 0 && S_ISREG(info.st_mode)) {
    capacity = static_cast<size_t>(info.st_size) + 1;
  }
  std::vector<uint8_t> bytes(capacity);
  size_t used = 0;
  for (;;) {
    if (used == bytes.size()) bytes.resize(bytes.size() * 2);
    const ssize_t got = ::read(fd, bytes.data() + used, bytes.size() - used);
    if (got < 0) {
      if (errno == EINTR) continue;
      fail("cannot read '{}': {}", path, errno_text(errno));
    }
    if (got == 0) break;
    used += static_cast<size_t>(got);
  }
  bytes.resize(used);
  return bytes;
}

std::string read_file_text(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  // The pid keeps processes apart; the counter keeps threads of one process apart, so two
  // concurrent writers never share (and interleave into) one temporary file.
  static std::atomic<unsigned> counter{0};
  const std::string temp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter++);

  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    fail("cannot write '{}': cannot create temporary file '{}': {}", path, temp, errno_text(errno));
  }
  FdGuard guard(fd);

  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t wrote = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      abandon_write(path, temp, guard.release(), "write", errno);
    }
    done += static_cast<size_t>(wrote);
  }
  if (::fsync(fd) != 0) abandon_write(path, temp, guard.release(), "fsync", errno);
  // close() can report deferred write errors (e.g. on network filesystems).
  if (::close(guard.release()) != 0) abandon_write(path, temp, -1, "close", errno);
  if (::rename(temp.c_str(), path.c_str()) != 0) abandon_write(path, temp, -1, "rename", errno);
  sync_parent_directory(path);
}

void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace switchyard

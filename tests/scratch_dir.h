// Shared by the tests that write files or read the real LLM-routing data: a scratch folder per
// test (removed at the end), the message of an expected error, and the location of
// ../shared/data/llm-routing.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

namespace switchyard::testing_support {

class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = std::filesystem::temp_directory_path() /
            fmt::format("switchyard_{}_{}_{}", info->test_suite_name(), info->name(), ::getpid());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
  }
  ~ScratchDir() { std::filesystem::remove_all(root_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string path(const std::string& name) const { return (root_ / name).string(); }
  // Writes `text` to root/name atomically (creating sub-folders) and returns the path.
  std::string write(const std::string& name, const std::string& text) const {
    std::filesystem::create_directories((root_ / name).parent_path());
    write_file_atomic(path(name), text);
    return path(name);
  }
  const std::filesystem::path& root() const { return root_; }

 private:
  std::filesystem::path root_;
};

// The message of the switchyard::Error `body` throws, or "<no error>".
inline std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

inline std::filesystem::path llm_routing_data_dir() {
  return std::filesystem::path(SWITCHYARD_SOURCE_DIR) / ".." / "shared" / "data" / "llm-routing";
}

}  // namespace switchyard::testing_support

#define SKIP_WITHOUT_LLM_DATA()                                                        \
  if (!std::filesystem::exists(switchyard::testing_support::llm_routing_data_dir())) { \
    GTEST_SKIP() << "real routing data absent at "                                     \
                 << switchyard::testing_support::llm_routing_data_dir().string()       \
                 << " (expected ../shared/data/llm-routing beside the repository)";    \
  }

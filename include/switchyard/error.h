// Errors raised by switchyard's front end. Every message names the op or file, the field and the
// value.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace switchyard {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace switchyard

#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace switchyard {

std::vector<uint8_t> read_file_bytes(const std::string& path);
std::string read_file_text(const std::string& path);
// Writes `bytes` to a temporary file in the same folder, fsyncs and renames it over `path`, so a
// reader never sees a half-written file and an existing file survives a failed write.
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace switchyard

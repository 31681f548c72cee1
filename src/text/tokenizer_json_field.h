// A value inside tokenizer.json together with its path ("model.merges[3]"), so that every load
// error names the file, the field and the value.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace switchyard::text {

class Field {
 public:
  Field(const nlohmann::json& value, std::string path, const std::string& file)
      : value_(&value), path_(std::move(path)), file_(&file) {}

  const nlohmann::json& json() const { return *value_; }
  const std::string& path() const { return path_; }
  const std::string& file() const { return *file_; }
  // "file: field 'path'", the start of every message about this field.
  std::string where() const;

  // A required member of this object (present and not null).
  Field at(std::string_view key) const;
  // An optional member: nullopt when absent or null.
  std::optional<Field> find(std::string_view key) const;
  // Element `index` of this array.
  Field at(size_t index) const;
  // Member `key` of this object, for keys taken from the object itself.
  Field member(const std::string& key, const nlohmann::json& value) const;

  const nlohmann::json::object_t& object() const;
  const nlohmann::json::array_t& array() const;
  std::string string() const;
  // A string of exactly one character (Metaspace's replacement, Strip's content).
  std::string character() const;
  bool boolean() const;
  int64_t integer() const;
  // A token id: an integer in [0, kMaxId].
  int32_t id() const;

  // Optional members with defaults.
  bool boolean_or(std::string_view key, bool fallback) const;
  std::string string_or(std::string_view key, const std::string& fallback) const;

  [[noreturn]] void fail(std::string_view problem) const;
  // The value, shortened, for messages.
  std::string preview() const;

  // Ids above this are rejected: the id -> token table is dense, and real vocabularies stay
  // well below (the largest have about 260k tokens).
  static constexpr int64_t kMaxId = (int64_t{1} << 21) - 1;

 private:
  const nlohmann::json* value_;
  std::string path_;
  const std::string* file_;
};

}  // namespace switchyard::text

#include "text/tokenizer_json_field.h"

#include <switchyard/error.h>

#include "text/tokenizer_utf8.h"

namespace switchyard::text {

namespace {

// Scalars as JSON, shortened; containers by size (a vocabulary would fill the screen).
std::string preview_of(const nlohmann::json& value) {
  if (value.is_object()) return fmt::format("an object with {} members", value.size());
  if (value.is_array()) return fmt::format("an array of {} elements", value.size());
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  constexpr size_t kLimit = 80;
  if (text.size() > kLimit) text = text.substr(0, kLimit) + "...";
  return text;
}

std::string type_of(const nlohmann::json& value) {
  if (value.is_object() || value.is_array()) return preview_of(value);
  return fmt::format("{} {}", value.type_name(), preview_of(value));
}

}  // namespace

std::string Field::where() const {
  return fmt::format("{}: field '{}'", *file_, path_);
}

std::string Field::preview() const {
  return preview_of(*value_);
}

void Field::fail(std::string_view problem) const {
  switchyard::fail("{} {}", where(), problem);
}

Field Field::at(std::string_view key) const {
  auto found = find(key);
  if (!found) {
    const std::string child = path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
    switchyard::fail("{}: field '{}' is missing", *file_, child);
  }
  return *found;
}

std::optional<Field> Field::find(std::string_view key) const {
  const auto& members = object();
  const auto it = members.find(std::string(key));
  if (it == members.end() || it->second.is_null()) return std::nullopt;
  return member(it->first, it->second);
}

Field Field::member(const std::string& key, const nlohmann::json& value) const {
  return Field(value, path_.empty() ? key : fmt::format("{}.{}", path_, key), *file_);
}

Field Field::at(size_t index) const {
  return Field(array().at(index), fmt::format("{}[{}]", path_, index), *file_);
}

const nlohmann::json::object_t& Field::object() const {
  if (!value_->is_object()) fail(fmt::format("must be an object, got {}", type_of(*value_)));
  return value_->get_ref<const nlohmann::json::object_t&>();
}

const nlohmann::json::array_t& Field::array() const {
  if (!value_->is_array()) fail(fmt::format("must be an array, got {}", type_of(*value_)));
  return value_->get_ref<const nlohmann::json::array_t&>();
}

std::string Field::string() const {
  if (!value_->is_string()) fail(fmt::format("must be a string, got {}", type_of(*value_)));
  return value_->get<std::string>();
}

std::string Field::character() const {
  const std::string value = string();
  if (value.empty() ||
      utf8::sequence_length(static_cast<unsigned char>(value[0])) != value.size()) {
    fail(fmt::format("is \"{}\"; it must be one character", value));
  }
  return value;
}

bool Field::boolean() const {
  if (!value_->is_boolean()) fail(fmt::format("must be true or false, got {}", type_of(*value_)));
  return value_->get<bool>();
}

int64_t Field::integer() const {
  if (value_->is_number_unsigned()) {
    const auto value = value_->get<uint64_t>();
    if (value > static_cast<uint64_t>(INT64_MAX)) fail("is too large");
    return static_cast<int64_t>(value);
  }
  if (!value_->is_number_integer()) {
    fail(fmt::format("must be an integer, got {}", type_of(*value_)));
  }
  return value_->get<int64_t>();
}

int32_t Field::id() const {
  const int64_t value = integer();
  if (value < 0 || value > kMaxId) {
    fail(fmt::format("is {}, outside the token ids 0..{}", value, kMaxId));
  }
  return static_cast<int32_t>(value);
}

bool Field::boolean_or(std::string_view key, bool fallback) const {
  const auto found = find(key);
  return found ? found->boolean() : fallback;
}

std::string Field::string_or(std::string_view key, const std::string& fallback) const {
  const auto found = find(key);
  return found ? found->string() : fallback;
}

}  // namespace switchyard::text

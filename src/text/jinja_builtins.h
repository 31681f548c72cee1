// Filters, tests, attribute and item access, string and dict methods, and global functions of
// the chat-template language, with jinja2's semantics.
#pragma once

#include <string_view>

#include "text/jinja_value.h"

namespace switchyard::text::jinja {

bool is_supported_filter(std::string_view name);
bool is_supported_test(std::string_view name);

// operand | name(args)
Value apply_filter(std::string_view name, const Value& operand, CallArgs& args);
// operand is name(args)
bool apply_test(std::string_view name, const Value& operand, CallArgs& args);

// obj.name: dict items, namespace attributes and str/dict methods; else undefined.
Value get_attribute(const Value& object, const std::string& name, Pos pos);
// obj[key]: list and str indices (negative from the end), dict items; else undefined.
Value get_item(const Value& object, const Value& key, Pos pos);
// obj[start:stop:step] on a list or str; undefined for other values.
Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step,
                Pos pos);

// `item in container`: list and tuple members, substrings, dict keys; nothing is in undefined.
bool contains(const Value& container, const Value& item, Pos pos);

// Iteration as a for loop sees it: list items, str characters, dict keys; undefined is empty.
List iterate(const Value& value, Pos pos);

// raise_exception, range, namespace, dict.
Dict global_functions();

}  // namespace switchyard::text::jinja

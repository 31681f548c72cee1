#include "text/jinja_value.h"

#include <switchyard/error.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "text/jinja_string.h"

namespace switchyard::text::jinja {

void fail_at(Pos pos, const std::string& message) {
  fail("chat template {}:{}: {}", pos.line, pos.column, message);
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

Value Value::list(List items, bool tuple) {
  Value v(std::shared_ptr<const List>(std::make_shared<List>(std::move(items))));
  v.tuple_ = tuple;
  return v;
}

Value Value::dict(Dict d) {
  return Value(std::shared_ptr<const Dict>(std::make_shared<Dict>(std::move(d))));
}

Value Value::make_namespace(Dict attributes) {
  return Value(std::make_shared<Namespace>(Namespace{std::move(attributes)}));
}

Value Value::function(std::string name, std::function<Value(CallArgs&)> call) {
  return Value(std::shared_ptr<const Function>(
      std::make_shared<Function>(Function{std::move(name), std::move(call)})));
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return none();
    case nlohmann::ordered_json::value_t::boolean:
      return boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return integer(j.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) {
        fail("chat template: integer {} in the variables is out of range", u);
      }
      return integer(static_cast<std::int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return number(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      items.reserve(j.size());
      for (const auto& item : j) items.push_back(from_json(item));
      return list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      d.entries.reserve(j.size());
      for (const auto& [key, item] : j.items()) d.entries.emplace_back(key, from_json(item));
      return dict(std::move(d));
    }
    default:
      fail("chat template: variables hold a JSON value of unsupported type '{}'", j.type_name());
  }
}

std::int64_t Value::as_int() const {
  return kind() == Kind::Bool ? static_cast<std::int64_t>(as_bool()) : std::get<std::int64_t>(v_);
}

double Value::as_double() const {
  return kind() == Kind::Float ? std::get<double>(v_) : static_cast<double>(as_int());
}

std::string Value::type_name() const {
  switch (kind()) {
    case Kind::Undefined:
      return "Undefined";
    case Kind::None:
      return "NoneType";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::String:
      return "str";
    case Kind::Sequence:
      return tuple_ ? "tuple" : "list";
    case Kind::Dict:
      return "dict";
    case Kind::Namespace:
      return "Namespace";
    case Kind::Function:
      return "function";
  }
  return "?";
}

bool Value::truthy() const {
  switch (kind()) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
      return as_bool();
    case Kind::Int:
      return as_int() != 0;
    case Kind::Float:
      return as_double() != 0.0;
    case Kind::String:
      return !as_string().empty();
    case Kind::Sequence:
      return !as_list().empty();
    case Kind::Dict:
      return !as_dict().entries.empty();
    case Kind::Namespace:
    case Kind::Function:
      return true;
  }
  return false;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then laid out as Python's repr does: positional for exponents
  // in [-4, 16), else d.ddde+XX.
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  const std::string sci(buf, res.ptr);
  const std::size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exponent = std::atoi(sci.c_str() + e + 1);
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (const char c : mantissa) {
    if (c != '.') digits += c;
  }
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    } else {
      const auto point = static_cast<std::size_t>(exponent) + 1;
      if (digits.size() <= point) {
        out += digits + std::string(point - digits.size(), '0') + ".0";
      } else {
        out += digits.substr(0, point) + "." + digits.substr(point);
      }
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out;
}

std::string Value::str() const {
  switch (kind()) {
    case Kind::Undefined:
      return "";
    case Kind::String:
      return as_string();
    default:
      return repr();
  }
}

std::string Value::repr() const {
  switch (kind()) {
    case Kind::Undefined:
      return "Undefined";
    case Kind::None:
      return "None";
    case Kind::Bool:
      return as_bool() ? "True" : "False";
    case Kind::Int:
      return std::to_string(as_int());
    case Kind::Float:
      return float_repr(as_double());
    case Kind::String:
      return python_repr(as_string());
    case Kind::Sequence: {
      const List& items = as_list();
      std::string out = tuple_ ? "(" : "[";
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += ", ";
        out += items[i].repr();
      }
      if (tuple_ && items.size() == 1) out += ",";
      out += tuple_ ? ")" : "]";
      return out;
    }
    case Kind::Dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : as_dict().entries) {
        if (!first) out += ", ";
        first = false;
        out += python_repr(k) + ": " + v.repr();
      }
      return out + "}";
    }
    case Kind::Namespace:
      return "<Namespace " + Value::dict(as_namespace().attributes).repr() + ">";
    case Kind::Function:
      return "<function " + as_function().name + ">";
  }
  return "";
}

bool Value::same_object(const Value& other) const {
  if (kind() != other.kind()) return false;
  switch (kind()) {
    case Kind::Namespace:
      return std::get<std::shared_ptr<Namespace>>(v_) ==
             std::get<std::shared_ptr<Namespace>>(other.v_);
    case Kind::Function:
      return std::get<std::shared_ptr<const Function>>(v_) ==
             std::get<std::shared_ptr<const Function>>(other.v_);
    default:
      return equal(*this, other);
  }
}

bool equal(const Value& a, const Value& b) {
  using Kind = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::Undefined:
    case Kind::None:
      return true;
    case Kind::String:
      return a.as_string() == b.as_string();
    case Kind::Sequence: {
      if (a.is_tuple() != b.is_tuple()) return false;
      const List& x = a.as_list();
      const List& y = b.as_list();
      return x.size() == y.size() && std::equal(x.begin(), x.end(), y.begin(), equal);
    }
    case Kind::Dict: {
      const Dict& x = a.as_dict();
      const Dict& y = b.as_dict();
      if (x.entries.size() != y.entries.size()) return false;
      for (const auto& [k, v] : x.entries) {
        const Value* other = y.find(k);
        if (!other || !equal(v, *other)) return false;
      }
      return true;
    }
    default:
      return a.same_object(b);
  }
}

int compare(const Value& a, const Value& b, Pos pos) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) {
      return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    }
    const double x = a.as_double();
    const double y = b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    // Byte order of UTF-8 is code point order.
    const int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.kind() == Value::Kind::Sequence && b.kind() == Value::Kind::Sequence &&
      a.is_tuple() == b.is_tuple()) {
    const List& x = a.as_list();
    const List& y = b.as_list();
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equal(x[i], y[i])) return compare(x[i], y[i], pos);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  if (a.is_undefined() || b.is_undefined()) {
    fail_at(pos, (a.is_undefined() ? a : b).undefined_hint());
  }
  fail_at(pos, fmt::format("cannot order '{}' and '{}'", a.type_name(), b.type_name()));
}

namespace {

void write_json(const Value& value, const JsonOptions& options, Pos pos, int depth,
                std::string& out) {
  using Kind = Value::Kind;
  const std::string item_separator = options.separators ? options.separators->first
                                     : options.indent   ? ","
                                                        : ", ";
  const std::string key_separator = options.separators ? options.separators->second : ": ";
  auto newline = [&](int level) {
    if (!options.indent) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += *options.indent;
  };
  switch (value.kind()) {
    case Kind::None:
      out += "null";
      return;
    case Kind::Bool:
      out += value.as_bool() ? "true" : "false";
      return;
    case Kind::Int:
      out += std::to_string(value.as_int());
      return;
    case Kind::Float: {
      const double d = value.as_double();
      out += std::isnan(d)   ? "NaN"
             : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity")
                             : float_repr(d);
      return;
    }
    case Kind::String:
      out += json_quote(value.as_string(), options.ensure_ascii);
      return;
    case Kind::Sequence: {
      const List& items = value.as_list();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += item_separator;
        newline(depth + 1);
        write_json(items[i], options, pos, depth + 1, out);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Kind::Dict: {
      const auto& entries = value.as_dict().entries;
      if (entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> order;
      for (const auto& entry : entries) order.push_back(&entry);
      if (options.sort_keys) {
        std::stable_sort(order.begin(), order.end(),
                         [](const auto* x, const auto* y) { return x->first < y->first; });
      }
      out += '{';
      for (std::size_t i = 0; i < order.size(); ++i) {
        if (i > 0) out += item_separator;
        newline(depth + 1);
        out += json_quote(order[i]->first, options.ensure_ascii);
        out += key_separator;
        write_json(order[i]->second, options, pos, depth + 1, out);
      }
      newline(depth);
      out += '}';
      return;
    }
    case Kind::Undefined:
    case Kind::Namespace:
    case Kind::Function:
      fail_at(pos,
              fmt::format("tojson: object of type {} is not JSON serializable", value.type_name()));
  }
}

}  // namespace

std::string to_json(const Value& value, const JsonOptions& options, Pos pos) {
  std::string out;
  write_json(value, options, pos, 0, out);
  return out;
}

std::optional<Value> CallArgs::take(std::size_t index, std::string_view name) {
  used_positional_.resize(positional.size(), false);
  used_keyword_.resize(keyword.size(), false);
  for (std::size_t i = 0; i < keyword.size(); ++i) {
    if (keyword[i].first == name) {
      used_keyword_[i] = true;
      return keyword[i].second;
    }
  }
  if (index < positional.size()) {
    used_positional_[index] = true;
    return positional[index];
  }
  return std::nullopt;
}

void CallArgs::reject_extra(std::string_view callee) const {
  for (std::size_t i = 0; i < positional.size(); ++i) {
    if (i >= used_positional_.size() || !used_positional_[i]) {
      fail_at(pos, fmt::format("{}() got too many positional arguments", callee));
    }
  }
  for (std::size_t i = 0; i < keyword.size(); ++i) {
    if (i >= used_keyword_.size() || !used_keyword_[i]) {
      fail_at(pos, fmt::format("{}() got an unexpected keyword argument '{}'", callee,
                               keyword[i].first));
    }
  }
}

}  // namespace switchyard::text::jinja

// Runtime values of the chat-template interpreter, with Python's semantics: truthiness, str(),
// repr(), ==, ordering, and json.dumps as transformers' tojson filter calls it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace switchyard::text::jinja {

// A position in the template source, 1-based.
struct Pos {
  int line = 1;
  int column = 1;
};

class Value;
using List = std::vector<Value>;

// Insertion-ordered, like a Python dict.
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);
};

// jinja2's namespace(): the one mutable object a template can create.
struct Namespace {
  Dict attributes;
};

struct CallArgs;
struct Function {
  std::string name;
  std::function<Value(CallArgs&)> call;
};

// jinja2's Undefined; `hint` is the message an error on use reports ("'x' is undefined").
struct Undefined {
  std::string hint;
};
struct None {};

class Value {
 public:
  enum class Kind {
    Undefined,
    None,
    Bool,
    Int,
    Float,
    String,
    Sequence,
    Dict,
    Namespace,
    Function
  };

  Value() : v_(Undefined{}) {}
  static Value undefined(std::string hint) { return Value(Undefined{std::move(hint)}); }
  static Value none() { return Value(None{}); }
  static Value boolean(bool b) { return Value(b); }
  static Value integer(std::int64_t i) { return Value(i); }
  static Value number(double d) { return Value(d); }
  static Value string(std::string s) { return Value(std::move(s)); }
  static Value list(List items, bool tuple = false);
  static Value dict(Dict d);
  static Value make_namespace(Dict attributes);
  static Value function(std::string name, std::function<Value(CallArgs&)> call);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_undefined() const { return kind() == Kind::Undefined; }
  bool is_none() const { return kind() == Kind::None; }
  bool is_string() const { return kind() == Kind::String; }
  // Python's int includes bool.
  bool is_integral() const { return kind() == Kind::Int || kind() == Kind::Bool; }
  bool is_number() const { return is_integral() || kind() == Kind::Float; }
  bool is_tuple() const { return tuple_; }

  bool as_bool() const { return std::get<bool>(v_); }
  std::int64_t as_int() const;  // Int or Bool
  double as_double() const;     // any number
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const List& as_list() const { return *std::get<std::shared_ptr<const List>>(v_); }
  const Dict& as_dict() const { return *std::get<std::shared_ptr<const Dict>>(v_); }
  Namespace& as_namespace() const { return *std::get<std::shared_ptr<Namespace>>(v_); }
  const Function& as_function() const { return *std::get<std::shared_ptr<const Function>>(v_); }
  const std::string& undefined_hint() const { return std::get<Undefined>(v_).hint; }

  // Python's type name, for error messages: 'str', 'int', 'NoneType', 'dict', ...
  std::string type_name() const;

  bool truthy() const;
  std::string str() const;   // str(x); Undefined renders as ""
  std::string repr() const;  // repr(x), as str() shows list and dict members
  bool same_object(const Value& other) const;

 private:
  template <typename T>
  explicit Value(T v) : v_(std::move(v)) {}

  std::variant<Undefined, None, bool, std::int64_t, double, std::string,
               std::shared_ptr<const List>, std::shared_ptr<const Dict>, std::shared_ptr<Namespace>,
               std::shared_ptr<const Function>>
      v_;
  bool tuple_ = false;
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  Pos pos;
  // The keyword argument `name`, else positional[index], else nullopt; consumed ones are not
  // reported by reject_extra.
  std::optional<Value> take(std::size_t index, std::string_view name);
  void reject_extra(std::string_view callee) const;

 private:
  std::vector<bool> used_positional_;
  std::vector<bool> used_keyword_;
};

// Python ==, and the <, <= ... ordering (-1, 0, 1); ordering mismatched types is an Error.
bool equal(const Value& a, const Value& b);
int compare(const Value& a, const Value& b, Pos pos);

std::string float_repr(double d);

struct JsonOptions {
  std::optional<std::string> indent;  // json.dumps(indent=...) as the string per level
  std::optional<std::pair<std::string, std::string>> separators;
  bool sort_keys = false;
  bool ensure_ascii = false;
};
// json.dumps(value, ...); values JSON cannot hold (undefined, namespace, functions) are Errors.
std::string to_json(const Value& value, const JsonOptions& options, Pos pos);

// Reports an error at `pos` in the template: "chat template L:C: message".
[[noreturn]] void fail_at(Pos pos, const std::string& message);

}  // namespace switchyard::text::jinja

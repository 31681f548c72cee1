#include "text/jinja_builtins.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "switchyard/error.h"
#include "text/jinja_string.h"

namespace switchyard::text::jinja {

namespace {

template <std::size_t N>
bool one_of(std::string_view name, const char* const (&names)[N]) {
  return std::find_if(std::begin(names), std::end(names),
                      [&](const char* n) { return name == n; }) != std::end(names);
}

const char* const kFilters[] = {
    "abs",  "capitalize", "count",  "d",     "default", "first", "float",      "int",     "items",
    "join", "last",       "length", "list",  "lower",   "map",   "rejectattr", "replace", "reverse",
    "safe", "selectattr", "string", "title", "tojson",  "trim",  "upper"};

const char* const kTests[] = {
    "boolean", "callable", "defined",  "divisibleby", "eq",   "equalto",   "even",
    "false",   "float",    "ge",       "gt",          "in",   "integer",   "iterable",
    "le",      "lower",    "lt",       "mapping",     "ne",   "none",      "number",
    "odd",     "sameas",   "sequence", "string",      "true", "undefined", "upper"};

// Python str and list methods that exist but are not implemented here: calling one is an
// unsupported construct, not jinja2's "no attribute".
const char* const kOtherStrMethods[] = {
    "casefold",     "center",       "count",        "encode",    "expandtabs", "find",
    "format",       "format_map",   "index",        "isalnum",   "isalpha",    "isascii",
    "isdecimal",    "isdigit",      "isidentifier", "islower",   "isnumeric",  "isprintable",
    "isspace",      "istitle",      "isupper",      "ljust",     "maketrans",  "partition",
    "removeprefix", "removesuffix", "rfind",        "rindex",    "rjust",      "rpartition",
    "rsplit",       "splitlines",   "swapcase",     "translate", "zfill"};
const char* const kListMethods[] = {"append", "clear", "copy",   "count",   "extend", "index",
                                    "insert", "pop",   "remove", "reverse", "sort"};

std::string missing_attribute(const Value& object, std::string_view name) {
  return fmt::format("'{} object' has no attribute '{}'", object.type_name(), name);
}

const std::string& require_string(const Value& v, std::string_view what, Pos pos) {
  if (!v.is_string()) {
    if (v.is_undefined()) fail_at(pos, v.undefined_hint());
    fail_at(pos, fmt::format("{} must be a string, not '{}'", what, v.type_name()));
  }
  return v.as_string();
}

std::int64_t require_int(const Value& v, std::string_view what, Pos pos) {
  if (!v.is_integral()) {
    if (v.is_undefined()) fail_at(pos, v.undefined_hint());
    fail_at(pos, fmt::format("{} must be an integer, not '{}'", what, v.type_name()));
  }
  return v.as_int();
}

std::optional<std::string> optional_string(const std::optional<Value>& v, std::string_view what,
                                           Pos pos) {
  if (!v || v->is_none()) return std::nullopt;
  return require_string(*v, what, pos);
}

std::size_t length(const Value& v, Pos pos) {
  switch (v.kind()) {
    case Value::Kind::Undefined:
      return 0;
    case Value::Kind::String:
      return decode_utf8(v.as_string()).size();
    case Value::Kind::Sequence:
      return v.as_list().size();
    case Value::Kind::Dict:
      return v.as_dict().entries.size();
    default:
      fail_at(pos, fmt::format("object of type '{}' has no len()", v.type_name()));
  }
}

// jinja2's attribute paths for selectattr/map: "a.b.0" looks up a, then b, then item 0.
Value lookup_path(const Value& item, const std::string& path, Pos pos) {
  Value v = item;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
    const bool digits = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    v = get_item(v, digits ? Value::integer(std::stoll(part)) : Value::string(part), pos);
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

// Python's int(str): optional sign and base prefix; jinja2 falls back to int(float(str)).
std::optional<std::int64_t> parse_int(std::string_view text, std::int64_t base) {
  std::string s = strip(text, std::nullopt, StripSide::Both);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  std::size_t i = 0;
  const bool negative = !s.empty() && s[0] == '-';
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) ++i;
  if (s.size() >= i + 2 && s[i] == '0') {
    const char p = static_cast<char>(s[i + 1] | 0x20);
    const std::int64_t prefixed = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
    if (prefixed != 0 && (base == 0 || base == prefixed)) {
      base = prefixed;
      i += 2;
    }
  }
  if (base == 0) base = 10;
  if (base < 2 || base > 36 || i >= s.size()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(s.c_str() + i, &end, static_cast<int>(base));
  if (errno != 0 || end != s.c_str() + s.size() || s[i] == '-' || s[i] == '+') return std::nullopt;
  return negative ? -value : value;
}

std::optional<double> parse_float(std::string_view text) {
  const std::string s = strip(text, std::nullopt, StripSide::Both);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  return d;
}

Value filter_tojson(const Value& operand, CallArgs& args) {
  // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
  JsonOptions options;
  if (const auto v = args.take(0, "ensure_ascii")) options.ensure_ascii = v->truthy();
  if (const auto v = args.take(1, "indent"); v && !v->is_none()) {
    if (v->is_string()) {
      options.indent = v->as_string();
    } else {
      const std::int64_t n = require_int(*v, "tojson indent", args.pos);
      options.indent = std::string(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)), ' ');
    }
  }
  if (const auto v = args.take(2, "separators"); v && !v->is_none()) {
    if (v->kind() != Value::Kind::Sequence || v->as_list().size() != 2) {
      fail_at(args.pos, "tojson separators must be a pair of strings");
    }
    options.separators =
        std::make_pair(require_string(v->as_list()[0], "tojson separator", args.pos),
                       require_string(v->as_list()[1], "tojson separator", args.pos));
  }
  if (const auto v = args.take(3, "sort_keys")) options.sort_keys = v->truthy();
  args.reject_extra("tojson");
  return Value::string(to_json(operand, options, args.pos));
}

Value select_or_reject(const Value& operand, CallArgs& args, bool select) {
  const std::string name = select ? "selectattr" : "rejectattr";
  if (args.positional.empty() || !args.keyword.empty()) {
    fail_at(args.pos, fmt::format("{}() takes an attribute name and an optional test", name));
  }
  const std::string attribute = require_string(args.positional[0], name + " attribute", args.pos);
  std::string test;
  CallArgs test_args;
  test_args.pos = args.pos;
  if (args.positional.size() > 1) {
    test = require_string(args.positional[1], name + " test", args.pos);
    if (!is_supported_test(test)) fail_at(args.pos, fmt::format("unsupported test '{}'", test));
    test_args.positional.assign(args.positional.begin() + 2, args.positional.end());
  }
  List kept;
  for (const Value& item : iterate(operand, args.pos)) {
    const Value v = lookup_path(item, attribute, args.pos);
    CallArgs call = test_args;
    const bool passed = test.empty() ? v.truthy() : apply_test(test, v, call);
    if (passed == select) kept.push_back(item);
  }
  return Value::list(std::move(kept));
}

Value filter_map(const Value& operand, CallArgs& args) {
  List out;
  if (args.positional.empty()) {
    const auto attribute = args.take(0, "attribute");
    if (!attribute) fail_at(args.pos, "map() needs a filter name or attribute=");
    const auto default_value = args.take(1, "default");
    args.reject_extra("map");
    const std::string path = require_string(*attribute, "map attribute", args.pos);
    for (const Value& item : iterate(operand, args.pos)) {
      Value v = lookup_path(item, path, args.pos);
      if (v.is_undefined() && default_value) v = *default_value;
      out.push_back(std::move(v));
    }
    return Value::list(std::move(out));
  }
  const std::string filter = require_string(args.positional[0], "map filter", args.pos);
  if (!is_supported_filter(filter))
    fail_at(args.pos, fmt::format("unsupported filter '{}'", filter));
  CallArgs rest;
  rest.pos = args.pos;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : iterate(operand, args.pos)) {
    CallArgs call = rest;
    out.push_back(apply_filter(filter, item, call));
  }
  return Value::list(std::move(out));
}

Value filter_int(const Value& operand, CallArgs& args) {
  if (operand.is_undefined()) fail_at(args.pos, operand.undefined_hint());
  const Value fallback = args.take(0, "default").value_or(Value::integer(0));
  const std::int64_t base =
      require_int(args.take(1, "base").value_or(Value::integer(10)), "int base", args.pos);
  args.reject_extra("int");
  if (operand.is_integral()) return Value::integer(operand.as_int());
  if (operand.kind() == Value::Kind::Float) {
    const double d = operand.as_double();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return fallback;
    return Value::integer(static_cast<std::int64_t>(d));
  }
  if (operand.is_string()) {
    if (const auto i = parse_int(operand.as_string(), base)) return Value::integer(*i);
    if (const auto d = parse_float(operand.as_string());
        d && std::isfinite(*d) && std::fabs(*d) < 9.2e18) {
      return Value::integer(static_cast<std::int64_t>(*d));
    }
  }
  return fallback;
}

Value filter_float(const Value& operand, CallArgs& args) {
  if (operand.is_undefined()) fail_at(args.pos, operand.undefined_hint());
  const Value fallback = args.take(0, "default").value_or(Value::number(0.0));
  args.reject_extra("float");
  if (operand.is_number()) return Value::number(operand.as_double());
  if (operand.is_string()) {
    if (const auto d = parse_float(operand.as_string())) return Value::number(*d);
  }
  return fallback;
}

Value last_item(const Value& operand, Pos pos) {
  if (operand.is_undefined()) return Value::undefined("No last item, sequence was empty.");
  List items = iterate(operand, pos);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value reversed(const Value& operand, Pos pos) {
  if (operand.is_string()) {
    std::u32string s = decode_utf8(operand.as_string());
    std::reverse(s.begin(), s.end());
    return Value::string(encode_utf8(s));
  }
  List items = iterate(operand, pos);
  std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}

bool is_lower_text(const std::string& s, bool want_lower) {
  bool cased = false;
  for (const char c : s) {
    const bool lower = c >= 'a' && c <= 'z';
    const bool upper = c >= 'A' && c <= 'Z';
    if ((want_lower && upper) || (!want_lower && lower)) return false;
    cased = cased || lower || upper;
  }
  return cased;
}

// Bound str methods: strip, split, startswith, replace, ...
Value string_method(const std::string& s, const std::string& name, CallArgs& args) {
  const Pos pos = args.pos;
  auto done = [&](Value v) {
    args.reject_extra(name);
    return v;
  };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const auto chars = optional_string(args.take(0, "chars"), "strip argument", pos);
    const StripSide side = name == "strip"    ? StripSide::Both
                           : name == "lstrip" ? StripSide::Left
                                              : StripSide::Right;
    return done(Value::string(strip(s, chars, side)));
  }
  if (name == "split") {
    const auto sep = optional_string(args.take(0, "sep"), "split separator", pos);
    const std::int64_t maxsplit =
        require_int(args.take(1, "maxsplit").value_or(Value::integer(-1)), "maxsplit", pos);
    const auto parts = split(s, sep, maxsplit);
    if (!parts) fail_at(pos, "split(): empty separator");
    List items;
    for (const std::string& p : *parts) items.push_back(Value::string(p));
    return done(Value::list(std::move(items)));
  }
  if (name == "startswith" || name == "endswith") {
    const auto affix = args.take(0, "prefix");
    if (!affix) fail_at(pos, fmt::format("{}() takes a string or a tuple of strings", name));
    List candidates = affix->kind() == Value::Kind::Sequence ? affix->as_list() : List{*affix};
    bool match = false;
    for (const Value& c : candidates) {
      const std::string& a = require_string(c, name + " argument", pos);
      match = match || (a.size() <= s.size() &&
                        (name == "startswith" ? s.compare(0, a.size(), a) == 0
                                              : s.compare(s.size() - a.size(), a.size(), a) == 0));
    }
    return done(Value::boolean(match));
  }
  if (name == "replace") {
    const auto old_sub = args.take(0, "old");
    const auto new_sub = args.take(1, "new");
    if (!old_sub || !new_sub) fail_at(pos, "replace() takes old and new strings");
    const std::int64_t count =
        require_int(args.take(2, "count").value_or(Value::integer(-1)), "replace count", pos);
    return done(Value::string(replace(s, require_string(*old_sub, "replace argument", pos),
                                      require_string(*new_sub, "replace argument", pos), count)));
  }
  if (name == "join") {
    const auto items = args.take(0, "iterable");
    if (!items) fail_at(pos, "join() takes an iterable of strings");
    std::string out;
    bool first = true;
    for (const Value& item : iterate(*items, pos)) {
      if (!first) out += s;
      first = false;
      out += require_string(item, "join item", pos);
    }
    return done(Value::string(std::move(out)));
  }
  if (name == "upper") return done(Value::string(ascii_upper(s)));
  if (name == "lower") return done(Value::string(ascii_lower(s)));
  if (name == "title") return done(Value::string(ascii_title(s)));
  if (name == "capitalize") return done(Value::string(ascii_capitalize(s)));
  fail_at(pos, fmt::format("unsupported string method '{}'", name));
}

bool is_string_method(const std::string& name) {
  static const char* const methods[] = {"strip",      "lstrip",   "rstrip",  "split",
                                        "startswith", "endswith", "replace", "join",
                                        "upper",      "lower",    "title",   "capitalize"};
  return one_of(name, methods);
}

Value dict_method(const Value& d, const std::string& name, CallArgs& args) {
  if (name == "get") {
    const auto key = args.take(0, "key");
    if (!key) fail_at(args.pos, "get() takes a key");
    const Value fallback = args.take(1, "default").value_or(Value::none());
    args.reject_extra("get");
    const Value* found = key->is_string() ? d.as_dict().find(key->as_string()) : nullptr;
    return found ? *found : fallback;
  }
  args.reject_extra(name);
  List out;
  for (const auto& [k, v] : d.as_dict().entries) {
    if (name == "keys") {
      out.push_back(Value::string(k));
    } else if (name == "values") {
      out.push_back(v);
    } else {
      out.push_back(Value::list({Value::string(k), v}, true));
    }
  }
  return Value::list(std::move(out));
}

Value bound(const Value& object, const std::string& name) {
  return Value::function(name, [object, name](CallArgs& args) {
    return object.is_string() ? string_method(object.as_string(), name, args)
                              : dict_method(object, name, args);
  });
}

}  // namespace

bool is_supported_filter(std::string_view name) {
  return one_of(name, kFilters);
}
bool is_supported_test(std::string_view name) {
  return one_of(name, kTests);
}

Value apply_filter(std::string_view name, const Value& operand, CallArgs& args) {
  const Pos pos = args.pos;
  auto done = [&](Value v) {
    args.reject_extra(name);
    return v;
  };
  if (name == "tojson") return filter_tojson(operand, args);
  if (name == "length" || name == "count") {
    return done(Value::integer(static_cast<std::int64_t>(length(operand, pos))));
  }
  if (name == "trim") {
    const auto chars = optional_string(args.take(0, "chars"), "trim argument", pos);
    return done(Value::string(strip(operand.str(), chars, StripSide::Both)));
  }
  if (name == "upper") return done(Value::string(ascii_upper(operand.str())));
  if (name == "lower") return done(Value::string(ascii_lower(operand.str())));
  if (name == "title") return done(Value::string(title_words(operand.str())));
  if (name == "capitalize") return done(Value::string(ascii_capitalize(operand.str())));
  if (name == "string") return done(Value::string(operand.str()));
  if (name == "safe") return done(operand);
  if (name == "default" || name == "d") {
    const Value fallback = args.take(0, "default_value").value_or(Value::string(""));
    const bool boolean = args.take(1, "boolean").value_or(Value::boolean(false)).truthy();
    return done(operand.is_undefined() || (boolean && !operand.truthy()) ? fallback : operand);
  }
  if (name == "join") {
    const std::string separator = args.take(0, "d").value_or(Value::string("")).str();
    const auto attribute = optional_string(args.take(1, "attribute"), "join attribute", pos);
    std::string out;
    bool first = true;
    for (const Value& item : iterate(operand, pos)) {
      if (!first) out += separator;
      first = false;
      out += (attribute ? lookup_path(item, *attribute, pos) : item).str();
    }
    return done(Value::string(std::move(out)));
  }
  if (name == "replace") {
    const auto old_sub = args.take(0, "old");
    const auto new_sub = args.take(1, "new");
    if (!old_sub || !new_sub) fail_at(pos, "replace filter takes old and new");
    const auto count = args.take(2, "count");
    const std::int64_t n =
        count && !count->is_none() ? require_int(*count, "replace count", pos) : -1;
    return done(Value::string(replace(operand.str(), old_sub->str(), new_sub->str(), n)));
  }
  if (name == "list") return done(Value::list(iterate(operand, pos)));
  if (name == "first") {
    List items = iterate(operand, pos);
    return done(items.empty() ? Value::undefined("No first item, sequence was empty.")
                              : items.front());
  }
  if (name == "last") return done(last_item(operand, pos));
  if (name == "reverse") return done(reversed(operand, pos));
  if (name == "items") {
    if (operand.is_undefined()) return done(Value::list({}));
    if (operand.kind() != Value::Kind::Dict) {
      fail_at(pos, fmt::format("items filter needs a mapping, not '{}'", operand.type_name()));
    }
    CallArgs none;
    none.pos = pos;
    return done(dict_method(operand, "items", none));
  }
  if (name == "selectattr" || name == "rejectattr") {
    return select_or_reject(operand, args, name == "selectattr");
  }
  if (name == "map") return filter_map(operand, args);
  if (name == "int") return filter_int(operand, args);
  if (name == "float") return filter_float(operand, args);
  if (name == "abs") {
    if (operand.kind() == Value::Kind::Float)
      return done(Value::number(std::fabs(operand.as_double())));
    const std::int64_t i = require_int(operand, "abs operand", pos);
    if (i == std::numeric_limits<std::int64_t>::min()) fail_at(pos, "integer overflow in abs");
    return done(Value::integer(i < 0 ? -i : i));
  }
  fail_at(pos, fmt::format("unsupported filter '{}'", name));
}

bool apply_test(std::string_view name, const Value& operand, CallArgs& args) {
  const Pos pos = args.pos;
  using Kind = Value::Kind;
  const Kind k = operand.kind();
  auto done = [&](bool b) {
    args.reject_extra(name);
    return b;
  };
  auto other = [&]() -> Value {
    const auto v = args.take(0, "other");
    if (!v) fail_at(pos, fmt::format("test '{}' needs an argument", name));
    return *v;
  };
  if (name == "defined") return done(k != Kind::Undefined);
  if (name == "undefined") return done(k == Kind::Undefined);
  if (name == "none") return done(k == Kind::None);
  if (name == "boolean") return done(k == Kind::Bool);
  if (name == "true") return done(k == Kind::Bool && operand.as_bool());
  if (name == "false") return done(k == Kind::Bool && !operand.as_bool());
  if (name == "integer") return done(k == Kind::Int);
  if (name == "float") return done(k == Kind::Float);
  if (name == "number") return done(operand.is_number());
  if (name == "string") return done(k == Kind::String);
  if (name == "mapping") return done(k == Kind::Dict);
  if (name == "callable") return done(k == Kind::Function);
  // jinja2's Undefined is iterable and has a length, so it passes these two.
  if (name == "iterable" || name == "sequence") {
    return done(k == Kind::String || k == Kind::Sequence || k == Kind::Dict ||
                k == Kind::Undefined);
  }
  if (name == "odd" || name == "even") {
    // value % 2 == 1 (or 0), as Python computes it for ints and floats.
    if (operand.kind() == Kind::Float) {
      const double m = std::fmod(operand.as_double(), 2.0);
      const double r = m < 0 ? m + 2.0 : m;
      return done(r == (name == "odd" ? 1.0 : 0.0));
    }
    const std::int64_t i = require_int(operand, "odd/even operand", pos);
    return done((i % 2 != 0) == (name == "odd"));
  }
  if (name == "divisibleby") {
    const std::int64_t d = require_int(other(), "divisibleby argument", pos);
    if (d == 0) fail_at(pos, "divisibleby(0)");
    return done(require_int(operand, "divisibleby operand", pos) % d == 0);
  }
  if (name == "eq" || name == "equalto") return done(equal(operand, other()));
  if (name == "ne") return done(!equal(operand, other()));
  if (name == "lt") return done(compare(operand, other(), pos) < 0);
  if (name == "le") return done(compare(operand, other(), pos) <= 0);
  if (name == "gt") return done(compare(operand, other(), pos) > 0);
  if (name == "ge") return done(compare(operand, other(), pos) >= 0);
  if (name == "in") return done(contains(other(), operand, pos));
  if (name == "sameas") return done(operand.same_object(other()));
  if (name == "lower" || name == "upper") {
    return done(is_lower_text(operand.str(), name == "lower"));
  }
  fail_at(pos, fmt::format("unsupported test '{}'", name));
}

Value get_attribute(const Value& object, const std::string& name, Pos pos) {
  switch (object.kind()) {
    case Value::Kind::Undefined:
      fail_at(pos, object.undefined_hint());
    case Value::Kind::Dict: {
      if (name == "get" || name == "items" || name == "keys" || name == "values") {
        return bound(object, name);
      }
      if (const Value* v = object.as_dict().find(name)) return *v;
      return Value::undefined(missing_attribute(object, name));
    }
    case Value::Kind::Namespace: {
      if (const Value* v = object.as_namespace().attributes.find(name)) return *v;
      return Value::undefined(missing_attribute(object, name));
    }
    case Value::Kind::String:
      if (is_string_method(name)) return bound(object, name);
      if (one_of(name, kOtherStrMethods)) {
        fail_at(pos, fmt::format("unsupported string method '{}'", name));
      }
      return Value::undefined(missing_attribute(object, name));
    case Value::Kind::Sequence:
      if (one_of(name, kListMethods))
        fail_at(pos, fmt::format("unsupported list method '{}'", name));
      return Value::undefined(missing_attribute(object, name));
    default:
      return Value::undefined(missing_attribute(object, name));
  }
}

Value get_item(const Value& object, const Value& key, Pos pos) {
  switch (object.kind()) {
    case Value::Kind::Undefined:
      fail_at(pos, object.undefined_hint());
    case Value::Kind::Sequence:
    case Value::Kind::String: {
      if (key.is_string()) return get_attribute(object, key.as_string(), pos);
      if (!key.is_integral()) {
        return Value::undefined(fmt::format("{} indices must be integers", object.type_name()));
      }
      const std::string missing =
          fmt::format("'{} object' has no element {}", object.type_name(), key.as_int());
      std::int64_t i = key.as_int();
      if (object.is_string()) {
        const std::u32string s = decode_utf8(object.as_string());
        const auto n = static_cast<std::int64_t>(s.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::undefined(missing);
        return Value::string(
            encode_utf8(std::u32string_view(s).substr(static_cast<std::size_t>(i), 1)));
      }
      const List& items = object.as_list();
      const auto n = static_cast<std::int64_t>(items.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined(missing);
      return items[static_cast<std::size_t>(i)];
    }
    case Value::Kind::Dict: {
      if (!key.is_string()) return Value::undefined(missing_attribute(object, key.repr()));
      if (const Value* v = object.as_dict().find(key.as_string())) return *v;
      return get_attribute(object, key.as_string(), pos);
    }
    case Value::Kind::Namespace:
      if (key.is_string()) return get_attribute(object, key.as_string(), pos);
      return Value::undefined(missing_attribute(object, key.repr()));
    default:
      return Value::undefined(fmt::format("'{}' object is not subscriptable", object.type_name()));
  }
}

Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step,
                Pos pos) {
  if (object.is_undefined()) fail_at(pos, object.undefined_hint());
  if (!object.is_string() && object.kind() != Value::Kind::Sequence) {
    fail_at(pos, fmt::format("'{}' object cannot be sliced", object.type_name()));
  }
  auto bound_of = [&](const Value& v) -> std::optional<std::int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    return require_int(v, "slice index", pos);
  };
  const std::int64_t by = bound_of(step).value_or(1);
  if (by == 0) fail_at(pos, "slice step cannot be zero");
  const std::u32string text = object.is_string() ? decode_utf8(object.as_string()) : U"";
  const auto n =
      static_cast<std::int64_t>(object.is_string() ? text.size() : object.as_list().size());
  // Python's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<std::int64_t> v, std::int64_t if_none) {
    if (!v) return if_none;
    std::int64_t i = *v;
    if (i < 0) {
      i += n;
      if (i < 0) i = by < 0 ? -1 : 0;
    } else if (i >= n) {
      i = by < 0 ? n - 1 : n;
    }
    return i;
  };
  const std::int64_t from = adjust(bound_of(start), by < 0 ? n - 1 : 0);
  const std::int64_t to = adjust(bound_of(stop), by < 0 ? -1 : n);
  std::vector<std::size_t> picked;
  for (std::int64_t i = from; by > 0 ? i < to : i > to; i += by)
    picked.push_back(static_cast<std::size_t>(i));
  if (object.is_string()) {
    std::u32string out;
    for (const std::size_t i : picked) out.push_back(text[i]);
    return Value::string(encode_utf8(out));
  }
  List out;
  for (const std::size_t i : picked) out.push_back(object.as_list()[i]);
  return Value::list(std::move(out), object.is_tuple());
}

bool contains(const Value& container, const Value& item, Pos pos) {
  switch (container.kind()) {
    case Value::Kind::Undefined:
      return false;
    case Value::Kind::Sequence:
      return std::any_of(container.as_list().begin(), container.as_list().end(),
                         [&](const Value& v) { return equal(v, item); });
    case Value::Kind::Dict:
      if ((item.kind() == Value::Kind::Sequence && !item.is_tuple()) ||
          item.kind() == Value::Kind::Dict || item.kind() == Value::Kind::Namespace) {
        fail_at(pos, fmt::format("unhashable type: '{}'", item.type_name()));
      }
      return item.is_string() && container.as_dict().find(item.as_string());
    case Value::Kind::String:
      if (item.is_undefined()) fail_at(pos, item.undefined_hint());
      return container.as_string().find(
                 require_string(item, "left operand of 'in <string>'", pos)) != std::string::npos;
    default:
      fail_at(pos, fmt::format("argument of type '{}' is not iterable", container.type_name()));
  }
}

List iterate(const Value& value, Pos pos) {
  switch (value.kind()) {
    case Value::Kind::Undefined:
      return {};
    case Value::Kind::Sequence:
      return value.as_list();
    case Value::Kind::String: {
      List out;
      for (const char32_t c : decode_utf8(value.as_string())) {
        out.push_back(Value::string(encode_utf8(std::u32string_view(&c, 1))));
      }
      return out;
    }
    case Value::Kind::Dict: {
      List out;
      for (const auto& entry : value.as_dict().entries) out.push_back(Value::string(entry.first));
      return out;
    }
    default:
      fail_at(pos, fmt::format("'{}' object is not iterable", value.type_name()));
  }
}

Dict global_functions() {
  Dict globals;
  globals.set("raise_exception", Value::function("raise_exception", [](CallArgs& args) -> Value {
                const auto message = args.take(0, "message");
                fail("chat template {}:{}: raise_exception: {}", args.pos.line, args.pos.column,
                     message ? message->str() : std::string());
              }));
  globals.set("range", Value::function("range", [](CallArgs& args) {
                std::vector<std::int64_t> bounds;
                for (const Value& v : args.positional)
                  bounds.push_back(require_int(v, "range argument", args.pos));
                if (bounds.empty() || bounds.size() > 3 || !args.keyword.empty()) {
                  fail_at(args.pos, "range() takes 1 to 3 integer arguments");
                }
                const std::int64_t start = bounds.size() == 1 ? 0 : bounds[0];
                const std::int64_t stop = bounds.size() == 1 ? bounds[0] : bounds[1];
                const std::int64_t step = bounds.size() == 3 ? bounds[2] : 1;
                if (step == 0) fail_at(args.pos, "range() step must not be zero");
                // The jinja2 sandbox's MAX_RANGE.
                constexpr std::int64_t kMaxRange = 100000;
                List out;
                for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                  if (static_cast<std::int64_t>(out.size()) == kMaxRange) {
                    fail_at(args.pos, "range too big: the sandbox allows 100000 items");
                  }
                  out.push_back(Value::integer(i));
                }
                return Value::list(std::move(out));
              }));
  globals.set("namespace", Value::function("namespace", [](CallArgs& args) {
                Dict attributes;
                if (args.positional.size() > 1) fail_at(args.pos, "namespace() takes one mapping");
                if (!args.positional.empty()) {
                  if (args.positional[0].kind() != Value::Kind::Dict) {
                    fail_at(args.pos, "namespace() takes a mapping and keyword arguments");
                  }
                  attributes = args.positional[0].as_dict();
                }
                for (const auto& [k, v] : args.keyword) attributes.set(k, v);
                return Value::make_namespace(std::move(attributes));
              }));
  globals.set("dict", Value::function("dict", [](CallArgs& args) {
                Dict d;
                if (args.positional.size() > 1) fail_at(args.pos, "dict() takes one mapping");
                if (!args.positional.empty()) {
                  if (args.positional[0].kind() != Value::Kind::Dict) {
                    fail_at(args.pos, "dict() takes a mapping and keyword arguments");
                  }
                  d = args.positional[0].as_dict();
                }
                for (const auto& [k, v] : args.keyword) d.set(k, v);
                return Value::dict(std::move(d));
              }));
  return globals;
}

}  // namespace switchyard::text::jinja

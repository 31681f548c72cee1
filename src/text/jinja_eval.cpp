// Executes a parsed template. Scoping follows jinja2: each for-loop iteration and each macro
// call gets its own scope, so a {% set %} inside them is not seen outside (namespace() is the
// way out); if blocks share their enclosing scope.
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "switchyard/error.h"
#include "text/jinja_ast.h"
#include "text/jinja_builtins.h"

namespace switchyard::text::jinja {

namespace {

struct Scope {
  std::shared_ptr<Scope> parent;
  Dict vars;

  const Value* find(std::string_view name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent.get()) {
      if (const Value* v = s->vars.find(name)) return v;
    }
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

ScopePtr child_of(const ScopePtr& parent) {
  auto s = std::make_shared<Scope>();
  s->parent = parent;
  return s;
}

enum class Flow { Normal, Break, Continue };

constexpr std::size_t kMaxRepeatBytes = std::size_t{64} << 20;
constexpr int kMaxMacroDepth = 200;

[[noreturn]] void overflow(Pos pos) {
  fail_at(pos, "integer overflow (values are limited to 64 bits)");
}

std::int64_t checked_add(std::int64_t a, std::int64_t b, Pos pos) {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) overflow(pos);
  return r;
}

std::int64_t checked_sub(std::int64_t a, std::int64_t b, Pos pos) {
  std::int64_t r = 0;
  if (__builtin_sub_overflow(a, b, &r)) overflow(pos);
  return r;
}

std::int64_t checked_mul(std::int64_t a, std::int64_t b, Pos pos) {
  std::int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) overflow(pos);
  return r;
}

// Python's float // and %.
std::pair<double, double> float_divmod(double a, double b) {
  double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0.0) {
    if ((b < 0) != (mod < 0)) {
      mod += b;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, b);
  }
  double floor_div = std::floor(div);
  if (div - floor_div > 0.5) floor_div += 1.0;
  return {floor_div, mod};
}

Value repeat(const Value& seq, std::int64_t times, Pos pos) {
  const std::size_t n = times > 0 ? static_cast<std::size_t>(times) : 0;
  if (seq.is_string()) {
    if (n > 0 && seq.as_string().size() > kMaxRepeatBytes / n)
      fail_at(pos, "repeated string too long");
    std::string out;
    for (std::size_t i = 0; i < n; ++i) out += seq.as_string();
    return Value::string(std::move(out));
  }
  if (n > 0 && seq.as_list().size() > kMaxRepeatBytes / 64 / n)
    fail_at(pos, "repeated list too long");
  List out;
  for (std::size_t i = 0; i < n; ++i)
    out.insert(out.end(), seq.as_list().begin(), seq.as_list().end());
  return Value::list(std::move(out), seq.is_tuple());
}

Value power(const Value& l, const Value& r, Pos pos) {
  if (l.is_integral() && r.is_integral() && r.as_int() >= 0) {
    std::int64_t result = 1;
    std::int64_t base = l.as_int();
    for (std::int64_t e = r.as_int(); e > 0; e >>= 1) {
      if (e & 1) result = checked_mul(result, base, pos);
      if (e > 1) base = checked_mul(base, base, pos);
    }
    return Value::integer(result);
  }
  const double a = l.as_double();
  const double b = r.as_double();
  if (a == 0.0 && b < 0) fail_at(pos, "0.0 cannot be raised to a negative power");
  if (a < 0 && b != std::floor(b)) fail_at(pos, "negative number raised to a fractional power");
  return Value::number(std::pow(a, b));
}

Value arithmetic(const std::string& op, const Value& l, const Value& r, Pos pos) {
  if (op == "~") return Value::string(l.str() + r.str());
  if (l.is_undefined()) fail_at(pos, l.undefined_hint());
  if (r.is_undefined()) fail_at(pos, r.undefined_hint());
  const bool ints = l.is_integral() && r.is_integral();
  const bool numbers = l.is_number() && r.is_number();
  using Kind = Value::Kind;
  if (op == "+") {
    if (ints) return Value::integer(checked_add(l.as_int(), r.as_int(), pos));
    if (numbers) return Value::number(l.as_double() + r.as_double());
    if (l.is_string() && r.is_string()) return Value::string(l.as_string() + r.as_string());
    if (l.kind() == Kind::Sequence && r.kind() == Kind::Sequence && l.is_tuple() == r.is_tuple()) {
      List out = l.as_list();
      out.insert(out.end(), r.as_list().begin(), r.as_list().end());
      return Value::list(std::move(out), l.is_tuple());
    }
  } else if (op == "-") {
    if (ints) return Value::integer(checked_sub(l.as_int(), r.as_int(), pos));
    if (numbers) return Value::number(l.as_double() - r.as_double());
  } else if (op == "*") {
    if (ints) return Value::integer(checked_mul(l.as_int(), r.as_int(), pos));
    if (numbers) return Value::number(l.as_double() * r.as_double());
    if ((l.is_string() || l.kind() == Kind::Sequence) && r.is_integral())
      return repeat(l, r.as_int(), pos);
    if (l.is_integral() && (r.is_string() || r.kind() == Kind::Sequence))
      return repeat(r, l.as_int(), pos);
  } else if (op == "/" || op == "//" || op == "%") {
    if (l.is_string() && op == "%")
      fail_at(pos, "unsupported printf-style string formatting ('%')");
    if (numbers) {
      if (r.as_double() == 0.0) fail_at(pos, "division by zero");
      if (op == "/") return Value::number(l.as_double() / r.as_double());
      if (ints) {
        const std::int64_t a = l.as_int();
        const std::int64_t b = r.as_int();
        if (a == std::numeric_limits<std::int64_t>::min() && b == -1) {
          overflow(pos);
        }
        std::int64_t q = a / b;
        std::int64_t m = a % b;
        if (m != 0 && ((m < 0) != (b < 0))) {
          m += b;
          q -= 1;
        }
        return Value::integer(op == "//" ? q : m);
      }
      const auto [q, m] = float_divmod(l.as_double(), r.as_double());
      return Value::number(op == "//" ? q : m);
    }
  } else if (op == "**") {
    if (numbers) return power(l, r, pos);
  }
  fail_at(pos, fmt::format("unsupported operand types for {}: '{}' and '{}'", op, l.type_name(),
                           r.type_name()));
}

bool compare_op(const std::string& op, const Value& l, const Value& r, Pos pos) {
  if (op == "==") return equal(l, r);
  if (op == "!=") return !equal(l, r);
  if (op == "in") return contains(r, l, pos);
  if (op == "not in") return !contains(r, l, pos);
  const int c = compare(l, r, pos);
  if (op == "<") return c < 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  return c >= 0;
}

class Interpreter {
 public:
  explicit Interpreter(const nlohmann::ordered_json& context) {
    if (!context.is_object()) fail("chat template: the variables must be a JSON object");
    auto globals = std::make_shared<Scope>();
    globals->vars = global_functions();
    root_ = child_of(globals);
    for (const auto& [name, value] : context.items()) {
      root_->vars.set(name, Value::from_json(value));
    }
  }

  std::string run(const Program& program) {
    std::string out;
    exec(program.body, root_, out);
    return out;
  }

 private:
  Flow exec(const Body& body, const ScopePtr& scope, std::string& out) {
    for (const StmtPtr& s : body) {
      const Flow flow = exec(*s, scope, out);
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

  Flow exec(const Stmt& s, const ScopePtr& scope, std::string& out) {
    switch (s.kind) {
      case StmtKind::Text:
        out += s.text;
        return Flow::Normal;
      case StmtKind::Output:
        out += eval(*s.expr, scope).str();
        return Flow::Normal;
      case StmtKind::If:
        for (const auto& [condition, body] : s.branches) {
          if (!condition || eval(*condition, scope).truthy()) return exec(body, scope, out);
        }
        return Flow::Normal;
      case StmtKind::For:
        return exec_for(s, scope, out);
      case StmtKind::Set:
        assign(s, eval(*s.expr, scope), scope);
        return Flow::Normal;
      case StmtKind::SetBlock: {
        std::string captured;
        exec(s.body, scope, captured);
        scope->vars.set(s.targets[0], Value::string(std::move(captured)));
        return Flow::Normal;
      }
      case StmtKind::Macro:
        define_macro(s, scope);
        return Flow::Normal;
      case StmtKind::Break:
        return Flow::Break;
      case StmtKind::Continue:
        return Flow::Continue;
      case StmtKind::Scope:
        return exec(s.body, scope, out);
    }
    return Flow::Normal;
  }

  static void bind(const std::vector<std::string>& targets, const Value& value, Scope& scope,
                   Pos pos) {
    if (targets.size() == 1) {
      scope.vars.set(targets[0], value);
      return;
    }
    if (value.kind() != Value::Kind::Sequence || value.as_list().size() != targets.size()) {
      fail_at(pos, fmt::format("cannot unpack {} into {} names", value.repr(), targets.size()));
    }
    for (std::size_t i = 0; i < targets.size(); ++i) scope.vars.set(targets[i], value.as_list()[i]);
  }

  void assign(const Stmt& s, Value value, const ScopePtr& scope) {
    if (s.attribute.empty()) {
      bind(s.targets, value, *scope, s.pos);
      return;
    }
    const Value* target = scope->find(s.targets[0]);
    if (!target || target->kind() != Value::Kind::Namespace) {
      fail_at(s.pos, fmt::format("cannot assign attribute '{}' on '{}': not a namespace()",
                                 s.attribute, s.targets[0]));
    }
    target->as_namespace().attributes.set(s.attribute, std::move(value));
  }

  Flow exec_for(const Stmt& s, const ScopePtr& scope, std::string& out) {
    List items = iterate(eval(*s.expr, scope), s.expr->pos);
    if (s.condition) {
      List kept;
      for (Value& item : items) {
        const ScopePtr filter_scope = child_of(scope);
        bind(s.targets, item, *filter_scope, s.pos);
        if (eval(*s.condition, filter_scope).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(s.else_body, scope, out);
    const auto n = static_cast<std::int64_t>(items.size());
    for (std::int64_t i = 0; i < n; ++i) {
      const ScopePtr iteration = child_of(scope);
      Dict loop;
      loop.set("index", Value::integer(i + 1));
      loop.set("index0", Value::integer(i));
      loop.set("revindex", Value::integer(n - i));
      loop.set("revindex0", Value::integer(n - i - 1));
      loop.set("first", Value::boolean(i == 0));
      loop.set("last", Value::boolean(i == n - 1));
      loop.set("length", Value::integer(n));
      loop.set("depth", Value::integer(1));
      loop.set("depth0", Value::integer(0));
      loop.set("previtem", i > 0 ? items[static_cast<std::size_t>(i - 1)]
                                 : Value::undefined("there is no previous item"));
      loop.set("nextitem", i + 1 < n ? items[static_cast<std::size_t>(i + 1)]
                                     : Value::undefined("there is no next item"));
      iteration->vars.set("loop", Value::dict(std::move(loop)));
      bind(s.targets, items[static_cast<std::size_t>(i)], *iteration, s.pos);
      if (exec(s.body, iteration, out) == Flow::Break) break;
    }
    return Flow::Normal;
  }

  void define_macro(const Stmt& s, const ScopePtr& scope) {
    // A weak reference: the macro lives in this scope, and a strong one would be a cycle.
    std::weak_ptr<Scope> defining = scope;
    const Stmt* macro = &s;
    scope->vars.set(
        s.name, Value::function(s.name, [this, macro, defining](CallArgs& args) {
          const ScopePtr parent = defining.lock();
          if (!parent)
            fail_at(args.pos, fmt::format("macro '{}' called outside its scope", macro->name));
          if (depth_ >= kMaxMacroDepth) fail_at(args.pos, "macro calls nested too deeply");
          const ScopePtr local = child_of(parent);
          for (std::size_t i = 0; i < macro->params.size(); ++i) {
            const auto& [name, default_value] = macro->params[i];
            std::optional<Value> v = args.take(i, name);
            if (!v) {
              v = default_value
                      ? eval(*default_value, local)
                      : Value::undefined(fmt::format("parameter '{}' was not provided", name));
            }
            local->vars.set(name, std::move(*v));
          }
          args.reject_extra(macro->name);
          std::string out;
          ++depth_;
          exec(macro->body, local, out);
          --depth_;
          return Value::string(std::move(out));
        }));
  }

  CallArgs eval_args(const Expr& e, const ScopePtr& scope) {
    CallArgs args;
    args.pos = e.pos;
    for (const ExprPtr& item : e.items) args.positional.push_back(eval(*item, scope));
    for (const auto& [key, value] : e.keywords) args.keyword.emplace_back(key, eval(*value, scope));
    return args;
  }

  Value eval(const Expr& e, const ScopePtr& scope) {
    switch (e.kind) {
      case ExprKind::Literal:
        return e.value;
      case ExprKind::Name: {
        if (const Value* v = scope->find(e.name)) return *v;
        return Value::undefined(fmt::format("'{}' is undefined", e.name));
      }
      case ExprKind::ListLit:
      case ExprKind::TupleLit: {
        List items;
        for (const ExprPtr& item : e.items) items.push_back(eval(*item, scope));
        return Value::list(std::move(items), e.kind == ExprKind::TupleLit);
      }
      case ExprKind::DictLit: {
        Dict d;
        for (std::size_t i = 0; i + 1 < e.items.size(); i += 2) {
          Value key = eval(*e.items[i], scope);
          if (!key.is_string()) fail_at(e.items[i]->pos, "dict keys must be strings");
          d.set(key.as_string(), eval(*e.items[i + 1], scope));
        }
        return Value::dict(std::move(d));
      }
      case ExprKind::Attribute:
        return get_attribute(eval(*e.a, scope), e.name, e.pos);
      case ExprKind::Item:
        return get_item(eval(*e.a, scope), eval(*e.b, scope), e.pos);
      case ExprKind::Slice: {
        auto bound_value = [&](const ExprPtr& p) { return p ? eval(*p, scope) : Value::none(); };
        return get_slice(eval(*e.a, scope), bound_value(e.items[0]), bound_value(e.items[1]),
                         bound_value(e.items[2]), e.pos);
      }
      case ExprKind::Call: {
        const Value callee = eval(*e.a, scope);
        if (callee.is_undefined()) fail_at(e.pos, callee.undefined_hint());
        if (callee.kind() != Value::Kind::Function) {
          fail_at(e.pos, fmt::format("'{}' object is not callable", callee.type_name()));
        }
        CallArgs args = eval_args(e, scope);
        return callee.as_function().call(args);
      }
      case ExprKind::Filter: {
        const Value operand = eval(*e.a, scope);
        CallArgs args = eval_args(e, scope);
        return apply_filter(e.name, operand, args);
      }
      case ExprKind::Test: {
        const Value operand = eval(*e.a, scope);
        CallArgs args = eval_args(e, scope);
        return Value::boolean(apply_test(e.name, operand, args) != e.negated);
      }
      case ExprKind::Negate:
      case ExprKind::Plus: {
        const Value v = eval(*e.a, scope);
        if (v.is_undefined()) fail_at(e.pos, v.undefined_hint());
        if (!v.is_number()) {
          fail_at(e.pos, fmt::format("bad operand type for unary {}: '{}'",
                                     e.kind == ExprKind::Negate ? '-' : '+', v.type_name()));
        }
        if (e.kind == ExprKind::Plus) return v.is_integral() ? Value::integer(v.as_int()) : v;
        if (!v.is_integral()) return Value::number(-v.as_double());
        return Value::integer(checked_sub(0, v.as_int(), e.pos));
      }
      case ExprKind::Not:
        return Value::boolean(!eval(*e.a, scope).truthy());
      case ExprKind::And: {
        Value l = eval(*e.a, scope);
        return l.truthy() ? eval(*e.b, scope) : l;
      }
      case ExprKind::Or: {
        Value l = eval(*e.a, scope);
        return l.truthy() ? l : eval(*e.b, scope);
      }
      case ExprKind::Binary:
        return arithmetic(e.name, eval(*e.a, scope), eval(*e.b, scope), e.pos);
      case ExprKind::Compare: {
        Value left = eval(*e.a, scope);
        for (std::size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.items[i], scope);
          if (!compare_op(e.ops[i], left, right, e.items[i]->pos)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case ExprKind::Condition:
        if (eval(*e.b, scope).truthy()) return eval(*e.a, scope);
        if (e.c) return eval(*e.c, scope);
        return Value::undefined("the inline if-expression was false and has no else");
    }
    return Value();
  }

  ScopePtr root_;
  int depth_ = 0;
};

}  // namespace

std::string render(const Program& program, const nlohmann::ordered_json& context) {
  return Interpreter(context).run(program);
}

}  // namespace switchyard::text::jinja

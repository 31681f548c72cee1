// Tokens → syntax tree, following jinja2's grammar and operator precedence (lowest first):
// x if c else y, or, and, not, comparisons and in (chained), + -, ~, * / // %, **, unary - +,
// then postfix . [] () and the | filter and is test chain.
#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>

#include "text/jinja_ast.h"
#include "text/jinja_builtins.h"

namespace switchyard::text::jinja {

namespace {

std::string describe(const Token& t) {
  switch (t.type) {
    case TokenType::Text:
      return "template text";
    case TokenType::VarBegin:
      return "'{{'";
    case TokenType::VarEnd:
      return "'}}'";
    case TokenType::BlockBegin:
      return "'{%'";
    case TokenType::BlockEnd:
      return "'%}'";
    case TokenType::Name:
      return "'" + t.value + "'";
    case TokenType::String:
      return "string literal";
    case TokenType::Integer:
    case TokenType::Float:
      return "number " + t.value;
    case TokenType::Operator:
      return "'" + t.value + "'";
    case TokenType::End:
      return "end of template";
  }
  return "?";
}

ExprPtr make_expr(ExprKind kind, Pos pos) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->pos = pos;
  return e;
}

ExprPtr make_binary(ExprKind kind, std::string op, ExprPtr a, ExprPtr b, Pos pos) {
  auto e = make_expr(kind, pos);
  e->name = std::move(op);
  e->a = std::move(a);
  e->b = std::move(b);
  return e;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Program run() {
    Program program;
    std::string end;
    program.body = parse_body({}, end, peek().pos);
    return program;
  }

 private:
  const Token& peek(std::size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool is_op(std::string_view op, std::size_t k = 0) const {
    return peek(k).type == TokenType::Operator && peek(k).value == op;
  }
  bool is_name(std::string_view name, std::size_t k = 0) const {
    return peek(k).type == TokenType::Name && peek(k).value == name;
  }

  [[noreturn]] void unexpected(const Token& t, std::string_view expected) const {
    fail_at(t.pos, fmt::format("expected {}, found {}", expected, describe(t)));
  }
  void expect_op(std::string_view op) {
    if (!is_op(op)) unexpected(peek(), fmt::format("'{}'", op));
    ++i_;
  }
  void expect_block_end() {
    if (peek().type != TokenType::BlockEnd) unexpected(peek(), "'%}'");
    ++i_;
  }
  std::string expect_name(std::string_view what) {
    if (peek().type != TokenType::Name) unexpected(peek(), what);
    return next().value;
  }

  // Statements up to a {% tag %} named in `ends`; consumes "{% tag" and stores the name in
  // `end`. With no ends, runs to the end of the template.
  Body parse_body(std::initializer_list<std::string_view> ends, std::string& end, Pos opened) {
    Body body;
    while (true) {
      const Token& t = peek();
      switch (t.type) {
        case TokenType::End:
          if (ends.size() > 0) {
            const auto closing = std::find_if(ends.begin(), ends.end(), [](std::string_view e) {
              return e.substr(0, 3) == "end";
            });
            fail_at(opened, fmt::format("block opened here has no {{% {} %}}", *closing));
          }
          return body;
        case TokenType::Text: {
          auto s = std::make_unique<Stmt>();
          s->kind = StmtKind::Text;
          s->pos = t.pos;
          s->text = t.value;
          body.push_back(std::move(s));
          ++i_;
          break;
        }
        case TokenType::VarBegin: {
          auto s = std::make_unique<Stmt>();
          s->kind = StmtKind::Output;
          s->pos = next().pos;
          s->expr = parse_tuple(true, false);
          if (peek().type != TokenType::VarEnd) unexpected(peek(), "'}}'");
          ++i_;
          body.push_back(std::move(s));
          break;
        }
        case TokenType::BlockBegin: {
          const Token& name = peek(1);
          if (name.type == TokenType::Name &&
              std::find(ends.begin(), ends.end(), name.value) != ends.end()) {
            i_ += 2;
            end = name.value;
            return body;
          }
          body.push_back(parse_statement());
          break;
        }
        default:
          unexpected(t, "template text, '{{' or '{%'");
      }
    }
  }

  StmtPtr parse_statement() {
    const Pos pos = next().pos;  // {%
    const Token& name_token = peek();
    if (name_token.type != TokenType::Name) unexpected(name_token, "a statement name");
    const std::string name = next().value;
    auto s = std::make_unique<Stmt>();
    s->pos = pos;
    if (name == "if") {
      parse_if(*s);
    } else if (name == "for") {
      parse_for(*s);
    } else if (name == "set") {
      parse_set(*s);
    } else if (name == "macro") {
      parse_macro(*s);
    } else if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail_at(name_token.pos, fmt::format("'{}' outside a for loop", name));
      s->kind = name == "break" ? StmtKind::Break : StmtKind::Continue;
      expect_block_end();
    } else if (name == "generation") {
      // transformers' {% generation %} marks assistant text for masks; it renders as is.
      s->kind = StmtKind::Scope;
      expect_block_end();
      std::string end;
      s->body = parse_body({"endgeneration"}, end, pos);
      expect_block_end();
    } else {
      static const char* const unsupported[] = {"call",       "filter",  "include", "import",
                                                "from",       "extends", "block",   "with",
                                                "autoescape", "do",      "trans",   "pluralize"};
      const bool known =
          std::find_if(std::begin(unsupported), std::end(unsupported),
                       [&](const char* u) { return name == u; }) != std::end(unsupported);
      fail_at(name_token.pos,
              fmt::format("{} statement '{}'", known ? "unsupported" : "unexpected", name));
    }
    return s;
  }

  void parse_if(Stmt& s) {
    s.kind = StmtKind::If;
    ExprPtr condition = parse_tuple(false, false);
    while (true) {
      expect_block_end();
      std::string end;
      Body body = parse_body({"elif", "else", "endif"}, end, s.pos);
      s.branches.emplace_back(std::move(condition), std::move(body));
      if (end == "endif") break;
      if (end == "else") {
        expect_block_end();
        Body else_body = parse_body({"endif"}, end, s.pos);
        s.branches.emplace_back(nullptr, std::move(else_body));
        break;
      }
      condition = parse_tuple(false, false);
    }
    expect_block_end();
  }

  std::vector<std::string> parse_targets() {
    const bool parens = is_op("(");
    if (parens) ++i_;
    std::vector<std::string> names{expect_name("a loop variable")};
    while (is_op(",")) {
      ++i_;
      if (peek().type != TokenType::Name) break;
      names.push_back(next().value);
    }
    if (parens) expect_op(")");
    return names;
  }

  void parse_for(Stmt& s) {
    s.kind = StmtKind::For;
    s.targets = parse_targets();
    if (!is_name("in")) unexpected(peek(), "'in'");
    ++i_;
    s.expr = parse_tuple(false, false);
    if (is_name("if")) {
      ++i_;
      s.condition = parse_expression(true);
    }
    if (is_name("recursive")) fail_at(peek().pos, "unsupported recursive for loop");
    expect_block_end();
    ++loop_depth_;
    std::string end;
    s.body = parse_body({"endfor", "else"}, end, s.pos);
    --loop_depth_;
    if (end == "else") {
      expect_block_end();
      s.else_body = parse_body({"endfor"}, end, s.pos);
    }
    expect_block_end();
  }

  void parse_set(Stmt& s) {
    s.kind = StmtKind::Set;
    s.targets.push_back(expect_name("a variable name"));
    if (is_op(".")) {
      ++i_;
      s.attribute = expect_name("an attribute name");
    } else {
      while (is_op(",")) {
        ++i_;
        s.targets.push_back(expect_name("a variable name"));
      }
    }
    if (is_op("=")) {
      ++i_;
      s.expr = parse_tuple(true, false);
      expect_block_end();
      return;
    }
    if (is_op("|")) fail_at(peek().pos, "unsupported filtered block set");
    if (s.targets.size() != 1 || !s.attribute.empty()) unexpected(peek(), "'='");
    expect_block_end();
    s.kind = StmtKind::SetBlock;
    std::string end;
    s.body = parse_body({"endset"}, end, s.pos);
    expect_block_end();
  }

  void parse_macro(Stmt& s) {
    s.kind = StmtKind::Macro;
    s.name = expect_name("a macro name");
    expect_op("(");
    while (!is_op(")")) {
      if (!s.params.empty()) expect_op(",");
      if (is_op(")")) break;
      std::string param = expect_name("a parameter name");
      ExprPtr default_value;
      if (is_op("=")) {
        ++i_;
        default_value = parse_expression(true);
      } else if (!s.params.empty() && s.params.back().second) {
        fail_at(peek().pos, "parameter without default follows one with a default");
      }
      s.params.emplace_back(std::move(param), std::move(default_value));
    }
    ++i_;
    expect_block_end();
    const int saved_depth = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    s.body = parse_body({"endmacro"}, end, s.pos);
    loop_depth_ = saved_depth;
    if (peek().type == TokenType::Name) ++i_;  // {% endmacro name %}
    expect_block_end();
  }

  bool is_tuple_end() const {
    const Token& t = peek();
    return t.type == TokenType::VarEnd || t.type == TokenType::BlockEnd || is_op(")");
  }

  // An expression, or a tuple when commas separate several.
  ExprPtr parse_tuple(bool with_condition, bool explicit_parens) {
    const Pos pos = peek().pos;
    std::vector<ExprPtr> items;
    bool tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end()) break;
      items.push_back(parse_expression(with_condition));
      if (is_op(",")) {
        tuple = true;
      } else {
        break;
      }
    }
    if (!tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) unexpected(peek(), "an expression");
    }
    auto e = make_expr(ExprKind::TupleLit, pos);
    e->items = std::move(items);
    return e;
  }

  ExprPtr parse_expression(bool with_condition) {
    return with_condition ? parse_condition() : parse_or();
  }

  ExprPtr parse_condition() {
    ExprPtr value = parse_or();
    while (is_name("if")) {
      const Pos pos = next().pos;
      auto e = make_expr(ExprKind::Condition, pos);
      e->a = std::move(value);
      e->b = parse_or();
      if (is_name("else")) {
        ++i_;
        e->c = parse_condition();
      }
      value = std::move(e);
    }
    return value;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const Pos pos = next().pos;
      left = make_binary(ExprKind::Or, "or", std::move(left), parse_and(), pos);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const Pos pos = next().pos;
      left = make_binary(ExprKind::And, "and", std::move(left), parse_not(), pos);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      const Pos pos = next().pos;
      auto e = make_expr(ExprKind::Not, pos);
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Pos pos = peek().pos;
    ExprPtr first = parse_math1();
    std::vector<std::string> ops;
    std::vector<ExprPtr> operands;
    while (true) {
      const Token& t = peek();
      if (t.type == TokenType::Operator && (t.value == "==" || t.value == "!=" || t.value == "<" ||
                                            t.value == ">" || t.value == "<=" || t.value == ">=")) {
        ops.push_back(next().value);
      } else if (is_name("in")) {
        ++i_;
        ops.emplace_back("in");
      } else if (is_name("not") && is_name("in", 1)) {
        i_ += 2;
        ops.emplace_back("not in");
      } else {
        break;
      }
      operands.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto e = make_expr(ExprKind::Compare, pos);
    e->a = std::move(first);
    e->ops = std::move(ops);
    e->items = std::move(operands);
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& op = next();
      left = make_binary(ExprKind::Binary, op.value, std::move(left), parse_concat(), op.pos);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      const Pos pos = next().pos;
      left = make_binary(ExprKind::Binary, "~", std::move(left), parse_math2(), pos);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& op = next();
      left = make_binary(ExprKind::Binary, op.value, std::move(left), parse_pow(), op.pos);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const Pos pos = next().pos;
      left = make_binary(ExprKind::Binary, "**", std::move(left), parse_unary(true), pos);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const Token& op = next();
      node = make_expr(op.value == "-" ? ExprKind::Negate : ExprKind::Plus, op.pos);
      node->a = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    return with_filter ? parse_filters(std::move(node)) : std::move(node);
  }

  ExprPtr parse_primary() {
    const Token& t = next();
    switch (t.type) {
      case TokenType::Name: {
        auto e = make_expr(ExprKind::Literal, t.pos);
        if (t.value == "true" || t.value == "True") {
          e->value = Value::boolean(true);
        } else if (t.value == "false" || t.value == "False") {
          e->value = Value::boolean(false);
        } else if (t.value == "none" || t.value == "None") {
          e->value = Value::none();
        } else {
          e->kind = ExprKind::Name;
          e->name = t.value;
        }
        return e;
      }
      case TokenType::String: {
        auto e = make_expr(ExprKind::Literal, t.pos);
        std::string s = t.value;
        while (peek().type == TokenType::String) s += next().value;
        e->value = Value::string(std::move(s));
        return e;
      }
      case TokenType::Integer: {
        auto e = make_expr(ExprKind::Literal, t.pos);
        e->value = Value::integer(t.integer);
        return e;
      }
      case TokenType::Float: {
        auto e = make_expr(ExprKind::Literal, t.pos);
        e->value = Value::number(t.number);
        return e;
      }
      case TokenType::Operator:
        if (t.value == "(") {
          ExprPtr e = parse_tuple(true, true);
          expect_op(")");
          return e;
        }
        if (t.value == "[") {
          auto e = make_expr(ExprKind::ListLit, t.pos);
          while (!is_op("]")) {
            if (!e->items.empty()) expect_op(",");
            if (is_op("]")) break;
            e->items.push_back(parse_expression(true));
          }
          ++i_;
          return e;
        }
        if (t.value == "{") {
          auto e = make_expr(ExprKind::DictLit, t.pos);
          while (!is_op("}")) {
            if (!e->items.empty()) expect_op(",");
            if (is_op("}")) break;
            e->items.push_back(parse_expression(true));
            expect_op(":");
            e->items.push_back(parse_expression(true));
          }
          ++i_;
          return e;
        }
        break;
      default:
        break;
    }
    unexpected(t, "an expression");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".")) {
        ++i_;
        const Token& t = next();
        if (t.type == TokenType::Name) {
          auto e = make_expr(ExprKind::Attribute, t.pos);
          e->a = std::move(node);
          e->name = t.value;
          node = std::move(e);
        } else if (t.type == TokenType::Integer) {
          auto e = make_expr(ExprKind::Item, t.pos);
          e->a = std::move(node);
          e->b = make_expr(ExprKind::Literal, t.pos);
          e->b->value = Value::integer(t.integer);
          node = std::move(e);
        } else {
          unexpected(t, "an attribute name");
        }
      } else if (is_op("[")) {
        const Pos pos = next().pos;
        node = parse_subscript(std::move(node), pos);
        if (is_op(",")) fail_at(peek().pos, "unsupported tuple subscript");
        expect_op("]");
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr object, Pos pos) {
    ExprPtr start;
    if (!is_op(":")) {
      start = parse_expression(true);
      if (!is_op(":")) {
        auto e = make_expr(ExprKind::Item, pos);
        e->a = std::move(object);
        e->b = std::move(start);
        return e;
      }
    }
    ++i_;  // :
    auto e = make_expr(ExprKind::Slice, pos);
    e->a = std::move(object);
    e->items.push_back(std::move(start));
    auto bound = [&]() -> ExprPtr {
      return is_op("]") || is_op(",") || is_op(":") ? nullptr : parse_expression(true);
    };
    e->items.push_back(bound());
    if (is_op(":")) {
      ++i_;
      e->items.push_back(bound());
    } else {
      e->items.push_back(nullptr);
    }
    return e;
  }

  // (args): positional then name=value; used by calls, filters and tests.
  void parse_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (!e.items.empty() || !e.keywords.empty()) expect_op(",");
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail_at(peek().pos, "unsupported argument unpacking");
      if (peek().type == TokenType::Name && is_op("=", 1)) {
        std::string key = next().value;
        ++i_;
        e.keywords.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.keywords.empty()) fail_at(peek().pos, "positional argument after keyword argument");
        e.items.push_back(parse_expression(true));
      }
    }
    ++i_;
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = make_expr(ExprKind::Call, callee->pos);
    e->a = std::move(callee);
    parse_args(*e);
    return e;
  }

  ExprPtr parse_filters(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        ++i_;
        const Token& t = peek();
        std::string name = expect_name("a filter name");
        if (!is_supported_filter(name))
          fail_at(t.pos, fmt::format("unsupported filter '{}'", name));
        auto e = make_expr(ExprKind::Filter, t.pos);
        e->a = std::move(node);
        e->name = std::move(name);
        if (is_op("(")) parse_args(*e);
        node = std::move(e);
      } else if (is_name("is")) {
        ++i_;
        const bool negated = is_name("not");
        if (negated) ++i_;
        const Token& t = peek();
        std::string name = expect_name("a test name");
        if (!is_supported_test(name)) fail_at(t.pos, fmt::format("unsupported test '{}'", name));
        auto e = make_expr(ExprKind::Test, t.pos);
        e->a = std::move(node);
        e->name = std::move(name);
        e->negated = negated;
        const Token& arg = peek();
        if (is_op("(")) {
          parse_args(*e);
        } else if ((arg.type == TokenType::Name && arg.value != "else" && arg.value != "or" &&
                    arg.value != "and") ||
                   arg.type == TokenType::String || arg.type == TokenType::Integer ||
                   arg.type == TokenType::Float || is_op("[") || is_op("{")) {
          if (is_name("is")) fail_at(arg.pos, "tests cannot be chained with 'is'");
          e->items.push_back(parse_postfix(parse_primary()));
        }
        node = std::move(e);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> t_;
  std::size_t i_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Program parse(std::vector<Token> tokens) {
  return Parser(std::move(tokens)).run();
}

}  // namespace switchyard::text::jinja

// Tokens and syntax tree of the chat-template language.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja_value.h"

namespace switchyard::text::jinja {

enum class TokenType {
  Text,        // template text, whitespace control already applied
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,
  String,
  Integer,
  Float,
  Operator,  // value holds the operator: "+", "//", "==", "(", ...
  End,
};

struct Token {
  TokenType type;
  std::string value;  // text, name, operator, or the decoded string literal
  Pos pos;
  std::int64_t integer = 0;
  double number = 0.0;
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  Literal,    // value
  Name,       // name
  ListLit,    // items
  TupleLit,   // items
  DictLit,    // items: key, value, key, value ...
  Attribute,  // a.name
  Item,       // a[b]
  Slice,      // a[b:c:d], each of b, c, d optional
  Call,       // a(items..., keywords...)
  Filter,     // a | name(items..., keywords...)
  Test,       // a is [not] name(items...)
  Negate,     // -a
  Plus,       // +a
  Not,        // not a
  And,        // a and b
  Or,         // a or b
  Binary,     // a op b with op in + - * / // % ** ~
  Compare,    // a op0 items[0] op1 items[1] ... (Python chains)
  Condition,  // b if a else c (c optional)
};

struct Expr {
  ExprKind kind;
  Pos pos;
  Value value;
  std::string name;              // Name, Attribute, Filter, Test, Binary operator
  std::vector<std::string> ops;  // Compare
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
  ExprPtr a, b, c;
  bool negated = false;  // Test
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind {
  Text,      // text
  Output,    // {{ expr }}
  If,        // branches (condition, body); a null condition is the else
  For,       // for targets in expr [if condition]: body [else else_body]
  Set,       // set targets = expr, or set namespace.attribute = expr
  SetBlock,  // set target %}body{% endset
  Macro,     // macro name(params): body
  Break,
  Continue,
  Scope,  // {% generation %}: body rendered in place
};

struct Stmt {
  StmtKind kind;
  Pos pos;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;
  std::vector<std::string> targets;
  std::string attribute;  // Set on a namespace: targets[0].attribute
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
};

struct Program {
  Body body;
};

// Source → tokens, with jinja2's whitespace handling as transformers configures it
// (trim_blocks, lstrip_blocks, one trailing newline dropped, newlines normalised to \n).
std::vector<Token> tokenize(std::string_view source);

// Tokens → program; unknown or unsupported statements, filters and tests are Errors.
Program parse(std::vector<Token> tokens);

// Renders `program` with the variables of `context`.
std::string render(const Program& program, const nlohmann::ordered_json& context);

}  // namespace switchyard::text::jinja

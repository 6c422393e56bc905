#pragma once
// Syntax tree of a parsed Jinja2 template.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "components/tokenizer/jinja_value.h"

namespace automodel::tokenizer::jinja {

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,
    Name,
    List,
    Tuple,
    Dict,
    Attr,
    Item,
    Slice,
    Call,
    Filter,
    Test,
    Neg,
    Pos,
    Not,
    Binary,
    And,
    Or,
    Compare,
    Cond
  };
  Kind kind;
  int line = 0;
  int depth = 1;                                      // levels of this expression tree (see kMaxNesting)
  Value literal;                                      // Literal
  std::string name;                                   // Name, Attr, Filter/Test name, Binary operator
  std::vector<ExprP> args;                            // operands, list items, call/filter/test arguments
  std::vector<std::pair<std::string, ExprP>> kwargs;  // keyword arguments of a call/filter/test
  std::vector<std::string> ops;                       // Compare: the operators between args
  bool negated = false;                               // Test: `is not`
};

struct Stmt;
using StmtP = std::unique_ptr<Stmt>;
using Body = std::vector<StmtP>;

struct Stmt {
  enum class Kind { Text, Output, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, Break, Continue, Scope };
  Kind kind;
  int line = 0;
  std::string text;            // Text; Macro name
  ExprP expr;                  // Output value; For iterable; Set value; CallBlock call; FilterBlock filters
  ExprP cond;                  // For `if` filter
  std::vector<ExprP> targets;  // For/Set targets (Name or Attr)
  std::vector<std::pair<ExprP, Body>> branches;       // If: (condition, body) for if/elif
  Body body;                                          // For/SetBlock/Macro/CallBlock/FilterBlock/Scope body
  Body else_body;                                     // If/For else
  std::vector<std::pair<std::string, ExprP>> params;  // Macro / CallBlock caller parameters (default may be null)
};

// Parses a template (lexed by jinja_lexer); errors name the line and the construct.
Body parse_template(const std::string& source);

}  // namespace automodel::tokenizer::jinja

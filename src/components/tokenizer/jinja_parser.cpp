// Recursive-descent parser for the Jinja2 subset used by chat templates (precedence as jinja2/parser.py).
#include <algorithm>
#include <set>

#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/jinja_ast.h"
#include "components/tokenizer/jinja_lexer.h"

namespace automodel::tokenizer::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  Body parse_all() {
    Body body = parse_body({});
    if (peek().type != Tok::Eof) error("unexpected tag");
    return body;
  }

 private:
  std::vector<Token> t_;
  size_t p_ = 0;
  std::vector<std::string> open_;  // stack of open block names, for error messages
  int nesting_ = 0;                // nested parse_expression / parse_not / parse_unary calls

  static constexpr int kMaxNesting = template_limits::kMaxNesting;

  [[noreturn]] void too_deep(const char* what) const {
    fail_limit("line " + std::to_string(peek().line) + ": the template nests " + what + " more than " +
                   std::to_string(kMaxNesting) + " levels deep",
               "fix the chat template; real chat templates nest fewer than 10 levels");
  }
  // Bounds the parser's own recursion: brackets, `not not ...`, `- - ...`.
  struct Nest {
    Parser& p;
    explicit Nest(Parser& parser) : p(parser) {
      if (++p.nesting_ > kMaxNesting) p.too_deep("expressions");
    }
    ~Nest() { --p.nesting_; }
  };
  // Bounds the depth of the tree a node tops, which loops build too (1+1+1+..., a.b.c...): evaluating and freeing
  // it recurses that deep.
  ExprP seal(ExprP e) const {
    int d = 0;
    for (const auto& a : e->args)
      if (a) d = std::max(d, a->depth);
    for (const auto& kv : e->kwargs)
      if (kv.second) d = std::max(d, kv.second->depth);
    e->depth = d + 1;
    if (e->depth > kMaxNesting) too_deep("expressions");
    return e;
  }
  void open_block(std::string name) {
    open_.push_back(std::move(name));
    if (static_cast<int>(open_.size()) > kMaxNesting) too_deep("blocks");
  }

  const Token& peek(size_t k = 0) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  const Token& next() { return t_[p_ < t_.size() - 1 ? p_++ : p_]; }
  [[noreturn]] void error(const std::string& msg) const {
    fail("line " + std::to_string(peek().line) + ": " + msg + (open_.empty() ? "" : " (in '" + open_.back() + "')"));
  }
  bool is_op(const char* op, size_t k = 0) const { return peek(k).type == Tok::Op && peek(k).text == op; }
  bool is_name(const char* name, size_t k = 0) const { return peek(k).type == Tok::Name && peek(k).text == name; }
  // An operator token or a word operator (`or`, `and`: Name tokens) spelled as one of `operators`.
  template <size_t N>
  bool is_operator(const char* const (&operators)[N]) const {
    if (peek().type != Tok::Op && peek().type != Tok::Name) return false;
    for (const char* op : operators)
      if (peek().text == op) return true;
    return false;
  }
  bool is_comparison_op() const {
    static constexpr const char* kComparisons[] = {"==", "!=", "<", ">", "<=", ">="};
    return peek().type == Tok::Op && is_operator(kComparisons);
  }
  void expect_op(const char* op) {
    if (!is_op(op)) error(std::string("expected '") + op + "', got " + describe(peek()));
    next();
  }
  void expect_block_end() {
    if (peek().type != Tok::BlockEnd) error("expected end of statement '%}', got " + describe(peek()));
    next();
  }
  std::string expect_name() {
    if (peek().type != Tok::Name) error("expected a name, got " + describe(peek()));
    return next().text;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::Name:
      case Tok::Op: return "'" + t.text + "'";
      case Tok::String: return "a string";
      case Tok::Int:
      case Tok::Float: return "a number";
      case Tok::BlockEnd: return "'%}'";
      case Tok::VarEnd: return "'}}'";
      case Tok::Eof: return "end of template";
      default: return "template text";
    }
  }

  ExprP make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  ExprP literal(Value v, int line) {
    auto e = make(Expr::Kind::Literal, line);
    e->literal = std::move(v);
    return e;
  }
  // obj[key] (and obj.0)
  ExprP subscript(ExprP obj, ExprP key, int line) {
    auto e = make(Expr::Kind::Item, line);
    e->args.push_back(std::move(obj));
    e->args.push_back(std::move(key));
    return seal(std::move(e));
  }
  // callee(args...), at its '('
  ExprP parse_call_expr(ExprP callee) {
    auto c = make(Expr::Kind::Call, peek().line);
    c->args.push_back(std::move(callee));
    parse_call_args(*c);
    return seal(std::move(c));
  }
  StmtP make_stmt(Stmt::Kind kind, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = line;
    return s;
  }

  // Statements until a `{% <one of ends> %}` (left unconsumed: p_ at its BlockBegin).
  Body parse_body(const std::set<std::string>& ends) {
    Body body;
    while (true) {
      const Token& tok = peek();
      if (tok.type == Tok::Eof) {
        if (!ends.empty()) {
          std::string names;
          for (const auto& n : ends) names += (names.empty() ? "'" : ", '") + n + "'";
          error("unexpected end of template, expected " + names);
        }
        return body;
      }
      if (tok.type == Tok::Text) {
        auto s = make_stmt(Stmt::Kind::Text, tok.line);
        s->text = tok.text;
        next();
        body.push_back(std::move(s));
      } else if (tok.type == Tok::VarBegin) {
        next();
        auto s = make_stmt(Stmt::Kind::Output, tok.line);
        s->expr = parse_tuple_or_expr();
        if (peek().type != Tok::VarEnd) error("expected '}}', got " + describe(peek()));
        next();
        body.push_back(std::move(s));
      } else if (tok.type == Tok::BlockBegin) {
        if (peek(1).type == Tok::Name && ends.count(peek(1).text)) return body;
        next();
        body.push_back(parse_statement());
      } else {
        error("unexpected " + describe(tok));
      }
    }
  }

  // At `{%` whose name is one of the ends: returns that name and consumes `{% name`.
  std::string take_end_tag() {
    next();  // BlockBegin
    return next().text;
  }

  // The body of the innermost open block up to `{% <end> %}`, which it consumes, closing the block.
  Body parse_last_body(const char* end) {
    Body body = parse_body({end});
    take_end_tag();
    expect_block_end();
    open_.pop_back();
    return body;
  }

  StmtP parse_statement() {
    int line = peek().line;
    std::string kw = expect_name();
    if (kw == "if") return parse_if(line);
    if (kw == "for") return parse_for(line);
    if (kw == "set") return parse_set(line);
    if (kw == "macro") return parse_macro(line);
    if (kw == "call") return parse_call(line);
    if (kw == "filter") return parse_filter_block(line);
    if (kw == "with") return parse_with(line);
    if (kw == "break" || kw == "continue") {
      expect_block_end();
      return make_stmt(kw == "break" ? Stmt::Kind::Break : Stmt::Kind::Continue, line);
    }
    if (kw == "generation") {  // transformers' AssistantTracker extension: renders its body
      expect_block_end();
      auto s = make_stmt(Stmt::Kind::Scope, line);
      open_block("generation");
      s->body = parse_last_body("endgeneration");
      return s;
    }
    --p_;
    if (kw.rfind("end", 0) == 0 || kw == "elif" || kw == "else")
      error("unexpected '" + kw + "'" + (open_.empty() ? " with no open block" : ""));
    error("unknown or unsupported statement '" + kw + "'");
  }

  // {% with a = 1, b = 2 %}...{% endwith %}: a scope with its own variables.
  StmtP parse_with(int line) {
    auto s = make_stmt(Stmt::Kind::Scope, line);
    open_block("with");
    while (peek().type != Tok::BlockEnd) {
      if (!s->params.empty()) expect_op(",");
      std::string name = expect_name();
      expect_op("=");
      s->params.emplace_back(name, parse_expression());
    }
    expect_block_end();
    s->body = parse_last_body("endwith");
    return s;
  }

  StmtP parse_if(int line) {
    auto s = make_stmt(Stmt::Kind::If, line);
    open_block("if");
    ExprP cond = parse_expression();
    expect_block_end();
    while (true) {
      Body body = parse_body({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(cond), std::move(body));
      std::string tag = take_end_tag();
      if (tag == "elif") {
        cond = parse_expression();
        expect_block_end();
        continue;
      }
      if (tag == "else") {
        expect_block_end();
        s->else_body = parse_body({"endif"});
        take_end_tag();
      }
      expect_block_end();
      break;
    }
    open_.pop_back();
    return s;
  }

  ExprP parse_assign_target() {
    int line = peek().line;
    auto e = make(Expr::Kind::Name, line);
    e->name = expect_name();
    if (is_op(".")) {
      next();
      auto a = make(Expr::Kind::Attr, line);
      a->name = expect_name();
      a->args.push_back(std::move(e));
      return a;
    }
    return e;
  }

  StmtP parse_for(int line) {
    auto s = make_stmt(Stmt::Kind::For, line);
    open_block("for");
    bool paren = is_op("(");
    if (paren) next();
    while (true) {
      auto e = make(Expr::Kind::Name, peek().line);
      e->name = expect_name();
      s->targets.push_back(std::move(e));
      if (!is_op(",")) break;
      next();
    }
    if (paren) expect_op(")");
    if (!is_name("in")) error("expected 'in' in for loop, got " + describe(peek()));
    next();
    s->expr = parse_tuple_or_expr(/*no_condexpr=*/true);
    if (is_name("if")) {
      next();
      s->cond = parse_expression();
    }
    if (is_name("recursive")) error("recursive for loops are not supported");
    expect_block_end();
    s->body = parse_body({"else", "endfor"});
    if (take_end_tag() == "else") {
      expect_block_end();
      s->else_body = parse_body({"endfor"});
      take_end_tag();
    }
    expect_block_end();
    open_.pop_back();
    return s;
  }

  StmtP parse_set(int line) {
    open_block("set");
    std::vector<ExprP> targets;
    targets.push_back(parse_assign_target());
    while (is_op(",")) {
      next();
      targets.push_back(parse_assign_target());
    }
    if (is_op("=")) {
      next();
      auto s = make_stmt(Stmt::Kind::Set, line);
      s->targets = std::move(targets);
      s->expr = parse_tuple_or_expr();
      expect_block_end();
      open_.pop_back();
      return s;
    }
    auto s = make_stmt(Stmt::Kind::SetBlock, line);
    if (targets.size() != 1) error("a block set takes exactly one target");
    s->targets = std::move(targets);
    if (is_op("|")) s->expr = parse_filter_chain(rendered_body(line));
    expect_block_end();
    s->body = parse_last_body("endset");
    return s;
  }

  // The rendered body of a filter block / block set, as the first input of its filter chain (a name
  // no template can spell).
  ExprP rendered_body(int line) {
    auto e = make(Expr::Kind::Name, line);
    e->name = "\x01body";
    return e;
  }

  void parse_params(std::vector<std::pair<std::string, ExprP>>& params) {
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      std::string name = expect_name();
      ExprP def;
      if (is_op("=")) {
        next();
        def = parse_expression();
      }
      params.emplace_back(name, std::move(def));
    }
    next();
  }

  StmtP parse_macro(int line) {
    auto s = make_stmt(Stmt::Kind::Macro, line);
    s->text = expect_name();
    open_block("macro " + s->text);
    parse_params(s->params);
    expect_block_end();
    s->body = parse_last_body("endmacro");
    return s;
  }

  StmtP parse_call(int line) {
    auto s = make_stmt(Stmt::Kind::CallBlock, line);
    open_block("call");
    if (is_op("(")) parse_params(s->params);
    s->expr = parse_expression();
    if (s->expr->kind != Expr::Kind::Call) error("expected a call after {% call %}");
    expect_block_end();
    s->body = parse_last_body("endcall");
    return s;
  }

  StmtP parse_filter_block(int line) {
    auto s = make_stmt(Stmt::Kind::FilterBlock, line);
    open_block("filter");
    s->expr = parse_filter_chain(rendered_body(line), /*first_without_bar=*/true);
    expect_block_end();
    s->body = parse_last_body("endfilter");
    return s;
  }

  // ---- expressions ----
  ExprP parse_tuple_or_expr(bool no_condexpr = false) {
    int line = peek().line;
    ExprP first = no_condexpr ? parse_or() : parse_expression();
    if (!is_op(",")) return first;
    auto t = make(Expr::Kind::Tuple, line);
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (peek().type == Tok::BlockEnd || peek().type == Tok::VarEnd || is_name("if")) break;
      t->args.push_back(no_condexpr ? parse_or() : parse_expression());
    }
    return seal(std::move(t));
  }

  ExprP parse_expression() {
    Nest nest(*this);
    ExprP e = parse_or();
    while (is_name("if")) {
      int line = peek().line;
      next();
      auto c = make(Expr::Kind::Cond, line);
      ExprP test = parse_or();
      ExprP other;
      if (is_name("else")) {
        next();
        other = parse_expression();
      }
      c->args.push_back(std::move(test));
      c->args.push_back(std::move(e));
      if (other) c->args.push_back(std::move(other));
      e = seal(std::move(c));
    }
    return e;
  }

  ExprP binary(Expr::Kind kind, const std::string& op, ExprP l, ExprP r, int line) {
    auto e = make(kind, line);
    e->name = op;
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return seal(std::move(e));
  }

  // One precedence level of left-associative binary operators: operand (operator operand)*.
  // Every bracket in an expression recurses through all the precedence levels, so the helpers on that path
  // (this one, parse_parenthesized, parse_collection) are always inlined: a level costs one stack frame, as it did
  // when each level spelled out its own loop.
  template <ExprP (Parser::*operand)(), size_t N>
  [[gnu::always_inline]] ExprP left_assoc(Expr::Kind kind, const char* const (&operators)[N]) {
    ExprP e = (this->*operand)();
    while (is_operator(operators)) {
      const Token& t = next();
      e = binary(kind, t.text, std::move(e), (this->*operand)(), t.line);
    }
    return e;
  }

  ExprP parse_or() { return left_assoc<&Parser::parse_and>(Expr::Kind::Or, {"or"}); }
  ExprP parse_and() { return left_assoc<&Parser::parse_not>(Expr::Kind::And, {"and"}); }
  ExprP parse_not() {
    if (is_name("not")) {
      Nest nest(*this);
      int line = next().line;
      auto e = make(Expr::Kind::Not, line);
      e->args.push_back(parse_not());
      return seal(std::move(e));
    }
    return parse_compare();
  }
  ExprP parse_compare() {
    int line = peek().line;
    ExprP first = parse_math1();
    std::vector<std::string> ops;
    std::vector<ExprP> rest;
    while (true) {
      std::string op;
      if (is_comparison_op()) {
        op = next().text;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        next();
        next();
        op = "not in";
      } else {
        break;
      }
      ops.push_back(op);
      rest.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto e = make(Expr::Kind::Compare, line);
    e->args.push_back(std::move(first));
    for (auto& r : rest) e->args.push_back(std::move(r));
    e->ops = std::move(ops);
    return seal(std::move(e));
  }
  ExprP parse_math1() { return left_assoc<&Parser::parse_concat>(Expr::Kind::Binary, {"+", "-"}); }
  ExprP parse_concat() { return left_assoc<&Parser::parse_math2>(Expr::Kind::Binary, {"~"}); }
  ExprP parse_math2() { return left_assoc<&Parser::parse_pow>(Expr::Kind::Binary, {"*", "/", "//", "%"}); }
  ExprP parse_pow() { return left_assoc<&Parser::parse_filtered_unary>(Expr::Kind::Binary, {"**"}); }
  ExprP parse_filtered_unary() { return parse_unary(true); }
  ExprP parse_unary(bool with_filter) {
    ExprP e;
    if (is_op("-") || is_op("+")) {
      Nest nest(*this);
      const Token& t = next();
      e = make(t.text == "-" ? Expr::Kind::Neg : Expr::Kind::Pos, t.line);
      e->args.push_back(parse_unary(false));
      e = seal(std::move(e));
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprP parse_primary() {
    const Token& t = peek();
    int line = t.line;
    if (t.type == Tok::Name) {
      next();
      if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False")
        return literal(Value::boolean(t.text[0] == 't' || t.text[0] == 'T'), line);
      if (t.text == "none" || t.text == "None") return literal(Value::none(), line);
      auto e = make(Expr::Kind::Name, line);
      e->name = t.text;
      return e;
    }
    if (t.type == Tok::String) {
      std::string s = next().text;
      while (peek().type == Tok::String) s += next().text;
      return literal(Value::string(s), line);
    }
    if (t.type == Tok::Int || t.type == Tok::Float) {
      next();
      return literal(t.type == Tok::Int ? Value::integer(t.i) : Value::number(t.f), line);
    }
    if (is_op("(")) return parse_parenthesized(line);
    if (is_op("[")) return parse_collection(Expr::Kind::List, "]", line);
    if (is_op("{")) return parse_collection(Expr::Kind::Dict, "}", line);
    error("unexpected " + describe(t) + " in expression");
  }

  // (), (x) or (x, y, ...), at its '('.
  [[gnu::always_inline]] ExprP parse_parenthesized(int line) {
    next();
    if (is_op(")")) {
      next();
      return make(Expr::Kind::Tuple, line);
    }
    ExprP first = parse_expression();
    if (is_op(")")) {
      next();
      return first;
    }
    auto tup = make(Expr::Kind::Tuple, line);
    tup->args.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (is_op(")")) break;
      tup->args.push_back(parse_expression());
    }
    expect_op(")");
    return seal(std::move(tup));
  }

  // [a, b, ...] or {k: v, ...} (a trailing comma allowed), at its opening bracket.
  [[gnu::always_inline]] ExprP parse_collection(Expr::Kind kind, const char* close, int line) {
    next();
    auto e = make(kind, line);
    while (!is_op(close)) {
      if (!e->args.empty()) expect_op(",");
      if (is_op(close)) break;
      e->args.push_back(parse_expression());
      if (kind == Expr::Kind::Dict) {
        expect_op(":");
        e->args.push_back(parse_expression());
      }
    }
    next();
    return seal(std::move(e));
  }

  void parse_call_args(Expr& call) {
    expect_op("(");
    size_t count = 0;
    while (!is_op(")")) {
      if (count++ > 0) expect_op(",");
      if (is_op(")")) break;
      if (peek().type == Tok::Name && is_op("=", 1)) {
        std::string key = next().text;
        next();
        call.kwargs.emplace_back(key, parse_expression());
      } else {
        if (!call.kwargs.empty()) error("positional argument after keyword argument");
        call.args.push_back(parse_expression());
      }
    }
    next();
  }

  ExprP parse_postfix(ExprP e) {
    while (true) {
      if (is_op(".")) {
        int line = next().line;
        if (peek().type == Tok::Int) {
          ExprP index = literal(Value::integer(next().i), line);
          e = subscript(std::move(e), std::move(index), line);
          continue;
        }
        auto a = make(Expr::Kind::Attr, line);
        a->name = expect_name();
        a->args.push_back(std::move(e));
        e = seal(std::move(a));
      } else if (is_op("[")) {
        int line = next().line;
        ExprP parts[3];
        bool is_slice = false;
        int part = 0;
        while (!is_op("]")) {
          if (is_op(":")) {
            next();
            is_slice = true;
            if (++part > 2) error("too many ':' in slice");
            continue;
          }
          parts[part] = parse_expression();
        }
        next();
        if (is_slice) {
          auto s = make(Expr::Kind::Slice, line);
          s->args.push_back(std::move(e));
          for (auto& p : parts) s->args.push_back(std::move(p));  // null entries mean "omitted"
          e = seal(std::move(s));
        } else {
          if (!parts[0]) error("empty subscript");
          e = subscript(std::move(e), std::move(parts[0]), line);
        }
      } else if (is_op("(")) {
        e = parse_call_expr(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprP parse_one_filter(ExprP e) {
    int line = peek().line;
    auto f = make(Expr::Kind::Filter, line);
    f->name = expect_name();
    while (is_op(".")) {  // dotted filter names
      next();
      f->name += "." + expect_name();
    }
    f->args.push_back(std::move(e));
    if (is_op("(")) parse_call_args(*f);
    return seal(std::move(f));
  }

  ExprP parse_filter_chain(ExprP e, bool first_without_bar = false) {
    if (first_without_bar) e = parse_one_filter(std::move(e));
    while (is_op("|")) {
      next();
      e = parse_one_filter(std::move(e));
    }
    return e;
  }

  ExprP parse_filter_expr(ExprP e) {
    while (true) {
      if (is_op("|")) {
        next();
        e = parse_one_filter(std::move(e));
      } else if (is_name("is")) {
        int line = next().line;
        auto t = make(Expr::Kind::Test, line);
        if (is_name("not")) {
          next();
          t->negated = true;
        }
        if (peek().type == Tok::Name) {
          t->name = next().text;
        } else if (is_comparison_op()) {
          t->name = next().text;
        } else {
          error("expected a test name after 'is', got " + describe(peek()));
        }
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*t);
        } else if ((peek().type == Tok::Name || peek().type == Tok::String || peek().type == Tok::Int ||
                    peek().type == Tok::Float || is_op("[") || is_op("{")) &&
                   !(is_name("else") || is_name("or") || is_name("and") || is_name("if") || is_name("in") ||
                     is_name("is") || is_name("not"))) {
          ExprP arg = parse_postfix(parse_primary());
          t->args.push_back(std::move(arg));
        }
        e = seal(std::move(t));
      } else if (is_op("(")) {
        e = parse_call_expr(std::move(e));
      } else {
        return e;
      }
    }
  }
};

}  // namespace

Body parse_template(const std::string& source) { return Parser(lex(source)).parse_all(); }

}  // namespace automodel::tokenizer::jinja

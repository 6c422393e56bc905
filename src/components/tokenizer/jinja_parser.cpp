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
      s->body = parse_body({"endgeneration"});
      take_end_tag();
      expect_block_end();
      open_.pop_back();
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
    s->body = parse_body({"endwith"});
    take_end_tag();
    expect_block_end();
    open_.pop_back();
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
    s->body = parse_body({"endset"});
    take_end_tag();
    expect_block_end();
    open_.pop_back();
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
    s->body = parse_body({"endmacro"});
    take_end_tag();
    expect_block_end();
    open_.pop_back();
    return s;
  }

  StmtP parse_call(int line) {
    auto s = make_stmt(Stmt::Kind::CallBlock, line);
    open_block("call");
    if (is_op("(")) parse_params(s->params);
    s->expr = parse_expression();
    if (s->expr->kind != Expr::Kind::Call) error("expected a call after {% call %}");
    expect_block_end();
    s->body = parse_body({"endcall"});
    take_end_tag();
    expect_block_end();
    open_.pop_back();
    return s;
  }

  StmtP parse_filter_block(int line) {
    auto s = make_stmt(Stmt::Kind::FilterBlock, line);
    open_block("filter");
    s->expr = parse_filter_chain(rendered_body(line), /*first_without_bar=*/true);
    expect_block_end();
    s->body = parse_body({"endfilter"});
    take_end_tag();
    expect_block_end();
    open_.pop_back();
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

  ExprP parse_or() {
    ExprP e = parse_and();
    while (is_name("or")) {
      int line = next().line;
      e = binary(Expr::Kind::Or, "or", std::move(e), parse_and(), line);
    }
    return e;
  }
  ExprP parse_and() {
    ExprP e = parse_not();
    while (is_name("and")) {
      int line = next().line;
      e = binary(Expr::Kind::And, "and", std::move(e), parse_not(), line);
    }
    return e;
  }
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
      if (peek().type == Tok::Op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                     peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
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
  ExprP parse_math1() {
    ExprP e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = next();
      e = binary(Expr::Kind::Binary, t.text, std::move(e), parse_concat(), t.line);
    }
    return e;
  }
  ExprP parse_concat() {
    ExprP e = parse_math2();
    while (is_op("~")) {
      int line = next().line;
      e = binary(Expr::Kind::Binary, "~", std::move(e), parse_math2(), line);
    }
    return e;
  }
  ExprP parse_math2() {
    ExprP e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      e = binary(Expr::Kind::Binary, t.text, std::move(e), parse_pow(), t.line);
    }
    return e;
  }
  ExprP parse_pow() {
    ExprP e = parse_unary(true);
    while (is_op("**")) {
      int line = next().line;
      e = binary(Expr::Kind::Binary, "**", std::move(e), parse_unary(true), line);
    }
    return e;
  }
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
      if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
        auto e = make(Expr::Kind::Literal, line);
        e->literal = Value::boolean(t.text[0] == 't' || t.text[0] == 'T');
        return e;
      }
      if (t.text == "none" || t.text == "None") {
        auto e = make(Expr::Kind::Literal, line);
        e->literal = Value::none();
        return e;
      }
      auto e = make(Expr::Kind::Name, line);
      e->name = t.text;
      return e;
    }
    if (t.type == Tok::String) {
      std::string s = next().text;
      while (peek().type == Tok::String) s += next().text;
      auto e = make(Expr::Kind::Literal, line);
      e->literal = Value::string(s);
      return e;
    }
    if (t.type == Tok::Int || t.type == Tok::Float) {
      next();
      auto e = make(Expr::Kind::Literal, line);
      e->literal = t.type == Tok::Int ? Value::integer(t.i) : Value::number(t.f);
      return e;
    }
    if (is_op("(")) {
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
    if (is_op("[")) {
      next();
      auto e = make(Expr::Kind::List, line);
      while (!is_op("]")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("]")) break;
        e->args.push_back(parse_expression());
      }
      next();
      return seal(std::move(e));
    }
    if (is_op("{")) {
      next();
      auto e = make(Expr::Kind::Dict, line);
      while (!is_op("}")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("}")) break;
        e->args.push_back(parse_expression());
        expect_op(":");
        e->args.push_back(parse_expression());
      }
      next();
      return seal(std::move(e));
    }
    error("unexpected " + describe(t) + " in expression");
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
          auto it = make(Expr::Kind::Item, line);
          auto idx = make(Expr::Kind::Literal, line);
          idx->literal = Value::integer(next().i);
          it->args.push_back(std::move(e));
          it->args.push_back(std::move(idx));
          e = seal(std::move(it));
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
          auto it = make(Expr::Kind::Item, line);
          it->args.push_back(std::move(e));
          it->args.push_back(std::move(parts[0]));
          e = seal(std::move(it));
        }
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::Call, peek().line);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = seal(std::move(c));
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
        } else if (peek().type == Tok::Op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                              peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
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
        auto c = make(Expr::Kind::Call, peek().line);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = seal(std::move(c));
      } else {
        return e;
      }
    }
  }
};

}  // namespace

Body parse_template(const std::string& source) { return Parser(lex(source)).parse_all(); }

}  // namespace automodel::tokenizer::jinja

#include "components/tokenizer/jinja_eval.h"

#include <chrono>
#include <map>
#include <memory>
#include <set>

#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/jinja_builtins.h"
#include "core/error.h"

namespace automodel::tokenizer::jinja {
namespace {

using Scope = std::map<std::string, Value>;
using Scopes = std::vector<std::shared_ptr<Scope>>;

enum class Flow { Normal, Break, Continue };

namespace lim = template_limits;

const char* const kFixTemplate = "fix the chat template; no real chat template comes near this limit";

class Interpreter {
 public:
  Interpreter(const Dict& context, double max_seconds) : max_seconds_(max_seconds) {
    auto globals = std::make_shared<Scope>();
    for (auto& kv : make_globals().items) (*globals)[kv.first] = kv.second;
    for (auto& kv : context.items) (*globals)[kv.first] = kv.second;
    scopes_.push_back(globals);
  }

  // Values are shared_ptr graphs, and a template can close a cycle: a macro stored in the scope it captures, or a
  // namespace assigned into itself (the sandbox forbids every other in-place mutation). Emptying the captured
  // scopes and the assigned namespaces once the render is over frees every cycle.
  ~Interpreter() {
    for (const auto& w : captured_scopes_)
      if (auto scope = w.lock()) Scope().swap(*scope);
    for (const auto& w : assigned_namespaces_)
      if (auto dict = w.lock()) decltype(dict->items)().swap(dict->items);
  }
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  std::string run(const Body& body) {
    std::string out;
    stack_base_ = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    started_ = std::chrono::steady_clock::now();
    try {
      Flow f = exec_body(body, out);
      if (f != Flow::Normal) fail("'break'/'continue' outside of a loop");
    } catch (const RaisedError& e) {
      throw Error(e.what(), "chat template line " + std::to_string(line_) + " (raise_exception)");
    } catch (const LimitError& e) {
      throw Error(e.what(), "chat template line " + std::to_string(line_) + ", in " + construct_, e.hint);
    } catch (const TemplateError& e) {
      throw Error(e.what(), "chat template line " + std::to_string(line_) + ", in " + construct_);
    }
    return out;
  }

 private:
  Scopes scopes_;
  std::set<std::weak_ptr<Scope>, std::owner_less<>> captured_scopes_;
  std::set<std::weak_ptr<Dict>, std::owner_less<>> assigned_namespaces_;
  int line_ = 0;
  std::string construct_ = "template";
  double max_seconds_;
  uintptr_t stack_base_ = 0;
  std::chrono::steady_clock::time_point started_;
  int64_t loop_iterations_ = 0;
  int call_depth_ = 0;
  uint32_t ticks_ = 0;

  // The recursion backstop and the clock, on every statement and expression (the clock every 4096th time).
  void guard() {
    uintptr_t here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    if (stack_base_ - here > lim::kMaxStackBytes)
      fail_limit("the template nests blocks, expressions and macro calls too deeply (more than " +
                     std::to_string(lim::kMaxStackBytes >> 20) + " MiB of interpreter stack)",
                 kFixTemplate);
    if ((++ticks_ & 4095) == 0) check_time();
  }
  void check_time() const {
    std::chrono::duration<double> spent = std::chrono::steady_clock::now() - started_;
    if (spent.count() > max_seconds_)
      fail_limit("rendering the template took more than the time limit of " + format_float(max_seconds_) + " s",
                 "fix the chat template (a loop or recursion that runs far longer than any chat template needs)");
  }
  void count_iteration() {
    if (++loop_iterations_ > lim::kMaxLoopIterations)
      fail_limit("the template ran more than " + std::to_string(lim::kMaxLoopIterations) +
                     " loop iterations (all {% for %} loops of the render together)",
                 "fix the chat template (nested range() loops, or loops over far more items than a conversation has)");
    if ((loop_iterations_ & 1023) == 0) check_time();
  }
  void append(std::string& out, const std::string& s, int line) {
    if (out.size() + s.size() > lim::kMaxStringBytes) {
      at(line, "template output");
      check_string_size(out.size() + s.size(), "the rendered text");
    }
    out += s;
  }

  void at(int line, std::string construct) {
    line_ = line;
    construct_ = std::move(construct);
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = (*it)->find(name);
      if (f != (*it)->end()) return f->second;
    }
    return Value::undefined("'" + name + "' is undefined");
  }

  void assign(const Expr& target, const Value& v) {
    if (target.kind == Expr::Kind::Name) {
      (*scopes_.back())[target.name] = v;
      return;
    }
    // ns.attr = value
    Value obj = lookup(target.args[0]->name);
    if (obj.kind != Value::Kind::Namespace)
      fail("cannot assign attribute '" + target.name + "' on '" + target.args[0]->name + "': not a namespace");
    if (!target.name.empty() && target.name[0] == '_')
      fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + target.name + "'.");
    obj.dict->set(target.name, v);
    assigned_namespaces_.insert(obj.dict);
  }

  void assign_targets(const std::vector<ExprP>& targets, const Value& v) {
    if (targets.size() == 1) {
      assign(*targets[0], v);
      return;
    }
    List items = iterate(v);
    if (items.size() != targets.size())
      fail("cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) +
           " targets");
    for (size_t k = 0; k < targets.size(); ++k) assign(*targets[k], items[k]);
  }

  Flow exec_body(const Body& body, std::string& out) {
    guard();
    for (const auto& s : body) {
      Flow f = exec(*s, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  // A scope on top of the stack for the guard's lifetime.
  class PushedScope {
   public:
    PushedScope(Scopes& scopes, std::shared_ptr<Scope> scope) : scopes_(scopes) { scopes_.push_back(std::move(scope)); }
    ~PushedScope() { scopes_.pop_back(); }
    PushedScope(const PushedScope&) = delete;
    PushedScope& operator=(const PushedScope&) = delete;

   private:
    Scopes& scopes_;
  };

  std::string render_scoped(const Body& body) {
    std::string out;
    Flow f;
    {
      PushedScope pushed(scopes_, std::make_shared<Scope>());
      f = exec_body(body, out);
    }
    if (f != Flow::Normal) fail("'break'/'continue' outside of a loop");
    return out;
  }

  // One function per kind of statement, out of line for the reason given at eval.
  Flow exec(const Stmt& s, std::string& out) {
    switch (s.kind) {
      case Stmt::Kind::Text: append(out, s.text, s.line); return Flow::Normal;
      case Stmt::Kind::Output: {
        at(s.line, "expression output");
        append(out, to_str(eval(*s.expr)), s.line);
        return Flow::Normal;
      }
      case Stmt::Kind::If: return exec_if(s, out);
      case Stmt::Kind::For: return exec_for(s, out);
      case Stmt::Kind::Set: {
        at(s.line, "set");
        assign_targets(s.targets, eval(*s.expr));
        return Flow::Normal;
      }
      case Stmt::Kind::SetBlock: exec_set_block(s); return Flow::Normal;
      case Stmt::Kind::Macro: {
        at(s.line, "macro " + s.text);
        (*scopes_.back())[s.text] = make_macro(s, s.text, scopes_);
        return Flow::Normal;
      }
      case Stmt::Kind::CallBlock: exec_call_block(s, out); return Flow::Normal;
      case Stmt::Kind::FilterBlock: {
        std::string body = render_scoped(s.body);
        at(s.line, "filter block");
        append(out, to_str(eval_with_body(*s.expr, Value::string(body))), s.line);
        return Flow::Normal;
      }
      case Stmt::Kind::Break: return Flow::Break;
      case Stmt::Kind::Continue: return Flow::Continue;
      case Stmt::Kind::Scope: return exec_with(s, out);
    }
    return Flow::Normal;
  }

  [[gnu::noinline]] Flow exec_if(const Stmt& s, std::string& out) {
    for (const auto& br : s.branches) {
      at(s.line, "if");
      if (eval(*br.first).truthy()) return exec_body(br.second, out);
    }
    return exec_body(s.else_body, out);
  }

  [[gnu::noinline]] void exec_set_block(const Stmt& s) {
    std::string body = render_scoped(s.body);
    at(s.line, "set block");
    Value v = Value::string(body);
    if (s.expr) v = eval_with_body(*s.expr, v);
    assign(*s.targets[0], v);
  }

  [[gnu::noinline]] void exec_call_block(const Stmt& s, std::string& out) {
    at(s.line, "call block");
    auto scope = std::make_shared<Scope>();
    (*scope)["caller"] = make_macro(s, "caller", scopes_);
    Value v;
    {
      PushedScope pushed(scopes_, scope);
      v = eval(*s.expr);
    }
    append(out, to_str(v), s.line);
  }

  // {% with a = ... %} (and {% generation %}, which has no variables).
  [[gnu::noinline]] Flow exec_with(const Stmt& s, std::string& out) {
    if (s.params.empty()) return exec_body(s.body, out);
    auto scope = std::make_shared<Scope>();
    at(s.line, "with");
    for (const auto& p : s.params) (*scope)[p.first] = eval(*p.second);
    PushedScope pushed(scopes_, scope);
    return exec_body(s.body, out);
  }

  Value eval_with_body(const Expr& filters, const Value& body) {
    auto scope = std::make_shared<Scope>();
    (*scope)["\x01body"] = body;
    PushedScope pushed(scopes_, scope);
    return eval(filters);
  }

  Value make_macro(const Stmt& s, const std::string& name, const Scopes& closure) {
    captured_scopes_.insert(closure.begin(), closure.end());
    return Value::callable(name, [this, macro = &s, closure, name](List& args, KwArgs& kwargs) {
      return call_macro(*macro, name, closure, args, kwargs);
    });
  }

  // A call of a macro (or of a call block's `caller`): a new scope for its arguments on top of the scopes it was
  // defined in, in place of the caller's scopes until it returns.
  Value call_macro(const Stmt& macro, const std::string& name, const Scopes& closure, List& args, KwArgs& kwargs) {
    struct Depth {
      int& d;
      explicit Depth(int& depth) : d(depth) { ++d; }
      ~Depth() { --d; }
    } depth(call_depth_);
    if (call_depth_ > lim::kMaxCallDepth)
      fail_limit("macro '" + name + "' is called more than " + std::to_string(lim::kMaxCallDepth) +
                     " levels deep (runaway recursion?)",
                 "fix the chat template: a recursive macro needs a case that stops it");
    check_time();
    if (args.size() > macro.params.size() && name != "caller")
      fail("macro '" + name + "' takes " + std::to_string(macro.params.size()) + " arguments, got " +
           std::to_string(args.size()));
    struct Restore {
      Scopes& scopes;
      Scopes saved;
      ~Restore() { scopes = std::move(saved); }
    } restore{scopes_, scopes_};
    scopes_ = closure;
    auto scope = std::make_shared<Scope>();
    scopes_.push_back(scope);
    bind_arguments(macro, name, args, kwargs, *scope, *restore.saved.back());
    std::string out;
    if (exec_body(macro.body, out) != Flow::Normal) fail("'break'/'continue' outside of a loop");
    return Value::string(out);
  }

  // Parameters from the positional and keyword arguments or their defaults (evaluated in `scope`, so a default can
  // use the parameters before it), the rest in varargs and kwargs, and the caller's `caller` passed on.
  void bind_arguments(const Stmt& macro, const std::string& name, List& args, KwArgs& kwargs, Scope& scope,
                      const Scope& callers_scope) {
    for (size_t k = 0; k < macro.params.size(); ++k) {
      const auto& p = macro.params[k];
      Value v = Value::undefined("'" + p.first + "' is undefined");
      bool set = false;
      if (k < args.size()) {
        v = args[k];
        set = true;
      }
      for (auto& kv : kwargs)
        if (kv.first == p.first) {
          v = kv.second;
          set = true;
        }
      if (!set && p.second) v = eval(*p.second);
      scope[p.first] = v;
    }
    List varargs;
    for (size_t k = macro.params.size(); k < args.size(); ++k) varargs.push_back(args[k]);
    scope["varargs"] = Value::make_list(varargs);
    Dict extra;
    for (auto& kv : kwargs) {
      bool known = false;
      for (const auto& p : macro.params) known = known || p.first == kv.first;
      if (!known) extra.set(kv.first, kv.second);
    }
    scope["kwargs"] = Value::make_dict(extra);
    if (name != "caller")
      if (auto c = callers_scope.find("caller"); c != callers_scope.end()) scope["caller"] = c->second;
  }

  Flow exec_for(const Stmt& s, std::string& out) {
    at(s.line, "for");
    List items = iterate(eval(*s.expr));
    if (s.cond) items = filtered(s, items);
    if (items.empty()) return exec_body(s.else_body, out);
    for (size_t k = 0; k < items.size(); ++k) {
      count_iteration();
      auto scope = std::make_shared<Scope>();
      (*scope)["loop"] = loop_variable(items, k);
      PushedScope pushed(scopes_, scope);
      at(s.line, "for");
      assign_targets(s.targets, items[k]);
      if (exec_body(s.body, out) == Flow::Break) break;
    }
    return Flow::Normal;
  }

  // The items of {% for x in items if cond %} for which cond holds.
  List filtered(const Stmt& s, const List& all) {
    List items;
    for (const auto& it : all) {
      count_iteration();
      PushedScope pushed(scopes_, std::make_shared<Scope>());
      assign_targets(s.targets, it);
      at(s.line, "for ... if");
      if (eval(*s.cond).truthy()) items.push_back(it);
    }
    return items;
  }

  // Jinja2's `loop` in iteration k of a loop over items.
  static Value loop_variable(const List& items, size_t k) {
    const int64_t i = static_cast<int64_t>(k), n = static_cast<int64_t>(items.size());
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
    loop.set("previtem", k > 0 ? items[k - 1] : Value::undefined("there is no previous item"));
    loop.set("nextitem", k + 1 < items.size() ? items[k + 1] : Value::undefined("there is no next item"));
    loop.set("cycle", Value::callable("cycle", [k](List& a, KwArgs&) {
               if (a.empty()) fail("no items for cycling given");
               return a[k % a.size()];
             }));
    return Value::make_dict(loop);
  }

  void eval_args(const Expr& e, size_t first, List& args, KwArgs& kwargs) {
    for (size_t k = first; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
    for (const auto& kv : e.kwargs) kwargs.emplace_back(kv.first, eval(*kv.second));
  }

  // One function per kind of expression; each names its construct (at) after its operands are evaluated, so an
  // error names the innermost construct that failed. They stay out of line: eval's frame is on the stack once per
  // nesting level, and inlined they would all add their locals to it (the stack backstop in guard() would then
  // stop a nested template sooner).
  Value eval(const Expr& e) {
    guard();
    line_ = e.line;
    switch (e.kind) {
      case Expr::Kind::Literal: return e.literal;
      case Expr::Kind::Name: return lookup(e.name);
      case Expr::Kind::List:
      case Expr::Kind::Tuple: return eval_sequence(e);
      case Expr::Kind::Dict: return eval_dict(e);
      case Expr::Kind::Attr: return eval_attr(e);
      case Expr::Kind::Item: return eval_item(e);
      case Expr::Kind::Slice: return eval_slice(e);
      case Expr::Kind::Call: return eval_call(e);
      case Expr::Kind::Filter: return eval_filter(e);
      case Expr::Kind::Test: return eval_test(e);
      case Expr::Kind::Neg:
      case Expr::Kind::Pos: return eval_unary(e);
      case Expr::Kind::Not: return Value::boolean(!eval(*e.args[0]).truthy());
      case Expr::Kind::And: {
        Value l = eval(*e.args[0]);
        return l.truthy() ? eval(*e.args[1]) : l;
      }
      case Expr::Kind::Or: {
        Value l = eval(*e.args[0]);
        return l.truthy() ? l : eval(*e.args[1]);
      }
      case Expr::Kind::Binary: return eval_binary(e);
      case Expr::Kind::Compare: return eval_compare(e);
      case Expr::Kind::Cond: return eval_cond(e);
    }
    return Value();
  }

  [[gnu::noinline]] Value eval_sequence(const Expr& e) {
    List items;
    for (const auto& a : e.args) items.push_back(eval(*a));
    return Value::make_list(items, e.kind == Expr::Kind::Tuple);
  }

  [[gnu::noinline]] Value eval_dict(const Expr& e) {
    Dict d;
    for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
      Value key = eval(*e.args[k]);
      if (!key.is_string()) fail("only string keys are supported in dict literals");
      d.set(key.s, eval(*e.args[k + 1]));
    }
    return Value::make_dict(d);
  }

  [[gnu::noinline]] Value eval_attr(const Expr& e) {
    Value obj = eval(*e.args[0]);
    at(e.line, "attribute '." + e.name + "'");
    return get_attr(obj, e.name);
  }

  [[gnu::noinline]] Value eval_item(const Expr& e) {
    Value obj = eval(*e.args[0]);
    Value key = eval(*e.args[1]);
    at(e.line, "subscript [" + repr(key) + "]");
    return get_item(obj, key);
  }

  [[gnu::noinline]] Value eval_slice(const Expr& e) {
    Value obj = eval(*e.args[0]);
    Value parts[3];
    for (int k = 0; k < 3; ++k) parts[k] = e.args[1 + k] ? eval(*e.args[1 + k]) : Value::none();
    at(e.line, "slice");
    return slice(obj, parts[0], parts[1], parts[2]);
  }

  [[gnu::noinline]] Value eval_call(const Expr& e) {
    Value fn = eval(*e.args[0]);
    List args;
    KwArgs kwargs;
    eval_args(e, 1, args, kwargs);
    std::string what = e.args[0]->kind == Expr::Kind::Name   ? e.args[0]->name
                       : e.args[0]->kind == Expr::Kind::Attr ? e.args[0]->name
                                                             : "expression";
    at(e.line, "call of '" + what + "'");
    if (fn.kind != Value::Kind::Callable) {
      if (fn.is_undefined() && !fn.s.empty()) fail(fn.s);
      fail("'" + what + "' is not callable (" + kind_name(fn) + ")");
    }
    int line = e.line;
    auto fnp = fn.fn;
    Value r = fnp->fn(args, kwargs);
    at(line, "call of '" + what + "'");
    return r;
  }

  [[gnu::noinline]] Value eval_filter(const Expr& e) {
    Value input = eval(*e.args[0]);
    List args;
    KwArgs kwargs;
    eval_args(e, 1, args, kwargs);
    at(e.line, "filter '" + e.name + "'");
    return apply_filter(e.name, input, args, kwargs);
  }

  [[gnu::noinline]] Value eval_test(const Expr& e) {
    Value input = eval(*e.args[0]);
    List args;
    KwArgs kwargs;
    eval_args(e, 1, args, kwargs);
    at(e.line, "test '" + e.name + "'");
    return Value::boolean(apply_test(e.name, input, args) != e.negated);
  }

  [[gnu::noinline]] Value eval_unary(const Expr& e) {
    Value v = eval(*e.args[0]);
    at(e.line, "unary operator");
    if (!v.is_number()) fail(std::string("bad operand type for unary operator: '") + kind_name(v) + "'");
    if (e.kind == Expr::Kind::Pos) return v.kind == Value::Kind::Bool ? Value::integer(v.b) : v;
    if (v.kind == Value::Kind::Float) return Value::number(-v.f);
    return Value::integer(checked_sub(0, v.kind == Value::Kind::Bool ? v.b : v.i));
  }

  [[gnu::noinline]] Value eval_binary(const Expr& e) {
    Value l = eval(*e.args[0]);
    Value r = eval(*e.args[1]);
    at(e.line, "operator '" + e.name + "'");
    return binary_op(e.name, l, r);
  }

  // a < b < c: each comparison in turn, stopping at the first false one (Python's chained comparisons).
  [[gnu::noinline]] Value eval_compare(const Expr& e) {
    Value l = eval(*e.args[0]);
    for (size_t k = 0; k < e.ops.size(); ++k) {
      Value r = eval(*e.args[k + 1]);
      at(e.line, "comparison '" + e.ops[k] + "'");
      if (!compare_once(e.ops[k], l, r)) return Value::boolean(false);
      l = r;
    }
    return Value::boolean(true);
  }

  static bool compare_once(const std::string& op, const Value& l, const Value& r) {
    if (op == "==") return equals(l, r);
    if (op == "!=") return !equals(l, r);
    if (op == "in") return contains(r, l);
    if (op == "not in") return !contains(r, l);
    if (l.is_undefined() || r.is_undefined()) fail((l.is_undefined() ? l : r).s);
    int c = compare(l, r);
    return op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
  }

  [[gnu::noinline]] Value eval_cond(const Expr& e) {
    if (eval(*e.args[0]).truthy()) return eval(*e.args[1]);
    if (e.args.size() > 2) return eval(*e.args[2]);
    return Value::undefined("the inline if-expression evaluated to false and no else section was defined");
  }
};

}  // namespace

std::string render(const Body& body, const Dict& context, double max_seconds) {
  return Interpreter(context, max_seconds).run(body);
}

}  // namespace automodel::tokenizer::jinja

// Bad input to components/tokenizer: chat templates that would overflow the stack, loop forever or exhaust memory,
// malformed tokenizer.json / tokenizer_config.json, regexes PCRE2 gives up on. Each is a clear automodel::Error.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/jinja_ast.h"
#include "components/tokenizer/jinja_eval.h"
#include "error_of.h"

using automodel::testing::error_of;
using automodel::tokenizer::render_template;
using json = nlohmann::ordered_json;
namespace lim = automodel::tokenizer::template_limits;

namespace {

std::string R(const std::string& src, const json& ctx = json::object()) { return render_template(src, ctx); }
std::string render_error(const std::string& src, const json& ctx = json::object()) {
  return error_of([&] { R(src, ctx); });
}
std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int k = 0; k < n; ++k) out += s;
  return out;
}
bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

// ---------------------------------------------------------------- chat template limits

TEST(JinjaLimits, NestedBlocksAndExpressionsStopAtTheNestingLimit) {
  const int deep = 100000;  // each of these overflowed the stack before the limit
  std::string blocks = repeat("{% if true %}", deep) + "x" + repeat("{% endif %}", deep);
  std::string parens = "{{ " + repeat("(", deep) + "1" + repeat(")", deep) + " }}";
  std::string lists = "{{ " + repeat("[", deep) + "1" + repeat("]", deep) + " }}";
  std::string dicts = "{{ " + repeat("{'a': ", deep) + "1" + repeat("}", deep) + " }}";
  std::string sums = "{{ 1" + repeat(" + 1", deep) + " }}";
  std::string nots = "{{ " + repeat("not ", deep) + "1 }}";
  std::string negs = "{{ " + repeat("- ", deep) + "1 }}";
  std::string attrs = "{{ x" + repeat(".a", deep) + " }}";
  std::string filters = "{{ x" + repeat("|string", deep) + " }}";
  std::string calls = "{{ x" + repeat("()", deep) + " }}";
  for (const std::string* src : {&parens, &lists, &dicts, &sums, &nots, &negs, &attrs, &filters, &calls}) {
    std::string err = render_error("line one\n" + *src);
    EXPECT_TRUE(has(err, "line 2: the template nests expressions more than 128 levels deep")) << err;
    EXPECT_TRUE(has(err, "what to do: fix the chat template")) << err;
  }
  std::string err = render_error(blocks);
  EXPECT_TRUE(has(err, "nests blocks more than 128 levels deep")) << err;
  // Below the limit all of these render.
  EXPECT_EQ(R(repeat("{% if true %}", 100) + "x" + repeat("{% endif %}", 100)), "x");
  EXPECT_EQ(R("{{ " + repeat("(", 100) + "1" + repeat(")", 100) + " }}"), "1");
  EXPECT_EQ(R("{{ 0" + repeat(" + 1", 100) + " }}"), "100");
  EXPECT_EQ(R("{{ " + repeat("[", 50) + "1" + repeat("]", 50) + " | length }}"), "1");
}

TEST(JinjaLimits, MacroRecursionStopsAtTheCallDepthLimit) {
  std::string err = render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}");
  EXPECT_TRUE(has(err, "macro 'f' is called more than 100 levels deep")) << err;
  EXPECT_TRUE(has(err, "where: chat template line")) << err;
  EXPECT_TRUE(has(err, "a recursive macro needs a case that stops it")) << err;
  // Recursion that stops renders (a recursive macro over nested data, as tool-schema templates do).
  EXPECT_EQ(R("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(50)|length }}"), "91");
}

TEST(JinjaLimits, DeepNestingInsideRecursionHitsTheStackBackstop) {
  std::string body = repeat("{% if true %}", 120) + "{{ " + repeat("(", 100) + "f(n + 1)" + repeat(")", 100) + " }}" +
                     repeat("{% endif %}", 120);
  std::string err = render_error("{% macro f(n) %}{% if n < 99 %}" + body + "{% endif %}{% endmacro %}{{ f(0) }}");
  EXPECT_TRUE(has(err, "nests blocks, expressions and macro calls too deeply")) << err;
}

TEST(JinjaLimits, LoopIterationsAreLimitedInTotal) {
  std::string err =
      render_error("a\nb\n{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  EXPECT_TRUE(has(err, "more than 1000000 loop iterations")) << err;
  EXPECT_TRUE(has(err, "where: chat template line 3, in for")) << err;
  EXPECT_EQ(R("{% for i in range(100000) %}{% endfor %}{% for i in range(1000) %}{% endfor %}done"), "done");
}

TEST(JinjaLimits, WallTimeIsLimited) {
  namespace jinja = automodel::tokenizer::jinja;
  jinja::Body body = jinja::parse_template(
      "{% for i in range(1000) %}{% for j in range(1000) %}{{ ('x' * 100)|replace('x', 'yy')|length }}"
      "{% endfor %}{% endfor %}");
  std::string err = error_of([&] { jinja::render(body, jinja::Dict{}, 0.05); });
  EXPECT_TRUE(has(err, "took more than the time limit of 0.05 s")) << err;
}

TEST(JinjaLimits, StringsListsAndOutputCannotExhaustMemory) {
  auto string_limit = [](const std::string& src) {
    std::string err = render_error(src);
    EXPECT_TRUE(has(err, "over the string size limit of 67108864 bytes")) << src << "\n" << err;
  };
  string_limit("{{ 'x' * 10**12 }}");
  string_limit("{{ 10**12 * 'x' }}");
  string_limit("{{ ('x' * 1000000) * 1000 }}");
  string_limit("{% set s = 'x' * 60000000 %}{{ s ~ s }}");
  string_limit("{% set s = 'x' * 60000000 %}{{ s + s }}");
  string_limit("{{ ('x' * 100000)|replace('x', 'y' * 1000) }}");
  string_limit("{{ ('x' * 100000).replace('x', 'y' * 1000) }}");
  string_limit("{{ range(100000)|join('x' * 1000) }}");
  string_limit("{{ ('x' * 1000).join(['y' * 100000] * 1000) }}");
  string_limit("{{ 'x'|center(10**15) }}");
  string_limit("{{ 'x\\ny'|indent(10**15) }}");
  string_limit("{{ [1]|tojson(indent=10**9) }}");
  string_limit("{{ [['x' * 1000000] * 100] * 100 }}");
  string_limit("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}");  // the rendered output
  auto list_limit = [](const std::string& src) {
    std::string err = render_error(src);
    EXPECT_TRUE(has(err, "over the list size limit of 1000000")) << src << "\n" << err;
  };
  list_limit("{{ [1] * 10**12 }}");
  list_limit("{{ (range(100000)|list) * 11 }}");
  list_limit("{{ ('x' * 2000000)|list|length }}");
  list_limit("{% for c in 'x' * 2000000 %}{% endfor %}");
  std::string err = render_error("{{ range(10**18)|length }}");
  EXPECT_TRUE(has(err, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).")) << err;
  // Long strings are still indexed and sliced without a list of their characters.
  EXPECT_EQ(R("{% set s = 'ab' * 20000000 %}{{ s[-1] }}{{ s[1] }}{{ s[39999998:] }}{{ s[::10000000] }}"), "bbabaaaa");
}

TEST(JinjaLimits, IntegerArithmeticFailsOnOverflowInsteadOfWrapping) {
  auto overflow = [](const std::string& src) {
    std::string err = render_error(src);
    EXPECT_TRUE(has(err, "does not fit in 64 bits")) << src << "\n" << err;
  };
  overflow("{{ 9223372036854775807 + 1 }}");
  overflow("{{ -9223372036854775807 - 2 }}");
  overflow("{{ 4294967296 * 4294967296 }}");
  overflow("{{ 2 ** 63 }}");
  overflow("{{ 10 ** 100 }}");
  overflow("{{ (-9223372036854775807 - 1) // -1 }}");
  overflow("{{ -(-9223372036854775807 - 1) }}");
  overflow("{{ (-9223372036854775807 - 1)|abs }}");
  overflow("{{ 1e300|int }}");
  overflow("{{ '99999999999999999999'|int }}");
  overflow("{{ '%d' % 1e300 }}");
  overflow("{{ 99999999999999999999 }}");  // the literal itself
  overflow("{{ range(3)|sum(start=9223372036854775807) }}");
  // The edges that fit are exact.
  EXPECT_EQ(R("{{ 9223372036854775806 + 1 }}|{{ (-2) ** 63 }}|{{ (-9223372036854775807 - 1) % -1 }}"),
            "9223372036854775807|-9223372036854775808|0");
  EXPECT_EQ(R("{{ range(0, 10**18, 10**17)|length }}|{{ range(9223372036854775806, 9223372036854775807)|list }}"),
            "10|[9223372036854775806]");
  EXPECT_EQ(R("{{ [1, 2, 3][::9223372036854775807] }}{{ 'abc'[::-9223372036854775807] }}"), "[1]c");
  EXPECT_EQ(R("{{ 'nan'|float|int }}|{{ '%.3f' % 1e20 }}"), "0|100000000000000000000.000");
}

TEST(JinjaLimits, DeepOrSelfContainingValuesAreErrorsNotCrashes) {
  // A million-deep list built by a loop is freed without recursion.
  EXPECT_EQ(R("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% for j in range(999) %}"
              "{% set ns.x = [ns.x] %}{% endfor %}{% endfor %}ok"),
            "ok");
  std::string err = render_error(
      "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}");
  EXPECT_TRUE(has(err, "nests more than 128 lists/dicts/namespaces deep")) << err;
  err = render_error(
      "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|tojson }}");
  EXPECT_TRUE(has(err, "nests more than 128 lists/dicts/namespaces deep")) << err;
  err = render_error(
      "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}"
      "{{ ns.x == ns.x[0] }}");
  EXPECT_TRUE(has(err, "nests more than 128 lists/dicts/namespaces deep")) << err;
  err = render_error("{% set ns = namespace() %}{% set ns.a = ns %}{{ ns }}");
  EXPECT_TRUE(has(err, "or contains itself")) << err;
  // A context nested deeper than the limit (messages from a file) is an error too.
  json deep = "leaf";
  for (int k = 0; k < 1000; ++k) deep = json::array({deep});
  err = render_error("{{ x }}", {{"x", deep}});
  EXPECT_TRUE(has(err, "the template context (messages, tools) nests more than 128 levels deep")) << err;
}

// The chat-template Jinja2 interpreter: constructs, whitespace rules, errors, template loading and the context
// apply_chat_template builds. Byte-identity with transformers is checked by tests/oracle/test_chat_template.py.
#include <gtest/gtest.h>

#include <fstream>

#include "components/tokenizer/chat_template.h"
#include "error_of.h"
#include "temp_dir.h"

using automodel::testing::error_of;
using automodel::testing::TempDir;
using automodel::tokenizer::apply_chat_template;
using automodel::tokenizer::load_chat_templates;
using automodel::tokenizer::render_template;
using json = nlohmann::ordered_json;

namespace {

std::string R(const std::string& src, const json& ctx = json::object()) { return render_template(src, ctx); }

void write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace

TEST(Jinja, TextAndOutput) {
  EXPECT_EQ(R("hello"), "hello");
  EXPECT_EQ(R("a{{ x }}b", {{"x", 1}}), "a1b");
  EXPECT_EQ(R("{{ none }}|{{ true }}|{{ 1.0 }}|{{ 1e16 }}|{{ 0.1 + 0.2 }}"), "None|True|1.0|1e+16|0.30000000000000004");
  EXPECT_EQ(R("{{ [1, 'a', none] }}{{ {'k': 'v'} }}{{ (1,) }}"), "[1, 'a', None]{'k': 'v'}(1,)");
  EXPECT_EQ(R("{{ missing }}|{{ missing ~ 'x' }}"), "|x");
  EXPECT_EQ(R("line\n"), "line");  // keep_trailing_newline=False
}

TEST(Jinja, TrimAndLstripBlocks) {
  EXPECT_EQ(R("a\n  {% if true %}\n    b\n  {% endif %}\nc"), "a\n    b\nc");
  EXPECT_EQ(R("x   {{- 'y' -}}   z"), "xyz");
  EXPECT_EQ(R("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(R("  {%+ if true %}k{% endif +%}\nx"), "  k\nx");
  EXPECT_EQ(R("a {# comment #}\n b"), "a  b");
  EXPECT_EQ(R("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
}

TEST(Jinja, IfForLoop) {
  json ctx = {{"xs", {"a", "b", "c"}}};
  EXPECT_EQ(R("{% for x in xs %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", ctx),
            "1a,2b,3c");
  EXPECT_EQ(
      R("{% for x in xs %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.length }} {% endfor %}", ctx),
      "03True3 12False3 21False3 ");
  EXPECT_EQ(R("{% for x in xs if x != 'b' %}{{ x }}{{ loop.length }}{% endfor %}", ctx), "a2c2");
  EXPECT_EQ(R("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(R("{% for i in range(9) %}{% if i == 1 %}{% continue %}{% elif i > 3 %}{% break %}{% endif %}{{ i }}"
              "{% endfor %}"),
            "023");
  EXPECT_EQ(R("{% if 0 %}a{% elif '' %}b{% else %}c{% endif %}"), "c");
}

TEST(Jinja, SetNamespaceMacroCallFilter) {
  EXPECT_EQ(R("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}"), "231");
  EXPECT_EQ(R("{% set ns = namespace(n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(R("{% set a, b = 1, 2 %}{{ a + b }}"), "3");
  EXPECT_EQ(R("{% set s %}in {{ 1 }}{% endset %}[{{ s }}]"), "[in 1]");
  EXPECT_EQ(R("{% macro m(a, b='B') %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}{{ m(2, b='x') }}"), "1B2x");
  EXPECT_EQ(R("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}body{% endcall %}"), "<body>");
  EXPECT_EQ(R("{% filter upper %}abc{% endfilter %}"), "ABC");
}

TEST(Jinja, Expressions) {
  EXPECT_EQ(R("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 3 }} {{ 'ab' * 2 }}"), "3 -4 2 3.5 8 abab");
  EXPECT_EQ(R("{{ 'a' in 'cat' }}{{ 1 not in [1] }}{{ 1 < 2 < 3 }}{{ 1 == 1.0 }}"), "TrueFalseTrueTrue");
  EXPECT_EQ(R("{{ 'y' if x else 'n' }}{{ x or 'd' }}{{ x and 1 }}"), "nd");
  EXPECT_EQ(R("{{ 'abcdef'[::-1] }} {{ [1, 2, 3, 4][1:3] }} {{ 'héllo'[1] }} {{ [1, 2, 3][-1] }}"),
            "fedcba [2, 3] é 3");
  EXPECT_EQ(R("{{ m.role }}{{ m['role'] }}{{ m.nope is defined }}", {{"m", {{"role", "user"}}}}), "useruserFalse");
  EXPECT_EQ(R("{{ 'a\\tb\\n\\u00e9\\'' }}"), "a\tb\né'");
}

TEST(Jinja, Tests) {
  EXPECT_EQ(R("{{ x is defined }}{{ x is undefined }}{{ none is none }}{{ 's' is string }}{{ {} is mapping }}"),
            "FalseTrueTrueTrueTrue");
  EXPECT_EQ(R("{{ [] is iterable }}{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is integer }}{{ true is boolean }}"),
            "TrueTrueTrueFalseTrue");
  EXPECT_EQ(R("{{ 2 is even }}{{ 2 is odd }}{{ 'a' is equalto 'a' }}{{ 3 is not divisibleby 2 }}"),
            "TrueFalseTrueTrue");
}

// Filters and tests are looked up by name in one table each; an unknown name, a missing argument and a wrong input
// each name the filter or test.
TEST(Jinja, FilterAndTestNames) {
  // As in Jinja2, `is filter` / `is test` ask about the value (the name), from the tables that run them.
  EXPECT_EQ(R("{{ 'tojson' is filter }}{{ 'd' is filter }}{{ 'center' is filter }}{{ 'nosuch' is filter }}"),
            "TrueTrueTrueFalse");
  EXPECT_EQ(R("{{ 'sameas' is test }}{{ '==' is test }}{{ 'test' is test }}{{ 'nosuch' is test }}{{ 1 is test }}"),
            "TrueTrueTrueFalseFalse");
  EXPECT_NE(error_of([] { R("{{ 1 is nosuch }}"); }).find("no test named 'nosuch'"), std::string::npos);
  EXPECT_NE(error_of([] { R("{{ 1 is sameas }}"); }).find("test 'sameas' needs an argument"), std::string::npos);
  EXPECT_NE(error_of([] { R("{{ 1 is lessthan }}"); }).find("test 'lessthan' needs an argument"), std::string::npos);
  EXPECT_NE(error_of([] { R("{{ 'x' is odd }}"); }).find("test 'odd' expects an integer"), std::string::npos);
  EXPECT_NE(error_of([] { R("{{ x | abs }}"); }).find("'x' is undefined"), std::string::npos);
  EXPECT_NE(error_of([] { R("{{ (1).x | abs }}"); }).find("has no attribute"), std::string::npos);
}

TEST(Jinja, Filters) {
  json ctx = {{"ms", {{{"role", "user"}, {"c", "x"}}, {{"role", "bot"}}, {{"role", "user"}, {"c", "y"}}}}};
  EXPECT_EQ(R("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='c') | join(',') }}", ctx), "x,y");
  EXPECT_EQ(R("{{ ms | rejectattr('role', 'equalto', 'user') | list | length }}", ctx), "1");
  EXPECT_EQ(R("{{ ms | map(attribute='role') | unique | list }}", ctx), "['user', 'bot']");
  EXPECT_EQ(R("{{ ' a ' | trim }}{{ 'ab' | upper }}{{ 'hello world' | title }}{{ 'x-y' | replace('-', '+') }}"),
            "aABHello Worldx+y");
  EXPECT_EQ(R("{{ [3, 1, 2] | sort | first }}{{ [3, 1, 2] | last }}{{ [1, 2] | reverse | list }}"), "12[2, 1]");
  EXPECT_EQ(R("{{ x | default('d') }}{{ '' | default('e', true) }}{{ '42' | int + 1 }}{{ '2.5' | float }}"), "de432.5");
  EXPECT_EQ(R("{{ 'a\\nb' | indent(2) }}|{{ -3 | abs }}|{{ 2.567 | round(2) }}"), "a\n  b|3|2.57");
  EXPECT_EQ(R("{{ {'b': 1, 'a': 'é'} | tojson }}"), "{\"b\": 1, \"a\": \"é\"}");
  EXPECT_EQ(R("{{ [1, {'a': 2}] | tojson(indent=2) }}"), "[\n  1,\n  {\n    \"a\": 2\n  }\n]");
  EXPECT_EQ(R("{{ {'b': 1, 'a': 2} | dictsort }}{{ {'a': 1} | items | list }}"), "[('a', 2), ('b', 1)][('a', 1)]");
}

TEST(Jinja, Methods) {
  EXPECT_EQ(R("{{ ' x '.strip() }}{{ 'a,b'.split(',') }}{{ 'ab'.startswith('a') }}{{ 'ab'.endswith('a') }}"),
            "x['a', 'b']TrueFalse");
  EXPECT_EQ(R("{{ 'aXa'.replace('a', 'b') }}{{ 'hi there'.title() }}{{ 'Hi'.lower() }}{{ 'Hi'.upper() }}"),
            "bXbHi TherehiHI");
  EXPECT_EQ(R("{{ d.get('a') }}{{ d.get('z', 0) }}{{ d.keys() | list }}{{ d.values() | list }}", {{"d", {{"a", 1}}}}),
            "10['a'][1]");
}

TEST(Jinja, Errors) {
  std::string e = error_of([] { R("{{ raise_exception('bad role') }}"); });
  EXPECT_NE(e.find("bad role"), std::string::npos) << e;
  e = error_of([] { R("line1\n{% for x in %}"); });
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("for"), std::string::npos) << e;
  e = error_of([] { R("a\nb\n{{ x.y.z }}"); });
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;
  EXPECT_NE(e.find("'x' is undefined"), std::string::npos) << e;
  e = error_of([] { R("{{ 1 | nosuchfilter }}"); });
  EXPECT_NE(e.find("no filter named 'nosuchfilter'"), std::string::npos) << e;
  e = error_of([] { R("{% if true %}unclosed"); });
  EXPECT_NE(e.find("endif"), std::string::npos) << e;
  e = error_of([] { R("{% set l = [] %}{{ l.append(1) }}"); });
  EXPECT_NE(e.find("unsafe"), std::string::npos) << e;
  e = error_of([] { R("{{ {'a': 1} | tojson }}{{ x | tojson }}"); });
  EXPECT_NE(e.find("not JSON serializable"), std::string::npos) << e;
  e = error_of([] { R("a\n{% endfor %}"); });
  EXPECT_NE(e.find("line 2: unexpected 'endfor' with no open block"), std::string::npos) << e;
  e = error_of([] { R("{% include 'x' %}"); });
  EXPECT_NE(e.find("unsupported statement 'include'"), std::string::npos) << e;
}

TEST(ChatTemplate, LoadAndApply) {
  TempDir dir;
  write(dir / "tokenizer_config.json",
        R"({"bos_token": "<s>", "eos_token": {"content": "</s>"},
            "chat_template": [{"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }}{{ m.extra is defined }};{% endfor %}{% if add_generation_prompt %}A:{% endif %}{{ eos_token }}"},
                              {"name": "tool_use", "template": "T{{ tools | length }}{{ messages[0].thinking }}{{ messages[0].reasoning_content }}{{ custom }}"}]})");
  auto t = load_chat_templates(dir.str());
  ASSERT_EQ(t.templates.size(), 2u);
  json msgs = json::parse(R"([{"role": "user", "content": "hi", "extra": null}])");
  EXPECT_EQ(apply_chat_template(t, msgs, true), "<s>user:hiFalse;A:</s>");
  EXPECT_EQ(apply_chat_template(t, msgs, false), "<s>user:hiFalse;</s>");
  json think = json::parse(R"([{"role": "assistant", "content": "x", "reasoning": "r"}])");
  EXPECT_EQ(apply_chat_template(t, think, false, json::array({1, 2}), {{"custom", "C"}}), "T2rrC");
  EXPECT_EQ(apply_chat_template(t, msgs, false, json::array(), json::object(), "tool_use"), "T0");
  EXPECT_NE(error_of([&] { apply_chat_template(t, msgs, false, nullptr, json::object(), "nope"); }).find("nope"),
            std::string::npos);

  // A sidecar chat_template.jinja takes priority over tokenizer_config.json.
  write(dir / "chat_template.jinja", "sidecar {{ messages | length }}\n");
  auto s = load_chat_templates(dir.str());
  EXPECT_EQ(apply_chat_template(s, msgs, false), "sidecar 1");

  TempDir empty;
  write(empty / "tokenizer_config.json", "{}");
  EXPECT_NE(
      error_of([&] { apply_chat_template(load_chat_templates(empty.str()), msgs, false); }).find("no chat template"),
      std::string::npos);
}

// components/config: scalar typing as NeMo Automodel (PyYAML + translate_value), getters and their errors, CLI
// overrides, ${ENV} interpolation, _target_ registry, unknown keys, to_yaml round trip, a NeMo-shaped recipe.
#include "components/config/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <fstream>

#include "components/config/targets.h"
#include "core/error.h"
#include "error_of.h"
#include "temp_dir.h"

using automodel::Error;
using automodel::config::apply_overrides;
using automodel::config::ConfigNode;
using automodel::config::parse_overrides;
using automodel::config::parse_yaml;
using automodel::config::translate_value;
using automodel::testing::error_of;
using Kind = ConfigNode::Kind;

namespace {

ConfigNode one(const std::string& value_text) { return parse_yaml("v: " + value_text + "\n", "t.yaml").at("v"); }

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST(ConfigTyping, PlainScalarsFollowPyYamlThenTranslateValue) {
  // PyYAML YAML 1.1 booleans.
  for (const char* t : {"true", "True", "TRUE", "yes", "Yes", "on", "ON"}) EXPECT_TRUE(one(t).as_bool()) << t;
  for (const char* t : {"false", "False", "no", "NO", "off", "Off"}) EXPECT_FALSE(one(t).as_bool()) << t;
  // Nulls: YAML's, plus translate_value's none/None.
  for (const char* t : {"~", "null", "Null", "NULL", "", "none", "None"}) EXPECT_TRUE(one(t).is_null()) << t;
  // Integers: YAML 1.1 (0x, leading-zero octal, 0b, underscores, sexagesimal).
  EXPECT_EQ(one("10").as_int(), 10);
  EXPECT_EQ(one("-7").as_int(), -7);
  EXPECT_EQ(one("0x1F").as_int(), 31);
  EXPECT_EQ(one("017").as_int(), 15);
  EXPECT_EQ(one("0b101").as_int(), 5);
  EXPECT_EQ(one("1_000").as_int(), 1000);
  EXPECT_EQ(one("1:30").as_int(), 90);
  // Floats: PyYAML needs a dot (1.0e-5); 1e-5 is a PyYAML string that translate_value's literal_eval makes a float.
  EXPECT_EQ(one("1.5").kind(), Kind::Double);
  EXPECT_DOUBLE_EQ(one("1.0e-5").as_double(), 1.0e-5);
  EXPECT_EQ(one("1e-5").kind(), Kind::Double);
  EXPECT_DOUBLE_EQ(one("1e-5").as_double(), 1e-5);
  EXPECT_DOUBLE_EQ(one("5e3").as_double(), 5000.0);
  EXPECT_DOUBLE_EQ(one("1.0e5").as_double(), 1e5);  // unsigned exponent: string for PyYAML, float for literal_eval
  EXPECT_DOUBLE_EQ(one("-2e-3").as_double(), -2e-3);
  EXPECT_DOUBLE_EQ(one(".5").as_double(), 0.5);
  EXPECT_TRUE(std::isinf(one(".inf").as_double()));
  EXPECT_TRUE(std::isnan(one(".nan").as_double()));
  // Strings stay strings.
  EXPECT_EQ(one("meta-llama/Llama-3.2-1B").as_string(), "meta-llama/Llama-3.2-1B");
  EXPECT_EQ(one("09").as_string(), "09");  // neither YAML octal nor a Python literal
  EXPECT_EQ(one("inf").as_string(), "inf");
  EXPECT_EQ(one("hello world").as_string(), "hello world");
  // Inline YAML lists are typed element by element.
  ConfigNode l = one("[0.9, 0.999, 1e-8, abc, null]");
  ASSERT_EQ(l.size(), 5u);
  EXPECT_DOUBLE_EQ(l[2].as_double(), 1e-8);
  EXPECT_EQ(l[3].as_string(), "abc");
  EXPECT_TRUE(l[4].is_null());
}

TEST(ConfigTyping, QuotedScalarsGoThroughTranslateValueOnly) {
  EXPECT_EQ(one("\"10\"").as_int(), 10);  // NeMo: "10" -> 10
  EXPECT_DOUBLE_EQ(one("'3.14'").as_double(), 3.14);
  EXPECT_TRUE(one("'true'").as_bool());
  EXPECT_TRUE(one("\"None\"").is_null());
  EXPECT_EQ(one("\"yes\"").as_string(), "yes");  // YAML 1.1 bools apply to plain scalars only
  EXPECT_EQ(one("\"null\"").as_string(), "null");
  EXPECT_EQ(one("\"'10'\"").as_string(), "10");  // a Python string literal
  EXPECT_EQ(one("\"[1, 2]\"").size(), 2u);
  EXPECT_EQ(one("|\n  two\n  lines\n").as_string(), "two\nlines\n");
}

TEST(ConfigTyping, TranslateValueIsLiteralEval) {
  EXPECT_TRUE(translate_value("none").is_null());
  EXPECT_FALSE(translate_value("False").as_bool());
  EXPECT_EQ(translate_value("0o17").as_int(), 15);
  EXPECT_EQ(translate_value("017").as_string(), "017");  // a SyntaxError in Python 3
  EXPECT_EQ(translate_value("  42").as_int(), 42);
  EXPECT_EQ(translate_value("1j").as_string(), "1j");
  EXPECT_EQ(translate_value("99999999999999999999").as_string(), "99999999999999999999");  // beyond int64
  ConfigNode tup = translate_value("(1, 'a', None)");
  ASSERT_TRUE(tup.is_list());
  EXPECT_EQ(tup[1].as_string(), "a");
  EXPECT_TRUE(tup[2].is_null());
  EXPECT_EQ(translate_value("1, 2").as<std::vector<int64_t>>(), (std::vector<int64_t>{1, 2}));
  ConfigNode d = translate_value("{'lr': 1e-4, 'betas': [0.9, 0.95], 3: True}");
  ASSERT_TRUE(d.is_map());
  EXPECT_DOUBLE_EQ(d.get<double>("lr"), 1e-4);
  EXPECT_DOUBLE_EQ(d.get<std::vector<double>>("betas")[1], 0.95);
  EXPECT_TRUE(d.get<bool>("3"));
  EXPECT_EQ(translate_value("(7)").as_int(), 7);
  EXPECT_EQ(translate_value("'a' \"b\"").as_string(), "ab");
  EXPECT_EQ(translate_value("[1, 2").as_string(), "[1, 2");
  EXPECT_EQ(translate_value("--1").as_string(), "--1");
  EXPECT_EQ(translate_value("abc").as_string(), "abc");
}

TEST(ConfigTyping, LongAndOverflowingNumeralsAreTypedWithoutCrashing) {
  // 100k digits: a regex matcher recursed once per character and overflowed the stack.
  const std::string digits(100000, '1');
  EXPECT_EQ(one(digits).as_string(), digits);  // beyond int64: a string, as other big integers
  EXPECT_EQ(one("\"" + digits + "\"").as_string(), digits);
  EXPECT_EQ(one("1." + digits).kind(), Kind::Double);
  EXPECT_EQ(one("[" + digits + "]")[0].as_string(), digits);
  // Sexagesimal beyond int64 (std::stoll threw std::out_of_range; the sum overflowed).
  EXPECT_EQ(one("99999999999999999999:30").as_string(), "99999999999999999999:30");
  EXPECT_EQ(one("153722867280912930:59").as_string(), "153722867280912930:59");
  EXPECT_EQ(one("153722867280912930:7").as_int(), 9223372036854775807);
  EXPECT_EQ(one("-153722867280912930:8").as_int(), INT64_MIN);
  EXPECT_EQ(one("1:2:3").as_int(), 3723);
  EXPECT_DOUBLE_EQ(one("1:30.5").as_double(), 90.5);
  // Python's digit groups: one underscore between digits, also right after a base prefix.
  EXPECT_EQ(translate_value("0x_1f").as_int(), 31);
  EXPECT_EQ(translate_value("1__0").as_string(), "1__0");
  EXPECT_EQ(translate_value("1_0.5_0").as_double(), 10.5);
  EXPECT_EQ(translate_value("1_").as_string(), "1_");
}

TEST(ConfigTyping, TargetAndFnValuesAreNeverTranslated) {
  ConfigNode c = parse_yaml("a:\n  _target_: 'True'\n  collate_fn: none\n  other: none\n", "t.yaml");
  EXPECT_EQ(c.get<std::string>("a._target_"), "True");
  EXPECT_EQ(c.get<std::string>("a.collate_fn"), "none");
  EXPECT_TRUE(c.at("a.other").is_null());
}

TEST(ConfigGet, TypedGettersFallbacksAndAccess) {
  ConfigNode c = parse_yaml(
      "step_scheduler:\n  max_steps: 100\n  name: run\n  enabled: true\n  ratio: 2\n"
      "optimizer:\n  betas: [0.9, 0.999]\n  names: [a, b]\n  nothing: null\n",
      "r.yaml");
  EXPECT_EQ(c.get<int64_t>("step_scheduler.max_steps"), 100);
  EXPECT_EQ(c.get<int>("step_scheduler.max_steps"), 100);
  EXPECT_EQ(c.get<size_t>("step_scheduler.max_steps"), 100u);
  EXPECT_DOUBLE_EQ(c.get<double>("step_scheduler.ratio"), 2.0);  // an int reads as a float
  EXPECT_EQ(c.get<std::string>("step_scheduler.name"), "run");
  EXPECT_TRUE(c.get<bool>("step_scheduler.enabled"));
  EXPECT_EQ(c.get<std::vector<double>>("optimizer.betas"), (std::vector<double>{0.9, 0.999}));
  EXPECT_EQ(c.get<std::vector<std::string>>("optimizer.names"), (std::vector<std::string>{"a", "b"}));
  EXPECT_DOUBLE_EQ(c.get<double>("optimizer.betas.1"), 0.999);
  EXPECT_EQ(c.get<int64_t>("step_scheduler.missing", 7), 7);
  EXPECT_EQ(c.get<std::string>("optimizer.nothing", "dflt"), "dflt");
  EXPECT_TRUE(c.contains("optimizer.betas.0"));
  EXPECT_FALSE(c.contains("optimizer.betas.2"));
  EXPECT_FALSE(c.contains("step_scheduler.max_steps.x"));
  EXPECT_EQ(c.keys(), (std::vector<std::string>{"step_scheduler", "optimizer"}));
  EXPECT_EQ(c["optimizer"].keys(), (std::vector<std::string>{"betas", "names", "nothing"}));
  const ConfigNode& opt = c.at("optimizer");
  EXPECT_EQ(opt.path(), "optimizer");
  EXPECT_EQ(opt.line(), 6);
  EXPECT_EQ(opt.at("betas").line(), 7);
  EXPECT_EQ(opt.at("betas").where(), "r.yaml:7");
  EXPECT_EQ(opt.get<double>("betas.0"), 0.9);
}

TEST(ConfigGet, ErrorsNameFileLineKeyAndType) {
  ConfigNode c = parse_yaml("model:\n  name: llama\noptimizer:\n  lr: fast\n  steps: 5000000000\n", "recipe.yaml");
  std::string missing = error_of([&] { c.get<double>("optimizer.weight_decay"); });
  EXPECT_TRUE(has(missing, "missing required key 'optimizer.weight_decay'")) << missing;
  EXPECT_TRUE(has(missing, "recipe.yaml")) << missing;
  EXPECT_TRUE(has(missing, "section 'optimizer' at line 3")) << missing;
  // From a child node the full dotted path is still named.
  std::string missing2 = error_of([&] { c.at("model").get<std::string>("revision"); });
  EXPECT_TRUE(has(missing2, "'model.revision'")) << missing2;
  std::string wrong = error_of([&] { c.get<double>("optimizer.lr"); });
  EXPECT_TRUE(has(wrong, "recipe.yaml:4: 'optimizer.lr': expected a number, got string \"fast\"")) << wrong;
  std::string range = error_of([&] { c.get<int32_t>("optimizer.steps"); });
  EXPECT_TRUE(has(range, "recipe.yaml:5")) << range;
  EXPECT_TRUE(has(range, "an integer in [")) << range;
  std::string elem = error_of([&] { parse_yaml("xs:\n  - 1\n  - two\n", "l.yaml").get<std::vector<int64_t>>("xs"); });
  EXPECT_TRUE(has(elem, "l.yaml:3: 'xs.1': expected an integer")) << elem;
  std::string notmap = error_of([&] { c.at("model.name").keys(); });
  EXPECT_TRUE(has(notmap, "expected a map")) << notmap;
  EXPECT_THROW(automodel::config::load_yaml("/nonexistent/recipe.yaml"), Error);
}

TEST(ConfigYaml, SyntaxErrorNamesTheLine) {
  std::string e = error_of([] { parse_yaml("a: 1\nb:\n  c: [1, 2\n  d: 3\n", "bad.yaml"); });
  EXPECT_TRUE(has(e, "bad.yaml:")) << e;
  EXPECT_TRUE(has(e, "YAML syntax error")) << e;
  std::string e2 = error_of([] { parse_yaml("a: 1\n b: 2\n", "bad2.yaml"); });
  EXPECT_TRUE(has(e2, "bad2.yaml:2: YAML syntax error")) << e2;
}

TEST(ConfigYaml, AnchorsAliasesAndMergeKeys) {
  ConfigNode c = parse_yaml("base: &b\n  lr: 0.1\n  wd: 0.0\nopt:\n  <<: *b\n  lr: 0.5\ncopy: *b\n", "m.yaml");
  EXPECT_DOUBLE_EQ(c.get<double>("opt.lr"), 0.5);  // explicit keys win over merged ones
  EXPECT_DOUBLE_EQ(c.get<double>("opt.wd"), 0.0);
  EXPECT_DOUBLE_EQ(c.get<double>("copy.lr"), 0.1);
  EXPECT_FALSE(c.contains("opt.<<"));
}

TEST(ConfigYaml, MergedMapsKeepTheirValuesAndPathsAndFirstMergeWins) {
  ConfigNode c = parse_yaml("a: &a {x: 1, y: {z: 2}}\nb: &b {x: 3, w: 4}\nc:\n  <<: [*a, *b]\n  v: 5\n", "m.yaml");
  EXPECT_EQ(c.get<int64_t>("c.x"), 1);  // as PyYAML: the earlier map of a merge list wins
  EXPECT_EQ(c.get<int64_t>("c.w"), 4);
  EXPECT_EQ(c.at("c.y.z").path(), "c.y.z");
  EXPECT_EQ(c.at("c").keys(), (std::vector<std::string>{"v", "x", "y", "w"}));
  std::string e = error_of([] { parse_yaml("a: 1\nb:\n  <<: *x\n", "m.yaml"); });
  EXPECT_TRUE(has(e, "YAML syntax error")) << e;  // an unknown anchor
  std::string s = error_of([] { parse_yaml("a: &a 1\nb:\n  <<: *a\n", "m.yaml"); });
  EXPECT_TRUE(has(s, "'<<' merges only maps")) << s;
}

TEST(ConfigYaml, DuplicateKeysAreAnErrorNamingBothLines) {
  // A section given twice: PyYAML keeps the second silently, losing the first.
  std::string top = error_of([] { parse_yaml("model:\n  a: 1\noptimizer:\n  lr: 1\nmodel:\n  b: 2\n", "d.yaml"); });
  EXPECT_TRUE(has(top, "d.yaml:5: key 'model' is given twice, at lines 1 and 5")) << top;
  std::string nested = error_of([] { parse_yaml("opt:\n  lr: 1\n  wd: 0\n  lr: 2\n", "d.yaml"); });
  EXPECT_TRUE(has(nested, "d.yaml:4: key 'opt.lr' is given twice, at lines 2 and 4")) << nested;
  std::string in_list = error_of([] { parse_yaml("xs:\n  - {a: 1, a: 2}\n", "d.yaml"); });
  EXPECT_TRUE(has(in_list, "key 'xs.0.a' is given twice")) << in_list;
  // Keys that differ only in YAML type are the same config key.
  std::string typed = error_of([] { parse_yaml("s:\n  1: a\n  \"1\": b\n", "d.yaml"); });
  EXPECT_TRUE(has(typed, "key 's.1' is given twice, at lines 2 and 3")) << typed;
  // Inside a quoted Python dict literal a repeated key is Python's: the last value, at the first one's place.
  ConfigNode d = translate_value("{'a': 1, 'b': 2, 'a': 3}");
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(d.get<int64_t>("a"), 3);
  // Several merge keys are not duplicates (PyYAML merges every one); an explicit key still wins over merged ones.
  ConfigNode c = parse_yaml("a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: *a\n  <<: *b\n  x: 3\n", "d.yaml");
  EXPECT_EQ(c.get<int64_t>("c.x"), 3);
  EXPECT_EQ(c.get<int64_t>("c.y"), 2);
}

TEST(ConfigYaml, AliasCyclesAreAnErrorNotACrash) {
  for (const char* text : {"a: &x [1, *x]\n", "a: &x\n  b: *x\n", "a: &x\n  b:\n    - c: *x\n", "&r [*r]\n"}) {
    std::string e = error_of([&] { parse_yaml(text, "cyc.yaml"); });
    EXPECT_TRUE(has(e, "cyc.yaml:")) << text;
    EXPECT_TRUE(has(e, "an anchor/alias cycle")) << text << e;
  }
  std::string e = error_of([] { parse_yaml("a: &x\n  b: *x\n", "cyc.yaml"); });
  EXPECT_TRUE(has(e, "cyc.yaml:2: 'a.b' is an alias of a list or map that contains it")) << e;
  // The same anchor repeated side by side is no cycle.
  ConfigNode ok = parse_yaml("a: &x [1, 2]\nb: [*x, *x]\n", "cyc.yaml");
  EXPECT_EQ(ok.get<int64_t>("b.1.1"), 2);
}

TEST(ConfigYaml, AliasExpansionIsBounded) {
  // "Billion laughs": each level repeats the previous ten times; 10^9 values expanded.
  std::string text = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
  for (int i = 1; i <= 9; ++i) {
    std::string prev = "*l" + std::to_string(i - 1);
    text += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) text += (k ? ", " : "") + prev;
    text += "]\n";
  }
  std::string e = error_of([&] { parse_yaml(text, "lol.yaml"); });
  EXPECT_TRUE(has(e, "lol.yaml:")) << e;
  EXPECT_TRUE(has(e, "lol.yaml:1: 'l5.")) << e;  // l5 alone expands to 1111111 values
  EXPECT_TRUE(has(e, "expands to more than 1000000 values")) << e;
  // Few values but long strings: the byte bound.
  std::string big = "s0: &s0 " + std::string(1 << 20, 'x') + "\n";
  for (int i = 1; i <= 3; ++i) {
    std::string prev = "*s" + std::to_string(i - 1);
    big += "s" + std::to_string(i) + ": &s" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) big += (k ? ", " : "") + prev;
    big += "]\n";
  }
  std::string eb = error_of([&] { parse_yaml(big, "big.yaml"); });
  EXPECT_TRUE(has(eb, "expands to more than 256 MiB of keys and text")) << eb;
}

TEST(ConfigYaml, DeepNestingIsAnErrorNotAStackOverflow) {
  for (size_t depth : {size_t(150), size_t(100000)}) {
    for (const char* open_close : {"[]", "{}"}) {
      std::string text;
      for (size_t i = 0; i < depth; ++i) text += open_close[0] + std::string(open_close[0] == '{' ? "a: " : "");
      text += "1" + std::string(depth, open_close[1]) + "\n";
      std::string e = error_of([&] { parse_yaml(text, "deep.yaml"); });
      EXPECT_TRUE(has(e, "deep.yaml:")) << depth << open_close << e;
      EXPECT_TRUE(has(e, "lists and maps nested")) << depth << open_close << e;
    }
  }
  // Block nesting, and depth reached through aliases.
  std::string block;
  for (int i = 0; i < 3000; ++i) block += std::string(size_t(i), ' ') + "a:\n";
  EXPECT_TRUE(has(error_of([&] { parse_yaml(block, "deep.yaml"); }), "nested")) << block.substr(0, 100);
  std::string aliased = "a0: &a0 " + std::string(60, '[') + std::string(60, ']') + "\n";
  aliased += "a1: &a1 " + std::string(60, '[') + "*a0" + std::string(60, ']') + "\n";
  std::string through_alias = error_of([&] { parse_yaml(aliased, "deep.yaml"); });
  EXPECT_TRUE(has(through_alias, "'a1.0.0.0.0.0.0")) << through_alias;
  EXPECT_TRUE(has(through_alias, "nested more than 100 levels deep (aliases expanded)")) << through_alias;
  // 100 levels are fine.
  std::string ok = "v: " + std::string(99, '[') + "1" + std::string(99, ']') + "\n";
  EXPECT_EQ(parse_yaml(ok, "deep.yaml").at("v").size(), 1u);
}

TEST(ConfigOverrides, EveryForm) {
  auto ov =
      parse_overrides({"--optimizer.lr", "1e-4", "--step_scheduler.max_steps=20", "--peft.enabled", "--model.name",
                       "abc", "--x.none", "none", "--x.list=[1,2]", "--x.eq=a=b", "--x.neg", "-1", "--flag"});
  ASSERT_EQ(ov.size(), 9u);
  EXPECT_EQ(ov[0].key, "optimizer.lr");
  EXPECT_EQ(ov[0].value.kind(), Kind::Double);
  EXPECT_DOUBLE_EQ(ov[0].value.as_double(), 1e-4);
  EXPECT_EQ(ov[1].value.as_int(), 20);
  EXPECT_EQ(ov[2].key, "peft.enabled");  // bare flag followed by another --key
  EXPECT_EQ(ov[2].text, "True");
  EXPECT_TRUE(ov[2].value.as_bool());
  EXPECT_EQ(ov[3].value.as_string(), "abc");
  EXPECT_TRUE(ov[4].value.is_null());
  EXPECT_EQ(ov[5].value.as<std::vector<int64_t>>(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(ov[6].key, "x.eq");
  EXPECT_EQ(ov[6].value.as_string(), "a=b");
  EXPECT_EQ(ov[7].value.as_int(), -1);
  EXPECT_TRUE(ov[8].value.as_bool());  // bare flag at the end
  // As NeMo (translate_value, not YAML 1.1): yes stays a string; _target_ values stay names.
  EXPECT_EQ(parse_overrides({"--a=yes"})[0].value.as_string(), "yes");
  EXPECT_EQ(parse_overrides({"--m._target_=None"})[0].value.as_string(), "None");
  EXPECT_TRUE(has(error_of([] { parse_overrides({"stray"}); }), "unexpected argument 'stray'"));
  EXPECT_TRUE(has(error_of([] { parse_overrides({"--=3"}); }), "empty key"));
  EXPECT_TRUE(has(error_of([] { parse_overrides({"--a..b", "1"}); }), "empty key"));
}

TEST(ConfigOverrides, ApplyCreatesAndReplaces) {
  ConfigNode c = parse_yaml("optimizer:\n  lr: 0.1\n  betas: [0.9, 0.99]\nsched: 5\n", "r.yaml");
  apply_overrides(c, parse_overrides({"--optimizer.lr=3e-4", "--new.deep.key", "7", "--optimizer.betas.1", "0.5",
                                      "--sched.max_steps", "9"}));
  EXPECT_DOUBLE_EQ(c.get<double>("optimizer.lr"), 3e-4);
  EXPECT_EQ(c.get<int64_t>("new.deep.key"), 7);
  EXPECT_EQ(c.at("new.deep.key").path(), "new.deep.key");
  EXPECT_EQ(c.at("new.deep.key").where(), "command line --new.deep.key");
  EXPECT_DOUBLE_EQ(c.get<double>("optimizer.betas.1"), 0.5);
  EXPECT_EQ(c.get<int64_t>("sched.max_steps"), 9);  // a scalar on the way becomes a map (NeMo's set_by_dotted)
  std::string e = error_of([&] { apply_overrides(c, parse_overrides({"--optimizer.betas.5=1"})); });
  EXPECT_TRUE(has(e, "is a list of 2 items")) << e;
  // The override's error names the override.
  std::string t = error_of([&] {
    apply_overrides(c, parse_overrides({"--optimizer.lr=fast"}));
    c.get<double>("optimizer.lr");
  });
  EXPECT_TRUE(has(t, "command line --optimizer.lr: 'optimizer.lr': expected a number")) << t;
}

TEST(ConfigEnv, InterpolationForms) {
  ::setenv("AM_CFG_TEST_DIR", "/data/x", 1);
  ::setenv("AM_CFG_TEST_N", "16", 1);
  ::unsetenv("AM_CFG_TEST_UNSET");
  ConfigNode c = parse_yaml(
      "a: ${AM_CFG_TEST_DIR}\n"
      "b: ${oc.env:AM_CFG_TEST_DIR}/sub\n"
      "c: ${AM_CFG_TEST_UNSET,fallback}\n"
      "d: ${oc.env:AM_CFG_TEST_UNSET,1e-3}\n"
      "e: \"${AM_CFG_TEST_N}\"\n"
      "f: pre_${AM_CFG_TEST_N}_${AM_CFG_TEST_UNSET, x}\n"
      "g: \\${NOT_EXPANDED}\n"
      "h: ${AM_CFG_TEST_UNSET,}\n",
      "env.yaml");
  EXPECT_EQ(c.get<std::string>("a"), "/data/x");
  EXPECT_EQ(c.get<std::string>("b"), "/data/x/sub");
  EXPECT_EQ(c.get<std::string>("c"), "fallback");
  EXPECT_DOUBLE_EQ(c.get<double>("d"), 1e-3);  // the result is typed like a string value
  EXPECT_EQ(c.get<int64_t>("e"), 16);
  EXPECT_EQ(c.get<std::string>("f"), "pre_16_x");
  EXPECT_EQ(c.get<std::string>("g"), "${NOT_EXPANDED}");
  EXPECT_EQ(c.get<std::string>("h"), "");
  std::string e = error_of([] { parse_yaml("model:\n  path: ${AM_CFG_TEST_UNSET}\n", "env.yaml"); });
  EXPECT_TRUE(has(e, "env.yaml:2: 'model.path': environment variable 'AM_CFG_TEST_UNSET' is not set")) << e;
  std::string e2 = error_of([] { parse_yaml("k: ${oc.env:AM_CFG_TEST_UNSET}\n", "env.yaml"); });
  EXPECT_TRUE(has(e2, "'AM_CFG_TEST_UNSET' is not set")) << e2;
  std::string e3 = error_of([] { parse_yaml("k: ${model.name}\n", "env.yaml"); });
  EXPECT_TRUE(has(e3, "not an environment variable reference")) << e3;
  EXPECT_TRUE(has(error_of([] { parse_yaml("k: ${OPEN\n", "env.yaml"); }), "unterminated"));
}

namespace {
// The names a recipe registers (recipes/build.cpp), registered here so the config component is tested on its own.
void register_recipe_like_targets() {
  using automodel::config::register_target;
  register_target("automodel.AutoModelForCausalLM.from_pretrained",
                  {"nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained"});
  register_target("automodel.datasets.llm.make_squad_dataset",
                  {"nemo_automodel.components.datasets.llm.squad.make_squad_dataset"});
  register_target("automodel.loss.MaskedCrossEntropy", {"nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy"});
  register_target("automodel.optim.AdamW", {"torch.optim.AdamW"});
  register_target("automodel.optim.Adam", {"torch.optim.Adam"});
  register_target("automodel.datasets.DataLoader", {"torchdata.stateful_dataloader.StatefulDataLoader"});
  register_target("automodel.datasets.default_collater", {"nemo_automodel.components.datasets.utils.default_collater"});
}
}  // namespace

TEST(ConfigTargets, ResolveAliasesAndSuggest) {
  using automodel::config::resolve_target;
  register_recipe_like_targets();
  EXPECT_EQ(resolve_target("torch.optim.AdamW"), "automodel.optim.AdamW");
  EXPECT_EQ(resolve_target("automodel.optim.AdamW"), "automodel.optim.AdamW");
  EXPECT_EQ(resolve_target("nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained"),
            "automodel.AutoModelForCausalLM.from_pretrained");
  for (const char* n : {"nemo_automodel.components.datasets.llm.squad.make_squad_dataset",
                        "nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy", "torch.optim.Adam",
                        "torchdata.stateful_dataloader.StatefulDataLoader",
                        "nemo_automodel.components.datasets.utils.default_collater"})
    EXPECT_TRUE(automodel::config::is_registered_target(n)) << n;
  std::string e = error_of([] { resolve_target("torch.optim.AdamX"); });
  EXPECT_TRUE(has(e, "unknown _target_ 'torch.optim.AdamX'; closest registered names: torch.optim.Adam")) << e;
  EXPECT_TRUE(has(e, "torch.optim.AdamW")) << e;
  size_t commas = 0;
  for (char ch : e.substr(0, e.find('\n'))) commas += ch == ',';
  EXPECT_EQ(commas, 2u) << e;  // three names
  ConfigNode c = parse_yaml("optimizer:\n  lr: 1\n  _target_: torch.optim.AdamWW\n", "r.yaml");
  std::string e2 = error_of([&] { automodel::config::resolve_target(c.at("optimizer")); });
  EXPECT_TRUE(has(e2, "r.yaml:3: 'optimizer._target_': unknown _target_ 'torch.optim.AdamWW'")) << e2;
  automodel::config::register_target("test.Thing", {"my.pkg.Thing"});
  EXPECT_EQ(resolve_target("my.pkg.Thing"), "test.Thing");
  automodel::config::register_target("test.Thing", {"my.pkg.Thing"});  // idempotent
  EXPECT_THROW(automodel::config::register_target("test.Other", {"my.pkg.Thing"}), Error);
}

TEST(ConfigKeys, UnknownKeyWithLineAndSuggestion) {
  ConfigNode c = parse_yaml("step_scheduler:\n  max_steps: 5\n  global_bach_size: 32\n", "r.yaml");
  std::vector<std::string> allowed{"global_batch_size", "local_batch_size", "max_steps", "num_epochs"};
  std::string e = error_of([&] { automodel::config::check_keys(c.at("step_scheduler"), allowed); });
  EXPECT_TRUE(has(e, "r.yaml:3: unknown key 'step_scheduler.global_bach_size'; did you mean 'global_batch_size'?"))
      << e;
  std::string far =
      error_of([&] { automodel::config::check_keys(parse_yaml("s:\n  zzzzzzzz: 1\n", "r.yaml").at("s"), allowed); });
  EXPECT_TRUE(has(far, "unknown key 's.zzzzzzzz'")) << far;
  EXPECT_FALSE(has(far, "did you mean")) << far;
  EXPECT_TRUE(has(far, "allowed keys here: global_batch_size")) << far;
  EXPECT_NO_THROW(automodel::config::check_keys(c.at("step_scheduler"), {"max_steps", "global_bach_size"}));
}

TEST(ConfigYaml, RoundTripGivesTheSameTree) {
  ConfigNode c = ConfigNode::map();
  c.set("s.num_string", ConfigNode::string("10"));
  c.set("s.yes", ConfigNode::string("yes"));
  c.set("s.null_word", ConfigNode::string("null"));
  c.set("s.none_word", ConfigNode::string("None"));
  c.set("s.colon", ConfigNode::string("Context: {c} Question: {q} Answer: "));
  c.set("s.env", ConfigNode::string("${HOME}"));
  c.set("s.quote", ConfigNode::string("it's \"q\" \\ back"));
  c.set("s.multi", ConfigNode::string("a\nb\t c"));
  c.set("s.empty", ConfigNode::string(""));
  c.set("s.exp", ConfigNode::string("1e-5"));
  c.set("s.list_text", ConfigNode::string("[1, 2]"));
  c.set("s.lead", ConfigNode::string("-x"));
  c.set("n.lr", ConfigNode::real(1e-5));
  c.set("n.tenth", ConfigNode::real(0.1));
  c.set("n.big", ConfigNode::real(1e20));
  c.set("n.whole", ConfigNode::real(3.0));
  c.set("n.neg", ConfigNode::real(-2.5e-7));
  c.set("n.inf", ConfigNode::real(INFINITY));
  c.set("n.i", ConfigNode::integer(-9223372036854775807LL));
  c.set("n.b", ConfigNode::boolean(false));
  c.set("n.null", ConfigNode());
  c.set("m._target_", ConfigNode::string("torch.optim.AdamW"));
  c.set("m.collate_fn", ConfigNode::string("null"));
  ConfigNode items = ConfigNode::list();
  ConfigNode item = ConfigNode::map();
  item.set("role", ConfigNode::string("user"));
  item.set("ids", translate_value("[1, [2, 3], []]"));
  items.push_back(item);
  items.push_back(ConfigNode::map());
  items.push_back(ConfigNode::string("true"));
  c.set("l", items);
  c.insert("key with space", ConfigNode::integer(1));
  c.insert("a.b", ConfigNode::integer(2));
  std::string text = c.to_yaml();
  ConfigNode back = parse_yaml(text, "out.yaml");
  EXPECT_TRUE(back == c) << text;
  EXPECT_EQ(back.to_yaml(), text);
  EXPECT_TRUE(has(text, "lr: 1.0e-05\n")) << text;  // PyYAML reads it as a float too
  EXPECT_TRUE(has(text, "_target_: torch.optim.AdamW\n")) << text;
}

TEST(ConfigRecipe, NeMoShapedLlamaSquadRecipe) {
  ::setenv("AM_CFG_TEST_CKPT", "/tmp/ckpts", 1);
  automodel::testing::TempDir dir;
  std::string path = dir / "llama3_2_1b_squad.yaml";
  std::ofstream(path) << R"(# Shaped like NeMo Automodel's examples/llm_finetune/llama3_2/llama3_2_1b_squad.yaml
step_scheduler:
  global_batch_size: 64
  local_batch_size: 8
  ckpt_every_steps: 1000
  val_every_steps: 10  # gradient steps
  max_steps: 100

dist_env:
  backend: nccl
  timeout_minutes: 1

rng:
  _target_: nemo_automodel.components.training.rng.StatefulRNG
  seed: 1111
  ranked: true

model:
  _target_: nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained
  pretrained_model_name_or_path: meta-llama/Llama-3.2-1B

checkpoint:
  enabled: true
  checkpoint_dir: ${AM_CFG_TEST_CKPT,checkpoints/}
  model_save_format: safetensors
  save_consolidated: true

distributed:
  _target_: nemo_automodel.components.distributed.fsdp2.FSDP2Manager
  dp_size: none
  tp_size: 1
  cp_size: 1
  sequence_parallel: false

loss_fn:
  _target_: nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy

dataset:
  _target_: nemo_automodel.components.datasets.llm.squad.make_squad_dataset
  dataset_name: rajpurkar/squad
  split: train

packed_sequence:
  packed_sequence_size: 0

dataloader:
  _target_: torchdata.stateful_dataloader.StatefulDataLoader
  collate_fn: nemo_automodel.components.datasets.utils.default_collater
  shuffle: false

validation_dataset:
  _target_: nemo_automodel.components.datasets.llm.squad.make_squad_dataset
  dataset_name: rajpurkar/squad
  split: validation
  limit_dataset_samples: 64

optimizer:
  _target_: torch.optim.Adam
  betas: [0.9, 0.999]
  eps: 1e-8
  lr: 1.0e-5
  weight_decay: 0
)";
  ConfigNode c = automodel::config::load_yaml(path);
  EXPECT_EQ(c.get<int64_t>("step_scheduler.global_batch_size"), 64);
  EXPECT_EQ(c.get<int64_t>("step_scheduler.val_every_steps"), 10);
  EXPECT_TRUE(c.get<bool>("rng.ranked"));
  EXPECT_EQ(c.get<std::string>("checkpoint.checkpoint_dir"), "/tmp/ckpts");
  EXPECT_TRUE(c.at("distributed.dp_size").is_null());  // "none" -> None, as translate_value
  EXPECT_FALSE(c.get<bool>("distributed.sequence_parallel"));
  EXPECT_DOUBLE_EQ(c.get<double>("optimizer.eps"), 1e-8);
  EXPECT_EQ(c.at("optimizer.eps").kind(), Kind::Double);
  EXPECT_DOUBLE_EQ(c.get<double>("optimizer.lr"), 1e-5);
  EXPECT_DOUBLE_EQ(c.get<double>("optimizer.weight_decay"), 0.0);
  EXPECT_EQ(c.get<std::vector<double>>("optimizer.betas"), (std::vector<double>{0.9, 0.999}));
  EXPECT_EQ(c.get<std::string>("dataloader.collate_fn"), "nemo_automodel.components.datasets.utils.default_collater");
  EXPECT_EQ(c.at("optimizer.lr").where(), path + ":61");
  register_recipe_like_targets();
  EXPECT_EQ(automodel::config::resolve_target(c.at("model")), "automodel.AutoModelForCausalLM.from_pretrained");
  EXPECT_EQ(automodel::config::resolve_target(c.at("optimizer")), "automodel.optim.Adam");
  EXPECT_EQ(automodel::config::resolve_target(c.at("dataset")), "automodel.datasets.llm.make_squad_dataset");
  EXPECT_EQ(automodel::config::resolve_target(c.at("loss_fn")), "automodel.loss.MaskedCrossEntropy");
  EXPECT_EQ(automodel::config::resolve_target(c.at("dataloader")), "automodel.datasets.DataLoader");
  EXPECT_EQ(automodel::config::resolve_target(c.get<std::string>("dataloader.collate_fn")),
            "automodel.datasets.default_collater");
  std::string e = error_of([&] { automodel::config::resolve_target(c.at("rng")); });
  EXPECT_TRUE(has(e, ":14: 'rng._target_': unknown _target_")) << e;
  // Overrides as the CLI passes them, then the resolved config round-trips (what goes into config.yaml).
  apply_overrides(c, parse_overrides({"--step_scheduler.max_steps", "20", "--optimizer.lr=3e-4", "--peft.dim", "8"}));
  EXPECT_EQ(c.get<int64_t>("step_scheduler.max_steps"), 20);
  ConfigNode back = parse_yaml(c.to_yaml(), "config.yaml");
  EXPECT_TRUE(back == c) << c.to_yaml();
  EXPECT_EQ(back.get<std::string>("checkpoint.checkpoint_dir"), "/tmp/ckpts");  // the ${...} was resolved at load
}

// Bad input to components/tokenizer: chat templates that would overflow the stack, loop forever or exhaust memory,
// malformed tokenizer.json / tokenizer_config.json, regexes PCRE2 gives up on. Each is a clear automodel::Error.
#include <gtest/gtest.h>
#include <malloc.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/jinja_ast.h"
#include "components/tokenizer/jinja_eval.h"
#include "components/tokenizer/tokenizer.h"
#include "error_of.h"
#include "temp_dir.h"

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
  // A list 100k deep built by a loop is freed without recursion (recursive destructors would overflow the stack
  // tens of thousands of levels down; 100k keeps the test within the render time limit under AddressSanitizer).
  EXPECT_EQ(R("{% set ns = namespace(x=[]) %}{% for i in range(400) %}{% for j in range(250) %}"
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

TEST(JinjaLimits, CyclesAreFreedAfterTheRender) {
  // A macro lives in the scope it captures and a namespace can hold itself: shared_ptr cycles that the interpreter
  // breaks when the render ends. A chat dataset renders once per record, so a leak here grows with the data.
  // (Under AddressSanitizer mallinfo2 does not see the heap; its leak check covers the same case there.)
  const std::string src =
      "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}x{% endmacro %}{% set ns = namespace() %}"
      "{% set ns.self = ns %}{% set ns.f = f %}{% for m in messages %}{% call f(1) %}{% endcall %}{% endfor %}{{ f(2) "
      "}}";
  const json ctx = {{"messages", json::array({json::object(), json::object()})}};
  for (int k = 0; k < 50; ++k) EXPECT_EQ(R(src, ctx), "xxxxxxx");
  const size_t before = mallinfo2().uordblks;
  for (int k = 0; k < 2000; ++k) R(src, ctx);
  const size_t after = mallinfo2().uordblks;
  EXPECT_LT(after, before + 64 * 1024) << "the heap grew by " << (after - before) << " bytes over 2000 renders";
}

// ---------------------------------------------------------------- tokenizer.json / tokenizer_config.json

namespace {

using automodel::tokenizer::Tokenizer;
using njson = nlohmann::json;

njson tiny() {
  return njson::parse(R"({
    "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
    "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
              "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, " ": 5},
              "merges": ["a b", "ab c"]}})");
}

njson added(const njson& id, const std::string& content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

std::string load_error(const njson& j) {
  return error_of([&] { Tokenizer::from_json(j, "/m/tokenizer.json"); });
}

// The error names the file, the key and the token, and says what to do.
void expect_load_error(const njson& j, const std::vector<std::string>& parts) {
  std::string err = load_error(j);
  ASSERT_FALSE(err.empty()) << j.dump();
  EXPECT_TRUE(has(err, "where: /m/tokenizer.json")) << err;
  EXPECT_TRUE(has(err, "what to do:")) << err;
  for (const auto& part : parts) EXPECT_TRUE(has(err, part)) << "missing '" << part << "' in\n" << err;
}

}  // namespace

TEST(TokenizerJson, VocabularyIdsMustBeU32Integers) {
  for (const njson& bad : {njson(-1), njson(5.0), njson(5.5), njson("5"), njson(nullptr), njson(4294967296LL)}) {
    njson j = tiny();
    j["model"]["vocab"]["b"] = bad;
    expect_load_error(j, {"vocabulary token 'b' has id " + bad.dump(), "model BPE vocab", "0 to 4294967295"});
  }
  // As in the tokenizers package, ids up to 2^32 - 1 are fine, however sparse (no 4-billion-entry table).
  for (int64_t id : {int64_t{1} << 31, int64_t{4294967295}}) {
    njson j = tiny();
    j["model"]["vocab"]["x"] = id;
    auto t = Tokenizer::from_json(j);
    EXPECT_EQ(t.encode("x").ids, std::vector<int64_t>{id});
    EXPECT_EQ(t.id_to_token(id), "x");
    EXPECT_EQ(t.decode({id, 0}), "x a");
    EXPECT_EQ(t.vocab_size(), 7);
  }
}

TEST(TokenizerJson, AddedTokensAreCheckedAndNumberedAsTheTokenizersPackageDoes) {
  for (const njson& bad : {njson(-1), njson(6.0), njson(1099511627776LL)}) {
    njson j = tiny();
    j["added_tokens"] = njson::array({added(bad, "<x>")});
    expect_load_error(j, {"added token '<x>' has id " + bad.dump(), "added_tokens[0]"});
  }
  njson j = tiny();
  njson no_flag = added(6, "<x>");
  no_flag.erase("special");
  j["added_tokens"] = njson::array({no_flag});
  expect_load_error(j, {"added token has no 'special'", "added_tokens[0]"});
  j["added_tokens"] = njson::array({added(6, "<x>")});
  j["added_tokens"][0]["content"] = 5;
  expect_load_error(j, {"field 'content' must be a string", "added_tokens[0]"});
  j["added_tokens"] = njson::object();
  expect_load_error(j, {"'added_tokens' must be a list"});
  // The ids in the file are not used: a token of the vocabulary keeps its id, the others follow the vocabulary in
  // order; empty and repeated contents are skipped (checked against the tokenizers package).
  j = tiny();
  j["added_tokens"] =
      njson::array({added(100000, "<x>"), added(5, "<y>"), added(9, "ab"), added(7, "<x>"), added(8, "")});
  auto t = Tokenizer::from_json(j);
  EXPECT_EQ(t.encode("<y>ab<x>").ids, (std::vector<int64_t>{7, 3, 6}));
  EXPECT_EQ(t.id_to_token(6), "<x>");
  EXPECT_EQ(t.id_to_token(100000), "");
  EXPECT_EQ(t.vocab_size(), 8);
}

TEST(TokenizerJson, MergesMustUseVocabularyTokensInOneForm) {
  njson j = tiny();
  j["model"]["merges"] = {"a z"};
  expect_load_error(j, {"merge 'a z' uses token 'z', which is not in the vocabulary", "merges[0]"});
  j["model"]["merges"] = njson::parse(R"([["a", "b"], ["z", "c"]])");
  expect_load_error(j, {"merge 'z c' uses token 'z'", "merges[1]"});
  j["model"]["merges"] = {"b c"};
  expect_load_error(j, {"merge 'b c' makes 'bc', which is not in the vocabulary"});
  j["model"]["merges"] = njson::parse(R"(["a b", ["ab", "c"]])");
  expect_load_error(j, {"merges must all be \"a b\" strings or all [\"a\", \"b\"] pairs", "merges[1]"});
  j["model"]["merges"] = njson::parse(R"([["a", "b", "c"]])");
  expect_load_error(j, {"merges must all be"});
  j["model"]["merges"] = njson::parse(R"([[0, 1]])");
  expect_load_error(j, {"merges must all be"});
  j["model"]["merges"] = {"a b c"};
  expect_load_error(j, {"not two tokens separated by one space"});
  j["model"]["merges"] = njson::object();
  expect_load_error(j, {"field 'merges' must be a list"});
  j["model"]["merges"] = nullptr;
  expect_load_error(j, {"'model.merges' is missing"});
  j = tiny();
  j["model"]["vocab"] = njson::array({"a"});
  expect_load_error(j, {"'model.vocab' must be an object"});
  j["model"] = 5;
  expect_load_error(j, {"'model' must be an object"});
}

TEST(TokenizerJson, UnkTokenMissingFromTheVocabularyFailsOnlyWhenNeeded) {
  njson j = tiny();
  j["model"]["unk_token"] = "<unk>";
  auto t = Tokenizer::from_json(j);  // the tokenizers package loads it too
  EXPECT_EQ(t.encode("abc").ids, std::vector<int64_t>{4});
  std::string err = error_of([&] { t.encode("axc"); });
  EXPECT_TRUE(has(err, "unk_token for it, '<unk>', is not in the vocabulary")) << err;
  EXPECT_TRUE(has(err, "add '<unk>' to model.vocab")) << err;
  j["model"]["unk_token"] = 5;
  expect_load_error(j, {"field 'unk_token' must be a string"});
}

TEST(TokenizerJson, ComponentsOfTheWrongTypeAreNamed) {
  auto with = [](const char* key, const njson& value) {
    njson j = tiny();
    j[key] = value;
    return j;
  };
  expect_load_error(with("pre_tokenizer", njson::array()), {"'pre_tokenizer' must be an object", "got array"});
  expect_load_error(with("pre_tokenizer", "ByteLevel"), {"'pre_tokenizer' must be an object", "got string"});
  expect_load_error(with("pre_tokenizer", njson::object()), {"'pre_tokenizer' has no \"type\""});
  expect_load_error(with("normalizer", njson::array({1})), {"'normalizer' must be an object"});
  expect_load_error(with("decoder", {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}}),
                    {"field 'start' must be a non-negative integer", "decoder Strip"});
  expect_load_error(with("pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "__"}}),
                    {"Metaspace replacement '__' must be exactly one character"});
  expect_load_error(with("pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", "no"}}),
                    {"field 'add_prefix_space' must be true or false", "pre_tokenizer ByteLevel"});
  expect_load_error(with("pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", 5}}),
                    {"field 'pretokenizers' must be a list"});
  expect_load_error(with("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", 5}}}, {"behavior", "Isolated"}}),
                    {"pattern must be {\"String\": \"...\"} or {\"Regex\": \"...\"}"});
  expect_load_error(
      with("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(("}}}, {"behavior", "Isolated"}}),
      {"cannot compile regex /((/", "pre_tokenizer Split pattern", "fix the regex"});
  njson post = njson::parse(R"({"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [-1], "tokens": ["<s>"]}}})");
  expect_load_error(with("post_processor", post), {"special token '<s>' has id -1"});
  njson j = tiny();
  j["model"]["fuse_unk"] = "yes";
  expect_load_error(j, {"field 'fuse_unk' must be true or false", "model BPE"});
}

TEST(TokenizerJson, RegexMatchLimitNamesThePatternAndTheInput) {
  njson j = tiny();
  j["model"]["vocab"] = {{"a", 0}, {"b", 1}, {" ", 2}, {"!", 3}};
  j["model"]["merges"] = njson::array();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(\\w+\\s?)*$"}}}, {"behavior", "Isolated"}};
  auto t = Tokenizer::from_json(j);
  std::string err = error_of([&] { t.encode("b b " + std::string(40, 'a') + "!"); });
  EXPECT_TRUE(has(err, "the regex match limit was hit: match limit exceeded (PCRE2 error -47)")) << err;
  EXPECT_TRUE(has(err, "pre_tokenizer Split pattern /(\\w+\\s?)*$/")) << err;
  EXPECT_TRUE(has(err, "input text at byte 0")) << err;
  EXPECT_TRUE(has(err, "\"b b aaaa")) << err;
  EXPECT_TRUE(has(err, "what to do: the input has a run that makes this pattern backtrack")) << err;
  EXPECT_EQ(t.encode("b b aaaa").ids, (std::vector<int64_t>{1, 2, 1, 2, 0, 0, 0, 0}));
}

TEST(TokenizerConfigJson, FieldsOfTheWrongTypeAreErrors) {
  auto config_error = [](const std::string& config) {
    automodel::testing::TempDir dir;
    std::ofstream(dir / "tokenizer.json") << tiny().dump();
    std::ofstream(dir / "tokenizer_config.json") << config;
    return error_of([&] { Tokenizer::from_pretrained(dir.str()); });
  };
  auto expect = [&](const std::string& config, const std::string& part) {
    std::string err = config_error(config);
    EXPECT_TRUE(has(err, part)) << config << "\n" << err;
    EXPECT_TRUE(has(err, "tokenizer_config.json")) << err;
  };
  expect(R"({"bos_token": 5})", "field 'bos_token' must be a string or an AddedToken object");
  expect(R"({"eos_token": {"content": 5}})", "field 'eos_token' must be a string");
  expect(R"({"add_bos_token": "true"})", "field 'add_bos_token' must be true or false");
  expect(R"({"chat_template": 5})", "field 'chat_template' must be a string or a list");
  expect(R"({"chat_template": [{"name": "default", "template": 5}]})", "field 'chat_template' must be");
  expect(R"({"added_tokens_decoder": []})", "field 'added_tokens_decoder' must be an object");
  expect(R"({"added_tokens_decoder": {"x": {"content": "<s>"}}})", "added_tokens_decoder key 'x' is not a token id");
  expect(R"({"added_tokens_decoder": {"1": "<s>"}})", "added_tokens_decoder['1'] must be an object");
  expect(R"({"model_max_length": "big"})", "field 'model_max_length' must be a number");
  expect(R"([1, 2])", "tokenizer_config.json must be a JSON object");
  EXPECT_EQ(config_error(R"({"bos_token": null, "add_bos_token": null, "chat_template": null})"), "");
}

// ---------------------------------------------------------------- streamed encoding

namespace {

// A byte-level BPE without merges over the GPT-2 regex (as assets/tiny-llama), with an added token.
njson byte_level() {
  njson j = tiny();
  njson vocab = njson::object();  // GPT-2's byte-to-character table
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    uint32_t cp = printable ? static_cast<uint32_t>(b) : 256 + static_cast<uint32_t>(n++);
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[s] = b;
  }
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = njson::array();
  j["pre_tokenizer"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  j["added_tokens"] = njson::array({added(300, "<|end|>")});
  j["post_processor"] = njson::parse(R"({"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<|end|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
               {"SpecialToken": {"id": "<|end|>", "type_id": 0}}],
    "pair": [], "special_tokens": {"<|end|>": {"id": "<|end|>", "ids": [256], "tokens": ["<|end|>"]}}})");
  return j;
}

std::vector<int64_t> streamed(const Tokenizer& t, const std::string& text, bool add_special = true,
                              int* parts = nullptr) {
  std::istringstream in(text);
  std::vector<int64_t> ids;
  t.encode_stream(in, add_special, [&](const std::vector<int64_t>& part) {
    ids.insert(ids.end(), part.begin(), part.end());
    if (parts) ++*parts;
  });
  return ids;
}

}  // namespace

TEST(StreamEncode, ChunkedIdsEqualWholeTextIds) {
  auto t = Tokenizer::from_json(byte_level());
  ASSERT_TRUE(t.streams_in_chunks());
  // ~1.5 MB of lines whose newlines sit between every kind of neighbour: cuts happen only at "x\ny".
  const char* const pieces[] = {"word", " ",       "\n", "\n\n", " \n ", "\r\n", "\t",
                                "!",    "<|end|>", "42", "é",    "  ",   ".\n"};
  std::string text;
  uint32_t state = 12345;
  while (text.size() < (size_t{3} << 19)) {
    state = state * 1103515245u + 12345u;
    text += pieces[(state >> 16) % (sizeof(pieces) / sizeof(pieces[0]))];
  }
  int parts = 0;
  EXPECT_EQ(streamed(t, text, true, &parts), t.encode(text).ids);
  EXPECT_GE(parts, 6);  // the special token before, chunks of about 256 KiB, the special token after
  EXPECT_EQ(streamed(t, text, false), t.encode(text, false).ids);
  EXPECT_EQ(streamed(t, ""), t.encode("").ids);
  std::string err = error_of([&] { streamed(t, text + "\xff" + text); });
  EXPECT_TRUE(has(err, "not valid UTF-8 (at byte " + std::to_string(text.size()) + ")")) << err;
}

TEST(StreamEncode, PipelinesWithoutAProvenCutAreEncodedWhole) {
  EXPECT_TRUE(Tokenizer::from_json(byte_level()).streams_in_chunks());
  auto whole = [](const std::function<void(njson&)>& change) {
    njson j = byte_level();
    change(j);
    auto t = Tokenizer::from_json(j);
    std::string text = std::string(300000, 'a') + "\nb\n" + std::string(300000, 'c');
    EXPECT_EQ(streamed(t, text), t.encode(text).ids);
    return !t.streams_in_chunks();
  };
  EXPECT_TRUE(whole([](njson& j) { j["normalizer"] = {{"type", "Prepend"}, {"prepend", "_"}}; }));
  EXPECT_TRUE(whole([](njson& j) {
    j["normalizer"] = {{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}};
  }));
  EXPECT_TRUE(whole([](njson& j) { j["pre_tokenizer"] = nullptr; }));
  EXPECT_TRUE(whole([](njson& j) { j["pre_tokenizer"]["add_prefix_space"] = true; }));
  EXPECT_TRUE(whole([](njson& j) { j["added_tokens"].push_back(added(301, "a\nb")); }));
  EXPECT_TRUE(whole([](njson& j) {
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\S+\\s*"}}}, {"behavior", "Isolated"}};
  }));
  EXPECT_TRUE(whole([](njson& j) {
    j["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers", {j["pre_tokenizer"], {{"type", "Metaspace"}, {"prepend_scheme", "first"}}}}};
  }));
  EXPECT_FALSE(whole([](njson& j) {
    j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}, {{"type", "Lowercase"}}}}};
  }));
  EXPECT_FALSE(whole([](njson& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }));
  EXPECT_FALSE(whole([](njson& j) { j["pre_tokenizer"] = {{"type", "WhitespaceSplit"}}; }));
}

// components/tokenizer/: small hand-written tokenizer.json cases and the errors for what is unsupported.
#include "components/tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"

using automodel::Error;
using automodel::tokenizer::Tokenizer;
using json = nlohmann::json;

namespace {

// A BPE over {a, b, c} with merges a+b -> ab, ab+c -> abc.
json tiny_bpe() {
  return json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
    "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
              "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, " ": 5},
              "merges": ["a b", "ab c"]}})");
}

std::string expect_error(const json& j) {
  try {
    Tokenizer::from_json(j);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no automodel::Error";
  return "";
}

}  // namespace

TEST(Tokenizer, BpeMergesAsStringsAndPairs) {
  auto t = Tokenizer::from_json(tiny_bpe());
  auto e = t.encode("abcab c");
  EXPECT_EQ(e.ids, (std::vector<int64_t>{4, 3, 5, 2}));
  ASSERT_EQ(e.offsets.size(), 4u);
  EXPECT_EQ(e.offsets[0], (std::pair<size_t, size_t>{0, 3}));
  EXPECT_EQ(e.offsets[1], (std::pair<size_t, size_t>{3, 5}));
  EXPECT_EQ(e.offsets[3], (std::pair<size_t, size_t>{6, 7}));
  EXPECT_EQ(t.decode(e.ids), "abc ab   c");  // no decoder: tokens joined with spaces
  EXPECT_EQ(t.vocab_size(), 6);
  EXPECT_EQ(t.token_to_id("abc"), 4);
  EXPECT_FALSE(t.token_to_id("zzz").has_value());
  EXPECT_EQ(t.id_to_token(3), "ab");
  EXPECT_EQ(t.id_to_token(99), "");
  json pairs = tiny_bpe();
  pairs["model"]["merges"] = json::parse(R"([["a", "b"], ["ab", "c"]])");
  EXPECT_EQ(Tokenizer::from_json(pairs).encode("abcab c").ids, e.ids);
}

TEST(Tokenizer, UnknownCharactersWithoutUnkAreDroppedLikeHf) {
  auto t = Tokenizer::from_json(tiny_bpe());
  EXPECT_EQ(t.encode("axb").ids, (std::vector<int64_t>{3}));  // x dropped, then a+b merge
}

TEST(Tokenizer, UnkFuseUnkAndByteFallback) {
  json j = tiny_bpe();
  j["model"]["vocab"]["<unk>"] = 6;
  j["model"]["unk_token"] = "<unk>";
  j["model"]["fuse_unk"] = true;
  auto t = Tokenizer::from_json(j);
  EXPECT_EQ(t.encode("axyb").ids, (std::vector<int64_t>{0, 6, 1}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(Tokenizer::from_json(j).encode("axyb").ids, (std::vector<int64_t>{0, 6, 6, 1}));
  // byte fallback: "é" = C3 A9; both byte tokens present -> used; "x" (78) absent -> unk.
  j["model"]["byte_fallback"] = true;
  j["model"]["vocab"]["<0xC3>"] = 7;
  j["model"]["vocab"]["<0xA9>"] = 8;
  j["decoder"] = json::parse(R"({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]})");
  auto t2 = Tokenizer::from_json(j);
  auto e = t2.encode("aéx");
  EXPECT_EQ(e.ids, (std::vector<int64_t>{0, 7, 8, 6}));
  EXPECT_EQ(e.offsets[1], (std::pair<size_t, size_t>{1, 3}));  // a byte token covers its whole character
  EXPECT_EQ(t2.decode({0, 7, 8}), "a\xC3\xA9");
  EXPECT_EQ(t2.decode({0, 7}), "a\xEF\xBF\xBD");  // an incomplete sequence decodes to U+FFFD per byte
}

TEST(Tokenizer, ContinuingSubwordPrefixAndSuffix) {
  json j = tiny_bpe();
  j["model"]["vocab"] = json::parse(R"({"a": 0, "##b": 1, "##c</w>": 2, "a##b": 9, "ab": 3, "abc</w>": 4})");
  j["model"]["merges"] = json::parse(R"(["a ##b", "ab ##c</w>"])");
  j["model"]["continuing_subword_prefix"] = "##";
  j["model"]["end_of_word_suffix"] = "</w>";
  auto t = Tokenizer::from_json(j);
  EXPECT_EQ(t.encode("abc").ids, (std::vector<int64_t>{4}));
}

TEST(Tokenizer, IgnoreMerges) {
  json j = tiny_bpe();
  j["model"]["vocab"]["bc"] = 7;
  j["model"]["vocab"]["abcd"] = 8;
  j["model"]["vocab"]["d"] = 9;
  auto t = Tokenizer::from_json(j);
  EXPECT_EQ(t.encode("abcd").ids, (std::vector<int64_t>{4, 9}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(Tokenizer::from_json(j).encode("abcd").ids, (std::vector<int64_t>{8}));
}

TEST(Tokenizer, AddedTokensTemplateAndSkipSpecial) {
  json j = tiny_bpe();
  j["added_tokens"] = json::parse(R"([
    {"id": 6, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 7, "content": "[X]", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": false}])");
  j["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [6], "tokens": ["<s>"]}}})");
  auto t = Tokenizer::from_json(j);
  auto e = t.encode("ab<s>c  [X]  a");
  EXPECT_EQ(e.ids, (std::vector<int64_t>{6, 3, 6, 2, 7, 0}));
  EXPECT_EQ(e.special_tokens_mask, (std::vector<uint8_t>{1, 0, 0, 0, 0, 0}));
  EXPECT_EQ(e.offsets[0], (std::pair<size_t, size_t>{0, 0}));
  EXPECT_EQ(e.offsets[4], (std::pair<size_t, size_t>{6, 13}));  // lstrip/rstrip take the spaces
  EXPECT_EQ(t.encode("ab", false).ids, (std::vector<int64_t>{3}));
  EXPECT_EQ(t.decode({6, 3, 7}, true), "ab [X]");
  EXPECT_EQ(t.token_to_id("<s>"), 6);
  EXPECT_EQ(t.id_to_token(7), "[X]");
  EXPECT_EQ(t.vocab_size(), 8);
}

TEST(Tokenizer, SingleWordAddedToken) {
  json j = tiny_bpe();
  j["added_tokens"] = json::parse(
      R"([{"id": 3, "content": "ab", "single_word": true, "lstrip": false, "rstrip": false, "normalized": false, "special": false}])");
  auto t = Tokenizer::from_json(j);
  EXPECT_EQ(t.encode("ab c").ids, (std::vector<int64_t>{3, 5, 2}));
  EXPECT_EQ(t.encode("abc").ids, (std::vector<int64_t>{4}));  // inside a word: not matched
}

TEST(Tokenizer, ByteLevelRoundTripAndLossyDecode) {
  json j = tiny_bpe();
  json vocab = json::object();
  // The 256 byte-level characters as the vocabulary.
  int id = 0;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    int cp = b;
    static const auto printable = [](int x) {
      return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
    };
    if (!printable(b)) {
      int n = 0;
      for (int k = 0; k < b; ++k)
        if (!printable(k)) ++n;
      cp = 256 + n;
    }
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[s] = id++;
  }
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = json::array();
  j["pre_tokenizer"] =
      json::parse(R"({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})");
  j["decoder"] = json::parse(R"({"type": "ByteLevel"})");
  auto t = Tokenizer::from_json(j);
  std::string text = "héllo wörld 😀\n\t";
  auto e = t.encode(text);
  EXPECT_EQ(e.ids.size(), text.size());
  EXPECT_EQ(t.decode(e.ids), text);
  EXPECT_EQ(t.decode({0xF0, 'a'}),
            "\xEF\xBF\xBD"
            "a");
  auto batch = t.encode_batch({text, "abc", ""});
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch[0].ids, e.ids);
  EXPECT_TRUE(batch[2].ids.empty());
  EXPECT_THROW(t.encode(std::string("a\xFF")), Error);  // invalid UTF-8 input
}

TEST(Tokenizer, SplitBehaviors) {
  auto ids_with = [](const std::string& behavior, bool invert) {
    json j = tiny_bpe();
    j["pre_tokenizer"] = {
        {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", behavior}, {"invert", invert}};
    return Tokenizer::from_json(j).encode("ab c").ids;
  };
  EXPECT_EQ(ids_with("Removed", false), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(ids_with("Isolated", false), (std::vector<int64_t>{3, 5, 2}));
  EXPECT_EQ(ids_with("MergedWithPrevious", false), (std::vector<int64_t>{3, 5, 2}));
  EXPECT_EQ(ids_with("Removed", true), (std::vector<int64_t>{5}));
}

TEST(Tokenizer, MetaspaceAndLlama2Decoders) {
  json j = tiny_bpe();
  j["model"]["vocab"] = json::parse(R"({"\u2581": 0, "a": 1, "b": 2, "\u2581a": 3, "\u2581ab": 4})");
  j["model"]["merges"] = json::parse(R"(["\u2581 a", "\u2581a b"])");
  j["pre_tokenizer"] =
      json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": true})");
  j["decoder"] =
      json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": true})");
  auto t = Tokenizer::from_json(j);
  auto e = t.encode("ab a");
  EXPECT_EQ(e.ids, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(e.offsets[0], (std::pair<size_t, size_t>{0, 2}));
  EXPECT_EQ(e.offsets[1], (std::pair<size_t, size_t>{2, 4}));
  EXPECT_EQ(t.decode(e.ids), "ab a");
  j["pre_tokenizer"] = nullptr;
  j["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]})");
  j["decoder"] = json::parse(R"({"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"},
      "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})");
  auto t2 = Tokenizer::from_json(j);
  EXPECT_EQ(t2.encode("ab a").ids, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(t2.decode({4, 3}), "ab a");
}

TEST(Tokenizer, NormalizersLowercaseNfcStrip) {
  json j = tiny_bpe();
  j["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"},
      {"type": "Strip", "strip_left": true, "strip_right": true}]})");
  auto t = Tokenizer::from_json(j);
  auto e = t.encode("  ABC  ");
  EXPECT_EQ(e.ids, (std::vector<int64_t>{4}));
  EXPECT_EQ(e.offsets[0], (std::pair<size_t, size_t>{2, 5}));
}

TEST(Tokenizer, UnsupportedComponentsAreErrorsNamingThem) {
  json j = tiny_bpe();
  j["model"]["type"] = "WordPiece";
  EXPECT_NE(expect_error(j).find("WordPiece"), std::string::npos);
  j = tiny_bpe();
  j["model"]["dropout"] = 0.1;
  EXPECT_NE(expect_error(j).find("dropout"), std::string::npos);
  j = tiny_bpe();
  j["normalizer"] = {{"type", "BertNormalizer"}};
  EXPECT_NE(expect_error(j).find("BertNormalizer"), std::string::npos);
  j = tiny_bpe();
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "UnicodeScripts"}}}}};
  EXPECT_NE(expect_error(j).find("UnicodeScripts"), std::string::npos);
  j = tiny_bpe();
  j["decoder"] = {{"type", "CTC"}};
  EXPECT_NE(expect_error(j).find("CTC"), std::string::npos);
  j = tiny_bpe();
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  EXPECT_NE(expect_error(j).find("RobertaProcessing"), std::string::npos);
  j = tiny_bpe();
  j["model"]["merges"] = json::parse(R"(["a q"])");
  EXPECT_NE(expect_error(j).find("a q"), std::string::npos);
  j = tiny_bpe();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  EXPECT_NE(expect_error(j).find("regex"), std::string::npos);
  j = tiny_bpe();
  j["truncation"] = {{"max_length", 8}};
  EXPECT_NE(expect_error(j).find("truncation"), std::string::npos);
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), Error);
  EXPECT_THROW(Tokenizer::from_pretrained("/nonexistent-dir-xyz"), Error);
}

TEST(Tokenizer, FromPretrainedReadsTokenizerConfig) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("am_tok_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << tiny_bpe().dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"bos_token": {"content": "<s>", "lstrip": false},
      "eos_token": "</s>", "add_bos_token": true, "add_eos_token": false, "model_max_length": 4096,
      "chat_template": "{{ messages }}"})";
  auto t = Tokenizer::from_pretrained(dir.string());
  EXPECT_EQ(t.bos_token(), "<s>");
  EXPECT_EQ(t.eos_token(), "</s>");
  EXPECT_FALSE(t.pad_token().has_value());
  EXPECT_EQ(t.add_bos_token(), true);
  EXPECT_EQ(t.add_eos_token(), false);
  EXPECT_EQ(t.model_max_length(), 4096);
  EXPECT_EQ(t.tokenizer_config().at("chat_template"), "{{ messages }}");
  EXPECT_EQ(t.encode("abc").ids, (std::vector<int64_t>{4}));
  fs::remove_all(dir);
}

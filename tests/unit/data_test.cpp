// components/data: records and split slices, NeMo's LLM datasets (masks checked token by token
// with a one-id-per-word tokenizer), packing, collate and the stateful loader.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "components/data/collate.h"
#include "components/data/formatting.h"
#include "components/data/llm_datasets.h"
#include "components/data/loader.h"
#include "components/data/packing.h"
#include "components/data/records.h"
#include "error_of.h"
#include "temp_dir.h"

namespace automodel::data {
namespace {

using automodel::testing::error_of;
using automodel::testing::TempDir;
using ojson = nlohmann::ordered_json;

constexpr int64_t kPad = 0, kBos = 1, kEos = 2;

// One id per whitespace-separated word; "<bos>" / "</s>" / "<pad>" are the special ids. The
// vocabulary grows as words are seen, so expectations are written as words and mapped with id().
class WordVocab {
 public:
  int64_t id(const std::string& word) {
    auto [it, added] = ids_.emplace(word, int64_t(ids_.size()) + 10);
    return it->second;
  }
  std::vector<int64_t> ids(const std::string& text) {
    std::vector<int64_t> out;
    std::istringstream words(text);
    std::string w;
    while (words >> w) out.push_back(w == "<bos>" ? kBos : w == "</s>" ? kEos : w == "<pad>" ? kPad : id(w));
    return out;
  }
  // Labels written as words, "_" for kIgnoreIndex.
  std::vector<int64_t> labels(const std::string& text) {
    std::vector<int64_t> out;
    std::istringstream words(text);
    std::string w;
    while (words >> w) out.push_back(w == "_" ? kIgnoreIndex : ids(w)[0]);
    return out;
  }

 private:
  std::map<std::string, int64_t> ids_;
};

// The render a template like Llama's produces, in words: every message is "<role> content <eot>".
std::string fake_chat_template(const ojson& messages, const ojson& tools, bool add_generation_prompt) {
  std::string out = "<bos>";
  if (!tools.is_null()) out += " <tools> " + std::to_string(tools.size());
  for (const auto& m : messages) {
    out += " <" + m["role"].get<std::string>() + "> " + m["content"].get<std::string>();
    if (m.contains("tool_calls"))
      for (const auto& c : m["tool_calls"])
        out += " <call> " + c["id"].get<std::string>() + " " + c["function"]["name"].get<std::string>() + " " +
               c["function"]["arguments"].get<std::string>();
    out += " <eot>";
  }
  if (add_generation_prompt) out += " <assistant>";
  return out;
}

struct DataSets : ::testing::Test {
  WordVocab vocab;
  TempDir dir;

  // BOS in front, no EOS (as Llama 3's post-processor); add_eos adds EOS at the end too.
  TextTokenizer tokenizer(bool add_eos = false, bool chat = false) {
    TextTokenizer tok;
    tok.encode = [this, add_eos](const std::string& text, bool special) {
      TokenizedText t;
      const char* ws = " \t\n\r\f\v";
      for (size_t b = text.find_first_not_of(ws); b != std::string::npos; b = text.find_first_not_of(ws, b)) {
        size_t e = std::min(text.find_first_of(ws, b), text.size());
        t.ids.push_back(vocab.ids(text.substr(b, e - b))[0]);
        t.offsets.emplace_back(b, e);
        b = e;
      }
      t.inserted.assign(t.ids.size(), 0);
      auto insert = [&t](size_t at, int64_t id) {
        t.ids.insert(t.ids.begin() + long(at), id);
        t.offsets.insert(t.offsets.begin() + long(at), {0, 0});
        t.inserted.insert(t.inserted.begin() + long(at), 1);
      };
      if (special) {
        insert(0, kBos);
        if (add_eos) insert(t.ids.size(), kEos);
      }
      return t;
    };
    if (chat) tok.apply_chat_template = fake_chat_template;
    tok.bos_id = kBos;
    tok.eos_id = kEos;
    tok.pad_id = kPad;
    return tok;
  }
  std::string write(const std::string& name, const std::string& text) {
    std::filesystem::create_directories(std::filesystem::path(dir / name).parent_path());
    std::ofstream(dir / name) << text;
    return dir / name;
  }
  std::string write_jsonl(const std::string& name, const std::vector<ojson>& rows) {
    std::string text;
    for (const auto& r : rows) text += r.dump() + "\n";
    return write(name, text);
  }
  std::vector<int64_t> ids(const std::string& words) { return vocab.ids(words); }
  std::vector<int64_t> labels(const std::string& words) { return vocab.labels(words); }
};

ojson squad_row(const std::string& context, const std::string& question, const std::string& answer) {
  return {{"id", "x"},
          {"context", context},
          {"question", question},
          {"answers", {{"text", {answer}}, {"answer_start", {0}}}}};
}

// ---------------------------------------------------------------- records and splits

TEST_F(DataSets, RecordsFromJsonlJsonArrayDataKeyAndJsonLinesInJson) {
  std::string jsonl = write("a.jsonl", "{\"k\": 1}\n\n{\"k\": 2}\n");
  std::string array = write("b.json", "[{\"k\": 1}, {\"k\": 2}, {\"k\": 3}]");
  std::string data = write("c.json", "{\"version\": 1, \"data\": [{\"k\": 7}]}");
  std::string lines = write("d.json", "{\"k\": 1}\n{\"k\": 2}\n");
  EXPECT_EQ(load_records(jsonl, "train").size(), 2u);
  EXPECT_EQ(load_records(array, "train").size(), 3u);
  EXPECT_EQ(load_records(data, "train")[0]["k"], 7);
  EXPECT_EQ(load_records(lines, "train")[1]["k"], 2);
}

TEST_F(DataSets, SplitSlicesFollowHfSyntax) {
  std::string path = write("rows.json", "[{\"k\":0},{\"k\":1},{\"k\":2},{\"k\":3}]");
  auto keys = [&](const std::string& split) {
    std::vector<int> out;
    for (const auto& r : load_records(path, split)) out.push_back(r["k"].get<int>());
    return out;
  };
  EXPECT_EQ(keys("train[:2]"), (std::vector<int>{0, 1}));
  EXPECT_EQ(keys("train[1:3]"), (std::vector<int>{1, 2}));
  EXPECT_EQ(keys("train[-1:]"), (std::vector<int>{3}));
  EXPECT_EQ(keys("train[:-3]"), (std::vector<int>{0}));
  EXPECT_EQ(keys("train[2:]"), (std::vector<int>{2, 3}));
  EXPECT_EQ(keys("train[:50%]"), (std::vector<int>{0, 1}));
  EXPECT_EQ(keys("train[:100]"), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(keys("validation"), (std::vector<int>{0, 1, 2, 3}));  // a single file is every split
  EXPECT_EQ(keys("train[3:1]"), (std::vector<int>{}));
}

TEST_F(DataSets, BadSplitSliceIsAnError) {
  std::string path = write("rows.json", "[{\"k\":0}]");
  for (const char* bad : {"train[:x]", "train[1]", "train[:2", "[:2]", "train[1:2:3]"}) {
    std::string msg = error_of([&] { load_records(path, bad); });
    EXPECT_NE(msg.find("bad split"), std::string::npos) << bad << ": " << msg;
  }
}

TEST_F(DataSets, DirectoryPicksTheSplitsFiles) {
  write("ds/train.jsonl", "{\"s\": \"train\"}\n");
  write("ds/validation.jsonl", "{\"s\": \"val\"}\n{\"s\": \"val\"}\n");
  write("ds/data/test-00000-of-00001.json", "[{\"s\": \"test\"}]");
  std::string ds = dir / "ds";
  EXPECT_EQ(load_records(ds, "train").size(), 1u);
  EXPECT_EQ(load_records(ds, "validation").size(), 2u);
  EXPECT_EQ(load_records(ds, "validation[:1]").size(), 1u);
  EXPECT_EQ(load_records(ds, "test")[0]["s"], "test");
  EXPECT_EQ(load_records(ds, "train+validation").size(), 3u);

  write("dv/dev.jsonl", "{\"s\": 1}\n");
  write("dv/my_train_part.jsonl", "{\"s\": 2}\n");
  EXPECT_EQ(load_records(dir / "dv", "validation").size(), 1u);  // dev is a validation name
  EXPECT_EQ(load_records(dir / "dv", "train").size(), 1u);

  write("plain/a.jsonl", "{\"s\": 1}\n");
  write("plain/b.jsonl", "{\"s\": 2}\n");
  EXPECT_EQ(load_records(dir / "plain", "train").size(), 2u);  // unnamed files are all train
}

TEST_F(DataSets, MissingFilesAreErrorsThatSayWhatWasFound) {
  std::string msg = error_of([&] { load_records(dir / "nope.jsonl", "train"); });
  EXPECT_NE(msg.find("dataset path not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nope.jsonl"), std::string::npos) << msg;

  write("ds/train.jsonl", "{}\n");
  write("ds/extra.parquet", "x");
  msg = error_of([&] { load_records(dir / "ds", "validation"); });
  EXPECT_NE(msg.find("no .json/.jsonl/.parquet file for split 'validation'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.jsonl"), std::string::npos) << msg;
  EXPECT_NE(msg.find("extra.parquet"), std::string::npos) << msg;

  std::string bad = write("bad.jsonl", "{\"a\": 1}\n{oops\n");
  msg = error_of([&] { load_records(bad, "train"); });
  EXPECT_NE(msg.find("bad.jsonl:2"), std::string::npos) << msg;
  std::string scalar = write("scalar.jsonl", "3\n");
  EXPECT_NE(error_of([&] { load_records(scalar, "train"); }).find("not an object"), std::string::npos);
}

// ---------------------------------------------------------------- SQuAD

TEST_F(DataSets, SquadPlainPromptMasksTheContextAndQuestion) {
  SquadOptions o;
  o.path = write_jsonl("squad.jsonl", {squad_row("c1 c2", "q1", " a1 a2 "), squad_row("d1", "q2", "b1")});
  auto samples = materialize(make_squad_dataset(tokenizer(), o));
  ASSERT_EQ(samples.size(), 2u);
  // tokens: <bos> Context: c1 c2 Question: q1 Answer: a1 a2 (answer stripped; no EOS: NeMo adds none)
  EXPECT_EQ(samples[0].input_ids, ids("<bos> Context: c1 c2 Question: q1 Answer: a1"));
  EXPECT_EQ(samples[0].labels, labels("_ _ _ _ _ _ a1 a2"));
  EXPECT_EQ(samples[1].input_ids, ids("<bos> Context: d1 Question: q2 Answer:"));
  EXPECT_EQ(samples[1].labels, labels("_ _ _ _ _ b1"));
  EXPECT_TRUE(samples[0].position_ids.empty());
  EXPECT_TRUE(samples[0].attention_mask.empty());

  // A tokenizer that appends EOS: EOS is the answer's last target; the prompt length still counts BOS only.
  samples = materialize(make_squad_dataset(tokenizer(/*add_eos=*/true), o));
  EXPECT_EQ(samples[0].input_ids, ids("<bos> Context: c1 c2 Question: q1 Answer: a1 a2"));
  EXPECT_EQ(samples[0].labels, labels("_ _ _ _ _ _ a1 a2 </s>"));
}

TEST_F(DataSets, SquadWithChatTemplateSupervisesTheAssistantTurn) {
  SquadOptions o;
  o.path = write_jsonl("squad.jsonl", {squad_row("c1", "q1", "a1 a2")});
  auto samples = materialize(make_squad_dataset(tokenizer(false, /*chat=*/true), o));
  ASSERT_EQ(samples.size(), 1u);
  // render: <bos> <user> Context: c1 Question: q1 Answer: <eot> <assistant> a1 a2 <eot>
  EXPECT_EQ(samples[0].input_ids, ids("<bos> <user> Context: c1 Question: q1 Answer: <eot> <assistant> a1 a2"));
  EXPECT_EQ(samples[0].labels, labels("_ _ _ _ _ _ _ <assistant> a1 a2 <eot>"));

  o.use_chat_template = false;  // plain prompts even though the tokenizer has a template
  samples = materialize(make_squad_dataset(tokenizer(false, true), o));
  EXPECT_EQ(samples[0].labels, labels("_ _ _ _ _ a1 a2"));
  o.use_chat_template = true;
  EXPECT_NE(error_of([&] { materialize(make_squad_dataset(tokenizer(), o)); }).find("no chat template"),
            std::string::npos);
}

TEST_F(DataSets, SquadTruncationKeepsSpecialTokensAndPaddingPadsToSeqLength) {
  SquadOptions o;
  o.path = write_jsonl("squad.jsonl", {squad_row("c1 c2", "q1", "a1 a2")});
  o.seq_length = 9;
  o.truncation = "longest_first";
  // 10 tokens with specials -> <bos> + 7 content + </s> (HF keeps the post-processor's tokens).
  auto s = materialize(make_squad_dataset(tokenizer(true), o))[0];
  EXPECT_EQ(s.input_ids, ids("<bos> Context: c1 c2 Question: q1 Answer: a1"));
  EXPECT_EQ(s.labels, labels("_ _ _ _ _ _ a1 </s>"));

  // Without truncation NeMo leaves long samples as they are.
  o.truncation = "do_not_truncate";
  EXPECT_EQ(materialize(make_squad_dataset(tokenizer(true), o))[0].input_ids.size(), 9u);

  o.seq_length = 12;
  o.padding = "max_length";
  s = materialize(make_squad_dataset(tokenizer(), o))[0];
  EXPECT_EQ(s.input_ids, ids("<bos> Context: c1 c2 Question: q1 Answer: a1 <pad> <pad> <pad> <pad>"));
  EXPECT_EQ(s.labels, labels("_ _ _ _ _ _ a1 a2 _ _ _ _"));
  EXPECT_EQ(s.attention_mask, (std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0}));
}

TEST_F(DataSets, SquadLimitAndSplitSlice) {
  SquadOptions o;
  o.path = write_jsonl("squad.jsonl", {squad_row("c", "q", "a"), squad_row("d", "q", "b"), squad_row("e", "q", "c")});
  o.limit_dataset_samples = 2;
  EXPECT_EQ(materialize(make_squad_dataset(tokenizer(), o)).size(), 2u);
  o.split = "train[2:]";  // the split's own slice wins over limit_dataset_samples (NeMo)
  auto samples = materialize(make_squad_dataset(tokenizer(), o));
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].labels.back(), ids("c")[0]);
  o.split = "train";
  o.limit_dataset_samples = 0;
  EXPECT_NE(
      error_of([&] { materialize(make_squad_dataset(tokenizer(), o)); }).find("limit_dataset_samples must be positive"),
      std::string::npos);
}

TEST_F(DataSets, SquadErrors) {
  SquadOptions o;
  o.path = write_jsonl("squad.jsonl", {squad_row("c", "q", "a"), {{"context", "c"}, {"answers", {{"text", {"a"}}}}}});
  std::string msg = error_of([&] { materialize(make_squad_dataset(tokenizer(), o)); });
  EXPECT_NE(msg.find("record has no column 'question'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[record 1]"), std::string::npos) << msg;

  o.path = write_jsonl("ok.jsonl", {squad_row("c", "q", "a")});
  o.seq_length = 0;
  EXPECT_NE(error_of([&] { materialize(make_squad_dataset(tokenizer(), o)); }).find("seq_length must be positive"),
            std::string::npos);
  o.seq_length.reset();
  o.padding = "sideways";
  EXPECT_NE(error_of([&] { materialize(make_squad_dataset(tokenizer(), o)); }).find("unknown padding"),
            std::string::npos);

  o.padding = "do_not_pad";
  o.path = write("empty.jsonl", "");
  EXPECT_NE(error_of([&] { materialize(make_squad_dataset(tokenizer(), o)); }).find("dataset is empty"),
            std::string::npos);

  o.path = write_jsonl("noanswers.jsonl", {squad_row("c", "q", ""), squad_row("d", "q", "  ")});
  msg = error_of([&] { materialize(make_squad_dataset(tokenizer(), o)); });
  EXPECT_NE(msg.find("all labels masked"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- column-mapped

TEST_F(DataSets, ColumnMappedAnswerOnlyAndFullLoss) {
  ColumnMappedOptions o;
  o.path = write_jsonl("cm.jsonl", {{{"passage", "p1 p2"}, {"query", "q1"}, {"response", "r1 r2"}}});
  o.column_mapping = {{"context", "passage"}, {"question", "query"}, {"answer", "response"}};
  auto s = materialize(make_column_mapped_dataset(tokenizer(), o));
  ASSERT_EQ(s.size(), 1u);
  // prompt "p1 p2 q1 " + "r1 r2"
  EXPECT_EQ(s[0].input_ids, ids("<bos> p1 p2 q1 r1"));
  EXPECT_EQ(s[0].labels, labels("_ _ _ r1 r2"));

  o.answer_only_loss_mask = false;
  s = materialize(make_column_mapped_dataset(tokenizer(), o));
  EXPECT_EQ(s[0].input_ids, ids("<bos> p1 p2 q1 r1"));
  EXPECT_EQ(s[0].labels, labels("p1 p2 q1 r1 r2"));

  // Question only.
  o.answer_only_loss_mask = true;
  o.column_mapping = {{"question", "query"}, {"answer", "response"}};
  s = materialize(make_column_mapped_dataset(tokenizer(), o));
  EXPECT_EQ(s[0].input_ids, ids("<bos> q1 r1"));
  EXPECT_EQ(s[0].labels, labels("_ r1 r2"));
}

TEST_F(DataSets, ColumnMappedWithChatTemplate) {
  ColumnMappedOptions o;
  o.path = write_jsonl("cm.jsonl", {{{"passage", "p1"}, {"query", "q1"}, {"response", "r1"}}});
  o.column_mapping = {{"context", "passage"}, {"question", "query"}, {"answer", "response"}};
  o.use_hf_chat_template = true;
  auto s = materialize(make_column_mapped_dataset(tokenizer(false, true), o));
  EXPECT_EQ(s[0].input_ids, ids("<bos> <system> p1 <eot> <user> q1 <eot> <assistant> r1"));
  EXPECT_EQ(s[0].labels, labels("_ _ _ _ _ _ <assistant> r1 <eot>"));
  o.answer_only_loss_mask = false;
  s = materialize(make_column_mapped_dataset(tokenizer(false, true), o));
  EXPECT_EQ(s[0].labels, labels("<system> p1 <eot> <user> q1 <eot> <assistant> r1 <eot>"));
}

TEST_F(DataSets, ColumnMappedLimitTruncationAndMaskedSampleReplacement) {
  ColumnMappedOptions o;
  o.column_mapping = {{"question", "q"}, {"answer", "a"}};
  o.path = write_jsonl("cm.jsonl",
                       {{{"q", "w1 w2 w3"}, {"a", "x1"}}, {{"q", "v1"}, {"a", "y1 y2"}}, {{"q", "u1"}, {"a", "z1"}}});
  o.limit_dataset_samples = 2;
  o.seq_length = 3;
  o.truncation = "true";
  auto s = materialize(make_column_mapped_dataset(tokenizer(), o));
  ASSERT_EQ(s.size(), 2u);
  // Sample 0 truncates to <bos> w1 w2: no answer token left, so NeMo serves the next sample instead.
  EXPECT_EQ(s[0].input_ids, ids("<bos> v1"));
  EXPECT_EQ(s[0].labels, labels("_ y1"));
  EXPECT_EQ(s[1].input_ids, ids("<bos> v1"));
}

TEST_F(DataSets, ColumnMappedErrors) {
  ColumnMappedOptions o;
  o.path = write_jsonl("cm.jsonl", {{{"q", "w1"}, {"a", "x1"}}, {{"q", "w2"}, {"answer_text", "x2"}}});
  o.column_mapping = {{"question", "q"}, {"answer", "a"}};
  std::string msg = error_of([&] { materialize(make_column_mapped_dataset(tokenizer(), o)); });
  EXPECT_NE(msg.find("record has no column 'a' (it has: q, answer_text)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cm.jsonl:2 [record 1]"), std::string::npos) << msg;

  o.column_mapping = {{"question", "q"}};
  EXPECT_NE(
      error_of([&] { materialize(make_column_mapped_dataset(tokenizer(), o)); }).find("column_mapping has no 'answer'"),
      std::string::npos);
  o.column_mapping = {{"answer", "a"}};
  EXPECT_NE(
      error_of([&] { materialize(make_column_mapped_dataset(tokenizer(), o)); }).find("needs 'context' or 'question'"),
      std::string::npos);
  o.column_mapping = {{"question", "q"}, {"answer", "a"}, {"prompt", "p"}};
  EXPECT_NE(error_of([&] {
              materialize(make_column_mapped_dataset(tokenizer(), o));
            }).find("unknown column_mapping key 'prompt'"),
            std::string::npos);

  o.column_mapping = {{"question", "q"}, {"answer", "a"}};
  o.path = write_jsonl("masked.jsonl", {{{"q", "w1 w2"}, {"a", "x1"}}});
  o.seq_length = 2;
  o.truncation = "true";
  msg = error_of([&] { materialize(make_column_mapped_dataset(tokenizer(), o)); });
  EXPECT_NE(msg.find("every sample of the column-mapped dataset has all labels masked"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- chat

TEST_F(DataSets, ChatMultiTurnSupervisesEveryAssistantTurn) {
  ChatOptions o;
  ojson row = {{"messages",
                {{{"role", "system"}, {"content", "s1"}},
                 {{"role", "user"}, {"content", "u1"}},
                 {{"role", "assistant"}, {"content", "a1 a2"}},
                 {{"role", "user"}, {"content", "u2"}},
                 {{"role", "assistant"}, {"content", "b1"}}}}};
  o.path = write_jsonl("chat.jsonl", {row});
  auto s = materialize(make_chat_dataset(tokenizer(false, true), o));
  ASSERT_EQ(s.size(), 1u);
  // <bos> <system> s1 <eot> <user> u1 <eot> <assistant> a1 a2 <eot> <user> u2 <eot> <assistant> b1 <eot>
  EXPECT_EQ(s[0].input_ids, ids("<bos> <system> s1 <eot> <user> u1 <eot> <assistant> a1 a2 <eot> <user> u2 <eot> "
                                "<assistant> b1"));
  EXPECT_EQ(s[0].labels, labels("_ _ _ _ _ _ <assistant> a1 a2 <eot> _ _ _ <assistant> b1 <eot>"));

  o.mask_history = true;
  s = materialize(make_chat_dataset(tokenizer(false, true), o));
  EXPECT_EQ(s[0].labels, labels("_ _ _ _ _ _ _ _ _ _ _ _ _ <assistant> b1 <eot>"));

  o.mask_history = false;
  o.answer_only_loss_mask = false;
  s = materialize(make_chat_dataset(tokenizer(false, true), o));
  EXPECT_EQ(s[0].num_label_tokens(), int64_t(s[0].input_ids.size()));
}

TEST_F(DataSets, ChatShareGptAndToolCalls) {
  ChatOptions o;
  ojson sharegpt = {{"conversations", {{{"from", "human"}, {"value", "hi"}}, {{"from", "gpt"}, {"value", "yo"}}}}};
  ojson tools_row = ojson::parse(R"({"messages": [
      {"role": "user", "content": "weather?"},
      {"role": "assistant", "content": null,
       "tool_calls": [{"function": {"name": "get", "arguments": {"city": "Paris", "n": 1}}}]},
      {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
      {"role": "assistant", "content": [{"type": "text", "text": "it's"}, {"type": "text", "text": "sunny"}]}],
    "tools": "[{\"type\": \"function\", \"function\": {\"name\": \"get\"}}]"})");
  o.path = write_jsonl("chat.jsonl", {sharegpt, tools_row});
  auto s = materialize(make_chat_dataset(tokenizer(false, true), o));
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].input_ids, ids("<bos> <user> hi <eot> <assistant> yo"));
  EXPECT_EQ(s[0].labels, labels("_ _ _ <assistant> yo <eot>"));
  // The tool call gets id call_0, type function and its arguments as Python's json.dumps writes them.
  EXPECT_EQ(s[1].input_ids, ids("<bos> <tools> 1 <user> weather? <eot> <assistant> <call> call_0 get "
                                "{\"city\": \"Paris\", \"n\": 1} <eot> <tool> sunny <eot> <assistant> it's sunny"));
  EXPECT_EQ(s[1].labels, labels("_ _ _ _ _ <assistant> <call> call_0 get {\"city\": \"Paris\", \"n\": 1} <eot> "
                                "_ _ _ <assistant> it's sunny <eot>"));

  ojson m = chat_record_messages(tools_row, "r");
  EXPECT_EQ(m[1]["content"], "");
  EXPECT_EQ(m[1]["tool_calls"][0]["type"], "function");
  EXPECT_EQ(m[1]["tool_calls"][0]["function"]["arguments"], "{\"city\": \"Paris\", \"n\": 1}");
  EXPECT_EQ(m[3]["content"], "it's sunny");
  EXPECT_TRUE(chat_record_tools(ojson{{"tools", ojson::array()}}, "r").is_null());
}

TEST_F(DataSets, ChatTruncationSlicesAndErrors) {
  ChatOptions o;
  ojson row = {{"messages", {{{"role", "user"}, {"content", "u1 u2"}}, {{"role", "assistant"}, {"content", "a1 a2"}}}}};
  ojson row2 = {{"messages", {{{"role", "user"}, {"content", "v1"}}, {{"role", "assistant"}, {"content", "b1"}}}}};
  o.path = write_jsonl("chat.jsonl", {row, row2});
  o.seq_length = 7;
  o.truncation = "true";
  auto s = materialize(make_chat_dataset(tokenizer(false, true), o));
  // <bos> <user> u1 u2 <eot> <assistant> a1 | a2 <eot> cut off
  EXPECT_EQ(s[0].input_ids, ids("<bos> <user> u1 u2 <eot> <assistant>"));
  EXPECT_EQ(s[0].labels, labels("_ _ _ _ <assistant> a1"));
  o.truncation = "do_not_truncate";
  o.split = "train[1:]";
  s = materialize(make_chat_dataset(tokenizer(false, true), o));
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].labels, labels("_ _ _ <assistant> b1 <eot>"));
  o.split = "train";
  o.limit_dataset_samples = 1;
  EXPECT_EQ(materialize(make_chat_dataset(tokenizer(false, true), o)).size(), 1u);

  EXPECT_NE(
      error_of([&] { materialize(make_chat_dataset(tokenizer(), o)); }).find("needs a tokenizer with a chat template"),
      std::string::npos);
  o.path = write_jsonl("bad_role.jsonl", {{{"messages", {{{"role", "narrator"}, {"content", "x"}}}}}});
  std::string msg = error_of([&] { materialize(make_chat_dataset(tokenizer(false, true), o)); });
  EXPECT_NE(msg.find("unsupported role \"narrator\""), std::string::npos) << msg;
  o.path = write_jsonl("no_msgs.jsonl", {{{"text", "x"}}});
  msg = error_of([&] { materialize(make_chat_dataset(tokenizer(false, true), o)); });
  EXPECT_NE(msg.find("no `messages` list"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[record 0]"), std::string::npos) << msg;
  o.path = write_jsonl("no_assistant.jsonl", {{{"messages", {{{"role", "user"}, {"content", "x"}}}}}});
  EXPECT_NE(error_of([&] { materialize(make_chat_dataset(tokenizer(false, true), o)); }).find("no assistant message"),
            std::string::npos);
  o.path = write_jsonl("tool.jsonl", {{{"messages", {{{"role", "tool"}, {"content", "x"}}}}}});
  EXPECT_NE(error_of([&] { materialize(make_chat_dataset(tokenizer(false, true), o)); }).find("tool_call_id"),
            std::string::npos);
}

TEST_F(DataSets, ChatTemplateThatRewritesEarlierTurnsIsRejected) {
  TextTokenizer tok = tokenizer(false, true);
  // Drops earlier assistant turns' content once a later user turn exists (as Qwen3 drops <think>).
  tok.apply_chat_template = [](const ojson& messages, const ojson& tools, bool gen) {
    ojson copy = messages;
    for (size_t i = 0; i + 1 < copy.size(); ++i)
      if (copy[i]["role"] == "assistant") copy[i]["content"] = "x";
    return fake_chat_template(copy, tools, gen);
  };
  ojson messages = {{{"role", "user"}, {"content", "u"}},
                    {{"role", "assistant"}, {"content", "a"}},
                    {{"role", "user"}, {"content", "v"}},
                    {{"role", "assistant"}, {"content", "b"}}};
  std::string msg = error_of([&] { format_chat(tok, messages, nullptr, FormatOptions()); });
  EXPECT_NE(msg.find("is not a prefix of the rendered conversation"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- HellaSwag

TEST_F(DataSets, HellaSwagMasksTheContextAndPadsToMultipleOf8) {
  HellaSwagOptions o;
  o.path =
      write_jsonl("hs.jsonl", {{{"ctx", "A man sits"}, {"endings", {"no", "he stands up", "x", "y"}}, {"label", "1"}},
                               {{"ctx", "B"}, {"endings", {"e1", "e2"}}, {"label", 0}}});
  auto s = materialize(make_hellaswag_dataset(tokenizer(/*add_eos=*/true), o));
  ASSERT_EQ(s.size(), 2u);
  // ctx ids lose their trailing </s>, the ending its leading <bos>; padded to 8 (longest 8 -> 8).
  EXPECT_EQ(s[0].input_ids, ids("<bos> A man sits he stands up </s>"));
  EXPECT_EQ(s[0].labels, labels("_ _ _ he stands up </s> _"));
  EXPECT_EQ(s[1].input_ids, ids("<bos> B e1 </s> <pad> <pad> <pad> <pad>"));
  EXPECT_EQ(s[1].labels, labels("_ e1 </s> _ _ _ _ _"));
  EXPECT_EQ(s[1].attention_mask, (std::vector<int64_t>{1, 1, 1, 1, 0, 0, 0, 0}));

  o.pad_to_max_length = false;
  o.num_samples_limit = 1;
  s = materialize(make_hellaswag_dataset(tokenizer(), o));
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].input_ids, ids("<bos> A man sits he stands up"));
  EXPECT_EQ(s[0].labels, labels("_ _ _ he stands up _"));
  EXPECT_TRUE(s[0].attention_mask.empty());

  o.path = write_jsonl("bad.jsonl", {{{"ctx", "A"}, {"endings", {"e"}}, {"label", 3}}});
  EXPECT_NE(error_of([&] { materialize(make_hellaswag_dataset(tokenizer(), o)); }).find("'label' must index 'endings'"),
            std::string::npos);
}

// ---------------------------------------------------------------- packing

Sample plain_sample(std::vector<int64_t> input, std::vector<int64_t> labels) {
  Sample s;
  s.input_ids = std::move(input);
  s.labels = std::move(labels);
  return s;
}

TEST(DataPacking, PacksKeepSequenceBoundaries) {
  const int64_t I = kIgnoreIndex;
  std::vector<Sample> samples = {plain_sample({11, 12, 13}, {I, 13, 14}), plain_sample({21, 22}, {22, 23}),
                                 plain_sample({31, 32, 33, 34}, {I, I, 34, 35}),
                                 plain_sample({41, 42, 43, 44, 45, 46, 47}, {1, 2, 3, 4, 5, 6, 7})};
  auto packs = pack_sequences(samples, 6, /*pad_id=*/0);
  ASSERT_EQ(packs.size(), 2u);  // the 7-token sample is longer than a pack and dropped (NeMo default)
  EXPECT_EQ(packs[0].input_ids, (std::vector<int64_t>{11, 12, 13, 21, 22, 0}));
  EXPECT_EQ(packs[0].labels, (std::vector<int64_t>{I, 13, 14, 22, 23, I}));
  EXPECT_EQ(packs[0].position_ids, (std::vector<int64_t>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(packs[0].seq_ids, (std::vector<int64_t>{0, 0, 0, 1, 1, -1}));
  EXPECT_EQ(packs[0].attention_mask, (std::vector<int64_t>{1, 1, 1, 1, 1, 0}));
  EXPECT_EQ(packs[1].input_ids, (std::vector<int64_t>{31, 32, 33, 34, 0, 0}));
  EXPECT_EQ(packs[1].labels, (std::vector<int64_t>{I, I, 34, 35, I, I}));
  EXPECT_EQ(packs[1].position_ids, (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(packs[1].seq_ids, (std::vector<int64_t>{0, 0, 0, 0, -1, -1}));

  // An exactly full pack has no padding; position ids of padding clamp to size - 1.
  auto exact = pack_sequences({plain_sample({1, 2}, {2, 3}), plain_sample({4, 5}, {5, 6})}, 4, 9);
  ASSERT_EQ(exact.size(), 1u);
  EXPECT_EQ(exact[0].seq_ids, (std::vector<int64_t>{0, 0, 1, 1}));
  auto clamped = pack_sequences({plain_sample({1, 2, 3}, {2, 3, 4})}, 5, 9);
  EXPECT_EQ(clamped[0].position_ids, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  auto one = pack_sequences({plain_sample({1, 2, 3, 4}, {2, 3, 4, 5}), plain_sample({7}, {8})}, 4, 9);
  ASSERT_EQ(one.size(), 2u);
  EXPECT_EQ(one[1].position_ids, (std::vector<int64_t>{0, 1, 2, 3}));

  PackOptions limited;
  limited.max_packs = 1;
  EXPECT_EQ(pack_sequences(samples, 6, 0, limited).size(), 1u);
}

TEST(DataPacking, Errors) {
  std::vector<Sample> long_only = {plain_sample({1, 2, 3}, {2, 3, 4})};
  EXPECT_NE(error_of([&] { pack_sequences(long_only, 2, 0); }).find("no packs were produced"), std::string::npos);
  PackOptions strict;
  strict.drop_long_samples = false;
  EXPECT_NE(error_of([&] { pack_sequences(long_only, 2, 0, strict); }).find("sample 0 is longer than a pack (3 > 2)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { pack_sequences(long_only, 0, 0); }).find("packed_sequence_size must be positive"),
            std::string::npos);
}

// ---------------------------------------------------------------- collate

TEST(DataCollate, PadsToLongestOrLengthAndCountsLabels) {
  const int64_t I = kIgnoreIndex;
  Sample a = plain_sample({5, 6, 7}, {I, 7, 8});
  Sample b = plain_sample({9, 10, 11, 12, 13}, {10, 11, I, I, 14});
  b.attention_mask = {1, 1, 1, 1, 0};
  Batch batch = default_collater({&a, &b}, /*pad_id=*/3);
  EXPECT_EQ(batch.input_ids.shape(), (Shape{2, 5}));
  EXPECT_EQ(batch.input_ids.dtype(), DType::i64);
  EXPECT_EQ(batch.input_ids.to_doubles(), (std::vector<double>{5, 6, 7, 3, 3, 9, 10, 11, 12, 13}));
  EXPECT_EQ(batch.labels.to_doubles(), (std::vector<double>{I, 7, 8, I, I, 10, 11, I, I, 14}));
  EXPECT_EQ(batch.attention_mask.to_doubles(), (std::vector<double>{1, 1, 1, 0, 0, 1, 1, 1, 1, 0}));
  EXPECT_EQ(batch.num_label_tokens, 5);
  EXPECT_FALSE(batch.position_ids.defined());
  EXPECT_FALSE(batch.seq_ids.defined());

  EXPECT_EQ(default_collater({&a, &b}, 3, {}, 4).input_ids.shape(), (Shape{2, 8}));
  EXPECT_EQ(default_collater({&a}, 3, 6).input_ids.shape(), (Shape{1, 6}));
  EXPECT_NE(error_of([&] { default_collater({&b}, 3, 4); }).find("longer than pad_to_length 4"), std::string::npos);
  EXPECT_NE(error_of([&] { default_collater({}, 3); }).find("empty batch"), std::string::npos);
}

TEST(DataCollate, PackedSamplesCarryPositionAndSequenceIds) {
  auto packs =
      pack_sequences({plain_sample({1, 2}, {2, 3}), plain_sample({4}, {5}), plain_sample({6, 7, 8}, {7, 8, 9})}, 4, 0);
  ASSERT_EQ(packs.size(), 2u);
  Batch batch = default_collater({&packs[0], &packs[1]}, 0);
  EXPECT_EQ(batch.position_ids.to_doubles(), (std::vector<double>{0, 1, 0, 1, 0, 1, 2, 3}));
  EXPECT_EQ(batch.seq_ids.to_doubles(), (std::vector<double>{0, 0, 1, -1, 0, 0, 0, -1}));
  EXPECT_EQ(batch.attention_mask.to_doubles(), (std::vector<double>{1, 1, 1, 0, 1, 1, 1, 0}));
  EXPECT_EQ(batch.num_label_tokens, 6);
  Sample plain = plain_sample({1}, {2});
  EXPECT_NE(error_of([&] {
              default_collater({&packs[0], &plain}, 0);
            }).find("mixes packed and unpacked"),
            std::string::npos);
}

// ---------------------------------------------------------------- loader

std::vector<std::vector<size_t>> drain(DataLoader& loader) {
  std::vector<std::vector<size_t>> out;
  std::vector<size_t> batch;
  while (loader.next(batch)) out.push_back(batch);
  return out;
}

TEST(DataLoading, SequentialBatchesAndDropLast) {
  DataLoader loader(7, 3, /*shuffle=*/false, 0);
  EXPECT_EQ(loader.num_batches(), 3u);
  auto batches = drain(loader);
  EXPECT_EQ(batches, (std::vector<std::vector<size_t>>{{0, 1, 2}, {3, 4, 5}, {6}}));
  std::vector<size_t> batch = {42};
  EXPECT_FALSE(loader.next(batch));
  EXPECT_TRUE(batch.empty());

  DataLoader dropping(7, 3, false, 0, /*drop_last=*/true);
  EXPECT_EQ(dropping.num_batches(), 2u);
  EXPECT_EQ(drain(dropping).size(), 2u);
}

TEST(DataLoading, ShuffleIsSeededPerEpochAndCoversEverySampleOnce) {
  DataLoader a(101, 8, true, 1234), b(101, 8, true, 1234), c(101, 8, true, 99);
  auto ea = drain(a), eb = drain(b), ec = drain(c);
  EXPECT_EQ(ea, eb);
  EXPECT_NE(ea, ec);
  std::vector<size_t> all;
  for (const auto& batch : ea) all.insert(all.end(), batch.begin(), batch.end());
  std::vector<size_t> sorted = all;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_EQ(sorted.size(), 101u);
  std::vector<size_t> identity(101);
  for (size_t i = 0; i < 101; ++i) identity[i] = i;
  EXPECT_NE(all, identity);

  a.set_epoch(1);
  auto e1 = drain(a);
  EXPECT_NE(e1, ea);
  a.set_epoch(0);
  EXPECT_EQ(drain(a), ea);  // a pure function of (seed, epoch)

  // Philox draws, so the order is the same on every machine: pinned for seed 1234.
  EXPECT_EQ(epoch_permutation(10, 1234, 0), (std::vector<size_t>{5, 7, 2, 9, 6, 8, 4, 3, 1, 0}));
  EXPECT_EQ(epoch_permutation(10, 1234, 1), (std::vector<size_t>{1, 7, 9, 4, 8, 2, 0, 5, 3, 6}));

  // With drop_last a shuffled epoch still yields distinct samples in full batches.
  DataLoader d(10, 4, true, 5, true);
  auto ed = drain(d);
  ASSERT_EQ(ed.size(), 2u);
  std::set<size_t> seen;
  for (const auto& batch : ed) {
    EXPECT_EQ(batch.size(), 4u);
    seen.insert(batch.begin(), batch.end());
  }
  EXPECT_EQ(seen.size(), 8u);
}

TEST(DataLoading, StateRestoreContinuesWithTheNextBatch) {
  DataLoader full(50, 4, true, 7);
  full.set_epoch(3);
  auto expected = drain(full);

  DataLoader first(50, 4, true, 7);
  first.set_epoch(3);
  std::vector<size_t> batch;
  for (int k = 0; k < 5; ++k) ASSERT_TRUE(first.next(batch));
  nlohmann::json state = nlohmann::json::parse(first.state_dict().dump());  // through text, as a checkpoint
  EXPECT_EQ(state["epoch"], 3);
  EXPECT_EQ(state["batches_yielded"], 5);

  DataLoader resumed(50, 4, true, /*seed=*/0);  // the saved seed wins
  resumed.load_state_dict(state);
  auto rest = drain(resumed);
  ASSERT_EQ(rest.size(), expected.size() - 5);
  for (size_t i = 0; i < rest.size(); ++i) EXPECT_EQ(rest[i], expected[i + 5]);

  // Saved at the end of an epoch: nothing left until the next set_epoch.
  nlohmann::json end_state = resumed.state_dict();
  DataLoader at_end(50, 4, true, 7);
  at_end.load_state_dict(end_state);
  EXPECT_FALSE(at_end.next(batch));

  DataLoader other_size(51, 4, true, 7), other_batch(50, 5, true, 7);
  EXPECT_NE(error_of([&] { other_size.load_state_dict(state); }).find("saved with num_samples 50, this run has 51"),
            std::string::npos);
  EXPECT_NE(error_of([&] { other_batch.load_state_dict(state); }).find("saved with batch_size 4, this run has 5"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              resumed.load_state_dict(nlohmann::json{{"epoch", 1}});
            }).find("has no 'batches_yielded'"),
            std::string::npos);
}

TEST(DataLoading, Errors) {
  EXPECT_NE(error_of([] { DataLoader(0, 2, false, 0); }).find("dataset is empty"), std::string::npos);
  EXPECT_NE(error_of([] { DataLoader(4, 0, false, 0); }).find("batch_size must be positive"), std::string::npos);
  EXPECT_NE(error_of([] { DataLoader(3, 4, false, 0, true); }).find("leaves no batch"), std::string::npos);
}

}  // namespace
}  // namespace automodel::data

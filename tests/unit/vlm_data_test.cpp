// components/data's VLM datasets: NeMo's record shapes turned into conversations, image paths taken relative to the
// data file, json2token, and one Error per kind of bad record, each naming the file, line and record.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "components/data/vlm_datasets.h"
#include "error_of.h"
#include "temp_dir.h"

namespace automodel::data {
namespace {

using automodel::testing::error_of;
using automodel::testing::TempDir;
using ojson = nlohmann::ordered_json;

struct VlmData : ::testing::Test {
  TempDir dir;

  void SetUp() override {
    std::filesystem::create_directories(dir.path() / "sub" / "img");
    std::ofstream(dir / "sub/img/a.png") << "not decoded by the dataset";
    std::ofstream(dir / "sub/img/b.png") << "x";
  }
  // A JSON-lines file of these records under sub/; returns its path.
  std::string jsonl(const std::vector<ojson>& records, const std::string& name = "sub/data.jsonl") {
    std::ofstream out(dir / name);
    for (const ojson& r : records) out << r.dump() << "\n";
    return dir / name;
  }
  std::string img(const std::string& name) const { return (dir.path() / "sub" / "img" / name).string(); }
};

VlmDatasetOptions options(const std::string& path, std::optional<int64_t> limit = {}) {
  VlmDatasetOptions o;
  o.path = path;
  o.limit_dataset_samples = limit;
  return o;
}

ojson text(const std::string& t) { return {{"type", "text"}, {"text", t}}; }
ojson image(const std::string& path) { return {{"type", "image"}, {"image", path}}; }
ojson user(ojson content) { return {{"role", "user"}, {"content", std::move(content)}}; }
ojson assistant(ojson content) { return {{"role", "assistant"}, {"content", std::move(content)}}; }

TEST_F(VlmData, ConversationsFromMessagesOrConversationWithImagesRelativeToTheDataFile) {
  const std::string path = jsonl({{{"messages", {user({image("img/a.png"), text("What?")}), assistant({text("A.")})}}},
                                  {{"conversation",
                                    {{{"role", "system"}, {"content", "Be brief."}},
                                     user({text("Both?"), image(img("b.png"))}),
                                     assistant("Yes."),
                                     user({image("img/a.png")}),
                                     assistant({text("Again.")})}}}});
  const ConversationDataset data = make_vlm_conversation_dataset(options(path));
  ASSERT_EQ(data.size, 2u);
  const Conversation first = data.get(0);
  EXPECT_EQ(first.where, path + ":1 [record 0]");
  EXPECT_EQ(first.messages[0]["content"][0], image(img("a.png")));
  EXPECT_EQ(first.messages[0]["content"][1], text("What?"));
  const Conversation second = data.get(1);
  EXPECT_EQ(second.messages.size(), 5u);
  EXPECT_EQ(second.messages[1]["content"][1], image(img("b.png")));  // absolute paths stay as they are
  EXPECT_EQ(second.messages[2]["content"], "Yes.");
  EXPECT_EQ(make_vlm_conversation_dataset(options(path, 1)).size, 1u);
}

TEST_F(VlmData, RdrAndMedPixRecordsBecomeNemosConversations) {
  const ConversationDataset rdr = make_rdr_dataset(options(jsonl({{{"image", "img/a.png"}, {"text", "A red box."}}})));
  EXPECT_EQ(rdr.get(0).messages,
            ojson::array({user({image(img("a.png")), text("Describe this image.")}), assistant({text("A red box.")})}));
  // An HF Image feature exported with its path.
  const ojson feature = {{"bytes", nullptr}, {"path", "img/b.png"}};
  const ConversationDataset medpix =
      make_medpix_dataset(options(jsonl({{{"image_id", feature}, {"question", "Which organ?"}, {"answer", 3}}})));
  EXPECT_EQ(medpix.get(0).messages,
            ojson::array({user({image(img("b.png")), text("Which organ?")}), assistant({text("3")})}));
}

TEST_F(VlmData, CordV2AnswerIsJson2TokenOfTheGroundTruth) {
  const ojson parse = {{"menu", {{{"nm", "Tea"}, {"price", "3"}}, {{"nm", "Cake"}, {"cnt", 2}}}},
                       {"total", {{"total_price", "7"}}}};
  const ojson two_parses = {{"gt_parses", {{{"text_sequence", "one"}}, {{"text_sequence", "two"}}}}};
  const ojson first = {{"image", "img/a.png"}, {"ground_truth", ojson{{"gt_parse", parse}}.dump()}};
  const ojson several = {{"image", "img/b.png"}, {"ground_truth", two_parses}};  // already parsed
  const std::string path = jsonl({first, several, several});
  const ConversationDataset cord = make_cord_v2_dataset(options(path));
  EXPECT_EQ(cord.get(0).messages[1]["content"][0]["text"],
            "<s_total><s_total_price>7</s_total_price></s_total><s_menu><s_price>3</s_price><s_nm>Tea</s_nm><sep/>"
            "<s_nm>Cake</s_nm><s_cnt>2</s_cnt></s_menu>");
  // Several parses: record i takes parse i mod their count.
  EXPECT_EQ(cord.get(1).messages[1]["content"][0]["text"], "two");
  EXPECT_EQ(cord.get(2).messages[1]["content"][0]["text"], "one");
  EXPECT_EQ(cord.get(0).messages[0]["content"][1], text("Describe this image."));
}

TEST(Json2Token, MatchesNemosRules) {
  EXPECT_EQ(json2token(ojson{{"b", 1}, {"a", true}, {"c", nullptr}}), "<s_c>None</s_c><s_b>1</s_b><s_a>True</s_a>");
  EXPECT_EQ(json2token(ojson{{"b", 1}, {"a", 2.5}}, false), "<s_b>1</s_b><s_a>2.5</s_a>");
  EXPECT_EQ(json2token(ojson::array({"x", ojson{{"text_sequence", "y"}}})), "x<sep/>y");
  EXPECT_EQ(json2token(ojson{{"Z", "upper"}, {"a", "lower"}}), "<s_a>lower</s_a><s_Z>upper</s_Z>");
}

// The message of the error reading record 0 of a one-record conversation file.
std::string conversation_error(VlmData& t, const ojson& record) {
  const std::string path = t.jsonl({record});
  return error_of([&] { make_vlm_conversation_dataset(options(path)).get(0); });
}

TEST_F(VlmData, MissingImageFileNamesTheRecordAndThePath) {
  const std::string e = conversation_error(*this, {{"messages", {user({image("img/gone.png")}), assistant("x")}}});
  EXPECT_NE(e.find("image file not found: " + img("gone.png")), std::string::npos) << e;
  EXPECT_NE(e.find("data.jsonl:1 [record 0], messages[0].content[0]"), std::string::npos) << e;
}

TEST_F(VlmData, NoAssistantTurnIsAnError) {
  const std::string e = conversation_error(*this, {{"messages", {user({image("img/a.png"), text("hi")})}}});
  EXPECT_NE(e.find("no assistant turn"), std::string::npos) << e;
  EXPECT_NE(e.find("data.jsonl:1 [record 0]"), std::string::npos) << e;
}

TEST_F(VlmData, AssistantTurnWithoutTextIsAnError) {
  const std::string e = conversation_error(*this, {{"messages", {user("q"), assistant({text("")})}}});
  EXPECT_NE(e.find("the assistant message has no text"), std::string::npos) << e;
  EXPECT_NE(e.find("[record 0], messages[1]"), std::string::npos) << e;
}

TEST_F(VlmData, RecordWithoutMessagesNamesItsColumns) {
  const std::string e = conversation_error(*this, {{"chat", ojson::array()}, {"id", 1}});
  EXPECT_NE(e.find("no column 'messages' (it has: chat, id)"), std::string::npos) << e;
}

TEST_F(VlmData, MessagesThatAreNotAListAreAnError) {
  EXPECT_NE(conversation_error(*this, {{"messages", "hello"}}).find("non-empty list of messages"), std::string::npos);
  EXPECT_NE(conversation_error(*this, {{"messages", ojson::array()}}).find("non-empty list"), std::string::npos);
}

TEST_F(VlmData, UnknownRoleIsAnError) {
  const std::string e = conversation_error(*this, {{"messages", {{{"role", "human"}, {"content", "q"}}}}});
  EXPECT_NE(e.find("role must be \"user\", \"assistant\" or \"system\", got \"human\""), std::string::npos) << e;
}

TEST_F(VlmData, ContentOfTheWrongKindIsAnError) {
  const std::string e = conversation_error(*this, {{"messages", {user(42), assistant("a")}}});
  EXPECT_NE(e.find("content must be a string or a list of parts, got number"), std::string::npos) << e;
}

TEST_F(VlmData, BadContentPartsAreErrors) {
  EXPECT_NE(conversation_error(*this, {{"messages", {user({"just text"}), assistant("a")}}})
                .find("a content part must be an object with a \"type\""),
            std::string::npos);
  EXPECT_NE(conversation_error(*this, {{"messages", {user({{{"type", "text"}}}), assistant("a")}}})
                .find("a text part needs a \"text\" string"),
            std::string::npos);
  const std::string video =
      conversation_error(*this, {{"messages", {user({{{"type", "video"}, {"video", "v.mp4"}}}), assistant("a")}}});
  EXPECT_NE(video.find("content parts of type \"video\" are not supported"), std::string::npos) << video;
}

TEST_F(VlmData, ImagePartWithoutAPathIsAnError) {
  const std::string e = conversation_error(*this, {{"messages", {user({{{"type", "image"}}}), assistant("a")}}});
  EXPECT_NE(e.find("an image part needs the image's file path"), std::string::npos) << e;
  const std::string url =
      conversation_error(*this, {{"messages", {user({image("https://example.com/a.png")}), assistant("a")}}});
  EXPECT_NE(url.find("web URLs are not downloaded"), std::string::npos) << url;
}

TEST_F(VlmData, RdrRecordWithoutTextNamesTheColumn) {
  const std::string path = jsonl({{{"image", "img/a.png"}, {"caption", "x"}}});
  const std::string e = error_of([&] { make_rdr_dataset(options(path)).get(0); });
  EXPECT_NE(e.find("no column 'text' (it has: image, caption)"), std::string::npos) << e;
  EXPECT_NE(e.find("data.jsonl:1 [record 0]"), std::string::npos) << e;
}

TEST_F(VlmData, ImageColumnHoldingBytesOnlyIsAnError) {
  const std::string path = jsonl({{{"image", {{"bytes", "iVBOR"}, {"path", nullptr}}}, {"text", "x"}}});
  const std::string e = error_of([&] { make_rdr_dataset(options(path)).get(0); });
  EXPECT_NE(e.find("column 'image' holds an image without a file path"), std::string::npos) << e;
  const std::string number = jsonl({{{"image", 7}, {"text", "x"}}}, "sub/number.jsonl");
  EXPECT_NE(error_of([&] { make_rdr_dataset(options(number)).get(0); }).find("holds a JSON number, not an image"),
            std::string::npos);
}

TEST_F(VlmData, MedPixQuestionOfTheWrongKindIsAnError) {
  const std::string path = jsonl({{{"image_id", "img/a.png"}, {"question", {{"q", 1}}}, {"answer", "a"}}});
  const std::string e = error_of([&] { make_medpix_dataset(options(path)).get(0); });
  EXPECT_NE(e.find("column 'question' holds a JSON object, not text"), std::string::npos) << e;
}

TEST_F(VlmData, CordGroundTruthErrors) {
  const std::string bad_json = jsonl({{{"image", "img/a.png"}, {"ground_truth", "{not json"}}});
  EXPECT_NE(error_of([&] { make_cord_v2_dataset(options(bad_json)).get(0); }).find("'ground_truth' is not valid JSON"),
            std::string::npos);
  const std::string no_parse = jsonl({{{"image", "img/a.png"}, {"ground_truth", "{\"parse\": {}}"}}}, "sub/np.jsonl");
  const std::string e = error_of([&] { make_cord_v2_dataset(options(no_parse)).get(0); });
  EXPECT_NE(e.find("must hold {\"gt_parse\": {...}} or {\"gt_parses\": [...]}"), std::string::npos) << e;
  EXPECT_NE(e.find("np.jsonl:1 [record 0]"), std::string::npos) << e;
  const std::string empty = jsonl({{{"image", "img/a.png"}, {"ground_truth", "{\"gt_parses\": []}"}}}, "sub/e.jsonl");
  EXPECT_NE(error_of([&] { make_cord_v2_dataset(options(empty)).get(0); }).find("non-empty list"), std::string::npos);
}

TEST_F(VlmData, ErrorsNameTheLineOfALaterRecord) {
  const std::string path = jsonl({{{"messages", {user("q"), assistant("a")}}}, {{"messages", {user("q")}}}});
  const ConversationDataset data = make_vlm_conversation_dataset(options(path));
  EXPECT_NO_THROW(data.get(0));
  EXPECT_NE(error_of([&] { data.get(1); }).find("data.jsonl:2 [record 1]"), std::string::npos);
}

// The embedded default data (scripts/make_tiny_vlm_data.py): every record a valid conversation with its images.
TEST(TinyVlmData, EveryRecordIsAConversationWithImages) {
  const std::filesystem::path root =
      std::filesystem::path(__FILE__).parent_path() / ".." / ".." / "assets" / "tiny-vlm-data";
  for (const char* split : {"train", "validation"}) {
    const ConversationDataset data =
        make_vlm_conversation_dataset(options((root / (std::string(split) + ".jsonl")).string()));
    EXPECT_GE(data.size, 12u) << split;
    for (size_t i = 0; i < data.size; ++i) {
      const Conversation c = data.get(i);
      EXPECT_EQ(c.messages[0]["content"][0]["type"] == "image" || c.messages[0]["content"][1]["type"] == "image", true)
          << c.where;
    }
  }
}

TEST_F(VlmData, EmptyDatasetIsAnError) {
  const std::string path = jsonl({});
  EXPECT_NE(error_of([&] { make_rdr_dataset(options(path)); }).find("rdr dataset is empty"), std::string::npos);
}

}  // namespace
}  // namespace automodel::data

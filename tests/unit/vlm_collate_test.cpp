// recipes/vlm_collate: NeMo's VLM collate on a Gemma 3 shaped processor (assets/tiny-llama's byte-level BPE with
// Gemma 3's special tokens and chat template): padding on either side, the shift, labels on the answers only, image
// tokens and their delimiters unlabelled, pixel_values in token order, and errors naming the record.
#include "recipes/vlm_collate.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "error_of.h"
#include "io/hf_dir.h"
#include "temp_dir.h"

namespace automodel::recipes {
namespace {

using automodel::testing::error_of;
using automodel::testing::TempDir;
using ojson = nlohmann::ordered_json;
namespace fs = std::filesystem;

const fs::path kRoot = fs::path(__FILE__).parent_path() / ".." / "..";

// An 8-bit RGB PNG of one colour.
void write_png(const std::string& path, uint32_t width, uint32_t height, uint8_t r, uint8_t g, uint8_t b) {
  auto be32 = [](std::string& s, uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) s += char((v >> shift) & 0xFF);
  };
  auto chunk = [&](std::string& out, const std::string& kind, const std::string& data) {
    be32(out, uint32_t(data.size()));
    const std::string body = kind + data;
    out += body;
    be32(out, uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
  };
  std::string raw;
  for (uint32_t y = 0; y < height; ++y) {
    raw += '\0';
    for (uint32_t x = 0; x < width; ++x) raw += {char(r), char(g), char(b)};
  }
  std::string packed(compressBound(uLong(raw.size())), '\0');
  uLongf packed_size = uLongf(packed.size());
  compress(reinterpret_cast<Bytef*>(packed.data()), &packed_size, reinterpret_cast<const Bytef*>(raw.data()),
           uLong(raw.size()));
  packed.resize(packed_size);
  std::string ihdr;
  be32(ihdr, width);
  be32(ihdr, height);
  ihdr += {8, 2, 0, 0, 0};
  std::string png = "\x89PNG\r\n\x1a\n";
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", packed);
  chunk(png, "IEND", "");
  std::ofstream(path, std::ios::binary) << png;
}

struct VlmCollate : ::testing::Test {
  TempDir dir;

  // A processor directory padding on `side`; returns the loaded processor.
  VlmProcessor processor(const std::string& side) {
    const fs::path d = dir.path() / side;
    fs::create_directories(d);
    nlohmann::json tok = io::read_json_file((kRoot / "assets" / "tiny-llama" / "tokenizer.json").string());
    int64_t next = 0;
    for (const auto& [token, id] : tok["model"]["vocab"].items()) next = std::max<int64_t>(next, id.get<int64_t>() + 1);
    for (const auto& added : tok["added_tokens"]) next = std::max<int64_t>(next, added["id"].get<int64_t>() + 1);
    for (const char* special : {"<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                                "<end_of_image>", "<image_soft_token>"})
      tok["added_tokens"].push_back({{"id", next++},
                                     {"content", special},
                                     {"single_word", false},
                                     {"lstrip", false},
                                     {"rstrip", false},
                                     {"normalized", false},
                                     {"special", true}});
    io::write_file_atomic((d / "tokenizer.json").string(), tok.dump());
    io::write_file_atomic((d / "tokenizer_config.json").string(), ojson{{"bos_token", "<bos>"},
                                                                        {"eos_token", "<eos>"},
                                                                        {"pad_token", "<pad>"},
                                                                        {"padding_side", side},
                                                                        {"boi_token", "<start_of_image>"},
                                                                        {"eoi_token", "<end_of_image>"},
                                                                        {"image_token", "<image_soft_token>"}}
                                                                      .dump());
    fs::copy_file(kRoot / "tests" / "oracle" / "chat_templates" / "gemma3.jinja", d / "chat_template.jinja");
    io::write_file_atomic(
        (d / "processor_config.json").string(),
        ojson{{"processor_class", "Gemma3Processor"},
              {"image_seq_length", 2},
              {"image_processor",
               {{"image_processor_type", "Gemma3ImageProcessor"}, {"size", {{"height", 4}, {"width", 4}}}}}}
            .dump());
    return load_vlm_processor(d.string());
  }
  std::string png(const std::string& name, uint8_t r) {
    write_png(dir / name, 6, 5, r, 10, 20);
    return dir / name;
  }
};

ojson image(const std::string& path) { return {{"type", "image"}, {"image", path}}; }
ojson text(const std::string& t) { return {{"type", "text"}, {"text", t}}; }
data::Conversation conversation(ojson messages, std::string where) { return {std::move(messages), std::move(where)}; }

std::vector<int64_t> row(const Tensor& t, int64_t b) {
  const int64_t T = t.shape()[1];
  return std::vector<int64_t>(t.data<int64_t>() + b * T, t.data<int64_t>() + (b + 1) * T);
}

std::string supervised_text(const VlmProcessor& p, const std::vector<int64_t>& labels) {
  std::vector<int64_t> ids;
  for (int64_t l : labels)
    if (l != data::kIgnoreIndex) ids.push_back(l);
  return p.tokenizer->decode(ids);
}

TEST_F(VlmCollate, PadsShiftsAndLabelsOnlyTheAnswersOnEitherSide) {
  const std::string red = png("red.png", 200), blue = png("blue.png", 30);
  const data::Conversation two_images = conversation({{{"role", "user"}, {"content", {image(red), text("Colour?")}}},
                                                      {{"role", "assistant"}, {"content", {text("Red.")}}},
                                                      {{"role", "user"}, {"content", {text("And now?"), image(blue)}}},
                                                      {{"role", "assistant"}, {"content", {text("Blue, darker.")}}}},
                                                     "a.jsonl:1 [record 0]");
  const data::Conversation text_only = conversation(
      {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "Hello."}}}, "a.jsonl:2 [record 1]");
  for (const std::string side : {"right", "left"}) {
    const VlmProcessor p = processor(side);
    EXPECT_EQ(p.pad_left, side == "left");
    EXPECT_EQ(p.tokenizer->decode(p.assistant_marker), "<start_of_turn>model\n");
    EXPECT_EQ(p.tokenizer->id_to_token(p.end_of_turn_id), "<end_of_turn>");
    const data::Batch b = vlm_collate({&two_images, &text_only}, p);
    const int64_t T = b.input_ids.shape()[1];
    ASSERT_EQ(b.pixel_values.shape(), (Shape{2, 3, 4, 4}));
    // Image 0 is red: its normalised red channel is positive, the blue image's negative.
    EXPECT_GT(b.pixel_values.data<float>()[0], 0.5f);
    EXPECT_LT(b.pixel_values.data<float>()[48], -0.5f);
    const std::vector<int64_t> ids0 = row(b.input_ids, 0), labels0 = row(b.labels, 0),
                               types0 = row(b.token_type_ids, 0);
    const std::vector<int64_t> ids1 = row(b.input_ids, 1), mask1 = row(b.attention_mask, 1), labels1 = row(b.labels, 1);
    // The longest row is all real but its last token (which only a label sees).
    const std::vector<int64_t> mask0 = row(b.attention_mask, 0);
    EXPECT_EQ(std::count(mask0.begin(), mask0.end(), 1), T);
    EXPECT_EQ(std::count(types0.begin(), types0.end(), 1), 4);  // two images of two soft tokens
    EXPECT_EQ(supervised_text(p, labels0), "Red.<end_of_turn>Blue, darker.<end_of_turn>");
    EXPECT_EQ(supervised_text(p, labels1), "Hello.<end_of_turn>");
    // Shifted: the label at t is the token at t + 1.
    for (int64_t t = 0; t + 1 < T; ++t)
      if (labels0[size_t(t)] != data::kIgnoreIndex) {
        EXPECT_EQ(labels0[size_t(t)], ids0[size_t(t + 1)]);
      }
    const int64_t real = std::count(mask1.begin(), mask1.end(), 1);
    EXPECT_LT(real, T);
    const size_t first_real = side == "left" ? size_t(T - real) : 0;
    EXPECT_EQ(p.tokenizer->id_to_token(ids1[first_real]), "<bos>");
    EXPECT_EQ(ids1[side == "left" ? 0 : size_t(T - 1)], p.pad_id);
    EXPECT_EQ(b.num_label_tokens,
              std::count_if(labels0.begin(), labels0.end(), [](int64_t l) { return l != data::kIgnoreIndex; }) +
                  std::count_if(labels1.begin(), labels1.end(), [](int64_t l) { return l != data::kIgnoreIndex; }));
  }
}

TEST_F(VlmCollate, ImagesInAnAnswerCarryNoLabel) {
  const VlmProcessor p = processor("right");
  const data::Conversation c =
      conversation({{{"role", "user"}, {"content", {text("Draw.")}}},
                    {{"role", "assistant"}, {"content", {image(png("d.png", 9)), text("Done")}}}},
                   "b.jsonl:1 [record 0]");
  const data::Batch b = vlm_collate({&c}, p);
  const std::vector<int64_t> labels = row(b.labels, 0);
  for (int64_t token : {p.image_token_id, p.boi_id, p.eoi_id})
    EXPECT_EQ(std::count(labels.begin(), labels.end(), token), 0);
  EXPECT_NE(supervised_text(p, labels).find("Done<end_of_turn>"), std::string::npos);
  EXPECT_EQ(b.pixel_values.shape()[0], 1);
}

TEST_F(VlmCollate, TextOnlyBatchHasNoPixelValuesAndMaxLengthPads) {
  const VlmProcessor p = processor("right");
  const data::Conversation c = conversation(
      {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "Yo"}}}, "c.jsonl:1 [record 0]");
  VlmCollateOptions options;
  options.max_length = 40;
  const data::Batch b = vlm_collate({&c}, p, options);
  EXPECT_FALSE(b.pixel_values.defined());
  EXPECT_EQ(b.input_ids.shape(), (Shape{1, 39}));
  options.max_length = 4;
  const std::string e = error_of([&] { vlm_collate({&c}, p, options); });
  EXPECT_NE(e.find("more than collate_fn.max_length 4"), std::string::npos) << e;
  EXPECT_NE(e.find("c.jsonl:1 [record 0]"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { vlm_collate({}, p); }).find("empty batch"), std::string::npos);
}

TEST_F(VlmCollate, UndecodableImageNamesTheRecordAndTheFile) {
  const VlmProcessor p = processor("right");
  std::ofstream(dir / "broken.png", std::ios::binary) << "\x89PNG\r\n\x1a\ntruncated";
  const data::Conversation c = conversation(
      {{{"role", "user"}, {"content", {image(dir / "broken.png")}}}, {{"role", "assistant"}, {"content", "x"}}},
      "d.jsonl:3 [record 2]");
  const std::string e = error_of([&] { vlm_collate({&c}, p); });
  EXPECT_NE(e.find("d.jsonl:3 [record 2]"), std::string::npos) << e;
  EXPECT_NE(e.find("broken.png"), std::string::npos) << e;
}

}  // namespace
}  // namespace automodel::recipes

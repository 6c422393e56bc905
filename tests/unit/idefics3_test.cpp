// Idefics 3 / SmolVLM without Python: config.json's reading (defaults, refusals naming the key), the processor's
// longest-edge arithmetic and prompt, and the position-id bucketing on a full and a padded tile (values transformers
// gives, from tests/oracle/test_smolvlm*.py).
#include "models/idefics3.h"

#include <gtest/gtest.h>

#include "components/processor/idefics3_image_processor.h"
#include "error_of.h"
#include "models/vision_language_model.h"
#include "tiny_model_config.h"

using namespace automodel;
using automodel::testing::error_of;
using nlohmann::json;

namespace {

json smolvlm() {
  return json{{"model_type", "smolvlm"},
              {"image_token_id", 90},
              {"text_config", automodel::testing::tiny_model_config("llama")},
              {"vision_config",
               {{"model_type", "smolvlm_vision"},
                {"image_size", 32},
                {"patch_size", 8},
                {"hidden_size", 16},
                {"intermediate_size", 32},
                {"num_hidden_layers", 1},
                {"num_attention_heads", 2}}}};
}

std::string config_error(const json& j) {
  return error_of([&] { models::VisionLanguageConfig::from_json(j, "config.json"); });
}

}  // namespace

TEST(Idefics3Config, TakesTransformersDefaultsAndNamesBadKeys) {
  const models::VisionLanguageConfig c = models::VisionLanguageConfig::from_json(smolvlm(), "config.json");
  EXPECT_EQ(c.scale_factor, 2);
  EXPECT_EQ(c.mm_tokens_per_image, 4);  // (32 / 8)^2 / 2^2
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.text.model_type, "llama");
  json j = smolvlm();
  j["scale_factor"] = 3;
  EXPECT_NE(config_error(j).find("scale_factor"), std::string::npos) << config_error(j);
  j = smolvlm();
  j["vision_config"]["model_type"] = "clip_vision_model";
  EXPECT_NE(config_error(j).find("vision_config.model_type"), std::string::npos) << config_error(j);
  j = smolvlm();
  j["image_token_id"] = -3;
  EXPECT_NE(config_error(j).find("image_token_id"), std::string::npos) << config_error(j);
}

TEST(Idefics3Processor, LongestEdgeArithmeticAsTransformers) {
  using processor::idefics3_resized_size;
  EXPECT_EQ(idefics3_resized_size(1000, 3, 64), std::make_pair(int64_t{64}, int64_t{1}));
  EXPECT_EQ(idefics3_resized_size(3, 1000, 64), std::make_pair(int64_t{1}, int64_t{64}));
  EXPECT_EQ(idefics3_resized_size(1, 1, 64), std::make_pair(int64_t{64}, int64_t{64}));
  EXPECT_EQ(idefics3_resized_size(37, 53, 70), std::make_pair(int64_t{48}, int64_t{70}));
  EXPECT_EQ(idefics3_resized_size(5000, 100, 8000), std::make_pair(int64_t{4096}, int64_t{81}));
}

TEST(Idefics3Processor, PromptOfATileGrid) {
  processor::ProcessorConfig c;
  c.image.splitting.idefics3 = true;
  c.image_seq_length = 2;
  c.image_token = "<image>";
  c.boi_token = c.eoi_token = "<fake>";
  EXPECT_EQ(processor::idefics3_image_prompt(0, 0, c), "<fake><global-img><image><image><fake>");
  EXPECT_EQ(processor::idefics3_image_prompt(1, 2, c),
            "<fake><row_1_col_1><image><image><fake><row_1_col_2><image><image>\n\n<fake><global-img><image><image>"
            "<fake>");
}

TEST(Idefics3Positions, FullAndPaddedTiles) {
  const std::vector<int64_t> full = models::bucketed_position_ids(std::vector<uint8_t>(9, 1), 3, 3, 3, 0);
  EXPECT_EQ(full, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  // The top-left 2 x 1 real (transformers gives [0, 0, 0, 3, 0, ...]): the second row lands on grid row 1; padding 0.
  const std::vector<uint8_t> mask{1, 0, 0, 1, 0, 0, 0, 0, 0};
  EXPECT_EQ(models::bucketed_position_ids(mask, 3, 3, 3, 0), (std::vector<int64_t>{0, 0, 0, 3, 0, 0, 0, 0, 0}));
  EXPECT_NE(error_of([] {
              models::bucketed_position_ids(std::vector<uint8_t>{0, 1, 0, 1}, 2, 2, 2, 5);
            }).find("image tile 5"),
            std::string::npos);
}

// `automodel dataset -c recipe.yaml [--validation] [--limit N] [--text] [--section.key value ...]`: the samples a
// recipe would train on, one JSON line each, so a user can see which tokens carry a label before a run.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "components/config/config.h"
#include "core/error.h"
#include "recipes/build.h"
#include "recipes/build_vlm_data.h"

namespace automodel::cli {

namespace {

constexpr const char* kUsage =
    "automodel dataset -c recipe.yaml [--validation] [--limit N] [--text] [--section.key value ...]";

// A vision-language dataset: each conversation collated alone (the tokens and labels the model sees, image tokens
// included), with --text the decoded text, the supervised text and the conversation as read (image paths resolved).
void print_vlm_samples(const config::ConfigNode& cfg, const std::string& section, size_t limit, bool text) {
  const recipes::RecipeVlmDataset d = recipes::build_recipe_vlm_dataset(cfg, section);
  for (size_t i = 0; i < d.data.size && i < limit; ++i) {
    const data::Conversation conversation = d.data.get(i);
    const data::Batch b = recipes::vlm_collate({&conversation}, d.processor, d.collate);
    const int64_t* ids = b.input_ids.data<int64_t>();
    const int64_t* labels = b.labels.data<int64_t>();
    const size_t n = size_t(b.input_ids.numel());
    const std::vector<int64_t> input_ids(ids, ids + n), label_ids(labels, labels + n);
    nlohmann::ordered_json line{{"index", i}, {"input_ids", input_ids}, {"labels", label_ids}};
    if (b.token_type_ids.defined()) {  // Gemma 3's processor makes them, Idefics 3's does not
      const int64_t* types = b.token_type_ids.data<int64_t>();
      line["token_type_ids"] = std::vector<int64_t>(types, types + n);
    }
    line["pixel_values_shape"] =
        b.pixel_values.defined() ? nlohmann::ordered_json(b.pixel_values.shape()) : nlohmann::ordered_json::array();
    if (text) {
      std::vector<int64_t> supervised;
      for (int64_t l : label_ids)
        if (l != data::kIgnoreIndex) supervised.push_back(l);
      line["text"] = d.processor.tokenizer->decode(input_ids);
      line["label_text"] = d.processor.tokenizer->decode(supervised);
      line["messages"] = conversation.messages;
    }
    std::puts(line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  }
}

}  // namespace

int run_dataset(std::vector<std::string> args) {
  std::string config_path, limit_text;
  bool validation = false, text = false;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-c" || a == "--config" || a == "--limit") {
      if (i + 1 >= args.size()) throw Error(a + " needs a value", "command line", kUsage);
      (a == "--limit" ? limit_text : config_path) = args[++i];
    } else if (a == "--validation") {
      validation = true;
    } else if (a == "--text") {
      text = true;
    } else {
      overrides.push_back(a);
    }
  }
  if (config_path.empty()) throw Error("no recipe given", "automodel dataset", kUsage);
  size_t limit = SIZE_MAX;
  if (!limit_text.empty()) {
    size_t pos = 0;
    long long n = -1;
    try {
      n = std::stoll(limit_text, &pos);
    } catch (const std::exception&) {
    }
    if (n < 0 || pos != limit_text.size())
      throw Error("--limit needs a non-negative integer, got '" + limit_text + "'", "command line", kUsage);
    limit = size_t(n);
  }
  config::ConfigNode cfg = config::load_yaml(config_path);
  config::apply_overrides(cfg, config::parse_overrides(overrides));
  const std::string section = validation ? "validation_dataset" : "dataset";
  if (const config::ConfigNode* s = cfg.find(section); s != nullptr && recipes::is_vlm_dataset(*s)) {
    print_vlm_samples(cfg, section, limit, text);
    return 0;
  }
  const recipes::RecipeDataset d = recipes::build_recipe_dataset(cfg, section);
  for (size_t i = 0; i < d.data.size && i < limit; ++i) {
    const data::Sample s = d.data.get(i);
    nlohmann::ordered_json line{{"index", i}, {"input_ids", s.input_ids}, {"labels", s.labels}};
    if (!s.attention_mask.empty()) line["attention_mask"] = s.attention_mask;
    if (text) {
      std::vector<int64_t> supervised;
      for (int64_t l : s.labels)
        if (l != data::kIgnoreIndex) supervised.push_back(l);
      line["text"] = d.tokenizer.tokenizer->decode(s.input_ids);
      line["label_text"] = d.tokenizer.tokenizer->decode(supervised);
    }
    std::puts(line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  }
  return 0;
}

}  // namespace automodel::cli

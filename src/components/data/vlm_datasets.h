#pragma once
// The vision-language datasets of NeMo Automodel (nemo_automodel.components.datasets.vlm.datasets) over local files:
// each record becomes a conversation, a list of messages whose content holds {"type": "image", "image": <path>} and
// {"type": "text", "text": ...} parts, as NeMo's make_*_dataset functions return them. Records are read when a
// conversation is asked for; the collate (recipes/vlm_collate.h) decodes the images and tokenizes. Image paths are
// taken relative to the directory of the data file the record is in, and checked to exist; a record with a missing
// image, no assistant answer or a field of the wrong kind is an Error naming its file, line and record number.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace automodel::data {

struct Conversation {
  nlohmann::ordered_json messages;  // [{"role", "content": str | [parts]}], image parts as {"type", "image": path}
  std::string where;                // "<file>:<line> [record i]": names the record in later errors (bad image files)
};

struct ConversationDataset {
  size_t size = 0;
  std::function<Conversation(size_t index)> get;  // thread-safe
};

struct VlmDatasetOptions {
  std::string path;  // local .json/.jsonl(/.parquet) file or directory (NeMo's path_or_dataset)
  std::string split = "train";
  std::optional<int64_t> limit_dataset_samples;  // split "[:n]" unless the split has a slice (NeMo's CORD-v2 rule)
};

// Conversations as they are: records {"messages": [...]} or NeMo's {"conversation": [...]}.
ConversationDataset make_vlm_conversation_dataset(const VlmDatasetOptions& opts);
// NeMo make_rdr_dataset: records {"image", "text"}; user: [image, "Describe this image."], assistant: text.
ConversationDataset make_rdr_dataset(const VlmDatasetOptions& opts);
// NeMo make_cord_v2_dataset: records {"image", "ground_truth"} (a JSON string, or object, with "gt_parse": {...} or
// "gt_parses": [...]); user: [image, "Describe this image."], assistant: json2token of the parse. Where NeMo picks
// one of several gt_parses at random, record i takes parse i mod their count, so runs are reproducible.
ConversationDataset make_cord_v2_dataset(const VlmDatasetOptions& opts);
// NeMo make_medpix_dataset (formerly make_medpix_vqa_dataset): records {"image_id", "question", "answer"};
// user: [image, question], assistant: answer.
ConversationDataset make_medpix_dataset(const VlmDatasetOptions& opts);

// NeMo's json2token (from Donut): an object becomes <s_key>value</s_key> for its keys in reverse sorted order (an
// object holding only "text_sequence" becomes that value), a list joins its items with <sep/>, anything else is
// Python's str() of it.
std::string json2token(const nlohmann::ordered_json& value, bool sort_json_key = true);

// The messages of a conversation checked and normalised: roles user / assistant / system, content a string or a list
// of text and image parts, at least one assistant message with text; image parts become {"type": "image", "image":
// <path>} with relative paths taken from `base_dir` and the file checked to exist. Errors name `where`.
nlohmann::ordered_json checked_conversation(const nlohmann::ordered_json& messages, const std::string& base_dir,
                                            const std::string& where);

}  // namespace automodel::data

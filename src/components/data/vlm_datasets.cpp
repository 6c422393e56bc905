#include "components/data/vlm_datasets.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <vector>

#include "components/data/llm_datasets.h"
#include "components/data/record_fields.h"
#include "components/data/records.h"
#include "core/error.h"

namespace automodel::data {

using ojson = nlohmann::ordered_json;
using detail::require_field;

namespace {

constexpr const char* kDescribe = "Describe this image.";  // NeMo's prompt for rdr-items and CORD-v2

std::string message_at(size_t m) { return "messages[" + std::to_string(m) + "]"; }

// The image file of an image part, from the first of its "image", "url" or "path" keys (transformers' order).
std::string image_part_file(const ojson& part, const std::string& base_dir, const std::string& where) {
  const ojson* source = nullptr;
  for (const char* key : {"image", "url", "path"})
    if (!source && part.contains(key)) source = &part[key];
  if (source && source->is_object() && source->contains("path") && (*source)["path"].is_string())
    source = &(*source)["path"];  // an HF Image feature exported as {"bytes", "path"}
  if (!source || !source->is_string())
    throw Error(
        "an image part needs the image's file path in \"image\" (got " + (source ? source->dump() : "none") + ")",
        where, "give the path of a JPEG, PNG or WebP file, relative to the data file's directory");
  std::string path = source->get<std::string>();
  if (path.starts_with("http://") || path.starts_with("https://"))
    throw Error("web URLs are not downloaded: " + path, where, "download the image and give its local path");
  if (path.starts_with("file://")) path = path.substr(7);
  std::filesystem::path file(path);
  if (file.is_relative() && !base_dir.empty()) file = std::filesystem::path(base_dir) / file;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    throw Error("image file not found: " + file.string(), where,
                "image paths are relative to the directory of the data file; check the path");
  return file.string();
}

// The directory relative image paths of records in `data_file` are taken from.
std::string base_dir_of(const std::string& data_file) {
  return std::filesystem::path(data_file).parent_path().string();
}

// The image path of a record field (a path string or an HF Image feature {"bytes", "path"}), as an image part.
ojson image_part(const ojson& record, const std::string& column, const std::string& where) {
  const ojson& value = require_field(record, column, where);
  if (value.is_object() && (!value.contains("path") || !value["path"].is_string()))
    throw Error("column '" + column + "' holds an image without a file path (embedded image bytes are not read)", where,
                "save the images as files and give their paths in '" + column + "'");
  if (!value.is_string() && !value.is_object())
    throw Error("column '" + column + "' holds a JSON " + std::string(value.type_name()) + ", not an image path", where,
                "give the path of a JPEG, PNG or WebP file");
  return ojson{{"type", "image"}, {"image", value}};
}

ojson text_part(std::string text) { return ojson{{"type", "text"}, {"text", std::move(text)}}; }

ojson image_question_answer(ojson image, std::string question, std::string answer) {
  return ojson::array(
      {ojson{{"role", "user"}, {"content", ojson::array({std::move(image), text_part(std::move(question))})}},
       ojson{{"role", "assistant"}, {"content", ojson::array({text_part(std::move(answer))})}}});
}

// A dataset of the records of opts.path, each turned into messages by `format(record, index, where)` and checked.
template <class Format>
ConversationDataset conversation_dataset(const VlmDatasetOptions& opts, const std::string& name, Format format) {
  const std::string split = limit_split(opts.split, opts.limit_dataset_samples, "dataset.limit_dataset_samples");
  auto source = std::make_shared<const RecordSource>(opts.path, split);
  if (source->size() == 0)
    throw Error(name + " dataset is empty", opts.path, "check the split (and its slice) and the file's contents");
  ConversationDataset out;
  out.size = source->size();
  out.get = [source, format = std::move(format)](size_t i) {
    Conversation c;
    c.where = source->where(i);
    c.messages = detail::at_record(c.where, [&] {
      return checked_conversation(format(source->at(i), i, c.where), base_dir_of(source->file_of(i)), c.where);
    });
    return c;
  };
  return out;
}

}  // namespace

ojson checked_conversation(const ojson& messages, const std::string& base_dir, const std::string& where) {
  if (!messages.is_array() || messages.empty())
    throw Error("a conversation must be a non-empty list of messages, got " + std::string(messages.type_name()), where,
                "give [{\"role\": \"user\", \"content\": [...]}, {\"role\": \"assistant\", ...}]");
  ojson out = ojson::array();
  bool answered = false;
  for (size_t m = 0; m < messages.size(); ++m) {
    const ojson& message = messages[m];
    const std::string at = where + ", " + message_at(m);
    if (!message.is_object()) throw Error("a message must be an object with \"role\" and \"content\"", at);
    const ojson& role = require_field(message, "role", at);
    if (!role.is_string() || (role != "user" && role != "assistant" && role != "system"))
      throw Error("role must be \"user\", \"assistant\" or \"system\", got " + role.dump(), at,
                  "rename the role (ShareGPT's human/gpt are user/assistant)");
    const ojson& content = require_field(message, "content", at);
    ojson normal = content;
    bool has_text = content.is_string() && !content.get<std::string>().empty();
    if (content.is_array()) {
      for (size_t p = 0; p < content.size(); ++p) {
        const ojson& part = content[p];
        const std::string part_at = at + ".content[" + std::to_string(p) + "]";
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          throw Error("a content part must be an object with a \"type\"", part_at,
                      "use {\"type\": \"text\", \"text\": ...} or {\"type\": \"image\", \"image\": <path>}");
        const std::string type = part["type"];
        if (type == "text") {
          if (!part.contains("text") || !part["text"].is_string())
            throw Error("a text part needs a \"text\" string", part_at);
          has_text = has_text || !part["text"].get<std::string>().empty();
        } else if (type == "image") {
          normal[p] = ojson{{"type", "image"}, {"image", image_part_file(part, base_dir, part_at)}};
        } else {
          throw Error("content parts of type \"" + type + "\" are not supported", part_at, "use text and image parts");
        }
      }
    } else if (!content.is_string()) {
      throw Error("content must be a string or a list of parts, got " + std::string(content.type_name()), at);
    }
    if (role == "assistant") {
      if (!has_text) throw Error("the assistant message has no text to train on", at, "give the answer as a text part");
      answered = true;
    }
    out.push_back(ojson{{"role", role}, {"content", std::move(normal)}});
  }
  if (!answered)
    throw Error("the conversation has no assistant turn: nothing to train on", where,
                "add the answer as a message with role \"assistant\"");
  return out;
}

std::string json2token(const ojson& value, bool sort_json_key) {
  if (value.is_object()) {
    if (value.size() == 1 && value.contains("text_sequence")) return json2token(value["text_sequence"], sort_json_key);
    std::vector<std::string> keys;
    for (auto it = value.begin(); it != value.end(); ++it) keys.push_back(it.key());
    if (sort_json_key) std::sort(keys.rbegin(), keys.rend());  // Python sorted(..., reverse=True), by code point
    std::string out;
    for (const std::string& k : keys) out += "<s_" + k + ">" + json2token(value[k], sort_json_key) + "</s_" + k + ">";
    return out;
  }
  if (value.is_array()) {
    std::string out;
    for (size_t i = 0; i < value.size(); ++i) out += (i ? "<sep/>" : "") + json2token(value[i], sort_json_key);
    return out;
  }
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "None";
  if (value.is_boolean()) return value.get<bool>() ? "True" : "False";
  return value.dump();
}

ConversationDataset make_vlm_conversation_dataset(const VlmDatasetOptions& opts) {
  return conversation_dataset(opts, "conversation", [](const ojson& r, size_t, const std::string& where) {
    if (r.contains("messages")) return r["messages"];
    if (r.contains("conversation")) return r["conversation"];
    return require_field(r, "messages", where);  // names the columns the record has
  });
}

ConversationDataset make_rdr_dataset(const VlmDatasetOptions& opts) {
  return conversation_dataset(opts, "rdr", [](const ojson& r, size_t, const std::string& where) {
    return image_question_answer(image_part(r, "image", where), kDescribe,
                                 detail::text_of(require_field(r, "text", where), "text", where));
  });
}

ConversationDataset make_cord_v2_dataset(const VlmDatasetOptions& opts) {
  return conversation_dataset(opts, "CORD-v2", [](const ojson& r, size_t index, const std::string& where) {
    const ojson& field = require_field(r, "ground_truth", where);
    ojson truth = field;
    if (field.is_string()) {
      try {
        truth = ojson::parse(field.get<std::string>());
      } catch (const ojson::exception& e) {
        throw Error(std::string("'ground_truth' is not valid JSON: ") + e.what(), where, "fix the record");
      }
    }
    std::vector<ojson> parses;
    if (truth.is_object() && truth.contains("gt_parses")) {
      if (!truth["gt_parses"].is_array() || truth["gt_parses"].empty())
        throw Error("'ground_truth'.gt_parses must be a non-empty list", where, "fix the record");
      for (const ojson& p : truth["gt_parses"]) parses.push_back(p);
    } else if (truth.is_object() && truth.contains("gt_parse") && truth["gt_parse"].is_object()) {
      parses.push_back(truth["gt_parse"]);
    } else {
      throw Error("'ground_truth' must hold {\"gt_parse\": {...}} or {\"gt_parses\": [...]}", where,
                  "give CORD-v2's ground truth layout");
    }
    return image_question_answer(image_part(r, "image", where), kDescribe,
                                 json2token(parses[index % parses.size()], true));
  });
}

ConversationDataset make_medpix_dataset(const VlmDatasetOptions& opts) {
  return conversation_dataset(opts, "MedPix", [](const ojson& r, size_t, const std::string& where) {
    return image_question_answer(image_part(r, "image_id", where),
                                 detail::text_of(require_field(r, "question", where), "question", where),
                                 detail::text_of(require_field(r, "answer", where), "answer", where));
  });
}

}  // namespace automodel::data

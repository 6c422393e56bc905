#pragma once
// Hugging Face tokenizer.json (+ tokenizer_config.json): the same ids, offsets and decoded text as
// the `tokenizers` package. Supported: model BPE; normalizers NFC/NFD/NFKC/NFKD, Lowercase, Replace,
// Prepend, Strip, Sequence; pre-tokenizers ByteLevel, Split, Metaspace, Digits, Punctuation,
// Whitespace, WhitespaceSplit, Sequence; post-processors ByteLevel, TemplateProcessing, Sequence;
// decoders ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence; added tokens with
// special/lstrip/rstrip/normalized/single_word. Anything else is an automodel::Error naming it.
#include <cstdint>
#include <functional>
#include <istream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace automodel::tokenizer {

class Tokenizer {
 public:
  struct Encoding {
    std::vector<int64_t> ids;
    std::vector<std::pair<size_t, size_t>> offsets;  // byte offsets into the input; (0, 0) for inserted tokens
    std::vector<uint8_t> special_tokens_mask;        // 1 for tokens inserted by the post-processor
  };

  // A tokenizer.json file.
  static Tokenizer from_file(const std::string& tokenizer_json);
  // A model directory or a hub id in the HF cache: tokenizer.json + tokenizer_config.json (optional).
  static Tokenizer from_pretrained(const std::string& dir_or_hub_id);
  // tokenizer.json contents (already parsed); `where` names it in errors.
  static Tokenizer from_json(const nlohmann::json& tokenizer_json, const std::string& where = "tokenizer.json");

  Encoding encode(std::string_view text, bool add_special_tokens = true) const;
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts, bool add_special_tokens = true) const;
  // Encodes a text read from `in` (a file of any size) with memory bounded independently of its length: `sink`
  // receives the ids in order, and their concatenation is encode(whole text).ids. The text is encoded in chunks cut
  // only where the pipeline provably encodes the same apart as together (stream_encode.cpp); a pipeline without such
  // places (streams_in_chunks() false: a Prepend or Strip normalizer, no pre-tokenizer, ...) is encoded whole.
  // `where` names the input in errors.
  void encode_stream(std::istream& in, bool add_special_tokens,
                     const std::function<void(const std::vector<int64_t>&)>& sink,
                     const std::string& where = "the input") const;
  bool streams_in_chunks() const;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  std::optional<int64_t> token_to_id(const std::string& token) const;
  std::string id_to_token(int64_t id) const;  // "" for an unknown id
  int64_t vocab_size() const;                 // model vocabulary plus added tokens

  // tokenizer_config.json fields (absent ones empty / false / nullopt).
  const std::optional<std::string>& bos_token() const { return bos_token_; }
  const std::optional<std::string>& eos_token() const { return eos_token_; }
  const std::optional<std::string>& pad_token() const { return pad_token_; }
  const std::optional<std::string>& unk_token() const { return unk_token_; }
  std::optional<bool> add_bos_token() const { return add_bos_token_; }
  std::optional<bool> add_eos_token() const { return add_eos_token_; }
  std::optional<int64_t> model_max_length() const { return model_max_length_; }
  const nlohmann::json& tokenizer_config() const { return config_; }  // raw (null when absent)

  struct Impl;

 private:
  Tokenizer() = default;  // made by from_file / from_pretrained / from_json
  std::shared_ptr<const Impl> impl_;
  nlohmann::json config_;
  std::optional<std::string> bos_token_, eos_token_, pad_token_, unk_token_;
  std::optional<bool> add_bos_token_, add_eos_token_;
  std::optional<int64_t> model_max_length_;
};

}  // namespace automodel::tokenizer

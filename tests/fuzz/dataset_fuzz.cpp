// components/data: the bytes as a dataset file (.jsonl or .json by the first byte's low bit; gzip- or
// zstd-compressed by its next bits, so the decompressors see arbitrary bytes too) indexed by RecordSource and turned
// into every sample by one of NeMo's dataset builders (SQuAD, chat in OpenAI or ShareGPT form, column-mapped,
// HellaSwag; the second byte picks it and its padding / truncation options). The tokenizer is tiny and fixed: one id per byte
// and a real Jinja chat template, so the records' content, not the tokenizer, drives the run.
#include <stdlib.h>

#include <nlohmann/json.hpp>

#include "components/data/llm_datasets.h"
#include "components/data/records.h"
#include "components/tokenizer/chat_template.h"
#include "fuzz_util.h"

namespace {

using automodel::data::TextTokenizer;

TextTokenizer byte_tokenizer(bool with_chat_template) {
  TextTokenizer tok;
  tok.bos_id = 1;
  tok.eos_id = 2;
  tok.pad_id = 0;
  tok.encode = [](const std::string& text, bool add_special) {
    automodel::data::TokenizedText t;
    if (add_special) {
      t.ids.push_back(1);
      t.offsets.emplace_back(0, 0);
      t.inserted.push_back(1);
    }
    for (size_t i = 0; i < text.size(); ++i) {
      t.ids.push_back(3 + static_cast<unsigned char>(text[i]));
      t.offsets.emplace_back(i, i + 1);
      t.inserted.push_back(0);
    }
    return t;
  };
  if (with_chat_template) {
    static const automodel::tokenizer::ChatTemplates templates = [] {
      automodel::tokenizer::ChatTemplates t;
      t.templates["default"] =
          "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
          "{% if m.tool_calls %}{{ m.tool_calls | tojson }}{% endif %}</s>{% endfor %}"
          "{% if tools %}{{ tools | tojson }}{% endif %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
      t.special_tokens = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
      t.source = "fuzz template";
      return t;
    }();
    tok.apply_chat_template = [](const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                 bool add_generation_prompt) {
      return automodel::tokenizer::apply_chat_template(templates, messages, add_generation_prompt, tools);
    };
  }
  return tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  if (size < 2) return 0;
  const bool jsonl = data[0] & 1;
  const char* compression = (data[0] & 6) == 2 ? ".gz" : (data[0] & 6) == 4 ? ".zst" : "";
  const uint8_t mode = data[1];
  ::setenv("AUTOMODEL_CACHE_DIR", (fuzz::scratch_dir() / "cache").c_str(), 1);
  std::error_code ec;
  std::filesystem::remove_all(fuzz::scratch_dir() / "cache", ec);  // each input is a new file to the cache
  const std::string path =
      (fuzz::scratch_dir() / (std::string(jsonl ? "data.jsonl" : "data.json") + compression)).string();
  fuzz::write_file(path, fuzz::as_text(data + 2, size - 2));
  const bool chat_template = mode & 0x10;
  const TextTokenizer tok = byte_tokenizer(chat_template);
  const std::string padding = (mode & 0x20) ? "max_length" : "do_not_pad";
  const std::string truncation = (mode & 0x40) ? "longest_first" : "do_not_truncate";
  const std::optional<int64_t> seq_length = (mode & 0x60) ? std::optional<int64_t>(24) : std::nullopt;
  fuzz::accept_errors([&] {
    switch (mode % 6) {
      case 0: {
        data::SquadOptions o;
        o.path = path;
        o.seq_length = seq_length;
        o.padding = padding;
        o.truncation = truncation;
        (void)data::materialize(data::make_squad_dataset(tok, o));
        break;
      }
      case 1:
      case 2: {
        data::ChatOptions o;
        o.path = path;
        o.seq_length = seq_length;
        o.padding = padding;
        o.truncation = truncation;
        o.mask_history = mode % 6 == 2;
        (void)data::materialize(data::make_chat_dataset(byte_tokenizer(true), o));
        break;
      }
      case 3: {
        data::ColumnMappedOptions o;
        o.path = path;
        o.column_mapping = {{"context", "context"}, {"question", "question"}, {"answer", "answer"}};
        o.seq_length = seq_length;
        o.padding = padding;
        o.truncation = truncation;
        o.use_hf_chat_template = chat_template;
        (void)data::materialize(data::make_column_mapped_dataset(tok, o));
        break;
      }
      case 4: {
        data::HellaSwagOptions o;
        o.path = path;
        o.pad_to_max_length = mode & 0x20;
        (void)data::materialize(data::make_hellaswag_dataset(tok, o));
        break;
      }
      case 5: {
        // The split-slice syntax on the file's records.
        (void)data::load_records(path, "train[1:-1]+train[:50%]");
        break;
      }
    }
  });
  return 0;
}

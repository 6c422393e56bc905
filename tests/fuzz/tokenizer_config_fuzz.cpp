// tokenizer_config.json, as the recipe reads it: Tokenizer::from_pretrained (special tokens, add_bos/eos_token,
// model_max_length) beside a fixed valid tokenizer.json, then load_chat_templates (its chat_template, a string or a
// list of {name, template}) and a render of a fixed conversation.
#include <nlohmann/json.hpp>

#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/tokenizer.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  static const std::filesystem::path dir = [] {
    auto d = fuzz::scratch_dir() / "tokenizer";
    fuzz::write_file(d / "tokenizer.json", fuzz::read_file(fuzz::source_path("assets/tiny-llama/tokenizer.json")));
    return d;
  }();
  fuzz::write_file(dir / "tokenizer_config.json", fuzz::as_text(data, size));
  fuzz::accept_errors([&] {
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_pretrained(dir.string());
    for (const auto& token : {tok.bos_token(), tok.eos_token(), tok.pad_token(), tok.unk_token()})
      if (token) (void)tok.token_to_id(*token);
  });
  fuzz::accept_errors([&] {
    tokenizer::ChatTemplates templates = tokenizer::load_chat_templates(dir.string());
    if (templates.templates.empty()) return;
    const auto messages = nlohmann::ordered_json::parse(
        R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}])");
    (void)tokenizer::apply_chat_template(templates, messages, true);
  });
  return 0;
}

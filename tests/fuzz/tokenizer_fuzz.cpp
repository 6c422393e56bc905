// components/tokenizer: the bytes as tokenizer.json (Tokenizer::from_file: the JSON, the model, normalizers,
// pre-tokenizers, added tokens, post-processor, decoder), then an encode and a decode of a short mixed text.
#include "components/tokenizer/tokenizer.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  const std::string path = (fuzz::scratch_dir() / "tokenizer.json").string();
  fuzz::write_file(path, fuzz::as_text(data, size));
  fuzz::accept_errors([&] {
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(path);
    const std::string text = "Hello world!  It's 2024: naïve café, 東京 <s> </s>\n\ttabs";
    for (bool special : {true, false}) {
      tokenizer::Tokenizer::Encoding e = tok.encode(text, special);
      (void)tok.decode(e.ids, false);
      (void)tok.decode(e.ids, true);
    }
    (void)tok.id_to_token(0);
    (void)tok.vocab_size();
  });
  return 0;
}

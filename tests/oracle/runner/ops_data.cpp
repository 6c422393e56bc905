// Oracle entries for components/data: how a prompt + answer pair becomes input ids and labels with a real
// tokenizer, so pytest can check the answer-only loss mask against the `tokenizers` package's own offsets.
#include "components/data/formatting.h"
#include "recipes/build.h"
#include "registry.h"

namespace automodel::oracle {

namespace {

Tensor ids_tensor(const std::vector<int64_t>& v) {
  Tensor t = Tensor::empty({int64_t(v.size())}, DType::i64);
  std::copy(v.begin(), v.end(), t.data<int64_t>());
  return t;
}

}  // namespace

// params: tokenizer_dir, prompt, answer -> [input_ids, labels] of format_prompt_completion (answer-only mask).
ORACLE_OP("prompt_completion", [](const OpCall& c) -> std::vector<Tensor> {
  const recipes::TokenizerBundle tok = recipes::build_tokenizer(nullptr, c.params["tokenizer_dir"]);
  data::FormatOptions opts;
  const data::Sample s = data::format_prompt_completion(tok.text, c.params["prompt"], c.params["answer"], opts);
  return {ids_tensor(s.input_ids), ids_tensor(s.labels)};
});

}  // namespace automodel::oracle

// Oracle entry for the VLM data path: a dataset's conversations collated as NeMo's default_collate_fn does, so
// pytest can compare every tensor with the same logic run through transformers' processor.
#include "recipes/build_vlm_data.h"
#include "registry.h"

namespace automodel::oracle {

// params: model_dir, dataset (a dataset section: {_target_, path_or_dataset, ...}), indices (the batch),
// max_length (optional) -> [input_ids, attention_mask, labels, token_type_ids (empty for Idefics 3), pixel_values
// (when any image)].
ORACLE_OP("vlm_collate", [](const OpCall& c) -> std::vector<Tensor> {
  const config::ConfigNode section = config::parse_yaml(c.params["dataset"].dump(), "dataset");
  const data::ConversationDataset data = recipes::build_vlm_dataset(section);
  std::vector<data::Conversation> conversations;
  for (const auto& i : c.params["indices"]) conversations.push_back(data.get(i.get<size_t>()));
  std::vector<const data::Conversation*> batch;
  for (const auto& conv : conversations) batch.push_back(&conv);
  recipes::VlmCollateOptions options;
  if (c.params.contains("max_length")) options.max_length = c.params["max_length"].get<int64_t>();
  const data::Batch b =
      recipes::vlm_collate(batch, recipes::load_vlm_processor(c.params["model_dir"].get<std::string>()), options);
  std::vector<Tensor> out{b.input_ids, b.attention_mask, b.labels,
                          b.token_type_ids.defined() ? b.token_type_ids : Tensor::zeros({0}, DType::i64)};
  if (b.pixel_values.defined()) out.push_back(b.pixel_values);
  return out;
});

}  // namespace automodel::oracle

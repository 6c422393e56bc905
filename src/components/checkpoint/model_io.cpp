#include "components/checkpoint/model_io.h"

#include <filesystem>
#include <set>

#include "core/error.h"
#include "io/hf_dir.h"
#include "io/safetensors.h"
#include "models/auto_model.h"
#include "ops/view.h"

namespace automodel::checkpoint {

namespace fs = std::filesystem;

void save_consolidated_model(const models::LanguageModel& model, const std::string& dir,
                             const std::vector<std::string>& extra_files_to_copy) {
  for (const auto& file : extra_files_to_copy) {
    std::error_code ec;
    if (!fs::is_regular_file(file, ec))
      throw Error("file to copy into the consolidated checkpoint is missing", file,
                  "pass existing tokenizer files (tokenizer.json, tokenizer_config.json, ...)");
  }
  models::save_pretrained(model, dir);
  for (const auto& file : extra_files_to_copy) {
    const fs::path dest = fs::path(dir) / fs::path(file).filename();
    std::error_code ec;
    fs::copy_file(file, dest.string() + ".tmp", fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(dest.string() + ".tmp", dest, ec);
    if (ec)
      throw Error("cannot copy into the checkpoint: " + ec.message(), file + " -> " + dest.string(),
                  "check free disk space and permissions");
  }
}

void load_model_weights(models::LanguageModel& model, const std::string& dir) {
  io::ShardedReader reader(dir);
  const models::StateDictAdapter& adapter = model.state_dict_adapter();
  auto params = model.named_parameters();
  std::vector<std::vector<models::HfTensorSpec>> layouts;
  std::set<std::string> expected;
  std::vector<std::string> missing;
  for (const auto& [name, param] : params) {
    layouts.push_back(adapter.hf_layout(name, param.shape()));
    for (const models::HfTensorSpec& hf : layouts.back()) {
      expected.insert(hf.name);
      if (!reader.contains(hf.name)) {
        missing.push_back(hf.name);
        continue;
      }
      const io::TensorInfo& info = reader.info(hf.name);
      if (info.shape != hf.shape)
        throw Error("tensor '" + hf.name + "' has shape " + shape_str(info.shape) + " in the checkpoint but " +
                        shape_str(hf.shape) + " in the model",
                    reader.file_of(hf.name), "the checkpoint was saved from a different model configuration");
    }
  }
  if (!missing.empty())
    throw Error("the checkpoint lacks " + std::to_string(missing.size()) + " parameter(s), first '" + missing[0] + "'",
                dir, "the checkpoint was saved from a different model configuration");
  for (const auto& name : reader.names())
    if (!expected.count(name))
      throw Error("the checkpoint has tensor '" + name + "' that the model does not", reader.file_of(name),
                  "the checkpoint was saved from a different model configuration (e.g. tie_word_embeddings)");
  // Every tensor is checked (float, finite) before the first is written, so a damaged checkpoint leaves the live
  // model as it was; a checked tensor is not kept, so this needs no second copy of the model.
  for (size_t i = 0; i < params.size(); ++i)
    for (const models::HfTensorSpec& hf : layouts[i]) reader.get_weight(hf.name, params[i].second.dtype());
  for (size_t i = 0; i < params.size(); ++i) {
    auto& [name, param] = params[i];
    std::vector<Tensor> parts;
    for (const models::HfTensorSpec& hf : layouts[i]) parts.push_back(reader.get(hf.name, param.dtype()));
    ops::copy_into(param, adapter.from_hf(name, std::move(parts)));
  }
}

}  // namespace automodel::checkpoint

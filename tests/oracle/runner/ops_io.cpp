// Oracle entries for io/: safetensors files and sharded checkpoints. They read and write the files named in
// params, so pytest can compare them with what the reference `safetensors` / `huggingface_hub` libraries write
// and read. Tensor inputs arrive by name (unordered); params["names"] gives the order.
#include <optional>

#include "io/safetensors.h"
#include "registry.h"

namespace automodel::oracle {

namespace {

// params: "metadata": {k: v} | null (no "__metadata__" key); absent: {"format": "pt"}.
std::optional<io::Metadata> metadata_param(const nlohmann::json& params) {
  if (!params.contains("metadata")) return io::Metadata{{"format", "pt"}};
  if (params["metadata"].is_null()) return std::nullopt;
  return params["metadata"].get<io::Metadata>();
}

io::NamedTensors named_inputs(const OpCall& c) {
  io::NamedTensors ts;
  for (const std::string& n : c.params["names"].get<std::vector<std::string>>()) ts.emplace_back(n, c.in(n));
  return ts;
}

// params "dtype" (optional): a DType name to convert every loaded tensor to.
std::vector<Tensor> load_named(const auto& reader, const OpCall& c) {
  std::vector<Tensor> out;
  for (const std::string& n : c.params["names"].get<std::vector<std::string>>())
    out.push_back(c.params.contains("dtype") ? reader.get(n, dtype_from_name(c.params["dtype"])) : reader.get(n));
  return out;
}

}  // namespace

// Writes the inputs to params["path"].
ORACLE_OP("safetensors_save", [](const OpCall& c) -> std::vector<Tensor> {
  io::save_safetensors(c.params["path"], named_inputs(c), metadata_param(c.params));
  return {};
});

// Reads params["src"] with our reader and writes every tensor to params["dst"] with our writer (in reverse
// file order, to show that the input order does not matter).
ORACLE_OP("safetensors_resave", [](const OpCall& c) -> std::vector<Tensor> {
  io::NamedTensors ts = io::load_safetensors(c.params["src"]);
  io::NamedTensors rev(ts.rbegin(), ts.rend());
  io::save_safetensors(c.params["dst"], rev, metadata_param(c.params));
  return {};
});

// Loads params["names"] from the file params["path"].
ORACLE_OP("safetensors_load", [](const OpCall& c) -> std::vector<Tensor> {
  return load_named(io::SafetensorsReader(c.params["path"]), c);
});

// write_sharded(params["dir"], inputs in params["names"] order, params["max_shard_bytes"]).
ORACLE_OP("safetensors_write_sharded", [](const OpCall& c) -> std::vector<Tensor> {
  io::write_sharded(c.params["dir"], named_inputs(c), c.params["max_shard_bytes"].get<uint64_t>(),
                    metadata_param(c.params), c.params.value("weights_name", std::string("model.safetensors")));
  return {};
});

// Loads params["names"] from the checkpoint directory params["dir"].
ORACLE_OP("safetensors_load_dir", [](const OpCall& c) -> std::vector<Tensor> {
  return load_named(
      io::ShardedReader(c.params["dir"], c.params.value("weights_name", std::string("model.safetensors"))), c);
});

}  // namespace automodel::oracle

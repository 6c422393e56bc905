#include "components/checkpoint/state_io.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/hf_dir.h"
#include "io/safetensors.h"
#include "ops/view.h"

namespace automodel::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A NaN or Inf in saved state would poison every later step: resuming from it only hides where it came from.
const char* const kNonFiniteHint =
    "the checkpoint holds NaN / Inf values (training diverged before it was saved): resume from an earlier checkpoint "
    "(checkpoint.restore_from) or lower the learning rate and start again";

void make_parent(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) throw Error("cannot create directory: " + ec.message(), parent.string(), "check permissions");
}

void require_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw Error(what + " is missing", path, "the checkpoint is damaged or was written by another tool");
}

std::string join_first(const std::vector<std::string>& names, size_t n = 5) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < n; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > n) out += " (+" + std::to_string(names.size() - n) + " more)";
  return out;
}

}  // namespace

void save_tensors(const std::string& path, const std::map<std::string, Tensor>& tensors, const json& metadata) {
  if (!metadata.is_object())
    throw Error("safetensors metadata must be a JSON object", path, "pass a {key: value} object");
  io::Metadata meta;
  for (const auto& [key, value] : metadata.items())
    meta[key] = value.is_string() ? value.get<std::string>() : value.dump();
  io::NamedTensors named;
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) throw Error("tensor '" + name + "' is undefined", path, "every saved tensor needs data");
    named.emplace_back(name, ops::contiguous(tensor.detach()));
  }
  make_parent(path);
  io::save_safetensors(path, named, meta);
}

void load_tensors_into(const std::string& path, std::map<std::string, Tensor>& tensors, bool require_finite) {
  require_file(path, "tensor file");
  io::SafetensorsReader reader(path);
  std::vector<std::string> missing, extra;
  for (const auto& [name, tensor] : tensors)
    if (!reader.contains(name)) missing.push_back(name);
  for (const auto& name : reader.names())
    if (!tensors.count(name)) extra.push_back(name);
  if (!missing.empty())
    throw Error("the file lacks " + std::to_string(missing.size()) + " tensor(s): " + join_first(missing), path,
                "the checkpoint was saved for a different model or optimizer configuration");
  if (!extra.empty())
    throw Error("the file has " + std::to_string(extra.size()) + " unexpected tensor(s): " + join_first(extra), path,
                "the checkpoint was saved for a different model or optimizer configuration");
  // Check everything before writing anything, so a mismatch leaves the destination untouched.
  for (const auto& [name, tensor] : tensors) {
    const io::TensorInfo& info = reader.info(name);
    if (info.shape != tensor.shape())
      throw Error("tensor '" + name + "' has shape " + shape_str(info.shape) + " in the file but " +
                      shape_str(tensor.shape()) + " here",
                  path, "the checkpoint was saved for a different model or optimizer configuration");
    if (info.dtype != io::safetensors_dtype_name(tensor.dtype()))
      throw Error("tensor '" + name + "' is " + info.dtype + " in the file but " +
                      io::safetensors_dtype_name(tensor.dtype()) + " here",
                  path, "resume with the same dtype the checkpoint was trained with");
    if (require_finite) io::check_finite(reader.get(name), name, path, kNonFiniteHint);
  }
  for (auto& [name, tensor] : tensors) ops::copy_into(tensor, reader.get(name));
}

std::map<std::string, Tensor> load_tensors(const std::string& path) {
  require_file(path, "tensor file");
  io::SafetensorsReader reader(path);
  std::map<std::string, Tensor> out;
  for (const auto& name : reader.names()) out[name] = ops::clone(reader.get(name));
  return out;
}

void save_json(const std::string& path, const json& value) {
  make_parent(path);
  io::write_file_atomic(path, value.dump(2) + "\n");
}

json load_json(const std::string& path) {
  require_file(path, "JSON file");
  return io::read_json_file(path);
}

void save_text(const std::string& path, const std::string& text) {
  make_parent(path);
  io::write_file_atomic(path, text);
}

std::string load_text(const std::string& path) {
  require_file(path, "file");
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof()) throw Error("cannot read the file", path, "check permissions");
  return ss.str();
}

void save_optimizer_state(const std::string& dir, const std::map<std::string, Tensor>& state,
                          const std::map<std::string, int64_t>& step_counts, const json& extra) {
  save_tensors((fs::path(dir) / "optimizer.safetensors").string(), state);
  save_json((fs::path(dir) / "optimizer.json").string(), json{{"step_counts", step_counts}, {"extra", extra}});
}

OptimizerStateFiles load_optimizer_state(const std::string& dir, std::map<std::string, Tensor>& state) {
  OptimizerStateFiles out = load_optimizer_meta((fs::path(dir) / "optimizer.json").string());
  load_tensors_into((fs::path(dir) / "optimizer.safetensors").string(), state, /*require_finite=*/true);
  return out;
}

OptimizerStateFiles load_optimizer_meta(const std::string& meta_path) {
  json meta = load_json(meta_path);
  OptimizerStateFiles out;
  if (!meta.is_object() || !meta.contains("step_counts") || !meta["step_counts"].is_object())
    throw Error("no 'step_counts' object", meta_path, "the optimizer state file is damaged");
  for (const auto& [name, n] : meta["step_counts"].items()) {
    if (!n.is_number_integer() || n.get<int64_t>() < 0)
      throw Error("step count of '" + name + "' is not a non-negative integer", meta_path + ": step_counts",
                  "the optimizer state file is damaged");
    out.step_counts[name] = n.get<int64_t>();
  }
  out.extra = meta.value("extra", json::object());
  if (!out.extra.is_object()) throw Error("'extra' is not an object", meta_path, "the optimizer state file is damaged");
  return out;
}

void save_rng_state(const std::string& dir, const std::map<std::string, GeneratorState>& generators) {
  json j = json::object();
  for (const auto& [name, s] : generators) j[name] = {{"seed", s.seed}, {"offset", s.offset}};
  save_json((fs::path(dir) / "rng_state.json").string(), j);
}

std::map<std::string, GeneratorState> load_rng_state(const std::string& dir) {
  const std::string path = (fs::path(dir) / "rng_state.json").string();
  json j = load_json(path);
  std::map<std::string, GeneratorState> out;
  if (!j.is_object()) throw Error("RNG state is not a JSON object", path, "the checkpoint is damaged");
  for (const auto& [name, s] : j.items()) {
    for (const char* key : {"seed", "offset"})
      if (!s.is_object() || !s.contains(key) || !s[key].is_number_unsigned())
        throw Error("generator '" + name + "' lacks a non-negative integer '" + key + "'", path,
                    "the checkpoint is damaged");
    out[name] = GeneratorState{s["seed"].get<uint64_t>(), s["offset"].get<uint64_t>()};
  }
  return out;
}

}  // namespace automodel::checkpoint

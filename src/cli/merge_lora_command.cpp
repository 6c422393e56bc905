// `automodel merge-lora --base DIR --adapter DIR --out DIR [--dtype f32|bf16]`: a base model (causal LM or
// image-text) and a peft-format LoRA adapter in, a consolidated Hugging Face model directory (W + scale B A, with
// the base's tokenizer and processor files) out.
//
// The output never touches the inputs: --out may not be, contain or lie inside --base or --adapter (symlinks
// resolved, the base's files included: a hub-cache snapshot links into its blobs), and must be new (or an empty
// directory). It is written into a hidden staging directory beside it and renamed into place when complete, as
// checkpoints are (CheckpointStage itself also writes a completion marker and a LATEST pointer, which a plain model
// directory must not have).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "components/peft/adapter_io.h"
#include "components/peft/lora.h"
#include "core/error.h"
#include "io/hf_dir.h"
#include "io/safetensors.h"
#include "models/auto_model.h"
#include "models/vision_language_model.h"

namespace automodel::cli {

namespace {

namespace fs = std::filesystem;

// p absolute, with every symlink resolved as far as the path exists, and no trailing separator.
fs::path resolved(const fs::path& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p, ec), ec);
  if (ec) r = fs::absolute(p).lexically_normal();
  if (r.has_relative_path() && r.filename().empty()) r = r.parent_path();
  return r;
}

// Whether `inner` is `outer` or lies below it (both resolved).
bool within(const fs::path& inner, const fs::path& outer) {
  auto [o, i] = std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end());
  return o == outer.end();
}

// Refuses an --out that is, contains or lies inside the input directory `dir` (given on the command line as
// `option` `arg`) or one of the files the directory links to.
void refuse_overlap(const fs::path& out, const std::string& out_arg, const std::string& option, const std::string& arg,
                    const std::string& dir) {
  const fs::path in = resolved(dir);
  const std::string shown = "--out '" + out_arg + "'" + (out.string() != out_arg ? " (" + out.string() + ")" : "");
  const std::string input = option + " '" + arg + "'" + (in.string() != arg ? " (" + in.string() + ")" : "");
  const std::string hint = "write the merged model to a new directory outside the inputs, e.g. --out " +
                           (in.parent_path() / (in.filename().string() + "-merged")).string();
  std::string relation;
  if (out == in)
    relation = "is the same directory as";
  else if (within(out, in))
    relation = "lies inside";
  else if (within(in, out))
    relation = "contains";
  if (!relation.empty())
    throw Error(shown + " " + relation + " " + input + ": writing there would overwrite or delete the input",
                "command line: --out", hint);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(in, ec)) {
    const fs::path target = resolved(entry.path());
    if (within(target, out))
      throw Error(
          shown + " contains " + target.string() + ", which " + input + " uses (through " + entry.path().string() + ")",
          "command line: --out", hint);
  }
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: the files inside were flushed when written
  ::fsync(fd);
  ::close(fd);
}

// A hidden directory beside `out` to write into; removed unless publish() renamed it to `out`.
class StagingDir {
 public:
  explicit StagingDir(const fs::path& out) : out_(out) {
    const fs::path parent = out.parent_path();
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) throw Error("cannot create " + parent.string() + ": " + ec.message(), "--out", "check the path");
    const std::string prefix = "." + out.filename().string() + ".staging-";
    for (const auto& entry : fs::directory_iterator(parent, ec))  // left by an interrupted merge
      if (entry.path().filename().string().rfind(prefix, 0) == 0) fs::remove_all(entry.path(), ec);
    path_ = parent / (prefix + std::to_string(::getpid()));
    fs::create_directory(path_, ec);
    if (ec) throw Error("cannot create " + path_.string() + ": " + ec.message(), "--out", "check permissions");
  }
  ~StagingDir() {
    std::error_code ec;
    if (!published_) fs::remove_all(path_, ec);
  }
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;

  const fs::path& path() const { return path_; }

  void publish() {
    fsync_dir(path_);
    if (::rename(path_.c_str(), out_.c_str()) != 0)
      throw Error("cannot move the merged model into place: " + std::string(std::strerror(errno)),
                  path_.string() + " -> " + out_.string(), "check that --out is still free and writable");
    published_ = true;
    fsync_dir(out_.parent_path());
  }

 private:
  fs::path out_, path_;
  bool published_ = false;
};

// The base's tokenizer and processor files, so that the merged directory generates and trains on its own.
void copy_tokenizer_files(const fs::path& base, const fs::path& out) {
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                           "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "processor_config.json",
                           "preprocessor_config.json"}) {
    std::error_code ec;
    if (!fs::exists(base / name, ec)) continue;
    fs::copy_file(base / name, out / name, ec);
    if (ec)
      throw Error("cannot copy " + (base / name).string() + ": " + ec.message(), out.string(),
                  "check free space and permissions");
  }
}

}  // namespace

int run_merge_lora(const Args& args) {
  auto require = [&](const char* name, const char* what) {
    std::string v = args.str(name, "");
    if (v.empty() || v == "true")
      throw Error(std::string("`automodel merge-lora` needs --") + name + " DIR", "command line",
                  std::string("--") + name + ": " + what);
    return v;
  };
  const std::string base_arg = require("base", "the base model directory (or hub id in the local cache)");
  const std::string adapter = require("adapter",
                                      "a peft adapter directory (adapter_config.json + "
                                      "adapter_model.safetensors)");
  const std::string out_arg = require("out", "where to write the merged model");
  const std::string dtype = args.str("dtype", "f32");
  args.reject_unused("merge-lora");
  models::LoadOptions options;
  if (dtype == "bf16" || dtype == "bfloat16")
    options.dtype = DType::bf16;
  else if (dtype != "f32" && dtype != "float32")
    throw Error("unknown --dtype '" + dtype + "'", "command line", "use --dtype f32 or --dtype bf16");
  options.trainable = false;

  // Every check on the paths comes before the (slow) load.
  const std::string base = io::resolve_model_dir(base_arg);
  std::error_code ec;
  if (!fs::is_directory(adapter, ec))
    throw Error("--adapter '" + adapter + "' is not a directory", "command line: --adapter",
                "pass the directory holding adapter_config.json and adapter_model.safetensors");
  const fs::path out = resolved(out_arg);
  refuse_overlap(out, out_arg, "--base", base_arg, base);
  refuse_overlap(out, out_arg, "--adapter", adapter, adapter);
  const fs::file_status out_status = fs::symlink_status(out_arg, ec);
  if (fs::exists(out_status)) {
    const char* kind = fs::is_symlink(out_status)      ? "a symlink"
                       : !fs::is_directory(out_status) ? "a file"
                       : !fs::is_empty(out_arg, ec)    ? "a directory that is not empty"
                                                       : nullptr;
    if (kind)
      throw Error("--out '" + out_arg + "' already exists (" + kind + ")", "command line: --out",
                  "choose a new directory, or remove this one first");
  }

  std::unique_ptr<models::LanguageModel> model = models::is_vision_language_model_dir(base)
                                                     ? models::load_vision_language_model(base, options)
                                                     : models::AutoModelForCausalLM::from_pretrained(base, options);
  peft::LoadedAdapter loaded = peft::load_adapter(*model, adapter, DType::f32, false);
  peft::merge_lora(*model);
  // Finite base weights and adapters can still overflow in W + scale B A (in bf16 especially).
  for (auto& [name, param] : model->named_parameters())
    io::check_finite(param, name, "the merged model",
                     "the adapter's update overflows the weight's dtype; merge with --dtype f32");
  StagingDir staging(out);
  models::save_pretrained(*model, staging.path().string());
  copy_tokenizer_files(base, staging.path());
  staging.publish();
  std::printf("merged %zu LoRA adapters (rank %lld) into %s\n", loaded.modules.size(),
              static_cast<long long>(loaded.config.dim), out_arg.c_str());
  return 0;
}

}  // namespace automodel::cli

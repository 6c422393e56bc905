#pragma once
// Hugging Face model directories: `pretrained_model_name_or_path` as a local directory or a hub id found in the
// local hub cache ($HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub,
// ~/.cache/huggingface/hub), laid out as models--<org>--<name>/{refs/<revision>, snapshots/<commit>/}.
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace automodel::io {

// The hub cache directories to search, most specific first, without duplicates (they need not exist).
std::vector<std::string> hub_cache_dirs();

// A directory that exists -> itself. Otherwise `org/name` (or `name`) is looked up in every hub cache dir as
// models--org--name/refs/<revision> -> snapshots/<commit>/ (also: snapshots/<revision>/ when revision is a commit,
// or, for revision "main" without refs/main, the only snapshot). Throws automodel::Error listing every place it looked;
// there is no network download.
std::string resolve_model_dir(const std::string& name_or_path, const std::string& revision = "main");

// Parses a JSON file; errors name the file, the line and the column of bad JSON.
nlohmann::json read_json_file(const std::string& path);

// Writes a file through path + ".tmp": `produce` pushes its bytes into the sink; then the file is flushed to disk and
// renamed over `path`, so no reader ever sees a half-written file. On any error the temporary is removed.
using ByteSink = std::function<void(const void* data, size_t n)>;
void write_file_atomic(const std::string& path, const std::function<void(const ByteSink&)>& produce);
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace automodel::io

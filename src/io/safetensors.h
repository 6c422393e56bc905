#pragma once
// Safetensors files (https://huggingface.co/docs/safetensors): read through a private memory map, with
// zero-copy tensor views where the dtype and alignment allow; written byte-for-byte as the reference
// Python library writes them; and Hugging Face sharded checkpoints (model-0000k-of-0000N.safetensors +
// model.safetensors.index.json) as transformers' save_pretrained lays them out.
//
// File layout: 8-byte little-endian u64 N, N bytes of JSON header (padded with spaces to a multiple of 8),
// then the data buffer. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data buffer) and may hold "__metadata__": {string: string}.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace automodel::io {

using Metadata = std::map<std::string, std::string>;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What the header says about one tensor.
struct TensorInfo {
  std::string dtype;  // safetensors spelling: "F32", "BF16", "I64", "BOOL", ...
  Shape shape;
  uint64_t data_begin = 0;  // byte offsets within the data buffer
  uint64_t data_end = 0;
  int64_t numel() const { return shape_numel(shape); }
  uint64_t nbytes() const { return data_end - data_begin; }
};

// Safetensors dtype names this reader knows, with their element sizes in bytes (0 for unknown).
size_t safetensors_dtype_size(const std::string& st_dtype);
// "F32" for DType::f32, ..., "BOOL" for DType::b8.
const char* safetensors_dtype_name(DType dtype);
// The DType a safetensors dtype loads as by default: itself where we have it (F32, F64, BF16, F16, I32, I64,
// BOOL), widened losslessly otherwise (I8, U8, I16, U16 -> i32; U32, U64 -> i64); nullopt for the 8-bit floats
// and other dtypes we cannot represent.
std::optional<DType> default_load_dtype(const std::string& st_dtype);

// Converts x to `dtype` (a copy, contiguous; x itself when it already is contiguous and of that dtype).
// Floating <-> floating rounds to nearest even; integers and bool convert to anything; floating -> integer
// is refused (it would truncate). Integer narrowing checks the range. Not differentiable: differentiable code
// uses ops::to_dtype.
Tensor convert_dtype(const Tensor& x, DType dtype, const std::string& what = "tensor");

// NaN and ±Inf elements of a floating tensor (none for integer and bool tensors): their number and the first one's
// index in row-major order. One pass over the bits, vectorized and OpenMP-parallel.
struct NonFinite {
  int64_t count = 0;
  int64_t first = -1;
  double first_value = 0;  // NaN, inf or -inf
};
NonFinite find_non_finite(const Tensor& x);

// Error "tensor '<name>' in <file> has N NaN / Inf values (first: element i = nan)" when x has any; `hint` says
// what to do (e.g. which earlier checkpoint to use).
void check_finite(const Tensor& x, const std::string& name, const std::string& file, const std::string& hint);

class SafetensorsReader {
 public:
  // Maps the file and validates the whole header; throws automodel::Error naming the file (and the tensor)
  // for any problem.
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return path_; }
  // Tensor names in the order of their data in the file.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  // "__metadata__" (empty when the file has none; has_metadata() tells the two apart).
  const Metadata& metadata() const { return metadata_; }
  bool has_metadata() const { return has_metadata_; }
  // Size of the header JSON (N) and of the whole file.
  uint64_t header_size() const { return header_size_; }
  uint64_t file_size() const { return file_size_; }

  // The tensor in its default_load_dtype: a zero-copy view over the mapping when the dtype is one of ours and
  // the data is aligned for it, otherwise a converted copy. Views are copy-on-write: writing to them never
  // touches the file. The mapping lives as long as any view of it (or the reader).
  Tensor get(const std::string& name) const;
  // The tensor converted to `dtype` (a view when no conversion is needed).
  Tensor get(const std::string& name, DType dtype) const;
  // A floating-point weight as `dtype` (a floating dtype): an Error naming the tensor and the file when the file
  // stores it as an integer or bool type (no silent conversion), or when an element is NaN or ±Inf (in the file, or
  // after a narrowing conversion that overflows).
  Tensor get_weight(const std::string& name, DType dtype) const;
  // Raw bytes of a tensor inside the mapping (for zero-copy checks and raw copies).
  const uint8_t* raw_bytes(const std::string& name) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> map_;
  uint64_t header_size_ = 0, file_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data buffer
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo> infos_;
  Metadata metadata_;
  bool has_metadata_ = false;
};

// The bytes of a safetensors file for `tensors` (any order; stored sorted by dtype alignment, then name, as the
// reference library does) with `metadata` as "__metadata__" (nullopt: no "__metadata__" key at all).
std::string serialize_safetensors(const NamedTensors& tensors, const std::optional<Metadata>& metadata);

// Writes a safetensors file: the same bytes safetensors.torch.save_file(tensors, path, metadata) writes.
// Written to path + ".tmp" and renamed, so no reader ever sees a half-written file.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::optional<Metadata>& metadata = Metadata{{"format", "pt"}});

// Reads every tensor of a file (zero-copy where possible), in file order.
NamedTensors load_safetensors(const std::string& path);

// Hugging Face checkpoint directories.
inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000;  // transformers' "5GB"

// Writes `tensors` to `dir` as transformers' save_pretrained does: <weights_name> when everything fits in one
// shard of max_shard_bytes, else <stem>-0000k-of-0000N.safetensors plus <weights_name>.index.json with
// {"metadata": {"total_parameters", "total_size"}, "weight_map": {name: file}} (indent 2, sorted keys).
// Shards are filled greedily in the given order; a tensor larger than the limit gets a shard of its own.
// Stale shards / index / single file of an earlier save under the same weights_name are removed afterwards.
// Returns the file names written (index last when sharded).
std::vector<std::string> write_sharded(const std::string& dir, const NamedTensors& tensors,
                                       uint64_t max_shard_bytes = kDefaultMaxShardBytes,
                                       const std::optional<Metadata>& metadata = Metadata{{"format", "pt"}},
                                       const std::string& weights_name = "model.safetensors");

// A checkpoint directory (or a single .safetensors file): <weights_name>.index.json when present, else
// <weights_name>. Every shard named by the index is opened and checked to hold the names the index gives it.
class ShardedReader {
 public:
  explicit ShardedReader(const std::string& dir_or_file, const std::string& weights_name = "model.safetensors");

  bool sharded() const { return !index_path_.empty(); }
  const std::string& index_path() const { return index_path_; }  // empty when not sharded
  // Names in index order (sorted, as the index is) when sharded, else file order.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  Tensor get(const std::string& name) const;
  Tensor get(const std::string& name, DType dtype) const;
  Tensor get_weight(const std::string& name, DType dtype) const;  // as SafetensorsReader::get_weight
  // The shard file (full path) that holds `name`.
  const std::string& file_of(const std::string& name) const;
  // The open files (one when not sharded).
  const std::vector<std::shared_ptr<SafetensorsReader>>& shards() const { return shards_; }
  // Every tensor (zero-copy where possible), in names() order.
  NamedTensors load_all() const;

 private:
  void open_single(const std::string& file);
  void open_index(const std::string& dir, const std::string& index_path);
  const SafetensorsReader& reader_of(const std::string& name) const;
  std::string index_path_;
  std::vector<std::shared_ptr<SafetensorsReader>> shards_;
  std::map<std::string, size_t> where_;
  std::vector<std::string> names_;
};

}  // namespace automodel::io

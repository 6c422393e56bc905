#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/threads.h"
#include "io/hf_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace automodel::io {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference library's limit
const char* const kCorruptHint = "the file is damaged or is not a safetensors file: download or save it again";

// ---- dtypes -----------------------------------------------------------------------------------------------

struct StDtype {
  const char* name;
  size_t size;
  int rank;  // the reference's Dtype enum order (increasing alignment); files are written by descending rank
};

// Ranks follow safetensors' Dtype enum; only their relative order matters.
const StDtype kDtypes[] = {
    {"BOOL", 1, 0}, {"U8", 1, 2},   {"I8", 1, 3},   {"F8_E5M2", 1, 4}, {"F8_E4M3", 1, 5}, {"F8_E8M0", 1, 6},
    {"I16", 2, 7},  {"U16", 2, 8},  {"F16", 2, 9},  {"BF16", 2, 10},   {"I32", 4, 11},    {"U32", 4, 12},
    {"F32", 4, 13}, {"C64", 8, 14}, {"F64", 8, 15}, {"I64", 8, 16},    {"U64", 8, 17},
};

const StDtype* find_dtype(const std::string& name) {
  for (const StDtype& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string known_dtypes() {
  std::string s;
  for (const StDtype& d : kDtypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

bool st_is_float(const std::string& d) { return d == "F64" || d == "F32" || d == "F16" || d == "BF16"; }
bool st_is_int(const std::string& d) {
  return d == "BOOL" || d == "U8" || d == "I8" || d == "I16" || d == "U16" || d == "I32" || d == "U32" || d == "I64" ||
         d == "U64";
}

// Converts n integers of storage type S (uint8_t for BOOL) to `to`; returns the index of the first element that
// does not fit, or -1.
template <class S>
int64_t convert_ints(const uint8_t* src, DType to, uint8_t* dst, int64_t n, bool is_bool) {
  for (int64_t i = 0; i < n; ++i) {
    S s;
    std::memcpy(&s, src + size_t(i) * sizeof(S), sizeof(S));
    if constexpr (std::is_same_v<S, uint64_t>)
      if (s > uint64_t(std::numeric_limits<int64_t>::max())) return i;
    int64_t v = is_bool ? int64_t(s != 0) : int64_t(s);
    switch (to) {
      case DType::f32: reinterpret_cast<float*>(dst)[i] = static_cast<float>(v); break;
      case DType::f64: reinterpret_cast<double*>(dst)[i] = static_cast<double>(v); break;
      case DType::bf16: reinterpret_cast<bf16*>(dst)[i] = float_to_bf16(static_cast<float>(v)); break;
      case DType::f16: reinterpret_cast<f16*>(dst)[i] = float_to_f16(static_cast<float>(v)); break;
      case DType::i64: reinterpret_cast<int64_t*>(dst)[i] = v; break;
      case DType::i32:
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) return i;
        reinterpret_cast<int32_t*>(dst)[i] = int32_t(v);
        break;
      case DType::b8: reinterpret_cast<bool*>(dst)[i] = v != 0; break;
    }
  }
  return -1;
}

template <class Src, class Dst>
void convert_floats(const uint8_t* src, uint8_t* dst, int64_t n) {
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      Src s;
      std::memcpy(&s, src + size_t(i) * sizeof(Src), sizeof(Src));
      Dst out;
      if constexpr (std::is_same_v<Src, double> && std::is_same_v<Dst, double>)
        out = s;
      else if constexpr (std::is_same_v<Src, double>)
        out = from_compute<Dst>(static_cast<float>(s));
      else if constexpr (std::is_same_v<Dst, double>)
        out = double(to_compute(s));
      else
        out = from_compute<Dst>(to_compute(s));
      std::memcpy(dst + size_t(i) * sizeof(Dst), &out, sizeof(Dst));
    }
  });
}

template <class Src>
void convert_from_float(const uint8_t* src, uint8_t* dst, int64_t n, DType to) {
  switch (to) {
    case DType::f32: return convert_floats<Src, float>(src, dst, n);
    case DType::f64: return convert_floats<Src, double>(src, dst, n);
    case DType::bf16: return convert_floats<Src, bf16>(src, dst, n);
    case DType::f16: return convert_floats<Src, f16>(src, dst, n);
    default: return;
  }
}

// Converts n elements from safetensors dtype `from` to our `to`; `what` names the tensor for errors.
void convert_raw(const std::string& from, const uint8_t* src, DType to, uint8_t* dst, int64_t n,
                 const std::string& what) {
  const char* to_name = safetensors_dtype_name(to);
  if (from == to_name) {
    if (n > 0) std::memcpy(dst, src, size_t(n) * dtype_size(to));
    return;
  }
  if (st_is_float(from)) {
    if (!is_floating(to))
      throw Error(what + ": cannot convert " + from + " to " + dtype_name(to) + " (it would truncate)", "",
                  "load it as a floating dtype");
    if (from == "F32") return convert_from_float<float>(src, dst, n, to);
    if (from == "F64") return convert_from_float<double>(src, dst, n, to);
    if (from == "BF16") return convert_from_float<bf16>(src, dst, n, to);
    return convert_from_float<f16>(src, dst, n, to);
  }
  if (!st_is_int(from))
    throw Error(what + ": dtype " + from + " is not supported yet (no conversion to " + dtype_name(to) + ")", "",
                "convert the checkpoint to BF16, F16 or F32 first (e.g. with torch) and load that");
  int64_t bad = -1;
  if (from == "BOOL") bad = convert_ints<uint8_t>(src, to, dst, n, true);
  if (from == "U8") bad = convert_ints<uint8_t>(src, to, dst, n, false);
  if (from == "I8") bad = convert_ints<int8_t>(src, to, dst, n, false);
  if (from == "I16") bad = convert_ints<int16_t>(src, to, dst, n, false);
  if (from == "U16") bad = convert_ints<uint16_t>(src, to, dst, n, false);
  if (from == "I32") bad = convert_ints<int32_t>(src, to, dst, n, false);
  if (from == "U32") bad = convert_ints<uint32_t>(src, to, dst, n, false);
  if (from == "I64") bad = convert_ints<int64_t>(src, to, dst, n, false);
  if (from == "U64") bad = convert_ints<uint64_t>(src, to, dst, n, false);
  if (bad >= 0)
    throw Error(what + ": element " + std::to_string(bad) + " of " + from + " does not fit in " + dtype_name(to), "",
                "load it as a wider dtype");
}

// Copies the elements of x (any strides) into dst in row-major order.
void gather_bytes(const Tensor& x, uint8_t* dst) {
  size_t es = dtype_size(x.dtype());
  const uint8_t* base = static_cast<const uint8_t*>(x.storage()->data()) + size_t(x.offset()) * es;
  if (x.is_contiguous()) {
    if (x.numel() > 0) std::memcpy(dst, base, x.nbytes());
    return;
  }
  const Shape& sh = x.shape();
  const Shape& st = x.strides();
  int64_t n = x.numel();
  if (n == 0) return;
  // Innermost dimension as a run; iterate the outer index.
  size_t nd = sh.size();
  int64_t inner = sh[nd - 1], inner_stride = st[nd - 1];
  int64_t outer = n / inner;
  parallel_for(outer, 256, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      int64_t rem = o, off = 0;
      for (size_t d = nd - 1; d-- > 0;) {
        off += (rem % sh[d]) * st[d];
        rem /= sh[d];
      }
      uint8_t* out = dst + size_t(o * inner) * es;
      for (int64_t i = 0; i < inner; ++i)
        std::memcpy(out + size_t(i) * es, base + size_t(off + i * inner_stride) * es, es);
    }
  });
}

Tensor wrap_view(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

// ---- header parsing ---------------------------------------------------------------------------------------

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  throw Error("invalid safetensors file " + path + ": " + what, path, kCorruptHint);
}

uint64_t get_u64(const json& v, const std::string& path, const std::string& ctx) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) corrupt(path, ctx + " is negative (" + v.dump() + ")");
  corrupt(path, ctx + " is not an integer (" + v.dump() + ")");
}

}  // namespace

// ---- public dtype helpers ---------------------------------------------------------------------------------

size_t safetensors_dtype_size(const std::string& st_dtype) {
  const StDtype* d = find_dtype(st_dtype);
  return d ? d->size : 0;
}

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::b8: return "BOOL";
  }
  return "?";
}

std::optional<DType> default_load_dtype(const std::string& d) {
  if (d == "F32") return DType::f32;
  if (d == "F64") return DType::f64;
  if (d == "BF16") return DType::bf16;
  if (d == "F16") return DType::f16;
  if (d == "I32") return DType::i32;
  if (d == "I64") return DType::i64;
  if (d == "BOOL") return DType::b8;
  if (d == "I8" || d == "U8" || d == "I16" || d == "U16") return DType::i32;
  if (d == "U32" || d == "U64") return DType::i64;
  return std::nullopt;
}

Tensor convert_dtype(const Tensor& x, DType dtype, const std::string& what) {
  AM_CHECK(x.defined(), what, ": undefined tensor");
  if (x.dtype() == dtype && x.is_contiguous()) return x;
  std::vector<uint8_t> tmp;
  const uint8_t* src;
  if (x.is_contiguous()) {
    src = static_cast<const uint8_t*>(x.raw_data());
  } else {
    tmp.resize(x.nbytes());
    gather_bytes(x, tmp.data());
    src = tmp.data();
  }
  Tensor out = Tensor::empty(x.shape(), dtype);
  convert_raw(safetensors_dtype_name(x.dtype()), src, dtype, static_cast<uint8_t*>(out.raw_data()), x.numel(), what);
  return out;
}

// ---- reader -----------------------------------------------------------------------------------------------

namespace {

// "tensor 'w' in f.safetensors has 3 non-finite value(s) (first: element 7 = nan)"
std::string non_finite_message(const NonFinite& bad, const std::string& name, const std::string& file) {
  const std::string value = std::isnan(bad.first_value) ? "nan" : bad.first_value > 0 ? "inf" : "-inf";
  return "tensor '" + name + "' in " + file + " has " + std::to_string(bad.count) +
         " non-finite value(s) (first: element " + std::to_string(bad.first) + " = " + value + ")";
}

// The 8-byte little-endian header length N at the start of the file, checked against the limit and the file.
uint64_t header_length(const std::string& path, const uint8_t* base, uint64_t file_size) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
  if (n > kMaxHeaderBytes)
    corrupt(path, "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
                      " bytes");
  if (n > file_size - 8)
    corrupt(path, "header length " + std::to_string(n) + " goes past the end of the file (" +
                      std::to_string(file_size) + " bytes)");
  return n;
}

// The header JSON: an object, with no top-level key twice (which a JSON object would silently merge).
json parse_header(const std::string& path, const char* begin, uint64_t n) {
  std::string duplicate;
  std::set<std::string> seen;
  json header;
  try {
    header = json::parse(begin, begin + n, [&](int depth, json::parse_event_t ev, json& parsed) {
      if (ev == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
        std::string k = parsed.get<std::string>();
        if (!seen.insert(k).second) duplicate = k;
      }
      return true;
    });
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
    std::string what = e.what();        // "[json.exception.parse_error.101] parse error at ..."
    size_t at = what.find("] ");
    corrupt(path, "header is not valid JSON (" + (at == std::string::npos ? what : what.substr(at + 2)) + ")");
  }
  if (!header.is_object()) corrupt(path, "header is a JSON " + std::string(header.type_name()) + ", not an object");
  if (!duplicate.empty()) corrupt(path, "tensor '" + duplicate + "' appears twice in the header");
  return header;
}

// "__metadata__": {string: string}.
Metadata parse_metadata(const std::string& path, const json& v) {
  if (!v.is_object()) corrupt(path, "__metadata__ is a JSON " + std::string(v.type_name()) + ", not an object");
  Metadata metadata;
  for (auto& [k, s] : v.items()) {
    if (!s.is_string())
      corrupt(path, "__metadata__ value of '" + k + "' is a JSON " + s.type_name() + ", not a string");
    metadata[k] = s.get<std::string>();
  }
  return metadata;
}

// One tensor's entry: a known dtype, a shape whose byte size fits in 64 bits, and data_offsets inside the data
// buffer spanning exactly that size. `t` names the tensor in errors.
TensorInfo parse_entry(const std::string& path, const std::string& t, const json& v, uint64_t data_size) {
  if (!v.is_object()) corrupt(path, t + ": entry is a JSON " + std::string(v.type_name()) + ", not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!v.contains(field)) corrupt(path, t + ": entry has no \"" + field + "\"");
  TensorInfo info;
  if (!v["dtype"].is_string()) corrupt(path, t + ": dtype is not a string");
  info.dtype = v["dtype"].get<std::string>();
  const StDtype* dt = find_dtype(info.dtype);
  if (!dt) corrupt(path, t + ": unknown dtype '" + info.dtype + "' (known: " + known_dtypes() + ")");
  if (!v["shape"].is_array()) corrupt(path, t + ": shape is not an array");
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : v["shape"]) {
    uint64_t dim = get_u64(d, path, t + ": shape dimension");
    if (dim > uint64_t(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(numel, dim, &numel))
      overflow = true;
    info.shape.push_back(int64_t(dim));
  }
  uint64_t nbytes = 0;
  if (overflow || __builtin_mul_overflow(numel, uint64_t(dt->size), &nbytes) ||
      numel > uint64_t(std::numeric_limits<int64_t>::max()))
    corrupt(path, t + ": shape " + shape_str(info.shape) + " is too large (its size overflows)");
  const json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2) corrupt(path, t + ": data_offsets is not a [begin, end] pair");
  info.data_begin = get_u64(off[0], path, t + ": data_offsets begin");
  info.data_end = get_u64(off[1], path, t + ": data_offsets end");
  std::string offs = "[" + std::to_string(info.data_begin) + ", " + std::to_string(info.data_end) + "]";
  if (info.data_begin > info.data_end) corrupt(path, t + ": data_offsets " + offs + " have begin > end");
  if (info.data_end > data_size)
    corrupt(path, t + ": data_offsets " + offs + " end past the data buffer (" + std::to_string(data_size) + " bytes)");
  if (info.data_end - info.data_begin != nbytes)
    corrupt(path, t + ": data_offsets " + offs + " span " + std::to_string(info.data_end - info.data_begin) +
                      " bytes but shape " + shape_str(info.shape) + " of " + info.dtype + " needs " +
                      std::to_string(nbytes));
  return info;
}

using Entries = std::vector<std::pair<std::string, TensorInfo>>;

// Sorts the entries into file order and checks that they tile the data buffer exactly: no overlap, no hole,
// nothing left over.
void sort_and_check_tiling(const std::string& path, Entries& entries, uint64_t data_size) {
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second.data_begin, a.second.data_end, a.first) <
           std::tie(b.second.data_begin, b.second.data_end, b.first);
  });
  uint64_t covered = 0;
  const std::string* prev = nullptr;
  for (const auto& [name, info] : entries) {
    if (info.data_begin < covered)
      corrupt(path, "tensor '" + name + "': data_offsets [" + std::to_string(info.data_begin) + ", " +
                        std::to_string(info.data_end) + "] overlap tensor '" + *prev + "' (which ends at " +
                        std::to_string(covered) + ")");
    if (info.data_begin > covered)
      corrupt(path, "bytes [" + std::to_string(covered) + ", " + std::to_string(info.data_begin) +
                        ") of the data buffer belong to no tensor (a hole before tensor '" + name + "')");
    covered = info.data_end;
    prev = &name;
  }
  if (covered != data_size)
    corrupt(path, "the data buffer has " + std::to_string(data_size) + " bytes but the tensors cover only " +
                      std::to_string(covered) + " (trailing bytes belong to no tensor)");
}

}  // namespace

struct SafetensorsReader::Mapping {
  void* addr = nullptr;
  size_t len = 0;
  ~Mapping() {
    if (addr) ::munmap(addr, len);
  }

  // The whole of a regular file of at least 8 bytes (the header length), mapped privately and copy-on-write:
  // tensor views may be written in place without ever touching the file.
  static std::shared_ptr<Mapping> open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw Error("cannot open safetensors file " + path + ": " + std::strerror(errno), path,
                  "check the path and its permissions");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error("cannot read safetensors file " + path + ": not a regular file", path, "pass a .safetensors file");
    }
    const uint64_t file_size = uint64_t(st.st_size);
    if (file_size < 8) {
      ::close(fd);
      corrupt(path, "the file is " + std::to_string(file_size) + " bytes long, shorter than the 8-byte header length");
    }
    auto map = std::make_shared<Mapping>();
    void* addr = ::mmap(nullptr, size_t(file_size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    int err = errno;
    ::close(fd);
    if (addr == MAP_FAILED) throw Error("cannot map safetensors file " + path + ": " + std::strerror(err), path);
    map->addr = addr;
    map->len = size_t(file_size);
    return map;
  }
};

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  map_ = Mapping::open(path);
  file_size_ = map_->len;
  const uint8_t* base = static_cast<const uint8_t*>(map_->addr);
  header_size_ = header_length(path, base, file_size_);
  data_ = base + 8 + header_size_;
  const uint64_t data_size = file_size_ - 8 - header_size_;
  const json header = parse_header(path, reinterpret_cast<const char*>(base + 8), header_size_);
  Entries entries;
  for (auto& [name, v] : header.items()) {
    if (name != "__metadata__") {
      entries.emplace_back(name, parse_entry(path, "tensor '" + name + "'", v, data_size));
    } else if (!v.is_null()) {
      metadata_ = parse_metadata(path, v);
      has_metadata_ = true;
    }
  }
  sort_and_check_tiling(path, entries, data_size);
  for (auto& [name, info] : entries) {
    names_.push_back(name);
    infos_.emplace(name, std::move(info));
  }
}

const TensorInfo& SafetensorsReader::info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end())
    throw Error("no tensor '" + name + "' in " + path_ + " (it has " + std::to_string(names_.size()) + " tensors)",
                path_, "check the tensor name against the checkpoint");
  return it->second;
}

const uint8_t* SafetensorsReader::raw_bytes(const std::string& name) const { return data_ + info(name).data_begin; }

Tensor SafetensorsReader::get(const std::string& name) const {
  const TensorInfo& ti = info(name);
  std::optional<DType> dt = default_load_dtype(ti.dtype);
  if (!dt)
    throw Error("tensor '" + name + "' in " + path_ + " has dtype " + ti.dtype + ", which is not supported yet", path_,
                "convert the checkpoint to BF16, F16 or F32 first (e.g. with torch) and load that");
  return get(name, *dt);
}

Tensor SafetensorsReader::get(const std::string& name, DType dtype) const {
  const TensorInfo& ti = info(name);
  const uint8_t* p = data_ + ti.data_begin;
  if (ti.dtype == safetensors_dtype_name(dtype) && reinterpret_cast<uintptr_t>(p) % dtype_size(dtype) == 0) {
    auto keep = map_;
    auto storage = Storage::wrap(const_cast<uint8_t*>(p), size_t(ti.nbytes()), [keep] {});
    return wrap_view(std::move(storage), ti.shape, dtype);
  }
  Tensor out = Tensor::empty(ti.shape, dtype);
  try {
    convert_raw(ti.dtype, p, dtype, static_cast<uint8_t*>(out.raw_data()), ti.numel(), "tensor '" + name + "'");
  } catch (const Error& e) {
    throw Error(e.what_part() + " in " + path_, path_, e.hint());
  }
  return out;
}

Tensor SafetensorsReader::get_weight(const std::string& name, DType dtype) const {
  const TensorInfo& ti = info(name);
  AM_CHECK(is_floating(dtype), "get_weight: ", dtype_name(dtype), " is not a floating dtype");
  if (!st_is_float(ti.dtype))
    throw Error("tensor '" + name + "' in " + path_ + " is stored as " + ti.dtype +
                    " (an integer type), but it is loaded as a floating-point weight",
                path_ + ": " + name,
                "the file does not hold float weights for it (a quantized or damaged checkpoint?); export the model "
                "with F32, BF16 or F16 weights");
  Tensor t = get(name, dtype);
  const NonFinite bad = find_non_finite(t);
  if (bad.count == 0) return t;
  // Tell a value that is NaN / Inf in the file from one that overflowed in the conversion to dtype.
  const bool converted = ti.dtype != safetensors_dtype_name(dtype);
  const bool in_file = !converted || find_non_finite(get(name)).count > 0;
  const std::string what = non_finite_message(bad, name, path_);
  if (in_file)
    throw Error(what, path_ + ": " + name,
                "the weights are damaged (a diverged training run or a bad conversion): use an earlier checkpoint or "
                "export the model again");
  throw Error(what + " after converting " + ti.dtype + " to " + dtype_name(dtype) + ": values beyond its range",
              path_ + ": " + name, "load the model in a wider dtype (e.g. --dtype f32)");
}

// ---- finiteness -------------------------------------------------------------------------------------------

namespace {

// Elements of p[0, n) whose exponent bits are all ones (NaN, ±Inf): a branch-free reduction over the raw bits.
// A plain function of its own (not inlined into the lambda below, where GCC turns the loads into gathers) runs at
// memory bandwidth.
template <class Bits>
int64_t count_exponent_all_ones(const Bits* p, int64_t n, Bits exponent_mask) {
  int64_t count = 0;
#pragma omp simd reduction(+ : count)
  for (int64_t i = 0; i < n; ++i) count += (p[i] & exponent_mask) == exponent_mask;
  return count;
}

template <class Bits>
NonFinite scan_exponent(const void* data, int64_t n, Bits exponent_mask) {
  const Bits* p = static_cast<const Bits*>(data);
  std::atomic<int64_t> total{0}, first{n};
  // ~1 ms of serial work per chunk before threads join in: a model has hundreds of tensors, and a parallel region per
  // small one costs more (threads waking on a busy machine) than the scan.
  parallel_for(n, int64_t(1) << 22, [&](int64_t b, int64_t e) {
    const int64_t count = count_exponent_all_ones(p + b, e - b, exponent_mask);
    if (count == 0) return;
    total += count;
    int64_t i = b;
    while ((p[i] & exponent_mask) != exponent_mask) ++i;
    for (int64_t seen = first.load(); i < seen && !first.compare_exchange_weak(seen, i);) {
    }
  });
  NonFinite out;
  out.count = total.load();
  if (out.count > 0) out.first = first.load();
  return out;
}

}  // namespace

NonFinite find_non_finite(const Tensor& x0) {
  if (!is_floating(x0.dtype()) || x0.numel() == 0) return {};
  const Tensor x = convert_dtype(x0, x0.dtype());  // contiguous
  const void* p = x.raw_data();
  const int64_t n = x.numel();
  NonFinite out;
  switch (x.dtype()) {
    case DType::f32: out = scan_exponent<uint32_t>(p, n, 0x7f800000u); break;
    case DType::f64: out = scan_exponent<uint64_t>(p, n, 0x7ff0000000000000ull); break;
    case DType::bf16: out = scan_exponent<uint16_t>(p, n, uint16_t(0x7f80)); break;
    case DType::f16: out = scan_exponent<uint16_t>(p, n, uint16_t(0x7c00)); break;
    default: return {};
  }
  if (out.count > 0) {
    Tensor element = convert_dtype(x.as_strided({1}, {1}, x.offset() + out.first), DType::f64);
    out.first_value = element.data<double>()[0];
  }
  return out;
}

void check_finite(const Tensor& x, const std::string& name, const std::string& file, const std::string& hint) {
  const NonFinite bad = find_non_finite(x);
  if (bad.count == 0) return;
  throw Error(non_finite_message(bad, name, file), file + ": " + name, hint);
}

// ---- writer -----------------------------------------------------------------------------------------------

namespace {

struct Prepared {
  std::string header;  // 8-byte length + padded JSON
  std::vector<const std::pair<std::string, Tensor>*> order;
};

std::string json_string(const std::string& s, const std::string& what) {
  try {
    return json(s).dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::type_error&) {
    throw Error(what + " '" + s + "' is not valid UTF-8", "save_safetensors", "use UTF-8 names");
  }
}

Prepared prepare(const NamedTensors& tensors, const std::optional<Metadata>& metadata) {
  Prepared p;
  std::set<std::string> names;
  for (const auto& nt : tensors) {
    AM_CHECK(nt.second.defined(), "save_safetensors: tensor '", nt.first, "' is undefined");
    AM_CHECK(nt.first != "__metadata__", "save_safetensors: '__metadata__' cannot be a tensor name");
    AM_CHECK(nt.second.device().is_cpu(), "save_safetensors: tensor '", nt.first, "' is not on the CPU");
    AM_CHECK(names.insert(nt.first).second, "save_safetensors: tensor name '", nt.first, "' appears twice");
    p.order.push_back(&nt);
  }
  auto rank = [](DType d) { return find_dtype(safetensors_dtype_name(d))->rank; };
  std::stable_sort(p.order.begin(), p.order.end(), [&](const auto* a, const auto* b) {
    int ra = rank(a->second.dtype()), rb = rank(b->second.dtype());
    if (ra != rb) return ra > rb;
    return a->first < b->first;
  });
  std::string h = "{";
  if (metadata) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : *metadata) {
      h += (first ? "" : ",") + json_string(k, "metadata key") + ":" + json_string(v, "metadata value");
      first = false;
    }
    h += "}";
  }
  uint64_t offset = 0;
  for (const auto* nt : p.order) {
    const Tensor& t = nt->second;
    if (h.size() > 1) h += ",";
    h +=
        json_string(nt->first, "tensor name") + ":{\"dtype\":\"" + safetensors_dtype_name(t.dtype()) + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape().size(); ++i) h += (i ? "," : "") + std::to_string(t.shape()[i]);
    uint64_t end = offset + t.nbytes();
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(end) + "]}";
    offset = end;
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  uint64_t n = h.size();
  p.header.resize(8);
  for (int i = 0; i < 8; ++i) p.header[size_t(i)] = char((n >> (8 * i)) & 0xff);
  p.header += h;
  return p;
}

void emit(const Prepared& p, const ByteSink& sink) {
  sink(p.header.data(), p.header.size());
  std::vector<uint8_t> tmp;
  for (const auto* nt : p.order) {
    const Tensor& t = nt->second;
    if (t.numel() == 0) continue;
    if (t.is_contiguous()) {
      sink(t.raw_data(), t.nbytes());
    } else {
      tmp.resize(t.nbytes());
      gather_bytes(t, tmp.data());
      sink(tmp.data(), tmp.size());
    }
  }
}

}  // namespace

std::string serialize_safetensors(const NamedTensors& tensors, const std::optional<Metadata>& metadata) {
  Prepared p = prepare(tensors, metadata);
  std::string out;
  emit(p, [&](const void* d, size_t n) { out.append(static_cast<const char*>(d), n); });
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors, const std::optional<Metadata>& metadata) {
  Prepared p = prepare(tensors, metadata);
  write_file_atomic(path, [&](const ByteSink& sink) { emit(p, sink); });
}

NamedTensors load_safetensors(const std::string& path) {
  SafetensorsReader r(path);
  NamedTensors out;
  for (const std::string& n : r.names()) out.emplace_back(n, r.get(n));
  return out;
}

// ---- sharded checkpoints ----------------------------------------------------------------------------------

namespace {

// "model.safetensors" -> ("model", ".safetensors"): shard k of n is stem + "-0000k-of-0000n" + ext.
std::pair<std::string, std::string> split_weights_name(const std::string& weights_name) {
  const std::string ext = ".safetensors";
  AM_CHECK(
      weights_name.size() > ext.size() && weights_name.compare(weights_name.size() - ext.size(), ext.size(), ext) == 0,
      "weights file name '", weights_name, "' must end in .safetensors");
  return {weights_name.substr(0, weights_name.size() - ext.size()), ext};
}

std::string shard_name(const std::string& stem, const std::string& ext, size_t k, size_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "-%05zu-of-%05zu", k, n);
  return stem + buf + ext;
}

}  // namespace

std::vector<std::string> write_sharded(const std::string& dir, const NamedTensors& tensors, uint64_t max_shard_bytes,
                                       const std::optional<Metadata>& metadata, const std::string& weights_name) {
  auto [stem, ext] = split_weights_name(weights_name);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir))
    throw Error("cannot create checkpoint directory " + dir + (ec ? ": " + ec.message() : std::string()), dir,
                "check the path and its permissions");

  // Greedy split in the given order, as huggingface_hub's split_state_dict_into_shards_factory does: a tensor
  // larger than the limit gets its own shard (appended right away); otherwise the current shard is closed when
  // the tensor would tip it over the limit.
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_size = 0, total_size = 0;
  int64_t total_params = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    AM_CHECK(tensors[i].second.defined(), "write_sharded: tensor '", tensors[i].first, "' is undefined");
    uint64_t size = tensors[i].second.nbytes();
    total_size += size;
    total_params += tensors[i].second.numel();
    if (size > max_shard_bytes) {
      shards.push_back({i});
      continue;
    }
    if (current_size + size > max_shard_bytes) {
      shards.push_back(current);
      current.clear();
      current_size = 0;
    }
    current.push_back(i);
    current_size += size;
  }
  if (!current.empty() || shards.empty()) shards.push_back(current);

  std::vector<std::string> written;
  std::string index_name = weights_name + ".index.json";
  if (shards.size() == 1) {
    save_safetensors((fs::path(dir) / weights_name).string(), tensors, metadata);
    written.push_back(weights_name);
  } else {
    json weight_map = json::object();
    for (size_t k = 0; k < shards.size(); ++k) {
      std::string file = shard_name(stem, ext, k + 1, shards.size());
      NamedTensors part;
      for (size_t i : shards[k]) {
        part.push_back(tensors[i]);
        weight_map[tensors[i].first] = file;
      }
      save_safetensors((fs::path(dir) / file).string(), part, metadata);
      written.push_back(file);
    }
    json index = {{"metadata", {{"total_parameters", total_params}, {"total_size", total_size}}},
                  {"weight_map", weight_map}};
    write_file_atomic((fs::path(dir) / index_name).string(), index.dump(2, ' ', true) + "\n");
    written.push_back(index_name);
  }

  // Remove what an earlier save under the same name left behind, so readers never mix two saves.
  std::regex shard_re(std::regex_replace(stem, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") + R"(-\d{5}-of-\d{5})" +
                      std::regex_replace(ext, std::regex(R"(\.)"), R"(\.)"));
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    bool stale = std::find(written.begin(), written.end(), name) == written.end() &&
                 (std::regex_match(name, shard_re) || name == index_name || name == weights_name);
    if (stale && e.is_regular_file(ec)) fs::remove(e.path(), ec);
  }
  return written;
}

namespace {

// The error for a directory with neither <weights_name> nor its index, listing the .safetensors files it has.
Error no_weights_error(const std::string& dir, const std::string& weights_name) {
  std::error_code ec;
  std::string found;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.size() > 12 && n.substr(n.size() - 12) == ".safetensors") found += (found.empty() ? "" : ", ") + n;
  }
  return Error("no " + weights_name + " or " + weights_name + ".index.json in " + dir +
                   (found.empty() ? " (no .safetensors files there at all)" : " (it has: " + found + ")"),
               dir, "point at a directory saved by save_pretrained / write_sharded");
}

}  // namespace

ShardedReader::ShardedReader(const std::string& dir_or_file, const std::string& weights_name) {
  std::error_code ec;
  if (fs::is_regular_file(dir_or_file, ec)) {
    open_single(dir_or_file);
  } else if (fs::is_directory(dir_or_file, ec)) {
    fs::path dir(dir_or_file);
    fs::path index = dir / (weights_name + ".index.json");
    fs::path single = dir / weights_name;
    if (fs::is_regular_file(index, ec))
      open_index(dir_or_file, index.string());
    else if (fs::is_regular_file(single, ec))
      open_single(single.string());
    else
      throw no_weights_error(dir_or_file, weights_name);
  } else {
    throw Error("checkpoint " + dir_or_file + " does not exist", dir_or_file, "check the path");
  }
}

void ShardedReader::open_single(const std::string& file) {
  shards_.push_back(std::make_shared<SafetensorsReader>(file));
  for (const std::string& n : shards_[0]->names()) {
    where_[n] = 0;
    names_.push_back(n);
  }
}

void ShardedReader::open_index(const std::string& dir, const std::string& index_path) {
  index_path_ = index_path;
  json j = read_json_file(index_path_);
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error("checkpoint index " + index_path_ + " has no \"weight_map\" object", index_path_,
                "the index is damaged: save the checkpoint again");
  std::map<std::string, size_t> shard_of_file;
  for (auto& [name, file_v] : j["weight_map"].items()) {
    if (!file_v.is_string())
      throw Error("checkpoint index " + index_path_ + " maps tensor '" + name + "' to a non-string", index_path_,
                  "the index is damaged: save the checkpoint again");
    std::string file = file_v.get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos || file == "." ||
        file == "..")
      throw Error("checkpoint index " + index_path_ + " names shard '" + file + "' for tensor '" + name +
                      "', which is not a plain file name",
                  index_path_, "shards must sit next to the index");
    auto it = shard_of_file.find(file);
    if (it == shard_of_file.end()) {
      fs::path shard = fs::path(dir) / file;
      std::error_code ec;
      if (!fs::is_regular_file(shard, ec))
        throw Error("shard " + shard.string() + " is missing: checkpoint index " + index_path_ + " puts tensor '" +
                        name + "' in it",
                    index_path_, "the checkpoint is incomplete: download or save it again");
      shards_.push_back(std::make_shared<SafetensorsReader>(shard.string()));
      it = shard_of_file.emplace(file, shards_.size() - 1).first;
    }
    if (!shards_[it->second]->contains(name))
      throw Error("checkpoint index " + index_path_ + " puts tensor '" + name + "' in shard " + file +
                      ", but that shard has no such tensor",
                  index_path_, "the index and the shards are from different saves: save the checkpoint again");
    where_[name] = it->second;
    names_.push_back(name);
  }
}

const SafetensorsReader& ShardedReader::reader_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    std::string where = sharded() ? index_path_ : shards_[0]->path();
    throw Error("no tensor '" + name + "' in checkpoint " + where, where, "check the tensor name");
  }
  return *shards_[it->second];
}

const TensorInfo& ShardedReader::info(const std::string& name) const { return reader_of(name).info(name); }
Tensor ShardedReader::get(const std::string& name) const { return reader_of(name).get(name); }
Tensor ShardedReader::get(const std::string& name, DType dtype) const { return reader_of(name).get(name, dtype); }
Tensor ShardedReader::get_weight(const std::string& name, DType dtype) const {
  return reader_of(name).get_weight(name, dtype);
}
const std::string& ShardedReader::file_of(const std::string& name) const { return reader_of(name).path(); }

NamedTensors ShardedReader::load_all() const {
  NamedTensors out;
  for (const std::string& n : names_) out.emplace_back(n, get(n));
  return out;
}

}  // namespace automodel::io

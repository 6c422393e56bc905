// io/safetensors: round trips, zero-copy views, conversions, the exact bytes the reference library writes, every
// header violation the reader must reject, and sharded checkpoints.
#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/rng.h"
#include "temp_dir.h"

using namespace automodel;
using namespace automodel::io;
using automodel::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A file with the given header text (unpadded) and `data_bytes` bytes of data.
std::string raw_file(const std::string& header, size_t data_bytes) {
  std::string data(data_bytes, '\0');
  for (size_t i = 0; i < data_bytes; ++i) data[i] = char(i * 7 + 1);
  return le64(header.size()) + header + data;
}

std::string bytes_of(const Tensor& t) { return std::string(static_cast<const char*>(t.raw_data()), t.nbytes()); }

Tensor random_tensor(const Shape& shape, DType dt, uint64_t seed) {
  int64_t n = shape_numel(shape);
  std::vector<double> v(static_cast<size_t>(n));
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    double u = double(s >> 11) / double(1ull << 53);
    if (dt == DType::b8)
      x = u < 0.5 ? 0 : 1;
    else if (dt == DType::i32 || dt == DType::i64)
      x = std::floor(u * 2000.0) - 1000.0;
    else
      x = (u - 0.5) * 8.0;
  }
  return Tensor::from_values(v, shape, dt);
}

// The error thrown by opening `path`, or "" when none.
std::string open_error(const std::string& path) {
  try {
    SafetensorsReader r(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
  TempDir dir;
  NamedTensors ts;
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::b8}) {
    for (Shape shape : {Shape{17}, Shape{3, 5}, Shape{2, 3, 7}, Shape{}, Shape{0, 4}}) {
      std::string name = std::string(dtype_name(dt)) + "." + shape_str(shape);
      ts.emplace_back(name, random_tensor(shape, dt, seed++));
    }
  }
  Metadata meta{{"format", "pt"}, {"note", "héllo \"quoted\"\n"}};
  save_safetensors(dir / "m.safetensors", ts, meta);
  EXPECT_FALSE(fs::exists(dir / "m.safetensors.tmp"));
  SafetensorsReader r(dir / "m.safetensors");
  EXPECT_EQ(r.names().size(), ts.size());
  EXPECT_TRUE(r.has_metadata());
  EXPECT_EQ(r.metadata(), meta);
  EXPECT_EQ(r.header_size() % 8, 0u);
  for (const auto& [name, t] : ts) {
    ASSERT_TRUE(r.contains(name)) << name;
    Tensor got = r.get(name);
    EXPECT_EQ(got.dtype(), t.dtype()) << name;
    EXPECT_EQ(got.shape(), t.shape()) << name;
    EXPECT_EQ(bytes_of(got), bytes_of(t)) << name;
    EXPECT_EQ(r.info(name).dtype, safetensors_dtype_name(t.dtype()));
  }
  NamedTensors all = load_safetensors(dir / "m.safetensors");
  EXPECT_EQ(all.size(), ts.size());
}

TEST(Safetensors, GetIsZeroCopyAndOutlivesTheReader) {
  TempDir dir;
  Tensor w = random_tensor({33, 7}, DType::f32, 3);
  Tensor b = random_tensor({5}, DType::bf16, 4);
  save_safetensors(dir / "z.safetensors", {{"w", w}, {"b", b}});
  Tensor vw, vb;
  {
    SafetensorsReader r(dir / "z.safetensors");
    vw = r.get("w");
    vb = r.get("b");
    EXPECT_EQ(vw.raw_data(), static_cast<const void*>(r.raw_bytes("w")));
    EXPECT_EQ(vb.raw_data(), static_cast<const void*>(r.raw_bytes("b")));
    // Same dtype asked explicitly: still a view.
    EXPECT_EQ(r.get("w", DType::f32).raw_data(), static_cast<const void*>(r.raw_bytes("w")));
    // A conversion is a copy.
    EXPECT_NE(r.get("w", DType::f64).raw_data(), static_cast<const void*>(r.raw_bytes("w")));
  }
  // The mapping stays alive through the views.
  EXPECT_EQ(bytes_of(vw), bytes_of(w));
  EXPECT_EQ(bytes_of(vb), bytes_of(b));
  // Views are copy-on-write: writing them never reaches the file.
  std::string before = read_all(dir / "z.safetensors");
  vw.data<float>()[0] = 12345.0f;
  EXPECT_EQ(vw.data<float>()[0], 12345.0f);
  EXPECT_EQ(read_all(dir / "z.safetensors"), before);
}

TEST(Safetensors, MisalignedDataIsCopied) {
  TempDir dir;
  // "a" is one byte, so "b" (F32) starts at an odd address.
  std::string h = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],)"
                  R"("data_offsets":[1,9]}})";
  std::string header = h + std::string((8 - h.size() % 8) % 8, ' ');
  float vals[2] = {1.5f, -2.25f};
  std::string data(1, char(200));
  data.append(reinterpret_cast<const char*>(vals), 8);
  write_all(dir / "m.safetensors", le64(header.size()) + header + data);
  SafetensorsReader r(dir / "m.safetensors");
  Tensor b = r.get("b");
  EXPECT_NE(b.raw_data(), static_cast<const void*>(r.raw_bytes("b")));
  EXPECT_EQ(b.to_doubles(), (std::vector<double>{1.5, -2.25}));
  Tensor a = r.get("a");
  EXPECT_EQ(a.dtype(), DType::i32);
  EXPECT_EQ(a.to_doubles(), std::vector<double>{200});
}

TEST(Safetensors, ConvertsOnLoad) {
  TempDir dir;
  Tensor f = random_tensor({9, 3}, DType::f32, 5);
  Tensor bf = random_tensor({11}, DType::bf16, 6);
  Tensor i = random_tensor({4}, DType::i64, 7);
  save_safetensors(dir / "c.safetensors", {{"f", f}, {"bf", bf}, {"i", i}});
  SafetensorsReader r(dir / "c.safetensors");
  Tensor f_bf = r.get("f", DType::bf16);
  EXPECT_EQ(f_bf.dtype(), DType::bf16);
  for (int64_t k = 0; k < f.numel(); ++k) EXPECT_EQ(f_bf.data<bf16>()[k].bits, float_to_bf16(f.data<float>()[k]).bits);
  Tensor bf_f = r.get("bf", DType::f32);
  for (int64_t k = 0; k < bf.numel(); ++k) EXPECT_EQ(bf_f.data<float>()[k], bf16_to_float(bf.data<bf16>()[k]));
  Tensor bf_d = r.get("bf", DType::f64);
  EXPECT_EQ(bf_d.to_doubles(), bf.to_doubles());
  Tensor f_h = r.get("f", DType::f16);
  for (int64_t k = 0; k < f.numel(); ++k) EXPECT_EQ(f_h.data<f16>()[k].bits, float_to_f16(f.data<float>()[k]).bits);
  EXPECT_EQ(r.get("i", DType::f32).to_doubles(), i.to_doubles());
  EXPECT_EQ(r.get("i", DType::i32).to_doubles(), i.to_doubles());
  try {
    r.get("f", DType::i64);
    FAIL() << "float -> int must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot convert F32 to i64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.get("nope"), Error);
  // convert_dtype on a strided view.
  Tensor t = f.as_strided({3, 9}, {1, 3}, 0);
  Tensor td = convert_dtype(t, DType::f64);
  EXPECT_TRUE(td.is_contiguous());
  EXPECT_EQ(td.to_doubles(), t.to_doubles());
}

TEST(Safetensors, IntegerDtypesWidenAndFp8IsAnErrorNamingIt) {
  TempDir dir;
  std::string h =
      R"({"u64":{"dtype":"U64","shape":[1],"data_offsets":[0,8]},"i16":{"dtype":"I16","shape":[2],"data_offsets":[8,12]},)"
      R"("i8":{"dtype":"I8","shape":[2],"data_offsets":[12,14]},"f8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[14,16]}})";
  std::string data;
  uint64_t big = ~0ull;
  data.append(reinterpret_cast<const char*>(&big), 8);
  int16_t s[2] = {-300, 7};
  data.append(reinterpret_cast<const char*>(s), 4);
  data += char(-5);
  data += char(100);
  data += "\x01\x02";
  write_all(dir / "i.safetensors", le64(h.size()) + h + data);
  SafetensorsReader r(dir / "i.safetensors");
  EXPECT_EQ(r.get("i16").dtype(), DType::i32);
  EXPECT_EQ(r.get("i16").to_doubles(), (std::vector<double>{-300, 7}));
  EXPECT_EQ(r.get("i8").to_doubles(), (std::vector<double>{-5, 100}));
  EXPECT_EQ(r.info("f8").dtype, "F8_E4M3");
  try {
    r.get("f8");
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("F8_E4M3"), std::string::npos) << m;
    EXPECT_NE(m.find("'f8'"), std::string::npos) << m;
  }
  try {
    r.get("u64");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit in i64"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, WritesTheReferenceBytes) {
  // safetensors.torch.save(...) of {"x": torch.zeros(1)}: no metadata, header padded with two spaces.
  std::string expected =
      le64(56) + R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  )" + std::string(4, '\0');
  EXPECT_EQ(serialize_safetensors({{"x", Tensor::zeros({1})}}, std::nullopt), expected);
  // metadata={} gives an empty "__metadata__" object.
  std::string with_empty = serialize_safetensors({{"x", Tensor::zeros({1})}}, Metadata{});
  EXPECT_EQ(with_empty.substr(8, 20), R"({"__metadata__":{},")");
  // Sorted by dtype alignment (descending), then by name; metadata first.
  NamedTensors ts = {{"b", Tensor::zeros({3}, DType::bf16)}, {"a", Tensor::zeros({2})},
                     {"c", Tensor::zeros({1}, DType::i64)},  {"d", Tensor::zeros({2}, DType::b8)},
                     {"e", Tensor::zeros({2}, DType::f16)},  {"f", Tensor::zeros({1}, DType::f64)},
                     {"g", Tensor::zeros({1}, DType::i32)},  {"aa", Tensor::zeros({1})}};
  std::string s = serialize_safetensors(ts, Metadata{{"format", "pt"}});
  uint64_t n = 0;
  std::memcpy(&n, s.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header = s.substr(8, n);
  std::vector<std::string> order;
  auto j = nlohmann::ordered_json::parse(header);
  for (auto& [k, v] : j.items()) order.push_back(k);
  EXPECT_EQ(order, (std::vector<std::string>{"__metadata__", "c", "f", "a", "aa", "g", "b", "e", "d"}));
  EXPECT_EQ(header.find(R"({"__metadata__":{"format":"pt"},"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"),
            0u);
  EXPECT_EQ(s.size(), 8 + n + 8 + 8 + 8 + 4 + 4 + 6 + 4 + 2);
}

TEST(Safetensors, NonContiguousTensorsAreWrittenInRowMajorOrder) {
  TempDir dir;
  Tensor base = random_tensor({4, 6}, DType::f32, 9);
  Tensor t = base.as_strided({6, 4}, {1, 6}, 0);  // transpose view
  save_safetensors(dir / "t.safetensors", {{"t", t}});
  SafetensorsReader r(dir / "t.safetensors");
  EXPECT_EQ(r.get("t").to_doubles(), t.to_doubles());
  EXPECT_EQ(r.info("t").shape, (Shape{6, 4}));
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  EXPECT_THROW(save_safetensors(dir / "a.safetensors", {{"x", Tensor::zeros({1})}, {"x", Tensor::zeros({2})}}), Error);
  EXPECT_THROW(save_safetensors(dir / "a.safetensors", {{"__metadata__", Tensor::zeros({1})}}), Error);
  EXPECT_THROW(save_safetensors(dir / "a.safetensors", {{"x", Tensor()}}), Error);
  EXPECT_THROW(save_safetensors(dir / "no/such/dir/a.safetensors", {{"x", Tensor::zeros({1})}}), Error);
  EXPECT_FALSE(fs::exists(dir / "a.safetensors"));
}

TEST(Safetensors, OverwriteKeepsOldMappingsValid) {
  TempDir dir;
  Tensor a = Tensor::full({4}, 1.0), b = Tensor::full({4}, 2.0);
  save_safetensors(dir / "m.safetensors", {{"x", a}});
  SafetensorsReader old(dir / "m.safetensors");
  Tensor v = old.get("x");
  save_safetensors(dir / "m.safetensors", {{"x", b}});
  EXPECT_EQ(v.to_doubles(), a.to_doubles());  // the old file's inode is still mapped
  EXPECT_EQ(SafetensorsReader(dir / "m.safetensors").get("x").to_doubles(), b.to_doubles());
}

// ---- header violations ----------------------------------------------------------------------------------

struct BadCase {
  const char* label;
  std::string bytes;
  std::vector<std::string> expect;  // substrings of the message
};

TEST(Safetensors, EveryHeaderViolationIsANamedError) {
  TempDir dir;
  const std::string ok_a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::vector<BadCase> cases = {
      {"truncated", std::string("\x10\x00\x00", 3), {"3 bytes long", "shorter than the 8-byte header length"}},
      {"empty", "", {"0 bytes long"}},
      {"header_past_end", le64(1000) + "{}", {"header length 1000 goes past the end of the file (10 bytes)"}},
      {"header_too_large", le64(200'000'000) + "{}", {"exceeds the limit of 100000000 bytes"}},
      {"bad_json", raw_file(R"({"a":{"dtype":"F32",)", 0), {"header is not valid JSON"}},
      {"number_beyond_double",
       raw_file(R"({"a":{"dtype":"F32","shape":[1e999],"data_offsets":[0,4]}})", 4),
       {"header is not valid JSON", "number overflow"}},
      {"not_object", raw_file("[1,2]", 0), {"header is a JSON array, not an object"}},
      {"entry_not_object", raw_file(R"({"a":3})", 0), {"tensor 'a'", "not an object"}},
      {"missing_dtype", raw_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8), {"tensor 'a'", "no \"dtype\""}},
      {"missing_offsets", raw_file(R"({"a":{"dtype":"F32","shape":[2]}})", 8), {"tensor 'a'", "no \"data_offsets\""}},
      {"unknown_dtype",
       raw_file(R"({"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "unknown dtype 'F12'", "known: BOOL"}},
      {"negative_dim",
       raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "shape dimension is negative (-2)"}},
      {"float_dim",
       raw_file(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "shape dimension is not an integer"}},
      {"size_mismatch",
       raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "data_offsets [0, 8] span 8 bytes but shape [3] of F32 needs 12"}},
      {"begin_after_end",
       raw_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8),
       {"tensor 'a'", "begin > end"}},
      {"offsets_one_value",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8),
       {"[begin, end] pair"}},
      {"beyond_data",
       raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
       {"tensor 'a'", "data_offsets [0, 16] end past the data buffer (8 bytes)"}},
      {"overlap",
       raw_file("{" + ok_a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       {"tensor 'b'", "overlap tensor 'a'"}},
      {"hole",
       raw_file("{" + ok_a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", 16),
       {"bytes [8, 12) of the data buffer belong to no tensor", "hole before tensor 'b'"}},
      {"hole_at_start",
       raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
       {"bytes [0, 4)", "hole before tensor 'a'"}},
      {"trailing", raw_file("{" + ok_a + "}", 12), {"data buffer has 12 bytes but the tensors cover only 8"}},
      {"duplicate",
       raw_file("{" + ok_a + "," + R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16),
       {"tensor 'a' appears twice"}},
      {"metadata_not_strings",
       raw_file(R"({"__metadata__":{"k":1},)" + ok_a + "}", 8),
       {"__metadata__ value of 'k' is a JSON number, not a string"}},
      {"overflow",
       raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "too large"}},
      {"metadata_not_object", raw_file(R"({"__metadata__":[],)" + ok_a + "}", 8), {"__metadata__ is a JSON array"}},
      {"dtype_not_string",
       raw_file(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
       {"tensor 'a': dtype is not a string"}},
      {"shape_not_array",
       raw_file(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
       {"tensor 'a': shape is not an array"}},
      {"negative_offset",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-1,8]}})", 8),
       {"tensor 'a': data_offsets begin is negative (-1)"}},
  };
  for (const BadCase& c : cases) {
    std::string path = dir / (std::string(c.label) + ".safetensors");
    write_all(path, c.bytes);
    std::string msg = open_error(path);
    ASSERT_FALSE(msg.empty()) << c.label << ": no error";
    EXPECT_NE(msg.find(path), std::string::npos) << c.label << ": message does not name the file: " << msg;
    for (const std::string& e : c.expect) EXPECT_NE(msg.find(e), std::string::npos) << c.label << ": " << msg;
  }
  EXPECT_NE(open_error(dir / "missing.safetensors").find("cannot open"), std::string::npos);
  EXPECT_NE(open_error(dir.str()).find("not a regular file"), std::string::npos);
  // A valid minimal file is accepted: zero tensors, zero data.
  write_all(dir / "empty_ok.safetensors", le64(8) + "{}      ");
  EXPECT_EQ(open_error(dir / "empty_ok.safetensors"), "");
  // "__metadata__": null is no metadata.
  write_all(dir / "null_metadata.safetensors", raw_file(R"({"__metadata__":null,)" + ok_a + "}", 8));
  EXPECT_EQ(open_error(dir / "null_metadata.safetensors"), "");
  EXPECT_FALSE(SafetensorsReader(dir / "null_metadata.safetensors").has_metadata());
}

// ---- sharded checkpoints --------------------------------------------------------------------------------

namespace {
NamedTensors model_tensors() {
  NamedTensors ts;
  uint64_t seed = 100;
  // 400, 400, 1200 (bigger than the limit below), 160, 8, 64 bytes.
  ts.emplace_back("model.embed_tokens.weight", random_tensor({10, 10}, DType::f32, seed++));
  ts.emplace_back("model.layers.0.mlp.weight", random_tensor({10, 20}, DType::bf16, seed++));
  ts.emplace_back("model.layers.0.big", random_tensor({150}, DType::f64, seed++));
  ts.emplace_back("model.layers.1.w", random_tensor({40}, DType::f32, seed++));
  ts.emplace_back("model.norm.weight", random_tensor({2}, DType::i32, seed++));
  ts.emplace_back("lm_head.weight", random_tensor({16}, DType::f32, seed++));
  return ts;
}
}  // namespace

TEST(Safetensors, ShardedWriteAndReadRoundTrip) {
  TempDir dir;
  NamedTensors ts = model_tensors();
  std::vector<std::string> files = write_sharded(dir.str(), ts, 1000);
  // Greedy as huggingface_hub: "big" is over the limit and becomes a shard of its own at once (so it comes
  // first), then [embed 400 + mlp 400 + layers.1.w 160 + norm 8], then [lm_head 64].
  EXPECT_EQ(files, (std::vector<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                             "model-00003-of-00003.safetensors", "model.safetensors.index.json"}));
  auto index = nlohmann::json::parse(read_all(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 400 + 400 + 1200 + 160 + 8 + 64);
  EXPECT_EQ(index["metadata"]["total_parameters"], 100 + 200 + 150 + 40 + 2 + 16);
  EXPECT_EQ(index["weight_map"]["model.layers.0.big"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.0.mlp.weight"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.norm.weight"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00003-of-00003.safetensors");
  std::string text = read_all(dir / "model.safetensors.index.json");
  EXPECT_EQ(text.substr(0, 16), "{\n  \"metadata\": ");
  EXPECT_EQ(text.back(), '\n');

  ShardedReader r(dir.str());
  EXPECT_TRUE(r.sharded());
  EXPECT_EQ(r.shards().size(), 3u);
  EXPECT_EQ(r.names().size(), ts.size());
  for (const auto& [name, t] : ts) {
    Tensor got = r.get(name);
    EXPECT_EQ(got.dtype(), t.dtype());
    EXPECT_EQ(bytes_of(got), bytes_of(t)) << name;
  }
  EXPECT_EQ(fs::path(r.file_of("model.norm.weight")).filename(), "model-00002-of-00003.safetensors");
  EXPECT_EQ(r.load_all().size(), ts.size());
  SafetensorsReader shard(dir / "model-00003-of-00003.safetensors");
  EXPECT_EQ(shard.metadata(), (Metadata{{"format", "pt"}}));

  // Saving again in one shard removes the stale shards and index.
  files = write_sharded(dir.str(), ts);
  EXPECT_EQ(files, std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "model-00001-of-00003.safetensors"));
  ShardedReader single(dir.str());
  EXPECT_FALSE(single.sharded());
  for (const auto& [name, t] : ts) EXPECT_EQ(bytes_of(single.get(name)), bytes_of(t)) << name;
  // And sharding again removes the single file.
  write_sharded(dir.str(), ts, 500);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  EXPECT_TRUE(ShardedReader(dir.str()).sharded());
  // A single file path works too.
  EXPECT_EQ(ShardedReader(dir / "model-00001-of-00004.safetensors").names().size(), 1u);
}

TEST(Safetensors, ShardedReaderErrors) {
  TempDir dir;
  NamedTensors ts = model_tensors();
  write_sharded(dir.str(), ts, 1000);
  auto msg_of = [](const std::string& p) {
    try {
      ShardedReader r(p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  // A name in the index that is absent from its shard.
  auto index = nlohmann::json::parse(read_all(dir / "model.safetensors.index.json"));
  index["weight_map"]["ghost.weight"] = "model-00002-of-00003.safetensors";
  write_all(dir / "model.safetensors.index.json", index.dump(2));
  std::string m = msg_of(dir.str());
  EXPECT_NE(m.find("puts tensor 'ghost.weight' in shard model-00002-of-00003.safetensors, but that shard has no such"),
            std::string::npos)
      << m;
  // A missing shard.
  index["weight_map"].erase("ghost.weight");
  write_all(dir / "model.safetensors.index.json", index.dump(2));
  fs::remove(dir / "model-00001-of-00003.safetensors");
  m = msg_of(dir.str());
  EXPECT_NE(m.find("model-00001-of-00003.safetensors is missing"), std::string::npos) << m;
  EXPECT_NE(m.find("model.layers.0.big"), std::string::npos) << m;
  // A shard name that escapes the directory.
  index["weight_map"]["model.layers.0.big"] = "../evil.safetensors";
  write_all(dir / "model.safetensors.index.json", index.dump(2));
  EXPECT_NE(msg_of(dir.str()).find("not a plain file name"), std::string::npos);
  // Bad JSON names file and line.
  write_all(dir / "model.safetensors.index.json", "{\n  \"weight_map\": {\n    \"a\": \"b\",,\n  }\n}\n");
  m = msg_of(dir.str());
  EXPECT_NE(m.find("model.safetensors.index.json at line 3"), std::string::npos) << m;
  // No weight_map.
  write_all(dir / "model.safetensors.index.json", "{}");
  EXPECT_NE(msg_of(dir.str()).find("no \"weight_map\""), std::string::npos);
  // No checkpoint at all: says what is there.
  fs::remove(dir / "model.safetensors.index.json");
  m = msg_of(dir.str());
  EXPECT_NE(m.find("no model.safetensors or model.safetensors.index.json"), std::string::npos) << m;
  EXPECT_NE(m.find("model-00002-of-00003.safetensors"), std::string::npos) << m;
  EXPECT_NE(msg_of(dir / "nothing_here").find("does not exist"), std::string::npos);
  // Unknown name.
  save_safetensors(dir / "model.safetensors", {{"x", Tensor::zeros({1})}});
  EXPECT_THROW(ShardedReader(dir.str()).get("y"), Error);
}

TEST(Safetensors, ShardedOtherWeightsNameAndEmptyCheckpoint) {
  TempDir dir;
  NamedTensors ts = model_tensors();
  auto files = write_sharded(dir.str(), ts, 1000, std::nullopt, "adapter_model.safetensors");
  EXPECT_EQ(files.back(), "adapter_model.safetensors.index.json");
  EXPECT_EQ(files.front(), "adapter_model-00001-of-00003.safetensors");
  ShardedReader r(dir.str(), "adapter_model.safetensors");
  EXPECT_EQ(r.names().size(), ts.size());
  EXPECT_FALSE(SafetensorsReader(r.file_of("lm_head.weight")).has_metadata());
  TempDir empty;
  EXPECT_EQ(write_sharded(empty.str(), {}, 10), std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(ShardedReader(empty.str()).names().empty());
  EXPECT_THROW(write_sharded(dir.str(), ts, 10, std::nullopt, "weights.bin"), Error);
}

TEST(Safetensors, LoadsThroughHubCacheSymlinks) {
  // The hub cache keeps files in blobs/ and links them from snapshots/<commit>/.
  TempDir dir;
  fs::path repo = fs::path(dir.str()) / "models--org--m";
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "snapshots" / "abc");
  NamedTensors ts = model_tensors();
  write_sharded((repo / "blobs").string(), ts, 1000);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(repo / "blobs")) files.push_back(e.path());
  EXPECT_EQ(files.size(), 4u);
  for (const fs::path& f : files) {
    fs::path blob = repo / "blobs" / ("sha-" + f.filename().string());
    fs::rename(f, blob);
    fs::create_symlink(fs::path("..") / ".." / "blobs" / blob.filename(), repo / "snapshots" / "abc" / f.filename());
  }
  ShardedReader r((repo / "snapshots" / "abc").string());
  EXPECT_TRUE(r.sharded());
  for (const auto& [name, t] : ts) EXPECT_EQ(bytes_of(r.get(name)), bytes_of(t)) << name;
}

// components/data: record indexing (JSON lines, JSON arrays, {"data": [...]}), compressed files through the dataset
// cache, and datasets that read and tokenize records on demand.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>

#include "components/data/file_formats.h"
#include "components/data/json_index.h"
#include "components/data/llm_datasets.h"
#include "components/data/records.h"
#include "error_of.h"
#include "temp_dir.h"

namespace automodel::data {
namespace {

using automodel::testing::error_of;
using automodel::testing::TempDir;
using ojson = nlohmann::ordered_json;

struct DataFiles : ::testing::Test {
  TempDir dir;
  std::string old_cache;

  void SetUp() override {
    if (const char* c = std::getenv("AUTOMODEL_CACHE_DIR")) old_cache = c;
    ::setenv("AUTOMODEL_CACHE_DIR", (dir / "cache").c_str(), 1);
  }
  void TearDown() override {
    if (old_cache.empty())
      ::unsetenv("AUTOMODEL_CACHE_DIR");
    else
      ::setenv("AUTOMODEL_CACHE_DIR", old_cache.c_str(), 1);
  }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir / name, std::ios::binary) << text;
    return dir / name;
  }
  std::string write_gzip(const std::string& name, const std::string& text) {
    gzFile f = gzopen((dir / name).c_str(), "wb");
    gzwrite(f, text.data(), unsigned(text.size()));
    gzclose(f);
    return dir / name;
  }
  std::string write_zstd(const std::string& name, const std::string& text, size_t keep = SIZE_MAX) {
    std::string out(ZSTD_compressBound(text.size()), '\0');
    out.resize(ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 3));
    return write(name, out.substr(0, std::min(keep, out.size())));
  }
  std::vector<int> keys(const std::string& path) {
    std::vector<int> out;
    for (const ojson& r : load_records(path, "train")) out.push_back(r["k"].get<int>());
    return out;
  }
};

TEST_F(DataFiles, JsonIndexFindsTopLevelElementsThroughStringsAndNesting) {
  // Brackets, braces, quotes and backslashes inside strings; nested arrays; a "data" key that is not first.
  std::string tricky = R"([{"k": 0, "s": "a ] } [ {"}, {"k": 1, "s": "q\"]\\", "n": [[1], {"x": [2]}]},
  {"k": 2}])";
  EXPECT_EQ(keys(write("a.json", tricky)), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(keys(write("b.json", R"({"version": {"data": [9]}, "data": [{"k": 5}, {"k": 6}]})")),
            (std::vector<int>{5, 6}));
  EXPECT_EQ(keys(write("c.json", R"({"k": 7, "data": "not a list"})")), (std::vector<int>{7}));
  EXPECT_EQ(keys(write("d.json", "{\"k\": 1}\n{\"k\": 2}\n")), (std::vector<int>{1, 2}));  // JSON lines in .json
  EXPECT_EQ(keys(write("e.jsonl", "\n{\"k\": 3}\r\n  \n{\"k\": 4}")), (std::vector<int>{3, 4}));

  JsonFileIndex index = index_json_file(write("f.json", "[{\"k\": 0},\n {\"k\": 1}]"));
  ASSERT_EQ(index.spans.size(), 2u);
  EXPECT_EQ(index.spans[1].offset, 12u);
  EXPECT_EQ(index.spans[1].length, 8u);
}

TEST_F(DataFiles, MalformedFilesAreErrorsNamingTheRecord) {
  std::string msg = error_of([&] { index_json_file(write("a.json", "[{\"k\": 0}, 5]")); });
  EXPECT_NE(msg.find("record is a JSON number, not an object"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a.json [record 1]"), std::string::npos) << msg;
  msg = error_of([&] { index_json_file(write("b.json", "[{\"k\": 0}, {\"k\": ")); });
  EXPECT_NE(msg.find("not one complete JSON value"), std::string::npos) << msg;
  msg = error_of([&] { index_json_file(write("c.json", "")); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  msg = error_of([&] { index_json_lines(write("d.jsonl", "{\"k\": 0}\n\n[1]\n")); });
  EXPECT_NE(msg.find("d.jsonl:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("JSON array, not an object"), std::string::npos) << msg;

  // A number beyond double is nlohmann's out_of_range, not a parse_error: still an Error naming the record.
  msg = error_of([&] { load_records(write("f.jsonl", "{\"k\": 1e999}\n"), "train"); });
  EXPECT_NE(msg.find("f.jsonl:1 [record 0]"), std::string::npos) << msg;

  // A record's own syntax is checked when it is read: the index is built, record 1 fails with its line.
  RecordSource source(write("e.jsonl", "{\"k\": 0}\n{\"k\": tru}\n"), "train");
  EXPECT_EQ(source.size(), 2u);
  EXPECT_EQ(source.at(0)["k"], 0);
  msg = error_of([&] { source.at(1); });
  EXPECT_NE(msg.find("invalid JSON record"), std::string::npos) << msg;
  EXPECT_NE(msg.find("e.jsonl:2 [record 1]"), std::string::npos) << msg;
}

TEST_F(DataFiles, CompressedFilesReadThroughTheCacheOnce) {
  const std::string lines = "{\"k\": 1}\n{\"k\": 2}\n{\"k\": 3}\n";
  EXPECT_EQ(keys(write_gzip("a.jsonl.gz", lines)), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(keys(write_zstd("b.jsonl.zst", lines)), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(keys(write_gzip("c.json.gz", "[{\"k\": 4}, {\"k\": 5}]")), (std::vector<int>{4, 5}));
  const auto cached = [&] {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir / "cache/datasets")) n += e.is_regular_file();
    return n;
  };
  EXPECT_EQ(cached(), 3u);
  const PlainFile first = plain_json_file(dir / "a.jsonl.gz");
  const auto stamp = std::filesystem::last_write_time(first.path);
  EXPECT_EQ(plain_json_file(dir / "a.jsonl.gz").path, first.path);
  EXPECT_EQ(std::filesystem::last_write_time(first.path), stamp);
  EXPECT_TRUE(first.json_lines);
  // A changed file is a new cache entry.
  write_gzip("a.jsonl.gz", "{\"k\": 9}\n");
  std::filesystem::last_write_time(dir / "a.jsonl.gz", stamp + std::chrono::seconds(5));
  EXPECT_EQ(keys(dir / "a.jsonl.gz"), (std::vector<int>{9}));
}

TEST_F(DataFiles, CorruptCompressedFilesAreErrorsAndLeaveNoCacheEntry) {
  const std::string lines = "{\"k\": 1}\n{\"k\": 2}\n";
  for (const std::string& bad :
       {std::string("\x1f\x8b\x08\x00garbagegarbage", 18), std::string("\x1f\x8b\x08"), std::string("{\"k\": 1}\n")}) {
    std::string msg = error_of([&] { load_records(write("a.jsonl.gz", bad), "train"); });
    EXPECT_NE(msg.find("gzip"), std::string::npos) << msg;
    EXPECT_NE(msg.find("a.jsonl.gz"), std::string::npos) << msg;
  }
  std::string gz = write_gzip("t.jsonl.gz", lines);
  std::filesystem::resize_file(gz, std::filesystem::file_size(gz) - 6);
  std::string msg = error_of([&] { load_records(gz, "train"); });
  EXPECT_NE(msg.find("truncated gzip"), std::string::npos) << msg;
  msg = error_of([&] { load_records(write_zstd("b.jsonl.zst", std::string(5000, ' ') + "{}\n", 12), "train"); });
  EXPECT_NE(msg.find("zstd"), std::string::npos) << msg;
  EXPECT_NE(msg.find("b.jsonl.zst"), std::string::npos) << msg;
  msg = error_of([&] { load_records(write("c.csv.gz", "x"), "train"); });
  EXPECT_NE(msg.find("unknown format"), std::string::npos) << msg;
  size_t entries = 0;
  if (std::filesystem::exists(dir / "cache/datasets"))
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir / "cache/datasets")) ++entries;
  EXPECT_EQ(entries, 0u);
}

TEST_F(DataFiles, DirectoriesPickCompressedAndParquetFilesForTheirSplit) {
  std::filesystem::create_directories(dir / "ds/data");
  write_gzip("ds/data/train-00000.jsonl.gz", "{\"k\": 1}\n");
  write_zstd("ds/data/train-00001.jsonl.zst", "{\"k\": 2}\n");
  write("ds/data/validation-00000.jsonl", "{\"k\": 3}\n");
  EXPECT_EQ(keys(dir / "ds"), (std::vector<int>{1, 2}));
  EXPECT_EQ(split_files(dir / "ds", "validation").size(), 1u);
}

TEST_F(DataFiles, DatasetsTokenizeEachRecordWhenItIsAskedFor) {
  // A tokenizer that counts its calls: building the dataset touches only the first record (to check it trains).
  auto calls = std::make_shared<int>(0);
  TextTokenizer tok;
  tok.encode = [calls](const std::string& text, bool) {
    ++*calls;
    TokenizedText t;
    for (size_t i = 0; i < text.size(); ++i) {
      t.ids.push_back(static_cast<unsigned char>(text[i]));
      t.offsets.emplace_back(i, i + 1);
      t.inserted.push_back(0);
    }
    return t;
  };
  std::string rows;
  for (int i = 0; i < 1000; ++i)
    rows +=
        ojson{{"context", "c" + std::to_string(i)}, {"question", "q"}, {"answers", {{"text", {"a"}}}}}.dump() + "\n";
  // Record 500 has no question: an error only when it is reached.
  rows += "{\"context\": \"c\", \"answers\": {\"text\": [\"a\"]}}\n";
  SquadOptions o;
  o.path = write("squad.jsonl", rows);
  Dataset data = make_squad_dataset(tok, o);
  EXPECT_EQ(data.size, 1001u);
  EXPECT_EQ(*calls, 1);
  EXPECT_EQ(data.get(999).labels.back(), 'a');
  EXPECT_EQ(*calls, 2);
  std::string msg = error_of([&] { data.get(1000); });
  EXPECT_NE(msg.find("record has no column 'question'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("squad.jsonl:1001 [record 1000]"), std::string::npos) << msg;
}

}  // namespace
}  // namespace automodel::data

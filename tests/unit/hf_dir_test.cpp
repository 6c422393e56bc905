// io/hf_dir: model directory and hub cache resolution, JSON files with located errors, atomic writes.
#include "io/hf_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "core/error.h"
#include "temp_dir.h"

using namespace automodel;
using namespace automodel::io;
using automodel::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// Sets (or unsets) environment variables for its lifetime.
class EnvGuard {
 public:
  void set(const char* name, const std::optional<std::string>& value) {
    const char* old = std::getenv(name);
    saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
    apply(name, value);
  }
  ~EnvGuard() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) apply(it->first.c_str(), it->second);
  }

 private:
  static void apply(const char* name, const std::optional<std::string>& v) {
    if (v)
      ::setenv(name, v->c_str(), 1);
    else
      ::unsetenv(name);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// Only `hub` as the cache: every other variable unset.
void only_cache(EnvGuard& env, const fs::path& hub) {
  env.set("HF_HUB_CACHE", hub.string());
  env.set("HUGGINGFACE_HUB_CACHE", std::nullopt);
  env.set("HF_HOME", std::nullopt);
  env.set("XDG_CACHE_HOME", std::nullopt);
  env.set("HOME", std::nullopt);
}

std::string error_of(const std::string& name, const std::string& revision = "main") {
  try {
    resolve_model_dir(name, revision);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(HfDir, ExistingDirectoryIsItself) {
  TempDir t;
  EXPECT_EQ(resolve_model_dir(t.path().string()), t.path().string());
}

TEST(HfDir, HubIdResolvesThroughRefs) {
  TempDir t;
  EnvGuard env;
  env.set("HF_HOME", t.path().string());
  env.set("HF_HUB_CACHE", std::nullopt);
  env.set("HUGGINGFACE_HUB_CACHE", std::nullopt);
  fs::path repo = t.path() / "hub" / "models--org--tiny-llama";
  write_text(repo / "refs" / "main", "abc123\n");
  write_text(repo / "snapshots" / "abc123" / "config.json", "{}");
  write_text(repo / "snapshots" / "old999" / "config.json", "{}");
  write_text(repo / "refs" / "v2", "old999");
  EXPECT_EQ(resolve_model_dir("org/tiny-llama"), (repo / "snapshots" / "abc123").string());
  EXPECT_EQ(resolve_model_dir("org/tiny-llama", "v2"), (repo / "snapshots" / "old999").string());
  // A commit hash as the revision.
  EXPECT_EQ(resolve_model_dir("org/tiny-llama", "old999"), (repo / "snapshots" / "old999").string());
  EXPECT_EQ(hub_cache_dirs().front(), (t.path() / "hub").string());
}

TEST(HfDir, CacheVariablesInPrecedenceOrder) {
  TempDir t;
  EnvGuard env;
  env.set("HF_HUB_CACHE", (t.path() / "a").string());
  env.set("HUGGINGFACE_HUB_CACHE", (t.path() / "b").string());
  env.set("HF_HOME", (t.path() / "c").string());
  env.set("XDG_CACHE_HOME", (t.path() / "d").string());
  env.set("HOME", (t.path() / "e").string());
  std::vector<std::string> want = {(t.path() / "a").string(), (t.path() / "b").string(),
                                   (t.path() / "c" / "hub").string(), (t.path() / "d" / "huggingface" / "hub").string(),
                                   (t.path() / "e" / ".cache" / "huggingface" / "hub").string()};
  EXPECT_EQ(hub_cache_dirs(), want);
  // Found in a later one when the earlier ones lack it.
  fs::path repo = t.path() / "e" / ".cache" / "huggingface" / "hub" / "models--gpt2";
  write_text(repo / "refs" / "main", "c0ffee");
  fs::create_directories(repo / "snapshots" / "c0ffee");
  EXPECT_EQ(resolve_model_dir("gpt2"), (repo / "snapshots" / "c0ffee").string());
}

TEST(HfDir, SingleSnapshotWithoutRefs) {
  TempDir t;
  EnvGuard env;
  only_cache(env, t.path());
  fs::path repo = t.path() / "models--org--m";
  fs::create_directories(repo / "snapshots" / "deadbeef");
  EXPECT_EQ(resolve_model_dir("org/m"), (repo / "snapshots" / "deadbeef").string());
  // Not for an explicit other revision.
  EXPECT_NE(error_of("org/m", "v1").find("no refs/v1"), std::string::npos);
  // Two snapshots and no refs: ambiguous.
  fs::create_directories(repo / "snapshots" / "cafe");
  std::string m = error_of("org/m");
  EXPECT_NE(m.find("2 snapshot(s) in snapshots/, ambiguous"), std::string::npos) << m;
}

TEST(HfDir, NotFoundListsEveryPlaceItLooked) {
  TempDir t;
  EnvGuard env;
  env.set("HF_HUB_CACHE", (t.path() / "a").string());
  env.set("HUGGINGFACE_HUB_CACHE", std::nullopt);
  env.set("HF_HOME", (t.path() / "c").string());
  env.set("XDG_CACHE_HOME", std::nullopt);
  env.set("HOME", (t.path() / "e").string());
  std::string m = error_of("org/missing");
  EXPECT_NE(m.find("cannot find model 'org/missing'"), std::string::npos) << m;
  EXPECT_NE(m.find("org/missing (as a local directory: not found)"), std::string::npos) << m;
  EXPECT_NE(m.find((t.path() / "a" / "models--org--missing").string()), std::string::npos) << m;
  EXPECT_NE(m.find((t.path() / "c" / "hub" / "models--org--missing").string()), std::string::npos) << m;
  EXPECT_NE(m.find((t.path() / "e" / ".cache" / "huggingface" / "hub" / "models--org--missing").string()),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("no network download"), std::string::npos) << m;
  // A ref pointing at a snapshot that is not there.
  fs::path repo = t.path() / "a" / "models--org--missing";
  write_text(repo / "refs" / "main", "1234");
  m = error_of("org/missing");
  EXPECT_NE(m.find("-> 1234, but"), std::string::npos) << m;
  // A path that is not a hub id.
  m = error_of("/no/such/dir");
  EXPECT_NE(m.find("not a hub id"), std::string::npos) << m;
}

TEST(HfDir, ReadJsonFileNamesFileAndLine) {
  TempDir t;
  fs::path good = t.path() / "config.json";
  write_text(good, R"({"model_type": "llama", "hidden_size": 64})");
  auto j = read_json_file(good.string());
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["hidden_size"], 64);
  fs::path bad = t.path() / "bad.json";
  write_text(bad, "{\n  \"a\": 1,\n  \"b\": tru\n}\n");
  try {
    read_json_file(bad.string());
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(bad.string() + " at line 3"), std::string::npos) << m;
    EXPECT_NE(m.find(bad.string() + ":3:"), std::string::npos) << m;
  }
  try {
    read_json_file((t.path() / "absent.json").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open JSON file"), std::string::npos);
  }
  fs::path huge = t.path() / "huge.json";
  write_text(huge, R"({"rope_theta": 1e999})");
  EXPECT_THROW(read_json_file(huge.string()), Error);  // nlohmann's out_of_range, not an internal error
}

TEST(HfDir, WriteFileAtomicReplacesAndCleansUp) {
  TempDir t;
  fs::path p = t.path() / "f.txt";
  write_file_atomic(p.string(), "one");
  write_file_atomic(p.string(), "two");
  std::ifstream in(p);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "two");
  EXPECT_FALSE(fs::exists(t.path() / "f.txt.tmp"));
  // A producer that throws leaves neither the file nor the temporary.
  fs::path q = t.path() / "g.txt";
  EXPECT_THROW(write_file_atomic(q.string(),
                                 [](const ByteSink& sink) {
                                   sink("abc", 3);
                                   throw Error("boom");
                                 }),
               Error);
  EXPECT_FALSE(fs::exists(q));
  EXPECT_FALSE(fs::exists(t.path() / "g.txt.tmp"));
  EXPECT_THROW(write_file_atomic((t.path() / "no" / "dir" / "x").string(), "x"), Error);
}

// components/checkpoint: staged writes published by one rename, the LATEST pointer, restore_from resolution,
// pruning, bit-exact tensor files, optimizer / RNG state, and the consolidated Hugging Face model round trip.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "components/checkpoint/checkpoint_dir.h"
#include "components/checkpoint/model_io.h"
#include "components/checkpoint/state_io.h"
#include "core/grad_node.h"
#include "error_of.h"
#include "io/safetensors.h"
#include "models/auto_model.h"
#include "nn/flat_params.h"
#include "temp_dir.h"

using namespace automodel;
using namespace automodel::checkpoint;
using automodel::testing::error_of;
using automodel::testing::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

void write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string publish(const std::string& root, int64_t epoch, int64_t step, std::optional<int64_t> max_recent = {},
                    const std::string& content = "x") {
  CheckpointStage stage(root, checkpoint_name(epoch, step));
  write(stage.path() + "/step_scheduler.json", content);
  stage.publish(max_recent);
  return stage.final_path();
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

json tiny_config(bool tied = false) {
  return json{{"model_type", "llama"},       {"vocab_size", 61},       {"hidden_size", 16},
              {"intermediate_size", 32},     {"num_hidden_layers", 2}, {"num_attention_heads", 4},
              {"num_key_value_heads", 2},    {"rms_norm_eps", 1e-5},   {"max_position_embeddings", 64},
              {"tie_word_embeddings", tied}, {"eos_token_id", 2}};
}

}  // namespace

TEST(CheckpointDir, StageAndPublishLayoutAndLatest) {
  TempDir root;
  EXPECT_EQ(checkpoint_name(0, 9), "epoch_0_step_9");
  EXPECT_EQ(parse_checkpoint_name("/a/b/epoch_2_step_15/"), (std::pair<int64_t, int64_t>{2, 15}));
  EXPECT_FALSE(parse_checkpoint_name(".epoch_2_step_15.staging-1"));

  CheckpointStage stage(root.str(), "epoch_0_step_9");
  EXPECT_EQ(fs::path(stage.path()).parent_path(), root.path());
  EXPECT_EQ(fs::path(stage.path()).filename().string().rfind(".epoch_0_step_9.staging-", 0), 0u);
  write(stage.path() + "/model/consolidated/config.json", "{}");
  save_json(stage.path() + "/" + layout::kStepSchedulerFile, {{"step", 10}, {"epoch", 0}});
  EXPECT_TRUE(list_complete_checkpoints(root.str()).empty());  // nothing visible before publish
  stage.publish();

  const std::string final_path = root / "epoch_0_step_9";
  EXPECT_EQ(stage.final_path(), final_path);
  EXPECT_FALSE(fs::exists(stage.path()));
  EXPECT_TRUE(fs::is_regular_file(final_path + "/model/consolidated/config.json"));
  EXPECT_TRUE(fs::is_regular_file(final_path + "/" + kCompleteMarker));
  EXPECT_EQ(load_json(final_path + "/step_scheduler.json")["step"], 10);
  // LATEST is a relative symlink, as NeMo writes it.
  ASSERT_TRUE(fs::is_symlink(root / "LATEST"));
  EXPECT_EQ(fs::read_symlink(root / "LATEST"), fs::path("epoch_0_step_9"));
  EXPECT_EQ(read_latest_pointer(root.str()), final_path);
  EXPECT_EQ(resolve_restore_path(root.str(), "LATEST"), final_path);
  EXPECT_EQ(entries(root.str()), (std::vector<std::string>{"LATEST", "epoch_0_step_9"}));

  publish(root.str(), 1, 19);
  EXPECT_EQ(fs::read_symlink(root / "LATEST"), fs::path("epoch_1_step_19"));
  EXPECT_EQ(list_complete_checkpoints(root.str()),
            (std::vector<std::string>{root / "epoch_0_step_9", root / "epoch_1_step_19"}));
}

TEST(CheckpointDir, UnpublishedStageLeavesNothing) {
  TempDir root;
  const std::string first = publish(root.str(), 0, 4);
  {
    CheckpointStage stage(root.str(), checkpoint_name(0, 9));
    write(stage.path() + "/optim/optimizer.json", "{}");
    // an exception while saving: the stage goes out of scope unpublished
  }
  EXPECT_EQ(entries(root.str()), (std::vector<std::string>{"LATEST", "epoch_0_step_4"}));
  EXPECT_EQ(resolve_restore_path(root.str(), "latest"), first);
}

TEST(CheckpointDir, StagingAndUnmarkedDirsAreNeverResumedFrom) {
  TempDir root;
  EXPECT_EQ(resolve_restore_path(root.str(), "LATEST"), std::nullopt);  // fresh start
  EXPECT_EQ(resolve_restore_path(root / "does_not_exist", "LATEST"), std::nullopt);
  // What an interrupted run leaves: a staging dir (even one with a marker) and a dir without the marker.
  write(root / ".epoch_0_step_5.staging-123/.automodel_complete", "");
  write(root / "epoch_0_step_7/step_scheduler.json", "{}");
  EXPECT_TRUE(list_complete_checkpoints(root.str()).empty());
  EXPECT_EQ(resolve_restore_path(root.str(), "LATEST"), std::nullopt);
  std::string msg = error_of([&] { resolve_restore_path(root.str(), "epoch_0_step_7"); });
  EXPECT_TRUE(has(msg, "incomplete")) << msg;

  const std::string good = publish(root.str(), 0, 3);
  // A NeMo ".incomplete" marker also makes a directory incomplete.
  const std::string nemo = publish(root.str(), 0, 8);
  write(nemo + "/.incomplete", "");
  EXPECT_FALSE(is_complete_checkpoint(nemo));
  // LATEST names epoch_0_step_8, which is now incomplete: fall back to the newest complete checkpoint.
  EXPECT_EQ(resolve_restore_path(root.str(), "LATEST"), good);
  // A new stage of the same name clears stale staging dirs an interrupted run left.
  { CheckpointStage stage(root.str(), "epoch_0_step_5"); }
  EXPECT_FALSE(fs::exists(root / ".epoch_0_step_5.staging-123"));
}

TEST(CheckpointDir, ResolveRestoreFrom) {
  TempDir root;
  const std::string a = publish(root.str(), 0, 9);
  const std::string b = publish(root.str(), 1, 19);
  EXPECT_EQ(resolve_restore_path(root.str(), "LATEST"), b);
  EXPECT_EQ(resolve_restore_path(root.str(), ""), b);
  EXPECT_EQ(resolve_restore_path(root.str(), "epoch_0_step_9"), a);
  EXPECT_EQ(resolve_restore_path("/nonexistent", a), a);  // a path is taken as given
  // A relative path (with a '/') is not joined to checkpoint_dir.
  const fs::path cwd = fs::current_path();
  fs::current_path(root.path());
  EXPECT_EQ(resolve_restore_path("/elsewhere", "./epoch_0_step_9"), "./epoch_0_step_9");
  fs::current_path(cwd);

  std::string msg = error_of([&] { resolve_restore_path(root.str(), "epoch_5_step_99"); });
  EXPECT_TRUE(has(msg, "does not exist")) << msg;
  EXPECT_TRUE(has(msg, root / "epoch_5_step_99")) << msg;
  EXPECT_TRUE(has(msg, "epoch_0_step_9, epoch_1_step_19")) << msg;  // what there is
  msg = error_of([&] { resolve_restore_path(root / "empty", "/no/such/dir"); });
  EXPECT_TRUE(has(msg, "checkpoint_dir " + (root / "empty") + " does not exist")) << msg;

  // Readers accept a LATEST text file and NeMo's LATEST.txt fallback as well as the symlink.
  fs::remove(root / "LATEST");
  write(root / "LATEST.txt", "epoch_0_step_9\n");
  EXPECT_EQ(resolve_restore_path(root.str(), "LATEST"), a);
  fs::remove(root / "LATEST.txt");
  write(root / "LATEST", a + "\n");
  EXPECT_EQ(resolve_restore_path(root.str(), "LATEST"), a);
  // Other pointers by name (NeMo's LOWEST_VAL).
  fs::create_symlink("epoch_1_step_19", root / "LOWEST_VAL");
  EXPECT_EQ(resolve_restore_path(root.str(), "LOWEST_VAL"), b);
}

TEST(CheckpointDir, MaxRecentPrunesOldestCompleteCheckpoints) {
  TempDir root;
  write(root / "epoch_0_step_0/partial", "");  // incomplete: never pruned as a checkpoint, never resumed
  for (int64_t step = 1; step <= 4; ++step) publish(root.str(), 0, step, /*max_recent=*/2);
  EXPECT_EQ(list_complete_checkpoints(root.str()),
            (std::vector<std::string>{root / "epoch_0_step_3", root / "epoch_0_step_4"}));
  EXPECT_TRUE(fs::exists(root / "epoch_0_step_0"));
  // The checkpoint LATEST names is kept even outside the window.
  write_latest_pointer(root.str(), root / "epoch_0_step_3");
  publish(root.str(), 1, 5);
  write_latest_pointer(root.str(), root / "epoch_0_step_3");
  EXPECT_EQ(prune_checkpoints(root.str(), 1), (std::vector<std::string>{root / "epoch_0_step_4"}));
  EXPECT_EQ(list_complete_checkpoints(root.str()),
            (std::vector<std::string>{root / "epoch_0_step_3", root / "epoch_1_step_5"}));
  EXPECT_TRUE(has(error_of([&] { prune_checkpoints(root.str(), 0); }), "max_recent_checkpoints must be >= 1"));
  for (const auto& name : entries(root.str())) EXPECT_NE(name[0] == '.' && name != ".", true) << name;
}

TEST(CheckpointDir, RepublishingANameReplacesIt) {
  TempDir root;
  publish(root.str(), 0, 9, {}, "old");
  publish(root.str(), 0, 9, {}, "new");
  EXPECT_EQ(read(root / "epoch_0_step_9/step_scheduler.json"), "new");
  EXPECT_EQ(entries(root.str()), (std::vector<std::string>{"LATEST", "epoch_0_step_9"}));
  CheckpointStage stage(root.str(), "epoch_0_step_1");
  stage.publish();
  EXPECT_TRUE(has(error_of([&] { stage.publish(); }), "already published"));
}

TEST(StateIO, TensorsRoundTripBitExact) {
  TempDir dir;
  std::map<std::string, Tensor> saved;
  Tensor f = Tensor::from_vector<float>({1.5f, -0.0f, 1e-40f, std::nanf("0x12345"), INFINITY, 3.14159265f}, {2, 3});
  saved["a.exp_avg"] = f;
  saved["b"] = Tensor::from_vector<int64_t>({-1, int64_t(1) << 62, 7}, {3});
  saved["c"] = Tensor::from_vector<double>({0.1, -2.5e300}, {2});
  saved["d"] = Tensor::from_vector<bf16>({float_to_bf16(1.25f), bf16{0x7fc1}}, {1, 2});
  save_tensors(dir / "t.safetensors", saved, {{"format", "pt"}, {"n", 3}});
  EXPECT_EQ(io::SafetensorsReader(dir / "t.safetensors").metadata().at("n"), "3");

  std::map<std::string, Tensor> into;
  for (const auto& [name, t] : saved) into[name] = Tensor::zeros(t.shape(), t.dtype());
  Tensor target = into["a.exp_avg"];
  load_tensors_into(dir / "t.safetensors", into);
  EXPECT_EQ(target.raw_data(), into["a.exp_avg"].raw_data());  // copied into, not replaced
  for (const auto& [name, t] : saved)
    EXPECT_EQ(std::memcmp(t.raw_data(), into[name].raw_data(), t.nbytes()), 0) << name;
  auto fresh = load_tensors(dir / "t.safetensors");
  ASSERT_EQ(fresh.size(), 4u);
  EXPECT_EQ(std::memcmp(fresh["d"].raw_data(), saved["d"].raw_data(), 4), 0);
}

TEST(StateIO, LoadErrorsNameTheTensorAndWriteNothing) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  save_tensors(path, {{"w", Tensor::ones({2, 2})}, {"v", Tensor::ones({3})}});
  auto attempt = [&](std::map<std::string, Tensor> into) { return error_of([&] { load_tensors_into(path, into); }); };
  EXPECT_TRUE(has(attempt({{"w", Tensor::zeros({2, 2})}}), "unexpected tensor(s): v"));
  EXPECT_TRUE(has(attempt({{"w", Tensor::zeros({2, 2})}, {"v", Tensor::zeros({3})}, {"u", Tensor::zeros({1})}}),
                  "lacks 1 tensor(s): u"));
  Tensor untouched = Tensor::zeros({2, 2});
  std::string msg = attempt({{"w", untouched}, {"v", Tensor::zeros({4})}});
  EXPECT_TRUE(has(msg, "tensor 'v' has shape [3] in the file but [4] here")) << msg;
  EXPECT_EQ(untouched.to_doubles(), std::vector<double>(4, 0.0));
  msg = attempt({{"w", Tensor::zeros({2, 2}, DType::bf16)}, {"v", Tensor::zeros({3})}});
  EXPECT_TRUE(has(msg, "tensor 'w' is F32 in the file but BF16 here")) << msg;
  EXPECT_TRUE(has(error_of([&] { load_json(dir / "missing.json"); }), "missing"));
}

TEST(StateIO, OptimizerRngJsonAndTextRoundTrip) {
  TempDir dir;
  std::map<std::string, Tensor> state = {{"w.exp_avg", Tensor::from_vector<float>({1, 2}, {2})},
                                         {"w.exp_avg_sq", Tensor::from_vector<float>({3, 4}, {2})}};
  save_optimizer_state(dir / "optim", state, {{"w", 7}}, {{"lr_scheduler", {{"num_steps", 7}}}});
  std::map<std::string, Tensor> into = {{"w.exp_avg", Tensor::zeros({2})}, {"w.exp_avg_sq", Tensor::zeros({2})}};
  OptimizerStateFiles loaded = load_optimizer_state(dir / "optim", into);
  EXPECT_EQ(loaded.step_counts, (std::map<std::string, int64_t>{{"w", 7}}));
  EXPECT_EQ(loaded.extra["lr_scheduler"]["num_steps"], 7);
  EXPECT_EQ(into["w.exp_avg_sq"].to_doubles(), (std::vector<double>{3, 4}));

  const uint64_t big = ~uint64_t(0) - 5;
  save_rng_state(dir / "rng", {{"default", GeneratorState{42, big}}});
  auto rng = load_rng_state(dir / "rng");
  EXPECT_EQ(rng.at("default").seed, 42u);
  EXPECT_EQ(rng.at("default").offset, big);
  write(dir / "bad/rng_state.json", R"({"default": {"seed": -1, "offset": 0}})");
  EXPECT_TRUE(has(error_of([&] { load_rng_state(dir / "bad"); }), "'seed'"));

  save_text(dir / "config.yaml", "model:\n  a: 1\n");
  EXPECT_EQ(load_text(dir / "config.yaml"), "model:\n  a: 1\n");
}

TEST(ModelIO, ConsolidatedModelRoundTripsThroughFromPretrained) {
  TempDir dir;
  auto model = models::AutoModelForCausalLM::from_config(models::ModelConfig::from_json(tiny_config(), "x"), {}, 11);
  write(dir / "tok/tokenizer.json", R"({"version": "1.0"})");
  const std::string out = dir / "ckpt/model/consolidated";
  save_consolidated_model(*model, out, {dir / "tok/tokenizer.json"});
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"})
    EXPECT_TRUE(fs::is_regular_file(out + "/" + f)) << f;
  EXPECT_TRUE(has(error_of([&] { save_consolidated_model(*model, out, {dir / "nope.json"}); }), "nope.json"));

  Tensor ids = Tensor::from_vector<int64_t>({1, 5, 9, 3}, {1, 4});
  NoGradGuard no_grad;
  auto loaded = models::AutoModelForCausalLM::from_pretrained(out);
  EXPECT_EQ(model->forward(ids).to_doubles(), loaded->forward(ids).to_doubles());

  // Into a live model with flat buffers: values change, storage stays bound.
  auto other = models::AutoModelForCausalLM::from_config(models::ModelConfig::from_json(tiny_config(), "x"), {}, 12);
  nn::FlatParameters flat = nn::flatten_parameters(*other);
  const void* before = flat.data.raw_data();
  EXPECT_NE(model->forward(ids).to_doubles(), other->forward(ids).to_doubles());
  load_model_weights(*other, out);
  EXPECT_EQ(flat.data.raw_data(), before);
  EXPECT_EQ(other->parameter("model.norm.weight").storage(), flat.data.storage());
  EXPECT_EQ(model->forward(ids).to_doubles(), other->forward(ids).to_doubles());

  auto tied = models::AutoModelForCausalLM::from_config(models::ModelConfig::from_json(tiny_config(true), "x"));
  std::string msg = error_of([&] { load_model_weights(*tied, out); });
  EXPECT_TRUE(has(msg, "'lm_head.weight'")) << msg;
}

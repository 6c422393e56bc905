// A checkpoint's state files, read as a resumed run reads them; the first byte picks the file, the rest is its
// content:
//   0 step_scheduler.json  -> checkpoint::load_json, StepScheduler::load_state_dict, a few steps
//   1 dataloader.json      -> DataLoader::load_state_dict, the rest of the epoch
//   2 rng/rng_state.json   -> checkpoint::load_rng_state, each generator's state set and drawn from
//   3 optim/optimizer.json -> load_optimizer_state beside a valid optimizer.safetensors
//   4 optim/optimizer.safetensors -> load_optimizer_state beside a valid optimizer.json (load_tensors_into)
//   5 LATEST               -> resolve_restore_path("LATEST") over a checkpoint_dir with one complete checkpoint
//   6 optim/rank_0/optimizer.json, 7 optim/rank_1/optimizer.json -> load_optimizer_state_ranges of a sharded state
//     (two ranks) beside the other rank's valid files, read whole as one process reads it
//   8 model/sharded/index.json -> load_model_shard beside two ranks' valid weight files, read whole
#include <map>

#include "components/checkpoint/checkpoint_dir.h"
#include "components/checkpoint/sharded_state_io.h"
#include "components/checkpoint/state_io.h"
#include "components/data/loader.h"
#include "components/training/step_scheduler.h"
#include "core/rng.h"
#include "fuzz_util.h"

namespace {

using automodel::Tensor;

// The optimizer state a tiny run over two parameters holds.
std::map<std::string, Tensor> optimizer_state() {
  return {{"w.exp_avg", Tensor::zeros({4, 4})},
          {"w.exp_avg_sq", Tensor::zeros({4, 4})},
          {"b.exp_avg", Tensor::zeros({4})},
          {"b.exp_avg_sq", Tensor::zeros({4})}};
}

// Rank r of 2's half of optimizer_state(), flattened, with its ranges.
void save_half(const std::filesystem::path& dir, int r) {
  std::map<std::string, Tensor> half;
  std::map<std::string, automodel::checkpoint::StateRange> ranges;
  for (const auto& [name, t] : optimizer_state()) {
    const int64_t n = t.numel() / 2;
    half[name] = Tensor::zeros({n});
    ranges[name] = {r * n, n, t.numel()};
  }
  automodel::checkpoint::save_optimizer_shard(dir.string(), r, 2, half, ranges, {{"w", 4}, {"b", 4}},
                                              {{"lr_scheduler_num_steps", 4}});
}

// Copies the files under `from` into `to` through the buffered streams: filesystem::copy's sendfile fails with EINTR
// when libFuzzer's timer signal arrives during it (the streams retry).
void copy_contents(const std::filesystem::path& from, const std::filesystem::path& to) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(from)) {
    automodel::fuzz::write_file(to, automodel::fuzz::read_file(from));
    return;
  }
  for (const auto& entry : fs::recursive_directory_iterator(from)) {
    const fs::path target = to / fs::relative(entry.path(), from);
    if (entry.is_directory())
      fs::create_directories(target);
    else
      automodel::fuzz::write_file(target, automodel::fuzz::read_file(entry.path()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  if (size < 1) return 0;
  namespace fs = std::filesystem;
  static const fs::path root = [] {
    // A complete checkpoint to point at, and valid optimizer files to pair with a fuzzed one.
    fs::path r = fuzz::scratch_dir() / "ckpt";
    const fs::path step = r / checkpoint::checkpoint_name(0, 4);
    fs::create_directories(step);
    fuzz::write_file(step / checkpoint::kCompleteMarker, "");
    fs::create_directories(r / "valid");
    std::map<std::string, int64_t> counts{{"w", 4}, {"b", 4}};
    checkpoint::save_optimizer_state((r / "valid").string(), optimizer_state(), counts,
                                     {{"lr_scheduler_num_steps", 4}});
    save_half(r / "valid_sharded", 0);
    save_half(r / "valid_sharded", 1);
    checkpoint::save_model_shard((r / "valid_model").string(), 0, {{"w", Tensor::zeros({10})}});
    checkpoint::save_model_shard((r / "valid_model").string(), 1,
                                 {{"w", Tensor::zeros({6})}, {"b", Tensor::zeros({4})}});
    return r;
  }();
  const std::string_view content = fuzz::as_text(data + 1, size - 1);
  const fs::path dir = root / "case";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fuzz::accept_errors([&] {
    switch (data[0] % 9) {
      case 0: {
        fuzz::write_file(dir / "step_scheduler.json", content);
        training::StepSchedulerOptions o;
        o.global_batch_size = 4;
        o.local_batch_size = 2;
        o.max_steps = 20;
        o.preemption_signals = {};
        training::StepScheduler s(o, 10);
        s.load_state_dict(checkpoint::load_json((dir / "step_scheduler.json").string()));
        for (int i = 0; i < 4 && s.next_epoch(); ++i) {
          (void)s.steps_into_epoch();
          (void)s.micro_batches_this_step();
          (void)s.is_ckpt_step();
          s.advance_step();
        }
        break;
      }
      case 1: {
        fuzz::write_file(dir / "dataloader.json", content);
        data::DataLoader loader(37, 4, true, 42);
        loader.load_state_dict(checkpoint::load_json((dir / "dataloader.json").string()));
        std::vector<size_t> batch;
        for (int i = 0; i < 12 && loader.next(batch); ++i) {
        }
        break;
      }
      case 2: {
        fuzz::write_file(dir / "rng_state.json", content);
        for (const auto& [name, state] : checkpoint::load_rng_state(dir.string())) {
          Generator g;
          g.set_state(state);
          (void)randn({4}, g);
        }
        break;
      }
      case 3:
      case 4: {
        const bool json_fuzzed = data[0] % 8 == 3;
        copy_contents(root / "valid" / (json_fuzzed ? "optimizer.safetensors" : "optimizer.json"),
                      dir / (json_fuzzed ? "optimizer.safetensors" : "optimizer.json"));
        fuzz::write_file(dir / (json_fuzzed ? "optimizer.json" : "optimizer.safetensors"), content);
        std::map<std::string, Tensor> state = optimizer_state();
        (void)checkpoint::load_optimizer_state(dir.string(), state);
        break;
      }
      case 5: {
        fuzz::write_file(root / checkpoint::kLatestPointer, content);
        (void)checkpoint::resolve_restore_path(root.string(), "LATEST");
        break;
      }
      case 6:
      case 7: {
        copy_contents(root / "valid_sharded", dir);
        fuzz::write_file(dir / (data[0] % 8 == 6 ? "rank_0" : "rank_1") / "optimizer.json", content);
        std::map<std::string, Tensor> state;
        for (const auto& [name, t] : optimizer_state()) state[name] = Tensor::zeros({t.numel()});
        (void)checkpoint::load_optimizer_state_ranges(dir.string(), state, {});
        break;
      }
      case 8: {
        copy_contents(root / "valid_model", dir);
        fuzz::write_file(dir / "index.json", content);
        std::map<std::string, Tensor> weights{{"w", Tensor::zeros({16})}, {"b", Tensor::zeros({4})}};
        checkpoint::load_model_shard(dir.string(), weights, {{"w", {0, 16, 16}}, {"b", {0, 4, 4}}});
        break;
      }
    }
  });
  return 0;
}

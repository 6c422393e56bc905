// DDP's bucketed gradient all-reduce (components/distributed/gradient_reducer.h), against a communicator that records
// what it is asked to reduce: buckets tile the gradient allocation, each starts once its layers' backward is done,
// and only a synchronising micro-batch reduces.
#include "components/distributed/gradient_reducer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "components/distributed/decoder_layer_of.h"
#include "nn/flat_params.h"

using namespace automodel;
using namespace automodel::distributed;

namespace {

// Every all-reduce, as (first element's offset in the allocation, element count), in the order they were started.
struct RecordingCommunicator : Communicator {
  std::vector<std::pair<int64_t, int64_t>> started;
  int waits = 0;
  struct Done : Request {
    RecordingCommunicator* owner;
    explicit Done(RecordingCommunicator* o) : owner(o) {}
    bool test() override { return true; }
    void wait() override { ++owner->waits; }
  };
  int rank() const override { return 0; }
  int size() const override { return 2; }
  int local_size() const override { return 2; }
  std::unique_ptr<Request> all_reduce_async(const Tensor& t, ReduceOp) override {
    started.emplace_back(t.offset(), t.numel());
    return std::make_unique<Done>(this);
  }
  std::unique_ptr<Request> all_gather_async(const Tensor&, const Tensor&) override { return nullptr; }
  std::unique_ptr<Request> reduce_scatter_async(const Tensor&, const Tensor&) override { return nullptr; }
  void broadcast(const Tensor&, int) override {}
  std::vector<std::string> all_gather_text(const std::string& text) override { return {text, text}; }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return nullptr; }

 protected:
  void abort_job(int) override {}
};

// A causal LM's cut: embeddings, `layers` decoder layers of two 1000-element parameters, final norm and LM head.
std::vector<nn::FlatParameters> model_buffers(int layers) {
  std::vector<nn::NamedParameters> lists;
  auto param = [](int64_t n) {
    Tensor t = Tensor::zeros({n});
    t.set_requires_grad(true);
    return t;
  };
  lists.push_back({{"model.embed_tokens.weight", param(4000)}});
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    lists.push_back({{p + "self_attn.q_proj.weight", param(1000)}, {p + "mlp.up_proj.weight", param(1000)}});
  }
  lists.push_back({{"model.norm.weight", param(16)}, {"lm_head.weight", param(1000)}});
  return nn::flatten_parameter_lists(lists);
}

int64_t end_of(const nn::FlatParameters& b) { return b.grad.offset() + b.grad.numel(); }

}  // namespace

TEST(GradientReducer, BucketsTileTheGradientsAndFollowTheLayersBackward) {
  const std::vector<nn::FlatParameters> buffers = model_buffers(4);
  RecordingCommunicator comm;
  // Two layers' gradients (2 x 2000 floats) fill a bucket.
  GradientReducer reducer(comm, buffers, 2 * 2000 * 4);
  reducer.begin_backward(true);
  // The LM head and final norm are final before layer 3's backward: they go with the last layers' bucket.
  reducer.hooks()->after_backward(3);
  EXPECT_TRUE(comm.started.empty()) << "the bucket also holds layer 2";
  reducer.hooks()->after_backward(2);
  ASSERT_EQ(comm.started.size(), 1u);
  EXPECT_EQ(comm.started[0], std::make_pair(buffers[3].grad.offset(), end_of(buffers[5]) - buffers[3].grad.offset()));
  reducer.hooks()->after_backward(1);
  reducer.hooks()->after_backward(0);
  ASSERT_EQ(comm.started.size(), 2u);
  EXPECT_EQ(comm.started[1], std::make_pair(buffers[1].grad.offset(), end_of(buffers[2]) - buffers[1].grad.offset()));
  // The embeddings are final only when backward has returned.
  reducer.finish_backward();
  ASSERT_EQ(comm.started.size(), 3u);
  EXPECT_EQ(comm.started[2], std::make_pair(buffers[0].grad.offset(), buffers[0].grad.numel()));
  EXPECT_EQ(comm.waits, 3);
  EXPECT_EQ(reducer.num_buckets(), 3);
}

TEST(GradientReducer, OnlyTheSynchronisingMicroBatchReduces) {
  const std::vector<nn::FlatParameters> buffers = model_buffers(2);
  RecordingCommunicator comm;
  GradientReducer reducer(comm, buffers, 1);  // one buffer per bucket
  EXPECT_EQ(reducer.num_buckets(), 4);
  reducer.begin_backward(false);
  for (int l = 1; l >= 0; --l) reducer.hooks()->after_backward(l);
  reducer.finish_backward();
  EXPECT_TRUE(comm.started.empty());
  reducer.begin_backward(true);
  for (int l = 1; l >= 0; --l) reducer.hooks()->after_backward(l);
  EXPECT_EQ(comm.started.size(), 3u);  // the tail, layer 1, layer 0
  reducer.finish_backward();
  ASSERT_EQ(comm.started.size(), 4u);
  int64_t covered = 0;
  for (const auto& [offset, numel] : comm.started) covered += numel;
  EXPECT_EQ(covered, end_of(buffers.back()) - buffers.front().grad.offset()) << "every gradient, once";
}

TEST(GradientReducer, WithoutHooksEverythingIsReducedAfterBackward) {
  const std::vector<nn::FlatParameters> buffers = model_buffers(3);
  RecordingCommunicator comm;
  GradientReducer reducer(comm, buffers);  // 25 MB: everything but the embeddings in one bucket
  EXPECT_EQ(reducer.num_buckets(), 2);
  reducer.begin_backward(true);
  reducer.finish_backward();
  EXPECT_EQ(comm.started.size(), 2u);
  EXPECT_EQ(comm.waits, 2);
}

// A buffer's decoder layer, from its parameters' names: a causal LM's and an image-text model's decoder layers; a
// vision tower's encoder layers and mixed buffers are none.
TEST(DecoderLayerOf, ReadsTheLayerUnderAnyModulePrefix) {
  auto buffer = [](std::vector<std::string> names) {
    nn::FlatParameters f;
    for (const std::string& n : names) f.slots.push_back({n, 0, 1});
    return f;
  };
  EXPECT_EQ(decoder_layer_of(buffer({"model.layers.3.mlp.up_proj.weight", "model.layers.3.input_layernorm.weight"})),
            3);
  EXPECT_EQ(decoder_layer_of(buffer({"language_model.model.layers.12.self_attn.q_proj.weight"})), 12);
  EXPECT_EQ(decoder_layer_of(buffer({"vision_tower.encoder.layers.0.mlp.fc1.weight"})), -1);
  EXPECT_EQ(decoder_layer_of(buffer({"xmodel.layers.1.a", "model.layers.x.b"})), -1);
  EXPECT_EQ(decoder_layer_of(buffer({"model.layers.1.a", "model.layers.2.a"})), -1);
  EXPECT_EQ(decoder_layer_of(buffer({"model.embed_tokens.weight"})), -1);
}

// nn/: module naming, parameter access, flat parameter buffers.
#include <gtest/gtest.h>

#include "autograd/engine.h"
#include "nn/embedding.h"
#include "nn/flat_params.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "ops/reduce.h"

using namespace automodel;

namespace {
class Layer : public nn::Module {
 public:
  Layer() {
    proj = register_module("proj", std::make_shared<nn::Linear>(4, 3, true));
    norm = register_module("norm", std::make_shared<nn::RMSNorm>(3));
  }
  Tensor forward(const Tensor& x) const { return norm->forward(proj->forward(x)); }
  std::shared_ptr<nn::Linear> proj;
  std::shared_ptr<nn::RMSNorm> norm;
};

class Net : public nn::Module {
 public:
  Net() {
    embed = register_module("embed_tokens", std::make_shared<nn::Embedding>(10, 4, 0));
    layers = register_module("layers", std::make_shared<nn::ModuleList<Layer>>());
    layers->append(std::make_shared<Layer>());
    layers->append(std::make_shared<Layer>());
  }
  std::shared_ptr<nn::Embedding> embed;
  std::shared_ptr<nn::ModuleList<Layer>> layers;
};
}  // namespace

TEST(Module, DottedHuggingFaceStyleNames) {
  Net net;
  std::vector<std::string> names;
  for (auto& [n, t] : net.named_parameters("model")) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"model.embed_tokens.weight", "model.layers.0.proj.weight",
                                             "model.layers.0.proj.bias", "model.layers.0.norm.weight",
                                             "model.layers.1.proj.weight", "model.layers.1.proj.bias",
                                             "model.layers.1.norm.weight"}));
  EXPECT_EQ(net.num_parameters(), 10 * 4 + 2 * (12 + 3 + 3));
  EXPECT_EQ(net.parameter("layers.1.proj.bias").shape(), Shape{3});
  try {
    net.parameter("layers.1.proj.bais");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.1.proj.bias"), std::string::npos) << e.what();
  }
  net.embed->set_requires_grad(false);
  EXPECT_EQ(net.num_parameters(true), 2 * (12 + 3 + 3));
}

TEST(Module, EmbeddingPaddingRowStartsAtZero) {
  nn::Embedding e(5, 3, 2);
  std::vector<double> w = e.weight.to_doubles();
  for (int j = 0; j < 3; ++j) EXPECT_EQ(w[2 * 3 + size_t(j)], 0.0);
}

TEST(FlatParameters, ValuesKeptAndGradientsLandInTheFlatBuffer) {
  Layer layer;
  std::vector<std::vector<double>> before;
  for (auto& [n, t] : layer.named_parameters()) before.push_back(t.to_doubles());
  nn::FlatParameters flat = nn::flatten_parameters(layer);
  size_t i = 0;
  for (auto& [n, t] : layer.named_parameters()) {
    EXPECT_EQ(t.to_doubles(), before[i++]) << n;
    EXPECT_EQ(t.storage(), flat.data.storage()) << n;
    EXPECT_EQ(t.offset() % 16, 0) << n;
  }
  Tensor x = Tensor::from_values({1, 2, 3, 4, 5, 6, 7, 8}, {2, 4});
  autograd::backward(ops::sum(layer.forward(x)));
  // Every gradient is a view of flat.grad, so the flat buffer holds them all.
  double flat_sum = 0, param_sum = 0;
  for (double v : flat.grad.to_doubles()) flat_sum += std::abs(v);
  for (auto& [n, t] : layer.named_parameters()) {
    EXPECT_EQ(t.grad().storage(), flat.grad.storage()) << n;
    for (double v : t.grad().to_doubles()) param_sum += std::abs(v);
  }
  EXPECT_GT(flat_sum, 0);
  EXPECT_DOUBLE_EQ(flat_sum, param_sum);
  layer.zero_grad();
  for (double v : flat.grad.to_doubles()) EXPECT_EQ(v, 0);
}

// autograd/: the engine (accumulation, multiple paths, grad mode, freed graphs) and checkpointed
// regions (same gradients as without, less memory).
#include <gtest/gtest.h>

#include "autograd/checkpoint.h"
#include "autograd/engine.h"
#include "core/allocator.h"
#include "core/grad_node.h"
#include "core/rng.h"
#include "ops/activation.h"
#include "ops/binary.h"
#include "ops/concat.h"
#include "ops/dropout.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/view.h"

using namespace automodel;

namespace {
Tensor leaf(std::vector<double> v, Shape shape) {
  Tensor t = Tensor::from_values(v, shape);
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST(Engine, GradientsOfSeveralPathsAreSummed) {
  Tensor x = leaf({1, 2, 3}, {3});
  Tensor y = ops::sum(x * x + x);  // dy/dx = 2x + 1
  autograd::backward(y);
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{3, 5, 7}));
}

TEST(Engine, BackwardAccumulatesIntoGrad) {
  Tensor x = leaf({1, 2}, {2});
  autograd::backward(ops::sum(ops::scale(x, 3)));
  autograd::backward(ops::sum(ops::scale(x, 3)));
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{6, 6}));
}

TEST(Engine, RequiresGradPropagatesOnlyFromInputsThatNeedIt) {
  Tensor a = leaf({1, 2}, {2});
  Tensor b = Tensor::from_values({3, 4}, {2});
  EXPECT_TRUE((a * b).requires_grad());
  EXPECT_FALSE((b * b).requires_grad());
  EXPECT_FALSE((b * b).grad_fn());
  {
    NoGradGuard no_grad;
    Tensor c = a * b;
    EXPECT_FALSE(c.requires_grad());
    EXPECT_FALSE(grad_enabled());
  }
  EXPECT_TRUE(grad_enabled());
}

TEST(Engine, NonScalarNeedsAnExplicitGradient) {
  Tensor x = leaf({1, 2}, {2});
  EXPECT_THROW(autograd::backward(x * x), Error);
  Tensor y = x * x;
  autograd::backward({y}, {Tensor::from_values({1, 10}, {2})});
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{2, 40}));
}

TEST(Engine, SecondBackwardThroughFreedGraphIsAClearError) {
  Tensor x = leaf({1, 2}, {2});
  Tensor y = ops::sum(x * x);
  autograd::backward(y);
  try {
    autograd::backward(y);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
  Tensor z = ops::sum(x * x);
  x.set_grad(Tensor());
  autograd::backward(z, /*retain_graph=*/true);
  autograd::backward(z);
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{4, 8}));
}

TEST(Engine, UnusedOutputsOfMultiOutputOpsGetZeros) {
  Tensor x = leaf({1, 2, 3, 4, 5}, {5});
  std::vector<Tensor> parts = ops::split(x, {2, 3}, 0);
  autograd::backward(ops::sum(parts[1]));
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{0, 0, 1, 1, 1}));
}

TEST(Engine, BackwardFromAnOutputThatNeedsNoGradIsAnError) {
  Tensor b = Tensor::from_values({3, 4}, {2});
  EXPECT_THROW(autograd::backward(ops::sum(b)), Error);
}

// A stack of (linear, gelu, linear, gelu, dropout) layers, optionally checkpointed per layer:
// plainly each layer keeps four activations alive for backward, checkpointed only its input.
static Tensor stack_forward(const Tensor& x, const std::vector<Tensor>& weights, bool checkpointed) {
  Tensor h = x;
  for (const Tensor& w : weights) {
    auto layer = [&w](const std::vector<Tensor>& in) {
      Tensor a = ops::gelu(ops::linear(in[0], w));
      return std::vector<Tensor>{ops::dropout(ops::gelu(ops::linear(a, w)), 0.1)};
    };
    h = checkpointed ? autograd::checkpoint(layer, {h})[0] : layer({h})[0];
  }
  return ops::sum(h);
}

TEST(Checkpoint, SameGradientsAsWithoutIncludingDropout) {
  Generator g(3);
  Tensor x = randn({64, 32}, g);
  x.set_requires_grad(true);
  std::vector<Tensor> ws;
  for (int i = 0; i < 3; ++i) {
    ws.push_back(ops::scale(randn({32, 32}, g), 0.2).detach());
    ws.back().set_requires_grad(true);
  }
  auto grads = [&](bool ckpt) {
    x.set_grad(Tensor());
    for (Tensor& w : ws) w.set_grad(Tensor());
    manual_seed(11);
    autograd::backward(stack_forward(x, ws, ckpt));
    std::vector<std::vector<double>> out{x.grad().to_doubles()};
    for (Tensor& w : ws) out.push_back(w.grad().to_doubles());
    return out;
  };
  EXPECT_EQ(grads(false), grads(true));
}

TEST(Checkpoint, ParametersInsideGetGradientsWhenInputsNeedNone) {
  Tensor x = Tensor::from_values({1, 2}, {1, 2});
  Tensor w = leaf({1, 0, 0, 1}, {2, 2});
  Tensor y =
      autograd::checkpoint([&](const std::vector<Tensor>& in) { return std::vector{ops::linear(in[0], w)}; }, {x})[0];
  EXPECT_TRUE(y.requires_grad());
  autograd::backward(ops::sum(y));
  EXPECT_EQ(w.grad().to_doubles(), (std::vector<double>{1, 2, 1, 2}));
}

TEST(Checkpoint, KeepsLessMemoryAlive) {
  Generator g(5);
  Tensor x = randn({256, 256}, g);
  x.set_requires_grad(true);
  std::vector<Tensor> ws;
  for (int i = 0; i < 8; ++i) {
    ws.push_back(ops::scale(randn({256, 256}, g), 0.05).detach());
    ws.back().set_requires_grad(true);
  }
  auto peak_of = [&](bool ckpt) {
    CachingAllocator::cpu().reset_peak();
    size_t base = CachingAllocator::cpu().stats().current_bytes;
    Tensor loss = stack_forward(x, ws, ckpt);
    size_t held = CachingAllocator::cpu().stats().current_bytes - base;
    autograd::backward(loss);
    return held;
  };
  size_t plain = peak_of(false), ckpt = peak_of(true);
  EXPECT_LT(ckpt * 3, plain) << "checkpointed " << ckpt << " bytes vs " << plain;
}

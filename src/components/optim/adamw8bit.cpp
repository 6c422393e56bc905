#include "components/optim/adamw8bit.h"

#include <cmath>
#include <map>
#include <vector>

#include "core/arith.h"
#include "core/error.h"
#include "ops/backend.h"

namespace automodel::optim {

namespace {

std::vector<ParamGroup> one_group(const NamedTensors& params) {
  ParamGroup g;
  g.params = params;
  return {g};
}

}  // namespace

AdamW8bit::AdamW8bit(std::vector<ParamGroup> groups, AdamW8bitOptions opt)
    : Optimizer(std::move(groups), opt.lr, opt.weight_decay), opt_(opt) {
  AM_CHECK(opt.lr >= 0.0, name(), ": invalid lr ", opt.lr);
  AM_CHECK(opt.eps >= 0.0, name(), ": invalid eps ", opt.eps);
  AM_CHECK(opt.beta1 >= 0.0 && opt.beta1 < 1.0, name(), ": invalid beta1 ", opt.beta1, " (need 0 <= beta1 < 1)");
  AM_CHECK(opt.beta2 >= 0.0 && opt.beta2 < 1.0, name(), ": invalid beta2 ", opt.beta2, " (need 0 <= beta2 < 1)");
  AM_CHECK(opt.block_size >= 1, name(), ": invalid block_size ", opt.block_size, " (need >= 1; torchao's is 256)");
  auto check = [&](const std::string& what, const Tensor& t) {
    AM_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::bf16, name(), ": ", what, " is ", dtype_name(t.dtype()),
             "; 8-bit AdamW updates f32 or bf16 parameters");
  };
  for (const ParamGroup& g : param_groups()) {
    for (const auto& [n, t] : g.params) check("parameter '" + n + "'", t);
    for (const auto& f : g.flat) check("a flat parameter buffer", f.data);
  }
}

AdamW8bit::AdamW8bit(const NamedTensors& params, AdamW8bitOptions opt) : AdamW8bit(one_group(params), opt) {}

void AdamW8bit::init_state(Unit& u) {
  const int64_t bs = opt_.block_size;
  std::vector<Layout> layout;
  int64_t codes = 0, scales = 0, dense = 0;
  for (const Segment& s : u.segments) {
    // By the whole parameter, as in one process; a shard's stretch of it holds whole blocks (the sharding aligns it).
    if (quantizes(s.whole)) {
      AM_CHECK(s.numel % bs == 0, "AdamW8bit: a stretch of '", s.name, "' of ", s.numel,
               " elements does not hold whole blocks of ", bs);
      layout.push_back({true, codes, scales, 0});
      codes += round_up(s.numel, 64);  // whole i32s, each segment's codes on a cache line of its own
      scales += round_up(s.numel / bs, 16);
    } else {
      layout.push_back({false, 0, 0, dense});
      dense += round_up(s.numel, 16);
    }
  }
  // torchao's zeros: codes 0 with scale 0 dequantize to (-)0, as fp32 zeros do.
  u.state = {Tensor::zeros({codes / 4}, DType::i32), Tensor::zeros({codes / 4}, DType::i32),
             Tensor::zeros({scales}, DType::f32),    Tensor::zeros({scales}, DType::f32),
             Tensor::zeros({dense}, DType::f32),     Tensor::zeros({dense}, DType::f32)};
  layout_[&u] = std::move(layout);
}

void AdamW8bit::state_views(Unit& u, std::map<std::string, Tensor>& out) {
  const std::vector<Layout>& layout = layout_.at(&u);
  const int64_t bs = opt_.block_size;
  for (size_t si = 0; si < u.segments.size(); ++si) {
    const Segment& s = u.segments[si];
    const Layout& l = layout[si];
    if (s.name.empty()) continue;
    if (l.quantized) {
      const int64_t words = (s.numel + 3) / 4;
      for (int k = 0; k < 2; ++k) {
        const std::string key = s.name + (k == 0 ? ".exp_avg" : ".exp_avg_sq");
        const Tensor& codes = u.state[size_t(k)];
        const Tensor& scale = u.state[2 + size_t(k)];
        out[key + ".codes"] = codes.as_strided({words}, {1}, codes.offset() + l.codes_at / 4);
        out[key + ".scale"] = scale.as_strided({s.numel / bs}, {1}, scale.offset() + l.scales_at);
      }
    } else {
      const Shape shape = u.flat ? Shape{s.numel} : u.param.shape();
      for (int k = 0; k < 2; ++k) {
        const Tensor& dense = u.state[4 + size_t(k)];
        out[s.name + (k == 0 ? ".exp_avg" : ".exp_avg_sq")] =
            dense.as_strided(shape, contiguous_strides(shape), dense.offset() + l.dense_at);
      }
    }
  }
}

Optimizer::TileUpdate AdamW8bit::prepare(const ParamGroup& group, Unit& u, DType target, DType grad) {
  kernels::Adam8Step s;
  const float lr = float(*group.lr);
  s.lr_wd = lr * float(*group.weight_decay);
  const float step = float(u.step);
  s.step_size = lr / (1.0f - std::pow(float(opt_.beta1), step));
  s.bc2_sqrt = std::sqrt(1.0f - std::pow(float(opt_.beta2), step));
  s.bc2_sqrt_recip = 1.0f / s.bc2_sqrt;
  s.w1 = float(1.0 - opt_.beta1);
  s.w2 = float(1.0 - opt_.beta2);
  s.eps = float(opt_.eps);
  const std::vector<Layout>& layout = layout_.at(&u);
  const std::vector<Segment>& segments = u.segments;
  const int64_t bs = opt_.block_size;
  uint8_t* codes_m = static_cast<uint8_t*>(u.state[0].raw_data());
  uint8_t* codes_v = static_cast<uint8_t*>(u.state[1].raw_data());
  float* scale_m = u.state[2].data<float>();
  float* scale_v = u.state[3].data<float>();
  float* dense_m = u.state[4].data<float>();
  float* dense_v = u.state[5].data<float>();
  // Stochastic rounding reaches here as bf16 targets (rounds_bf16).
  const bool rounds = stochastic_round() && target == DType::bf16;
  const bool supported = (target == DType::f32 && (grad == DType::f32 || grad == DType::bf16)) ||
                         (target == DType::bf16 && grad == DType::bf16);
  AM_CHECK(supported, "AdamW8bit: no update for ", dtype_name(target), " parameters with ", dtype_name(grad),
           " gradients");
  const kernels::Backend& be = ops::backend_for(u.param.device(), name());
  return [=, &be, &layout, &segments](const Tile& t) {
    const Layout& l = layout[t.seg];
    const int64_t at = t.begin - segments[t.seg].begin;  // element offset inside the segment
    if (!l.quantized) {
      be.adamw8bit_dense(target, grad, s, t.target, t.grad, dense_m + l.dense_at + at, dense_v + l.dense_at + at, t.n,
                         rounds, t.round_key, t.round_at);
      return;
    }
    // Tiles start on block boundaries and hold whole blocks (tile_multiple).
    be.adamw8bit_blocks(target, grad, s, t.target, t.grad, codes_m + l.codes_at + at, codes_v + l.codes_at + at,
                        scale_m + l.scales_at + at / bs, scale_v + l.scales_at + at / bs, t.n, bs, rounds, t.round_key,
                        t.round_at);
  };
}

}  // namespace automodel::optim

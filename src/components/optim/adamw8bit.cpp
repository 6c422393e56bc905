#include "components/optim/adamw8bit.h"

#include <cmath>
#include <type_traits>

#include "components/optim/quant8.h"
#include "core/error.h"

namespace automodel::optim {

namespace {

std::vector<ParamGroup> one_group(const NamedTensors& params) {
  ParamGroup g;
  g.params = params;
  return {g};
}

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// torchao's single_param_adam, all in fp32 (its lr is an fp32 tensor, its step an fp32 counter), except that
// lr * (m / bc1) is taken as (lr / bc1) * m: a division less per element, within an ulp of the update.
struct Scalars {
  float lr_wd;      // lr * weight_decay
  float step_size;  // lr / bc1
  float w1, w2;     // 1 - beta1, 1 - beta2 (lerp weights)
  float bc2_sqrt, eps;
};

// torch.lerp: start + w (end - start) for |w| < 0.5, else end - (end - start) (1 - w).
template <bool Lo>
inline float lerp(float start, float end, float w) {
  if constexpr (Lo)
    return start + w * (end - start);
  else
    return end - (end - start) * (1.0f - w);
}

template <bool Lo1, bool Lo2, class P, class G>
void adamw8bit_kernel(P* __restrict p, const G* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                      const Scalars s) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float pi = to_compute(p[i]);
    const float gi = to_compute(g[i]);
    pi = pi - s.lr_wd * pi;
    const float mi = lerp<Lo1>(m[i], gi, s.w1);
    const float vi = lerp<Lo2>(v[i], gi * gi, s.w2);
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
    pi = pi - s.step_size * mi / denom;
    p[i] = from_compute<P>(pi);
  }
}

template <class F>
void with_bool(bool b, F&& f) {
  if (b)
    f(std::true_type{});
  else
    f(std::false_type{});
}

// f(P{}, G{}) for the pairs a step meets: f32 / f32, bf16 / bf16, and an fp32 master with bf16 gradients.
template <class F>
void dispatch_types(DType target, DType grad, F&& f) {
  if (target == DType::f32 && grad == DType::bf16) return f(float{}, bf16{});
  if (target == DType::f32 && grad == DType::f32) return f(float{}, float{});
  if (target == DType::bf16 && grad == DType::bf16) return f(bf16{}, bf16{});
  AM_CHECK(false, "AdamW8bit: no update for ", dtype_name(target), " parameters with ", dtype_name(grad), " gradients");
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
    if (quantizes(s.numel)) {
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
  Scalars s;
  const float lr = float(*group.lr);
  s.lr_wd = lr * float(*group.weight_decay);
  const float step = float(u.step);
  s.step_size = lr / (1.0f - std::pow(float(opt_.beta1), step));
  s.bc2_sqrt = std::sqrt(1.0f - std::pow(float(opt_.beta2), step));
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
  const q8::QuantMap& qm = q8::signed_map();
  const q8::QuantMap& qv = q8::unsigned_map();
  TileUpdate update;
  dispatch_types(target, grad, [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    with_bool(std::abs(s.w1) < 0.5f, [&](auto lo1) {
      with_bool(std::abs(s.w2) < 0.5f, [&](auto lo2) {
        constexpr bool L1 = decltype(lo1)::value, L2 = decltype(lo2)::value;
        update = [=, &layout, &segments, &qm, &qv](const Tile& t) {
          P* p = static_cast<P*>(t.target);
          const G* g = static_cast<const G*>(t.grad);
          const Layout& l = layout[t.seg];
          const int64_t at = t.begin - segments[t.seg].begin;  // element offset inside the segment
          if (!l.quantized) {
            adamw8bit_kernel<L1, L2>(p, g, dense_m + l.dense_at + at, dense_v + l.dense_at + at, t.n, s);
            return;
          }
          // Tiles start on block boundaries and hold whole blocks (tile_multiple): dequantize, update with the
          // new moments unrounded, quantize them back.
          thread_local std::vector<float> m, v;
          m.resize(size_t(t.n));
          v.resize(size_t(t.n));
          uint8_t* cm = codes_m + l.codes_at + at;
          uint8_t* cv = codes_v + l.codes_at + at;
          float* sm = scale_m + l.scales_at + at / bs;
          float* sv = scale_v + l.scales_at + at / bs;
          const int64_t blocks = t.n / bs;
          for (int64_t b = 0; b < blocks; ++b) {
            q8::dequantize_block(qm, cm + b * bs, sm[b], bs, m.data() + b * bs);
            q8::dequantize_block(qv, cv + b * bs, sv[b], bs, v.data() + b * bs);
          }
          adamw8bit_kernel<L1, L2>(p, g, m.data(), v.data(), t.n, s);
          for (int64_t b = 0; b < blocks; ++b) {
            sm[b] = q8::quantize_block(qm, m.data() + b * bs, bs, cm + b * bs);
            sv[b] = q8::quantize_block(qv, v.data() + b * bs, bs, cv + b * bs);
          }
        };
      });
    });
  });
  return update;
}

}  // namespace automodel::optim

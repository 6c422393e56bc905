// Oracle entries for components/optim: N optimizer steps, gradient clipping, the 8-bit state's maps and
// quantizer.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "components/optim/adamw8bit.h"
#include "components/optim/optimizer.h"
#include "kernels/cpu/quant8.h"
#include "ops/view.h"
#include "registry.h"

namespace automodel::oracle {

namespace {

// exp_avg / exp_avg_sq of parameter `name` from an AdamW8bit state_dict, dequantized where it is 8-bit.
Tensor moment_of(const std::map<std::string, Tensor>& st, const std::string& name, bool second, int64_t numel) {
  const std::string key = name + (second ? ".exp_avg_sq" : ".exp_avg");
  if (st.count(key)) return ops::clone(st.at(key)).as_strided({numel}, {1}, 0);
  const Tensor codes = ops::contiguous(st.at(key + ".codes")), scale = ops::contiguous(st.at(key + ".scale"));
  const auto* c = static_cast<const uint8_t*>(codes.raw_data());
  const cpu::q8::QuantMap& map = second ? cpu::q8::unsigned_map() : cpu::q8::signed_map();
  const int64_t bs = numel / scale.numel();
  Tensor out = Tensor::empty({numel}, DType::f32);
  for (int64_t b = 0; b < scale.numel(); ++b)
    cpu::q8::dequantize_block(map, c + b * bs, scale.data<float>()[b], bs, out.data<float>() + b * bs);
  return out;
}

// Inputs p0..p{k-1} (initial parameters) and g{s}_{j} (gradient of parameter j at step s).
// params: optimizer (adamw | adam | sgd | adamw8bit), steps, lr, weight_decay, betas / eps or
// momentum / dampening / nesterov, block_size (adamw8bit), optional groups [[lr, wd], ...] with
// group_of [group per parameter], flat (true: each group's parameters live in one
// nn::FlatParameters buffer), master (bf16 parameters with fp32 master weights), moments (adamw8bit:
// output the moments too).
// Outputs: the parameters after the steps; with master their fp32 masters; with moments
// exp_avg_j, exp_avg_sq_j (f32, flat) for each parameter j.
std::vector<Tensor> optim_steps(const OpCall& c) {
  const auto& pr = c.params;
  const int k = pr.at("num_params").get<int>();
  const int steps = pr.at("steps").get<int>();
  const bool flat = pr.value("flat", false);
  std::vector<std::pair<double, double>> gdefs;
  if (pr.contains("groups"))
    for (const auto& g : pr["groups"]) gdefs.push_back({g[0].get<double>(), g[1].get<double>()});
  else
    gdefs.push_back({pr.at("lr").get<double>(), pr.at("weight_decay").get<double>()});
  std::vector<int> group_of(static_cast<size_t>(k), 0);
  if (pr.contains("group_of")) group_of = pr["group_of"].get<std::vector<int>>();

  std::vector<Tensor> params;  // per-tensor path: own copies; flat path: views into the buffers
  std::vector<optim::ParamGroup> groups(gdefs.size());
  for (size_t gi = 0; gi < gdefs.size(); ++gi) {
    groups[gi].lr = gdefs[gi].first;
    groups[gi].weight_decay = gdefs[gi].second;
  }
  std::vector<Tensor> grad_views(static_cast<size_t>(k));
  if (!flat) {
    for (int j = 0; j < k; ++j) {
      Tensor p = ops::clone(c.in("p" + std::to_string(j)));
      params.push_back(p);
      groups[size_t(group_of[size_t(j)])].params.push_back({"p" + std::to_string(j), p});
    }
  } else {
    params.resize(static_cast<size_t>(k));
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      nn::FlatParameters f;
      int64_t total = 0;
      DType dt = DType::f32;
      for (int j = 0; j < k; ++j) {
        if (group_of[size_t(j)] != int(gi)) continue;
        const Tensor& p0 = c.in("p" + std::to_string(j));
        dt = p0.dtype();
        f.slots.push_back({"p" + std::to_string(j), total, p0.numel()});
        total += (p0.numel() + 15) / 16 * 16;
      }
      f.data = Tensor::zeros({total}, dt);
      f.grad = Tensor::zeros({total}, dt);
      for (const auto& slot : f.slots) {
        const int j = std::stoi(slot.name.substr(1));
        const Tensor& p0 = c.in(slot.name);
        Tensor view = f.data.as_strided(p0.shape(), contiguous_strides(p0.shape()), slot.offset);
        ops::copy_into(view, p0);
        params[size_t(j)] = view;
        grad_views[size_t(j)] = f.grad.as_strided(p0.shape(), contiguous_strides(p0.shape()), slot.offset);
      }
      groups[gi].flat.push_back(f);
    }
  }

  const std::string name = pr.at("optimizer").get<std::string>();
  std::unique_ptr<optim::Optimizer> opt;
  if (name == "adamw8bit") {
    optim::AdamW8bitOptions o;
    o.lr = gdefs[0].first;
    o.beta1 = pr.value("beta1", 0.9);
    o.beta2 = pr.value("beta2", 0.999);
    o.eps = pr.value("eps", 1e-8);
    o.block_size = pr.value("block_size", int64_t(256));
    opt = std::make_unique<optim::AdamW8bit>(groups, o);
  } else if (name == "adamw" || name == "adam") {
    optim::AdamOptions o;
    o.lr = gdefs[0].first;
    o.beta1 = pr.value("beta1", 0.9);
    o.beta2 = pr.value("beta2", 0.999);
    o.eps = pr.value("eps", 1e-8);
    if (name == "adamw")
      opt = std::make_unique<optim::AdamW>(groups, o);
    else
      opt = std::make_unique<optim::Adam>(groups, o);
  } else {
    AM_CHECK(name == "sgd", "optim_steps: unknown optimizer '", name, "'");
    optim::SGDOptions o;
    o.lr = gdefs[0].first;
    o.momentum = pr.value("momentum", 0.0);
    o.dampening = pr.value("dampening", 0.0);
    o.nesterov = pr.value("nesterov", false);
    opt = std::make_unique<optim::SGD>(groups, o);
  }
  const bool master = pr.value("master", false);
  opt->set_fp32_master_weights(master);
  for (int s = 0; s < steps; ++s) {
    for (int j = 0; j < k; ++j) {
      const Tensor& g = c.in("g" + std::to_string(s) + "_" + std::to_string(j));
      if (flat)
        ops::copy_into(grad_views[size_t(j)], g);
      else
        params[size_t(j)].set_grad(ops::clone(g));
    }
    opt->step();
  }
  std::vector<Tensor> out;
  for (const Tensor& p : params) out.push_back(ops::clone(p));
  const auto st = opt->state_dict();
  if (master)
    for (int j = 0; j < k; ++j) out.push_back(ops::clone(st.at("p" + std::to_string(j) + ".fp32_master")));
  if (pr.value("moments", false))
    for (int j = 0; j < k; ++j)
      for (bool second : {false, true})
        out.push_back(moment_of(st, "p" + std::to_string(j), second, params[size_t(j)].numel()));
  return out;
}

// Outputs: torchao's signed and unsigned dynamic maps (f32 [256] each) as we build them.
std::vector<Tensor> quant8_maps(const OpCall&) {
  std::vector<Tensor> out;
  for (const cpu::q8::QuantMap* m : {&cpu::q8::signed_map(), &cpu::q8::unsigned_map()}) {
    Tensor t = Tensor::empty({256}, DType::f32);
    std::memcpy(t.raw_data(), m->values(), 256 * sizeof(float));
    out.push_back(t);
  }
  return out;
}

// Input x (f32 [n], n a multiple of block_size); params block_size, signed. Outputs: codes (i32 [n]) and scales
// (f32 [n / block_size]) of the block-wise quantization.
std::vector<Tensor> quant8_quantize(const OpCall& c) {
  const Tensor x = ops::contiguous(c.in("x"));
  const int64_t bs = c.params.at("block_size").get<int64_t>(), n = x.numel();
  AM_CHECK(bs > 0 && n % bs == 0, "quant8_quantize: ", n, " elements are not whole blocks of ", bs);
  const cpu::q8::QuantMap& map = c.params.at("signed").get<bool>() ? cpu::q8::signed_map() : cpu::q8::unsigned_map();
  std::vector<uint8_t> codes(static_cast<size_t>(n));
  Tensor scales = Tensor::empty({n / bs}, DType::f32), out = Tensor::empty({n}, DType::i32);
  for (int64_t b = 0; b < n / bs; ++b)
    scales.data<float>()[b] = cpu::q8::quantize_block(map, x.data<float>() + b * bs, bs, codes.data() + b * bs);
  for (int64_t i = 0; i < n; ++i) out.data<int32_t>()[i] = codes[size_t(i)];
  return {out, scales};
}

// Inputs g0..g{k-1}; params max_norm, norm_type (number or "inf"). Outputs: [total norm (f64
// scalar), clipped gradients...].
std::vector<Tensor> clip_grad_norm_op(const OpCall& c) {
  const int k = c.params.at("num_grads").get<int>();
  const auto& nt = c.params.at("norm_type");
  const double norm_type = nt.is_string() ? std::numeric_limits<double>::infinity() : nt.get<double>();
  std::vector<Tensor> params;
  for (int j = 0; j < k; ++j) {
    const Tensor& g = c.in("g" + std::to_string(j));
    Tensor p = Tensor::zeros(g.shape(), g.dtype());
    p.set_grad(ops::clone(g));
    params.push_back(p);
  }
  const double total = optim::clip_grad_norm(params, c.params.at("max_norm").get<double>(), norm_type);
  std::vector<Tensor> out = {Tensor::scalar(total, DType::f64)};
  for (const Tensor& p : params) out.push_back(p.grad());
  return out;
}

}  // namespace

ORACLE_OP("optim_steps", optim_steps);
ORACLE_OP("clip_grad_norm", clip_grad_norm_op);
ORACLE_OP("quant8_maps", quant8_maps);
ORACLE_OP("quant8_quantize", quant8_quantize);

}  // namespace automodel::oracle

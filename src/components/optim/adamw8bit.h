#pragma once
// torchao.optim.AdamW8bit: AdamW with exp_avg / exp_avg_sq stored in 8 bits (quant8.h: block-wise absmax scales,
// torchao's signed / unsigned dynamic maps), 1 byte each per element plus one fp32 scale per block, instead of 8
// bytes. As torchao, a parameter is quantized when it has at least 4096 elements and block_size divides its
// number of elements; other parameters keep fp32 state. The update is torchao's single_param_adam in fp32 on the
// parameter (or its fp32 master): bias corrections in fp32, both moments by lerp, the new moments used unrounded
// and then stored quantized.
//
// state_dict() keys per parameter: quantized "<name>.exp_avg.codes" / "<name>.exp_avg_sq.codes" (i32, the codes'
// bytes in element order, four to an i32: safetensors has no u8 for us to write) with "<name>.exp_avg.scale" /
// "<name>.exp_avg_sq.scale" (f32, one per block); otherwise "<name>.exp_avg" / "<name>.exp_avg_sq" (f32).
#include <cstdint>
#include <map>
#include <vector>

#include "components/optim/optimizer.h"

namespace automodel::optim {

struct AdamW8bitOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // group default
  int64_t block_size = 256;
};

class AdamW8bit : public Optimizer {
 public:
  static constexpr int64_t kMinQuantizedNumel = 4096;  // torchao (after bitsandbytes): smaller tensors stay fp32

  // Parameters must be f32 or bf16.
  AdamW8bit(std::vector<ParamGroup> groups, AdamW8bitOptions opt = {});
  AdamW8bit(const NamedTensors& params, AdamW8bitOptions opt = {});
  const char* name() const override { return "AdamW8bit"; }
  const AdamW8bitOptions& options() const { return opt_; }
  // Whether a parameter of n elements gets 8-bit state.
  bool quantizes(int64_t numel) const { return numel >= kMinQuantizedNumel && numel % opt_.block_size == 0; }

 protected:
  std::vector<std::string> state_keys() const override { return {"exp_avg", "exp_avg_sq"}; }
  void init_state(Unit& u) override;
  void state_views(Unit& u, std::map<std::string, Tensor>& out) override;
  int64_t tile_multiple() const override { return opt_.block_size; }
  bool rounds_bf16() const override { return true; }
  TileUpdate prepare(const ParamGroup& group, Unit& u, DType target, DType grad) override;

 private:
  // Where a segment's state lives in its unit's state tensors: u.state = {codes exp_avg, codes exp_avg_sq (bytes,
  // in i32 tensors), scales exp_avg, scales exp_avg_sq, fp32 exp_avg, fp32 exp_avg_sq}.
  struct Layout {
    bool quantized;
    int64_t codes_at;   // byte offset (quantized)
    int64_t scales_at;  // element offset (quantized)
    int64_t dense_at;   // element offset (fp32 state)
  };
  AdamW8bitOptions opt_;
  std::map<const Unit*, std::vector<Layout>> layout_;
};

}  // namespace automodel::optim

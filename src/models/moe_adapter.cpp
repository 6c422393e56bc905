#include "models/moe_adapter.h"

#include "core/error.h"
#include "ops/concat.h"
#include "ops/view.h"

namespace automodel::models {

namespace {

enum class Kind { other, router, gate_up, down };

// Which MoE parameter `name` is, and the prefix before "mlp." (e.g. "model.layers.3.").
Kind kind_of(const std::string& name, std::string* prefix) {
  for (auto [suffix, kind] : {std::pair{std::string("mlp.experts.gate_up_proj"), Kind::gate_up},
                              std::pair{std::string("mlp.experts.down_proj"), Kind::down},
                              std::pair{std::string("mlp.gate.weight"), Kind::router}}) {
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        (name.size() == suffix.size() || name[name.size() - suffix.size() - 1] == '.')) {
      *prefix = name.substr(0, name.size() - suffix.size());
      return kind;
    }
  }
  return Kind::other;
}

}  // namespace

std::vector<HfTensorSpec> MoeStateDictAdapter::hf_layout(const std::string& name, const Shape& shape) const {
  std::string prefix;
  const Kind kind = kind_of(name, &prefix);
  const std::string block = prefix + names_.block + ".";
  if (kind == Kind::other) return {{name, shape}};
  if (kind == Kind::router) return {{block + "gate.weight", shape}};
  AM_CHECK(shape.size() == 3, "grouped expert tensor '", name, "' must be [E, out, in], got ", shape_str(shape));
  std::vector<HfTensorSpec> out;
  for (int64_t e = 0; e < shape[0]; ++e) {
    const std::string expert = block + "experts." + std::to_string(e) + ".";
    if (kind == Kind::gate_up) {
      out.push_back({expert + names_.gate + ".weight", {shape[1] / 2, shape[2]}});
      out.push_back({expert + names_.up + ".weight", {shape[1] / 2, shape[2]}});
    } else {
      out.push_back({expert + names_.down + ".weight", {shape[1], shape[2]}});
    }
  }
  return out;
}

std::vector<std::vector<HfTensorSpec>> MoeStateDictAdapter::hf_read_layouts(const std::string& name,
                                                                            const Shape& shape) const {
  std::string prefix;
  const Kind kind = kind_of(name, &prefix);
  if (kind == Kind::other) return {{{name, shape}}};
  // The per-expert layout, then the grouped one under transformers 5's in-memory names.
  return {hf_layout(name, shape), {{name, shape}}};
}

Tensor MoeStateDictAdapter::from_hf(const std::string& name, std::vector<Tensor> parts) const {
  std::string prefix;
  const Kind kind = kind_of(name, &prefix);
  if (kind == Kind::other || kind == Kind::router || (parts.size() == 1 && parts[0].dim() == 3))
    return StateDictAdapter::from_hf(name, std::move(parts));
  // Per expert: [gate_0, up_0, gate_1, up_1, ...] or [down_0, down_1, ...], each [out, in].
  const int64_t per_expert = kind == Kind::gate_up ? 2 : 1;
  const int64_t experts = int64_t(parts.size()) / per_expert;
  const int64_t out = parts[0].size(0) * per_expert, in = parts[0].size(1);
  return ops::reshape(ops::concat(parts, 0), {experts, out, in});
}

std::vector<Tensor> MoeStateDictAdapter::to_hf(const std::string& name, const Tensor& value) const {
  std::string prefix;
  const Kind kind = kind_of(name, &prefix);
  if (kind == Kind::other || kind == Kind::router) return {value};
  const int64_t experts = value.size(0), out = value.size(1), in = value.size(2);
  const int64_t pieces = kind == Kind::gate_up ? 2 : 1;
  return ops::split(ops::reshape(value, {experts * out, in}),
                    std::vector<int64_t>(size_t(experts * pieces), out / pieces), 0);
}

}  // namespace automodel::models

#include "nn/module.h"

#include <cstring>

#include "core/error.h"

namespace automodel::nn {

static std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

void Module::register_parameter(const std::string& name, Tensor* slot) {
  for (auto& [n, p] : params_) AM_CHECK(n != name, "parameter '", name, "' registered twice");
  params_.emplace_back(name, slot);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, slot] : params_)
    if (slot->defined()) out.emplace_back(join(prefix, name), *slot);
  for (auto& [name, child] : children_) {
    auto sub = child->named_parameters(join(prefix, name));
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules(const std::string& prefix) {
  std::vector<std::pair<std::string, Module*>> out{{prefix, this}};
  for (auto& [name, child] : children_) {
    auto sub = child->named_modules(join(prefix, name));
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

Tensor Module::parameter(const std::string& dotted_name) const {
  auto all = named_parameters();
  for (auto& [name, t] : all)
    if (name == dotted_name) return t;
  std::string near;
  size_t shown = 0;
  std::string stem = dotted_name.substr(0, dotted_name.rfind('.') == std::string::npos ? 0 : dotted_name.rfind('.'));
  for (auto& [name, t] : all)
    if (shown < 5 && !stem.empty() && name.rfind(stem, 0) == 0) {
      near += (shown++ ? ", " : "") + name;
    }
  throw Error("no parameter named '" + dotted_name + "'", "Module::parameter",
              near.empty() ? "list the names with named_parameters()" : "parameters nearby: " + near);
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters())
    if (!trainable_only || t.requires_grad()) n += t.numel();
  return n;
}

void Module::set_requires_grad(bool on) {
  for (auto& [name, t] : named_parameters()) t.set_requires_grad(on);
}

void Module::zero_grad() {
  for (auto& [name, t] : named_parameters()) {
    Tensor g = t.grad();
    if (g.defined() && g.is_contiguous()) std::memset(g.raw_data(), 0, g.nbytes());
  }
}

}  // namespace automodel::nn

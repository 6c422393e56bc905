#pragma once
// Module: a named tree of parameters and sub-modules. Dotted names (`model.layers.0.self_attn.
// q_proj.weight`) are the Hugging Face names, so loading and saving are name-for-name.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace automodel::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter, this module's own first, then each child's in registration order.
  std::vector<std::pair<std::string, Tensor>> named_parameters(const std::string& prefix = "") const;
  std::vector<Tensor> parameters() const;
  // This module (named `prefix`) and every descendant.
  std::vector<std::pair<std::string, Module*>> named_modules(const std::string& prefix = "");
  // The parameter with this dotted name; an Error listing near names when absent.
  Tensor parameter(const std::string& dotted_name) const;
  int64_t num_parameters(bool trainable_only = false) const;

  void set_requires_grad(bool on);
  void zero_grad();  // zeroes gradients in place (flat buffers stay bound)

 protected:
  // Registers a member tensor; the member stays the owner, so the module must not move.
  void register_parameter(const std::string& name, Tensor* slot);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    children_.emplace_back(name, module);
    return module;
  }

 private:
  std::vector<std::pair<std::string, Tensor*>> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// A list of modules named "0", "1", ... (transformers' nn.ModuleList).
template <class M>
class ModuleList : public Module {
 public:
  void append(std::shared_ptr<M> m) { items_.push_back(register_module(std::to_string(items_.size()), std::move(m))); }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_[i]; }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

}  // namespace automodel::nn

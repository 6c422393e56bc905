#include "nn/flat_params.h"

#include <map>
#include <numeric>

#include "core/allocator.h"
#include "core/error.h"
#include "ops/view.h"

namespace automodel::nn {

namespace {

// Slots of `params`, each starting on a multiple of `align` elements; returns the end.
int64_t lay_out(const NamedParameters& params, DType dtype, int64_t align, std::vector<FlatParameters::Slot>& slots) {
  AM_CHECK(!params.empty(), "flatten_parameters: no parameters to flatten");
  int64_t total = 0;
  for (const auto& [name, t] : params) {
    AM_CHECK(t.dtype() == dtype, "flatten_parameters: '", name, "' is ", dtype_name(t.dtype()), " but '",
             params[0].first, "' is ", dtype_name(dtype), "; one buffer holds one dtype");
    slots.push_back({name, total, t.numel()});
    total += (t.numel() + align - 1) / align * align;
  }
  return total;
}

// Copies each parameter into its slot of flat.data (a 1-D view at some offset of its storage) and rebinds it there.
void bind_to_slots(const NamedParameters& params, const FlatParameters& flat) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& t = params[i].second;
    const int64_t at = flat.data.offset() + flat.slots[i].offset;
    Tensor view = flat.data.as_strided(t.shape(), contiguous_strides(t.shape()), at);
    ops::copy_into(view, t);
    TensorImpl* impl = t.impl();
    impl->storage = flat.data.storage();
    impl->strides = contiguous_strides(impl->shape);
    impl->offset = at;
    if (impl->requires_grad)
      impl->grad =
          flat.grad.as_strided(t.shape(), contiguous_strides(t.shape()), flat.grad.offset() + flat.slots[i].offset);
  }
}

// The lists end to end in one data and one grad allocation, its length rounded up to a multiple of length_multiple
// (the last buffer takes the padding), each slot on a multiple of slot_alignment and of the allocator's alignment.
std::vector<FlatParameters> flatten_lists(const std::vector<NamedParameters>& lists, int64_t length_multiple,
                                          int64_t slot_alignment) {
  AM_CHECK(!lists.empty() && !lists[0].empty(), "flatten_parameters: no parameters to flatten");
  AM_CHECK(length_multiple >= 1 && slot_alignment >= 1, "flatten_parameters: multiples must be >= 1");
  const DType dtype = lists[0][0].second.dtype();
  const int64_t align = std::lcm(int64_t(CachingAllocator::kAlignment / dtype_size(dtype)), slot_alignment);
  std::vector<FlatParameters> flats(lists.size());
  std::vector<int64_t> begin(lists.size());
  int64_t total = 0;
  for (size_t i = 0; i < lists.size(); ++i) {
    begin[i] = total;
    total += lay_out(lists[i], dtype, align, flats[i].slots);
  }
  total = (total + length_multiple - 1) / length_multiple * length_multiple;
  const Tensor data = Tensor::zeros({total}, dtype);
  const Tensor grad = Tensor::zeros({total}, dtype);
  for (size_t i = 0; i < lists.size(); ++i) {
    const int64_t end = i + 1 < lists.size() ? begin[i + 1] : total;
    flats[i].data = data.as_strided({end - begin[i]}, {1}, data.offset() + begin[i]);
    flats[i].grad = grad.as_strided({end - begin[i]}, {1}, grad.offset() + begin[i]);
    bind_to_slots(lists[i], flats[i]);
  }
  return flats;
}

}  // namespace

FlatParameters flatten_parameters(const NamedParameters& params) { return flatten_parameter_lists({params})[0]; }

FlatParameters flatten_parameters(Module& module) {
  auto params = module.named_parameters();
  AM_CHECK(!params.empty(), "flatten_parameters: module has no parameters");
  return flatten_parameters(params);
}

std::vector<FlatParameters> flatten_parameter_lists(const std::vector<NamedParameters>& lists) {
  return flatten_lists(lists, 1, 1);
}

FlatParameters flatten_parameters(const NamedParameters& params, int64_t length_multiple, int64_t slot_alignment) {
  return flatten_lists({params}, length_multiple, slot_alignment)[0];
}

std::vector<NamedParameters> parameters_by_module(const Module& root, const std::vector<std::string>& modules,
                                                  bool trainable_only) {
  auto owner_of = [&](const std::string& name) -> int {
    for (size_t m = 0; m < modules.size(); ++m)
      if (name.size() > modules[m].size() && name.compare(0, modules[m].size(), modules[m]) == 0 &&
          name[modules[m].size()] == '.')
        return int(m);
    return -1;
  };
  std::vector<NamedParameters> lists;
  std::map<int, size_t> list_of_module;
  int current = -2;  // owner of the list being filled (-1: outside every module)
  for (auto& [name, t] : root.named_parameters()) {
    if (trainable_only && !t.requires_grad()) continue;
    const int owner = owner_of(name);
    if (owner != current || lists.empty()) {
      AM_CHECK(owner < 0 || !list_of_module.count(owner), "flatten_parameters: the parameters of '",
               modules[size_t(owner)], "' are not consecutive ('", name, "' follows others)");
      if (owner >= 0) list_of_module[owner] = lists.size();
      lists.emplace_back();
      current = owner;
    }
    lists.back().emplace_back(name, t);
  }
  return lists;
}

}  // namespace automodel::nn

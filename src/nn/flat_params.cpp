#include "nn/flat_params.h"

#include "core/allocator.h"
#include "core/error.h"
#include "ops/view.h"

namespace automodel::nn {

FlatParameters flatten_parameters(Module& module) {
  auto params = module.named_parameters();
  AM_CHECK(!params.empty(), "flatten_parameters: module has no parameters");
  DType dtype = params[0].second.dtype();
  const int64_t align = int64_t(CachingAllocator::kAlignment / dtype_size(dtype));
  FlatParameters flat;
  int64_t total = 0;
  for (auto& [name, t] : params) {
    AM_CHECK(t.dtype() == dtype, "flatten_parameters: '", name, "' is ", dtype_name(t.dtype()), " but '",
             params[0].first, "' is ", dtype_name(dtype), "; one buffer holds one dtype");
    flat.slots.push_back({name, total, t.numel()});
    total += (t.numel() + align - 1) / align * align;
  }
  flat.data = Tensor::zeros({total}, dtype);
  flat.grad = Tensor::zeros({total}, dtype);
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor& t = params[i].second;
    const FlatParameters::Slot& slot = flat.slots[i];
    Tensor view = flat.data.as_strided(t.shape(), contiguous_strides(t.shape()), slot.offset);
    ops::copy_into(view, t);
    TensorImpl* impl = t.impl();
    impl->storage = flat.data.storage();
    impl->strides = contiguous_strides(impl->shape);
    impl->offset = slot.offset;
    if (impl->requires_grad) impl->grad = flat.grad.as_strided(t.shape(), contiguous_strides(t.shape()), slot.offset);
  }
  return flat;
}

}  // namespace automodel::nn

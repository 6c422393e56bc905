#pragma once
// Kernel scratch memory from the caching allocator (so its statistics see it), zeroed and 64-byte
// aligned, handed out as successive tiles.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/allocator.h"

namespace automodel::cpu {

template <class C>
class Scratch {
 public:
  explicit Scratch(int64_t n)
      : data_(static_cast<C*>(CachingAllocator::cpu().allocate(size_t(n) * sizeof(C)))), bytes_(size_t(n) * sizeof(C)) {
    std::fill(data_, data_ + n, C(0));
  }
  ~Scratch() { CachingAllocator::cpu().deallocate(data_, bytes_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  // Successive tiles; keep sizes multiples of the vector width so every tile stays aligned.
  C* take(int64_t n) {
    C* p = data_ + used_;
    used_ += n;
    return p;
  }
  C* data() const { return data_; }

 private:
  C* data_;
  size_t bytes_;
  int64_t used_ = 0;
};

}  // namespace automodel::cpu

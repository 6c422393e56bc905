#include "core/allocator.h"

#include <malloc.h>
#include <unistd.h>

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "core/error.h"

namespace automodel {

CachingAllocator& CachingAllocator::cpu() {
  static CachingAllocator instance;
  return instance;
}

size_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page_size = ::sysconf(_SC_PAGE_SIZE);
  size_t bytes = 0;
  if (pages <= 0 || page_size <= 0 || __builtin_mul_overflow(size_t(pages), size_t(page_size), &bytes))
    return std::numeric_limits<size_t>::max();  // unknown: no limit
  return bytes;
}

std::string byte_count(size_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) v /= 1024, ++u;
  char buf[64];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%zu bytes", bytes);
  else
    std::snprintf(buf, sizeof buf, "%zu bytes (%.1f %s)", bytes, v, units[u]);
  return buf;
}

size_t CachingAllocator::bucket_size(size_t nbytes) {
  // Rounding up must not wrap around to a small block.
  if (nbytes > std::numeric_limits<size_t>::max() / 2)
    throw Error("cannot allocate " + byte_count(nbytes) + ": the size is beyond any address space", "CachingAllocator",
                "a tensor size was computed from out-of-range numbers; check the config");
  if (nbytes <= 512) return (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  // Four buckets per power of two bound rounding waste to 25%.
  size_t pow2 = std::bit_floor(nbytes);
  size_t step = pow2 / 4;
  return (nbytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  size_t size = bucket_size(nbytes);
  // With memory overcommit such a request may "succeed" and the process die when the pages are touched.
  if (static const size_t physical = physical_memory_bytes(); size > physical)
    throw Error("cannot allocate " + byte_count(size) + " for one tensor: more than this machine's physical memory (" +
                    byte_count(physical) + ")",
                "CachingAllocator::allocate",
                "a size this large comes from the model config or the run's batch / sequence settings; "
                "check them (`automodel inspect DIR` shows the model's sizes)");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.allocations++;
    auto it = free_blocks_.find(size);
    if (it != free_blocks_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats_.cache_hits++;
      stats_.cached_bytes -= size;
      stats_.current_bytes += size;
      if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
      return p;
    }
  }
  void* p = std::aligned_alloc(kAlignment, size);
  if (!p) {
    empty_cache();
    p = std::aligned_alloc(kAlignment, size);
  }
  if (!p)
    throw Error("out of memory allocating " + std::to_string(size) + " bytes", "CachingAllocator::allocate",
                "reduce batch size or sequence length, or enable activation checkpointing");
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.current_bytes += size;
  if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
  return p;
}

void CachingAllocator::deallocate(void* ptr, size_t nbytes) {
  if (!ptr) return;
  if (nbytes == 0) nbytes = 1;
  size_t size = bucket_size(nbytes);
  std::lock_guard<std::mutex> lock(mutex_);
  free_blocks_[size].push_back(ptr);
  stats_.current_bytes -= size;
  stats_.cached_bytes += size;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_bytes = stats_.current_bytes;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, blocks] : free_blocks_)
    for (void* p : blocks) std::free(p);
  free_blocks_.clear();
  stats_.cached_bytes = 0;
  // Blocks below glibc's mmap threshold were carved from the heap; free() alone keeps their pages.
  malloc_trim(0);
}

CachingAllocator::~CachingAllocator() { empty_cache(); }

}  // namespace automodel

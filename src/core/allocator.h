#pragma once
// Caching host allocator: sizes rounded up to buckets (four per power of two), freed blocks kept
// per bucket for reuse, and byte counters (current / peak / cached) that tests and benchmarks read.
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace automodel {

// Installed RAM (sysconf), SIZE_MAX when unknown. A single allocation larger than this is refused up front.
size_t physical_memory_bytes();
// "17179869184 bytes (16.0 GiB)" for messages.
std::string byte_count(size_t bytes);

struct AllocatorStats {
  size_t current_bytes = 0;  // bytes handed out and not yet returned (bucket-rounded)
  size_t peak_bytes = 0;     // maximum of current_bytes since the last reset_peak()
  size_t cached_bytes = 0;   // bytes held in free lists for reuse
  uint64_t allocations = 0;  // allocate() calls
  uint64_t cache_hits = 0;   // allocate() calls served from a free list
};

class CachingAllocator {
 public:
  static constexpr size_t kAlignment = 64;

  // The process-wide CPU allocator.
  static CachingAllocator& cpu();

  void* allocate(size_t nbytes);
  void deallocate(void* ptr, size_t nbytes);

  AllocatorStats stats() const;
  void reset_peak();
  void empty_cache();  // returns every cached block to the system

  static size_t bucket_size(size_t nbytes);

  ~CachingAllocator();

 private:
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;
  AllocatorStats stats_;
};

}  // namespace automodel

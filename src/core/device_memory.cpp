#include "core/device_memory.h"

#include <cstring>

#include "core/allocator.h"

namespace automodel {

namespace {

void* cpu_allocate(size_t nbytes) { return CachingAllocator::cpu().allocate(nbytes); }
void cpu_deallocate(void* data, size_t nbytes) { CachingAllocator::cpu().deallocate(data, nbytes); }

template <class T>
void fill_as(void* dst, const void* value, int64_t count) {
  T v;
  std::memcpy(&v, value, sizeof(T));
  T* p = static_cast<T*>(dst);
  for (int64_t i = 0; i < count; ++i) p[i] = v;
}

void cpu_fill(void* dst, const void* value, size_t elem_size, int64_t count) {
  const unsigned char* bytes = static_cast<const unsigned char*>(value);
  bool zero = true;
  for (size_t i = 0; i < elem_size; ++i) zero = zero && bytes[i] == 0;
  if (zero) {
    std::memset(dst, 0, elem_size * size_t(count));
    return;
  }
  switch (elem_size) {
    case 1: std::memset(dst, bytes[0], size_t(count)); return;
    case 2: fill_as<uint16_t>(dst, value, count); return;
    case 4: fill_as<uint32_t>(dst, value, count); return;
    case 8: fill_as<uint64_t>(dst, value, count); return;
  }
  for (int64_t i = 0; i < count; ++i) std::memcpy(static_cast<char*>(dst) + size_t(i) * elem_size, value, elem_size);
}

void cpu_copy(void* dst, const void* src, size_t nbytes) {
  if (nbytes > 0) std::memcpy(dst, src, nbytes);
}

constexpr DeviceMemory kCpuMemory{cpu_allocate, cpu_deallocate, cpu_fill, cpu_copy, cpu_copy};

}  // namespace

const DeviceMemory& cpu_device_memory() { return kCpuMemory; }

const DeviceMemory& device_memory(Device device) { return device.is_cpu() ? kCpuMemory : cuda_device_memory(device); }

}  // namespace automodel

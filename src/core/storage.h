#pragma once
// Storage: one block of bytes on a device that tensors view. Either owned (from the device's allocator,
// core/device_memory.h) or borrowed (e.g. an mmap'd safetensors file) with a release callback.
#include <cstddef>
#include <functional>
#include <memory>

#include "core/device.h"
#include "core/device_memory.h"

namespace automodel {

class Storage {
 public:
  static std::shared_ptr<Storage> allocate(size_t nbytes, Device device = cpu_device());
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, std::function<void()> release,
                                       Device device = cpu_device());
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }

  // Sharded data parallel keeps a layer's full parameters only while the layer runs: its storage gives its memory
  // back (data() is null until restored) and later gets new memory of the same size (contents undefined), while the
  // tensors that view it, the autograd graph's saved ones included, stay valid. Owned storage only.
  void free_memory();
  void restore_memory();
  bool has_memory() const { return data_ != nullptr || nbytes_ == 0; }
  Device device() const { return device_; }

 private:
  Storage() = default;
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  const DeviceMemory* memory_ = nullptr;  // owned storage: the allocator it came from
  std::function<void()> release_;         // borrowed storage: how to give it back
};

}  // namespace automodel

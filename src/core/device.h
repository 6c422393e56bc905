#pragma once
// Where a tensor's bytes live. Only the CPU exists today; CUDA is the seam the kernels/cuda
// backend plugs into.
#include <cstdint>
#include <string>

namespace automodel {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

inline Device cpu_device() { return Device{}; }

}  // namespace automodel

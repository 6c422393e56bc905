// io/safetensors.cpp: the bytes as a .safetensors file, read the way model loading reads it (header validation,
// every tensor in its load dtype and converted to f32, zero-copy views and copies), plus load_safetensors.
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  const std::string path = (fuzz::scratch_dir() / "model.safetensors").string();
  fuzz::write_file(path, fuzz::as_text(data, size));
  fuzz::accept_errors([&] {
    io::SafetensorsReader reader(path);
    for (const std::string& name : reader.names()) {
      const io::TensorInfo& info = reader.info(name);
      (void)reader.raw_bytes(name);
      fuzz::accept_errors([&] { (void)reader.get(name); });
      if (info.dtype != "F32") fuzz::accept_errors([&] { (void)reader.get(name, DType::f32); });
    }
  });
  fuzz::accept_errors([&] { (void)io::load_safetensors(path); });
  return 0;
}

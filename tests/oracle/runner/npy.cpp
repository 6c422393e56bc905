#include "npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <vector>

namespace automodel::oracle {

Tensor read_npy(const std::string& path, const std::string& as) {
  std::ifstream in(path, std::ios::binary);
  AM_CHECK(in, "cannot open ", path);
  char magic[8];
  in.read(magic, 8);
  AM_CHECK(std::memcmp(magic, "\x93NUMPY", 6) == 0, path, " is not an .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t h;
    in.read(reinterpret_cast<char*>(&h), 2);
    header_len = h;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  std::smatch m;
  AM_CHECK(std::regex_search(header, m, std::regex("'descr':\\s*'([^']+)'")), "no descr in ", path);
  std::string descr = m[1];
  AM_CHECK(header.find("'fortran_order': False") != std::string::npos, path, " is Fortran-ordered");
  AM_CHECK(std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)")), "no shape in ", path);
  Shape shape;
  std::string dims = m[1];
  std::regex num("\\d+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator(); ++it)
    shape.push_back(std::stoll(it->str()));
  DType dt;
  if (descr == "<f4")
    dt = DType::f32;
  else if (descr == "<f8")
    dt = DType::f64;
  else if (descr == "<i4")
    dt = DType::i32;
  else if (descr == "<i8")
    dt = DType::i64;
  else if (descr == "|b1")
    dt = DType::b8;
  else if (descr == "<u2" && as == "bf16")
    dt = DType::bf16;
  else if (descr == "<u2" && as == "f16")
    dt = DType::f16;
  else
    throw Error("unsupported npy dtype " + descr, path);
  Tensor t = Tensor::empty(shape, dt);
  in.read(static_cast<char*>(t.raw_data()), std::streamsize(t.nbytes()));
  AM_CHECK(in, "truncated data in ", path);
  return t;
}

void write_npy(const std::string& path, const Tensor& t_in) {
  Tensor t = t_in;
  if (t.dtype() == DType::bf16 || t.dtype() == DType::f16 || !t.is_contiguous()) {
    std::vector<double> v = t.to_doubles();
    DType dt = (t.dtype() == DType::bf16 || t.dtype() == DType::f16) ? DType::f32 : t.dtype();
    t = Tensor::from_values(v, t.shape(), dt);
  }
  std::string descr;
  switch (t.dtype()) {
    case DType::f32: descr = "<f4"; break;
    case DType::f64: descr = "<f8"; break;
    case DType::i32: descr = "<i4"; break;
    case DType::i64: descr = "<i8"; break;
    case DType::b8: descr = "|b1"; break;
    default: throw Error("cannot write dtype to npy", path);
  }
  std::string shape = "(";
  for (int64_t d : t.shape()) shape += std::to_string(d) + ",";
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream out(path, std::ios::binary);
  AM_CHECK(out, "cannot write ", path);
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = uint16_t(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out.write(header.data(), std::streamsize(header.size()));
  out.write(static_cast<const char*>(t.raw_data()), std::streamsize(t.nbytes()));
}

}  // namespace automodel::oracle

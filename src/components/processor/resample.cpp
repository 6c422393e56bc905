#include "components/processor/resample.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace automodel::processor {
namespace {

// Pillow keeps 8 bits of result and 2 bits of headroom for filters with negative lobes in a 32-bit int.
constexpr int kPrecisionBits = 32 - 8 - 2;

double box_filter(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }

double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_filter(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= M_PI;
  // Pillow's constants are floats (0.54f, 0.46f); their double values matter for the last bit.
  return std::sin(x) / x * (double(0.54f) + double(0.46f) * std::cos(x));
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}

double lanczos_filter(double x) { return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0; }

struct Filter {
  double (*weight)(double);
  double support;
};

Filter filter_of(Resample r) {
  switch (r) {
    case Resample::kBox: return {box_filter, 0.5};
    case Resample::kBilinear: return {bilinear_filter, 1.0};
    case Resample::kHamming: return {hamming_filter, 1.0};
    case Resample::kBicubic: return {bicubic_filter, 2.0};
    case Resample::kLanczos: return {lanczos_filter, 3.0};
    case Resample::kNearest: break;
  }
  throw Error("nearest-neighbour resizing is not supported", "resize_like_pil");
}

// For each output position along one axis: the first input position it reads, how many, and their fixed-point
// weights (Pillow's precompute_coeffs + normalize_coeffs_8bpc).
struct Coefficients {
  int64_t ksize = 0;
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;  // out_size * ksize
};

Coefficients precompute(int64_t in_size, int64_t out_size, const Filter& filter) {
  // Pillow takes the box edges as floats: (float)in_size - 0.0f, then widens to double.
  const double scale = double(float(in_size) - 0.0f) / double(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filter.support * filterscale;
  Coefficients c;
  c.ksize = int64_t(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(size_t(out_size * c.ksize), 0);
  std::vector<double> k(size_t(c.ksize));
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = 0.0 + (double(xx) + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int64_t xmin = int64_t(int(center - support + 0.5));  // C's truncating (int) cast, as Pillow rounds
    if (xmin < 0) xmin = 0;
    int64_t xmax = int64_t(int(center + support + 0.5));
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      double w = filter.weight((double(x + xmin) - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
      const double scaled = k[x] * double(1 << kPrecisionBits);
      c.weights[size_t(xx * c.ksize + x)] = k[x] < 0 ? int32_t(-0.5 + scaled) : int32_t(0.5 + scaled);
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

uint8_t clip8(int32_t accumulated) {
  int32_t v = accumulated >> kPrecisionBits;  // arithmetic shift: floor, as in Pillow
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Rows first_row .. first_row + row_count of `in`, each resampled to cols.first.size() pixels.
io::ImageRGB8 horizontal_pass(const io::ImageRGB8& in, int64_t first_row, int64_t row_count, const Coefficients& cols) {
  const int64_t width = int64_t(cols.first.size());
  io::ImageRGB8 out;
  out.width = width;
  out.height = row_count;
  out.pixels.resize(size_t(width * row_count * 3));
  for (int64_t y = 0; y < row_count; ++y) {
    const uint8_t* src = in.pixels.data() + size_t((y + first_row) * in.width * 3);
    uint8_t* dst = out.pixels.data() + size_t(y * width * 3);
    for (int64_t x = 0; x < width; ++x) {
      const int32_t* k = &cols.weights[size_t(x * cols.ksize)];
      const uint8_t* px = src + cols.first[x] * 3;
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int64_t i = 0; i < cols.count[x]; ++i) {
        s0 += px[3 * i] * k[i];
        s1 += px[3 * i + 1] * k[i];
        s2 += px[3 * i + 2] * k[i];
      }
      dst[3 * x] = clip8(s0), dst[3 * x + 1] = clip8(s1), dst[3 * x + 2] = clip8(s2);
    }
  }
  return out;
}

// Every column of `in` resampled to rows.first.size() rows (rows.first indexes rows of `in`).
io::ImageRGB8 vertical_pass(const io::ImageRGB8& in, const Coefficients& rows) {
  const int64_t height = int64_t(rows.first.size());
  io::ImageRGB8 out;
  out.width = in.width;
  out.height = height;
  out.pixels.resize(size_t(in.width * height * 3));
  const int64_t row_bytes = in.width * 3;
  for (int64_t y = 0; y < height; ++y) {
    const int32_t* k = &rows.weights[size_t(y * rows.ksize)];
    const uint8_t* src = in.pixels.data() + size_t(rows.first[y] * row_bytes);
    uint8_t* dst = out.pixels.data() + size_t(y * row_bytes);
    for (int64_t x = 0; x < row_bytes; ++x) {
      int32_t s = 1 << (kPrecisionBits - 1);
      for (int64_t i = 0; i < rows.count[y]; ++i) s += src[i * row_bytes + x] * k[i];
      dst[x] = clip8(s);
    }
  }
  return out;
}

}  // namespace

Resample resample_from_pil(int64_t value, const std::string& where) {
  switch (value) {
    case 1: return Resample::kLanczos;
    case 2: return Resample::kBilinear;
    case 3: return Resample::kBicubic;
    case 4: return Resample::kBox;
    case 5: return Resample::kHamming;
    case 0:
      throw Error("resample 0 (nearest) is not supported", where,
                  "use 2 (bilinear) or 3 (bicubic), as the model's original config does");
    default:
      throw Error("unknown resample " + std::to_string(value), where,
                  "PIL's filters are 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming");
  }
}

const char* resample_name(Resample filter) {
  switch (filter) {
    case Resample::kNearest: return "nearest";
    case Resample::kLanczos: return "lanczos";
    case Resample::kBilinear: return "bilinear";
    case Resample::kBicubic: return "bicubic";
    case Resample::kBox: return "box";
    case Resample::kHamming: return "hamming";
  }
  return "?";
}

io::ImageRGB8 resize_like_pil(const io::ImageRGB8& image, int64_t width, int64_t height, Resample resample) {
  AM_CHECK(width > 0 && height > 0, "cannot resize to ", width, "x", height);
  AM_CHECK(image.width > 0 && image.height > 0, "cannot resize an empty image");
  if (width == image.width && height == image.height) return image;
  const Filter filter = filter_of(resample);
  if (height == image.height) return horizontal_pass(image, 0, image.height, precompute(image.width, width, filter));
  if (width == image.width) return vertical_pass(image, precompute(image.height, height, filter));
  Coefficients rows = precompute(image.height, height, filter);
  Coefficients cols = precompute(image.width, width, filter);
  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice what the width does; the
  // order changes the rounding of the intermediate image, so it is followed exactly.
  const int64_t shrink_y = image.height - height, shrink_x = image.width - width;
  if (shrink_y > 0 && shrink_y > 2 * shrink_x) return horizontal_pass(vertical_pass(image, rows), 0, height, cols);
  // Horizontal first, over only the input rows the vertical pass reads.
  const int64_t first_row = rows.first[0];
  const int64_t last_row = rows.first[height - 1] + rows.count[height - 1];
  for (int64_t& f : rows.first) f -= first_row;
  return vertical_pass(horizontal_pass(image, first_row, last_row - first_row, cols), rows);
}

}  // namespace automodel::processor

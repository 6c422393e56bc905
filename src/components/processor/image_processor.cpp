#include "components/processor/image_processor.h"

#include <cmath>
#include <filesystem>

#include "components/processor/idefics3_image_processor.h"
#include "core/error.h"
#include "io/hf_dir.h"

namespace automodel::processor {
namespace {

using json = nlohmann::json;

// A key that is absent or null keeps the class default, as transformers' image processors do.
const json* field(const json& config, const char* key) {
  auto it = config.find(key);
  return it == config.end() || it->is_null() ? nullptr : &*it;
}

std::string where_key(const std::string& where, const char* key) { return where + ": " + key; }

bool read_bool(const json& config, const char* key, bool fallback, const std::string& where) {
  const json* v = field(config, key);
  if (!v) return fallback;
  if (!v->is_boolean()) throw Error("expected true or false, got " + v->dump(), where_key(where, key));
  return v->get<bool>();
}

double read_number(const json& config, const char* key, double fallback, const std::string& where) {
  const json* v = field(config, key);
  if (!v) return fallback;
  if (!v->is_number()) throw Error("expected a number, got " + v->dump(), where_key(where, key));
  return v->get<double>();
}

int64_t read_positive(const json& v, const std::string& where) {
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (int64_t{1} << 20))
    throw Error("expected a positive integer (pixels), got " + v.dump(), where);
  return v.get<int64_t>();
}

// image_mean / image_std: three numbers, or one for all channels.
std::array<double, 3> read_channels(const json& config, const char* key, std::array<double, 3> fallback,
                                    const std::string& where) {
  const json* v = field(config, key);
  if (!v) return fallback;
  if (v->is_number()) return {v->get<double>(), v->get<double>(), v->get<double>()};
  if (!v->is_array() || v->size() != 3 || !(*v)[0].is_number() || !(*v)[1].is_number() || !(*v)[2].is_number())
    throw Error("expected one number per RGB channel, got " + v->dump(), where_key(where, key));
  return {(*v)[0].get<double>(), (*v)[1].get<double>(), (*v)[2].get<double>()};
}

// A tokenizer_config.json token: a string or an AddedToken object {"content": ...}; top level or, in transformers 5's
// layout, under extra_special_tokens.
std::string read_token(const json& tokenizer_config, const char* key, const std::string& fallback) {
  const json* v = field(tokenizer_config, key);
  if (!v) {
    const json* extra = field(tokenizer_config, "extra_special_tokens");
    if (extra && extra->is_object()) v = field(*extra, key);
  }
  if (v && v->is_string()) return v->get<std::string>();
  if (v && v->is_object() && v->contains("content") && (*v)["content"].is_string()) return (*v)["content"];
  return fallback;
}

}  // namespace

ImageProcessorConfig parse_image_processor_config(const json& config, const std::string& where) {
  if (!config.is_object()) throw Error("expected a JSON object", where);
  ImageProcessorConfig c;
  if (const json* type = field(config, "image_processor_type")) {
    if (!type->is_string()) throw Error("expected a string", where_key(where, "image_processor_type"));
    c.image_processor_type = type->get<std::string>();
  }
  auto is = [&](const char* prefix) { return c.image_processor_type.rfind(prefix, 0) == 0; };
  if (!c.image_processor_type.empty() && !is("Gemma3ImageProcessor") && !is("SiglipImageProcessor") &&
      !is("Idefics3ImageProcessor") && !is("SmolVLMImageProcessor"))
    throw Error("unsupported image processor " + c.image_processor_type, where_key(where, "image_processor_type"),
                "supported: Gemma3ImageProcessor (and SiglipImageProcessor, the same steps), Idefics3ImageProcessor, "
                "SmolVLMImageProcessor");
  if (is("Idefics3ImageProcessor") || is("SmolVLMImageProcessor")) {
    c.splitting.idefics3 = true;
    c.resample = Resample::kLanczos;
  }
  c.do_resize = read_bool(config, "do_resize", c.do_resize, where);
  c.do_rescale = read_bool(config, "do_rescale", c.do_rescale, where);
  c.do_normalize = read_bool(config, "do_normalize", c.do_normalize, where);
  read_bool(config, "do_convert_rgb", true, where);  // decoded images are RGB already
  // Idefics 3: {"longest_edge": N} for size and max_image_size.
  auto longest_edge = [&](const char* key, int64_t fallback) {
    const json* v = field(config, key);
    if (!v) return fallback;
    if (!v->is_object() || !v->contains("longest_edge"))
      throw Error("expected {\"longest_edge\": N}, got " + v->dump(), where_key(where, key),
                  "Idefics 3 / SmolVLM size the longest edge of each image and tile");
    return read_positive((*v)["longest_edge"], where_key(where, key) + ".longest_edge");
  };
  if (c.splitting.idefics3) {
    c.splitting.enabled = read_bool(config, "do_image_splitting", c.splitting.enabled, where);
    c.splitting.longest_edge = longest_edge("size", c.splitting.longest_edge);
    c.splitting.max_image_size = longest_edge("max_image_size", c.splitting.max_image_size);
    read_bool(config, "do_pad", true, where);  // tiles are padded when batched (all-zero tiles, dropped by the model)
  } else if (const json* size = field(config, "size")) {
    if (size->is_number()) {
      c.height = c.width = read_positive(*size, where_key(where, "size"));
    } else if (size->is_object() && size->contains("height") && size->contains("width")) {
      c.height = read_positive((*size)["height"], where_key(where, "size.height"));
      c.width = read_positive((*size)["width"], where_key(where, "size.width"));
    } else {
      throw Error("expected {\"height\": H, \"width\": W}, got " + size->dump(), where_key(where, "size"),
                  "Gemma 3 resizes every image to a fixed height and width");
    }
  }
  if (const json* resample = field(config, "resample")) {
    if (!resample->is_number_integer()) throw Error("expected an integer", where_key(where, "resample"));
    c.resample = resample_from_pil(resample->get<int64_t>(), where_key(where, "resample"));
  }
  c.rescale_factor = read_number(config, "rescale_factor", c.rescale_factor, where);
  c.image_mean = read_channels(config, "image_mean", c.image_mean, where);
  c.image_std = read_channels(config, "image_std", c.image_std, where);
  for (double s : c.image_std)
    if (c.do_normalize && float(s) == 0.0f) throw Error("a standard deviation of 0", where_key(where, "image_std"));
  return c;
}

ProcessorConfig load_processor_config(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const std::string processor_path = (fs::path(model_dir) / "processor_config.json").string();
  const std::string preprocessor_path = (fs::path(model_dir) / "preprocessor_config.json").string();
  const std::string tokenizer_config_path = (fs::path(model_dir) / "tokenizer_config.json").string();
  json processor = json::object(), preprocessor;
  std::error_code ec;
  if (fs::exists(processor_path, ec)) processor = io::read_json_file(processor_path);
  if (!processor.is_object()) throw Error("expected a JSON object", processor_path);

  ProcessorConfig c;
  if (const json* nested = field(processor, "image_processor")) {
    c.image = parse_image_processor_config(*nested, processor_path + ": image_processor");
  } else if (fs::exists(preprocessor_path, ec)) {
    preprocessor = io::read_json_file(preprocessor_path);
    c.image = parse_image_processor_config(preprocessor, preprocessor_path);
  } else {
    throw Error(
        "no image processor settings: neither preprocessor_config.json nor an \"image_processor\" in "
        "processor_config.json",
        model_dir, "save the model's processor with AutoProcessor.save_pretrained");
  }
  if (const json* cls = field(processor, "processor_class"))
    c.processor_class = cls->is_string() ? cls->get<std::string>() : "";
  if (c.processor_class.empty() && preprocessor.is_object())
    if (const json* cls = field(preprocessor, "processor_class"))
      c.processor_class = cls->is_string() ? cls->get<std::string>() : "";
  const bool idefics3 = c.processor_class == "Idefics3Processor" || c.processor_class == "SmolVLMProcessor";
  if (!c.processor_class.empty() && c.processor_class != "Gemma3Processor" && !idefics3)
    throw Error("unsupported processor " + c.processor_class, processor_path + ": processor_class",
                "supported: Gemma3Processor, Idefics3Processor, SmolVLMProcessor");
  if (idefics3 != c.image.splitting.idefics3)
    throw Error("processor " + c.processor_class + " does not go with image processor " + c.image.image_processor_type,
                processor_path + ": processor_class", "save the model's processor with AutoProcessor.save_pretrained");
  const char* seq_key = c.image.splitting.idefics3 ? "image_seq_len" : "image_seq_length";
  if (c.image.splitting.idefics3) c.image_seq_length = 169;  // Idefics3Processor's default
  const json* seq = field(processor, seq_key);
  const std::string seq_where = seq ? processor_path : preprocessor_path;
  if (!seq && preprocessor.is_object()) seq = field(preprocessor, seq_key);
  if (seq) {
    if (!seq->is_number_integer() || seq->get<int64_t>() <= 0 || seq->get<int64_t>() > (int64_t{1} << 20))
      throw Error("expected a positive integer, got " + seq->dump(), seq_where + ": " + seq_key);
    c.image_seq_length = seq->get<int64_t>();
  }
  if (c.image.splitting.idefics3) c.boi_token = c.eoi_token = "<fake_token_around_image>", c.image_token = "<image>";
  if (fs::exists(tokenizer_config_path, ec)) {
    json tokenizer_config = io::read_json_file(tokenizer_config_path);
    if (tokenizer_config.is_object()) {
      if (c.image.splitting.idefics3) {
        c.boi_token = c.eoi_token = read_token(tokenizer_config, "fake_image_token", c.boi_token);
        c.global_image_token = read_token(tokenizer_config, "global_image_token", c.global_image_token);
      } else {
        c.boi_token = read_token(tokenizer_config, "boi_token", c.boi_token);
        c.eoi_token = read_token(tokenizer_config, "eoi_token", c.eoi_token);
      }
      c.image_token = read_token(tokenizer_config, "image_token", c.image_token);
    }
  }
  return c;
}

std::vector<io::ImageRGB8> pan_and_scan_crops(const io::ImageRGB8& image, const PanAndScan& s) {
  AM_CHECK(s.min_crop_size >= 1 && s.max_num_crops >= 1,
           "pan-and-scan needs min_crop_size >= 1 and max_num_crops >= 1");
  const int64_t width = image.width, height = image.height;
  int64_t crops_w = 1, crops_h = 1;
  // Gemma3ImageProcessor.pan_and_scan's arithmetic, in the same double precision.
  if (width >= height) {
    if (double(width) / double(height) < s.min_ratio_to_activate) return {};
    crops_w = int64_t(std::floor(double(width) / double(height) + 0.5));
    crops_w = std::min(int64_t(std::floor(double(width) / double(s.min_crop_size))), crops_w);
    crops_w = std::min(s.max_num_crops, std::max<int64_t>(2, crops_w));
  } else {
    if (double(height) / double(width) < s.min_ratio_to_activate) return {};
    crops_h = int64_t(std::floor(double(height) / double(width) + 0.5));
    crops_h = std::min(int64_t(std::floor(double(height) / double(s.min_crop_size))), crops_h);
    crops_h = std::min(s.max_num_crops, std::max<int64_t>(2, crops_h));
  }
  const int64_t crop_w = int64_t(std::ceil(double(width) / double(crops_w)));
  const int64_t crop_h = int64_t(std::ceil(double(height) / double(crops_h)));
  if (std::min(crop_w, crop_h) < s.min_crop_size) return {};
  std::vector<io::ImageRGB8> crops;
  for (int64_t i = 0; i < crops_h; ++i) {
    for (int64_t j = 0; j < crops_w; ++j) {
      // numpy slicing: a crop past the edge is cut short there.
      const int64_t y0 = std::min(i * crop_h, height), x0 = std::min(j * crop_w, width);
      io::ImageRGB8 crop;
      crop.width = std::min(crop_w, width - x0);
      crop.height = std::min(crop_h, height - y0);
      crop.pixels.resize(size_t(crop.width * crop.height * 3));
      for (int64_t y = 0; y < crop.height; ++y)
        std::copy_n(image.pixels.data() + size_t(((y0 + y) * width + x0) * 3), size_t(crop.width * 3),
                    crop.pixels.data() + size_t(y * crop.width * 3));
      crops.push_back(std::move(crop));
    }
  }
  return crops;
}

const std::string& image_placeholder(const ProcessorConfig& config) {
  return config.image.splitting.idefics3 ? config.image_token : config.boi_token;
}

PixelValues preprocess_images(const std::vector<io::ImageRGB8>& images, const ImageProcessorConfig& config) {
  PixelValues out;
  std::array<float, 3> mean{}, std_dev{};
  for (int c = 0; c < 3; ++c) mean[c] = float(config.image_mean[c]), std_dev[c] = float(config.image_std[c]);
  auto append = [&](const io::ImageRGB8& source) {
    io::ImageRGB8 resized = config.do_resize && !config.splitting.idefics3  // Idefics 3's tiles come sized
                                ? resize_like_pil(source, config.width, config.height, config.resample)
                                : source;
    if (out.count == 0) {
      out.height = resized.height, out.width = resized.width;
    } else if (resized.height != out.height || resized.width != out.width) {
      throw Error("images of different sizes (" + std::to_string(resized.width) + "x" + std::to_string(resized.height) +
                      " and " + std::to_string(out.width) + "x" + std::to_string(out.height) +
                      ") cannot share one pixel_values tensor",
                  "preprocess_images", "turn do_resize on");
    }
    const int64_t plane = resized.height * resized.width;
    const size_t base = out.values.size();
    out.values.resize(base + size_t(3 * plane));
    for (int64_t p = 0; p < plane; ++p) {
      for (int c = 0; c < 3; ++c) {
        const uint8_t u = resized.pixels[size_t(p * 3 + c)];
        // transformers: rescale = (image as float64 * scale) as float32; normalize = (x - mean) / std in float32.
        float v = config.do_rescale ? float(double(u) * config.rescale_factor) : float(u);
        if (config.do_normalize) v = (v - mean[c]) / std_dev[c];
        out.values[base + size_t(c * plane + p)] = v;
      }
    }
    ++out.count;
  };
  if (config.splitting.idefics3) {
    for (const io::ImageRGB8& image : images) {
      int64_t rows = 0, cols = 0;
      for (const io::ImageRGB8& tile : idefics3_tiles(image, config, rows, cols)) append(tile);
      out.rows.push_back(rows);
      out.cols.push_back(cols);
    }
    return out;
  }
  for (const io::ImageRGB8& image : images) {
    append(image);
    std::vector<io::ImageRGB8> crops;
    if (config.pan_and_scan.enabled) crops = pan_and_scan_crops(image, config.pan_and_scan);
    for (const io::ImageRGB8& crop : crops) append(crop);
    out.num_crops.push_back(int64_t(crops.size()));
  }
  return out;
}

}  // namespace automodel::processor

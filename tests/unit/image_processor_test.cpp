// io/image.h and components/processor without Python: EXIF orientation, the errors of undecodable bytes, Pillow's
// resize on images whose result is known, pan-and-scan's crop geometry, the placeholder expansion and the config
// reader. The oracle tests (tests/oracle/test_image_processor.py) check the same against transformers and Pillow.
#include "components/processor/image_processor.h"

#include <gtest/gtest.h>

#include <fstream>

#include "components/processor/image_tokens.h"
#include "components/processor/resample.h"
#include "error_of.h"
#include "io/image.h"
#include "io/image_decoders.h"
#include "temp_dir.h"

namespace automodel {
namespace {

using testing::error_of;

io::ImageRGB8 numbered(int64_t w, int64_t h) {  // pixel i holds (i, i, i) mod 256
  io::ImageRGB8 im{w, h, std::vector<uint8_t>(size_t(w * h * 3))};
  for (int64_t i = 0; i < w * h; ++i) im.pixels[3 * i] = im.pixels[3 * i + 1] = im.pixels[3 * i + 2] = uint8_t(i);
  return im;
}

std::vector<uint8_t> grey(const io::ImageRGB8& im) {
  std::vector<uint8_t> g;
  for (size_t i = 0; i < im.pixels.size(); i += 3) g.push_back(im.pixels[i]);
  return g;
}

// A TIFF block (as the APP1 "Exif\0\0" payload carries it) with one IFD0 entry: Orientation as a SHORT.
std::vector<uint8_t> exif_block(bool big_endian, uint16_t orientation) {
  auto u16 = [&](uint16_t v) {
    return big_endian ? std::vector<uint8_t>{uint8_t(v >> 8), uint8_t(v)}
                      : std::vector<uint8_t>{uint8_t(v), uint8_t(v >> 8)};
  };
  std::vector<uint8_t> b = {'E', 'x', 'i', 'f', 0, 0};
  auto add = [&](std::vector<uint8_t> v) { b.insert(b.end(), v.begin(), v.end()); };
  add(big_endian ? std::vector<uint8_t>{'M', 'M', 0, 42} : std::vector<uint8_t>{'I', 'I', 42, 0});
  add(big_endian ? std::vector<uint8_t>{0, 0, 0, 8} : std::vector<uint8_t>{8, 0, 0, 0});
  add(u16(1));       // one entry
  add(u16(0x0112));  // Orientation
  add(u16(3));       // SHORT
  add(big_endian ? std::vector<uint8_t>{0, 0, 0, 1} : std::vector<uint8_t>{1, 0, 0, 0});
  add(u16(orientation));
  add({0, 0});
  return b;
}

TEST(Image, ExifOrientationBothByteOrders) {
  for (bool be : {false, true})
    for (uint16_t o = 1; o <= 8; ++o) {
      auto b = exif_block(be, o);
      EXPECT_EQ(io::exif_orientation(b.data(), b.size()), o);
      EXPECT_EQ(io::exif_orientation(b.data() + 6, b.size() - 6), o);  // without the "Exif\0\0" prefix
    }
  auto b = exif_block(false, 9);
  EXPECT_EQ(io::exif_orientation(b.data(), b.size()), 1);  // out of range
  b = exif_block(true, 6);
  EXPECT_EQ(io::exif_orientation(b.data(), b.size() - 8), 1);  // cut inside the entry
  EXPECT_EQ(io::exif_orientation(nullptr, 0), 1);
}

TEST(Image, XmpOrientationAsPillowFindsIt) {
  using io::detail::xmp_orientation;
  EXPECT_EQ(xmp_orientation(R"(<rdf:Description tiff:Orientation="6" tiff:Make="x"/>)"), 6);
  EXPECT_EQ(xmp_orientation("<tiff:Orientation>8</tiff:Orientation>"), 8);
  EXPECT_EQ(xmp_orientation(R"(tiff:OrientationX="3" tiff:Orientation="5")"), 5);  // the first that fits the pattern
  EXPECT_EQ(xmp_orientation(R"(tiff:Orientation="x")"), 0);
  EXPECT_EQ(xmp_orientation(""), 0);
  auto b = exif_block(false, 6);
  EXPECT_EQ(io::detail::exif_orientation_tag(b.data(), b.size()), 6);
  EXPECT_EQ(io::detail::exif_orientation_tag(b.data(), 10), 0);  // no tag: Pillow looks in the XMP
}

TEST(Image, ExifOrientationTurnsUpright) {
  // 3 wide, 2 tall: 0 1 2 / 3 4 5.
  const io::ImageRGB8 im = numbered(3, 2);
  const std::vector<std::vector<uint8_t>> expected = {{0, 1, 2, 3, 4, 5}, {2, 1, 0, 5, 4, 3}, {5, 4, 3, 2, 1, 0},
                                                      {3, 4, 5, 0, 1, 2}, {0, 3, 1, 4, 2, 5}, {3, 0, 4, 1, 5, 2},
                                                      {5, 2, 4, 1, 3, 0}, {2, 5, 1, 4, 0, 3}};
  for (int o = 1; o <= 8; ++o) {
    io::ImageRGB8 out = io::apply_exif_orientation(im, o);
    EXPECT_EQ(out.width, o >= 5 ? 2 : 3) << o;
    EXPECT_EQ(grey(out), expected[o - 1]) << "orientation " << o;
  }
}

TEST(Image, UndecodableBytesAreErrorsNamingTheInput) {
  const std::string where = "record 7 of data.jsonl";
  auto decode = [&](std::string bytes) {
    return error_of([&] { io::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), where); });
  };
  EXPECT_NE(decode("").find("empty"), std::string::npos);
  EXPECT_NE(decode("hello").find("not an image file"), std::string::npos);
  EXPECT_NE(decode("GIF89a....").find("GIF"), std::string::npos);
  EXPECT_NE(decode(std::string("\xFF\xD8\xFF\xE0garbage", 11)).find("JPEG"), std::string::npos);
  EXPECT_NE(decode(std::string("\x89PNG\r\n\x1A\n\0\0\0\x0DIHDR", 16)).find("PNG"), std::string::npos);
  EXPECT_NE(decode("RIFF\x10\0\0\0WEBPVP8 ").find("WebP"), std::string::npos);
  EXPECT_NE(decode("hello").find(where), std::string::npos);
  testing::TempDir dir;
  EXPECT_NE(error_of([&] { io::read_image_file(dir / "missing.png"); }).find("missing.png"), std::string::npos);
  EXPECT_NE(error_of([&] { io::read_image_file(dir.str()); }).find("directory"), std::string::npos);
}

TEST(Resample, ConstantImageStaysConstantAndSameSizeIsACopy) {
  io::ImageRGB8 flat{5, 3, std::vector<uint8_t>(5 * 3 * 3, 77)};
  for (auto f : {processor::Resample::kBilinear, processor::Resample::kBicubic, processor::Resample::kLanczos,
                 processor::Resample::kBox, processor::Resample::kHamming})
    for (auto [w, h] : {std::pair{9, 2}, {1, 1}, {40, 24}, {2, 30}}) {
      io::ImageRGB8 out = processor::resize_like_pil(flat, w, h, f);
      ASSERT_EQ(out.pixels.size(), size_t(w * h * 3));
      for (uint8_t v : out.pixels) ASSERT_EQ(v, 77) << processor::resample_name(f) << " " << w << "x" << h;
    }
  io::ImageRGB8 im = numbered(4, 4);
  EXPECT_EQ(processor::resize_like_pil(im, 4, 4, processor::Resample::kBicubic).pixels, im.pixels);
}

TEST(Resample, BoxHalvingAveragesPairsWithPillowRounding) {
  // 4x1 -> 2x1 with the box filter: (0+1)/2 = 0.5 and (2+3)/2 = 2.5 round half up in 22-bit fixed point.
  io::ImageRGB8 out = processor::resize_like_pil(numbered(4, 1), 2, 1, processor::Resample::kBox);
  EXPECT_EQ(grey(out), (std::vector<uint8_t>{1, 3}));
}

TEST(Resample, ConfigNumbers) {
  EXPECT_EQ(processor::resample_from_pil(2, "x"), processor::Resample::kBilinear);
  EXPECT_EQ(processor::resample_from_pil(3, "x"), processor::Resample::kBicubic);
  EXPECT_NE(error_of([] { processor::resample_from_pil(0, "cfg: resample"); }).find("nearest"), std::string::npos);
  EXPECT_NE(error_of([] { processor::resample_from_pil(9, "cfg: resample"); }).find("cfg: resample"),
            std::string::npos);
}

TEST(PanAndScan, CropGeometry) {
  processor::PanAndScan s{true, 20, 4, 1.2};
  auto crops = processor::pan_and_scan_crops(numbered(100, 30), s);  // ratio 3.3 -> 3 crops of 34 (the last 32)
  ASSERT_EQ(crops.size(), 3u);
  EXPECT_EQ(crops[0].width, 34);
  EXPECT_EQ(crops[2].width, 32);
  EXPECT_EQ(crops[1].pixels[0], uint8_t(34));
  EXPECT_TRUE(processor::pan_and_scan_crops(numbered(35, 30), s).empty());    // ratio below 1.2
  EXPECT_TRUE(processor::pan_and_scan_crops(numbered(60, 15), s).empty());    // crops 15 tall < 20
  EXPECT_EQ(processor::pan_and_scan_crops(numbered(30, 500), s).size(), 4u);  // tall, capped at max_num_crops
}

TEST(ImageTokens, ExpansionAndTypes) {
  processor::ProcessorConfig c;
  c.image_seq_length = 2;
  c.boi_token = "<B>", c.eoi_token = "<E>", c.image_token = "<I>";
  EXPECT_EQ(processor::full_image_sequence(c), "\n\n<B><I><I><E>\n\n");
  EXPECT_EQ(processor::expand_image_placeholders("a<B>b<B>", {0, 2}, c, "x"),
            "a\n\n<B><I><I><E>\n\nbHere is the original image \n\n<B><I><I><E>\n\n and here are some crops to help "
            "you see better \n\n<B><I><I><E>\n\n \n\n<B><I><I><E>\n\n");
  EXPECT_NE(error_of([&] {
              processor::expand_image_placeholders("<B>", {0, 0}, c, "chat.json");
            }).find("chat.json"),
            std::string::npos);
  EXPECT_EQ(processor::image_token_types({5, 9, 9, 2}, 9), (std::vector<int64_t>{0, 1, 1, 0}));
}

TEST(ProcessorConfig, ReadsTransformersLayoutsAndRejectsBadValues) {
  testing::TempDir dir;
  auto write = [&](const std::string& name, const std::string& text) { std::ofstream(dir / name) << text; };
  // transformers 4's layout (as google/gemma-3-4b-it ships): nulls take the defaults.
  write("preprocessor_config.json",
        R"({"image_processor_type": "Gemma3ImageProcessor", "do_pan_and_scan": null, "size": {"height": 896,
            "width": 896}, "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "rescale_factor": 0.00392156862745098, "image_seq_length": 256, "processor_class": "Gemma3Processor"})");
  write("processor_config.json", R"({"image_seq_length": 64, "processor_class": "Gemma3Processor"})");
  write("tokenizer_config.json", R"({"boi_token": "<start_of_image>", "image_token": {"content": "<img>"}})");
  processor::ProcessorConfig c = processor::load_processor_config(dir.str());
  EXPECT_EQ(c.image.height, 896);
  EXPECT_EQ(c.image.resample, processor::Resample::kBilinear);
  EXPECT_EQ(c.image_seq_length, 64);
  EXPECT_EQ(c.image_token, "<img>");
  EXPECT_EQ(c.eoi_token, "<end_of_image>");
  EXPECT_FALSE(c.image.pan_and_scan.enabled);
  // transformers 5's layout: the image processor inside processor_config.json.
  write("processor_config.json", R"({"image_processor": {"size": {"height": 32, "width": 48}, "resample": 3},
                                     "image_seq_length": 4})");
  c = processor::load_processor_config(dir.str());
  EXPECT_EQ(c.image.width, 48);
  EXPECT_EQ(c.image.resample, processor::Resample::kBicubic);
  write("processor_config.json", R"({"image_processor": {"size": {"shortest_edge": 32}}})");
  EXPECT_NE(error_of([&] { processor::load_processor_config(dir.str()); }).find("size"), std::string::npos);
  write("processor_config.json", R"({"image_processor": {"image_std": [0.5, 0, 0.5]}})");
  EXPECT_NE(error_of([&] { processor::load_processor_config(dir.str()); }).find("image_std"), std::string::npos);
  write("processor_config.json", R"({"processor_class": "LlavaProcessor"})");
  EXPECT_NE(error_of([&] { processor::load_processor_config(dir.str()); }).find("LlavaProcessor"), std::string::npos);
}

}  // namespace
}  // namespace automodel

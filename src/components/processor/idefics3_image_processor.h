#pragma once
// Idefics 3 / SmolVLM's processor as transformers' slow (PIL) Idefics3ImageProcessor / SmolVLMImageProcessor and
// Idefics3Processor / SmolVLMProcessor run it: each image resized so its longest edge is size.longest_edge, rounded
// up to a grid of max_image_size tiles, cut into those tiles plus the whole image as one more (the global image);
// each <image> of the text becomes the tiles' token runs with their <row_r_col_c> and <global-img> markers.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "components/processor/image_processor.h"

namespace automodel::processor {

// (height, width) after the resize to size.longest_edge (then below 4096 pixels), as the image processor's resize.
std::pair<int64_t, int64_t> idefics3_resized_size(int64_t height, int64_t width, int64_t longest_edge);

// The tiles of one image, in the order of pixel_values (row-major tiles, then the global image), resized with
// Pillow's filter as the image processor does; rows x cols is the tile grid (0 x 0 when the image fits one tile,
// which is then the only one). Without splitting, the image resized to max_image_size square, 0 x 0.
std::vector<io::ImageRGB8> idefics3_tiles(const io::ImageRGB8& image, const ImageProcessorConfig& config, int64_t& rows,
                                          int64_t& cols);

// The prompt text of one image of rows x cols tiles (Idefics3Processor.replace_image_token).
std::string idefics3_image_prompt(int64_t rows, int64_t cols, const ProcessorConfig& config);

// Replaces the i-th image_token of `text` with image i's prompt. The number of image tokens must equal the number of
// images (Error naming `where` otherwise, as transformers raises).
std::string expand_idefics3_placeholders(const std::string& text, const PixelValues& pixels,
                                         const ProcessorConfig& config, const std::string& where);

}  // namespace automodel::processor

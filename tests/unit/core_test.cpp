// core/: dtypes, allocator, tensors and views, RNG.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "core/allocator.h"
#include "core/arith.h"
#include "core/device_memory.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "error_of.h"

using namespace automodel;
using automodel::testing::error_of;

namespace {
bool has(const std::string& msg, const std::string& fragment) { return msg.find(fragment) != std::string::npos; }
}  // namespace

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f).bits, 0x3f80);
  // 1 + 2^-8 is exactly half-way between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(float_to_bf16(1.00390625f).bits, 0x3f80);
  EXPECT_EQ(float_to_bf16(1.01171875f).bits, 0x3f82);  // 1 + 3*2^-8: tie, rounds up to even
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(-2.5f)), -2.5f);
}

TEST(DType, F16RoundTrip) {
  for (float v : {0.0f, 1.0f, -2.0f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f})
    EXPECT_EQ(f16_to_float(float_to_f16(v)), v) << v;
  EXPECT_TRUE(std::isinf(f16_to_float(float_to_f16(70000.0f))));
  EXPECT_EQ(float_to_f16(1.0f + 1.0f / 2048).bits, 0x3c00);  // tie to even
}

TEST(DType, NamesRoundTripAndUnknownIsAnError) {
  for (DType d : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::b8})
    EXPECT_EQ(dtype_from_name(dtype_name(d)), d);
  EXPECT_EQ(dtype_from_name("bfloat16"), DType::bf16);
  EXPECT_THROW(dtype_from_name("float8"), Error);
}

TEST(DType, VisitNamesEveryStorageType) {
  const std::pair<DType, size_t> cases[] = {{DType::f32, sizeof(float)},   {DType::f64, sizeof(double)},
                                            {DType::bf16, sizeof(bf16)},   {DType::f16, sizeof(f16)},
                                            {DType::i32, sizeof(int32_t)}, {DType::i64, sizeof(int64_t)},
                                            {DType::b8, sizeof(bool)}};
  for (auto [dt, size] : cases) {
    EXPECT_EQ(visit_dtype(dt, [](auto tag) { return dtype_of<decltype(tag)>::value; }), dt) << dtype_name(dt);
    EXPECT_EQ(visit_dtype(dt, [](auto tag) { return sizeof(tag); }), size) << dtype_name(dt);
  }
  EXPECT_THROW(visit_dtype(DType(99), [](auto) {}), Error);
}

TEST(DType, VisitAmongInstantiatesOnlyTheListedTypes) {
  int seen = 0;
  auto floating = [&](DType dt) {
    visit_dtype_among<float, double>(
        dt, [&](auto tag) { seen += std::is_floating_point_v<decltype(tag)> ? 1 : 100; },
        [&] { throw Error(std::string("no ") + dtype_name(dt)); });
  };
  floating(DType::f32);
  floating(DType::f64);
  EXPECT_EQ(seen, 2);
  EXPECT_TRUE(has(error_of([&] { floating(DType::i64); }), "no i64"));
  EXPECT_TRUE(has(error_of([&] { floating(DType::bf16); }), "no bf16"));
}

TEST(Arith, RoundUp) {
  EXPECT_EQ(round_up(0, 16), 0);
  EXPECT_EQ(round_up(1, 16), 16);
  EXPECT_EQ(round_up(16, 16), 16);
  EXPECT_EQ(round_up(17, 16), 32);
  EXPECT_EQ(round_up(1000, 1024), 1024);
}

TEST(DeviceMemory, FactoriesFillThroughTheDevicesMemory) {
  Tensor z = Tensor::zeros({3, 5}, DType::bf16);
  for (double v : z.to_doubles()) EXPECT_EQ(v, 0.0);
  Tensor f = Tensor::full({7}, -2.5, DType::f64);
  for (double v : f.to_doubles()) EXPECT_EQ(v, -2.5);
  Tensor b = Tensor::full({4}, 1.0, DType::bf16);
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(b.data<bf16>()[i].bits, 0x3f80);
  Tensor i = Tensor::ones({2}, DType::i64);
  EXPECT_EQ(i.to_doubles(), (std::vector<double>{1, 1}));
  Tensor v = Tensor::from_values({1.5, -3, 7}, {3}, DType::f16);
  EXPECT_EQ(v.to_doubles(), (std::vector<double>{1.5, -3, 7}));
  // A 3-byte element, filled copy by copy.
  unsigned char pattern[3] = {1, 2, 3}, out[9] = {};
  cpu_device_memory().fill(out, pattern, 3, 3);
  for (int k = 0; k < 9; ++k) EXPECT_EQ(out[k], k % 3 + 1);
}

TEST(DeviceMemory, ACudaTensorInABuildWithoutCudaIsAnErrorNamingTheDevice) {
  const Device gpu{DeviceType::cuda, 1};
  for (auto make : std::initializer_list<std::function<void()>>{
           [&] { Tensor::empty({2}, DType::f32, gpu); }, [&] { Tensor::zeros({2}, DType::f32, gpu); },
           [&] { Tensor::full({2}, 1.0, DType::f32, gpu); }, [&] { Tensor::scalar(1.0, DType::f32, gpu); }}) {
    const std::string err = error_of(make);
    EXPECT_TRUE(has(err, "cuda:1")) << err;
    EXPECT_TRUE(has(err, "this build has no CUDA backend")) << err;
  }
  EXPECT_TRUE(has(error_of([&] { Storage::allocate(64, gpu); }), "no CUDA backend"));
}

TEST(Allocator, ReusesFreedBlocksAndTracksPeak) {
  auto& alloc = CachingAllocator::cpu();
  alloc.reset_peak();
  AllocatorStats before = alloc.stats();
  void* p = alloc.allocate(100000);
  size_t bucket = CachingAllocator::bucket_size(100000);
  EXPECT_GE(bucket, 100000u);
  EXPECT_LE(bucket, 125000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % CachingAllocator::kAlignment, 0u);
  EXPECT_EQ(alloc.stats().current_bytes, before.current_bytes + bucket);
  alloc.deallocate(p, 100000);
  void* q = alloc.allocate(99000);  // same bucket: served from the cache
  EXPECT_EQ(p, q);
  EXPECT_GT(alloc.stats().cache_hits, before.cache_hits);
  alloc.deallocate(q, 99000);
  EXPECT_GE(alloc.stats().peak_bytes, before.current_bytes + bucket);
  EXPECT_EQ(alloc.stats().current_bytes, before.current_bytes);
}

TEST(Tensor, FactoriesAndMetadata) {
  Tensor t = Tensor::full({2, 3}, 1.5, DType::bf16);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.size(-1), 3);
  EXPECT_EQ(t.describe(), "bf16[2, 3]");
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.to_doubles(), std::vector<double>(6, 1.5));
  EXPECT_THROW(t.data<float>(), Error);
  EXPECT_THROW(t.size(2), Error);
  EXPECT_THROW(Tensor::from_values({1, 2}, {3}), Error);
}

TEST(Tensor, AsStridedViewsShareStorageAndCheckBounds) {
  Tensor t = Tensor::from_values({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tr = t.as_strided({3, 2}, {1, 3}, 0);
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_EQ(tr.to_doubles(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  t.data<float>()[1] = 10;
  EXPECT_EQ(tr.to_doubles()[2], 10);
  EXPECT_THROW(t.as_strided({4, 2}, {2, 1}, 0), Error);
}

TEST(Tensor, RequiresGradOnlyOnFloatingLeaves) {
  Tensor i = Tensor::zeros({2}, DType::i64);
  EXPECT_THROW(i.set_requires_grad(true), Error);
  Tensor f = Tensor::zeros({2});
  f.set_requires_grad(true);
  EXPECT_TRUE(f.requires_grad());
  EXPECT_FALSE(f.detach().requires_grad());
}

TEST(Tensor, SizeArithmeticIsOverflowChecked) {
  const int64_t big = int64_t(1) << 40;
  EXPECT_TRUE(has(error_of([&] { shape_numel({big, big}); }), "[1099511627776, 1099511627776]"));
  EXPECT_TRUE(has(error_of([&] { shape_numel({big, big}); }), "overflows"));
  EXPECT_TRUE(has(error_of([&] { Tensor::empty({big, big}); }), "overflows"));
  EXPECT_TRUE(has(error_of([&] { shape_nbytes({int64_t(1) << 62}, DType::f64); }), "byte size"));
  EXPECT_TRUE(has(error_of([&] { shape_numel({2, -3}); }), "negative dimension"));
  // An empty shape still has strides, and they must not wrap.
  EXPECT_TRUE(has(error_of([&] { contiguous_strides({0, big, big}); }), "stride"));
  EXPECT_EQ(shape_numel({0, big, big}), 0);
  Tensor t = Tensor::zeros({4});
  EXPECT_TRUE(has(error_of([&] { t.as_strided({big, big}, {big, big}, 0); }), "overflows"));
  EXPECT_TRUE(has(error_of([&] { t.as_strided({big, 2}, {big, 1}, 0); }), "overflows"));  // the extent
  Tensor broadcast = t.as_strided({int64_t(1) << 60, 4}, {0, 1}, 0);                      // a view, no memory
  EXPECT_TRUE(has(error_of([&] { broadcast.nbytes(); }), "byte size"));
}

TEST(Allocator, SizesBeyondMemoryAreRefusedUpFront) {
  EXPECT_TRUE(has(error_of([] { CachingAllocator::bucket_size(std::numeric_limits<size_t>::max() - 3); }),
                  "beyond any address space"));
  const int64_t n = int64_t(physical_memory_bytes() / 4 + 1024);
  const std::string msg = error_of([&] { Tensor::empty({n}); });
  EXPECT_TRUE(has(msg, "physical memory")) << msg;
  EXPECT_TRUE(has(msg, std::to_string(physical_memory_bytes()))) << msg;
  EXPECT_FALSE(has(msg, "batch size")) << msg;
}

TEST(Rng, SameSeedSameStreamAndStateRestores) {
  Generator a(42), b(42), c(43);
  Tensor x = randn({1000}, a), y = randn({1000}, b), z = randn({1000}, c);
  EXPECT_EQ(x.to_doubles(), y.to_doubles());
  EXPECT_NE(x.to_doubles(), z.to_doubles());
  GeneratorState s = a.state();
  Tensor u = rand_uniform({17}, -1, 1, a);
  a.set_state(s);
  Tensor v = rand_uniform({17}, -1, 1, a);
  EXPECT_EQ(u.to_doubles(), v.to_doubles());
  for (double e : u.to_doubles()) {
    EXPECT_GE(e, -1);
    EXPECT_LT(e, 1);
  }
}

TEST(Rng, NormalMoments) {
  Generator g(7);
  std::vector<double> v = randn({200000}, g).to_doubles();
  double mean = 0, sq = 0;
  for (double e : v) mean += e;
  mean /= double(v.size());
  for (double e : v) sq += (e - mean) * (e - mean);
  EXPECT_NEAR(mean, 0, 0.01);
  EXPECT_NEAR(sq / double(v.size()), 1, 0.01);
}

TEST(Error, CarriesWhatWhereAndHint) {
  Error e("bad thing", "file.json: key x", "fix it");
  std::string msg = e.what();
  EXPECT_NE(msg.find("bad thing"), std::string::npos);
  EXPECT_NE(msg.find("where: file.json: key x"), std::string::npos);
  EXPECT_NE(msg.find("what to do: fix it"), std::string::npos);
}

#include "src/store/manifest.h"

#include "gtest/gtest.h"

namespace cistern::store {
namespace {

TensorInfo T(std::string name, DType d, std::vector<uint64_t> shape, uint64_t offset) {
  uint64_t n = DTypeSize(d);
  for (auto s : shape) n *= s;
  return TensorInfo{std::move(name), d, std::move(shape), offset, n};
}

TEST(ManifestTest, ValidManifestRoundTripsThroughEncoding) {
  std::vector<TensorInfo> ts = {
      T("w", DType::kFloat32, {4, 4}, 0), T("b", DType::kBFloat16, {4}, 64),
      T("mask", DType::kBool, {3}, 128), T("scalar", DType::kInt64, {}, 192),
      T("empty", DType::kUInt8, {0}, 256)};
  ASSERT_TRUE(ValidateManifest(ts, 256).ok());
  std::string buf(EncodedManifestBytes(ts), '\xff');
  EncodeManifest(ts, buf.data());
  auto back = DecodeManifest(buf, ts.size());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, ts);
}

TEST(ManifestTest, OverlappingTensorsAreRejected) {
  auto s =
      ValidateManifest({T("a", DType::kFloat32, {32}, 0), T("b", DType::kFloat32, {4}, 64)}, 1024);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("overlap"), std::string::npos);
}

TEST(ManifestTest, TensorPastTheObjectIsRejected) {
  auto s = ValidateManifest({T("a", DType::kFloat64, {16}, 64)}, 128);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'a'"), std::string::npos);
}

TEST(ManifestTest, UnalignedOffsetIsRejected) {
  EXPECT_FALSE(ValidateManifest({T("a", DType::kUInt8, {4}, 8)}, 128).ok());
}

TEST(ManifestTest, WrongNbytesIsRejected) {
  TensorInfo t = T("a", DType::kInt16, {4}, 0);
  t.nbytes = 4;
  EXPECT_FALSE(ValidateManifest({t}, 128).ok());
}

TEST(ManifestTest, ShapeOverflowIsRejected) {
  TensorInfo t = T("a", DType::kInt64, {}, 0);
  t.shape = {1ull << 40, 1ull << 40};
  EXPECT_FALSE(ValidateManifest({t}, 128).ok());
}

TEST(ManifestTest, UnknownDtypeDuplicateAndEmptyNamesAreRejected) {
  TensorInfo bad = T("a", DType::kUInt8, {1}, 0);
  bad.dtype = static_cast<DType>(99);
  EXPECT_FALSE(ValidateManifest({bad}, 64).ok());
  EXPECT_FALSE(
      ValidateManifest({T("a", DType::kUInt8, {1}, 0), T("a", DType::kUInt8, {1}, 64)}, 128).ok());
  EXPECT_FALSE(ValidateManifest({T("", DType::kUInt8, {1}, 0)}, 64).ok());
  EXPECT_FALSE(ValidateManifest({T(std::string("a\0b", 3), DType::kUInt8, {1}, 0)}, 64).ok());
}

TEST(ManifestTest, TruncatedEncodingIsDataLoss) {
  std::vector<TensorInfo> ts = {T("weight", DType::kFloat32, {2, 2}, 0)};
  std::string buf(EncodedManifestBytes(ts), 0);
  EncodeManifest(ts, buf.data());
  EXPECT_EQ(DecodeManifest(buf.substr(0, 20), 1).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeManifest(buf, 2).status().code(), absl::StatusCode::kDataLoss);
}

TEST(DTypeTest, NamesRoundTrip) {
  for (uint8_t i = 1; i <= kMaxDType; ++i) {
    auto d = static_cast<DType>(i);
    EXPECT_EQ(DTypeFromName(DTypeName(d)), d);
    EXPECT_GT(DTypeSize(d), 0u);
  }
  EXPECT_FALSE(DTypeFromName("complex64"));
}

}  // namespace
}  // namespace cistern::store

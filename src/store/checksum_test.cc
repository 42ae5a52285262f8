#include "src/store/checksum.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace cistern::store {
namespace {

std::vector<char> Random(size_t n, uint64_t seed) {
  std::vector<char> v(n);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t x = rng();
    std::memcpy(v.data() + i, &x, std::min<size_t>(8, n - i));
  }
  return v;
}

TEST(ChecksumTest, SmallPayloadIsPlainXxh3) {
  auto v = Random(kChecksumSegment, 1);
  EXPECT_EQ(Checksum(v.data(), v.size()), XXH3_64bits(v.data(), v.size()));
  EXPECT_EQ(Checksum(v.data(), 0), XXH3_64bits(v.data(), 0));
}

TEST(ChecksumTest, LargePayloadIsXxh3OfSegmentDigests) {
  size_t n = 3 * kChecksumSegment + 12345;
  auto v = Random(n, 2);
  std::vector<uint64_t> digests;
  for (size_t off = 0; off < n; off += kChecksumSegment) {
    digests.push_back(XXH3_64bits(v.data() + off, std::min(kChecksumSegment, n - off)));
  }
  EXPECT_EQ(Checksum(v.data(), n), XXH3_64bits(digests.data(), digests.size() * 8));
}

TEST(ChecksumTest, CopyAndChecksumCopiesExactlyAndAgreesWithChecksum) {
  // Sizes around every threshold (segment, parallel, streaming), odd offsets.
  for (size_t n : {size_t{1}, size_t{63}, size_t{16384 + 5}, kChecksumSegment, kChecksumSegment + 1,
                   size_t{5 << 20} + 7, size_t{33 << 20} + 3}) {
    auto src = Random(n + 3, n);
    std::vector<char> dst(n + 8, 0);
    uint64_t sum = CopyAndChecksum(dst.data() + 3, src.data() + 1, n);
    ASSERT_EQ(std::memcmp(dst.data() + 3, src.data() + 1, n), 0) << n;
    EXPECT_EQ(sum, Checksum(src.data() + 1, n)) << n;
    EXPECT_EQ(dst[2], 0);
    EXPECT_EQ(dst[n + 3], 0);
  }
}

TEST(ChecksumTest, CopyCopiesExactly) {
  for (size_t n : {size_t{100}, size_t{5 << 20} + 9, size_t{33 << 20} + 1}) {
    auto src = Random(n + 1, n);
    std::vector<char> dst(n + 2, 0);
    Copy(dst.data() + 1, src.data() + 1, n);
    ASSERT_EQ(std::memcmp(dst.data() + 1, src.data() + 1, n), 0) << n;
    EXPECT_EQ(dst[0], 0);
    EXPECT_EQ(dst[n + 1], 0);
  }
}

// PutTensors copies an empty tensor's span, whose pointer may be null (a
// default std::span): UBSan aborted on memcpy(dst, nullptr, 0).
TEST(ChecksumTest, CopyOfNothingFromANullPointerIsFine) {
  char dst = 'd';
  Copy(&dst, nullptr, 0);
  Copy(nullptr, nullptr, 0);
  EXPECT_EQ(dst, 'd');
}

TEST(ChecksumTest, OneFlippedBitChangesTheChecksum) {
  auto v = Random(9 << 20, 3);
  uint64_t before = Checksum(v.data(), v.size());
  v[7 << 20] ^= 4;
  EXPECT_NE(Checksum(v.data(), v.size()), before);
}

}  // namespace
TEST(ChecksumTest, ABuilderFedPiecesInAnyOrderMatchesTheWholeChecksum) {
  for (size_t n : {size_t{0}, size_t{100}, kChecksumSegment, kChecksumSegment + 1,
                   11 * kChecksumSegment / 2, 40 * kChecksumSegment}) {
    auto v = Random(n, static_cast<uint32_t>(n % 1000) + 3);
    const size_t piece = 16 * kChecksumSegment;
    ChecksumBuilder b(n);
    std::vector<size_t> offsets;
    for (size_t off = 0; off < n; off += piece) offsets.push_back(off);
    std::reverse(offsets.begin(), offsets.end());  // the last chunk lands first
    for (size_t off : offsets) {
      size_t len = std::min(piece, n - off);
      ASSERT_TRUE(b.Fits(off, len)) << n << " " << off;
      b.Add(v.data(), off, len);
    }
    EXPECT_EQ(b.Finish(), Checksum(v.data(), n)) << n;
  }
  ChecksumBuilder b(40 * kChecksumSegment);
  EXPECT_FALSE(b.Fits(100, kChecksumSegment));                        // not at a segment
  EXPECT_FALSE(b.Fits(0, kChecksumSegment + 1));                      // not whole segments
  EXPECT_FALSE(b.Fits(39 * kChecksumSegment, 2 * kChecksumSegment));  // past the end
  EXPECT_TRUE(b.Fits(39 * kChecksumSegment, kChecksumSegment));
}

}  // namespace cistern::store

#include "src/catalog/records.h"

#include <gtest/gtest.h>

namespace cistern::catalog {
namespace {

TEST(RecordsTest, ReplicaKeyRoundTrips) {
  std::string stored = ReplicaKey("model/w", 0x0102030405060708ull, 65535);
  std::string_view key;
  uint64_t gen = 0;
  uint32_t host = 0;
  ASSERT_TRUE(ParseReplicaKey(stored, &key, &gen, &host));
  EXPECT_EQ(key, "model/w");
  EXPECT_EQ(gen, 0x0102030405060708ull);
  EXPECT_EQ(host, 65535u);
  EXPECT_FALSE(ParseReplicaKey(stored.substr(0, stored.size() - 1), &key, &gen, &host));
  EXPECT_FALSE(ParseReplicaKey("c/h/x", &key, &gen, &host));
}

TEST(RecordsTest, ReplicasOfOneKeyAreAdjacentAndOrderedByGeneration) {
  // "a" sorts before "ab" whatever the generation, and generations sort numerically.
  EXPECT_LT(ReplicaKey("a", 300, 1), ReplicaKey("ab", 1, 1));
  EXPECT_LT(ReplicaKey("a", 2, 9), ReplicaKey("a", 256, 1));
  EXPECT_LT(ReplicaKey("a", 2, 1), ReplicaKey("a", 2, 2));
}

TEST(RecordsTest, ClaimKeyRoundTrips) {
  uint64_t id = 0;
  ASSERT_TRUE(ParseClaimKey(ClaimKey(77), &id));
  EXPECT_EQ(id, 77u);
  EXPECT_FALSE(ParseClaimKey("c/t/1", &id));
}

TEST(RecordsTest, DigestCoversEveryField) {
  uint64_t d = ReplicaDigest("k", 1, "ram", 10, 5, true);
  EXPECT_NE(d, ReplicaDigest("j", 1, "ram", 10, 5, true));
  EXPECT_NE(d, ReplicaDigest("k", 2, "ram", 10, 5, true));
  EXPECT_NE(d, ReplicaDigest("k", 1, "ssd", 10, 5, true));
  EXPECT_NE(d, ReplicaDigest("k", 1, "ram", 11, 5, true));
  EXPECT_NE(d, ReplicaDigest("k", 1, "ram", 10, 6, true));
  EXPECT_NE(d, ReplicaDigest("k", 1, "ram", 10, 5, false));
  // Without a checksum the checksum field does not count.
  EXPECT_EQ(ReplicaDigest("k", 1, "ram", 10, 5, false), ReplicaDigest("k", 1, "ram", 10, 6, false));
}

}  // namespace
}  // namespace cistern::catalog

#include "src/catalog/records.h"

#include <xxhash.h>

namespace cistern::catalog {
namespace {

void PutBe(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetBe(std::string_view in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

}  // namespace

std::string HostKey(std::string_view host_id) {
  std::string k(kHostPrefix);
  k.append(host_id);
  return k;
}

std::string ReplicaKey(std::string_view key, uint64_t generation, uint32_t host_number) {
  std::string k(kReplicaPrefix);
  k.reserve(k.size() + 2 + key.size() + 12);
  PutBe(&k, key.size(), 2);
  k.append(key);
  PutBe(&k, generation, 8);
  PutBe(&k, host_number, 4);
  return k;
}

bool ParseReplicaKey(std::string_view stored, std::string_view* key, uint64_t* generation,
                     uint32_t* host_number) {
  if (stored.substr(0, kReplicaPrefix.size()) != kReplicaPrefix) return false;
  stored.remove_prefix(kReplicaPrefix.size());
  if (stored.size() < 2) return false;
  size_t len = GetBe(stored, 2);
  if (stored.size() != 2 + len + 12) return false;
  *key = stored.substr(2, len);
  *generation = GetBe(stored.substr(2 + len), 8);
  *host_number = static_cast<uint32_t>(GetBe(stored.substr(2 + len + 8), 4));
  return true;
}

std::string ClaimKey(uint64_t claim_id) {
  std::string k(kClaimPrefix);
  PutBe(&k, claim_id, 8);
  return k;
}

bool ParseClaimKey(std::string_view stored, uint64_t* claim_id) {
  if (stored.substr(0, kClaimPrefix.size()) != kClaimPrefix) return false;
  stored.remove_prefix(kClaimPrefix.size());
  if (stored.size() != 8) return false;
  *claim_id = GetBe(stored, 8);
  return true;
}

uint64_t ReplicaDigest(std::string_view key, uint64_t generation, std::string_view tier,
                       uint64_t size, uint64_t checksum, bool has_checksum) {
  std::string buf;
  buf.reserve(key.size() + tier.size() + 32);
  PutBe(&buf, key.size(), 2);
  buf.append(key);
  PutBe(&buf, generation, 8);
  PutBe(&buf, tier.size(), 1);
  buf.append(tier);
  PutBe(&buf, size, 8);
  PutBe(&buf, has_checksum ? checksum : 0, 8);
  buf.push_back(has_checksum ? 1 : 0);
  return XXH3_64bits(buf.data(), buf.size());
}

}  // namespace cistern::catalog

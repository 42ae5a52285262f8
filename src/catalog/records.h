// The catalog's durable key layout in the MetadataBackend, and the digest of
// one replica that daemons and the registry both compute (StateVersion).
//
//   c/meta                                   CatalogMeta
//   c/h/<host_id>                            HostRecord
//   c/r/<be16 key length><key><be64 generation><be32 host number>
//                                            ReplicaRecord
//   c/t/<be64 claim id>                      TransferRecord
//
// Replica keys sort by object key, then generation, then host, so one key's
// replicas are adjacent in a scan.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cistern::catalog {

inline constexpr std::string_view kCatalogPrefix = "c/";
inline constexpr std::string_view kMetaKey = "c/meta";
inline constexpr std::string_view kHostPrefix = "c/h/";
inline constexpr std::string_view kReplicaPrefix = "c/r/";
inline constexpr std::string_view kClaimPrefix = "c/t/";

std::string HostKey(std::string_view host_id);
std::string ReplicaKey(std::string_view key, uint64_t generation, uint32_t host_number);
// False when `stored` is not a well-formed replica key.
bool ParseReplicaKey(std::string_view stored, std::string_view* key, uint64_t* generation,
                     uint32_t* host_number);
std::string ClaimKey(uint64_t claim_id);
bool ParseClaimKey(std::string_view stored, uint64_t* claim_id);

// The digest of one replica as a host reports it. A host's StateVersion
// digest is the XOR of its replicas' digests, so it is independent of order
// and both sides update it per replica.
uint64_t ReplicaDigest(std::string_view key, uint64_t generation, std::string_view tier,
                       uint64_t size, uint64_t checksum, bool has_checksum);

}  // namespace cistern::catalog

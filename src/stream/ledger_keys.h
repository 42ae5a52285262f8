// The key layout of stream ledgers in the registry:
//   stream/<name>/meta        ledger::StreamMeta
//   stream/<name>/marker      ledger::Marker
//   stream/<name>/s/<seq>     ledger::SampleRecord; <seq> is 8 bytes big-endian,
//                             so a prefix scan returns samples in commit order.
// Stream names contain no '/', so prefixes never collide.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cistern::stream {

inline constexpr std::string_view kLedgerRoot = "stream/";

inline std::string StreamPrefix(std::string_view name) {
  return std::string(kLedgerRoot).append(name).append("/");
}
inline std::string MetaKey(std::string_view name) { return StreamPrefix(name) + "meta"; }
inline std::string MarkerKey(std::string_view name) { return StreamPrefix(name) + "marker"; }
inline std::string SamplePrefix(std::string_view name) { return StreamPrefix(name) + "s/"; }
inline std::string SampleKey(std::string_view name, uint64_t seq) {
  std::string k = SamplePrefix(name);
  for (int shift = 56; shift >= 0; shift -= 8) k.push_back(static_cast<char>(seq >> shift));
  return k;
}
// The sequence number at the end of a sample key, or nullopt if malformed.
inline std::optional<uint64_t> SeqOfSampleKey(std::string_view key, size_t prefix_len) {
  if (key.size() != prefix_len + 8) return std::nullopt;
  uint64_t seq = 0;
  for (size_t i = prefix_len; i < key.size(); ++i) seq = seq << 8 | static_cast<uint8_t>(key[i]);
  return seq;
}

}  // namespace cistern::stream

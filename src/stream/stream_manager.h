// StreamManager: the daemon's streams by name, loaded from the registry at
// start (each reconciled as a fresh process must) and created on open.
//
// Thread-safety: none; the daemon's loop thread owns it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "cistern/stream.pb.h"
#include "src/common/clock.h"
#include "src/registry/metadata_backend.h"
#include "src/store/object_store.h"
#include "src/stream/stream.h"

namespace cistern::stream {

// Options of a new stream that its opener leaves unset.
struct StreamDefaults {
  uint64_t lease_timeout_ms = 60'000;
  uint64_t high_watermark_bytes = 0;  // 0: no watermark
  uint64_t low_watermark_bytes = 0;
  uint32_t max_in_flight_per_producer = 0;
  uint32_t max_lease_refs = 4096;
};

class StreamManager {
 public:
  // Reads every stream ledger under the registry's "stream/" prefix, reconciles
  // and pins it. Fails (nothing kept) on a registry error or a record that
  // does not parse (DataLoss, naming the key).
  static absl::StatusOr<std::unique_ptr<StreamManager>> Open(
      registry::MetadataBackend* backend, store::ObjectStore* store, Clock* clock,
      const StreamDefaults& defaults,
      std::vector<std::pair<std::string, ReconcileReport>>* reports);

  // Opens `name`, creating it (durably) if it does not exist; fields set in
  // `options` update an existing stream.
  absl::StatusOr<Stream*> OpenStream(std::string_view name, const wire::StreamOptions& options);
  // NotFound naming the stream if it was never opened.
  absl::StatusOr<Stream*> Find(std::string_view name);
  const std::map<std::string, std::unique_ptr<Stream>, std::less<>>& streams() const {
    return streams_;
  }

  // Changes whenever any stream's epoch does (see Stream::epoch).
  uint64_t epoch() const;
  std::optional<Clock::TimePoint> NextLeaseExpiry() const;
  // Returns every stream's expired leases to its queue.
  void ReclaimExpired() {
    for (auto& [name, s] : streams_) s->ReclaimExpired();
  }
  registry::MetadataBackend* backend() const { return backend_; }

 private:
  StreamManager(registry::MetadataBackend* backend, store::ObjectStore* store, Clock* clock,
                const StreamDefaults& defaults)
      : backend_(backend), store_(store), clock_(clock), defaults_(defaults) {}
  wire::StreamOptions WithDefaults(const wire::StreamOptions& o) const;

  registry::MetadataBackend* const backend_;
  store::ObjectStore* const store_;
  Clock* const clock_;
  const StreamDefaults defaults_;
  std::map<std::string, std::unique_ptr<Stream>, std::less<>> streams_;
  uint64_t created_ = 0;
};

}  // namespace cistern::stream

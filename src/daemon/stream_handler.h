// Serves the stream verbs of the local protocol (stream_open ... stream_reconcile)
// over a StreamManager. Knows nothing of sockets: the server asks it whether a
// request would block (backpressure on commit, too few refs for a lease) and
// parks the request, asking again as things change and one last time at the
// request's deadline.
//
// Thread-safety: none; the server's loop thread owns it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "cistern/local.pb.h"
#include "src/common/clock.h"
#include "src/stream/stream_manager.h"

namespace cistern::daemon {

class StreamHandler {
 public:
  explicit StreamHandler(stream::StreamManager* streams) : streams_(streams) {}

  static bool Handles(const wire::Request& req);
  // How long `req` may wait (0: not at all).
  static uint64_t WaitMs(const wire::Request& req);

  enum class Attempt { kFirst, kRetry, kFinal };
  // Fills `resp`; returns true if the request would block and may wait
  // (then `resp` is left empty). `client` names the producer when a commit
  // does not. kFinal never blocks: a commit answers ResourceExhausted, a lease
  // what there is.
  bool Handle(const wire::Request& req, std::string_view client, Attempt attempt,
              wire::Response* resp);

  // Returns expired stream leases to their queues.
  void ReclaimExpired() {
    if (streams_) streams_->ReclaimExpired();
  }
  uint64_t epoch() const { return streams_ ? streams_->epoch() : 0; }
  std::optional<Clock::TimePoint> NextLeaseExpiry() const {
    return streams_ ? streams_->NextLeaseExpiry() : std::nullopt;
  }

 private:
  stream::StreamManager* streams_;
};

}  // namespace cistern::daemon

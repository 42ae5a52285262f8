// One session with cisternd: the socket, the mapped arenas, and request/response
// exchange. Shared (shared_ptr) by the Client and every ObjectView and Writer
// it made, so mappings stay valid as long as any of them lives.
// Thread-safe: one mutex serialises use of the socket.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cistern/local.pb.h"
#include "include/cistern/client.h"
#include "src/common/frame.h"
#include "src/common/mutex.h"
#include "src/common/unique_fd.h"

namespace cistern::client_internal {

class Connection {
 public:
  static absl::StatusOr<std::shared_ptr<Connection>> Open(const ConnectOptions& options);
  ~Connection();

  // Sends `req` (its id is assigned here) and waits for its response. A
  // response carrying an error status is returned as that status.
  absl::StatusOr<wire::Response> Call(wire::Request& req);
  // Sends `req` marked oneway and does not wait; failures are ignored (a dead
  // daemon has already ended the session and everything it held).
  void SendOneway(wire::Request& req);

  // The writable mapping (for writers) and a read-only mapping of the same
  // file (for views, so no reader can change shared bytes).
  char* tier_base(uint32_t tier) const { return tiers_[tier].base; }
  const char* tier_read_base(uint32_t tier) const { return tiers_[tier].read_base; }
  uint64_t tier_size(uint32_t tier) const { return tiers_[tier].size; }
  size_t tier_count() const { return tiers_.size(); }
  uint64_t session_id() const { return session_id_; }
  const std::string& socket_path() const { return socket_path_; }

 private:
  struct Mapping {
    char* base = nullptr;
    const char* read_base = nullptr;
    uint64_t size = 0;
  };
  Connection() : in_(1ull << 30) {}
  absl::Status SendLocked(wire::Request& req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<wire::Response> ReceiveLocked(std::vector<int>* fds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Broken() const;

  std::string socket_path_;
  std::chrono::nanoseconds spin_{0};
  uint64_t session_id_ = 0;
  std::vector<Mapping> tiers_;  // constant after Open

  Mutex mu_;
  UniqueFd fd_ ABSL_GUARDED_BY(mu_);
  FrameBuffer in_ ABSL_GUARDED_BY(mu_);
  std::string out_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace cistern::client_internal

// One client's connection to cisternd: the socket, the mapped arenas, and
// request/response exchange. Shared (shared_ptr) by the Client and every
// ObjectView and Writer it made, so mappings stay valid as long as any of them
// lives.
//
// Reconnection. When the daemon goes away (killed, restarted, upgraded), the
// next call connects again, says hello, checks that the arenas are the very
// files mapped here, and adopts the leases and pending writes the earlier
// session held: a restarted daemon kept them for this process (the shared
// lease table), so views stay valid and their releases work as before. A
// request the daemon never received (the send failed) is sent again on the
// new connection; one that was sent when the connection broke fails with
// Unavailable (it may or may not have taken effect). Releases that could not
// be sent while the daemon was down are sent after the next reconnect.
//
// Thread-safety: one mutex serialises use of the socket; the mappings are
// constant after Open.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
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
  // Call, returning the reply's one body, moved out:
  //   return conn->Call(req, &wire::Response::mutable_stats);
  template <typename Body>
  absl::StatusOr<Body> Call(wire::Request& req, Body* (wire::Response::*body)()) {
    absl::StatusOr<wire::Response> resp = Call(req);
    if (!resp.ok()) return resp.status();
    return std::move(*((*resp).*body)());
  }
  // Sends `req` marked oneway and does not wait. A release that cannot be
  // sent now is sent after the next reconnect.
  void SendOneway(wire::Request& req);

  // The writable mapping (for writers) and a read-only mapping of the same
  // file (for views, so no reader can change shared bytes).
  char* tier_base(uint32_t tier) const { return tiers_[tier].base; }
  const char* tier_read_base(uint32_t tier) const { return tiers_[tier].read_base; }
  uint64_t tier_size(uint32_t tier) const { return tiers_[tier].size; }
  // The arena file, for a writer's own mapping of its range.
  int tier_fd(uint32_t tier) const { return tiers_[tier].fd.get(); }
  size_t tier_count() const { return tiers_.size(); }
  uint64_t session_id() const;
  const std::string& socket_path() const { return options_.socket_path; }
  // How many times this connection reconnected (for tests).
  uint64_t reconnects() const;
  // The fast path of the current session; null when the daemon offers none
  // (or ConnectOptions::fast_path is off).
  std::shared_ptr<FastPath> fast() const;
  // Tells the daemon a fast lease on a retired block ended (one way).
  void SendFastReleased();
  // The daemon takes wire::Put (its hello said so).
  bool put_in_one_request() const { return put_in_one_request_.load(std::memory_order_relaxed); }

  // Write space the daemon reserved for this session ahead of a put
  // (wire::ExtentGrant): a put packs its objects there and names them in one
  // request (wire::PutExtent). One put at a time owns it.
  struct Extent {
    uint64_t id = 0;
    uint32_t tier = 0;
    uint64_t block_offset = 0;
    uint64_t bytes = 0;
    uint64_t reconnects = 0;  // reconnects() when granted
  };
  // Maps the pages under [p, p + n) of tier `tier`'s writable mapping in one
  // madvise(MADV_POPULATE_WRITE), where a copy would take a page fault per
  // 4 KiB (costly on virtual machines), once per page: the pages stay mapped,
  // and asking again costs more than the copy (about 50 us per MiB here,
  // against 32 us for the memcpy). Never writes a byte; best effort.
  void PopulateForWrite(uint32_t tier, std::byte* p, uint64_t n);
  // How many madvise calls PopulateForWrite made in this process (for tests).
  static uint64_t PopulateCallsForTest();
  // The daemon reserves write space (its hello said so).
  bool reserve_extents() const {
    return options_.reserve_write_space && reserve_extents_.load(std::memory_order_relaxed);
  }
  // Hands the caller the session's idle extent if it holds `bytes`. One that
  // does not, or that an earlier daemon granted (a reconnect since), is
  // aborted (one way) so that the next seal can ask for another.
  std::optional<Extent> TakeExtent(uint64_t bytes);
  // Keeps what a reply granted (nothing when g.id() is 0) as the idle
  // extent; one outside the arenas is aborted instead.
  void KeepExtent(const wire::ExtentGrant& g);
  // Whether a seal should ask for write space: none is idle now.
  bool extent_idle() const;

 private:
  struct Mapping {
    char* base = nullptr;
    const char* read_base = nullptr;
    uint64_t size = 0;
    UniqueFd fd;
    dev_t dev = 0;
    ino_t ino = 0;
    // One bit per page of `base`: set once PopulateForWrite mapped it.
    std::unique_ptr<std::atomic<uint64_t>[]> populated;
  };
  explicit Connection(const ConnectOptions& options);
  // Connects and says hello; on success the arena descriptors are in *fds.
  absl::StatusOr<wire::HelloReply> HelloLocked(std::vector<UniqueFd>* fds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A new socket, hello, the same arenas, and the earlier session's leases.
  absl::Status ReconnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<wire::Response> ExchangeLocked(wire::Request& req)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads responses until the one to request `id`.
  absl::StatusOr<wire::Response> ReplyLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SendLocked(wire::Request& req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<wire::Response> ReceiveLocked(std::vector<int>* fds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Broken() const;
  // Maps the fast path the hello offered (its descriptors follow the arenas'
  // in `owned`); without one, or if mapping fails, the session has none.
  void SetFastPathLocked(const wire::HelloReply& h, std::vector<UniqueFd>& owned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ConnectOptions options_;      // socket_path filled in; constant
  std::vector<Mapping> tiers_;  // constant after Open

  mutable Mutex mu_;
  UniqueFd fd_ ABSL_GUARDED_BY(mu_);
  FrameBuffer in_ ABSL_GUARDED_BY(mu_);
  std::string out_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  // Set when reconnecting can never work (the arenas changed): the reason.
  absl::Status dead_ ABSL_GUARDED_BY(mu_);
  uint64_t session_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t incarnation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reconnects_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> put_in_one_request_{false};  // from the latest hello
  std::atomic<bool> reserve_extents_{false};     // from the latest hello
  mutable Mutex extent_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::optional<Extent> extent_ ABSL_GUARDED_BY(extent_mu_);  // idle
  std::vector<uint64_t> unsent_releases_ ABSL_GUARDED_BY(mu_);
  // Its own lock: a fast get must not wait behind a call on the socket.
  mutable Mutex fast_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::shared_ptr<FastPath> fast_ ABSL_GUARDED_BY(fast_mu_);
};

}  // namespace cistern::client_internal

// The local server: one thread running an epoll loop over the Unix socket.
// Every connection is a session. Requests of a session are handled in order,
// one at a time, on the loop thread; the work per request is a few map
// operations under the store's mutex (clients copy the bytes themselves), so
// one thread serves many clients. A request that may wait — a create waiting
// for space, a stream commit waiting out backpressure, a stream lease waiting
// for refs — is parked (its session reads nothing more) and retried whenever
// the store frees bytes, a stream changes or a stream lease expires, and one
// last time at its deadline. Stream verbs that change a ledger write the
// registry on this thread, one SQLite transaction without an fsync; the
// registry's sync thread fdatasyncs behind it, once for every write that
// arrived during the previous sync (group commit), and wakes the loop. A
// stream verb's reply is held until everything the ledger had written when
// it was answered is durable, and so is every later reply of that session
// (replies leave in order); other sessions are served meanwhile, so no
// request waits behind an fsync unless it asked for durability. With `busy_poll` set, after serving
// a request the loop keeps polling for that long before it sleeps: on virtual machines waking a
// sleeping thread on another CPU costs tens of microseconds, far more than the request. It is off
// by default: polling yields between polls, and on a host whose CPUs are busy a yield costs a
// scheduler slice (about 4 ms) per round trip (docs/benchmarks.md, "Busy polling: CPU cost").
//
// What a client can make the daemon hold is bounded (issue 9): a session whose
// unsent replies pass max_unsent_reply_bytes is not served, and a session that
// is not served (its request parked, or its replies backed up) reads at most
// max_read_ahead_bytes ahead; then its socket is left unread, so the client's
// sends block. A malformed frame closes a session that has not said hello,
// and kMaxMalformedFrames close one that has. Connections that have not said
// hello are capped apart from the sessions (max_pending_sessions), and a
// session that holds nothing is closed after idle_timeout. Lines a client can
// provoke (rejections, refusals) are rate-limited (LogLimiter).
//
// Thread-safety: Run() on one thread; Shutdown() from any thread or a signal
// handler; session_count() from any thread. Everything else belongs to the
// loop thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cistern/local.pb.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "src/common/clock.h"
#include "src/common/frame.h"
#include "src/common/unique_fd.h"
#include "src/daemon/log_limiter.h"
#include "src/daemon/metrics.h"
#include "src/daemon/request_handler.h"
#include "src/daemon/stream_handler.h"
#include "src/registry/metadata_backend.h"
#include "src/store/object_store.h"

namespace cistern::daemon {

// Store sessions of client processes that outlived the previous daemon (their
// leases were restored from the shared lease table) count up from here,
// below the stream session (1 << 62) and far above the server's own ids.
inline constexpr store::SessionId kRecoveredSessionBase = store::SessionId{1} << 61;

// A client process that held leases when the previous daemon stopped and
// still lives. Its leases stay under `session` until it reconnects and adopts
// them (Adopt names incarnation and old_session_id) or it exits (`pidfd`
// becomes readable), whichever comes first.
struct RecoveredHolder {
  store::SessionId session = 0;
  uint64_t incarnation = 0;
  uint64_t old_session_id = 0;
  int32_t pid = 0;
  uint32_t uid = 0;
  UniqueFd pidfd;
};

// A session that has said hello is closed after this many malformed frames
// (one that has not, after the first).
inline constexpr uint32_t kMaxMalformedFrames = 8;

struct ServerOptions {
  std::string socket_path;
  std::string token;  // empty: none required
  std::vector<uint32_t> allowed_uids;
  uint64_t max_frame_bytes = 16 << 20;
  Clock::Duration hello_timeout = std::chrono::seconds(5);
  uint32_t max_sessions = 1024;                             // that said hello
  uint32_t max_pending_sessions = 64;                       // that have not said hello yet
  Clock::Duration idle_timeout = std::chrono::minutes(10);  // 0: never
  uint64_t max_unsent_reply_bytes = 8 << 20;
  uint64_t max_read_ahead_bytes = 1 << 20;
  uint32_t max_batch = 4096;
  // Poll without sleeping for this long after the last request (see config.proto).
  Clock::Duration busy_poll = std::chrono::microseconds(0);
  std::string daemon_version;
  std::string metrics_endpoint;  // reported in daemon_status
  uint64_t incarnation = 0;      // reported in hello (see RecoveredHolder)
  // Tier arenas handed to clients in hello.
  std::vector<wire::TierInfo> tiers;
  std::vector<int> arena_fds;
  // The local fast path, handed to clients that ask in hello (after the
  // arenas): the index (read-only) and the fast lease file. -1: no fast path.
  int index_fd = -1;
  uint64_t index_bytes = 0;
  int fast_lease_fd = -1;
  // Where answered requests are counted and timed; null: nowhere.
  RequestMetrics* metrics = nullptr;
};

class Server {
 public:
  // `streams` may be null: stream verbs then fail with FailedPrecondition.
  Server(ServerOptions options, store::ObjectStore* store, stream::StreamManager* streams,
         Clock* clock);
  ~Server();

  // Binds and listens; FailedPrecondition if a live daemon owns the socket.
  absl::Status Listen();
  // Serves until Shutdown(); then stops accepting, answers what was already
  // received, flushes responses, ends every session and returns.
  void Run();
  // Async-signal-safe.
  void Shutdown();
  // Before Run: the holders whose leases the store restored.
  void WatchRecoveredHolders(std::vector<RecoveredHolder> holders);
  // Before Run: also calls `fn` on the loop thread about once every `period`
  // while it serves (housekeeping: the eviction summary, the stderr
  // rotation), between rounds of requests.
  void Every(Clock::Duration period, std::function<void()> fn);
  // Before Run: fills the cluster part of `daemon status` (the cluster
  // agent's view); unset when the daemon runs alone. Called on the loop thread.
  void SetClusterStatus(std::function<void(wire::ClusterStatus*)> fn) {
    cluster_status_ = std::move(fn);
  }
  // Before Run: how wait_published learns whether (key, generation) has
  // reached the registry (true) or is still queued (false), and why a
  // publication is late (for the DeadlineExceeded message). Unset: every
  // wait is answered OK at once (the daemon runs alone).
  void SetPublication(std::function<bool(std::string_view key, uint64_t generation)> published,
                      std::function<std::string()> why_late) {
    published_ = std::move(published);
    why_late_ = std::move(why_late);
  }
  // Thread-safe: a publication was acknowledged; parked waits are retried.
  void NotifyPublished();

  // Before Run: how a get of a key this host does not hold pulls it from
  // another host (docs/cluster.md, "Remote get"). `start` begins a pull of
  // (key, generation), or joins the one running; `poll` says what became of
  // it: nullopt while it runs, else its status (the get is then answered
  // from the store, or with that error). Whoever finishes a pull calls
  // NotifyPublished so that parked gets are retried. Unset: a get of a key
  // not held here is NotFound. Called on the loop thread.
  struct RemoteGet {
    std::function<void(std::string_view key, uint64_t generation, std::string_view prefer_host,
                       std::chrono::milliseconds timeout)>
        start;
    std::function<std::optional<absl::Status>(std::string_view key, uint64_t generation)> poll;
    std::chrono::milliseconds default_timeout{60000};  // a Get without wait_ms
    // Fan-out (src/cluster/replicate.h): start answers a job id at once (or
    // refuses the request); poll answers nothing while it runs, then its
    // reply once; forget drops a job whose asker went away.
    std::function<absl::StatusOr<uint64_t>(const wire::Replicate&)> replicate_start;
    std::function<std::optional<absl::StatusOr<wire::ReplicateReply>>(uint64_t job)> replicate_poll;
    std::function<void(uint64_t job)> replicate_forget;
  };
  // Fan-outs wait at most this long (a longer wait_ms is clamped to it).
  static constexpr uint64_t kMaxReplicateWaitMs = 3600 * 1000;
  void SetRemoteGet(RemoteGet remote) { remote_get_ = std::move(remote); }

  // Open sessions (connections that said hello). Thread-safe.
  uint64_t session_count() const { return session_count_.load(std::memory_order_relaxed); }

 private:
  struct Session {
    uint64_t id = 0;
    UniqueFd fd;
    int pid = 0;
    uint32_t uid = 0;
    std::string client_name;
    bool hello_done = false;
    bool closing = false;   // close once `out` is flushed
    bool stalled = false;   // stopped serving: unsent replies passed the cap
    uint32_t interest = 0;  // the epoll events registered
    uint32_t malformed = 0;
    FrameBuffer in;
    std::string out;
    Clock::TimePoint hello_deadline;
    Clock::TimePoint last_request;    // for the idle timeout
    Clock::TimePoint close_deadline;  // while closing: when to stop waiting for the client
    // Replies waiting for the ledger to be durable, in order (see the top
    // of this file); held_bytes is their serialised size.
    struct Held {
      uint64_t durable_at = 0;  // the ledger write it waits for; 0: only order
      wire::Response resp;
    };
    std::deque<Held> held;
    uint64_t held_bytes = 0;
    // A request waiting (see the top of this file).
    std::unique_ptr<wire::Request> parked;
    uint64_t replicate_job = 0;  // the fan-out a parked Replicate waits for
    Clock::TimePoint parked_since;
    Clock::TimePoint parked_deadline;
    explicit Session(uint64_t max_frame) : in(max_frame) {}
  };

  void Accept();
  // Makes room for one more connection that has not said hello: closes the
  // oldest such (a client says hello at once; one that waits is the likelier
  // squatter).
  void DropOldestPending();
  // `hangup`: epoll reported the peer gone.
  void OnReadable(Session* s, bool hangup);
  // Whether the session is not being served: its request is parked or its
  // replies backed up. Such a session reads only max_read_ahead_bytes ahead.
  bool Blocked(const Session* s) const {
    return s->parked != nullptr || s->out.size() + s->held_bytes >= options_.max_unsent_reply_bytes;
  }
  bool MayRead(const Session* s) const {
    return !s->closing && (!Blocked(s) || s->in.buffered() < options_.max_read_ahead_bytes);
  }
  // Marks the session to be closed once its replies are flushed (or, if the
  // client does not take them, at close_deadline).
  void CloseAfterFlush(Session* s);
  // Logs a line a client can provoke, within the rate (LogLimiter).
  template <typename... Args>
  void LogRejection(spdlog::level::level_enum level, fmt::format_string<Args...> format,
                    Args&&... args);
  void ProcessFrames(Session* s);
  void HandleFrame(Session* s, std::string_view frame);
  // Answers `req` into `resp`, or returns true if it would block and may wait.
  bool Dispatch(Session* s, const wire::Request& req, StreamHandler::Attempt attempt,
                wire::Response* resp);
  // A get the store answered NotFound, with remote_get_ set: starts or
  // polls its pull; true to park.
  bool RemoteGetAttempt(const wire::Get& get, StreamHandler::Attempt attempt, wire::Response* resp);
  uint64_t RemoteGetWaitMs(const wire::Get& get) const;
  bool HandleReplicate(Session* s, const wire::Request& req, StreamHandler::Attempt attempt,
                       wire::Response* resp);
  uint64_t ReplicateWaitMs(const wire::Replicate& r) const;
  void HandlePrefetch(const wire::Request& req, wire::Response* resp);
  // Answers a parked request (it no longer blocks, or its time is up) and
  // resumes its session.
  void Unpark(Session* s, wire::Response& resp);
  absl::Status HandleHello(Session* s, const wire::Request& req);
  void HandleAdopt(Session* s, const wire::Request& req, wire::Response* resp);
  // A recovered holder's process exited: its leases and writes end.
  void HolderExited(store::SessionId session);
  void RecordRequest(Verb verb, absl::StatusCode code, Clock::TimePoint start);
  void FillDaemonStatus(wire::DaemonStatusReply* r);
  // Queues `resp` for the client. `ledger_reply`: the answer to a stream
  // verb, held until the ledger is durable up to what it has written now.
  void Reply(Session* s, const wire::Response& resp, bool ledger_reply = false);
  // Serialises `resp` onto the session's output.
  void AppendReply(Session* s, const wire::Response& resp);
  // Sends the held replies whose ledger writes are now durable (all of them,
  // with errors for the ones that needed durability, once a sync failed).
  void ReleaseHeld();
  void ReplyError(Session* s, uint64_t id, const absl::Status& status, bool close);
  void Flush(Session* s);
  void UpdateInterest(Session* s);
  // Ends the session. With `end_leases` false (shutdown) its leases and
  // writes stay recorded in the shared lease table, so that a restarted
  // daemon keeps them while the client lives.
  void CloseSession(Session* s, const char* why, bool end_leases = true);
  void RetryParked();
  void ExpireDeadlines();
  void RunTick();
  int NextTimeoutMs();
  void Drain();

  ServerOptions options_;
  store::ObjectStore* store_;
  Clock* clock_;
  RequestHandler handler_;
  StreamHandler streams_;
  UniqueFd listen_fd_;
  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;  // eventfd written by Shutdown()
  uint64_t next_session_id_ = 1;
  std::map<uint64_t, std::unique_ptr<Session>> sessions_;
  // Sessions with a parked request (a create waiting for space, or a stream
  // commit or lease that would block), FIFO.
  std::deque<uint64_t> parked_;
  std::map<store::SessionId, RecoveredHolder> holders_;
  uint64_t said_hello_ = 0;  // sessions (counted in max_sessions)
  uint64_t pending_ = 0;     // connections that have not said hello
  LogLimiter rejections_;
  // said_hello_, for other threads (session_count()).
  std::atomic<uint64_t> session_count_{0};
  uint64_t seen_free_epoch_ = 0;
  uint64_t seen_stream_epoch_ = 0;
  bool stopping_ = false;
  Clock::Duration tick_period_{};
  std::function<void()> tick_;
  std::function<void(wire::ClusterStatus*)> cluster_status_;
  std::function<bool(std::string_view, uint64_t)> published_;
  std::function<std::string()> why_late_;
  RemoteGet remote_get_;
  UniqueFd notify_fd_;  // an eventfd: NotifyPublished
  // The stream ledger (null without streams), whose sync thread writes
  // durable_fd_; and the sessions that hold replies for it.
  registry::MetadataBackend* ledger_ = nullptr;
  UniqueFd durable_fd_;
  std::set<uint64_t> holding_;
  bool publish_changed_ = false;
  Clock::TimePoint next_tick_{};
  Clock::TimePoint start_time_;
  uint64_t start_unix_ms_ = 0;
};

}  // namespace cistern::daemon

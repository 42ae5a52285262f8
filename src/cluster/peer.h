// Pulls between daemons (docs/cluster.md, "Moving the bytes").
//
// PeerServer is the holder's side. A puller's Open (over the control
// channel, src/cluster/peer_channel.h and proto/cistern/peer.proto) leases (key, generation) in the
// store under the peer session and answers with the lease as a transport region; the puller's reads
// of that region are served from the leased payload and nothing else, so a peer can read only bytes
// of an object it opened. The lease ends with Close, or lease_ms after the Open or the last read
// when the puller went quiet, but never while a read of it is still being sent. Objects written
// local_only are never served.
//
// Fetcher is the puller's side: a get of a key this host does not hold
// asks the registry where it lives, claims a transfer from the best replica,
// opens it, reserves a block of the same size and manifest, reads the
// payload into it, verifies the checksum the registry recorded, and seals it
// as a replica with the origin's generation (the cluster agent then
// publishes it). A failure of one source (gone, unreachable, a bad checksum,
// no longer holding it) moves on to the next replica; the reserved block is
// aborted, so nothing torn is ever visible. Concurrent fetches of one
// (key, generation) share one pull.
//
// Thread-safety: every public method of both may be called from any thread.
// PeerServer's HandleCall runs on the control channel's gRPC threads and
// Resolve on the transport's progress thread; the Fetcher runs pulls on its
// own threads.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cistern/peer.pb.h"
#include "src/cluster/peer_channel.h"
#include "src/cluster/registry_client.h"
#include "src/common/mutex.h"
#include "src/store/object_store.h"
#include "src/transport/ucx_transport.h"

namespace cistern::cluster {

class Replicator;  // src/cluster/replicate.h

// The time left until `deadline`, never negative.
inline std::chrono::milliseconds Remaining(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds{0});
}

// The store sessions of peer leases and of writes being pulled: below the
// recovered sessions (1 << 61) and far above the server's own ids.
inline constexpr store::SessionId kPeerSession = store::SessionId{1} << 60;
inline constexpr store::SessionId kFetchSession = kPeerSession + 1;

// A replica this host is still receiving, served to fan-out relays before it
// is sealed: bytes [0, available) of `data` have arrived. A read of it is
// counted in `readers`; the Fetcher marks a failed pull failed and waits for
// those reads before it frees the block. Once sealed, `sealed_lease` (a store
// lease under kPeerSession) keeps the bytes until the last relay region that
// refers to this ends.
struct Arriving {
  Arriving(store::ObjectStore* s, std::string k, uint64_t g, const char* d, uint64_t n,
           pv1::OpenReply reply)
      : store(s),
        key(std::move(k)),
        generation(g),
        data(d),
        size(n),
        open_reply(std::move(reply)) {}
  ~Arriving();
  Arriving(const Arriving&) = delete;
  Arriving& operator=(const Arriving&) = delete;

  enum class State { kArriving, kComplete, kFailed };
  // Marks bytes [offset, offset + n) arrived; `available` grows over the
  // prefix that has.
  void MarkArrived(uint64_t offset, uint64_t n);
  // Fails it and waits (up to `wait`) for the reads of it being sent.
  void Fail(std::string why, std::chrono::milliseconds wait);
  void Complete(uint64_t lease);

  store::ObjectStore* const store;
  const std::string key;
  const uint64_t generation;
  const char* const data;
  const uint64_t size;
  const pv1::OpenReply open_reply;  // what a relay's Open is told (region unset)

  mutable Mutex mu;
  CondVar reads_done;
  State state ABSL_GUARDED_BY(mu) = State::kArriving;
  std::string why ABSL_GUARDED_BY(mu);
  uint64_t available ABSL_GUARDED_BY(mu) = 0;
  std::map<uint64_t, uint64_t> islands ABSL_GUARDED_BY(mu);  // arrived past `available`
  uint32_t readers ABSL_GUARDED_BY(mu) = 0;
  uint64_t sealed_lease ABSL_GUARDED_BY(mu) = 0;
};

// What a PeerServer asks of this host's Fetcher.
struct FetchHooks {
  // The replica of (key, generation) being received here, if any; `pending`
  // when a fetch of it is queued but has not reserved its block yet.
  std::function<std::shared_ptr<Arriving>(std::string_view key, uint64_t generation, bool* pending)>
      arriving;
  // A peer's FetchRequest / FetchStatusRequest.
  std::function<absl::StatusOr<pv1::FetchReply>(const pv1::FetchRequest&)> fetch;
  std::function<pv1::FetchStatusReply(const pv1::FetchStatusRequest&)> fetch_status;
};

struct PeerServerOptions {
  std::chrono::milliseconds max_lease{60000};  // the cap on OpenRequest.lease_ms
  uint64_t max_inline = 1 << 20;               // the cap on OpenRequest.inline_max
};

class PeerServer {
 public:
  // `tier_bases[i]` is where tier i of `store` is mapped.
  PeerServer(store::ObjectStore* store, std::vector<char*> tier_bases, PeerServerOptions options);
  ~PeerServer();  // releases every lease

  // The control channel's handler and the transport's Resolver.
  absl::StatusOr<pv1::PeerReply> HandleCall(const pv1::PeerRequest& request);
  absl::StatusOr<transport::ReadLease> Resolve(uint64_t region, uint64_t offset, uint64_t length);

  // Ends the leases past their time that no read holds.
  void ExpireLeases();

  // Set once the Fetcher exists; until then relays and fetch requests are
  // refused as Unavailable.
  void SetFetchHooks(FetchHooks hooks);
  // The packed remote key of each tier (empty: not registered), handed to
  // pullers in OpenReply for one-sided reads.
  void SetRemoteKeys(std::vector<std::string> rkeys);
  // Where this host's transport listens, told to pullers in OpenReply.
  void SetTransportAddress(std::string address);

  uint64_t open_leases() const;
  uint64_t bytes_sent() const;  // payload bytes handed to peers' reads

 private:
  struct Lease {
    uint64_t store_lease = 0;
    const char* payload = nullptr;
    uint64_t size = 0;
    std::chrono::milliseconds duration{0};  // renewed by each read
    std::chrono::steady_clock::time_point expires;
    uint32_t reads = 0;                  // being sent
    bool closed = false;                 // Close came, or it expired, while a read was sent
    std::shared_ptr<Arriving> arriving;  // a relay region (no store lease)
  };
  absl::StatusOr<pv1::OpenReply> Open(const pv1::OpenRequest& req);
  absl::StatusOr<pv1::OpenReply> OpenArriving(const std::string& key, uint64_t generation,
                                              std::chrono::milliseconds lease,
                                              const std::string& requester);
  absl::StatusOr<pv1::ProgressReply> Progress(uint64_t region);
  FetchHooks EnterHooks();  // a copy of the hooks, counted as in use until LeaveHooks
  void LeaveHooks();
  absl::StatusOr<transport::ReadLease> ResolveArriving(uint64_t region, Lease& l, uint64_t offset,
                                                       uint64_t length)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndLocked(uint64_t region) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  store::ObjectStore* const store_;
  const std::vector<char*> tier_bases_;
  const PeerServerOptions options_;
  mutable Mutex mu_;
  std::map<uint64_t, Lease> leases_ ABSL_GUARDED_BY(mu_);
  uint64_t next_region_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bytes_sent_ ABSL_GUARDED_BY(mu_) = 0;
  FetchHooks hooks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> rkeys_ ABSL_GUARDED_BY(mu_);
  std::string transport_address_ ABSL_GUARDED_BY(mu_);
  uint32_t hook_calls_ ABSL_GUARDED_BY(mu_) = 0;  // hooks being called
  CondVar hooks_idle_;
};

// How a puller reads a source's bytes (cluster.transfer).
enum class Transfer {
  kAuto,           // one-sided where UCX's lanes to the source are RDMA, else active messages
  kActiveMessage,  // always the request AM answered by a rendezvous AM
  kOneSided,       // always ucp_get_nbx when the source offers a remote key
};

struct FetcherOptions {
  std::string host_id;  // this host (the claim's target; never a source)
  size_t threads = 4;   // pulls at once
  // Bytes per transport read; a pull reads its object in chunks, up to
  // `window` at once.
  uint64_t chunk_bytes = 16 << 20;
  size_t window = 4;
  std::chrono::milliseconds lease{60000};  // asked of the holder per Open
  // Objects up to this size come inline in the Open reply (no lease, no
  // transport read, no Close); 0: always read over the transport.
  uint64_t inline_max = 16 << 10;
  std::chrono::milliseconds control_timeout{5000};
  // One chunk read that takes longer than this (a source whose link went
  // down sends nothing, and TCP may not say so for minutes) gives the source
  // up as Unavailable, so the pull tries another replica within its deadline.
  std::chrono::milliseconds stall_timeout{10000};
  Transfer transfer = Transfer::kAuto;
  // How long a finished fetch's outcome is kept for Poll.
  std::chrono::milliseconds keep_outcome{60000};
  // Called (on a fetch thread) whenever a fetch finishes.
  std::function<void()> on_done;
};

class Fetcher {
 public:
  // `tier_bases[i]` is where tier i of `store` is mapped. Sources are
  // opened over `control` and read over `transport`.
  Fetcher(FetcherOptions options, store::ObjectStore* store, std::vector<char*> tier_bases,
          RegistryClient* registry, PeerControlClient* control, transport::Transport* transport);
  ~Fetcher();  // waits for the pulls in flight (each ends by its deadline)

  struct Request {
    std::string key;
    uint64_t generation = 0;  // 0: the newest any live host holds
    std::string prefer_host;  // try this host's replica first
    std::chrono::steady_clock::time_point deadline;
    // A fan-out relay: read first from this host, whose copy may still be
    // arriving (then any complete replica). `upstream` carries host_id,
    // advertise, size and checksum.
    std::optional<registry::v1::Location> upstream;
  };
  // Starts a pull of (key, generation) unless one is running (then it is
  // shared, and a later deadline is not applied). Returns at once.
  void Start(Request request);

  enum class State { kNone, kRunning, kDone };
  struct Outcome {
    State state = State::kNone;
    absl::Status status;                      // when kDone
    std::map<std::string, uint64_t> sources;  // bytes read from each host
  };
  // What became of the last fetch of (key, generation).
  Outcome Poll(std::string_view key, uint64_t generation) const;

  struct Stats {
    uint64_t pulls = 0;  // finished
    uint64_t failed = 0;
    uint64_t bytes = 0;    // received into sealed replicas
    uint64_t retries = 0;  // sources given up for another
  };
  Stats stats() const;

  // The PeerServer's FetchHooks: the copy of (key, generation) arriving
  // here, and peers' fetch / fetch-status requests.
  std::shared_ptr<Arriving> FindArriving(std::string_view key, uint64_t generation,
                                         bool* pending) const;
  absl::StatusOr<pv1::FetchReply> HandleFetch(const pv1::FetchRequest& req);
  pv1::FetchStatusReply HandleFetchStatus(const pv1::FetchStatusRequest& req) const;

 private:
  struct Job {
    Request request;
    State state = State::kRunning;
    absl::Status status;
    std::chrono::steady_clock::time_point finished;
    std::map<std::string, uint64_t> sources;
  };
  void Work();
  // On success, `*claim` is the registry claim still to complete (0: none):
  // the worker completes it after the waiters are told, off the get's path.
  // What a successful fetch leaves to do once its waiters are told, off the
  // get's path: close the source's lease and complete the registry claim.
  struct Epilogue {
    uint64_t claim = 0;         // 0: none
    std::string close_control;  // the source's control channel; empty: nothing to close
    uint64_t close_region = 0;
  };
  absl::Status Fetch(const Request& r, Epilogue* after);
  // One source: NotFound / Unavailable / DataLoss etc. name it.
  // `source_fault` says whether another source might do better (false when
  // this host's store refused, or the pull succeeded).
  absl::Status PullFrom(const Request& r, uint64_t generation, const registry::v1::Location& source,
                        bool* source_fault, Epilogue* after);
  // Reads region [0, size) into dest, chunks in parallel. From an arriving
  // region only what the holder's Progress says has arrived is read.
  // `arrived` is told of each chunk read.
  // Where the bytes are read from: a region by active messages, or with
  // `rkey` set, one-sided from `remote`.
  struct Source {
    std::string control;  // the holder's control channel (its advertise address)
    std::string address;  // its transport
    uint64_t region = 0;
    std::string rkey;
    uint64_t remote = 0;
  };
  // On success `*checksum` is the store checksum of the bytes, hashed chunk
  // by chunk as they landed (while later chunks are still on the wire).
  absl::Status ReadPayload(const Source& from, uint64_t size, char* dest, bool arriving,
                           std::chrono::steady_clock::time_point deadline,
                           const std::function<void(uint64_t offset, uint64_t n)>& arrived,
                           uint64_t* checksum);
  // Whether to read from `address` one-sided, when it offered a remote key.
  bool UseOneSided(const std::string& address);
  static std::string JobKey(std::string_view key, uint64_t generation);
  static std::string RequestName(const Request& r);

  const FetcherOptions options_;
  store::ObjectStore* const store_;
  const std::vector<char*> tier_bases_;
  RegistryClient* const registry_;
  PeerControlClient* const control_;
  transport::Transport* const transport_;

  mutable Mutex mu_;
  CondVar work_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Arriving>> arriving_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

// The daemon's peer-to-peer side: the control channel listening at the
// advertised address and a transport beside it, the PeerServer answering
// both, a Fetcher pulling through them, and a Replicator driving fan-outs.
// Destroyed in the safe order: fan-outs end, then pulls, then the control
// channel (no more Opens), then the transport (no more reads of leased
// bytes), then the leases.
struct PeerNodeOptions {
  std::string host_id;
  std::string advertise;  // "a.b.c.d:port": the control channel listens here
  // The transport listens on advertise's address at this port (0: a free
  // one); pullers learn it from Open replies.
  uint16_t transport_port = 0;
  PeerChannelOptions channel;  // the cluster id, token and TLS of the control channel
  RegistryClientOptions registry;
  size_t pull_threads = 4;
  std::chrono::milliseconds stall_timeout{10000};  // FetcherOptions::stall_timeout
  Transfer transfer = Transfer::kAuto;
  // Each tier's size (beside its base): registered with UCX for one-sided
  // reads unless transfer is kActiveMessage.
  std::vector<uint64_t> tier_sizes;
  std::function<void()> on_pull_done;  // also when a fan-out ends
};

class PeerNode {
 public:
  static absl::StatusOr<std::unique_ptr<PeerNode>> Start(PeerNodeOptions options,
                                                         store::ObjectStore* store,
                                                         std::vector<char*> tier_bases);
  ~PeerNode();

  PeerServer& server() { return *server_; }
  // Where the transport listens ("a.b.c.d:port").
  const std::string& transport_address() const { return transport_address_; }
  Fetcher& fetcher() { return *fetcher_; }
  Replicator& replicator() { return *replicator_; }

 private:
  PeerNode() = default;
  std::unique_ptr<PeerServer> server_;
  std::unique_ptr<RegistryClient> registry_;
  std::unique_ptr<transport::Transport> transport_;
  std::string transport_address_;
  std::unique_ptr<PeerControlClient> control_client_;
  std::unique_ptr<PeerControlServer> control_server_;
  std::unique_ptr<Fetcher> fetcher_;
  std::unique_ptr<Replicator> replicator_;
};

}  // namespace cistern::cluster

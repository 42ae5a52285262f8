// The Cistern C++ client: put and get objects in the host's cisternd with zero
// copies. A Client is one session with the daemon; the daemon's arenas are
// mapped into this process at Connect, and object bytes are read and written
// there directly, never through the socket.
//
// Thread-safety: a Client may be used from many threads; its requests are
// serialised on its one connection (open several Clients for parallel
// requests). ObjectView and Writer are not thread-safe but may be moved
// between threads, and may outlive their Client.
//
// Errors are absl::Status:
//   InvalidArgument    bad key, size, tensor manifest or option (nothing changed)
//   NotFound           no such key, or the generation asked is not current
//   AlreadyExists      if_absent and the key exists
//   ResourceExhausted  the tier is full (after eviction, and after waiting if asked)
//   PermissionDenied   wrong or missing token, uid not allowed
//   Unavailable        the daemon is not running or closed the connection
//   FailedPrecondition protocol version mismatch
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cistern/local.pb.h"
#include "include/cistern/object.h"

namespace cistern {

namespace client_internal {
class Connection;
class FastPath;
}  // namespace client_internal

struct ConnectOptions {
  // cisternd's socket. Empty: found by DiscoverSocket() below.
  std::string socket_path;
  std::string token;        // empty: $CISTERN_TOKEN
  std::string client_name;  // shown in the daemon's logs
  // After sending a request, poll for the answer this long before sleeping
  // (a daemon answers in microseconds; waking a sleeping thread can take
  // longer on virtual machines). 0 disables.
  std::chrono::microseconds spin{50};
  // When the daemon goes away, connect again at the next call and take back
  // this client's leases (a restarted daemon keeps them while this process
  // lives), so views stay valid and a daemon restart costs one reconnect.
  // false: every call after the daemon left is Unavailable.
  bool reconnect = true;
  // Take the local fast path when the daemon offers it: a get of a key this
  // host holds reads the shared index and takes its lease in shared memory,
  // with no round trip (docs/architecture.md). false, or CISTERN_FAST_PATH=0
  // in the environment: every get asks the daemon.
  bool fast_path = true;
  // Puts over 64 KiB (up to 16 MiB) and batches in one round trip: the daemon
  // keeps write space reserved for this session's next put, which the client
  // fills before naming the objects (docs/architecture.md, "The data path").
  // The space (the size of the last such put, plus 4 KiB, in 64 KiB steps)
  // stays in use while the session lives. false: create + seal, two round
  // trips, and nothing held between puts.
  bool reserve_write_space = true;
};

struct PutOptions {
  bool evictable = false;  // may be evicted under memory pressure when unleased
  bool if_absent = false;  // fail with AlreadyExists if the key has a value
  std::string tier;        // empty: the daemon's first tier
  // Wait up to this long for space instead of failing with ResourceExhausted.
  std::chrono::milliseconds wait{0};
  bool checksum = true;  // record an XXH3-64 checksum, verified at daemon restart
  // In a cluster, keep the object on this host: it is never published to the
  // registry, so no other host can locate or pull it (docs/cluster.md).
  bool local_only = false;
  // In a cluster, Put and PutTensors return only once the registry has
  // acknowledged the object's publication, waiting up to this long (0: do
  // not wait). Past it they return DeadlineExceeded although the object is
  // stored on this host (the message says so, and why it is late).
  std::chrono::milliseconds wait_published{0};
};

// How a Get finds its object. Alone, a key this host lacks is NotFound. In a
// cluster the daemon pulls it from a host that holds it, keeps it as a
// replica here and answers with an ordinary view (docs/cluster.md, "Remote
// get").
struct GetOptions {
  uint64_t generation = 0;  // 0: the newest
  // Never pull from another host: NotFound when this host lacks the key.
  bool local_only = false;
  // The most a pull may take; past it the Get is DeadlineExceeded naming
  // the key. 0: the daemon's cluster.pull_timeout_ms.
  std::chrono::milliseconds deadline{0};
  std::string prefer_host;  // pull from this host's replica when it has one
};

// Client::Replicate: where to copy a key (docs/cluster.md, "Fan-out").
struct ReplicateOptions {
  std::vector<std::string> to;  // host ids; or
  bool all = false;             // every live host that lacks it
  uint64_t generation = 0;      // 0: the newest any live host holds
  // Children per host in the copy tree; 0 or 1: a chain, where the origin
  // sends each byte once.
  uint32_t fanout = 0;
  // The most the whole fan-out may take. 0: cluster.pull_timeout_ms.
  std::chrono::milliseconds deadline{0};
};

struct ReplicateResult {
  struct Target {
    std::string host_id;
    absl::Status status;  // OK: it holds the generation now
    bool already_held = false;
    std::string upstream;                     // the host it pulled from first
    std::map<std::string, uint64_t> sources;  // bytes it read from each host
  };
  std::string key;
  uint64_t generation = 0;
  std::vector<Target> targets;
  std::map<std::string, uint64_t> bytes_sent;  // by each host, over all targets
  // OK when every target holds it; else the first failure, naming its host.
  absl::Status status() const;
};

// This process's own writable version of a view's bytes, for callers that
// modify what they read in place (a training script's torch tensors). Writes
// land in this process only: the shared object, which other processes read and
// a restart verifies, never changes, and neither does a later get. From at
// least kPrivateMapAtLeast bytes it is a private copy-on-write mapping of the
// view's pages: reading costs no copy, and a write copies just the pages it
// touches, but each get maps afresh and its first read of a page faults (on
// a 2-vCPU VM about 15 us per mapping and 0.15-0.2 ms per MiB read). Below
// it is a plain copy, which costs less up to about 1 MiB
// (bench/torch_cow_bench.py, docs/benchmarks.md). A mapping shows the view's bytes only while the
// view's lease lives: keep the view until the PrivateBytes is gone. Move-only.
class PrivateBytes {
 public:
  static constexpr size_t kPrivateMapAtLeast = 1 << 20;

  PrivateBytes() = default;
  ~PrivateBytes();
  PrivateBytes(PrivateBytes&&) noexcept;
  PrivateBytes& operator=(PrivateBytes&&) noexcept;

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<std::byte> bytes() const { return {data_, size_}; }
  // True when the bytes are a copy-on-write mapping rather than a copy.
  bool mapped() const { return map_ != nullptr; }

 private:
  friend class ObjectView;
  void Reset();
  void* map_ = nullptr;  // the mapping (page-aligned), or null for a copy
  size_t map_bytes_ = 0;
  void* copy_ = nullptr;  // or the copy (aligned like the arena's blocks)
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// A leased, read-only view of one sealed generation. The bytes stay valid and
// unchanged until the view is released or destroyed, even if the key is
// removed or overwritten meanwhile. They lie in a read-only mapping of the
// arena: a write through a cast-away const faults instead of changing shared
// data. Move-only.
class ObjectView {
 public:
  ObjectView() = default;
  ~ObjectView();
  ObjectView(ObjectView&&) noexcept;
  ObjectView& operator=(ObjectView&&) noexcept;

  const std::string& key() const { return key_; }
  uint64_t generation() const { return generation_; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  ObjectRef ref() const { return {key_, generation_, size_}; }
  // Empty for a raw-bytes object.
  const std::vector<TensorInfo>& tensors() const;
  // The bytes of one tensor; NotFound if the object has no such tensor.
  absl::StatusOr<std::span<const std::byte>> tensor(std::string_view name) const;
  bool valid() const { return data_ != nullptr; }
  uint64_t lease_id() const { return lease_id_; }

  // This process's own writable version of the bytes (see PrivateBytes).
  // FailedPrecondition for an empty view; ResourceExhausted, naming the key,
  // when the kernel refuses the mapping or the copy's memory.
  absl::StatusOr<PrivateBytes> MakePrivate() const;

  // Ends the lease now and reports the daemon's answer; the view becomes empty.
  // The destructor does the same without waiting for the answer.
  absl::Status Release();

 private:
  friend class Client;
  void Reset();
  std::shared_ptr<client_internal::Connection> conn_;
  // A lease taken on the fast path (lease_id_ is then 0): ended in shared memory.
  std::shared_ptr<client_internal::FastPath> fast_;
  uint32_t fast_slot_ = 0;
  const void* fast_header_ = nullptr;
  std::string key_;
  uint64_t generation_ = 0;
  uint64_t lease_id_ = 0;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  // Shared with the client's cache of decoded manifests (fast path); null
  // for raw bytes.
  std::shared_ptr<const std::vector<TensorInfo>> tensors_;
};

// A reserved, invisible object being filled in place. Seal makes it visible;
// a Writer destroyed without Seal aborts. Move-only.
//
// The buffer is the writer's own mapping of the object's pages. At Seal (and
// Abort) that mapping is replaced by a private copy-on-write one of the same
// pages, before the daemon is told: a write through a pointer kept past Seal
// changes only this process's copy, never the shared object (which other
// processes read and a restart verifies). The memory stays readable until
// the Writer is destroyed.
class Writer {
 public:
  Writer() = default;
  ~Writer();
  Writer(Writer&&) noexcept;
  Writer& operator=(Writer&&) noexcept;

  std::span<std::byte> buffer() const { return {data_, size_}; }
  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  // The manifest (CreateTensors): each tensor's offset in buffer(). Empty
  // for a raw-bytes writer.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::string& key() const { return key_; }
  uint64_t write_id() const { return write_id_; }

  // Makes the object visible (checksummed unless the put options said not to)
  // and returns its reference. The Writer is empty afterwards, whatever the result.
  absl::StatusOr<ObjectRef> Seal();
  absl::Status Abort();

 private:
  friend class Client;
  std::shared_ptr<client_internal::Connection> conn_;
  std::string key_;
  uint64_t write_id_ = 0;
  // Ends shared access to the buffer (see above).
  void Detach();
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  bool checksum_ = true;
  std::vector<TensorInfo> tensors_;
  // The writer's own mapping of the pages under the buffer (null when it
  // writes through the connection's mapping, as Put does internally).
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  uint64_t map_offset_ = 0;  // in the arena file
  int map_fd_ = -1;          // the connection's descriptor of that file
};

// One tensor of a tensor-dict object to fill in place (Client::CreateTensors).
struct TensorSpec {
  std::string name;
  DType dtype = DType::kUInt8;
  std::vector<uint64_t> shape;
};

// One tensor to put: its bytes are copied into the object.
struct TensorInput {
  std::string name;
  DType dtype = DType::kUInt8;
  std::vector<uint64_t> shape;
  std::span<const std::byte> data;
};

// What the daemon reports (Stat, List, Stats, Status, Quarantined) are the
// wire messages themselves (proto/cistern/local.proto, where each field is
// documented), read through their accessors: info.generation(),
// stats.tiers(0).used_bytes(), status.sessions_size(). One definition: a
// field the daemon adds reaches C++, Python and the CLI's --json unchanged.
using ObjectInfo = wire::ObjectInfo;  // has_checksum() says whether checksum() is set
using ListResult = wire::ListReply;   // objects(); next_cursor(): empty at the end
using TierUsage = wire::TierStats;
using DaemonStats = wire::StatsReply;
using SessionStatus = wire::SessionInfo;
// Requests waiting in the daemon (parked_requests()): creates waiting for
// space, stream commits held back by backpressure, stream leases waiting.
using DaemonStatus = wire::DaemonStatusReply;
// A corrupt object the daemon set aside at its last start: not served, its
// bytes kept until removed (recovery.on_corrupt_object: quarantine); the tier
// and block_offset name it.
using QuarantinedObjectInfo = wire::QuarantinedObject;

// Lays out tensors in one payload: each at the next multiple of 64 bytes.
// Returns the manifest; `*total` receives the payload size.
std::vector<TensorInfo> LayoutTensors(const std::vector<TensorInput>& tensors, uint64_t* total);

class Client {
 public:
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ConnectOptions& options = {});
  ~Client();

  // Copies `value` into a new generation of `key` and seals it.
  absl::StatusOr<ObjectRef> Put(std::string_view key, std::span<const std::byte> value,
                                const PutOptions& options = {});
  absl::StatusOr<ObjectRef> Put(std::string_view key, std::string_view value,
                                const PutOptions& options = {}) {
    return Put(key, std::as_bytes(std::span(value.data(), value.size())), options);
  }
  // Stores a dict of tensors as one object (one allocation, 64-byte aligned).
  absl::StatusOr<ObjectRef> PutTensors(std::string_view key,
                                       const std::vector<TensorInput>& tensors,
                                       const PutOptions& options = {});
  // Reserves `size` bytes for a new generation of `key`, to fill in place.
  // `tensors` (optional) is the manifest, as LayoutTensors makes it.
  absl::StatusOr<Writer> Create(std::string_view key, uint64_t size, const PutOptions& options = {},
                                const std::vector<TensorInfo>& tensors = {});

  // Reserves a tensor-dict object laid out as PutTensors lays it out, to
  // fill in place through the Writer (writer.tensors() gives each tensor's
  // offset). The padding between tensors is zeroed; the tensors' own bytes
  // are whatever the block held before, like an uninitialised array: write
  // every one before Seal. InvalidArgument, naming the tensor, for an
  // unknown dtype or a shape whose size overflows.
  absl::StatusOr<Writer> CreateTensors(std::string_view key, const std::vector<TensorSpec>& tensors,
                                       const PutOptions& options = {});

  // Leases the current generation of `key` (or exactly `generation`).
  absl::StatusOr<ObjectView> Get(std::string_view key, uint64_t generation = 0);
  absl::StatusOr<ObjectView> Get(std::string_view key, const GetOptions& options);
  // In a cluster, starts pulls of the keys this host lacks and returns at
  // once with how many were started; a later Get of one waits for its pull.
  // FailedPrecondition when the daemon is not in a cluster.
  absl::StatusOr<uint32_t> Prefetch(const std::vector<std::string>& keys);
  // In a cluster, copies `key` to other hosts and waits until each holds it
  // (or failed, or the deadline passed): see ReplicateOptions. The call
  // fails only when nothing was attempted (bad input, unknown host, no
  // cluster); per-host outcomes are in the result.
  absl::StatusOr<ReplicateResult> Replicate(std::string_view key, const ReplicateOptions& options);
  // Removes the current generation (only if it is `generation`, when given);
  // returns the generation removed. Leased bytes stay valid until released.
  absl::StatusOr<uint64_t> Remove(std::string_view key, uint64_t generation = 0);
  absl::StatusOr<ObjectInfo> Stat(std::string_view key);
  absl::StatusOr<ListResult> List(std::string_view prefix = "", uint32_t limit = 0,
                                  std::string_view cursor = "");
  absl::StatusOr<DaemonStats> Stats();
  // The daemon's version, uptime, usage and sessions (`cistern daemon status`).
  absl::StatusOr<DaemonStatus> Status();
  // Waits until the registry has acknowledged the publication of (key,
  // generation) from this host, up to `timeout` (see PutOptions::wait_published).
  // OK at once when the daemon runs alone or the object is local-only.
  absl::Status WaitPublished(std::string_view key, uint64_t generation,
                             std::chrono::milliseconds timeout);
  // Quarantined objects (`cistern quarantine ls`), and freeing one of them;
  // NotFound if nothing is quarantined at that offset of that tier.
  absl::StatusOr<std::vector<QuarantinedObjectInfo>> Quarantined();
  absl::Status RemoveQuarantined(std::string_view tier, uint64_t block_offset);

  // Batch forms: one round trip for many small objects. Results are per entry.
  std::vector<absl::StatusOr<ObjectView>> GetMany(const std::vector<std::string>& keys);
  // Releases many views in one message; they become empty.
  absl::Status ReleaseMany(std::vector<ObjectView>& views);
  std::vector<absl::StatusOr<ObjectRef>> PutMany(
      const std::vector<std::pair<std::string, std::span<const std::byte>>>& items,
      const PutOptions& options = {});

  uint64_t session_id() const;
  const std::string& socket_path() const;

 private:
  friend class Stream;
  explicit Client(std::shared_ptr<client_internal::Connection> conn);
  // Create; with `own_mapping` the Writer gets its own mapping of its pages
  // (Create does), without it writes through the connection's (Put, whose
  // buffer never reaches the caller).
  absl::StatusOr<Writer> CreateWriter(std::string_view key, uint64_t size,
                                      const PutOptions& options,
                                      const std::vector<TensorInfo>& tensors, bool own_mapping);
  // Create, fill and seal in one request (small puts; wire::Put).
  absl::StatusOr<ObjectRef> PutInOneRequest(std::string_view key, std::string data,
                                            const std::vector<TensorInfo>& tensors,
                                            const PutOptions& options);
  // Objects put through the session's reserved write space (an extent): the
  // payloads written into it, then one request. nullopt when no extent holds
  // them all (or the daemon dropped it in a restart): nothing was stored, and
  // the caller goes through create + seal instead.
  struct ExtentPutItem {
    std::string_view key;
    const std::vector<TensorInfo>* tensors;
    uint64_t size;
    // Writes the `size` payload bytes at `dst`; returns their checksum when
    // PutOptions::checksum asks for one.
    std::function<std::optional<uint64_t>(std::byte* dst)> fill;
  };
  std::optional<std::vector<absl::StatusOr<ObjectRef>>> PutIntoExtent(
      const std::vector<ExtentPutItem>& items, const PutOptions& options);
  // The write space a seal should ask for, for puts that need `need` bytes of
  // blocks (0: ask for none).
  uint64_t ExtentToAsk(uint64_t need) const;
  absl::StatusOr<ObjectView> MakeView(std::string_view key, const void* get_reply);
  // A view of `key` leased on the fast path, or nullopt (take the socket).
  std::optional<ObjectView> FastGet(std::string_view key, uint64_t generation);
  std::shared_ptr<client_internal::Connection> conn_;
};

// The socket a client connects to: `address` if given, else
// $CISTERN_ADDRESS ($CISTERN_SOCKET, its old name), else the socket of this
// host's live `cistern daemon start` session (under $CISTERN_HOME, default
// ~/.cistern), else DefaultSocketPath(). Client::Connect, the `cistern` CLI
// and Python's cistern.connect() all find the daemon this way.
std::string DiscoverSocket(std::string_view address = "");

// The socket of a cisternd started by hand with no runtime_dir:
// $CISTERN_HOME/run/cisternd.sock, else /tmp/cistern-<euid>/cisternd.sock.
std::string DefaultSocketPath();

}  // namespace cistern

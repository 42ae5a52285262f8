// ObjectStore: the object model of one host over one arena per tier — keys,
// generations, two-phase writes, leases, deferred frees, eviction and budgets.
// It performs no I/O: the arenas are memory it is handed (mapped files in the
// daemon, heap memory in tests). Sessions are opaque ids chosen by the caller;
// their leases and pending writes end with CloseSession.
//
// Thread-safety: every public method is thread-safe; one mutex guards all
// state. Lock order: ObjectStore::mu_ is a leaf (nothing is called under it
// that takes another lock).
//
// Errors (the message always names the key, id or limit involved):
//   InvalidArgument    bad key, size 0, size beyond the tier, bad manifest,
//                      unknown tier. Nothing changes.
//   NotFound           no visible generation (never existed, removed, evicted,
//                      superseded) or the asked generation is not the current
//                      one; unknown write or lease id.
//   AlreadyExists      if_absent and the key has a visible generation.
//   PermissionDenied   a write or lease of another session.
//   FailedPrecondition the object is held (Hold): it cannot be removed or
//                      replaced until every hold on it ends; names the holder.
//   ResourceExhausted  no room in the tier even after evicting everything
//                      evictable; nothing becomes visible.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "include/cistern/object.h"
#include "src/common/clock.h"
#include "src/common/mutex.h"
#include "src/common/quote.h"
#include "src/store/allocator.h"
#include "src/store/arena.h"
#include "src/store/evictor.h"
#include "src/store/fast_lease.h"
#include "src/store/key.h"
#include "src/store/lease_table.h"
#include "src/store/object_table.h"
#include "src/store/shared_index.h"
#include "src/store/shared_lease_table.h"

namespace cistern::store {

// What Stat and List report about an object's visible generation (the daemon
// sends it as wire::ObjectInfo).
struct ObjectInfo {
  std::string key;
  uint64_t generation = 0;
  uint64_t size = 0;
  std::string tier;
  bool evictable = false;
  bool local_only = false;
  uint32_t leases = 0;  // socket and fast leases
  bool has_checksum = false;
  uint64_t checksum = 0;
  uint32_t tensors = 0;
  uint64_t create_unix_ms = 0;  // when the generation was created (wall clock)
};

struct TierSpec {
  std::string name;
  char* base = nullptr;  // a formatted arena (Arena::Format)
  uint64_t size = 0;
  double high_watermark = 0.95;
  double low_watermark = 0.85;
};

// A session an earlier daemon served whose holder process still lives: its
// leases and pending writes are restored and their blocks kept.
struct RecoveredSession {
  SessionId id = 0;  // the session holding them in this store (until adopted)
  SharedLeaseTable::Session shared;
};

struct StoreOptions {
  // What Open does with a sealed object that fails verification: by default
  // it is quarantined (invisible, its bytes kept, listed by Quarantined());
  // kFail stops Open with DataLoss, kDrop frees it.
  Arena::OnCorrupt on_corrupt = Arena::OnCorrupt::kQuarantine;
  // Where the leases and writes of sessions registered with OpenSession are
  // recorded so that they outlive the daemon (null: nowhere). Attached, with
  // `recovered`'s slots and entries kept. Must outlive the store.
  SharedLeaseTable* shared_leases = nullptr;
  std::vector<RecoveredSession> recovered;
  // The local fast path (docs/architecture.md): the index clients read and
  // the regions of lease slots they write. Null: no fast path. Formatted or
  // opened by the caller; the store fills the index from the arenas, keeps
  // the regions whose owner process lives (`process_lives`) and clears the
  // others. Must outlive the store.
  SharedIndex* index = nullptr;
  FastLeaseRegions* fast_leases = nullptr;
  // Whether the process that started at `start` (clock ticks after boot) is
  // still running. Null: every recorded owner counts as alive.
  std::function<bool(int32_t pid, uint64_t start)> process_lives;
};

// Who a session is, for the shared lease table (and so for a restarted
// daemon deciding whether its leases still matter).
struct SessionOwner {
  int32_t pid = 0;
  uint32_t uid = 0;
  uint64_t pid_start = 0;  // the process's start time, against pid reuse
};

// A corrupt object set aside at recovery: invisible, its block kept until the
// operator removes it (RemoveQuarantined).
struct QuarantinedObject {
  std::string tier;
  uint64_t block_offset = 0;
  uint64_t block_size = 0;
  std::string key;  // empty when the header is unreadable
  std::string reason;
};

struct RecoveryReport {
  uint64_t objects = 0;       // sealed objects kept
  uint64_t bytes = 0;         // their payload bytes
  uint64_t freed_blocks = 0;  // unsealed or removed objects reclaimed
  uint64_t superseded = 0;    // older sealed generations of a key reclaimed
  uint64_t max_generation = 0;
  std::vector<Arena::CorruptObject> dropped;  // with OnCorrupt::kDrop
  std::vector<QuarantinedObject> quarantined;
  uint64_t kept_leases = 0;    // leases of living holders restored (their blocks kept)
  uint64_t kept_writes = 0;    // their pending writes, kept until aborted
  uint64_t stale_entries = 0;  // shared entries that no longer matched a block: cleared
};

struct TierStats {
  std::string name;
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t evictable_bytes = 0;  // evictable now: unleased evictable objects
  uint64_t largest_free_bytes = 0;
  double fragmentation = 0;
  uint64_t objects = 0;  // blocks in use: visible, lingering and being written
  uint64_t evictions = 0;
};

struct StoreStats {
  std::vector<TierStats> tiers;
  uint64_t objects = 0;         // visible objects
  uint64_t leases = 0;          // fast leases included
  uint64_t fast_leases = 0;     // taken by clients in shared memory (a snapshot)
  uint64_t pending_writes = 0;  // extents not included
  // Write space reserved by sessions ahead of their puts (ReserveExtent),
  // counted in the tiers' used bytes.
  uint64_t reserved_extents = 0;
  uint64_t reserved_bytes = 0;
  uint64_t deferred_frees = 0;  // removed objects waiting for their last lease
  uint64_t fast_held = 0;       // of those, waiting for a fast lease (no socket lease)
  uint64_t indexed = 0;         // keys in the shared index
  uint64_t quarantined_objects = 0;
  uint64_t quarantined_bytes = 0;  // their blocks
};

// Told when an object generation becomes visible (sealed) and when it stops
// being visible (removed, superseded by a newer generation, evicted). Calls
// come in the order the changes happen, with the store's lock held: an
// observer must be quick and must not call into the store. The cluster agent
// (src/cluster) publishes what it is told.
class StoreObserver {
 public:
  virtual ~StoreObserver() = default;
  virtual void OnVisible(const ObjectInfo& info) = 0;
  // `info` as it was while visible.
  virtual void OnGone(const ObjectInfo& info) = 0;
};

class ObjectStore {
 public:
  // Attaches every tier (Arena::Attach), rebuilds the table from the arenas and
  // reports what recovery did. FailedPrecondition for an incompatible arena,
  // DataLoss for a broken block chain, and for a corrupt object only with
  // OnCorrupt::kFail (see StoreOptions).
  static absl::StatusOr<std::unique_ptr<ObjectStore>> Open(std::vector<TierSpec> tiers,
                                                           const StoreOptions& options,
                                                           RecoveryReport* report);
  ~ObjectStore();

  struct CreateArgs {
    std::string_view key;
    uint64_t size = 0;
    std::vector<TensorInfo> tensors;  // empty: raw bytes
    bool evictable = false;
    bool if_absent = false;
    bool local_only = false;  // recorded in the header (kFlagLocalOnly)
    std::string_view tier;    // empty: the first tier
    // Non-zero: this write is a replica of another host's (key, generation)
    // (a pull, docs/cluster.md): Seal gives it this generation instead of
    // issuing one, and fails with AlreadyExists (aborting the write) when the
    // key already has this generation or a newer one visible here.
    uint64_t replica_generation = 0;
  };
  struct WriteInfo {
    uint64_t write_id = 0;
    uint32_t tier = 0;
    uint64_t payload_offset = 0;  // arena offset
    uint64_t size = 0;
  };
  // Reserves space for a new, invisible generation of `key`, evicting if needed.
  absl::StatusOr<WriteInfo> Create(SessionId session, const CreateArgs& args);
  // Makes the write the key's visible generation and returns that generation,
  // which is higher than any generation issued before. The previous generation
  // becomes invisible and is freed when its last lease ends. With if_absent,
  // AlreadyExists if a generation became visible meanwhile (the write is aborted).
  absl::StatusOr<uint64_t> Seal(SessionId session, uint64_t write_id,
                                std::optional<uint64_t> checksum);
  absl::Status Abort(SessionId session, uint64_t write_id);
  // Copies `bytes` into the payload of the session's pending write: the
  // daemon fills it itself when the client sent the bytes with its request
  // (an inline put). InvalidArgument unless they are exactly the payload's
  // size; NotFound/PermissionDenied as for Seal. The write stays pending.
  absl::Status FillWrite(SessionId session, uint64_t write_id, std::string_view bytes);

  // ---- Write space reserved ahead: a put in one request ----
  // An extent is a pending write of a session that names no key yet: a block
  // the client fills first and then, in one request (PutExtent), says which
  // objects the bytes are. Create + seal take two round trips; this takes one.
  // A session holds at most one extent. It is kept like any pending write (in
  // the shared lease table, across a daemon restart, counted in used bytes and
  // pending writes) and aborted when the session ends or the client aborts it;
  // the store never takes it back while the session lives, since its client
  // may be writing into it at any moment.
  static constexpr uint64_t kExtentMaxBytes = kMaxExtentBytes;  // layout.h
  // The key an extent's header carries until PutExtent names its objects: it
  // holds a NUL, so no user key (ValidateKey) can be the same.
  static constexpr std::string_view kExtentKey{"\0extent", 7};
  struct ExtentInfo {
    uint64_t id = 0;  // a write id: Abort releases the extent
    uint32_t tier = 0;
    uint64_t block_offset = 0;  // arena offset of the block; objects are packed from here
    uint64_t bytes = 0;         // the block's size
  };
  // Reserves `bytes` (rounded up to 64, at most kExtentMaxBytes) in tier
  // `tier` for the session. Speculative space, so it never evicts: refused
  // (ResourceExhausted) when the tier would pass its high watermark or extents
  // would hold more than an eighth of it; FailedPrecondition when the session
  // already holds one; InvalidArgument for a bad size or tier.
  absl::StatusOr<ExtentInfo> ReserveExtent(SessionId session, uint32_t tier, uint64_t bytes);
  // The tier of a pending write of the session (an extent included), if there is one.
  std::optional<uint32_t> WriteTier(SessionId session, uint64_t write_id) const;
  struct ExtentPut {
    CreateArgs args;  // args.tier: empty or the extent's tier; wait/replica fields unused
    std::optional<uint64_t> checksum;
  };
  // The objects of `puts`, in order, packed from the start of extent
  // `extent_id`: object i's block starts where object i-1's ends and is
  // BlockBytes(key, manifest, size) long, so its payload is at
  // PayloadOffset(key, manifest) from its block start (layout.h). Splits the
  // extent into those blocks, frees the rest and seals each object as Seal
  // does. Errors for the request as a whole change nothing and keep the
  // extent: NotFound or PermissionDenied (not this session's extent),
  // InvalidArgument (a bad key, size, manifest or tier; the puts do not fit).
  // An extent recovered from an earlier daemon is aborted instead (Aborted:
  // its bytes may predate the restart). Otherwise one result per put, its
  // generation or why it was not stored (AlreadyExists, FailedPrecondition,
  // as Seal), and the extent is used up.
  absl::StatusOr<std::vector<absl::StatusOr<uint64_t>>> PutExtent(
      SessionId session, uint64_t extent_id, const std::vector<ExtentPut>& puts);

  struct LeaseInfo {
    uint64_t lease_id = 0;
    uint64_t generation = 0;
    uint32_t tier = 0;
    uint64_t block_offset = 0;
    uint64_t payload_offset = 0;  // arena offset
    uint64_t size = 0;
  };
  // Leases the visible generation of `key`; with generation != 0, only if that
  // generation is the visible one.
  absl::StatusOr<LeaseInfo> Get(SessionId session, std::string_view key, uint64_t generation);
  // A lease that also keeps the generation current: while it lives, Remove of
  // the object and a Create or Seal of a newer generation of its key fail with
  // FailedPrecondition naming `holder` (e.g. "stream 'rollouts'"). Released
  // with Release like any lease. Streams hold the objects of their samples.
  absl::StatusOr<LeaseInfo> Hold(SessionId session, std::string_view key, uint64_t generation,
                                 std::string_view holder);
  absl::Status Release(SessionId session, uint64_t lease_id);
  // Makes the visible generation invisible (if it is `generation`, when that is
  // non-zero); it is freed when its last lease ends. Returns the generation.
  absl::StatusOr<uint64_t> Remove(std::string_view key, uint64_t generation);
  absl::StatusOr<ObjectInfo> Stat(std::string_view key) const;

  struct ListPage {
    std::vector<ObjectInfo> objects;
    std::string next_cursor;  // empty when there is nothing more
  };
  ListPage List(std::string_view prefix, size_t limit, std::string_view cursor) const;

  // Registers `session` in the shared lease table, so that its leases and
  // writes survive the daemon while `owner` lives. ResourceExhausted when the
  // table has no free slot; OK (and nothing recorded) without a table.
  absl::Status OpenSession(SessionId session, const SessionOwner& owner);
  // Releases every lease and aborts every pending write of `session`, and
  // frees its slot in the shared lease table (and clears its fast region).
  void CloseSession(SessionId session);
  // Lets `session` of process `owner` take fast leases: returns its region of
  // the fast lease file (the caller hands the client that page). `hint`: the
  // region the client used before (a reconnect); it gets it back if its
  // process owns it and no session uses it. FailedPrecondition without a
  // fast path; ResourceExhausted when every region is owned.
  absl::StatusOr<uint32_t> OpenFastPath(SessionId session, const SessionOwner& owner,
                                        std::optional<uint32_t> hint = std::nullopt);
  // The client of `session` holds no fast lease and will take none: at the
  // session's end its region is freed at once rather than kept until its
  // process exits.
  void FastPathDone(SessionId session);
  // Frees the regions of ended sessions whose process exited (and the blocks
  // only they held). The daemon calls it on its tick.
  void ReapFastRegions();
  // Frees every retired block that no fast lease names any more. The daemon
  // calls it on its tick; a create that finds no room calls it too.
  void ReclaimFastHeld();
  // Gives every lease and pending write of `from` (a recovered session) to
  // `to`, keeping their ids, and ends `from`. The caller checks that `to`'s
  // process is `from`'s holder. Adopted writes can only be aborted: Seal of
  // one is Aborted (the daemon that reserved it is gone).
  struct Adopted {
    uint64_t leases = 0;
    uint64_t writes = 0;
  };
  Adopted AdoptSession(SessionId from, SessionId to);

  StoreStats Stats() const;

  // Corrupt objects set aside at recovery, in tier and offset order.
  std::vector<QuarantinedObject> Quarantined() const;
  // Frees one quarantined object's block. NotFound (naming what is
  // quarantined) if nothing is quarantined there; InvalidArgument for an
  // unknown tier.
  absl::Status RemoveQuarantined(std::string_view tier, uint64_t block_offset);
  struct SessionStats {
    uint64_t leases = 0;
    uint64_t pending_writes = 0;  // extents not included
    uint64_t reserved_bytes = 0;  // its extents
  };
  SessionStats SessionInfo(SessionId session) const;
  // Incremented whenever bytes are freed; callers waiting for space poll it.
  uint64_t free_epoch() const;
  // Calls `atomically` with every visible object (as List with no limit)
  // under the store's lock: no change happens between the listing and the
  // call, so an observer that rebuilds its state there neither misses nor
  // repeats a change. Blocks the store for the time it takes.
  void SnapshotVisible(absl::FunctionRef<void(const std::vector<ObjectInfo>&)> atomically) const;
  // Installs (or, with null, removes) the observer. It must outlive its
  // installation.
  void SetObserver(StoreObserver* observer);

  // Generations in a cluster (docs/cluster.md): every generation issued from
  // now on is congruent to `residue` modulo `stride` (a host's number modulo
  // 65536, so no two hosts issue the same one), and above `floor` (the
  // highest generation the registry has seen). Defaults: stride 1, floor 0
  // (the next generation is the highest so far plus one).
  void SetGenerationScheme(uint32_t stride, uint32_t residue);
  void RaiseGenerationFloor(uint64_t floor);
  uint64_t max_generation() const;

  const std::vector<std::string>& tier_names() const { return tier_names_; }

 private:
  struct Tier {
    std::string name;
    Arena arena;
    Allocator alloc;
    LruList lru;
    double high_watermark;
    double low_watermark;
    uint64_t objects = 0;
    uint64_t evictions = 0;
  };
  struct Write {
    Object* obj;
    SessionId session;
    bool if_absent;
    uint64_t entry = LeaseTable::kNoEntry;  // in the shared lease table
    bool orphaned = false;                  // recovered from an earlier daemon: abort only
    uint64_t replica_generation = 0;        // CreateArgs::replica_generation
  };

  ObjectStore() = default;
  absl::StatusOr<uint32_t> TierIndex(std::string_view name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<Allocator::Allocation> AllocateEvicting(Tier& tier, uint64_t n)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictToWatermark(Tier& tier) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Evict(Object* obj) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes a visible object invisible; frees it now if unleased.
  void Retire(Object* obj) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The next generation under the scheme (SetGenerationScheme).
  uint64_t NextGeneration() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeObject(Object* obj) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees a retired (state removed), unleased object unless a fast lease
  // names its block; then it waits in fast_held_ (fast_lease.h's protocol).
  void FreeUnlessFastHeld(Object* obj) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReclaimFastHeldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The regions to scan (every owned one); empty without a fast path.
  std::vector<uint32_t> FastRegions() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The regions whose leases reports count: all but those of ended sessions
  // whose process has exited (their leases end when the tick reaps them).
  std::vector<uint32_t> CountedFastRegions() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeFastRegion(uint32_t r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The next object to evict from `tier`: the least recently used one that no
  // fast lease names (`held`, computed once per eviction run), else the least
  // recently used; null when nothing is evictable.
  Object* EvictionVictim(Tier& tier, std::optional<FastLeaseSet>* held)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Retires an invisible object found at recovery: freed now if unleased,
  // else when its last (surviving) lease ends.
  void RetireRecovered(Object* obj) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLease(const LeaseTable::Lease& lease) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<LeaseInfo> LeaseLocked(SessionId session, std::string_view key,
                                        uint64_t generation, std::optional<std::string_view> holder)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t HolderIndex(std::string_view holder) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FailedPrecondition: `obj` is held, so it cannot be `what` ("removed", "replaced").
  absl::Status HeldError(const Object* obj, std::string_view what) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finds a pending write of `session` and removes it from the write tables;
  // NotFound or PermissionDenied (changing nothing) otherwise.
  absl::StatusOr<Write> TakeWrite(SessionId session, uint64_t write_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AbortObject(Object* obj) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The header flags of an object created with `args`.
  static uint32_t FlagsOf(const CreateArgs& args);
  // Records `w` (its object initialised in the arena) as a pending write under
  // a new id, with an entry in the shared lease table when its session has a
  // slot; if the table is full, aborts the object and returns why.
  absl::StatusOr<uint64_t> AddWrite(Write w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Seal's checks and work for a write already taken from the write tables.
  absl::StatusOr<uint64_t> SealLocked(const Write& w, std::optional<uint64_t> checksum)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static bool IsExtent(const Object* obj) { return obj->key->key == kExtentKey; }
  ObjectInfo StatOf(const Object* obj) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::vector<std::string> tier_names_;  // constant after Open

  mutable Mutex mu_;
  std::vector<Tier> tiers_ ABSL_GUARDED_BY(mu_);
  ObjectTable table_ ABSL_GUARDED_BY(mu_);
  LeaseTable leases_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Write> writes_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<SessionId, absl::flat_hash_set<uint64_t>> session_writes_
      ABSL_GUARDED_BY(mu_);
  // The extent each session holds: its write id (ReserveExtent).
  absl::flat_hash_map<SessionId, uint64_t> extents_ ABSL_GUARDED_BY(mu_);
  uint64_t next_write_id_ ABSL_GUARDED_BY(mu_) = 1;  // random start, as lease ids
  SharedLeaseTable* shared_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::flat_hash_map<SessionId, uint32_t> slots_ ABSL_GUARDED_BY(mu_);  // in shared_
  uint64_t max_generation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_floor_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t generation_stride_ ABSL_GUARDED_BY(mu_) = 1;
  uint32_t generation_residue_ ABSL_GUARDED_BY(mu_) = 0;
  StoreObserver* observer_ ABSL_GUARDED_BY(mu_) = nullptr;
  SharedIndex* index_ ABSL_GUARDED_BY(mu_) = nullptr;
  FastLeaseRegions* fast_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Every owned region: a client may write there. A region whose session
  // ended stays owned (session 0) until its process exits, since the process
  // may still hold and end leases in it.
  struct FastRegionState {
    int32_t pid = 0;
    uint64_t start = 0;
    SessionId session = 0;  // 0: none now
    bool done = false;      // FastPathDone
  };
  absl::flat_hash_map<uint32_t, FastRegionState> regions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<SessionId, uint32_t> session_region_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> free_regions_ ABSL_GUARDED_BY(mu_);  // lowest last
  std::function<bool(int32_t, uint64_t)> process_lives_ ABSL_GUARDED_BY(mu_);
  std::vector<Object*> fast_held_ ABSL_GUARDED_BY(mu_);
  uint64_t deferred_frees_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t free_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // (tier, block offset) -> the corrupt object kept there.
  std::map<std::pair<uint32_t, uint64_t>, QuarantinedObject> quarantined_ ABSL_GUARDED_BY(mu_);
  // Names of holders (Object::holder indexes it); a handful of streams.
  std::vector<std::string> holders_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cistern::store

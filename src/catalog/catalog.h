// Catalog: the cluster model the registry serves (docs/cluster.md). Which
// hosts exist and how alive they are, which host holds which (key,
// generation) in which tier with which checksum, and which transfers are
// claimed. No I/O: it is driven by requests (the registry's gRPC messages)
// and by a Clock, and it describes every durable change as ops on a
// registry::WriteBatch that its caller makes durable.
//
// Changes are made in transactions (Txn). A mutating call validates its
// request first; on error it returns the status and changes nothing. On OK it
// applies the change in memory, appends the records to write to txn->batch,
// and records how to undo it. The caller then makes txn->batch durable and
// calls Commit (the change becomes visible to readers) or Rollback (memory is
// restored exactly, in reverse order). Until Commit, replicas and hosts the
// transaction added are invisible to Locate, ClaimTransfer and QuerySystem, so
// nothing is offered that is not on disk; removals hide a replica at once
// (offering fewer replicas is always safe). Several calls may share one Txn:
// that is how the registry group-commits many requests with one fsync.
//
// Thread-safety: none. The registry serialises writers and lets readers in
// under a shared lock (src/registryd/registry_service.h).
//
// Errors (the message names the host, key or field, and the rule):
//   InvalidArgument     a malformed request: bad host id, key, tier, size,
//                       generation, duplicate entries.
//   NotFound            an unknown host, replica or claim.
//   FailedPrecondition  a stale incarnation, a publication gap, a publish
//                       during a sync, a host that left or is dead.
//   ResourceExhausted   every source of a transfer is at its cap, or the
//                       cluster has 65535 hosts.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cistern/catalog.pb.h"
#include "cistern/registry.pb.h"
#include "src/common/clock.h"
#include "src/registry/metadata_backend.h"

namespace cistern::catalog {

namespace v1 = cistern::registry::v1;

struct CatalogOptions {
  std::string cluster_id;
  // What daemons are told to heartbeat at.
  Clock::Duration heartbeat_interval = std::chrono::seconds(1);
  // No heartbeat for this long: suspect; for dead_after: dead.
  Clock::Duration suspect_after = std::chrono::seconds(5);
  Clock::Duration dead_after = std::chrono::seconds(15);
  // A dead host's replicas are dropped from the catalog this long after it died.
  Clock::Duration replica_grace = std::chrono::seconds(300);
  // Transfers claimed from one source and not completed, at most.
  uint32_t max_transfers_per_source = 4;
  // A claim not completed within this time lapses.
  Clock::Duration transfer_ttl = std::chrono::seconds(60);
  // Limits on requests.
  uint32_t max_tiers = 16;
  uint32_t max_advertise_bytes = 256;
};

// The changes of one or more calls, made durable together.
class Txn {
 public:
  Txn() = default;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  registry::WriteBatch batch;
  bool empty() const { return undo_.empty(); }

 private:
  friend class Catalog;
  std::vector<std::function<void()>> undo_;    // run in reverse by Rollback
  std::vector<std::function<void()>> commit_;  // run by Commit
};

// Counters of what reconciles and liveness changed, since the catalog was
// loaded (for logs and metrics).
struct CatalogCounters {
  uint64_t reconcile_added = 0;
  uint64_t reconcile_removed = 0;
  uint64_t reconcile_updated = 0;
  uint64_t conflicts = 0;
  uint64_t replicas_dropped_dead = 0;
  uint64_t hosts_suspected = 0;
  uint64_t hosts_died = 0;
  uint64_t claims_expired = 0;
  uint64_t claims_refused = 0;
};

class Catalog {
 public:
  // Loads every catalog record from `backend`, counts this start as a new
  // epoch and marks every host that had not left UNKNOWN. The new epoch (and
  // host states) are written to txn->batch: apply it, then Commit. DataLoss
  // for a record that does not parse; FailedPrecondition when the database
  // belongs to another cluster id.
  static absl::StatusOr<std::unique_ptr<Catalog>> Load(registry::MetadataBackend& backend,
                                                       CatalogOptions options, Clock* clock,
                                                       Txn* txn);
  ~Catalog();

  // --- Mutations (see the file comment for the Txn contract) ---------------

  // Registers (or re-registers) a host under its identity: a new incarnation
  // replaces the old one; replicas stay until the inventory sync says
  // otherwise. sync_required when the host's StateVersion differs from the
  // catalog's view.
  absl::StatusOr<v1::RegisterReply> Register(const v1::RegisterRequest& req, Txn* txn);
  // One chunk of a full inventory; `first` starts the sync. With chunk.last
  // the replicas of the host not named since `first` are removed.
  absl::StatusOr<v1::SyncReply> SyncChunk(const v1::InventoryChunk& chunk, bool first, Txn* txn);
  absl::StatusOr<v1::PublishReply> Publish(const v1::PublishRequest& req, Txn* txn);
  absl::StatusOr<v1::DeregisterReply> Deregister(const v1::DeregisterRequest& req, Txn* txn);
  // Heartbeats change no durable state unless the host comes back from
  // suspect (its state is written).
  absl::StatusOr<v1::HeartbeatReply> Heartbeat(const v1::HeartbeatRequest& req, Txn* txn);
  absl::StatusOr<v1::ClaimTransferReply> ClaimTransfer(const v1::ClaimTransferRequest& req,
                                                       Txn* txn);
  absl::Status CompleteTransfer(const v1::CompleteTransferRequest& req, Txn* txn);
  // Liveness: suspect, dead, replicas dropped after the grace, claims lapsed.
  void Tick(Txn* txn);

  void Commit(Txn* txn);
  void Rollback(Txn* txn);

  // --- Reads (committed state only) ----------------------------------------

  absl::StatusOr<v1::LocateReply> Locate(const v1::LocateRequest& req) const;
  v1::QuerySystemReply QuerySystem() const;

  const std::string& cluster_id() const { return meta_.cluster_id(); }
  uint64_t epoch() const { return meta_.epoch(); }
  uint64_t generation_floor() const { return meta_.generation_floor(); }
  size_t claim_count() const { return claims_.size(); }
  uint64_t replica_count() const { return replica_count_; }
  uint64_t key_count() const { return keys_.size(); }
  size_t host_count() const { return hosts_.size(); }
  // Hosts in each state (index: HostState value).
  std::vector<uint64_t> HostsByState() const;
  const CatalogCounters& counters() const { return counters_; }
  // The catalog's view of a host, for tests.
  std::optional<v1::StateVersion> VersionForTest(std::string_view host_id) const;

 private:
  // One replica: 32 bytes, the catalog's bulk (docs/benchmarks.md measures it).
  struct ReplicaRec {
    uint64_t generation = 0;
    uint64_t size = 0;
    uint64_t checksum = 0;
    uint32_t host = 0;       // host number
    uint8_t tier = 0;        // index into the host's tier names
    uint8_t flags = 0;       // kHasChecksum | kPending
    uint16_t sync_mark = 0;  // the host's sync round that last named it
  };
  static constexpr uint8_t kHasChecksum = 1;
  static constexpr uint8_t kPending = 2;
  // Replicas of one key, newest generation first, then by host number.
  using KeyEntry = absl::InlinedVector<ReplicaRec, 1>;

  struct Host {
    catalog::HostRecord record;
    std::vector<std::string> tier_names;  // append-only; ReplicaRec::tier indexes it
    Clock::TimePoint last_heartbeat{};
    uint64_t last_heartbeat_unix_ms = 0;
    uint64_t replicas = 0;
    uint64_t replica_bytes = 0;
    uint64_t digest = 0;
    uint32_t active_transfers = 0;
    uint16_t sync_round = 0;
    bool syncing = false;
    v1::ReconcileReport sync_report;  // of the sync in progress
    // Replicas the host reported that conflict with another host's (never
    // catalogued), by ConflictId: counted in its StateVersion all the same,
    // so that the host's digest and the registry's agree.
    struct Conflicted {
      uint64_t digest = 0;
      uint16_t sync_mark = 0;
    };
    absl::flat_hash_map<std::string, Conflicted> conflicted;
    bool pending = false;  // registered in an uncommitted Txn
  };
  struct Claim {
    catalog::TransferRecord record;
    Clock::TimePoint expires{};
  };

  Catalog(CatalogOptions options, Clock* clock);

  // Host lookup and checks shared by the calls of a registered incarnation.
  absl::StatusOr<Host*> FindHost(std::string_view host_id);
  absl::StatusOr<Host*> CheckIncarnation(std::string_view host_id, uint64_t incarnation);
  const Host* HostByNumber(uint32_t number) const;
  Host* HostByNumber(uint32_t number);

  // Replica bookkeeping. Every change goes through these (they keep the
  // per-host counters and digests, write the batch and record the undo).
  absl::StatusOr<uint8_t> TierIndex(Host& host, std::string_view tier, bool add, Txn* txn);
  ReplicaRec* FindReplica(std::string_view key, uint64_t generation, uint32_t host);
  void InsertReplica(std::string_view key, const ReplicaRec& rec, Txn* txn);
  void EraseReplica(std::string_view key, uint64_t generation, uint32_t host, Txn* txn);
  void UpdateReplica(std::string_view key, ReplicaRec* rec, const ReplicaRec& now, Txn* txn);
  // Applies one replica a host reports (publish or sync); counts into `report`.
  void ApplyReported(Host& host, const v1::Replica& r, uint16_t mark, Txn* txn,
                     v1::ReconcileReport* report);
  void SaveHost(Host& host, Txn* txn);
  void SaveMeta(Txn* txn);
  void RaiseFloor(uint64_t generation, Txn* txn);
  uint64_t DropReplicasOf(uint32_t host, Txn* txn);
  uint64_t ReplicaDigestOf(const Host& host, std::string_view key, const ReplicaRec& r) const;
  void AddToHost(Host& host, std::string_view key, const ReplicaRec& r, int sign);
  // Forgets a conflicting replica the host no longer reports; false if it was none.
  bool EraseConflicted(Host& host, std::string_view key, uint64_t generation);
  v1::StateVersion VersionOf(const Host& host) const;
  void FillLocation(const Host& host, const ReplicaRec& r, v1::Location* loc) const;
  // Live replicas of (key, generation or the newest), ranked (see LocateReply).
  std::vector<const ReplicaRec*> Ranked(std::string_view key, uint64_t generation,
                                        std::string_view requester, uint64_t* chosen) const;
  uint64_t WallMs() const;
  void SnapshotHost(Host& host, Txn* txn);
  void SnapshotMeta(Txn* txn);

  const CatalogOptions options_;
  Clock* const clock_;
  catalog::CatalogMeta meta_;
  Clock::TimePoint loaded_at_{};
  uint64_t base_unix_ms_ = 0;  // wall time at construction, advanced by clock_
  absl::flat_hash_map<std::string, KeyEntry> keys_;
  std::vector<std::unique_ptr<Host>> hosts_;  // index: host number - 1 (null: unused)
  absl::flat_hash_map<std::string, uint32_t> host_numbers_;
  absl::flat_hash_map<uint64_t, Claim> claims_;
  uint64_t replica_count_ = 0;
  CatalogCounters counters_;
};

}  // namespace cistern::catalog

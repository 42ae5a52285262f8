// Stream: one named, durable queue of sample references (the dataflow layer;
// docs/streams.md states the guarantees, shared/design/dataflow-contract.md the
// contract). A producer commits refs to sealed objects; consumers lease them
// (optionally one partition of them), then ack or fail them. The stream owns
// the objects of the refs it holds: it keeps a store lease on each (no
// eviction, no free) and frees it when the sample is released.
//
// Durability: every change that must survive a crash — a commit, an ack, the
// durable marker, a drop, a reconcile — is one MetadataBackend::Apply, and the
// in-memory state changes only after Apply returned OK. If Apply fails, the
// call returns its error and nothing changed (pins taken for the call are given
// back). Leases are not durable: after a restart, leased refs are requeued.
//
// Sample states (in memory):
//   pending ──lease──▶ leased ──ack──▶ awaiting_durable ──marker──▶ released
//      ▲                 │  │                  │
//      └──fail(retry)────┘  └──fail(no retry)──┼──▶ dropped
//      └──lease timeout / reconcile────────────┘
// A sample acked with global_step S is released once an ack with
// optimizer_durable reports a step >= S; one acked without a step, once a
// step-less optimizer_durable ack at or after it. Until then its bytes stay,
// so a reconcile after a trainer crash can requeue it.
//
// Thread-safety: none; the daemon's loop thread owns every Stream.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cistern/ledger.pb.h"
#include "cistern/stream.pb.h"
#include "src/common/clock.h"
#include "src/registry/metadata_backend.h"
#include "src/store/object_store.h"
#include "src/stream/rules.h"

namespace cistern::stream {

// The store session that holds every stream's pins. Server sessions count up
// from 1, so they never reach it.
inline constexpr store::SessionId kStreamSession = store::SessionId{1} << 62;

// How a stream was reconciled (at load or by Reconcile()).
struct ReconcileReport {
  uint64_t released = 0;  // acked-and-durable samples whose objects were freed now
  uint64_t requeued = 0;  // committed, not durably acked: back in the queue
  uint64_t lost = 0;      // committed, object gone: recorded as lost
};

class Stream {
 public:
  // A new, empty stream; writes its meta record. `options` must be complete
  // and valid (ValidateOptions).
  static absl::StatusOr<std::unique_ptr<Stream>> Create(std::string name,
                                                        const wire::StreamOptions& options,
                                                        registry::MetadataBackend* backend,
                                                        store::ObjectStore* store, Clock* clock);
  // Rebuilds a stream from its ledger records (already read) and reconciles it
  // as a fresh process must: durably acked samples are released, the rest of
  // the committed ones requeued (pinned again), those whose object is gone
  // recorded as lost. One Apply; on error nothing is kept.
  static absl::StatusOr<std::unique_ptr<Stream>> Load(
      std::string name, const ledger::StreamMeta& meta, const ledger::Marker& marker,
      const std::vector<std::pair<uint64_t, ledger::SampleRecord>>& records,
      registry::MetadataBackend* backend, store::ObjectStore* store, Clock* clock,
      ReconcileReport* report);
  ~Stream();

  const std::string& name() const { return name_; }

  // Updates the options fields that `update` sets (durably). InvalidArgument
  // if the result is invalid; nothing changes then.
  absl::Status UpdateOptions(const wire::StreamOptions& update);

  // Commits refs; idempotent on sample_id (a committed id is skipped, also
  // within one call). Every ref is validated and its object (key, generation)
  // held (ObjectStore::Hold: it can be neither removed nor replaced while the
  // stream has the sample) before anything is written; any bad ref — including
  // one naming an object another live sample of the stream holds — fails the
  // whole call. With req.adopt_visible, a ref of generation 0 names whatever
  // generation of its key is visible at that moment, so check-and-commit is one
  // step in the daemon. reply->held says, per ref, which generation the stream
  // holds for that sample id after the call (none: released, dropped or lost).
  // Backpressure: with the stream paused (resident bytes reached the high
  // watermark and have not fallen below the low one) or the producer at its
  // in-flight cap, sets *blocked and returns ResourceExhausted with the
  // figures, changing nothing.
  absl::Status Commit(const wire::StreamCommit& req, std::string_view producer,
                      wire::StreamCommitReply* reply, bool* blocked);

  // Leases up to max_refs pending refs in queue order (within the partition, if
  // any), after returning expired leases to the queue. With fewer than min_refs
  // available and !final, sets *blocked and leases nothing.
  absl::Status Lease(const wire::StreamLease& req, bool final, wire::StreamLeaseReply* reply,
                     bool* blocked);

  // Acks leased refs (idempotent: an acked ref counts as `already`); writes
  // the acks and the marker in one Apply, then releases every sample the
  // marker now covers. Expired leases are returned to the queue first, so an
  // ack that arrives after its lease's deadline fails even if nothing else ran
  // in between. FailedPrecondition if a ref's lease is not the current one
  // (expired, ended by a reconcile, leased again, or wrong generation);
  // NotFound for an unknown sample. Any bad ref fails the whole call.
  absl::Status Ack(const wire::StreamAck& req, wire::StreamAckReply* reply);

  // Fails leased refs: retryable ones go to the tail of the queue, others are
  // dropped (durably) and their objects freed. Expiry is applied first, as
  // for Ack.
  absl::Status Fail(const wire::StreamFail& req, wire::StreamFailReply* reply);

  // The consumer side restarted from its last durable state: every leased and
  // every acked-but-not-durable sample goes back to the queue (the latter
  // durably). Running it twice in a row changes nothing the second time.
  absl::StatusOr<ReconcileReport> Reconcile();

  void FillInfo(wire::StreamInfo* info);

  // Starvation counters, kept by whoever makes callers wait: a commit that
  // met backpressure (and, at its deadline, gave up); a lease that found
  // fewer refs than it asked for at once.
  void CountProducerWait() { ++counters_.producer_waits; }
  void CountProducerRejection() { ++counters_.producer_rejections; }
  void CountConsumerStarved() { ++counters_.consumer_starved; }

  // Bumped by anything that may unblock a waiting commit or lease.
  uint64_t epoch() const { return epoch_; }
  // Returns leases past their deadline to the queue (lease and FillInfo do
  // this too).
  void ReclaimExpired();
  // The earliest lease deadline, if anything is leased.
  std::optional<Clock::TimePoint> NextLeaseExpiry() const;

  // Stable partition hash of a sample id (XXH64, seed 0).
  static uint64_t PartitionHash(std::string_view sample_id);

 private:
  enum class State { kPending, kLeased, kAwaitingDurable };
  struct Sample {
    uint64_t seq = 0;  // commit order; the ledger key
    ledger::SampleRecord record;
    State state = State::kPending;
    uint64_t pin = 0;        // the store lease held for the stream
    uint64_t queue_pos = 0;  // while pending
    uint64_t lease_id = 0;   // while leased
    Clock::TimePoint lease_deadline;
    uint32_t deliveries = 0;
    uint64_t hash = 0;
  };
  enum class Done : uint8_t { kReleased, kDropped, kLost };

  Stream(std::string name, registry::MetadataBackend* backend, store::ObjectStore* store,
         Clock* clock);
  // Recomputes whether producers are paused (at high_watermark_bytes; again
  // allowed below low_watermark_bytes) from resident_bytes_, updates paused_
  // and returns it. Call after anything that changes resident bytes.
  bool UpdatePaused();
  bool Durable(const ledger::SampleRecord& r) const;
  void Enqueue(Sample* s);
  void Dequeue(Sample* s);
  // Frees the object and forgets the sample (after the ledger says so).
  void Finish(Sample* s, Done how);
  // Releases every awaiting sample the marker covers now.
  uint64_t ReleaseCovered();
  void FreeObject(const wire::SampleRef& ref, uint64_t pin);
  void FillHeld(const wire::StreamCommit& req, wire::StreamCommitReply* reply) const;
  // Resolves handles to leased samples for ack/fail; counts acked ones in
  // *already (ack only).
  absl::Status Resolve(const google::protobuf::RepeatedPtrField<wire::RefHandle>& refs,
                       bool for_ack, std::vector<Sample*>* leased, uint32_t* already);

  const std::string name_;
  const std::string holder_;  // "stream '<name>'": how the store names our holds
  registry::MetadataBackend* const backend_;
  store::ObjectStore* const store_;
  Clock* const clock_;

  ledger::StreamMeta meta_;
  ledger::Marker marker_;
  uint64_t next_seq_ = 1;
  uint64_t next_queue_pos_ = 1;
  uint64_t next_lease_id_ = 1;
  uint64_t epoch_ = 0;
  bool paused_ = false;
  uint64_t resident_bytes_ = 0;

  absl::flat_hash_map<std::string, std::unique_ptr<Sample>> live_;  // by sample_id
  absl::flat_hash_map<std::string, Done> done_;                     // by sample_id
  absl::flat_hash_map<std::string, std::string> live_keys_;         // object key -> sample_id
  std::map<uint64_t, Sample*> queue_;                               // by queue_pos
  std::set<std::pair<Clock::TimePoint, Sample*>> leased_;           // by deadline
  std::multimap<uint64_t, Sample*> awaiting_by_step_;
  std::multimap<uint64_t, Sample*> awaiting_stepless_;  // by ack_seq (one per ack call)
  absl::flat_hash_map<std::string, uint64_t> producer_in_flight_;
  // The samples the last Reconcile() sent back to the queue, and the first
  // lease id issued after it: an ack or fail naming an older lease of one of
  // them is told the reconcile ended it.
  absl::flat_hash_set<std::string> reconciled_;
  uint64_t reconcile_lease_floor_ = 0;

  struct Counters {
    uint64_t committed = 0, acked = 0, dropped = 0, lost = 0;
    uint64_t producer_waits = 0, producer_rejections = 0;
    uint64_t consumer_starved = 0, consumer_empty = 0;
    uint64_t expired_leases = 0, requeued = 0;
  } counters_;
};

}  // namespace cistern::stream

// Streams from C++: durable queues of sample references between producers
// and consumers, served by cisternd (docs/streams.md has the guarantees).
//
//   auto s = cistern::Stream::Open(client.get(), "rollouts", {});
//   s->Commit({ref});                       // idempotent on sample_id
//   auto refs = s->Lease({.max_refs = 32, .wait = 1s});
//   ... train on the objects the refs name (Client::Get(key, generation)) ...
//   s->Ack(*refs, /*global_step=*/step, /*optimizer_durable=*/saved);
//
// A Stream borrows its Client (which must outlive it) and is as thread-safe as
// the Client: calls are serialised on its connection, so a Lease that waits
// holds up other calls on the same Client.
//
// Errors (the message names the stream, sample, lease or limit):
//   InvalidArgument     bad name, bad ref (sample_id, key, generation 0,
//                       metadata over 4 KiB), bad options (low > high).
//   NotFound            no such stream, sample or object generation.
//   FailedPrecondition  a lease that is no longer current (expired and leased
//                       again), a sample already dropped.
//   ResourceExhausted   backpressure outlasted the commit's wait; the registry
//                       database is full.
//   Unavailable         the daemon is gone, or the registry cannot be written.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "cistern/stream.pb.h"
#include "include/cistern/client.h"
#include "include/cistern/object.h"

namespace cistern {

struct FeatureSpec {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<uint64_t> shape;
};

// Metadata only: the object (key, generation) holds the tensors.
struct SampleRef {
  std::string sample_id;
  std::string key;
  uint64_t generation = 0;
  uint64_t nbytes = 0;  // 0 on commit: the daemon fills in the object's size
  std::vector<FeatureSpec> features;
  std::map<std::string, std::string> metadata;
  // Set by Lease; Ack and Fail name the lease with them.
  uint64_t lease_id = 0;
  uint32_t deliveries = 0;
};

// Unset fields keep the stream's value (or take the daemon's default).
struct StreamOptions {
  std::optional<uint64_t> lease_timeout_ms;
  std::optional<uint64_t> high_watermark_bytes;
  std::optional<uint64_t> low_watermark_bytes;
  std::optional<uint32_t> max_in_flight_per_producer;
  std::optional<uint32_t> max_lease_refs;
};

// A stream's options, queue, totals, marker and counters: the wire message
// itself (proto/cistern/stream.proto documents each field), read through its
// accessors: info.depth(), info.has_global_step(), info.options().max_lease_refs().
using StreamInfo = wire::StreamInfo;

struct CommitResult {
  uint32_t committed = 0;
  uint32_t duplicates = 0;
  // Per ref, in order: the object the stream holds for that sample id after
  // the call (generation 0: none, the sample was released or dropped before).
  std::vector<ObjectRef> held;
};

struct CommitOptions {
  std::chrono::milliseconds wait{0};  // how long to wait out backpressure
  std::string producer;               // empty: the client's name
  // A ref with generation 0 names whatever generation of its key is visible
  // when the daemon commits it (check and commit in one step).
  bool adopt_visible = false;
};

struct SamplePutOptions {
  std::map<std::string, std::string> metadata;
  // Bounds the wait for space and for backpressure together.
  std::chrono::milliseconds wait{0};
  std::string producer;
};

struct LeaseOptions {
  uint32_t max_refs = 1;
  uint32_t min_refs = 1;              // return once this many are available...
  std::chrono::milliseconds wait{0};  // ...or after this long with what there is
  std::optional<std::pair<uint32_t, uint32_t>> partition;  // (index, count)
};

// The replies of Ack, Fail and Reconcile, as the daemon sends them.
using AckResult = wire::StreamAckReply;              // acked(), already(), released()
using FailResult = wire::StreamFailReply;            // requeued(), dropped()
using ReconcileResult = wire::StreamReconcileReply;  // released(), requeued(), lost(), pending()

class Stream {
 public:
  // Opens `name`, creating it if it does not exist; set options update it.
  static absl::StatusOr<Stream> Open(Client* client, std::string_view name,
                                     const StreamOptions& options = {});
  // Every stream of the daemon.
  static absl::StatusOr<std::vector<StreamInfo>> List(Client* client);

  const std::string& name() const { return name_; }

  // Commits refs in one transaction; a sample_id committed before is skipped.
  // Waits up to `wait` while the stream applies backpressure.
  absl::StatusOr<CommitResult> Commit(const std::vector<SampleRef>& refs,
                                      std::chrono::milliseconds wait = {},
                                      std::string_view producer = "");
  absl::StatusOr<CommitResult> Commit(const std::vector<SampleRef>& refs,
                                      const CommitOptions& options);
  // Writes `tensors` as one evictable object "<stream>/<sample_id>" and commits
  // its ref; safe to retry and to race with other producers of the same id.
  // The object is written only if the key has none (if_absent); if it has one,
  // the daemon commits whatever generation is visible then, atomically, so no
  // producer ever replaces a generation another producer may be committing.
  // Returns the ref the stream holds for the sample (its generation is 0 if
  // the sample was committed and released or dropped before: the call then
  // removes what it wrote and commits nothing). A failed commit removes what
  // this call wrote.
  absl::StatusOr<SampleRef> Put(std::string_view sample_id, const std::vector<TensorInput>& tensors,
                                const SamplePutOptions& options = {});
  absl::StatusOr<std::vector<SampleRef>> Lease(const LeaseOptions& options);
  // Durable when it returns OK. Idempotent.
  absl::StatusOr<AckResult> Ack(const std::vector<SampleRef>& refs,
                                std::optional<uint64_t> global_step = std::nullopt,
                                bool optimizer_durable = false);
  absl::StatusOr<FailResult> Fail(const std::vector<SampleRef>& refs, bool retryable = true);
  absl::StatusOr<StreamInfo> Stat();
  // Requeues every leased and every acked-but-not-durable sample (after a
  // consumer restart). Idempotent.
  absl::StatusOr<ReconcileResult> Reconcile();

  // Stable partition of a sample id: XXH64(sample_id, seed 0) % count.
  static uint32_t PartitionOf(std::string_view sample_id, uint32_t count);

 private:
  Stream(Client* client, std::string name) : client_(client), name_(std::move(name)) {}
  Client* client_;
  std::string name_;
};

}  // namespace cistern

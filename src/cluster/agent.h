// ClusterAgent: a daemon's membership of a cluster (docs/cluster.md). It
// registers the host with cistern-registry, sends the full inventory when
// the registry's view differs, heartbeats with the host's state version, and
// publishes every visibility change of the store (seals; removals,
// supersedes and evictions) in batches, in order. A daemon that cannot reach
// the registry keeps serving its local objects; the agent retries with
// exponential backoff and jitter and reports its state (Status).
//
// How the host's state version stays exact. The agent observes the store
// (store::StoreObserver, called under the store's lock, in the order of the
// changes) and keeps a running count and digest of what the host holds
// (local-only objects excluded), and with each queued change the running
// version after it. A publication is a prefix of the queue; once the
// registry acknowledges it, the version after its last change is the
// registry's view of the host, and heartbeats carry it with the publication
// sequence. A full sync rebuilds everything from the store's snapshot, taken
// under the store's lock (ObjectStore::SnapshotVisible), with the queue reset
// in the same instant, so no change is missed or sent twice.
//
// Generations: after registering, the agent sets the store's generation
// scheme to the host's number modulo 65536 and raises its floor to the
// registry's, so generations are unique cluster-wide and a newer put is
// numbered above what the cluster has seen.
//
// Thread-safety: Start, Stop once each; Status from any thread. The
// observer calls come from the store, under its lock (lock order: the
// store's mutex before the agent's).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "cistern/local.pb.h"
#include "src/cluster/registry_client.h"
#include "src/common/clock.h"
#include "src/common/mutex.h"
#include "src/store/object_store.h"

namespace cistern::cluster {

struct AgentOptions {
  std::string host_id;
  std::string advertise;
  std::string daemon_version;
  // Grows from one daemon start to the next (the start time in ns).
  uint64_t incarnation = 0;
  RegistryClientOptions registry;
  std::chrono::milliseconds publish_delay{2};
  size_t publish_batch = 1024;
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  size_t sync_chunk = 4096;
  // Called (on the agent's thread) after the registry acknowledged changes.
  std::function<void()> on_published;
};

class ClusterAgent : public store::StoreObserver {
 public:
  ClusterAgent(AgentOptions options, store::ObjectStore* store);
  ~ClusterAgent() override;
  ClusterAgent(const ClusterAgent&) = delete;
  ClusterAgent& operator=(const ClusterAgent&) = delete;

  // Observes the store and starts the agent's thread. InvalidArgument for a
  // bad registry option (an unreadable TLS file).
  absl::Status Start();
  // Stops the thread; with `deregister`, tells the registry the host leaves
  // (its replicas are dropped at once) if it is registered.
  void Stop(bool deregister);

  void FillStatus(wire::ClusterStatus* out) const;
  // False while the seal of (key, generation) is queued and not yet
  // acknowledged by the registry; true otherwise (acknowledged, local-only,
  // or not a seal of this host).
  bool IsPublished(std::string_view key, uint64_t generation) const;
  // Why publications are late: the state and the last error.
  std::string WhyLate() const;

  // StoreObserver (the store's lock is held).
  void OnVisible(const store::ObjectInfo& info) override;
  void OnGone(const store::ObjectInfo& info) override;

 private:
  struct Change {
    bool added = false;
    registry::v1::Replica replica;  // for a removal, key and generation only
    uint64_t count_after = 0;       // the running version after this change
    uint64_t digest_after = 0;
  };
  enum class State { kRegistering, kSyncing, kServing, kUnreachable, kRefused, kStopped };

  void Run();
  // Each returns false after a failure that needs re-registration or a
  // backoff; they set state_ and last_error_.
  bool RegisterHost();
  bool SyncInventory();
  bool SendHeartbeat();
  bool PublishSome();
  void Fail(const absl::Status& s, bool reregister);
  void Backoff();
  registry::v1::StateVersion AckedVersion() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<registry::v1::TierUsage> TierUsage() const;
  static std::string ExcludedId(const std::string& key, uint64_t generation);

  const AgentOptions options_;
  store::ObjectStore* const store_;
  std::unique_ptr<RegistryClient> client_;
  std::thread thread_;

  mutable Mutex mu_;
  CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  State state_ ABSL_GUARDED_BY(mu_) = State::kRegistering;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  uint64_t last_contact_unix_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // The running version: what the host holds now (local-only excluded).
  uint64_t running_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t running_digest_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<std::string> local_only_ ABSL_GUARDED_BY(mu_);  // ExcludedId of visible ones
  std::deque<Change> queue_ ABSL_GUARDED_BY(mu_);          // not yet acknowledged
  Clock::TimePoint oldest_queued_ ABSL_GUARDED_BY(mu_){};
  // The registry's view: after the last acknowledged publication or sync.
  uint64_t acked_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_digest_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  bool need_sync_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t host_number_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t registry_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_floor_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t published_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t registrations_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t syncs_ ABSL_GUARDED_BY(mu_) = 0;
  std::chrono::milliseconds heartbeat_interval_ ABSL_GUARDED_BY(mu_){1000};
  std::chrono::milliseconds backoff_ ABSL_GUARDED_BY(mu_){0};
};

}  // namespace cistern::cluster

// GroupCommitter: the registry's one writer. Every request that changes the
// catalog runs as an op on the committer's thread; the ops queued while the
// previous group was being written form the next group, which is written
// with one MetadataBackend::Apply (one fsync, for SQLite). An op's caller is
// answered only when its group is durable, so an acknowledged registration
// or publication survives a crash (docs/cluster.md, "Durability").
//
// A group: take the catalog's lock for writing, run each op (an op that
// fails changes nothing, by the Catalog's contract, and gets its own error),
// release the lock, Apply the group's batch, take the lock again, Commit
// (the additions become visible) or Rollback (memory as before the group;
// every op that had succeeded gets the backend's error). Readers (Locate,
// QuerySystem) take the lock shared and never wait for an fsync, and never
// see an addition that is not on disk.
//
// Thread-safety: Run from any thread; it blocks until the op is durable or
// refused. Stop (or the destructor) refuses queued and later ops with
// Unavailable.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <thread>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "src/catalog/catalog.h"
#include "src/common/clock.h"
#include "src/common/mutex.h"
#include "src/registry/metadata_backend.h"

namespace cistern::registryd {

// What one group did, for metrics.
struct GroupStats {
  size_t ops = 0;
  size_t batch_ops = 0;
  Clock::Duration apply_time{};
  bool failed = false;
};

class GroupCommitter {
 public:
  using Op = absl::FunctionRef<absl::Status(catalog::Catalog&, catalog::Txn*)>;

  // `catalog_mu` guards `catalog`; the committer takes it for writing.
  GroupCommitter(catalog::Catalog* catalog, SharedMutex* catalog_mu,
                 registry::MetadataBackend* backend, size_t max_group,
                 std::function<void(const GroupStats&)> on_group);
  ~GroupCommitter();
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  // Runs `op` in the next group and waits for the group to be durable.
  // Returns op's error, the backend's error, or Unavailable after Stop.
  absl::Status Run(Op op);

  void Stop();

  // Requests waiting for a group (not the one being written).
  size_t queued_for_test() {
    MutexLock lock(&mu_);
    return queue_.size();
  }

 private:
  struct Pending {
    Op* op;
    absl::Status status;
    bool done = false;
  };
  void Loop();
  void WriteGroup(std::deque<Pending*>& group);

  catalog::Catalog* const catalog_;
  SharedMutex* const catalog_mu_;
  registry::MetadataBackend* const backend_;
  const size_t max_group_;
  const std::function<void(const GroupStats&)> on_group_;

  Mutex mu_;
  CondVar work_;  // an op was queued, or stop
  CondVar done_;  // a group finished
  std::deque<Pending*> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
  // The writer thread's own: failed groups are logged at most once a second.
  Clock::TimePoint last_failure_log_{};
  uint64_t failures_unlogged_ = 0;
};

}  // namespace cistern::registryd

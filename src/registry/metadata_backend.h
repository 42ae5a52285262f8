// MetadataBackend: where Cistern keeps every durable piece of metadata (stream
// ledgers now; workers, heartbeats and the replica catalog later). It is an
// ordered key-value map with atomic, durable batches — the shape etcd offers
// too, so an etcd backend can implement the same interface.
//
// Keys and values are arbitrary bytes; keys sort bytewise. Callers build their
// own key layout on top (a component prefix, then fixed-width big-endian
// numbers where order matters).
//
// Thread-safety: implementations are safe to call from any thread; calls are
// serialised internally (one writer).
//
// Errors (the message names the backend, e.g. the database path, and the cause):
//   ResourceExhausted  the disk or database is full; nothing was applied.
//   Unavailable        the storage cannot be written or read now (read-only
//                      file, I/O error, locked by another process); nothing
//                      was applied.
//   DataLoss           the stored data is corrupt.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cistern::registry {

// Puts and deletes applied together by MetadataBackend::Apply, in order.
class WriteBatch {
 public:
  struct Op {
    std::string key;
    std::optional<std::string> value;  // nullopt: delete `key`
  };
  void Put(std::string key, std::string value) {
    ops_.push_back({std::move(key), std::move(value)});
  }
  void Delete(std::string key) { ops_.push_back({std::move(key), std::nullopt}); }
  const std::vector<Op>& ops() const { return ops_; }
  bool empty() const { return ops_.empty(); }
  size_t size() const { return ops_.size(); }
  void Clear() { ops_.clear(); }

 private:
  std::vector<Op> ops_;
};

// How far a backend that syncs in the background (SqliteOptions::
// background_sync) has got. Applies are numbered from 1 in the order they
// returned OK (an empty batch does not count).
struct SyncProgress {
  uint64_t written = 0;      // Applies that returned OK so far
  uint64_t durable = 0;      // the first `durable` of them are on disk
  uint64_t syncs = 0;        // fdatasyncs that made writes durable (one per group)
  uint64_t checkpoints = 0;  // checkpoints that copied the whole WAL into the database
  // Not OK once a sync failed: nothing after `durable` will ever be made
  // durable, and every later Apply is refused (restart to recover).
  absl::Status failed;
};

class MetadataBackend {
 public:
  virtual ~MetadataBackend() = default;

  // Applies every op of `batch` or none. On error nothing was applied. An
  // empty batch is OK and writes nothing. On OK the batch survives a crash of
  // this process; it also survives a crash of the host once it is durable:
  // at once for most backends, after a background sync for a SQLite backend
  // opened with background_sync (see sync_progress).
  virtual absl::Status Apply(const WriteBatch& batch) = 0;

  // Background durability. A backend whose Apply is durable when it returns
  // answers written == durable (both 0) and calls no listener.
  virtual SyncProgress sync_progress() const { return {}; }
  // `fn` is called, on the backend's sync thread, each time durable moves or
  // a sync fails. It runs under the backend's sync lock: it must be quick
  // (write an eventfd) and must not call the backend. Once this returns, the
  // previous listener is not called again (set nullptr before destroying
  // what it points at).
  virtual void SetSyncListener(std::function<void()> fn) { (void)fn; }
  // Blocks until everything written so far is durable; the sync's error, if
  // it failed.
  virtual absl::Status WaitDurable() { return absl::OkStatus(); }

  // The value of `key`, or nullopt when absent.
  virtual absl::StatusOr<std::optional<std::string>> Get(std::string_view key) = 0;

  // Calls `visit(key, value)` for every key starting with `prefix`, in key
  // order, until it returns false. `visit` must not call into the backend.
  virtual absl::Status Scan(
      std::string_view prefix,
      absl::FunctionRef<bool(std::string_view key, std::string_view value)> visit) = 0;

  // What and where, for logs and errors: "sqlite:/path/registry.db", "memory".
  virtual std::string Describe() const = 0;
};

// A backend in process memory: nothing survives the process. For tests and
// for callers that need no durability. `FailWritesForTest` makes every later
// Apply fail with the given status (OK restores normal operation).
class MemoryBackend : public MetadataBackend {
 public:
  MemoryBackend();
  ~MemoryBackend() override;
  absl::Status Apply(const WriteBatch& batch) override;
  absl::StatusOr<std::optional<std::string>> Get(std::string_view key) override;
  absl::Status Scan(std::string_view prefix,
                    absl::FunctionRef<bool(std::string_view, std::string_view)> visit) override;
  std::string Describe() const override { return "memory"; }

  void FailWritesForTest(absl::Status status);
  // Applies that succeeded so far.
  uint64_t applied_batches() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace cistern::registry

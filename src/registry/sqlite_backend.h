// The SQLite metadata backend: one database file in WAL mode. By default with
// synchronous=FULL, so an Apply that returned OK survives a crash of the
// process or the host; with background_sync, a sync thread makes it durable
// shortly after (see SqliteOptions). One writer: a second process (or
// connection) opening the same file gets Unavailable instead of a silently
// shared ledger. Statements are prepared once; each Apply is one transaction
// (BEGIN IMMEDIATE ... COMMIT), so a batch of many puts costs one fsync.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "src/registry/metadata_backend.h"

namespace cistern::registry {

struct SqliteOptions {
  std::string path;  // the database file; its directory must exist
  // SQLite's busy timeout while another connection holds the lock.
  int busy_timeout_ms = 1000;
  // The database file grows to at most this many bytes (whole pages,
  // PRAGMA max_page_count): a write that needs more is ResourceExhausted
  // ("... is full") and applies nothing. 0: no limit but the disk's. A
  // database already larger keeps its size and cannot grow.
  uint64_t max_bytes = 0;
  // Sync in the background (group commit): Apply writes its transaction to
  // the WAL without an fsync and returns; a sync thread fdatasyncs the WAL,
  // once for every Apply that returned while the previous sync ran, and says
  // so through MetadataBackend::sync_progress and the sync listener. The
  // thread also checkpoints the WAL into the database file (on a second
  // connection, so an Apply never waits for one). A caller that must answer
  // only once its write is on disk waits for sync_progress().durable to pass
  // it. The daemon's event loop uses this so that no request waits behind an
  // fsync (docs/streams.md, "Durability"). Without it every COMMIT fsyncs.
  bool background_sync = false;
  // With background_sync: checkpoint once the WAL holds this many bytes.
  uint64_t checkpoint_wal_bytes = 4 << 20;
  // Tests only: called instead of fdatasync(fd) by the sync thread (return
  // -1 with errno set to fail the sync).
  std::function<int(int fd)> fdatasync_for_test;
};

// Opens (creating if absent) the database at options.path and its schema.
// Unavailable if it cannot be opened or is locked by another process,
// DataLoss if the file is not a database or fails SQLite's quick_check.
absl::StatusOr<std::unique_ptr<MetadataBackend>> OpenSqliteBackend(const SqliteOptions& options);

}  // namespace cistern::registry

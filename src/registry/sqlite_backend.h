// The SQLite metadata backend: one database file in WAL mode with
// synchronous=FULL, so an Apply that returned OK survives a crash of the
// process or the host. One connection, one writer: the database is opened with
// locking_mode=EXCLUSIVE, so a second process opening the same file gets
// Unavailable instead of a silently shared ledger. Statements are prepared once;
// each Apply is one transaction (BEGIN IMMEDIATE ... COMMIT), so a batch of many
// puts costs one fsync.
#pragma once

#include <cstdint>
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
};

// Opens (creating if absent) the database at options.path and its schema.
// Unavailable if it cannot be opened or is locked by another process,
// DataLoss if the file is not a database or fails SQLite's quick_check.
absl::StatusOr<std::unique_ptr<MetadataBackend>> OpenSqliteBackend(const SqliteOptions& options);

}  // namespace cistern::registry

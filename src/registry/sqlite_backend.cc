// The SQLite backend keeps the map in one table, kv(key BLOB PRIMARY KEY, value
// BLOB NOT NULL) WITHOUT ROWID, whose primary-key index compares blobs with
// memcmp — exactly the bytewise key order the interface promises. Keys and
// values are always bound as blobs (an empty one as a zero-length blob, never
// NULL), so text affinity never changes how they compare. The schema version
// lives in `PRAGMA user_version`; a database written by a newer schema is
// refused rather than guessed at.
//
// Opening sets the pragmas in an order that matters. locking_mode=EXCLUSIVE
// comes first, before anything reads the file: in WAL mode an exclusive
// connection keeps the wal-index in heap memory (no -shm file) and, once it has
// touched the database, holds an exclusive lock on the file until it closes.
// That lock is what turns a second opener — another process, or another
// connection in this one (SQLite tracks POSIX locks per inode within a
// process) — into SQLITE_BUSY, reported as Unavailable "in use by another
// process". Next journal_mode=WAL (checked: SQLite answers with the mode it
// really chose) and synchronous=FULL, so every COMMIT fsyncs the WAL and an
// Apply that returned OK survives a host crash. The lock is only taken at the
// first read or write, so opening ends with a write transaction (BEGIN
// IMMEDIATE, quick_check, schema, COMMIT): a second opener fails at open, not
// at its first Apply.
//
// Every statement is prepared once at open and reset (and its bindings
// cleared) after each use, so no statement keeps a read transaction open
// between calls. Apply is BEGIN IMMEDIATE, one step per op, COMMIT; on any
// failure it rolls back if SQLite has not already done so (sqlite3_get_autocommit
// says whether a transaction is still active), so nothing of a failed batch is
// visible. One Mutex serialises every call; the connection is opened NOMUTEX
// because it is only ever used under that Mutex.
#include "src/registry/sqlite_backend.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "src/common/fmt_absl.h"
#include "src/common/mutex.h"
#include "src/common/status_macros.h"
#include "src/registry/sqlite_backend_testing.h"

namespace cistern::registry {
namespace {

// The schema this build writes and understands. Bump it with a migration in
// CreateSchema when the layout changes.
constexpr int kSchemaVersion = 1;

// Turns a SQLite result code into a Status naming the database and the cause.
// `detail` is sqlite3_errmsg (or sqlite3_errstr) captured right after the
// failure; `during` says what the backend was doing.
absl::Status SqliteError(int code, const std::string& path, std::string_view detail,
                         std::string_view during) {
  auto message = [&](std::string_view condition) {
    return fmt::format("registry database '{}' {}: {} (while {})", path, condition, detail, during);
  };
  switch (code & 0xff) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(message("is full"));
    case SQLITE_READONLY:
      return absl::UnavailableError(message("is read-only"));
    case SQLITE_IOERR:
      return absl::UnavailableError(message("had an I/O error"));
    case SQLITE_CANTOPEN:
      return absl::UnavailableError(message("cannot be opened"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(message("is in use by another process"));
    case SQLITE_PERM:
      return absl::UnavailableError(message("cannot be accessed"));
    case SQLITE_CORRUPT:
      return absl::DataLossError(message("is corrupt"));
    case SQLITE_NOTADB:
      return absl::DataLossError(message("is not a SQLite database"));
    default:
      return absl::InternalError(message("failed"));
  }
}

// A blob view of column `i` of the current row; valid until the next step or
// reset of `stmt`.
std::string_view ColumnBytes(sqlite3_stmt* stmt, int i) {
  const void* data = sqlite3_column_blob(stmt, i);
  int size = sqlite3_column_bytes(stmt, i);
  if (data == nullptr || size <= 0) return {};
  return std::string_view(static_cast<const char*>(data), static_cast<size_t>(size));
}

// Binds `bytes` as a blob that must outlive the step. sqlite3_bind_blob turns a
// null pointer into SQL NULL, so an empty value is bound as a zero-length blob.
int BindBytes(sqlite3_stmt* stmt, int index, std::string_view bytes) {
  if (bytes.empty()) return sqlite3_bind_zeroblob(stmt, index, 0);
  return sqlite3_bind_blob64(stmt, index, bytes.data(), bytes.size(), SQLITE_STATIC);
}

class SqliteBackend : public MetadataBackend {
 public:
  explicit SqliteBackend(std::string path) : path_(std::move(path)) {}

  ~SqliteBackend() override {
    MutexLock l(&mu_);
    for (sqlite3_stmt** stmt : {&get_, &put_, &delete_, &scan_, &begin_, &commit_, &rollback_}) {
      sqlite3_finalize(*stmt);  // a no-op on nullptr
      *stmt = nullptr;
    }
    // With every statement finalized this cannot be SQLITE_BUSY; an open
    // transaction (a failed open) is rolled back by the close.
    sqlite3_close(db_);  // a no-op on nullptr
    db_ = nullptr;
  }

  SqliteBackend(const SqliteBackend&) = delete;
  SqliteBackend& operator=(const SqliteBackend&) = delete;

  // Opens the connection, checks the file and creates the schema.
  absl::Status Open(int busy_timeout_ms, uint64_t max_bytes) {
    MutexLock l(&mu_);
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path_.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) return Error(rc, "opening");
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, busy_timeout_ms);

    ASSIGN_OR_RETURN(std::string locking, Query("PRAGMA locking_mode=EXCLUSIVE", "opening"));
    if (locking != "exclusive") {
      return absl::UnavailableError(
          fmt::format("registry database '{}' cannot use exclusive locking: SQLite chose '{}'",
                      path_, locking));
    }
    ASSIGN_OR_RETURN(std::string journal, Query("PRAGMA journal_mode=WAL", "opening"));
    if (journal != "wal") {
      return absl::UnavailableError(fmt::format(
          "registry database '{}' cannot use WAL journal mode: SQLite chose '{}'", path_, journal));
    }
    RETURN_IF_ERROR(Query("PRAGMA synchronous=FULL", "opening").status());
    if (max_bytes > 0) {
      ASSIGN_OR_RETURN(std::string page_size, Query("PRAGMA page_size", "opening"));
      const uint64_t page = std::max<uint64_t>(512, std::strtoull(page_size.c_str(), nullptr, 10));
      const uint64_t pages = std::max<uint64_t>(1, max_bytes / page);
      RETURN_IF_ERROR(
          Query(fmt::format("PRAGMA max_page_count={}", pages), "limiting its size").status());
    }

    // The first write takes the exclusive lock; see the top of this file.
    RETURN_IF_ERROR(Query("BEGIN IMMEDIATE", "opening").status());
    absl::Status s = CheckAndCreateSchema();
    if (s.ok()) s = Query("COMMIT", "opening").status();
    if (!s.ok()) {
      // Should this fail too, closing the connection rolls back.
      RollbackIfActive().IgnoreError();
      return s;
    }

    RETURN_IF_ERROR(Prepare("SELECT value FROM kv WHERE key = ?1", &get_));
    RETURN_IF_ERROR(Prepare("INSERT OR REPLACE INTO kv(key, value) VALUES (?1, ?2)", &put_));
    RETURN_IF_ERROR(Prepare("DELETE FROM kv WHERE key = ?1", &delete_));
    RETURN_IF_ERROR(Prepare("SELECT key, value FROM kv WHERE key >= ?1 ORDER BY key", &scan_));
    RETURN_IF_ERROR(Prepare("BEGIN IMMEDIATE", &begin_));
    RETURN_IF_ERROR(Prepare("COMMIT", &commit_));
    RETURN_IF_ERROR(Prepare("ROLLBACK", &rollback_));
    return absl::OkStatus();
  }

  absl::Status Apply(const WriteBatch& batch) override {
    if (batch.empty()) return absl::OkStatus();
    MutexLock l(&mu_);
    const std::string during = fmt::format("applying a batch of {} ops", batch.size());
    // A transaction left over only if an earlier ROLLBACK itself failed.
    RETURN_IF_ERROR(RollbackIfActive());
    absl::Status s = Step(begin_, during);
    for (size_t i = 0; s.ok() && i < batch.size(); ++i) {
      const WriteBatch::Op& op = batch.ops()[i];
      sqlite3_stmt* stmt = op.value ? put_ : delete_;
      int rc = BindBytes(stmt, 1, op.key);
      if (rc == SQLITE_OK && op.value) rc = BindBytes(stmt, 2, *op.value);
      if (rc != SQLITE_OK) {
        s = Error(rc, during);
        Reset(stmt);
        break;
      }
      s = Step(stmt, during);
    }
    if (s.ok()) s = Step(commit_, during);
    if (!s.ok()) {
      absl::Status rollback = RollbackIfActive();
      if (!rollback.ok()) {
        return absl::Status(s.code(), fmt::format("{}; then rolling back failed: {}", s.message(),
                                                  rollback.message()));
      }
    }
    return s;
  }

  absl::StatusOr<std::optional<std::string>> Get(std::string_view key) override {
    MutexLock l(&mu_);
    constexpr std::string_view kDuring = "reading a key";
    int rc = BindBytes(get_, 1, key);
    if (rc != SQLITE_OK) {
      absl::Status s = Error(rc, kDuring);
      Reset(get_);
      return s;
    }
    std::optional<std::string> value;
    rc = sqlite3_step(get_);
    if (rc == SQLITE_ROW) {
      value.emplace(ColumnBytes(get_, 0));
    } else if (rc != SQLITE_DONE) {
      absl::Status s = Error(rc, kDuring);
      Reset(get_);
      return s;
    }
    Reset(get_);
    return value;
  }

  absl::Status Scan(std::string_view prefix,
                    absl::FunctionRef<bool(std::string_view, std::string_view)> visit) override {
    MutexLock l(&mu_);
    constexpr std::string_view kDuring = "scanning a prefix";
    absl::Status s;
    int rc = BindBytes(scan_, 1, prefix);
    if (rc != SQLITE_OK) s = Error(rc, kDuring);
    while (s.ok()) {
      rc = sqlite3_step(scan_);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) {
        s = Error(rc, kDuring);
        break;
      }
      std::string_view key = ColumnBytes(scan_, 0);
      if (!key.starts_with(prefix)) break;
      if (!visit(key, ColumnBytes(scan_, 1))) break;
    }
    Reset(scan_);
    return s;
  }

  std::string Describe() const override { return "sqlite:" + path_; }

  absl::StatusOr<std::string> ExecForTest(std::string_view sql) {
    MutexLock l(&mu_);
    return Query(sql, "running test SQL");
  }

 private:
  // The Status for a failed call that returned `rc`, with SQLite's message for
  // it (and, for I/O and open errors, the OS error SQLite saw).
  absl::Status Error(int rc, std::string_view during) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string detail = sqlite3_errstr(rc);
    if (db_ != nullptr && sqlite3_extended_errcode(db_) == rc) {
      detail = sqlite3_errmsg(db_);
      int err = sqlite3_system_errno(db_);
      int primary = rc & 0xff;
      if (err != 0 && (primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN)) {
        detail += fmt::format(" ({})", std::strerror(err));
      }
    }
    return SqliteError(rc, path_, detail, during);
  }

  absl::Status Prepare(std::string_view sql, sqlite3_stmt** stmt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, stmt, nullptr);
    if (rc != SQLITE_OK) return Error(rc, fmt::format("preparing '{}'", sql));
    return absl::OkStatus();
  }

  static void Reset(sqlite3_stmt* stmt) {
    // sqlite3_reset repeats the error of the last step, already reported.
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
  }

  // Steps a statement that returns no rows to completion, then resets it.
  absl::Status Step(sqlite3_stmt* stmt, std::string_view during)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int rc = sqlite3_step(stmt);
    absl::Status s = rc == SQLITE_DONE || rc == SQLITE_ROW ? absl::OkStatus() : Error(rc, during);
    Reset(stmt);
    return s;
  }

  // Runs one statement prepared on the spot, for open and tests; returns the
  // first column of the first row, or "" when there are no rows. The other
  // rows must all be "ok" (quick_check's answer) or absent.
  absl::StatusOr<std::string> Query(std::string_view sql, std::string_view during)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
    if (rc != SQLITE_OK) return Error(rc, during);
    std::string first;
    bool have_row = false;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      if (!have_row && sqlite3_column_count(stmt) > 0) {
        const unsigned char* text = sqlite3_column_text(stmt, 0);
        if (text != nullptr) first = reinterpret_cast<const char*>(text);
      }
      have_row = true;
    }
    absl::Status s = rc == SQLITE_DONE ? absl::OkStatus() : Error(rc, during);
    sqlite3_finalize(stmt);
    if (!s.ok()) return s;
    return first;
  }

  // quick_check, then the schema at kSchemaVersion; inside the open's
  // transaction.
  absl::Status CheckAndCreateSchema() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    constexpr std::string_view kDuring = "checking it at open";
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, "PRAGMA quick_check(20)", -1, &stmt, nullptr);
    if (rc != SQLITE_OK) return Error(rc, kDuring);
    std::vector<std::string> problems;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      std::string line = text != nullptr ? reinterpret_cast<const char*>(text) : "";
      if (line == "ok") continue;
      std::replace(line.begin(), line.end(), '\n', ' ');  // one line for logs
      problems.push_back(std::move(line));
    }
    absl::Status s = rc == SQLITE_DONE ? absl::OkStatus() : Error(rc, kDuring);
    sqlite3_finalize(stmt);
    RETURN_IF_ERROR(s);
    if (!problems.empty()) {
      return absl::DataLossError(fmt::format("registry database '{}' failed quick_check: {}", path_,
                                             fmt::join(problems, "; ")));
    }

    ASSIGN_OR_RETURN(std::string version_text, Query("PRAGMA user_version", kDuring));
    int version = std::atoi(version_text.c_str());
    if (version > kSchemaVersion) {
      return absl::FailedPreconditionError(fmt::format(
          "registry database '{}' has schema version {}, newer than the {} this build knows", path_,
          version, kSchemaVersion));
    }
    constexpr std::string_view kCreating = "creating its schema";
    RETURN_IF_ERROR(Query("CREATE TABLE IF NOT EXISTS kv(key BLOB PRIMARY KEY, "
                          "value BLOB NOT NULL) WITHOUT ROWID",
                          kCreating)
                        .status());
    if (version < kSchemaVersion) {
      RETURN_IF_ERROR(
          Query(fmt::format("PRAGMA user_version={}", kSchemaVersion), kCreating).status());
    }
    return absl::OkStatus();
  }

  // Rolls back the transaction SQLite still has open, if any.
  absl::Status RollbackIfActive() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (db_ == nullptr || sqlite3_get_autocommit(db_)) return absl::OkStatus();
    if (rollback_ != nullptr) return Step(rollback_, "rolling back");
    return Query("ROLLBACK", "rolling back").status();
  }

  const std::string path_;

  Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Prepared once by Open; finalized before db_ is closed.
  sqlite3_stmt* get_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* put_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* delete_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* scan_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* begin_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* commit_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* rollback_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetadataBackend>> OpenSqliteBackend(const SqliteOptions& options) {
  if (options.path.empty()) {
    return absl::InvalidArgumentError("registry database path is empty");
  }
  auto backend = std::make_unique<SqliteBackend>(options.path);
  RETURN_IF_ERROR(backend->Open(options.busy_timeout_ms, options.max_bytes));
  return backend;
}

absl::StatusOr<std::string> ExecForTest(MetadataBackend* backend, std::string_view sql) {
  auto* sqlite = dynamic_cast<SqliteBackend*>(backend);
  if (sqlite == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("ExecForTest needs a SQLite backend, got '{}'",
                    backend != nullptr ? backend->Describe() : "null"));
  }
  return sqlite->ExecForTest(sql);
}

}  // namespace cistern::registry

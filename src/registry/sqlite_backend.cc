// The SQLite backend keeps the map in one table, kv(key BLOB PRIMARY KEY, value
// BLOB NOT NULL) WITHOUT ROWID, whose primary-key index compares blobs with
// memcmp — exactly the bytewise key order the interface promises. Keys and
// values are always bound as blobs (an empty one as a zero-length blob, never
// NULL), so text affinity never changes how they compare. The schema version
// lives in `PRAGMA user_version`; a database written by a newer schema is
// refused rather than guessed at.
//
// One writer. Before SQLite touches the file, Open takes an flock on
// "<path>.lock" (never on the database itself: closing any descriptor of the
// database would drop the POSIX locks SQLite holds on it), so a second opener
// — another process, or another backend in this one — gets Unavailable "in use
// by another process" at once, whatever its mode.
//
// Opening sets the pragmas in an order that matters. Without background sync,
// locking_mode=EXCLUSIVE comes first, before anything reads the file: in WAL
// mode an exclusive connection keeps the wal-index in heap memory (no -shm
// file) and, once it has touched the database, holds an exclusive lock on the
// file until it closes (a second line of defence behind the lock file). Next
// journal_mode=WAL (checked: SQLite answers with the mode it really chose) and
// synchronous=FULL, so every COMMIT fsyncs the WAL and an Apply that returned
// OK survives a host crash. Opening ends with a write transaction (BEGIN
// IMMEDIATE, quick_check, schema, COMMIT).
//
// With background sync (group commit) the connection keeps locking_mode=NORMAL
// and synchronous=NORMAL: in WAL mode a COMMIT then writes its frames to the WAL
// with write(2) and no fsync, which is enough to survive a crash of the process
// (the bytes are in the page cache) but not of the host. A sync thread makes
// them durable: it waits for Applies, reads how many have returned (written),
// fdatasyncs the WAL through its own descriptor (fsync acts on the file, not
// the descriptor, and every frame of those Applies was written before it read
// the count), and publishes that count as durable. Applies that return while
// one fdatasync runs share the next. The main connection never checkpoints
// (wal_autocheckpoint=0; a wal hook records how many frames the WAL holds);
// the sync thread checkpoints PASSIVE on a second connection of its own once
// the WAL passes checkpoint_wal_bytes. A passive checkpoint takes no lock an
// Apply needs, and with synchronous=NORMAL it syncs the WAL before copying
// frames and the database before the WAL may be reused. What remains on the
// Apply side: the first write after a complete checkpoint restarts the WAL and
// syncs its 32-byte header (synchronous=NORMAL does that, and must: without
// it, after a power loss, frames of the previous cycle that the new ones had
// not yet overwritten on disk could be replayed over newer database pages),
// one fdatasync per WAL cycle; and a writer that never pauses long enough for
// the WAL to be reset waits for one RESTART checkpoint per cycle (see
// MaybeCheckpoint). A failed fdatasync is final (after one, the kernel may have
// dropped the dirty pages and a retry can succeed without them): the backend
// says so in sync_progress().failed, and refuses every later Apply.
//
// Every statement is prepared once at open and reset (and its bindings
// cleared) after each use, so no statement keeps a read transaction open
// between calls (which would also stop a checkpoint). Apply is BEGIN
// IMMEDIATE, one step per op, COMMIT; on any failure it rolls back if SQLite
// has not already done so (sqlite3_get_autocommit says whether a transaction
// is still active), so nothing of a failed batch is visible. One Mutex
// serialises every call on the main connection, which is opened NOMUTEX
// because it is only ever used under that Mutex; the checkpoint connection
// belongs to the sync thread.
#include "src/registry/sqlite_backend.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "src/common/fmt_absl.h"
#include "src/common/mutex.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"
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
  explicit SqliteBackend(SqliteOptions options)
      : options_(std::move(options)), path_(options_.path) {}

  ~SqliteBackend() override {
    // The sync thread makes what was written durable before it ends.
    {
      MutexLock l(&sync_mu_);
      stopping_ = true;
      sync_wake_.SignalAll();
    }
    if (sync_thread_.joinable()) sync_thread_.join();
    MutexLock l(&mu_);
    for (sqlite3_stmt** stmt : {&get_, &put_, &delete_, &scan_, &begin_, &commit_, &rollback_}) {
      sqlite3_finalize(*stmt);  // a no-op on nullptr
      *stmt = nullptr;
    }
    // With every statement finalized this cannot be SQLITE_BUSY; an open
    // transaction (a failed open) is rolled back by the close. The checkpoint
    // connection closes last: the last connection to close checkpoints the
    // WAL and removes it, and that one syncs while doing so.
    sqlite3_close(db_);  // a no-op on nullptr
    db_ = nullptr;
    sqlite3_close(ckpt_db_);
    ckpt_db_ = nullptr;
    // The lock file's descriptor (lock_fd_) closes after the connections.
  }

  SqliteBackend(const SqliteBackend&) = delete;
  SqliteBackend& operator=(const SqliteBackend&) = delete;

  // Takes the lock file, opens the connection, checks the file and creates
  // the schema; with background sync, also the checkpoint connection, the
  // WAL descriptor and the sync thread.
  absl::Status Open() {
    MutexLock l(&mu_);
    RETURN_IF_ERROR(TakeLockFile());
    const bool background = options_.background_sync;
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path_.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) return Error(rc, "opening");
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, options_.busy_timeout_ms);

    if (!background) {
      ASSIGN_OR_RETURN(std::string locking, Query("PRAGMA locking_mode=EXCLUSIVE", "opening"));
      if (locking != "exclusive") {
        return absl::UnavailableError(
            fmt::format("registry database '{}' cannot use exclusive locking: SQLite chose '{}'",
                        path_, locking));
      }
    }
    ASSIGN_OR_RETURN(std::string journal, Query("PRAGMA journal_mode=WAL", "opening"));
    if (journal != "wal") {
      return absl::UnavailableError(fmt::format(
          "registry database '{}' cannot use WAL journal mode: SQLite chose '{}'", path_, journal));
    }
    RETURN_IF_ERROR(
        Query(background ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL", "opening")
            .status());
    if (options_.max_bytes > 0) {
      ASSIGN_OR_RETURN(std::string page_size, Query("PRAGMA page_size", "opening"));
      const uint64_t page = std::max<uint64_t>(512, std::strtoull(page_size.c_str(), nullptr, 10));
      const uint64_t pages = std::max<uint64_t>(1, options_.max_bytes / page);
      RETURN_IF_ERROR(
          Query(fmt::format("PRAGMA max_page_count={}", pages), "limiting its size").status());
    }

    // Without background sync the first write takes the exclusive lock.
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
    if (background) RETURN_IF_ERROR(StartBackgroundSync());
    return absl::OkStatus();
  }

  SyncProgress sync_progress() const override {
    MutexLock l(&sync_mu_);
    return SyncProgress{written_, durable_, syncs_, checkpoints_.load(std::memory_order_relaxed),
                        failed_};
  }

  void SetSyncListener(std::function<void()> fn) override {
    MutexLock l(&sync_mu_);
    listener_ = std::move(fn);
  }

  absl::Status WaitDurable() override {
    MutexLock l(&sync_mu_);
    const uint64_t target = written_;
    while (durable_ < target && failed_.ok()) durable_changed_.Wait(&sync_mu_);
    return durable_ >= target ? absl::OkStatus() : failed_;
  }

  absl::Status Apply(const WriteBatch& batch) override {
    if (batch.empty()) return absl::OkStatus();
    MutexLock l(&mu_);
    if (options_.background_sync) {
      MutexLock sl(&sync_mu_);
      if (!failed_.ok()) {
        return absl::UnavailableError(fmt::format(
            "registry database '{}' refuses writes since a sync failed ({}); restart to recover "
            "from what is on disk",
            path_, failed_.message()));
      }
    }
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
      return s;
    }
    if (options_.background_sync) {
      MutexLock sl(&sync_mu_);
      ++written_;
      sync_wake_.Signal();
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
  // flock(LOCK_EX | LOCK_NB) on "<path>.lock", held until the backend closes.
  absl::Status TakeLockFile() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string lock_path = path_ + ".lock";
    lock_fd_.Reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!lock_fd_.valid()) {
      return absl::UnavailableError(
          fmt::format("registry database '{}' cannot be opened: creating its lock file '{}': {}",
                      path_, lock_path, std::strerror(errno)));
    }
    if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      lock_fd_.Reset();
      if (err == EWOULDBLOCK) {
        return absl::UnavailableError(
            fmt::format("registry database '{}' is in use by another process (its lock file '{}' "
                        "is locked)",
                        path_, lock_path));
      }
      return absl::UnavailableError(
          fmt::format("registry database '{}' cannot be locked ('{}': {})", path_, lock_path,
                      std::strerror(err)));
    }
    return absl::OkStatus();
  }

  static int OnWalCommit(void* self, sqlite3*, const char*, int frames) {
    static_cast<SqliteBackend*>(self)->wal_frames_.store(frames, std::memory_order_relaxed);
    return SQLITE_OK;
  }

  absl::Status StartBackgroundSync() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    constexpr std::string_view kDuring = "starting its sync thread";
    RETURN_IF_ERROR(Query("PRAGMA wal_autocheckpoint=0", kDuring).status());
    ASSIGN_OR_RETURN(std::string page_size, Query("PRAGMA page_size", kDuring));
    page_bytes_ = std::max<uint64_t>(512, std::strtoull(page_size.c_str(), nullptr, 10));
    sqlite3_wal_hook(db_, &SqliteBackend::OnWalCommit, this);
    sqlite3_busy_handler(db_, &SqliteBackend::OnBusy, this);
    // The WAL exists: opening wrote (or read) in WAL mode.
    const std::string wal = path_ + "-wal";
    wal_fd_.Reset(::open(wal.c_str(), O_RDONLY | O_CLOEXEC));
    if (!wal_fd_.valid()) {
      return absl::UnavailableError(fmt::format("registry database '{}': opening its WAL '{}': {}",
                                                path_, wal, std::strerror(errno)));
    }
    // fdatasync of the WAL makes its bytes durable, not its name: sync the
    // directory once, now that the WAL exists (SQLite does the same on its
    // first sync of a new file). The WAL is removed only when the last
    // connection closes, so it keeps its name while this backend is open.
    const std::string dir = std::filesystem::path(path_).parent_path().string();
    UniqueFd dir_fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd.valid() || ::fsync(dir_fd.get()) != 0) {
      return absl::UnavailableError(fmt::format("registry database '{}': syncing its directory: {}",
                                                path_, std::strerror(errno)));
    }
    int rc = sqlite3_open_v2(path_.c_str(), &ckpt_db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                             nullptr);
    if (rc == SQLITE_OK) {
      sqlite3_busy_timeout(ckpt_db_, options_.busy_timeout_ms);
      rc = sqlite3_exec(ckpt_db_, "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;",
                        nullptr, nullptr, nullptr);
    }
    if (rc != SQLITE_OK) {
      std::string detail = ckpt_db_ != nullptr ? sqlite3_errmsg(ckpt_db_) : sqlite3_errstr(rc);
      return SqliteError(rc, path_, detail, "opening its checkpoint connection");
    }
    sync_thread_ = std::thread([this] { SyncLoop(); });
    return absl::OkStatus();
  }

  // The sync thread: one fdatasync per group of Applies, then a checkpoint
  // when the WAL has grown.
  void SyncLoop() {
    for (;;) {
      uint64_t target;
      {
        MutexLock l(&sync_mu_);
        while (written_ == durable_ && !stopping_) sync_wake_.Wait(&sync_mu_);
        if (written_ == durable_) return;  // stopping, nothing left to sync
        target = written_;
      }
      int rc = options_.fdatasync_for_test ? options_.fdatasync_for_test(wal_fd_.get())
                                           : ::fdatasync(wal_fd_.get());
      int err = errno;
      {
        MutexLock l(&sync_mu_);
        if (rc == 0) {
          durable_ = target;
          ++syncs_;
        } else {
          failed_ = absl::UnavailableError(
              fmt::format("fdatasync of '{}-wal' failed: {}", path_, std::strerror(err)));
        }
        durable_changed_.SignalAll();
        // Under the lock, so that once SetSyncListener returns the old
        // listener is never called again.
        if (listener_) listener_();
      }
      if (rc != 0) return;
      MaybeCheckpoint();
    }
  }

  // A passive checkpoint once the WAL passes checkpoint_wal_bytes. The writer
  // resets the WAL at its next transaction if the checkpoint finished before
  // it began; a writer that never pauses never gets there, so once the WAL
  // passes four times the threshold a RESTART checkpoint resets it here. That
  // one holds the write lock while it copies what the passive one left and
  // syncs the database: an Apply waits for it, once per such cycle.
  void MaybeCheckpoint() {
    const uint64_t limit = options_.checkpoint_wal_bytes;
    uint64_t frames = static_cast<uint64_t>(wal_frames_.load(std::memory_order_relaxed));
    if (frames * page_bytes_ < limit) return;
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(ckpt_db_, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    // A checkpoint that could not finish is tried again after the next sync;
    // a failed one leaves the WAL to grow, which costs disk, not data.
    if (rc != SQLITE_OK || done != log) return;
    checkpoints_.fetch_add(1, std::memory_order_relaxed);
    if (static_cast<uint64_t>(log) * page_bytes_ < 4 * limit) return;
    rc = sqlite3_wal_checkpoint_v2(ckpt_db_, "main", SQLITE_CHECKPOINT_RESTART, &log, &done);
    if (rc == SQLITE_OK) {
      wal_frames_.store(0, std::memory_order_relaxed);
      restarts_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // The main connection's busy handler: while the checkpoint connection
  // holds the write lock (a RESTART checkpoint, about one fsync), retry every
  // 50 us rather than SQLite's default first sleep of 1 ms, up to
  // busy_timeout_ms.
  static int OnBusy(void* self, int count) {
    auto* b = static_cast<SqliteBackend*>(self);
    if (static_cast<int64_t>(count) * 50 >= int64_t{b->options_.busy_timeout_ms} * 1000) return 0;
    ::usleep(50);
    return 1;
  }

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

  const SqliteOptions options_;
  const std::string path_;
  UniqueFd lock_fd_;  // "<path>.lock", flocked; closed after the connections

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

  // Background sync. The sync thread owns ckpt_db_ and wal_fd_.
  sqlite3* ckpt_db_ = nullptr;
  UniqueFd wal_fd_;
  uint64_t page_bytes_ = 4096;
  std::atomic<int> wal_frames_{0};  // frames in the WAL after the last commit
  std::atomic<uint64_t> checkpoints_{0};
  std::atomic<uint64_t> restarts_{0};  // RESTART checkpoints (a writer that never paused)
  mutable Mutex sync_mu_;              // after mu_ when both are held
  CondVar sync_wake_;                  // written_ moved, or stopping_
  CondVar durable_changed_;            // durable_ moved, or failed_
  uint64_t written_ ABSL_GUARDED_BY(sync_mu_) = 0;
  uint64_t durable_ ABSL_GUARDED_BY(sync_mu_) = 0;
  uint64_t syncs_ ABSL_GUARDED_BY(sync_mu_) = 0;
  absl::Status failed_ ABSL_GUARDED_BY(sync_mu_);
  bool stopping_ ABSL_GUARDED_BY(sync_mu_) = false;
  std::function<void()> listener_ ABSL_GUARDED_BY(sync_mu_);
  std::thread sync_thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetadataBackend>> OpenSqliteBackend(const SqliteOptions& options) {
  if (options.path.empty()) {
    return absl::InvalidArgumentError("registry database path is empty");
  }
  auto backend = std::make_unique<SqliteBackend>(options);
  RETURN_IF_ERROR(backend->Open());
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

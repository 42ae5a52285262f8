#include "src/registry/metadata_backend.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/mutex.h"
#include "src/registry/sqlite_backend.h"
#include "src/registry/sqlite_backend_testing.h"
#include "src/registry/sync_gate_testing.h"

namespace cistern::registry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// A fresh directory under the test temp dir, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "cistern_registry_test.XXXXXX";
    char* made = mkdtemp(pattern.data());
    if (made == nullptr) ADD_FAILURE() << "mkdtemp " << pattern << " failed";
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string File(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// `n` as 8 big-endian bytes, so keys built from it sort numerically.
std::string BigEndian(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, n >>= 8) out[i] = static_cast<char>(n & 0xff);
  return out;
}

uint64_t FromBigEndian(std::string_view bytes) {
  uint64_t n = 0;
  for (char c : bytes) n = (n << 8) | static_cast<unsigned char>(c);
  return n;
}

KeyValues ScanAll(MetadataBackend& backend, std::string_view prefix) {
  KeyValues out;
  absl::Status s = backend.Scan(prefix, [&](std::string_view key, std::string_view value) {
    out.emplace_back(key, value);
    return true;
  });
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

std::optional<std::string> GetValue(MetadataBackend& backend, std::string_view key) {
  absl::StatusOr<std::optional<std::string>> value = backend.Get(key);
  EXPECT_TRUE(value.ok()) << value.status();
  return value.ok() ? *value : std::nullopt;
}

absl::Status PutAll(MetadataBackend& backend, const KeyValues& kvs) {
  WriteBatch batch;
  for (const auto& [key, value] : kvs) batch.Put(key, value);
  return backend.Apply(batch);
}

// The behaviours every backend shares, run against each of them.
enum class Kind { kMemory, kSqlite, kSqliteBackground };

class MetadataBackendTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    if (GetParam() == Kind::kMemory) {
      backend_ = std::make_unique<MemoryBackend>();
      return;
    }
    auto opened = OpenSqliteBackend({.path = dir_.File("registry.db"),
                                     .background_sync = GetParam() == Kind::kSqliteBackground});
    ASSERT_TRUE(opened.ok()) << opened.status();
    backend_ = *std::move(opened);
  }

  TempDir dir_;  // outlives backend_
  std::unique_ptr<MetadataBackend> backend_;
};

INSTANTIATE_TEST_SUITE_P(Backends, MetadataBackendTest,
                         ::testing::Values(Kind::kMemory, Kind::kSqlite, Kind::kSqliteBackground),
                         [](const ::testing::TestParamInfo<Kind>& info) {
                           return info.param == Kind::kMemory   ? "Memory"
                                  : info.param == Kind::kSqlite ? "Sqlite"
                                                                : "SqliteBackgroundSync";
                         });

TEST_P(MetadataBackendTest, PutThenGetReturnsTheLatestValue) {
  ASSERT_TRUE(PutAll(*backend_, {{"a", "1"}, {"b", "2"}}).ok());
  EXPECT_EQ(GetValue(*backend_, "a"), "1");
  EXPECT_EQ(GetValue(*backend_, "b"), "2");
  ASSERT_TRUE(PutAll(*backend_, {{"a", "3"}}).ok());
  EXPECT_EQ(GetValue(*backend_, "a"), "3");
}

TEST_P(MetadataBackendTest, AbsentKeyReadsAsNullopt) {
  ASSERT_TRUE(PutAll(*backend_, {{"present", "x"}}).ok());
  absl::StatusOr<std::optional<std::string>> value = backend_->Get("absent");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, std::nullopt);
}

TEST_P(MetadataBackendTest, DeleteRemovesTheKeyAndDeletingAnAbsentKeyIsOk) {
  ASSERT_TRUE(PutAll(*backend_, {{"a", "1"}, {"b", "2"}}).ok());
  WriteBatch batch;
  batch.Delete("a");
  batch.Delete("never-written");
  ASSERT_TRUE(backend_->Apply(batch).ok());
  EXPECT_EQ(GetValue(*backend_, "a"), std::nullopt);
  EXPECT_EQ(GetValue(*backend_, "b"), "2");
}

TEST_P(MetadataBackendTest, BinaryKeysWithNulBytesAndEmptyValuesRoundTrip) {
  using std::string_literals::operator""s;
  const KeyValues kvs = {{"\0"s, "nul"},        {"a\0b"s, ""},       {"a"s, "\0\0"s},
                         {"a\0"s, "\xff\x00"s}, {"\xff\xfe"s, "hi"}, {""s, "empty key"}};
  ASSERT_TRUE(PutAll(*backend_, kvs).ok());
  for (const auto& [key, value] : kvs) {
    EXPECT_EQ(GetValue(*backend_, key), value) << "key " << ::testing::PrintToString(key);
  }
  EXPECT_EQ(GetValue(*backend_, "a\0\0"s), std::nullopt);
  EXPECT_THAT(ScanAll(*backend_, ""),
              ElementsAre(Pair(""s, "empty key"), Pair("\0"s, "nul"), Pair("a"s, "\0\0"s),
                          Pair("a\0"s, "\xff\x00"s), Pair("a\0b"s, ""), Pair("\xff\xfe"s, "hi")));
}

TEST_P(MetadataBackendTest, ScanVisitsOnlyThePrefixInBytewiseOrder) {
  using std::string_literals::operator""s;
  ASSERT_TRUE(PutAll(*backend_, {{"job/\xff\x00"s, "6"},
                                 {"jp", "x"},
                                 {"job/b", "4"},
                                 {"job", "x"},
                                 {"job/", "1"},
                                 {"job0", "x"},
                                 {"job/\x80", "5"},
                                 {"jo", "x"},
                                 {"job/a", "3"},
                                 {"job/A", "2"},
                                 {"jobz", "x"}})
                  .ok());
  EXPECT_THAT(ScanAll(*backend_, "job/"),
              ElementsAre(Pair("job/", "1"), Pair("job/A", "2"), Pair("job/a", "3"),
                          Pair("job/b", "4"), Pair("job/\x80", "5"), Pair("job/\xff\x00"s, "6")));
  EXPECT_TRUE(ScanAll(*backend_, "nothing/").empty());
}

TEST_P(MetadataBackendTest, ScanWithEmptyPrefixVisitsEveryKey) {
  ASSERT_TRUE(PutAll(*backend_, {{"b", "2"}, {"a", "1"}, {"c", "3"}}).ok());
  EXPECT_THAT(ScanAll(*backend_, ""), ElementsAre(Pair("a", "1"), Pair("b", "2"), Pair("c", "3")));
}

TEST_P(MetadataBackendTest, ScanStopsWhenVisitReturnsFalse) {
  ASSERT_TRUE(
      PutAll(*backend_, {{"p/1", "1"}, {"p/2", "2"}, {"p/3", "3"}, {"p/4", "4"}, {"p/5", "5"}})
          .ok());
  std::vector<std::string> visited;
  absl::Status s = backend_->Scan("p/", [&](std::string_view key, std::string_view) {
    visited.emplace_back(key);
    return visited.size() < 2;
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(visited, ElementsAre("p/1", "p/2"));
  // A scan stopped early leaves the backend usable.
  ASSERT_TRUE(PutAll(*backend_, {{"p/6", "6"}}).ok());
  EXPECT_EQ(ScanAll(*backend_, "p/").size(), 6u);
}

TEST_P(MetadataBackendTest, BigEndianNumericKeysSortNumerically) {
  const std::vector<uint64_t> numbers = {256, 1, 0, UINT64_MAX, 255, 1ull << 40, 65536};
  WriteBatch batch;
  for (uint64_t n : numbers) batch.Put("seq/" + BigEndian(n), std::to_string(n));
  ASSERT_TRUE(backend_->Apply(batch).ok());

  std::vector<uint64_t> order;
  for (const auto& [key, value] : ScanAll(*backend_, "seq/")) {
    order.push_back(FromBigEndian(std::string_view(key).substr(4)));
    EXPECT_EQ(value, std::to_string(order.back()));
  }
  EXPECT_THAT(order, ElementsAre(0, 1, 255, 256, 65536, 1ull << 40, UINT64_MAX));

  // A prefix ending in NUL bytes: the numbers below 256.
  std::vector<uint64_t> small;
  for (const auto& [key, value] : ScanAll(*backend_, "seq/" + std::string(7, '\0'))) {
    small.push_back(FromBigEndian(std::string_view(key).substr(4)));
  }
  EXPECT_THAT(small, ElementsAre(0, 1, 255));
}

TEST_P(MetadataBackendTest, LaterOpsInABatchSeeEarlierOnes) {
  WriteBatch batch;
  batch.Put("k", "1");
  batch.Delete("k");
  batch.Put("m", "1");
  batch.Put("m", "2");
  batch.Delete("n");
  batch.Put("n", "3");
  ASSERT_TRUE(backend_->Apply(batch).ok());
  EXPECT_EQ(GetValue(*backend_, "k"), std::nullopt);
  EXPECT_EQ(GetValue(*backend_, "m"), "2");
  EXPECT_EQ(GetValue(*backend_, "n"), "3");
}

TEST_P(MetadataBackendTest, EmptyBatchIsOkAndWritesNothing) {
  ASSERT_TRUE(backend_->Apply(WriteBatch()).ok());
  EXPECT_TRUE(ScanAll(*backend_, "").empty());
}

TEST_P(MetadataBackendTest, TenThousandOpBatchAppliesInOneCall) {
  WriteBatch batch;
  for (uint64_t i = 0; i < 10000; ++i) batch.Put("n/" + BigEndian(i), std::string(32, 'v'));
  absl::Status s = backend_->Apply(batch);
  ASSERT_TRUE(s.ok()) << s;
  KeyValues all = ScanAll(*backend_, "n/");
  ASSERT_EQ(all.size(), 10000u);
  EXPECT_EQ(all.front().first, "n/" + BigEndian(0));
  EXPECT_EQ(all.back().first, "n/" + BigEndian(9999));
  EXPECT_EQ(GetValue(*backend_, "n/" + BigEndian(4242)), std::string(32, 'v'));
}

TEST_P(MetadataBackendTest, CallsFromManyThreadsAllLand) {
  constexpr int kThreads = 4;
  constexpr int kBatches = 20;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      const std::string prefix = "t" + std::to_string(t) + "/";
      for (int b = 0; b < kBatches; ++b) {
        WriteBatch batch;
        batch.Put(prefix + BigEndian(2 * b), "x");
        batch.Put(prefix + BigEndian(2 * b + 1), "y");
        EXPECT_TRUE(backend_->Apply(batch).ok());
        EXPECT_EQ(GetValue(*backend_, prefix + BigEndian(2 * b)), "x");
        EXPECT_EQ(ScanAll(*backend_, prefix).size(), 2u * (b + 1));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ScanAll(*backend_, "").size(), 2u * kThreads * kBatches);
}

TEST(MemoryBackendTest, FailWritesForTestMakesApplyFailAndChangesNothing) {
  MemoryBackend backend;
  ASSERT_TRUE(PutAll(backend, {{"a", "1"}}).ok());
  backend.FailWritesForTest(absl::UnavailableError("injected"));

  WriteBatch batch;
  batch.Put("a", "2");
  batch.Put("b", "2");
  batch.Delete("a");
  absl::Status s = backend.Apply(batch);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("injected"));
  EXPECT_THAT(ScanAll(backend, ""), ElementsAre(Pair("a", "1")));
  EXPECT_EQ(backend.applied_batches(), 1u);

  backend.FailWritesForTest(absl::OkStatus());
  ASSERT_TRUE(backend.Apply(batch).ok());
  EXPECT_THAT(ScanAll(backend, ""), ElementsAre(Pair("b", "2")));
  EXPECT_EQ(backend.applied_batches(), 2u);
}

// SQLite-only behaviours: durability, locking, faults and what is on disk.
class SqliteBackendTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<MetadataBackend>> Open(int busy_timeout_ms = 1000) {
    return OpenSqliteBackend({.path = path_, .busy_timeout_ms = busy_timeout_ms});
  }

  // Opens path_, failing the test when it cannot.
  std::unique_ptr<MetadataBackend> MustOpen() {
    auto opened = Open();
    EXPECT_TRUE(opened.ok()) << opened.status();
    return opened.ok() ? *std::move(opened) : nullptr;
  }

  TempDir dir_;
  const std::string path_ = dir_.File("registry.db");
};

TEST_F(SqliteBackendTest, DescribeNamesThePath) {
  auto backend = MustOpen();
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->Describe(), "sqlite:" + path_);
}

TEST_F(SqliteBackendTest, DataSurvivesCloseAndReopen) {
  using std::string_literals::operator""s;
  {
    auto backend = MustOpen();
    ASSERT_NE(backend, nullptr);
    ASSERT_TRUE(PutAll(*backend, {{"a", "1"}, {"b\0"s, ""}, {"c", "3"}}).ok());
    WriteBatch batch;
    batch.Delete("c");
    ASSERT_TRUE(backend->Apply(batch).ok());
  }
  auto reopened = MustOpen();
  ASSERT_NE(reopened, nullptr);
  EXPECT_THAT(ScanAll(*reopened, ""), ElementsAre(Pair("a", "1"), Pair("b\0"s, "")));
}

TEST_F(SqliteBackendTest, SecondOpenWhileOpenIsUnavailableAndNamesThePath) {
  auto first = MustOpen();
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(PutAll(*first, {{"a", "1"}}).ok());

  auto second = Open(/*busy_timeout_ms=*/0);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr("'" + path_ + "'"));
  EXPECT_THAT(second.status().message(), HasSubstr("in use by another process"));

  // The failed opener disturbed nothing.
  ASSERT_TRUE(PutAll(*first, {{"b", "2"}}).ok());
  EXPECT_EQ(GetValue(*first, "a"), "1");

  first.reset();
  auto third = MustOpen();
  ASSERT_NE(third, nullptr);
  EXPECT_THAT(ScanAll(*third, ""), ElementsAre(Pair("a", "1"), Pair("b", "2")));
}

TEST_F(SqliteBackendTest, FullDatabaseIsResourceExhaustedAndAppliesNothing) {
  auto backend = MustOpen();
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(PutAll(*backend, {{"keep", "old"}, {"gone", "still here"}}).ok());
  absl::StatusOr<std::string> pages = ExecForTest(backend.get(), "PRAGMA page_count");
  ASSERT_TRUE(pages.ok()) << pages.status();
  const int limit = std::stoi(*pages) + 2;
  ASSERT_TRUE(ExecForTest(backend.get(), "PRAGMA max_page_count=" + std::to_string(limit)).ok());

  WriteBatch big;
  big.Put("keep", "new");
  big.Delete("gone");
  for (uint64_t i = 0; i < 500; ++i) big.Put("big/" + BigEndian(i), std::string(1000, 'x'));
  absl::Status s = backend->Apply(big);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr("registry database '" + path_ + "' is full"));
  EXPECT_EQ(GetValue(*backend, "keep"), "old");
  EXPECT_EQ(GetValue(*backend, "gone"), "still here");
  EXPECT_TRUE(ScanAll(*backend, "big/").empty());

  ASSERT_TRUE(ExecForTest(backend.get(), "PRAGMA max_page_count=1000000").ok());
  ASSERT_TRUE(PutAll(*backend, {{"small", "1"}}).ok());
  s = backend->Apply(big);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(GetValue(*backend, "keep"), "new");
  EXPECT_EQ(ScanAll(*backend, "big/").size(), 500u);
}

TEST_F(SqliteBackendTest, MaxBytesCapsTheFileAndAWriteBeyondItAppliesNothing) {
  {
    auto capped = OpenSqliteBackend({.path = path_, .max_bytes = 128 * 1024});
    ASSERT_TRUE(capped.ok()) << capped.status();
    ASSERT_TRUE(PutAll(**capped, {{"keep", "old"}}).ok());
    absl::Status s;
    uint64_t written = 0;
    while (s.ok() && written < 1000) {  // 1000 x 1 KiB would need ~1 MiB
      WriteBatch one;
      one.Put("fill/" + BigEndian(written), std::string(1000, 'x'));
      one.Put("keep", "new");
      s = (*capped)->Apply(one);
      written += s.ok();
    }
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
    EXPECT_THAT(s.message(), HasSubstr("registry database '" + path_ + "' is full"));
    EXPECT_GT(written, 10u);
    EXPECT_LT(written, 128u);
    EXPECT_EQ(ScanAll(**capped, "fill/").size(), written);  // the refused write left nothing
  }
  EXPECT_LE(std::filesystem::file_size(path_), 128u * 1024);
  // Without the cap the same database takes the write.
  auto open = MustOpen();
  ASSERT_NE(open, nullptr);
  WriteBatch more;
  for (int i = 0; i < 200; ++i) more.Put("more/" + BigEndian(i), std::string(1000, 'y'));
  ASSERT_TRUE(open->Apply(more).ok());
  EXPECT_EQ(ScanAll(*open, "more/").size(), 200u);
}

TEST_F(SqliteBackendTest, ReadOnlyDatabaseIsUnavailableAndAppliesNothing) {
  auto backend = MustOpen();
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(PutAll(*backend, {{"a", "1"}}).ok());
  ASSERT_TRUE(ExecForTest(backend.get(), "PRAGMA query_only=1").ok());

  WriteBatch batch;
  batch.Put("a", "2");
  batch.Put("b", "2");
  absl::Status s = backend->Apply(batch);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("registry database '" + path_ + "' is read-only"));
  EXPECT_THAT(ScanAll(*backend, ""), ElementsAre(Pair("a", "1")));

  ASSERT_TRUE(ExecForTest(backend.get(), "PRAGMA query_only=0").ok());
  ASSERT_TRUE(backend->Apply(batch).ok());
  EXPECT_THAT(ScanAll(*backend, ""), ElementsAre(Pair("a", "2"), Pair("b", "2")));
}

TEST_F(SqliteBackendTest, FileThatIsNotADatabaseIsDataLossAndLeftAlone) {
  std::string garbage;
  while (garbage.size() < 8192) garbage += "this is not a database\n";
  { std::ofstream(path_, std::ios::binary) << garbage; }
  auto opened = Open();
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss) << opened.status();
  EXPECT_THAT(opened.status().message(), HasSubstr("'" + path_ + "'"));

  std::ifstream in(path_, std::ios::binary);
  std::string after((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(after, garbage);
}

TEST_F(SqliteBackendTest, CorruptPageIsDataLoss) {
  {
    auto backend = MustOpen();
    ASSERT_NE(backend, nullptr);
    WriteBatch batch;
    for (uint64_t i = 0; i < 2000; ++i) batch.Put("k/" + BigEndian(i), std::string(100, 'v'));
    ASSERT_TRUE(backend->Apply(batch).ok());
  }
  // Closing checkpoints the WAL into the file; scribble over the header of a
  // b-tree page in the middle of it.
  const auto size = std::filesystem::file_size(path_);
  ASSERT_GT(size, 16u * 4096);
  {
    std::fstream f(path_, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(8 * 4096);
    f << std::string(64, '\xff');
  }
  auto opened = Open();
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss) << opened.status();
  EXPECT_THAT(opened.status().message(), HasSubstr("'" + path_ + "'"));
}

TEST_F(SqliteBackendTest, PathInAMissingDirectoryIsUnavailable) {
  const std::string path = dir_.File("missing/registry.db");
  auto opened = OpenSqliteBackend({.path = path});
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kUnavailable) << opened.status();
  EXPECT_THAT(opened.status().message(), HasSubstr("'" + path + "'"));
}

TEST_F(SqliteBackendTest, NewerSchemaVersionIsFailedPrecondition) {
  {
    auto backend = MustOpen();
    ASSERT_NE(backend, nullptr);
    ASSERT_TRUE(ExecForTest(backend.get(), "PRAGMA user_version=99").ok());
  }
  auto opened = Open();
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition) << opened.status();
  EXPECT_THAT(opened.status().message(), HasSubstr("'" + path_ + "'"));
  EXPECT_THAT(opened.status().message(), HasSubstr("schema version 99"));
}

TEST_F(SqliteBackendTest, ExecForTestRefusesOtherBackends) {
  MemoryBackend memory;
  EXPECT_EQ(ExecForTest(&memory, "PRAGMA page_count").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Background sync (group commit): Apply returns before the fsync; the sync
// thread makes every Apply that returned during one fdatasync durable with
// the next one.
TEST_F(SqliteBackendTest, BackgroundSyncGroupsTheAppliesThatArriveDuringOneFdatasync) {
  SyncGate gate;
  std::atomic<int> heard{0};
  auto opened =
      OpenSqliteBackend({.path = path_, .background_sync = true, .fdatasync_for_test = [&](int fd) {
                           return gate.Sync(fd);
                         }});
  ASSERT_TRUE(opened.ok()) << opened.status();
  MetadataBackend& b = **opened;
  b.SetSyncListener([&] { heard.fetch_add(1); });
  EXPECT_EQ(b.sync_progress().written, 0u);

  gate.Shut();
  ASSERT_TRUE(PutAll(b, {{"first", "1"}}).ok());
  gate.AwaitEntered(1);  // the sync of "first" is under way, and held
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(PutAll(b, {{"k" + std::to_string(i), "v"}}).ok());
  }
  // Written, readable, not yet durable.
  SyncProgress p = b.sync_progress();
  EXPECT_EQ(p.written, 11u);
  EXPECT_EQ(p.durable, 0u);
  EXPECT_EQ(p.syncs, 0u);
  EXPECT_EQ(GetValue(b, "k9"), "v");

  gate.Open();
  ASSERT_TRUE(b.WaitDurable().ok());
  p = b.sync_progress();
  EXPECT_EQ(p.durable, 11u);
  // One fdatasync for "first", one for the ten that came while it ran.
  EXPECT_EQ(p.syncs, 2u);
  EXPECT_EQ(gate.entered(), 2);
  // The listener hears each sync, just after WaitDurable may have returned.
  for (int i = 0; i < 5000 && heard.load() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(heard.load(), 2);
  EXPECT_TRUE(p.failed.ok());
}

TEST_F(SqliteBackendTest, AFailedBackgroundSyncIsFinalAndLaterWritesAreRefused) {
  SyncGate gate;
  gate.FailFromNowOn();
  auto opened =
      OpenSqliteBackend({.path = path_, .background_sync = true, .fdatasync_for_test = [&](int fd) {
                           return gate.Sync(fd);
                         }});
  ASSERT_TRUE(opened.ok()) << opened.status();
  MetadataBackend& b = **opened;
  ASSERT_TRUE(PutAll(b, {{"a", "1"}}).ok());
  absl::Status s = b.WaitDurable();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("fdatasync of '" + path_ + "-wal' failed"));
  SyncProgress p = b.sync_progress();
  EXPECT_EQ(p.written, 1u);
  EXPECT_EQ(p.durable, 0u);
  EXPECT_FALSE(p.failed.ok());

  s = PutAll(b, {{"b", "2"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("refuses writes since a sync failed"));
  EXPECT_EQ(GetValue(b, "b"), std::nullopt);  // the refused write left nothing
  EXPECT_EQ(b.sync_progress().written, 1u);
}

TEST_F(SqliteBackendTest, BackgroundSyncCheckpointsTheWalOffTheWritersPath) {
  {
    auto opened = OpenSqliteBackend(
        {.path = path_, .background_sync = true, .checkpoint_wal_bytes = 64 * 1024});
    ASSERT_TRUE(opened.ok()) << opened.status();
    MetadataBackend& b = **opened;
    // As ten sessions that each wait for their write to be durable before
    // the next: groups of ten Applies, writing while the sync thread
    // checkpoints. Each row (2 KB, an overflow page) adds about three 4 KiB
    // frames: 4.8 MB of WAL in all without checkpoints.
    for (uint64_t i = 0; i < 400; ++i) {
      WriteBatch batch;
      batch.Put("k/" + BigEndian(i), std::string(2000, 'v'));
      ASSERT_TRUE(b.Apply(batch).ok());
      if (i % 10 == 9) ASSERT_TRUE(b.WaitDurable().ok());
    }
    EXPECT_GE(b.sync_progress().checkpoints, 1u);
    // The WAL file keeps its largest size; checkpoints (and the RESTART one
    // at four times the threshold) keep it to a few groups.
    EXPECT_LT(std::filesystem::file_size(path_ + "-wal"), 1u << 20);
    // Another opener is refused, as without background sync.
    auto second = OpenSqliteBackend({.path = path_, .background_sync = true});
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
    EXPECT_THAT(second.status().message(), HasSubstr("in use by another process"));
  }
  auto reopened = MustOpen();
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(ScanAll(*reopened, "k/").size(), 400u);
}

TEST_F(SqliteBackendTest, AWriteNotYetSyncedSurvivesAKillOfTheProcess) {
  // The child writes with its sync held back forever, then dies by SIGKILL:
  // the WAL frames are in the page cache, which a process crash keeps.
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto opened =
        OpenSqliteBackend({.path = path_, .background_sync = true, .fdatasync_for_test = [](int) {
                             ::pause();
                             return 0;
                           }});
    if (!opened.ok()) ::_exit(3);
    WriteBatch batch;
    batch.Put("written", "before the kill");
    if (!(*opened)->Apply(batch).ok()) ::_exit(4);
    if ((*opened)->sync_progress().durable != 0) ::_exit(5);
    ::kill(::getpid(), SIGKILL);
    ::_exit(6);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  ASSERT_EQ(WTERMSIG(status), SIGKILL);
  auto reopened = MustOpen();
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(GetValue(*reopened, "written"), "before the kill");
}

}  // namespace
}  // namespace cistern::registry

// cisternd as a process: many client processes, clients and the daemon killed
// with SIGKILL, clean shutdown, restart recovery, corrupt and busy arenas.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "include/cistern/client.h"
#include "src/store/layout.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {
namespace {

using ::testing::HasSubstr;

// A cistern_test_client process with its stdout on a pipe.
ChildProcess TestClient(std::vector<std::string> args) {
  args.insert(args.begin(), BinaryPath("tests/integration/cistern_test_client"));
  return ChildProcess::Spawn(std::move(args));
}

TEST(DaemonTest, ManyClientProcessesPutAndGetConcurrentlyWithVerifiedContents) {
  Daemon d(DaemonSpec{256 << 20});
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  std::vector<ChildProcess> kids;
  for (int i = 0; i < 6; ++i) {
    kids.push_back(TestClient({"putget", d.socket_path(), std::to_string(i), "150"}));
  }
  for (auto& k : kids) EXPECT_EQ(k.Wait(), 0);
  auto c = d.Connect();
  ASSERT_TRUE(c.ok());
  auto stats = (*c)->Stats();
  EXPECT_EQ(stats->leases(), 0u);
  EXPECT_EQ(stats->pending_writes(), 0u);
  EXPECT_EQ(stats->objects(), 6u * 100);  // every third key was removed
}

TEST(DaemonTest, KilledClientsReleaseLeasesAndAbortWrites) {
  Daemon d;
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  auto c = d.Connect();
  ASSERT_TRUE(c.ok());
  uint64_t baseline = (*c)->Stats()->tiers(0).used_bytes();
  ASSERT_TRUE((*c)->Put("shared", std::string(1 << 20, 's')).ok());
  std::vector<ChildProcess> holders;
  for (int i = 0; i < 3; ++i) {
    holders.push_back(TestClient({"hold", d.socket_path(), "shared", "4"}));
    ASSERT_EQ(holders.back().ReadLine(), "ready");
  }
  ASSERT_TRUE((*c)->Remove("shared").ok());  // freed only when the holders are gone
  auto before = (*c)->Stats();
  EXPECT_EQ(before->leases(), 3u);
  EXPECT_EQ(before->pending_writes(), 12u);
  EXPECT_GT(before->tiers(0).used_bytes(), baseline);
  for (auto& h : holders) ::kill(h.pid(), SIGKILL);
  for (auto& h : holders) h.Wait();
  // (Less the write space this session now holds reserved for its next put.)
  EXPECT_TRUE(Eventually([&] {
    auto s = (*c)->Stats();
    return s.ok() && s->tiers(0).used_bytes() - s->reserved_bytes() == baseline &&
           s->leases() == 0 && s->pending_writes() == 0 && s->sessions() == 1;
  })) << "memory did not return to baseline";
}

// The local fast path under stress (issue 13), with the real daemon: reader
// processes take leases in shared memory while this process overwrites and
// removes their keys, and readers are killed at random and replaced. Each
// value carries its version; no reader ever sees bytes other than those of
// the version it took (a reader that does exits 1), and once the readers are
// gone the arena is back to its baseline.
TEST(DaemonTest, FastPathReadersKilledAtRandomNeverSeeAnotherVersionsBytes) {
  Daemon d(DaemonSpec{64 << 20});
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  auto c = d.Connect();
  ASSERT_TRUE(c.ok());
  const uint64_t baseline = (*c)->Stats()->tiers(0).used_bytes();
  constexpr int kKeys = 16, kReaders = 6;
  std::mt19937_64 rng(3);
  std::vector<std::byte> buf;
  uint64_t version = 0;
  auto put = [&](int k) {
    std::string key = "f" + std::to_string(k);
    buf.resize(4096 + rng() % 60000);
    ++version;
    std::memcpy(buf.data(), &version, 8);
    FillForKey(key + "#" + std::to_string(version), buf.data() + 8, buf.size() - 8);
    return (*c)->Put(key, buf).status();
  };
  for (int k = 0; k < kKeys; ++k) ASSERT_TRUE(put(k).ok());
  auto spawn = [&] {
    ChildProcess p = TestClient({"fastread", d.socket_path(), std::to_string(kKeys)});
    EXPECT_EQ(p.ReadLine(), "ready");
    return p;
  };
  std::vector<ChildProcess> readers;
  for (int i = 0; i < kReaders; ++i) readers.push_back(spawn());
  int kills = 0;
  uint64_t ops = 0, most_fast = 0;
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (std::chrono::steady_clock::now() < end || kills < 8) {
    int k = rng() % kKeys;
    if (rng() % 8 == 0) {
      (void)(*c)->Remove("f" + std::to_string(k));
    } else {
      ASSERT_TRUE(put(k).ok());
    }
    if (++ops % 150 == 0) {
      ChildProcess& r = readers[rng() % kReaders];
      ::kill(r.pid(), SIGKILL);
      ASSERT_EQ(r.Wait(), 128 + SIGKILL) << "a reader saw bytes of another version";
      r = spawn();
      ++kills;
      auto s = (*c)->Stats();
      if (s.ok()) most_fast = std::max<uint64_t>(most_fast, s->fast_leases());
    }
  }
  for (auto& r : readers) {
    ::kill(r.pid(), SIGKILL);
    EXPECT_EQ(r.Wait(), 128 + SIGKILL) << "a reader saw bytes of another version";
  }
  EXPECT_GT(most_fast, 0u) << "the readers did not take the fast path";
  for (int k = 0; k < kKeys; ++k) (void)(*c)->Remove("f" + std::to_string(k));
  EXPECT_TRUE(Eventually([&] {
    auto s = (*c)->Stats();
    return s.ok() && s->tiers(0).used_bytes() == baseline && s->leases() == 0;
  })) << "memory did not return to baseline";
}

// Cold puts (issue 13): the daemon allocates each arena on a background
// thread at start unless its tier says prefault: false, and puts go on
// meanwhile with their bytes intact.
// A test process that aborts takes its daemons with it: before, each one
// stayed running (holding its arena) after the test binary died.
TEST(DaemonTest, ADaemonDiesWithTheTestProcessThatStartedIt) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t test = ::fork();
  ASSERT_GE(test, 0);
  if (test == 0) {  // the "test process": starts a daemon, reports it, dies
    ::close(fds[0]);
    Daemon d;
    if (!d.Start()) std::_Exit(1);
    std::string line = fmt::format("{} {} {}\n", d.pid(), d.dir(), d.arena_path());
    (void)!::write(fds[1], line.data(), line.size());
    std::abort();  // no destructor runs
  }
  ::close(fds[1]);
  std::string line(4096, '\0');
  ssize_t n = ::read(fds[0], line.data(), line.size());
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(test, &status, 0), test);
  ASSERT_GT(n, 0) << "the child could not start a daemon";
  line.resize(n);
  pid_t daemon = 0;
  char dir[1024] = {}, arena[1024] = {};
  ASSERT_EQ(std::sscanf(line.c_str(), "%d %1023s %1023s", &daemon, dir, arena), 3);
  auto dead = [&] {  // gone, or a zombie waiting for init to reap it
    std::string stat = ReadFile(fmt::format("/proc/{}/stat", daemon));
    if (stat.empty()) return true;
    size_t paren = stat.rfind(')');
    return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!dead() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  bool was_dead = dead();
  if (!was_dead) ::kill(daemon, SIGKILL);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  RemoveArena(arena);
  EXPECT_TRUE(was_dead) << "cisternd " << daemon << " outlived the process that started it";
}

TEST(DaemonTest, TheArenaIsPrefaultedAtStartUnlessItsTierSaysNot) {
  auto allocated = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
  };
  std::vector<std::byte> value(8 << 20);
  FillForKey("cold", value.data(), value.size());
  for (bool prefault : {true, false}) {
    SCOPED_TRACE(prefault ? "prefault: true (the default)" : "prefault: false");
    Daemon d(DaemonSpec{64 << 20});
    std::string err;
    std::vector<std::string> args;
    if (!prefault) args = {"--set", "tiers.0.prefault=false"};
    ASSERT_TRUE(d.Start(args, &err)) << err;
    auto c = d.Connect();
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE((*c)->Put("cold", value).ok());  // whether or not the walk is done
    if (prefault) {
      EXPECT_TRUE(Eventually([&] {
        return d.Log().find("64 MiB pre-faulted") != std::string::npos;
      })) << d.Log();
      EXPECT_GE(allocated(d.arena_path()), uint64_t{64} << 20);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      EXPECT_THAT(d.Log(), ::testing::Not(::testing::HasSubstr("pre-faulted")));
      EXPECT_LT(allocated(d.arena_path()), uint64_t{32} << 20);
    }
    auto got = (*c)->Get("cold");
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), value.size());
    EXPECT_EQ(std::memcmp(got->data(), value.data(), value.size()), 0);
  }
}

TEST(DaemonTest, Kill9UnderLoadLosesNothingSealedAndShowsNothingHalfWritten) {
  Daemon d(DaemonSpec{256 << 20});
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  std::vector<ChildProcess> writers;
  for (int i = 0; i < 3; ++i) {
    writers.push_back(TestClient({"writer", d.socket_path(), std::to_string(i)}));
  }
  // Let them seal a good number of objects, then kill the daemon mid-stream.
  std::map<std::string, uint64_t> sealed;
  for (int n = 0; n < 300; ++n) {
    std::istringstream line(writers[n % 3].ReadLine());
    std::string key;
    uint64_t gen;
    if (line >> key >> gen) sealed[key] = gen;
  }
  d.Kill(SIGKILL);
  EXPECT_EQ(d.Wait(), 128 + SIGKILL);
  for (auto& w : writers) {
    for (std::string l = w.ReadLine(); !l.empty(); l = w.ReadLine()) {
      std::istringstream line(l);
      std::string key;
      uint64_t gen;
      if (line >> key >> gen) sealed[key] = gen;
    }
    EXPECT_EQ(w.Wait(), 0);
  }
  ASSERT_TRUE(d.Start({}, &err)) << err;
  auto c = d.Connect();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->Stats()->pending_writes(), 0u);
  // Every object a writer saw sealed (and did not remove) is back, intact.
  int checked = 0;
  for (auto& [key, gen] : sealed) {
    auto v = (*c)->Get(key, gen);
    ASSERT_TRUE(v.ok()) << key << " generation " << gen << ": " << v.status();
    EXPECT_TRUE(MatchesKey(key, v->data(), v->size())) << key;
    ++checked;
  }
  EXPECT_GE(checked, 300);
  // Everything visible is whole.
  std::string cursor;
  do {
    auto page = (*c)->List("", 500, cursor);
    ASSERT_TRUE(page.ok());
    for (auto& o : page->objects()) {
      auto v = (*c)->Get(o.key());
      ASSERT_TRUE(v.ok());
      EXPECT_TRUE(MatchesKey(o.key(), v->data(), v->size())) << o.key();
    }
    cursor = page->next_cursor();
  } while (!cursor.empty());
  EXPECT_THAT(d.Log(), HasSubstr("recovery:"));
}

TEST(DaemonTest, SigtermDrainsAndExitsZeroAndDataSurvivesRestart) {
  Daemon d;
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  {
    auto c = d.Connect();
    ASSERT_TRUE(c.ok());
    auto ref = (*c)->Put("kept", "across restarts");
    ASSERT_TRUE(ref.ok());
    auto pending = (*c)->Create("never-sealed", 1000);
    ASSERT_TRUE(pending.ok());
    d.Kill(SIGTERM);
    EXPECT_EQ(d.Wait(), 0);
    EXPECT_NE(::access(d.socket_path().c_str(), F_OK), 0) << "socket left behind";
  }
  ASSERT_TRUE(d.Start({}, &err)) << err;
  auto c = d.Connect();
  auto v = (*c)->Get("kept");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(v->data()), v->size()), "across restarts");
  EXPECT_EQ((*c)->Get("never-sealed").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(d.Log(), HasSubstr("stopped cleanly"));
}

TEST(DaemonTest, WithPolicyFailACorruptArenaIsRefusedUntilFormatted) {
  Daemon d({.extra_yaml = "recovery:\n  on_corrupt_object: fail\n"});
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  {
    auto c = d.Connect();
    ASSERT_TRUE((*c)->Put("precious", std::string(10000, 'p')).ok());
  }
  d.Kill(SIGTERM);
  ASSERT_EQ(d.Wait(), 0);
  ASSERT_TRUE(FlipPayloadByte(d.arena_path(), 'p'));
  EXPECT_EQ(d.RunToExit(), 1);
  EXPECT_THAT(d.Log(), HasSubstr("'precious'"));
  EXPECT_THAT(d.Log(), HasSubstr("payload checksum mismatch"));
  ASSERT_TRUE(d.Start({"--format"}, &err)) << err;
  auto c = d.Connect();
  EXPECT_EQ((*c)->Get("precious").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*c)->Stats()->tiers(0).used_bytes(), 0u);
}

// One stray write into one object made the default recovery policy refuse
// to start, so every object on the host became unavailable (issue 9, item 3).
TEST(DaemonTest, ByDefaultACorruptObjectIsQuarantinedAndEveryOtherServed) {
  Daemon d;
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  {
    auto c = d.Connect();
    ASSERT_TRUE((*c)->Put("precious", std::string(10000, 'p')).ok());
    ASSERT_TRUE((*c)->Put("other", std::string(10000, 'o')).ok());
  }
  d.Kill(SIGTERM);
  ASSERT_EQ(d.Wait(), 0);
  ASSERT_TRUE(FlipPayloadByte(d.arena_path(), 'p'));
  ASSERT_TRUE(d.Start({}, &err)) << err;
  EXPECT_THAT(d.Log(), HasSubstr("quarantined corrupt object 'precious'"));
  auto c = d.Connect();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->Get("precious").status().code(), absl::StatusCode::kNotFound);
  auto other = (*c)->Get("other");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(other->data()), other->size()),
            std::string(10000, 'o'));
  auto q = (*c)->Quarantined();
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 1u);
  EXPECT_EQ((*q)[0].key(), "precious");
  EXPECT_THAT((*q)[0].reason(), HasSubstr("payload checksum mismatch"));
  uint64_t used = (*c)->Stats()->tiers(0).used_bytes();
  EXPECT_EQ((*c)->RemoveQuarantined((*q)[0].tier(), (*q)[0].block_offset() + 64).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE((*c)->RemoveQuarantined((*q)[0].tier(), (*q)[0].block_offset()).ok());
  EXPECT_LT((*c)->Stats()->tiers(0).used_bytes(), used);
  EXPECT_TRUE((*c)->Quarantined()->empty());
}

TEST(DaemonTest, SecondDaemonOnTheSameArenaOrSocketIsRefused) {
  Daemon d;
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  // Same config file as the first: the socket is taken.
  pid_t pid = ::fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 2);
    std::string bin = BinaryPath("src/daemon/cisternd");
    ::execl(bin.c_str(), bin.c_str(), "--config", d.config_path().c_str(), nullptr);
    std::_Exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  auto c = d.Connect();
  EXPECT_TRUE(c.ok()) << "the first daemon must keep serving";
}

TEST(DaemonTest, BadConfigExitsTwoNamingTheKey) {
  Daemon d(DaemonSpec{64 << 20, "bogus_key: 1\n"});
  EXPECT_EQ(d.RunToExit(), 2);
  EXPECT_THAT(d.Log(), HasSubstr("bogus_key"));
}

}  // namespace
}  // namespace cistern::testing

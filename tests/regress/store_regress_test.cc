// Regressions of the store found by a hostile test (issue 9, items 2 and 3):
// views held across a daemon restart, and a writer's buffer used after seal.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "include/cistern/client.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {
namespace {

using ::testing::HasSubstr;

// Whether `n` bytes at `p` are all `c` (compared without printing megabytes).
bool AllOf(const void* p, size_t n, char c) {
  const char* b = static_cast<const char*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != c) return false;
  }
  return true;
}

class LeaseSurvivalTest : public ::testing::TestWithParam<int> {
 protected:
  // Stops the daemon with the signal under test and starts it again.
  void Restart() {
    daemon_.Kill(GetParam());
    daemon_.Wait();
    std::string err;
    ASSERT_TRUE(daemon_.Start({}, &err)) << err;
  }
  Daemon daemon_{DaemonSpec{8 << 20}};
};

// A view held across a kill -9 (or a restart) of the daemon read another
// key's bytes: its lease died with the daemon, and the restarted daemon gave
// the block to the next put.
TEST_P(LeaseSurvivalTest, AViewHeldAcrossADaemonRestartKeepsItsBytes) {
  std::string err;
  ASSERT_TRUE(daemon_.Start({}, &err)) << err;
  auto holder = daemon_.Connect();
  ASSERT_TRUE(holder.ok()) << holder.status();
  const std::string original(1 << 20, 'k');
  ASSERT_TRUE((*holder)->Put("k", original).ok());
  auto view = (*holder)->Get("k");
  ASSERT_TRUE(view.ok());
  Restart();
  // Another process re-puts the key and fills the tier with other keys.
  {
    auto other = daemon_.Connect();
    ASSERT_TRUE(other.ok());
    ASSERT_TRUE((*other)->Put("k", std::string(1 << 20, 'n')).ok());
    for (int i = 0;; ++i) {
      auto r = (*other)->Put(fmt::format("other{}", i), std::string(256 << 10, 'o'));
      if (!r.ok()) {
        ASSERT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
        break;
      }
    }
    EXPECT_TRUE(AllOf(view->data(), original.size(), 'k')) << "the view's bytes changed";
    EXPECT_EQ((*other)->Stats()->deferred_frees(), 1u);  // the old generation waits for the view
  }
  // The holder's client reconnects on its own and gets its lease back.
  auto now = (*holder)->Get("k");
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_TRUE(AllOf(now->data(), now->size(), 'n'));
  auto st = (*holder)->Status();
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->sessions().size(), 1u);
  EXPECT_EQ(st->sessions(0).leases(), 2u);  // the adopted one and the new one
  ASSERT_TRUE(view->Release().ok());
  *now = ObjectView();
  EXPECT_TRUE(Eventually([&] {
    auto s = (*holder)->Stats();
    return s.ok() && s->leases() == 0 && s->deferred_frees() == 0;
  }));
}

// A client whose holder died while the daemon was down must not pin blocks.
TEST_P(LeaseSurvivalTest, LeasesOfAHolderThatDiedMeanwhileAreFreed) {
  std::string err;
  ASSERT_TRUE(daemon_.Start({}, &err)) << err;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    auto c = daemon_.Connect();
    if (!c.ok() || !(*c)->Put("gone", std::string(1 << 20, 'g')).ok()) _exit(1);
    auto v = (*c)->Get("gone");
    if (!v.ok() || !(*c)->Remove("gone").ok()) _exit(1);
    (void)!::write(ready[1], "x", 1);
    ::pause();
    _exit(0);
  }
  char byte;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  daemon_.Kill(GetParam());
  daemon_.Wait();
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(daemon_.Start({}, &err)) << err;
  auto c = daemon_.Connect();
  auto stats = (*c)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->leases(), 0u);
  EXPECT_EQ(stats->tiers(0).used_bytes(), 0u);
  ::close(ready[0]);
  ::close(ready[1]);
}

// The same holder alive across the restart, exiting later without
// reconnecting: its leases end when it exits.
TEST_P(LeaseSurvivalTest, LeasesKeptForAHolderEndWhenItExits) {
  std::string err;
  ASSERT_TRUE(daemon_.Start({}, &err)) << err;
  int ready[2], go[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(go), 0);
  pid_t child = ::fork();
  if (child == 0) {
    auto c = daemon_.Connect();
    if (!c.ok() || !(*c)->Put("held", std::string(1 << 20, 'h')).ok()) _exit(1);
    auto v = (*c)->Get("held");
    if (!v.ok() || !(*c)->Remove("held").ok()) _exit(1);
    (void)!::write(ready[1], "x", 1);
    char b;
    (void)!::read(go[0], &b, 1);
    _exit(0);  // without releasing: the daemon must notice the exit
  }
  char byte;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  Restart();
  auto c = daemon_.Connect();
  EXPECT_EQ((*c)->Stats()->deferred_frees(), 1u);
  EXPECT_THAT(daemon_.Log(), HasSubstr("outlived the previous daemon"));
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(Eventually([&] {
    auto s = (*c)->Stats();
    return s.ok() && s->leases() == 0 && s->deferred_frees() == 0 && s->tiers(0).used_bytes() == 0;
  }));
  for (int fd : {ready[0], ready[1], go[0], go[1]}) ::close(fd);
}

INSTANTIATE_TEST_SUITE_P(KillAndStop, LeaseSurvivalTest, ::testing::Values(SIGKILL, SIGTERM),
                         [](const auto& info) {
                           return std::string(info.param == SIGKILL ? "Kill9" : "Sigterm");
                         });

// A Writer's buffer stayed writable after the seal: a stray write changed the
// sealed object under every reader, and the next restart refused to start on
// the checksum mismatch.
TEST(WriterRegressTest, AWriteThroughTheBufferAfterSealNeverReachesTheObject) {
  Daemon d;
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  auto c = d.Connect();
  ASSERT_TRUE(c.ok());
  auto w = (*c)->Create("w", 10000);
  ASSERT_TRUE(w.ok());
  std::byte* kept = w->data();
  std::memset(kept, 'a', 10000);
  ASSERT_TRUE(w->Seal().ok());
  std::memset(kept, 'X', 10000);  // the stray write
  auto v = (*c)->Get("w");
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(AllOf(v->data(), v->size(), 'a')) << "the stray write reached the object";
  // An aborted writer's pages are let go the same way.
  auto a = (*c)->Create("aborted", 5000);
  ASSERT_TRUE(a.ok());
  std::byte* kept2 = a->data();
  ASSERT_TRUE(a->Abort().ok());
  ASSERT_TRUE((*c)->Put("next", std::string(5000, 'n')).ok());
  std::memset(kept2, 'X', 5000);
  auto next = (*c)->Get("next");
  EXPECT_TRUE(AllOf(next->data(), next->size(), 'n')) << "the stray write reached another object";
  *v = ObjectView();
  *next = ObjectView();
  d.Kill(SIGKILL);
  d.Wait();
  ASSERT_TRUE(d.Start({}, &err)) << err;
  EXPECT_THAT(d.Log(), ::testing::Not(HasSubstr("quarantined corrupt object")));
  auto again = d.Connect();
  auto got = (*again)->Get("w");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(AllOf(got->data(), got->size(), 'a'));
}

// With one corrupt object the daemon refused to start at all; now it is
// quarantined, and the operator lists and frees it with the CLI.
TEST(QuarantineRegressTest, TheCliListsAndFreesQuarantinedObjects) {
  Daemon d;
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  {
    auto c = d.Connect();
    ASSERT_TRUE((*c)->Put("bad", std::string(4096, 'b')).ok());
    ASSERT_TRUE((*c)->Put("good", std::string(4096, 'g')).ok());
  }
  d.Kill(SIGTERM);
  d.Wait();
  ASSERT_TRUE(FlipPayloadByte(d.arena_path(), 'b'));
  ASSERT_TRUE(d.Start({}, &err)) << err;
  std::string addr = "--address " + d.socket_path() + " ";
  CliResult ls = RunCli(addr + "quarantine ls --json");
  ASSERT_EQ(ls.code, 0) << ls.out;
  auto j = nlohmann::json::parse(ls.out);
  ASSERT_EQ(j.size(), 1u) << ls.out;
  EXPECT_EQ(j[0]["key"], "bad");
  EXPECT_THAT(j[0]["reason"].get<std::string>(), HasSubstr("payload checksum"));
  std::string id = j[0]["id"];
  EXPECT_EQ(RunCli(addr + "get good -o /dev/null").code, 0);
  EXPECT_EQ(RunCli(addr + "get bad -o /dev/null").code, 1);
  EXPECT_EQ(RunCli(addr + "quarantine rm").code, 2);           // neither ids nor --all
  EXPECT_EQ(RunCli(addr + "quarantine rm nonsense").code, 2);  // not TIER:OFFSET
  EXPECT_EQ(RunCli(addr + "quarantine rm mem:1").code, 1);     // nothing there
  EXPECT_EQ(RunCli(addr + "quarantine ls --json").out.find("\"bad\"") != std::string::npos, true);
  CliResult rm = RunCli(addr + "quarantine rm " + id);
  EXPECT_EQ(rm.code, 0) << rm.out;
  EXPECT_THAT(RunCli(addr + "quarantine ls").out, HasSubstr("nothing is quarantined"));
}

}  // namespace
}  // namespace cistern::testing

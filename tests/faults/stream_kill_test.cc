// A seeded fault run: stream_workload produces and consumes a stream while
// cisternd is killed (SIGKILL) at seeded points and restarted over the same
// state, and the driver itself is killed at others (a new one resumes from its
// journal, reconciling as a restarted consumer does). The invariants are
// checked from the journal (which holds only what the daemon confirmed) and
// from the daemon's figures at the end:
//
//   - every sample the journal says was committed ends durably acked; one
//     whose durable ack the daemon may have taken without the answer reaching
//     the driver (the ack in flight at a kill) may instead be gone unseen;
//   - no sample is delivered after its durable ack was confirmed, and no
//     acked sample is delivered again without a restart (of the daemon or
//     the consumer) in between;
//   - every delivery's bytes are the ones put (no torn or foreign object);
//   - at the end the stream is drained (depth, in_flight, awaiting_durable 0,
//     committed and acked = samples, nothing lost or dropped) and the store
//     is back at its baseline (no object, lease or pending write left), also
//     after one more kill and restart.
//
// Default: seeds 1..10, each with 5 daemon kills and 2 driver kills. Longer:
// CISTERN_FAULT_SEEDS=<n> runs n seeds, CISTERN_FAULT_SEED=<s> starts at seed
// s, CISTERN_FAULT_KILLS=<k> and CISTERN_FAULT_DRIVER_KILLS=<k> set the kills
// per seed. A failure names its seed and kill plan.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "fmt/format.h"
#include "fmt/ranges.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "include/cistern/client.h"
#include "include/cistern/stream.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {
namespace {

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

// What the journal says, and what it proves wrong.
struct Verdict {
  std::vector<std::string> violations;
  std::map<std::string, uint64_t> committed;  // id -> generation of its "new" commit
  std::set<std::string> released;             // durable ack confirmed
  std::set<std::string> maybe_released;       // durable ack in flight at a kill
  int restarts = 0, dups = 0, redeliveries = 0, acks = 0, orphans = 0;
};

std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> w;
  for (std::string s; in >> s;) w.push_back(s);
  return w;
}

Verdict Check(const std::string& journal, int samples, const std::string& stream) {
  Verdict v;
  auto bad = [&](int n, std::string what) {
    if (v.violations.size() < 20) v.violations.push_back(fmt::format("line {}: {}", n, what));
  };
  std::map<std::string, uint64_t> awaiting;  // acked, not yet covered by a durable marker
  struct Intent {
    uint64_t step;
    bool durable;
    std::vector<std::string> ids;
  };
  std::optional<Intent> intent;
  std::set<std::string> seen;
  std::istringstream in(journal);
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    auto w = Words(line);
    if (w.empty()) continue;
    const std::string& op = w[0];
    if (op == "C" && w.size() == 4) {
      if (w[3] == "dup") ++v.dups;
      if (w[3] == "new") {
        if (v.committed.contains(w[1])) bad(n, "sample " + w[1] + " committed as new twice");
        v.committed[w[1]] = std::stoull(w[2]);
      } else if (!v.committed.contains(w[1])) {
        v.committed[w[1]] = 0;  // committed by a try whose answer was lost
      }
    } else if (op == "L" && w.size() == 5) {
      const std::string& id = w[1];
      if (w[4].starts_with("BAD")) bad(n, "delivery of " + id + " read " + w[4]);
      if (v.released.contains(id)) {
        bad(n, "sample " + id + " delivered again after its durable ack was confirmed");
      }
      if (awaiting.contains(id)) {
        bad(n, "acked sample " + id + " delivered again without a restart");
      }
      auto c = v.committed.find(id);
      if (c != v.committed.end() && c->second != 0 && c->second != std::stoull(w[2])) {
        bad(n, fmt::format("sample {} delivered with generation {}, committed with {}", id, w[2],
                           c->second));
      }
      if (!seen.insert(id).second) ++v.redeliveries;
      v.maybe_released.erase(id);
    } else if (op == "a" && w.size() >= 3) {
      if (intent) bad(n, "an ack neither confirmed nor followed by a restart");
      intent = Intent{std::stoull(w[1]), w[2] == "1", {w.begin() + 3, w.end()}};
    } else if (op == "A" && w.size() >= 3) {
      ++v.acks;
      uint64_t step = std::stoull(w[1]);
      if (!intent || intent->step != step) bad(n, "ack confirmed without its intent");
      intent.reset();
      for (size_t i = 3; i < w.size(); ++i) awaiting[w[i]] = step;
      if (w[2] == "1") {
        for (auto it = awaiting.begin(); it != awaiting.end();) {
          if (it->second <= step) {
            v.released.insert(it->first);
            v.maybe_released.erase(it->first);
            it = awaiting.erase(it);
          } else {
            ++it;
          }
        }
      }
    } else if (op == "R") {
      ++v.restarts;
      // An ack whose answer was lost may have been written; if it carried the
      // durable marker, it released what it covered.
      if (intent && intent->durable) {
        for (const auto& [id, step] : awaiting) {
          if (step <= intent->step) v.maybe_released.insert(id);
        }
        for (const auto& id : intent->ids) v.maybe_released.insert(id);
      }
      intent.reset();
      awaiting.clear();  // requeued by the restart: they must come again
    } else if (op == "F") {
      // Requeued; delivered again later.
    } else if (op == "O" && w.size() == 3) {
      ++v.orphans;
    } else if (op == "E") {
      bad(n, "the workload reported: " + line.substr(2));
    } else {
      bad(n, "unreadable journal line '" + line + "'");
    }
  }
  if (intent) bad(n, "the journal ends with an unconfirmed ack");
  if (!awaiting.empty()) {
    bad(n, fmt::format("{} acked samples never covered by a durable marker", awaiting.size()));
  }
  for (int i = 0; i < samples; ++i) {
    std::string id = fmt::format("{}-{:05d}", stream, i);
    if (!v.committed.contains(id)) {
      bad(n, "sample " + id + " never confirmed committed");
    } else if (!v.released.contains(id) && !v.maybe_released.contains(id)) {
      bad(n, "committed sample " + id + " was neither durably acked nor delivered again");
    }
  }
  return v;
}

// stream_workload with its stdout (progress dots) on a pipe and its stderr
// in a file.
ChildProcess StartDriver(const Daemon& d, const std::string& stream, const std::string& journal,
                         uint64_t seed, int samples, const std::string& err_path, bool resume) {
  std::vector<std::string> args = {BinaryPath("tests/faults/stream_workload"),
                                   d.socket_path(),
                                   stream,
                                   journal,
                                   std::to_string(seed),
                                   std::to_string(samples)};
  if (resume) args.push_back("resume");
  return ChildProcess::Spawn(std::move(args), err_path);
}

// Reads progress until `ops` confirmed operations were seen in all; false at
// the driver's end of output.
bool ReadUntil(ChildProcess& driver, uint64_t ops, uint64_t* seen) {
  for (; *seen < ops; ++*seen) {
    if (driver.ReadByte() < 0) return false;
  }
  return true;
}

std::string Tail(const std::string& s, size_t n) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

struct Totals {
  int daemon_kills = 0;
  int driver_kills = 0;
};

void RunSeed(uint64_t seed, int daemon_kills, int driver_kills, Totals* totals) {
  std::mt19937_64 rng(seed);
  const int samples = 120 + static_cast<int>(rng() % 80);
  // Kill points: after a seeded number of confirmed operations (commits and
  // acks; there are at least `samples` of them), then a seeded few
  // microseconds more, so kills land inside operations too. Most kill the
  // daemon; some kill the driver, whose successor resumes from the journal.
  struct Kill {
    uint64_t after_ops;
    uint64_t then_us;
    bool driver;
  };
  std::vector<Kill> kills;
  for (int k = 0; k < daemon_kills + driver_kills; ++k) {
    kills.push_back({1 + rng() % samples, rng() % 3000, k >= daemon_kills});
  }
  std::sort(kills.begin(), kills.end(),
            [](const Kill& a, const Kill& b) { return a.after_ops < b.after_ops; });
  std::string plan;
  for (size_t k = 0; k < kills.size(); ++k) {
    if (k > 0) kills[k].after_ops = std::max(kills[k].after_ops, kills[k - 1].after_ops + 1);
    plan += fmt::format(" {}@{}+{}us", kills[k].driver ? "driver" : "daemon", kills[k].after_ops,
                        kills[k].then_us);
  }
  SCOPED_TRACE(
      fmt::format("seed {} ({} samples), kills:{}; rerun with CISTERN_FAULT_SEED={} "
                  "CISTERN_FAULT_SEEDS=1",
                  seed, samples, plan, seed));

  Daemon d;
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  const std::string stream = fmt::format("fault{}", seed);
  const std::string journal_path = d.dir() + "/journal";
  const std::string driver_err = d.dir() + "/driver.err";
  ChildProcess driver =
      StartDriver(d, stream, journal_path, seed, samples, driver_err, /*resume=*/false);
  auto diagnose = [&] {
    return fmt::format("driver stderr:\n{}\njournal tail:\n{}\ndaemon log tail:\n{}",
                       Tail(ReadFile(driver_err), 2000), Tail(ReadFile(journal_path), 2000),
                       Tail(d.Log(), 4000));
  };

  uint64_t ops = 0;
  for (size_t k = 0; k < kills.size(); ++k) {
    const Kill& kill = kills[k];
    SCOPED_TRACE(fmt::format("kill {} ({}) after op {}", k + 1, kill.driver ? "driver" : "daemon",
                             kill.after_ops));
    ASSERT_TRUE(ReadUntil(driver, kill.after_ops, &ops))
        << "the driver ended before the kill point\n"
        << diagnose();
    std::this_thread::sleep_for(std::chrono::microseconds(kill.then_us));
    if (kill.driver) {
      ::kill(driver.pid(), SIGKILL);
      ASSERT_EQ(driver.Wait(), 128 + SIGKILL) << diagnose();
      ++totals->driver_kills;
      driver = StartDriver(d, stream, journal_path, seed, samples, driver_err, /*resume=*/true);
    } else {
      d.Kill(SIGKILL);
      ASSERT_EQ(d.Wait(), 128 + SIGKILL);
      ++totals->daemon_kills;
      ASSERT_TRUE(d.Start({}, &err)) << err;
    }
  }
  ReadUntil(driver, UINT64_MAX, &ops);
  int code = driver.Wait();
  ASSERT_EQ(code, 0) << "stream_workload failed\n" << diagnose();

  Verdict v = Check(ReadFile(journal_path), samples, stream);
  EXPECT_THAT(v.violations, ::testing::IsEmpty()) << diagnose();

  // The daemon agrees, before and after one more kill.
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round == 0 ? "at the end" : "after a last kill and restart");
    if (round == 1) {
      ASSERT_TRUE(d.Restart(&err)) << err;
    }
    auto c = d.Connect();
    ASSERT_TRUE(c.ok()) << c.status();
    auto s = Stream::Open(c->get(), stream);
    ASSERT_TRUE(s.ok()) << s.status();
    auto info = s->Stat();
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->depth(), 0u);
    EXPECT_EQ(info->in_flight(), 0u);
    EXPECT_EQ(info->awaiting_durable(), 0u);
    EXPECT_EQ(info->resident_bytes(), 0u);
    EXPECT_EQ(info->committed(), static_cast<uint64_t>(samples));
    EXPECT_EQ(info->acked(), static_cast<uint64_t>(samples));
    EXPECT_EQ(info->lost(), 0u);
    EXPECT_EQ(info->dropped(), 0u);
    auto leased = s->Lease({.max_refs = 1000});
    ASSERT_TRUE(leased.ok());
    EXPECT_EQ(leased->size(), 0u) << "a durably acked sample came back";
    // A removed object's block that a client's fast lease named is freed on
    // the daemon's next tick (once a second, ObjectStore::ReclaimFastHeld),
    // not when the lease is let go: wait out a few ticks for those, no more.
    auto stats = (*c)->Stats();
    ASSERT_TRUE(stats.ok());
    for (int i = 0; i < 50 && stats->deferred_frees() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      stats = (*c)->Stats();
      ASSERT_TRUE(stats.ok());
    }
    EXPECT_EQ(stats->deferred_frees(), 0u) << "removed objects still waiting for a lease";
    EXPECT_EQ(stats->objects(), 0u) << "objects left behind";
    EXPECT_EQ(stats->leases(), 0u);
    EXPECT_EQ(stats->pending_writes(), 0u);
    EXPECT_EQ(stats->tiers(0).used_bytes(), 0u);
    if (stats->objects() != 0) {
      auto page = (*c)->List("", 20);
      for (const auto& o : page->objects()) {
        ADD_FAILURE() << "left: " << o.key() << " generation " << o.generation();
      }
    }
  }
  std::printf(
      "seed %llu: %d samples,%s; %d consumer restarts, %d acks, %d redeliveries, "
      "%d dup commits (%d objects put again removed), %zu maybe released\n",
      static_cast<unsigned long long>(seed), samples, plan.c_str(), v.restarts, v.acks,
      v.redeliveries, v.dups, v.orphans, v.maybe_released.size());
  std::fflush(stdout);
}

TEST(StreamKillTest, DaemonKilledAtSeededPointsLosesNothingCommittedAndReplaysNothingDurable) {
  const uint64_t first = EnvOr("CISTERN_FAULT_SEED", 1);
  const uint64_t seeds = EnvOr("CISTERN_FAULT_SEEDS", 10);
  const int daemon_kills = static_cast<int>(EnvOr("CISTERN_FAULT_KILLS", 5));
  const int driver_kills = static_cast<int>(EnvOr("CISTERN_FAULT_DRIVER_KILLS", 2));
  Totals totals;
  for (uint64_t seed = first; seed < first + seeds; ++seed) {
    RunSeed(seed, daemon_kills, driver_kills, &totals);
    if (HasFatalFailure()) break;
  }
  EXPECT_EQ(totals.daemon_kills, static_cast<int>(seeds) * daemon_kills);
  EXPECT_EQ(totals.driver_kills, static_cast<int>(seeds) * driver_kills);
  std::printf("%d daemon kills, %d driver kills\n", totals.daemon_kills, totals.driver_kills);
}

}  // namespace
}  // namespace cistern::testing

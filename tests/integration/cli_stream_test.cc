// `cistern stream ls|show|reconcile` against a real cisternd, and streams
// kept across `cistern daemon restart` through the per-host state dir.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "include/cistern/client.h"
#include "include/cistern/stream.h"
#include "tests/integration/cli_home.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

std::string TempDir(const char* prefix) {
  std::string tmpl = fmt::format("/tmp/{}-XXXXXX", prefix);
  return ::mkdtemp(tmpl.data());
}

Json ParseJson(const CliResult& r) {
  Json j = Json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

// The whitespace-separated words of the first line of `text` that starts with `first`.
std::vector<std::string> RowOf(const std::string& text, const std::string& first) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::vector<std::string> row;
    for (std::string w; words >> w;) row.push_back(w);
    if (!row.empty() && row[0] == first) return row;
  }
  return {};
}

class StreamCliTest : public ::testing::Test {
 protected:
  StreamCliTest()
      : state_dir_(TempDir("cistern-streamcli-state")),
        daemon_(DaemonSpec{.extra_yaml = "state_dir: " + state_dir_ + "\n"}) {}
  ~StreamCliTest() override {
    std::error_code ec;
    fs::remove_all(state_dir_, ec);
  }
  void SetUp() override {
    std::string err;
    ASSERT_TRUE(daemon_.Start({}, &err)) << err;
    auto c = daemon_.Connect();
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }
  CliResult Run(const std::string& args) {
    return RunCli("--address " + daemon_.socket_path() + " " + args);
  }
  // A committed ref per id, each naming an object of `size` bytes.
  std::vector<SampleRef> Refs(const std::vector<std::string>& ids, size_t size = 1000) {
    std::vector<SampleRef> refs;
    for (const std::string& id : ids) {
      auto put = client_->Put("obj/" + id, std::string(size, 'x'));
      EXPECT_TRUE(put.ok()) << put.status();
      if (!put.ok()) continue;
      SampleRef r;
      r.sample_id = id;
      r.key = put->key;
      r.generation = put->generation;
      refs.push_back(r);
    }
    return refs;
  }
  std::vector<std::string> StreamNames() {
    std::vector<std::string> names;
    auto all = Stream::List(client_.get());
    EXPECT_TRUE(all.ok()) << all.status();
    if (all.ok()) {
      for (const auto& s : *all) names.push_back(s.name());
    }
    return names;
  }

  std::string state_dir_;
  Daemon daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(StreamCliTest, LsAndShowReportEveryFieldOfTheStream) {
  auto s = Stream::Open(client_.get(), "rollouts");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->Commit(Refs({"a", "b", "c"})).ok());
  auto first = s->Lease({.max_refs = 1});
  ASSERT_TRUE(first.ok() && first->size() == 1u);
  ASSERT_TRUE(s->Ack(*first, /*global_step=*/5).ok());  // acked, not durable: kept
  auto second = s->Lease({.max_refs = 1});
  ASSERT_TRUE(second.ok() && second->size() == 1u);
  StreamOptions off;
  off.high_watermark_bytes = 0;
  ASSERT_TRUE(Stream::Open(client_.get(), "empty.q", off).ok());
  auto info = s->Stat();
  ASSERT_TRUE(info.ok()) << info.status();

  CliResult ls = Run("stream ls");
  ASSERT_EQ(ls.code, 0) << ls.out;
  EXPECT_THAT(ls.out, ContainsRegex("stream +depth +in flight +awaiting durable +resident "
                                    "+committed +acked +paused"));
  // name, depth, in flight, awaiting durable, resident (2 words), committed, acked, paused
  EXPECT_THAT(RowOf(ls.out, "rollouts"),
              ::testing::ElementsAre("rollouts", "1", "1", "1", "2.9", "KiB", "3", "0", "no"))
      << ls.out;
  EXPECT_THAT(RowOf(ls.out, "empty.q"),
              ::testing::ElementsAre("empty.q", "0", "0", "0", "0", "B", "0", "0", "no"))
      << ls.out;

  CliResult show = Run("stream show rollouts");
  ASSERT_EQ(show.code, 0) << show.out;
  for (const char* group :
       {"queue:", "totals:", "marker:", "watermarks and options:", "starvation:"}) {
    EXPECT_THAT(show.out, HasSubstr(std::string("\n") + group + "\n")) << show.out;
  }
  EXPECT_THAT(show.out, ContainsRegex("depth: +1\n"));
  EXPECT_THAT(show.out, ContainsRegex("in flight: +1\n"));
  EXPECT_THAT(show.out, ContainsRegex("awaiting durable: +1\n"));
  EXPECT_THAT(show.out, ContainsRegex("resident bytes: +2.9 KiB \\(3000 bytes\\)\n"));
  EXPECT_THAT(show.out, ContainsRegex("committed: +3\n"));
  EXPECT_THAT(show.out, ContainsRegex("global step: +5\n"));
  EXPECT_THAT(show.out, ContainsRegex("durable step: +none\n"));
  EXPECT_THAT(show.out, ContainsRegex("optimizer durable: +no\n"));
  EXPECT_THAT(show.out, ContainsRegex("lease timeout: +60000 ms\n"));
  EXPECT_THAT(show.out, ContainsRegex("max lease refs: +4096\n"));
  EXPECT_THAT(show.out, ContainsRegex("consumer starved: +0\n"));
  EXPECT_THAT(Run("stream show empty.q").out, ContainsRegex("high watermark: +off"));

  // --json: the fields of StreamInfo, as the client's Stat sees them.
  Json j = ParseJson(Run("stream show rollouts --json"));
  Json expect = {
      {"name", "rollouts"},
      {"options",
       {{"lease_timeout_ms", info->options().lease_timeout_ms()},
        {"high_watermark_bytes", info->options().high_watermark_bytes()},
        {"low_watermark_bytes", info->options().low_watermark_bytes()},
        {"max_in_flight_per_producer", info->options().max_in_flight_per_producer()},
        {"max_lease_refs", info->options().max_lease_refs()}}},
      {"create_unix_ms", info->create_unix_ms()},
      {"depth", 1},
      {"in_flight", 1},
      {"awaiting_durable", 1},
      {"resident_bytes", 3000},
      {"paused", false},
      {"committed", 3},
      {"acked", 0},
      {"dropped", 0},
      {"lost", 0},
      {"global_step", 5},
      {"durable_step", nullptr},
      {"optimizer_durable", false},
      {"producer_waits", info->producer_waits()},
      {"producer_rejections", info->producer_rejections()},
      {"consumer_starved", info->consumer_starved()},
      {"consumer_empty", info->consumer_empty()},
      {"expired_leases", info->expired_leases()},
      {"requeued", info->requeued()},
  };
  EXPECT_EQ(j, expect) << j.dump(2);
  EXPECT_EQ(j["options"]["lease_timeout_ms"], 60000);

  Json arr = ParseJson(Run("--json stream ls"));
  ASSERT_TRUE(arr.is_array()) << arr.dump();
  ASSERT_EQ(arr.size(), 2u);
  EXPECT_EQ(arr[0]["name"], "empty.q");
  EXPECT_EQ(arr[0]["options"]["high_watermark_bytes"], 0);
  EXPECT_EQ(arr[1], expect);
}

TEST_F(StreamCliTest, ReconcileRequeuesLeasedRefs) {
  auto s = Stream::Open(client_.get(), "train");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->Commit(Refs({"x", "y", "z"})).ok());
  auto leased = s->Lease({.max_refs = 2});
  ASSERT_TRUE(leased.ok() && leased->size() == 2u);
  Json before = ParseJson(Run("--json stream show train"));
  EXPECT_EQ(before["depth"], 1);
  EXPECT_EQ(before["in_flight"], 2);

  CliResult rec = Run("stream reconcile train");
  ASSERT_EQ(rec.code, 0) << rec.out;
  EXPECT_THAT(rec.out, HasSubstr("0 released, 2 requeued, 0 lost, 3 pending")) << rec.out;
  Json after = ParseJson(Run("--json stream show train"));
  EXPECT_EQ(after["depth"], 3);
  EXPECT_EQ(after["in_flight"], 0);
  EXPECT_EQ(after["requeued"], 2);
  // The old lease is gone: acking it now is refused.
  EXPECT_FALSE(s->Ack(*leased).ok());

  // Idempotent: nothing left to requeue.
  Json again = ParseJson(Run("stream reconcile train --json"));
  EXPECT_EQ(
      again,
      (Json{{"name", "train"}, {"released", 0}, {"requeued", 0}, {"lost", 0}, {"pending", 3}}));
}

TEST_F(StreamCliTest, MissingStreamExitsOneAndIsNotCreated) {
  for (const char* cmd : {"stream show nope", "stream show nope --json", "stream reconcile nope"}) {
    CliResult r = Run(cmd);
    EXPECT_EQ(r.code, 1) << cmd << "\n" << r.out;
    EXPECT_THAT(r.out, HasSubstr("no stream named 'nope'")) << cmd;
  }
  EXPECT_THAT(StreamNames(), Not(::testing::Contains("nope")));
  CliResult ls = Run("stream ls");
  EXPECT_EQ(ls.code, 0) << ls.out;
  EXPECT_THAT(ls.out, HasSubstr("no streams"));
  EXPECT_EQ(ParseJson(Run("stream ls --json")), Json::array());
}

TEST_F(StreamCliTest, BadNameIsRefusedNamingIt) {
  std::string long_name(129, 'n');
  for (const std::string& name : {std::string("bad/name"), std::string("'a b'"), long_name}) {
    for (const char* verb : {"show", "reconcile"}) {
      CliResult r = Run(fmt::format("stream {} {}", verb, name));
      EXPECT_TRUE(r.code == 1 || r.code == 2) << verb << " " << name << ": " << r.code;
      std::string shown = name == "'a b'" ? "a b" : name.substr(0, 80);
      EXPECT_THAT(r.out, HasSubstr(shown)) << verb << " " << name;
      EXPECT_THAT(r.out, HasSubstr("[A-Za-z0-9._-]")) << r.out;
    }
  }
  EXPECT_TRUE(StreamNames().empty());
}

TEST_F(StreamCliTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Run("stream").code, 2);
  EXPECT_EQ(Run("stream show").code, 2);
  EXPECT_EQ(Run("stream reconcile").code, 2);
  EXPECT_EQ(Run("stream frobnicate").code, 2);
}

TEST(StreamCliNoDaemonTest, NoDaemonExitsOne) {
  for (const char* cmd : {"stream ls", "stream show s", "stream reconcile s"}) {
    CliResult r = RunCli(std::string("--address /tmp/no-such-cistern.sock ") + cmd);
    EXPECT_EQ(r.code, 1) << cmd;
    EXPECT_THAT(r.out, HasSubstr("is cisternd running?")) << cmd;
  }
}

// As CliDocsTest, for the stream commands: docs/operations.md names each and
// every option its --help lists.
// CliDocsTest (cli_test.cc) checks that docs/operations.md names every stream
// command and option; this checks the Streams section's operator topics.
TEST(StreamCliDocsTest, OperationsGuideCoversTheRegistryDatabase) {
  std::string doc = ReadFile(std::string(CISTERN_SOURCE_DIR) + "/docs/operations.md");
  ASSERT_FALSE(doc.empty());
  EXPECT_NE(doc.find("## Streams"), std::string::npos);
  for (const char* words : {"registry.db", "state_dir", "Single writer", "Backup"}) {
    EXPECT_NE(doc.find(words), std::string::npos) << words;
  }
}

TEST(StreamCliDocsTest, ShippedConfigDocumentsStateRegistryAndStreamKeys) {
  std::string yaml = ReadFile(std::string(CISTERN_SOURCE_DIR) + "/deploy/config/cisternd.yaml");
  for (const char* key :
       {"state_dir:", "registry:", "mode: embedded", "path:", "streams:", "lease_timeout_ms:",
        "high_watermark_bytes:", "low_watermark_bytes:", "max_lease_refs:"}) {
    EXPECT_NE(yaml.find(key), std::string::npos) << key;
  }
  // Each commented-out example is valid too.
  Daemon d;  // for its temporary directory
  std::string uncommented = d.dir() + "/all.yaml";
  std::string text;
  std::istringstream lines(yaml);
  for (std::string line; std::getline(lines, line);) {
    for (const char* key : {"# state_dir:", "# path: /var/lib",
                            "# high_watermark_bytes:", "# low_watermark_bytes:"}) {
      if (size_t at = line.find(key); at != std::string::npos) line.erase(at, 2);
    }
    text += line + "\n";
  }
  std::ofstream(uncommented) << text;
  CliResult r = RunCli("config show --effective --config " + uncommented);
  ASSERT_EQ(r.code, 0) << r.out << text;
  EXPECT_THAT(r.out, HasSubstr("state_dir: \"/var/lib/cistern\""));
  EXPECT_THAT(r.out, HasSubstr("path: \"/var/lib/cistern/registry.db\""));
  EXPECT_THAT(r.out, HasSubstr("high_watermark_bytes: 2147483648"));
}

// `cistern daemon start` in a temporary $CISTERN_HOME (as DaemonCliTest).
class StreamDaemonCliTest : public CliHomeTest {};

TEST_F(StreamDaemonCliTest, StreamSurvivesRestartAndKill9InTheHostStateDir) {
  ASSERT_EQ(Run("daemon start " + sets_).code, 0);
  Json status = JsonOf("daemon status");
  std::string state_dir = status.value("state_dir", ""), registry = status.value("registry", "");
  EXPECT_THAT(state_dir, ::testing::StartsWith(home_ + "/hosts/"));
  EXPECT_THAT(state_dir, ::testing::EndsWith("/state"));
  EXPECT_EQ(registry, state_dir + "/registry.db");
  EXPECT_TRUE(fs::exists(registry)) << registry;
  EXPECT_THAT(Run("daemon status").out, HasSubstr("registry: " + registry));
  {
    ConnectOptions o;
    o.socket_path = status.value("socket", "");
    auto c = Client::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status();
    auto put = (*c)->Put("kept/0", std::string(100, 'k'));
    ASSERT_TRUE(put.ok()) << put.status();
    auto s = Stream::Open(c->get(), "kept");
    ASSERT_TRUE(s.ok()) << s.status();
    SampleRef r;
    r.sample_id = "s0";
    r.key = put->key;
    r.generation = put->generation;
    ASSERT_TRUE(s->Commit({r}).ok());
  }
  ASSERT_EQ(JsonOf("stream show kept")["depth"], 1);

  CliResult restart = Run("daemon restart --grace 5 " + sets_);
  ASSERT_EQ(restart.code, 0) << restart.out;
  Json after = JsonOf("stream show kept");
  EXPECT_EQ(after["depth"], 1) << after.dump(2);
  EXPECT_EQ(after["committed"], 1);
  EXPECT_EQ(after["lost"], 0);
  EXPECT_EQ(JsonOf("daemon status").value("registry", ""), registry);

  // A stale session (kill -9) is replaced; the new one finds the stream too.
  int pid = JsonOf("daemon status")["pid"];
  ::kill(pid, SIGKILL);
  for (int i = 0; i < 500 && Run("daemon status").code == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CliResult start = Run("daemon start " + sets_);
  ASSERT_EQ(start.code, 0) << start.out;
  EXPECT_EQ(JsonOf("stream show kept")["depth"], 1);
}

TEST_F(StreamDaemonCliTest, UnwritableStateDirExitsTwoAndLeavesNoDaemon) {
  for (const std::string& set : {std::string("--set state_dir=/dev/null/state"),
                                 std::string("--set registry.path=/dev/null/reg/registry.db")}) {
    CliResult r = Run("daemon start " + sets_ + set);
    EXPECT_EQ(r.code, 2) << set << "\n" << r.out;
    EXPECT_THAT(r.out, HasSubstr("/dev/null/")) << r.out;
    EXPECT_THAT(r.out, HasSubstr("not writable")) << r.out;
    EXPECT_EQ(Run("daemon status").code, 1) << "a daemon was left behind by " << set;
  }
}

}  // namespace
}  // namespace cistern::testing

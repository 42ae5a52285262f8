// A gtest fixture for tests of `cistern daemon start` and the commands around
// it: a temporary $CISTERN_HOME, an arena path of its own in /dev/shm, and
// `sets_`, the --set flags that point a started daemon at them (a 64 MiB tier,
// a free metrics port). TearDown stops a daemon started there and removes
// every file, even when the test failed.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {

class CliHomeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cistern-home-XXXXXX";
    home_ = ::mkdtemp(tmpl);
    arena_ = fmt::format("/dev/shm/cistern-clihome-{}-{}.arena", getpid(),
                         std::filesystem::path(home_).filename().string());
    sets_ =
        fmt::format("--set tiers.0.size=64MiB --set tiers.0.path={} --set metrics_port=0 ", arena_);
  }
  void TearDown() override {
    Run("daemon stop --grace 5");
    std::error_code ec;
    std::filesystem::remove_all(home_, ec);
    RemoveArena(arena_);
  }

  // `cistern args` in the home, with no address or token inherited from the
  // test's environment; `env` (e.g. "CISTERN_TOKEN=x ") goes before it.
  CliResult Run(const std::string& args, const std::string& env = "") {
    return RunCli(args,
                  fmt::format("CISTERN_HOME={} CISTERN_ADDRESS= CISTERN_TOKEN= {}", home_, env));
  }
  // `cistern --json args`, parsed; a failed expectation if it is not JSON.
  nlohmann::json JsonOf(const std::string& args, const std::string& env = "") {
    CliResult r = Run("--json " + args, env);
    auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }
  // The session directories under the home (hosts/<id>/sessions/<session>).
  std::vector<std::filesystem::path> SessionDirs() const {
    std::vector<std::filesystem::path> out;
    std::error_code ec;
    for (auto& host :
         std::filesystem::directory_iterator(std::filesystem::path(home_) / "hosts", ec)) {
      for (auto& s : std::filesystem::directory_iterator(host.path() / "sessions", ec)) {
        out.push_back(s.path());
      }
    }
    return out;
  }

  std::string home_, arena_, sets_;
};

}  // namespace cistern::testing

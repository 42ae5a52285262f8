// Runs `promtool check metrics` (Debian's prometheus package, installed by
// scripts/bootstrap) over an exposition text, for the tests that check our
// /metrics output parses and lints clean. Header-only: used by unit and
// integration tests alike.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace cistern::testing {

struct PromtoolResult {
  int exit_code = -1;  // -1: promtool did not run to an exit
  std::string output;  // its stdout and stderr: empty when nothing to lint
};

inline PromtoolResult PromtoolCheck(const std::string& exposition) {
  char tmpl[] = "/tmp/cistern-promtool-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) return {};
  ::close(fd);
  std::ofstream(tmpl) << exposition;
  std::string cmd = std::string("promtool check metrics < ") + tmpl + " 2>&1";
  PromtoolResult r;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[512];
    while (size_t n = std::fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
    int status = ::pclose(p);
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  }
  std::remove(tmpl);
  return r;
}

}  // namespace cistern::testing

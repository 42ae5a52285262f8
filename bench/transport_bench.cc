// cistern_transport_bench: a first look at src/transport's pull throughput
// over TCP on loopback, side by side with iperf3 (1 and 4 streams) and
// memcpy in the same run. Two Transports in one process (a holder with one
// region, a puller), 127.0.0.1; each size is pulled repeatedly into the same
// buffer for --seconds, contents checked once. Not the issue-12 benchmark
// (that one runs between two network namespaces with ucx_perftest too); this
// says whether the active-message rendezvous path is anywhere near what the
// kernel's TCP gives on this machine. Prints a table; not a pass/fail test.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "src/transport/ucx_transport.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "cistern_transport_bench: %s\n", why.c_str());
  std::exit(1);
}

std::string LoadAvg() {
  FILE* f = std::fopen("/proc/loadavg", "r");
  char buf[64] = {0};
  if (f != nullptr) {
    if (std::fgets(buf, sizeof buf, f) == nullptr) buf[0] = '\0';
    std::fclose(f);
  }
  std::string s(buf);
  size_t third = s.find(' ', s.find(' ', s.find(' ') + 1) + 1);
  return s.substr(0, third);
}

// iperf3 on 127.0.0.1 with `streams` parallel streams for `seconds`: MiB/s
// received, or -1 when iperf3 could not run.
double Iperf(int streams, double seconds) {
  const int port = 25000 + (getpid() % 1000);
  pid_t server = ::fork();
  if (server == 0) {
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    ::execlp("iperf3", "iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", std::to_string(port).c_str(),
             nullptr);
    std::_Exit(127);
  }
  ::usleep(300000);
  std::string cmd = fmt::format(
      "iperf3 -c 127.0.0.1 -p {} -P {} -t {} -J 2>/dev/null | /usr/bin/python3 -c "
      "\"import json,sys; print(json.load(sys.stdin)['end']['sum_received']['bits_per_second'])\"",
      port, streams, seconds);
  FILE* p = ::popen(cmd.c_str(), "r");
  double bps = -1;
  if (p != nullptr) {
    if (std::fscanf(p, "%lf", &bps) != 1) bps = -1;
    ::pclose(p);
  }
  ::kill(server, SIGTERM);
  ::waitpid(server, nullptr, 0);
  return bps < 0 ? -1 : bps / 8 / 1048576;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else {
      Die("usage: cistern_transport_bench [--seconds S]");
    }
  }
  std::printf("cistern_transport_bench: %ld CPUs, load average %s at start\n",
              ::sysconf(_SC_NPROCESSORS_ONLN), LoadAvg().c_str());
  constexpr size_t kRegion = 256 << 20;
  std::vector<char> region(kRegion);
  for (size_t i = 0; i < kRegion; i += 4096) region[i] = static_cast<char>(i >> 12);
  cistern::transport::TransportOptions o;
  o.token = "bench";
  auto holder = cistern::transport::Transport::Start(
      o,
      [&](uint64_t, uint64_t offset,
          uint64_t length) -> absl::StatusOr<cistern::transport::ReadLease> {
        if (offset + length > region.size()) return absl::OutOfRangeError("past the end");
        return cistern::transport::ReadLease{region.data() + offset, nullptr};
      });
  if (!holder.ok()) Die(std::string(holder.status().message()));
  auto puller = cistern::transport::Transport::Start(
      o, [](uint64_t, uint64_t, uint64_t) -> absl::StatusOr<cistern::transport::ReadLease> {
        return absl::NotFoundError("nothing");
      });
  if (!puller.ok()) Die(std::string(puller.status().message()));
  const std::string address = fmt::format("127.0.0.1:{}", (*holder)->port());

  std::printf("\n   %-34s %12s %10s\n", "variant", "MiB/s", "pulls");
  std::vector<char> dest(kRegion);
  double best_pull = 0;
  for (size_t size : {size_t{1} << 20, size_t{64} << 20, size_t{256} << 20}) {
    auto s = (*puller)->Pull(address, 1, 0, size, dest.data(), std::chrono::seconds(60));
    if (!s.ok()) Die(std::string(s.message()));
    if (std::memcmp(dest.data(), region.data(), size) != 0) Die("the pulled bytes differ");
    uint64_t n = 0;
    auto t0 = Clock::now();
    while (Seconds(Clock::now() - t0) < seconds) {
      s = (*puller)->Pull(address, 1, 0, size, dest.data(), std::chrono::seconds(60));
      if (!s.ok()) Die(std::string(s.message()));
      ++n;
    }
    double rate = static_cast<double>(n * size) / 1048576 / Seconds(Clock::now() - t0);
    best_pull = std::max(best_pull, rate);
    std::printf("   %-34s %12.0f %10llu\n",
                fmt::format("pull of {} MiB, one at a time", size >> 20).c_str(), rate,
                static_cast<unsigned long long>(n));
  }
  double memcpy_rate;
  {
    uint64_t n = 0;
    auto t0 = Clock::now();
    while (Seconds(Clock::now() - t0) < 1) {
      std::memcpy(dest.data(), region.data(), 64 << 20);
      ++n;
    }
    memcpy_rate = static_cast<double>(n * (64 << 20)) / 1048576 / Seconds(Clock::now() - t0);
  }
  std::printf("   %-34s %12.0f\n", "memcpy of 64 MiB (one core)", memcpy_rate);
  double best_iperf = 0;
  for (int streams : {1, 4}) {
    double r = Iperf(streams, seconds);
    best_iperf = std::max(best_iperf, r);
    std::printf("   %-34s %12.0f\n",
                fmt::format("iperf3, {} stream{}", streams, streams == 1 ? "" : "s").c_str(), r);
  }
  if (best_iperf > 0) {
    std::printf("\n   best pull / best iperf3 = %.2fx\n", best_pull / best_iperf);
  }
  std::printf("   load average %s at end\n", LoadAvg().c_str());
  return 0;
}

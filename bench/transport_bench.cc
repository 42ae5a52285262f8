// cistern_transport_bench: src/transport's two data paths over TCP on
// loopback, side by side with iperf3 (1 and 4 streams) and memcpy in the same
// run. Two Transports in one process (a holder with one region, a puller),
// 127.0.0.1. The active-message pull (request AM, rendezvous AM reply) and
// the one-sided get (ucp_get_nbx from memory the holder registered) each read
// 1, 64 and 256 MiB as the fetcher does (16 MiB chunks, 4 in flight),
// repeatedly into one buffer for --seconds, contents checked once. It decides
// which variant is the TCP default (docs/benchmarks.md). Run with
// UCX_TLS=tcp, or UCX picks shared memory between the two. Prints a table;
// not a pass/fail test.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
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
  std::fflush(stdout);  // or the child's freopen writes our buffered lines again
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
  o.one_sided = true;
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

  auto rkey = (*holder)->RegisterMemory(region.data(), region.size());
  if (!rkey.ok()) Die(std::string(rkey.status().message()));
  const uint64_t base = reinterpret_cast<uint64_t>(region.data());

  // One variant reading `size` bytes as the fetcher does: 16 MiB chunks, up
  // to 4 in flight (smaller objects in one read).
  std::vector<char> dest(kRegion);
  auto read = [&](bool get, size_t size) -> absl::Status {
    const size_t chunk = std::min<size_t>(size, 16 << 20);
    const size_t chunks = (size + chunk - 1) / chunk;
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    absl::Status first;
    std::mutex mu;
    auto worker = [&] {
      for (size_t i; (i = next.fetch_add(1)) < chunks && !failed;) {
        size_t off = i * chunk, n = std::min(chunk, size - off);
        absl::Status s =
            get ? (*puller)->Get(address, *rkey, base + off, n, dest.data() + off,
                                 std::chrono::seconds(60))
                : (*puller)->Pull(address, 1, off, n, dest.data() + off, std::chrono::seconds(60));
        if (!s.ok()) {
          std::lock_guard<std::mutex> l(mu);
          if (first.ok()) first = s;
          failed = true;
        }
      }
    };
    std::vector<std::thread> helpers;
    for (size_t i = 1; i < std::min<size_t>(4, chunks); ++i) helpers.emplace_back(worker);
    worker();
    for (auto& t : helpers) t.join();
    return first;
  };

  std::printf("\n   %-40s %12s %10s\n", "variant", "MiB/s", "reads");
  double best_pull = 0, best_am = 0, best_get = 0;
  for (bool get : {false, true}) {
    for (size_t size : {size_t{1} << 20, size_t{64} << 20, size_t{256} << 20}) {
      std::memset(dest.data(), 0, size);
      auto s = read(get, size);
      if (!s.ok()) Die(std::string(s.message()));
      if (std::memcmp(dest.data(), region.data(), size) != 0) Die("the read bytes differ");
      uint64_t n = 0;
      auto t0 = Clock::now();
      while (Seconds(Clock::now() - t0) < seconds) {
        s = read(get, size);
        if (!s.ok()) Die(std::string(s.message()));
        ++n;
      }
      double rate = static_cast<double>(n * size) / 1048576 / Seconds(Clock::now() - t0);
      best_pull = std::max(best_pull, rate);
      (get ? best_get : best_am) = std::max(get ? best_get : best_am, rate);
      std::printf(
          "   %-40s %12.0f %10llu\n",
          fmt::format("{} of {} MiB", get ? "one-sided get (ucp_get_nbx)" : "AM pull", size >> 20)
              .c_str(),
          rate, static_cast<unsigned long long>(n));
    }
  }
  auto lanes = (*puller)->PeerTransports(address);
  std::printf("   UCX lanes to the holder: %s\n",
              lanes.ok() ? (cistern::transport::Transport::LooksRdma(*lanes) ? "RDMA" : "not RDMA")
                         : std::string(lanes.status().message()).c_str());
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
  std::printf("\n   best one-sided get / best AM pull = %.2fx\n", best_get / best_am);
  if (best_iperf > 0) {
    std::printf("   best read / best iperf3 = %.2fx\n", best_pull / best_iperf);
  }
  std::printf("   load average %s at end\n", LoadAvg().c_str());
  return 0;
}

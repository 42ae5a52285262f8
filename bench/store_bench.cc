// cistern_store_bench: Cistern side by side with its peers in one run, against
// the project's four performance targets (docs/benchmarks.md).
//
//   1. Get latency independent of size: Get + view release for a sealed 4 KiB
//      object, a 1 GiB raw object and a 1 GiB dict of 16 tensors. Target: the
//      1 GiB mean and p50 within 2x of the 4 KiB ones.
//   2. Put bandwidth vs memcpy: Client::Put of 1, 16 and 256 MiB (default
//      options, i.e. with checksum, and with checksum=false) against one-thread
//      memcpy between two pre-faulted buffers. Target: put/memcpy >= 0.8.
//   3. 4 KiB ops vs Redis: Get+copy+release and Put from C client threads
//      against redis-benchmark GET and SET with C connections, for C = 1 and 4;
//      GetMany(64)+ReleaseMany against redis-benchmark GET -P 64. Targets: get
//      >= 2x GET, put >= 1x SET, batch get >= pipelined GET.
//   6. Cold puts (issue 13): Client::Put of 1 GiB into the arena of a daemon
//      just started, with the arena pre-faulted (the default; timed once the
//      daemon logs that the walk is done) and without (prefault: false),
//      against memcpy of 1 GiB into pre-faulted memory (warm) and into a fresh
//      file in the arena directory (cold). Target: a put into a pre-faulted
//      arena >= 0.8x warm memcpy. Not in the default set; --arena-dir puts
//      its arenas on another tmpfs (one mounted with huge=, say).
//   4. Daemon memory per object: RssAnon of cisternd before and after putting
//      1,000,000 objects with 16-byte keys and 64-byte values. Target: <= 256
//      bytes per object beyond the key.
//
// The program starts its own cisternd (a temporary directory for config,
// socket and log; arenas in /dev/shm named cistern-bench-<pid>*.arena) and its
// own redis-server (a free loopback port, no persistence), and stops both and
// removes every file at the end, also on SIGINT/SIGTERM. It is not a pass/fail
// test: it prints tables and, with --json FILE, writes every number as JSON.
// Measurements are interleaved in rounds (and the Redis comparison repeated,
// reporting the median) because the machine may be shared. Targets are judged
// under default scheduling; extra rows pin processes to CPUs as a diagnostic
// (a request/reply round trip costs far more when it wakes the other CPU).
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "fmt/format.h"
#include "include/cistern/client.h"
#include "include/cistern/stream.h"
#include "src/common/units.h"
#include "src/store/checksum.h"

namespace cistern::bench {
namespace {

// ------------------------------------------------------------------ redis ----

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    Die(fmt::format("find a free port: {}", std::strerror(errno)));
  }
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

bool RedisPing(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::write(fd, "PING\r\n", 6) == 6) {
    char buf[16] = {};
    ok = ::read(fd, buf, sizeof buf - 1) > 0 && std::strncmp(buf, "+PONG", 5) == 0;
  }
  ::close(fd);
  return ok;
}

class Redis {
 public:
  explicit Redis(std::string binary) : binary_(std::move(binary)) {
    dir_ = MakeTempDir();
    log_path_ = dir_ + "/redis.log";
    for (const auto& p : {log_path_, dir_}) AddCleanupPath(p);
    port_ = FreeLoopbackPort();
  }
  ~Redis() {
    Stop(pid_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void Start() {
    pid_ = Spawn({binary_, "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", dir_},
                 log_path_);
    auto deadline = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < deadline) {
      if (Exited(pid_)) {
        DropCleanupPid(pid_);
        pid_ = -1;
        Die("redis-server exited during start:\n" + ReadFile(log_path_));
      }
      if (RedisPing(port_)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Die("redis-server did not answer PING within 20 s:\n" + ReadFile(log_path_));
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }

 private:
  std::string binary_, dir_, log_path_;
  int port_ = 0;
  pid_t pid_ = -1;
};

std::string RunCommand(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) Die("popen " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  if (rc != 0) Die(fmt::format("'{}' failed ({}):\n{}", cmd, rc, out));
  return out;
}

// Requests per second of `test` ("GET", "SET") in redis-benchmark --csv output.
double CsvRps(const std::string& out, const std::string& test) {
  std::istringstream in(out);
  std::string line, want = "\"" + test + "\",\"";
  while (std::getline(in, line)) {
    if (line.rfind(want, 0) == 0) return std::strtod(line.c_str() + want.size(), nullptr);
  }
  Die(fmt::format("no {} line in redis-benchmark output:\n{}", test, out));
}

void Fill(std::byte* p, size_t n, uint64_t seed) {
  uint64_t x = seed | 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
  for (; i < n; ++i) p[i] = std::byte(i);
}

struct Buffer {
  explicit Buffer(size_t n) : size(n) {
    data = static_cast<std::byte*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096));
    if (!data) Die(fmt::format("cannot allocate {} bytes", n));
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::span<const std::byte> span(size_t n) const { return {data, n}; }
  std::byte* data;
  size_t size;
};

std::string SizeName(uint64_t n) {
  if (n >= kGiB && n % kGiB == 0) return fmt::format("{} GiB", n / kGiB);
  if (n >= kMiB && n % kMiB == 0) return fmt::format("{} MiB", n / kMiB);
  if (n >= kKiB && n % kKiB == 0) return fmt::format("{} KiB", n / kKiB);
  return fmt::format("{} B", n);
}

// ---------------------------------------------------------------- targets ----

struct Target {
  std::string name;
  std::string measured_as;  // how the number is formed
  double value;
  double threshold;
  bool at_most;  // value must be <= threshold (else >=)
  bool met() const { return at_most ? value <= threshold : value >= threshold; }
  // How far from the threshold, as a share of it: positive = margin, negative = miss.
  double margin() const {
    return at_most ? (threshold - value) / threshold : (value - threshold) / threshold;
  }
};

// ---------------------------------------------------------------- options ----

struct Options {
  std::string json_path;
  std::string cisternd = std::string(CISTERN_BUILD_DIR) + "/src/daemon/cisternd";
  std::string redis_server = "/usr/bin/redis-server";
  std::string redis_benchmark = "/usr/bin/redis-benchmark";
  double scale = 1.0;  // multiplies every iteration count
  uint64_t tier_bytes = 4 * kGiB;
  uint64_t objects = 1'000'000;
  std::string phases = "12345";        // which of the measurements to run (6: cold puts)
  std::string arena_dir = "/dev/shm";  // phase 6's arenas
};

uint64_t Scaled(const Options& o, uint64_t n, uint64_t at_least = 1) {
  return std::max<uint64_t>(at_least, static_cast<uint64_t>(std::llround(n * o.scale)));
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) Die(fmt::format("{} needs a value", argv[i]));
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") {
      o.json_path = need(i);
    } else if (a == "--cisternd") {
      o.cisternd = need(i);
    } else if (a == "--redis-server") {
      o.redis_server = need(i);
    } else if (a == "--redis-benchmark") {
      o.redis_benchmark = need(i);
    } else if (a == "--scale") {
      o.scale = std::strtod(need(i).c_str(), nullptr);
      if (!(o.scale > 0)) Die("--scale must be positive");
    } else if (a == "--objects") {
      o.objects = std::strtoull(need(i).c_str(), nullptr, 10);
    } else if (a == "--phases") {
      o.phases = need(i);
    } else if (a == "--arena-dir") {
      o.arena_dir = need(i);
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: cistern_store_bench [--json FILE] [--scale F] [--objects N] [--phases S]\n"
          "                           [--cisternd PATH] [--redis-server PATH]\n"
          "                           [--redis-benchmark PATH]\n"
          "  --scale F    multiply every iteration count by F (default 1)\n"
          "  --objects N  objects for the memory-per-object measurement (default 1000000)\n"
          "  --phases S   run only the measurements whose numbers are in S (default 12345;\n"
          "               6, cold puts, runs only when named)\n"
          "  --arena-dir D  where phase 6 puts its arenas (default /dev/shm)\n"
          "environment: CISTERN_BENCH_DAEMON_YAML is appended to cisternd's config\n"
          "  (e.g. 'busy_poll_us: 0' to measure without busy polling)\n");
      std::exit(0);
    } else {
      Die("unknown argument '" + a + "' (see --help)");
    }
  }
  return o;
}

// ------------------------------------------------------------- 1. latency ----

// Pins the calling thread and cisternd to the CPU the caller is on, so each
// round trip is a same-CPU switch instead of a wakeup on the other CPU; the
// previous affinities come back on destruction. A diagnostic, not a target
// setup.
class PinnedToOneCpu {
 public:
  explicit PinnedToOneCpu(pid_t daemon) : daemon_(daemon) {
    ::sched_getaffinity(0, sizeof self_, &self_);
    ::sched_getaffinity(daemon_, sizeof daemon_mask_, &daemon_mask_);
    cpu_ = ::sched_getcpu();
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu_, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0 ||
        ::sched_setaffinity(daemon_, sizeof one, &one) != 0) {
      Die(fmt::format("sched_setaffinity: {}", std::strerror(errno)));
    }
  }
  ~PinnedToOneCpu() {
    ::sched_setaffinity(daemon_, sizeof daemon_mask_, &daemon_mask_);
    ::sched_setaffinity(0, sizeof self_, &self_);
  }
  int cpu() const { return cpu_; }

 private:
  pid_t daemon_;
  cpu_set_t self_, daemon_mask_;
  int cpu_ = 0;
};

void BenchGetLatency(const Options& opt, Daemon& d, Buffer& src, std::vector<Target>* targets,
                     JsonObject* json) {
  auto c = d.MustConnect();
  const uint64_t big = kGiB;
  Fill(src.data, big, 42);
  Must(c->Put("lat-4KiB", src.span(4 * kKiB)), "put lat-4KiB");
  Must(c->Put("lat-1GiB", src.span(big)), "put lat-1GiB");
  std::vector<TensorInput> tensors;
  constexpr int kTensors = 16;
  const uint64_t per = big / kTensors;
  for (int i = 0; i < kTensors; ++i) {
    tensors.push_back({fmt::format("layer{:02}.weight", i),
                       DType::kFloat32,
                       {per / 4},
                       src.span(big).subspan(i * per, per)});
  }
  Must(c->PutTensors("lat-1GiB-tensors", tensors), "put lat-1GiB-tensors");

  auto socket_client = d.MustConnect(/*fast_path=*/false);
  struct Case {
    std::string key, name;
    Client* client = nullptr;  // null: the default client (the fast path when offered)
    std::vector<double> samples;
    uint64_t size = 0;
  };
  const uint64_t rounds = 5, per_round = Scaled(opt, 4000, 100), warmup = Scaled(opt, 1000, 10);
  fmt::print(
      "\n== 1. Get latency: Get(key) + ~ObjectView (release), single client ==\n"
      "   {} warm-up ops per object, then {} rounds x {} timed ops per object, objects "
      "interleaved by round; the view's bytes\n"
      "   are not touched. Default scheduling (the target); then again with client and "
      "cisternd pinned to one CPU\n"
      "   (diagnostic: shows the round trip without a cross-CPU wakeup)\n",
      warmup, rounds, per_round);
  fmt::print("   {:<36} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}\n", "object", "bytes",
             "mean us", "p50 us", "p99 us", "min us", "mean/4KiB", "p50/4KiB");
  std::vector<Json> jrows;
  for (bool pinned : {false, true}) {
    std::vector<Case> cases = {{"lat-4KiB", "4 KiB raw bytes"},
                               {"lat-1GiB", "1 GiB raw bytes"},
                               {"lat-1GiB-tensors", "1 GiB dict of 16 tensors"},
                               {"lat-4KiB", "4 KiB, socket path", socket_client.get()}};
    std::optional<PinnedToOneCpu> pin;
    if (pinned) pin.emplace(d.pid());
    auto one = [&](Case& cs, std::vector<double>* out) {
      auto t0 = Clock::now();
      {
        auto v = (cs.client ? cs.client : c.get())->Get(cs.key);
        if (!v.ok()) Die(fmt::format("get {}: {}", cs.key, v.status().ToString()));
        cs.size = v->size();
        if (cs.key == "lat-1GiB-tensors" && v->tensors().size() != kTensors) {
          Die("tensor dict came back with the wrong manifest");
        }
        Escape(v->data());
      }  // ~ObjectView sends the release
      auto t1 = Clock::now();
      if (out) out->push_back(Nanos(t1 - t0));
    };
    for (auto& cs : cases) {
      for (uint64_t i = 0; i < warmup; ++i) one(cs, nullptr);
    }
    for (uint64_t r = 0; r < rounds; ++r) {
      for (auto& cs : cases) {
        for (uint64_t i = 0; i < per_round; ++i) one(cs, &cs.samples);
      }
    }
    pin.reset();
    std::vector<LatencyStats> stats;
    for (auto& cs : cases) stats.push_back(Summarize(cs.samples));
    const LatencyStats& base = stats[0];
    for (size_t i = 0; i < cases.size(); ++i) {
      const LatencyStats& st = stats[i];
      double rm = st.mean_ns / base.mean_ns, rp = st.p50_ns / base.p50_ns;
      std::string name = cases[i].name + (pinned ? ", pinned" : "");
      fmt::print("   {:<36} {:>12} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f}x {:>9.2f}x\n", name,
                 cases[i].size, st.mean_ns / 1e3, st.p50_ns / 1e3, st.p99_ns / 1e3, st.min_ns / 1e3,
                 rm, rp);
      jrows.push_back(JsonObject()
                          .Str("object", cases[i].name)
                          .Bool("pinned_to_one_cpu", pinned)
                          .Int("bytes", cases[i].size)
                          .Int("samples", st.n)
                          .Num("mean_us", st.mean_ns / 1e3)
                          .Num("p50_us", st.p50_ns / 1e3)
                          .Num("p99_us", st.p99_ns / 1e3)
                          .Num("min_us", st.min_ns / 1e3)
                          .Num("mean_ratio_to_4KiB", rm)
                          .Num("p50_ratio_to_4KiB", rp)
                          .Build());
      if (i == 0 || pinned || cases[i].client != nullptr) continue;
      targets->push_back(
          {fmt::format("1. get {} mean / 4 KiB mean", cases[i].name), "ratio", rm, 2.0, true});
      targets->push_back(
          {fmt::format("1. get {} p50 / 4 KiB p50", cases[i].name), "ratio", rp, 2.0, true});
    }
  }
  json->Raw("get_latency", JsonObject()
                               .Int("warmup_ops_per_object", warmup)
                               .Int("rounds", rounds)
                               .Int("ops_per_round_per_object", per_round)
                               .Raw("results", Json(jrows))
                               .Build());
  for (const char* k : {"lat-4KiB", "lat-1GiB", "lat-1GiB-tensors"}) {
    Must(c->Remove(k).status(), fmt::format("remove {}", k));
  }
}

// ----------------------------------------------------------- 2. bandwidth ----

void BenchPutBandwidth(const Options& opt, Daemon& d, Buffer& src, std::vector<Target>* targets,
                       JsonObject* json) {
  auto c = d.MustConnect();
  // The same put in two round trips (create + seal), for comparison: a client
  // that keeps no write space reserved.
  auto c2 = d.MustConnect(/*fast_path=*/true, /*reserve=*/false);
  const uint64_t max = 256 * kMiB;
  Buffer dst(max);
  Fill(src.data, max, 7);
  Fill(dst.data, max, 8);  // pre-faults the memcpy destination
  struct Size {
    uint64_t bytes;
    uint64_t iters;  // timed, per variant
    bool pinned;     // diagnostic row: client and cisternd on one CPU
  };
  // About 4 GiB moved per variant and size.
  std::vector<Size> sizes = {{1 * kMiB, Scaled(opt, 4096, 8), false},
                             {16 * kMiB, Scaled(opt, 256, 8), false},
                             {256 * kMiB, Scaled(opt, 16, 4), false},
                             {1 * kMiB, Scaled(opt, 4096, 8), true},
                             {16 * kMiB, Scaled(opt, 256, 8), true}};
  const uint64_t rounds = 4;
  fmt::print(
      "\n== 2. Put bandwidth vs memcpy (GB/s = 1e9 bytes/s, one client thread) ==\n"
      "   put: Client::Put(key, value) into a 4 GiB tier, key removed after each put "
      "(remove not timed);\n"
      "   memcpy: std::memcpy between two pre-faulted heap buffers. Before timing, each "
      "variant runs warm-up\n"
      "   iterations so the arena pages the puts reuse are already faulted in (steady "
      "state); {} rounds, variants interleaved.\n"
      "   xxh3 only: store::Checksum (what a put with checksum computes) over the source, for "
      "reference; +us/op: time\n"
      "   per put beyond the memcpy of the same bytes (round trips to cisternd, hashing). "
      "Rows marked 'pinned': client\n"
      "   and cisternd on one CPU (diagnostic, not the target setup). put 2 RT: checksum on, "
      "from a client that\n"
      "   keeps no write space reserved (create + seal; up to 16 MiB a put is otherwise one "
      "round trip)\n",
      rounds);
  fmt::print(
      "   {:>14} {:>6} {:>6} {:>8} {:>13} {:>7} {:>13} {:>7} {:>10} {:>7} {:>10} {:>12} {:>12}\n",
      "size", "iters", "warmup", "memcpy", "put checksum", "ratio", "put no-cksum", "ratio",
      "put 2 RT", "ratio", "xxh3 only", "cksum +us/op", "no-ck +us/op");
  std::vector<Json> jrows;
  for (const Size& s : sizes) {
    std::optional<PinnedToOneCpu> pin;
    if (s.pinned) pin.emplace(d.pid());
    std::string key = "bw-" + SizeName(s.bytes);
    PutOptions with_sum, without_sum;
    without_sum.checksum = false;
    // Timed put of one value; the remove afterwards is not timed.
    auto put = [&](const PutOptions& po, Client* client) {
      auto t0 = Clock::now();
      auto r = client->Put(key, src.span(s.bytes), po);
      auto t1 = Clock::now();
      if (!r.ok()) Die(fmt::format("put {}: {}", key, r.status().ToString()));
      Must(c->Remove(key).status(), "remove " + key);
      return t1 - t0;
    };
    uint64_t sink = 0;
    auto hash = [&] {
      auto t0 = Clock::now();
      sink += store::Checksum(src.data, s.bytes);
      return Clock::now() - t0;
    };
    auto copy = [&] {
      auto t0 = Clock::now();
      std::memcpy(dst.data, src.data, s.bytes);
      Escape(dst.data);
      return Clock::now() - t0;
    };
    const uint64_t warm = std::max<uint64_t>(3, s.iters / 10);
    for (uint64_t i = 0; i < warm; ++i) {
      hash();
      copy();
      put(with_sum, c.get());
      put(without_sum, c.get());
      put(with_sum, c2.get());
    }
    Clock::duration t_copy{}, t_sum{}, t_nosum{}, t_hash{}, t_two{};
    const uint64_t per_round = (s.iters + rounds - 1) / rounds;
    for (uint64_t r = 0; r < rounds; ++r) {
      for (uint64_t i = 0; i < per_round; ++i) t_copy += copy();
      for (uint64_t i = 0; i < per_round; ++i) t_sum += put(with_sum, c.get());
      for (uint64_t i = 0; i < per_round; ++i) t_nosum += put(without_sum, c.get());
      for (uint64_t i = 0; i < per_round; ++i) t_two += put(with_sum, c2.get());
      for (uint64_t i = 0; i < per_round; ++i) t_hash += hash();
    }
    pin.reset();
    Escape(&sink);
    const uint64_t timed = per_round * rounds;
    double bytes = double(s.bytes) * timed;
    double gb_copy = bytes / Seconds(t_copy) / 1e9, gb_sum = bytes / Seconds(t_sum) / 1e9,
           gb_nosum = bytes / Seconds(t_nosum) / 1e9, gb_hash = bytes / Seconds(t_hash) / 1e9,
           gb_two = bytes / Seconds(t_two) / 1e9;
    // Time per put beyond the memcpy of the same bytes.
    double extra_sum = (Seconds(t_sum) - Seconds(t_copy)) / timed * 1e6,
           extra_nosum = (Seconds(t_nosum) - Seconds(t_copy)) / timed * 1e6;
    std::string name = SizeName(s.bytes) + (s.pinned ? ", pinned" : "");
    fmt::print(
        "   {:>14} {:>6} {:>6} {:>8.2f} {:>13.2f} {:>6.2f}x {:>13.2f} {:>6.2f}x {:>10.2f} "
        "{:>6.2f}x {:>10.2f} {:>12.1f} {:>12.1f}\n",
        name, timed, warm, gb_copy, gb_sum, gb_sum / gb_copy, gb_nosum, gb_nosum / gb_copy, gb_two,
        gb_two / gb_copy, gb_hash, extra_sum, extra_nosum);
    jrows.push_back(JsonObject()
                        .Int("bytes", s.bytes)
                        .Bool("pinned_to_one_cpu", s.pinned)
                        .Int("timed_iterations", timed)
                        .Int("warmup_iterations", warm)
                        .Num("memcpy_GBps", gb_copy)
                        .Num("put_checksum_GBps", gb_sum)
                        .Num("put_checksum_ratio", gb_sum / gb_copy)
                        .Num("put_no_checksum_GBps", gb_nosum)
                        .Num("put_no_checksum_ratio", gb_nosum / gb_copy)
                        .Num("put_two_round_trips_GBps", gb_two)
                        .Num("put_two_round_trips_ratio", gb_two / gb_copy)
                        .Num("xxh3_hash_only_GBps", gb_hash)
                        .Num("put_checksum_us_per_op_beyond_memcpy", extra_sum)
                        .Num("put_no_checksum_us_per_op_beyond_memcpy", extra_nosum)
                        .Build());
    if (s.pinned) continue;
    targets->push_back({fmt::format("2. put {} (checksum, default) / memcpy", SizeName(s.bytes)),
                        "ratio", gb_sum / gb_copy, 0.8, false});
    targets->push_back({fmt::format("2. put {} (checksum=false) / memcpy", SizeName(s.bytes)),
                        "ratio", gb_nosum / gb_copy, 0.8, false});
  }
  json->Raw("put_bandwidth", JsonObject()
                                 .Int("rounds", rounds)
                                 .Str("unit", "GB/s (1e9 bytes per second)")
                                 .Raw("results", Json(jrows))
                                 .Build());
}

// --------------------------------------------------------- 3. vs redis ----

void SetAffinity(pid_t pid, const cpu_set_t& set) {
  if (::sched_setaffinity(pid, sizeof set, &set) != 0) {
    Die(fmt::format("sched_setaffinity({}): {}", pid, std::strerror(errno)));
  }
}
cpu_set_t OneCpu(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  return s;
}

// Runs `body(thread, client)` on `threads` threads, each with its own client,
// all released together; returns the wall time from release to the last finish.
// With `cpu` >= 0 every thread is pinned to that CPU.
template <typename Body>
Clock::duration RunThreads(Daemon& d, int threads, int cpu, Body body) {
  std::vector<std::unique_ptr<Client>> clients;
  for (int t = 0; t < threads; ++t) clients.push_back(d.MustConnect());
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      if (cpu >= 0) SetAffinity(0, OneCpu(cpu));
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      body(t, *clients[t]);
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  auto t0 = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& th : ts) th.join();
  return Clock::now() - t0;
}

// ------------------------------------------------------ 5. durable acks ----

// The peer of a stream ack: the same durability from bare SQLite. One
// transaction per batch, WAL with synchronous=FULL, a row per sample and the
// marker row, in a file beside the daemon's registry (same disk).
double SqliteAcksPerSecond(const std::string& path, int batch, int samples) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) Die("sqlite3_open " + path);
  auto exec = [&](const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      Die(fmt::format("sqlite {}: {}", sql, err ? err : "?"));
    }
  };
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=FULL");
  exec("CREATE TABLE IF NOT EXISTS kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID");
  sqlite3_stmt* put = nullptr;
  sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO kv(key, value) VALUES(?1, ?2)", -1, &put, nullptr);
  std::string value(120, 'r');  // about a SampleRecord
  // Twice over the same rows; the second pass is timed, so that the WAL file
  // has grown already, as the daemon's has when its acks are timed.
  double secs = 0;
  for (int pass = 0; pass < 2; ++pass) {
    auto t0 = Clock::now();
    for (int done = 0; done < samples; done += batch) {
      exec("BEGIN IMMEDIATE");
      for (int i = 0; i <= batch; ++i) {  // batch rows + the marker
        std::string key = i == batch ? "marker" : fmt::format("s/{:012d}", done + i);
        sqlite3_bind_blob(put, 1, key.data(), key.size(), SQLITE_TRANSIENT);
        sqlite3_bind_blob(put, 2, value.data(), value.size(), SQLITE_STATIC);
        if (sqlite3_step(put) != SQLITE_DONE) Die("sqlite insert");
        sqlite3_reset(put);
      }
      exec("COMMIT");
    }
    secs = Seconds(Clock::now() - t0);
  }
  sqlite3_finalize(put);
  sqlite3_close(db);
  return samples / secs;
}

// Acked samples per second through a stream (every ack durable: optimizer_durable
// with a step, so each ack also releases its samples), against bare SQLite.
void BenchStreamAcks(const Options& opt, Daemon& d, std::vector<Target>* targets,
                     JsonObject* json) {
  fmt::print(
      "\n== 5. Stream acks, durable (WAL, fdatasync before the reply): acked samples/s ==\n");
  fmt::print("   {:>6} {:>8} {:>14} {:>16} {:>10} {:>14}\n", "batch", "samples", "cistern acks/s",
             "bare sqlite/s", "ratio", "lease+ack /s");
  auto c = d.MustConnect();
  std::vector<Json> rows;
  for (int batch : {1, 32, 256}) {
    int samples = std::max(batch, static_cast<int>((batch == 1 ? 2000 : 20000) * opt.scale));
    samples = samples / batch * batch;
    std::string name = fmt::format("bench-acks-{}", batch);
    StreamOptions so;
    so.high_watermark_bytes = 0;  // measure acks, not backpressure
    auto stream = Must(Stream::Open(c.get(), name, so), "open stream");
    // Commit `samples` small objects, 256 per commit.
    std::string payload(64, 'p');
    for (int i = 0; i < samples; i += 256) {
      std::vector<SampleRef> refs;
      for (int j = i; j < std::min(samples, i + 256); ++j) {
        std::string key = fmt::format("{}/{:08d}", name, j);
        ObjectRef o = Must(c->Put(key, payload), "put " + key);
        refs.push_back(
            {.sample_id = fmt::format("{:08d}", j), .key = key, .generation = o.generation});
      }
      Must(stream.Commit(refs, std::chrono::seconds(30)), "commit");
    }
    Clock::duration acking{};
    auto t0 = Clock::now();
    uint64_t step = 0;
    for (int done = 0; done < samples; done += batch) {
      auto refs = Must(stream.Lease({.max_refs = static_cast<uint32_t>(batch),
                                     .min_refs = static_cast<uint32_t>(batch),
                                     .wait = std::chrono::seconds(10)}),
                       "lease");
      if (static_cast<int>(refs.size()) != batch) Die("lease returned a short batch");
      auto a0 = Clock::now();
      Must(stream.Ack(refs, ++step, /*optimizer_durable=*/true), "ack");
      acking += Clock::now() - a0;
    }
    double loop_rate = samples / Seconds(Clock::now() - t0);
    double rate = samples / Seconds(acking);
    auto info = Must(stream.Stat(), "stat");
    if (info.acked() != static_cast<uint64_t>(samples) || info.resident_bytes() != 0) {
      Die(fmt::format("stream {}: {} acked, {} bytes resident after the run", name, info.acked(),
                      info.resident_bytes()));
    }
    std::string peer_path = d.dir() + fmt::format("/peer-{}.db", batch);
    double peer = SqliteAcksPerSecond(peer_path, batch, samples);
    std::filesystem::remove(peer_path);
    std::filesystem::remove(peer_path + "-wal");
    std::filesystem::remove(peer_path + "-shm");
    fmt::print("   {:>6} {:>8} {:>14.0f} {:>16.0f} {:>9.2f}x {:>14.0f}\n", batch, samples, rate,
               peer, rate / peer, loop_rate);
    rows.push_back(JsonObject()
                       .Int("batch", batch)
                       .Int("samples", samples)
                       .Num("cistern_acked_per_s", rate)
                       .Num("sqlite_rows_per_s", peer)
                       .Num("ratio", rate / peer)
                       .Num("lease_and_ack_per_s", loop_rate)
                       .Build());
    if (batch == 32) {
      targets->push_back(
          {"stream durable acks/s at batch 32 (acked samples/s)", "samples/s", rate, 20000, false});
    }
  }
  json->Raw("stream_acks", Json(rows));
}

void BenchVsRedis(const Options& opt, Daemon& d, std::vector<Target>* targets, JsonObject* json) {
  constexpr uint64_t kValue = 4 * kKiB;
  constexpr int kKeys = 64, kBatch = 64;
  const uint64_t n_single = Scaled(opt, 40'000, 1000), n_batch = Scaled(opt, 640'000, 6400);
  Redis redis(opt.redis_server);
  redis.Start();
  std::string redis_version = RunCommand(opt.redis_server + " --version");
  redis_version.erase(redis_version.find_last_not_of("\r\n") + 1);
  redis_version = redis_version.substr(0, redis_version.find(" sha="));

  // The 64 keys every Cistern reader shares; writers overwrite one key each.
  Buffer val(kValue);
  Fill(val.data, kValue, 99);
  std::vector<std::string> keys;
  {
    auto c = d.MustConnect();
    for (int i = 0; i < kKeys; ++i) {
      keys.push_back(fmt::format("r4k-{:02}", i));
      Must(c->Put(keys.back(), val.span(kValue)), "put " + keys.back());
    }
  }
  struct Placement {
    std::string name;
    bool spread;  // servers on CPU 0, every client on CPU 1
    int reps;
  };
  const std::vector<Placement> placements = {{"default", false, 5}, {"spread", true, 3}};
  fmt::print(
      "\n== 3. 4 KiB ops: Cistern vs {} ==\n"
      "   redis-server on 127.0.0.1:{}, --save \"\" --appendonly no, measured with "
      "redis-benchmark -c C -n N -d 4096 -t set,get\n"
      "   (and -P 64 -t get). Cistern: C threads, one Client each; get = Get + memcpy 4 KiB out "
      "+ ~ObjectView; put = Put\n"
      "   4 KiB (default options, checksum on) overwriting one key per thread (as "
      "redis-benchmark SET overwrites one key);\n"
      "   batch = GetMany(64) + copy each out + ReleaseMany, in keys/s. N = {} ops per "
      "single-op test, {} keys per batch\n"
      "   test, split over C. Tests alternate Cistern and Redis and repeat; the median is "
      "shown, min-max beside it.\n"
      "   placement 'default': the kernel schedules (the target setup). 'spread' (diagnostic): "
      "cisternd and redis-server\n"
      "   pinned to CPU 0, the Cistern client threads and redis-benchmark to CPU 1, so every "
      "request crosses CPUs.\n",
      redis_version, redis.port(), n_single, n_batch);

  auto redis_bench = [&](int conns, uint64_t n, int pipeline, const std::string& tests) {
    return RunCommand(fmt::format("{} -h 127.0.0.1 -p {} -c {} -n {} -d {} -P {} -t {} --csv",
                                  opt.redis_benchmark, redis.port(), conns, n, kValue, pipeline,
                                  tests));
  };
  auto cistern_get = [&](int threads, int cpu) {
    uint64_t per = n_single / threads;
    auto wall = RunThreads(d, threads, cpu, [&](int t, Client& c) {
      alignas(64) std::byte out[kValue];
      for (uint64_t i = 0; i < per; ++i) {
        const std::string& k = keys[(i + t * 17) % kKeys];
        auto v = c.Get(k);
        if (!v.ok() || v->size() != kValue) Die("get " + k + ": " + v.status().ToString());
        std::memcpy(out, v->data(), kValue);
        Escape(out);
      }
    });
    return double(per * threads) / Seconds(wall);
  };
  auto cistern_put = [&](int threads, int cpu) {
    uint64_t per = n_single / threads;
    auto wall = RunThreads(d, threads, cpu, [&](int t, Client& c) {
      std::string k = fmt::format("w4k-{}", t);
      for (uint64_t i = 0; i < per; ++i) {
        auto r = c.Put(k, val.span(kValue));
        if (!r.ok()) Die("put " + k + ": " + r.status().ToString());
      }
    });
    return double(per * threads) / Seconds(wall);
  };
  auto cistern_batch = [&](int threads, int cpu) {
    uint64_t batches = n_batch / kBatch / threads;
    auto wall = RunThreads(d, threads, cpu, [&](int t, Client& c) {
      std::vector<std::string> ks(kBatch);
      for (int j = 0; j < kBatch; ++j) ks[j] = keys[(j + t * 17) % kKeys];
      std::vector<std::byte> out(kValue * kBatch);
      std::vector<ObjectView> views;
      views.reserve(kBatch);
      for (uint64_t b = 0; b < batches; ++b) {
        auto got = c.GetMany(ks);
        views.clear();
        for (int j = 0; j < kBatch; ++j) {
          if (!got[j].ok() || got[j]->size() != kValue) {
            Die("get_many " + ks[j] + ": " + got[j].status().ToString());
          }
          std::memcpy(out.data() + j * kValue, got[j]->data(), kValue);
          views.push_back(std::move(*got[j]));
        }
        Escape(out.data());
        Must(c.ReleaseMany(views), "release_many");
      }
    });
    return double(batches * kBatch * threads) / Seconds(wall);
  };

  fmt::print("   {:<9} {:>2} {:<10} {:>13} {:>17} {:>13} {:>17} {:>7}  {}\n", "placement", "C",
             "op", "cistern ops/s", "(min-max)", "redis ops/s", "(min-max)", "ratio", "target");
  std::vector<Json> jrows;
  cpu_set_t all_self;
  ::sched_getaffinity(0, sizeof all_self, &all_self);
  cpu_set_t all_daemon = all_self;
  for (const Placement& pl : placements) {
    int client_cpu = -1;
    if (pl.spread) {
      SetAffinity(d.pid(), OneCpu(0));
      SetAffinity(redis.pid(), OneCpu(0));
      client_cpu = 1;
    }
    for (int conns : {1, 4}) {
      struct Row {
        std::string op, redis_op;
        double target;
        std::vector<double> cistern, redis;
      };
      std::vector<Row> rows = {
          {"get", "GET", 10.0}, {"put", "SET", 2.0}, {"batch get", "GET -P 64", 1.0}};
      for (int rep = 0; rep < pl.reps; ++rep) {
        // redis-benchmark inherits this thread's affinity through popen.
        if (pl.spread) SetAffinity(0, OneCpu(client_cpu));
        std::string out = redis_bench(conns, n_single, 1, "set,get");
        rows[0].redis.push_back(CsvRps(out, "GET"));
        rows[1].redis.push_back(CsvRps(out, "SET"));
        out = redis_bench(conns, n_batch, kBatch, "get");
        rows[2].redis.push_back(CsvRps(out, "GET"));
        if (pl.spread) SetAffinity(0, all_self);
        rows[0].cistern.push_back(cistern_get(conns, client_cpu));
        rows[1].cistern.push_back(cistern_put(conns, client_cpu));
        rows[2].cistern.push_back(cistern_batch(conns, client_cpu));
      }
      for (const Row& r : rows) {
        double c = Median(r.cistern), rd = Median(r.redis);
        auto range = [](const std::vector<double>& v) {
          return fmt::format("({:.0f}-{:.0f})", *std::min_element(v.begin(), v.end()),
                             *std::max_element(v.begin(), v.end()));
        };
        fmt::print(
            "   {:<9} {:>2} {:<10} {:>13.0f} {:>17} {:>13.0f} {:>17} {:>6.2f}x  >= {:.0f}x {}\n",
            pl.name, conns, r.op, c, range(r.cistern), rd, range(r.redis), c / rd, r.target,
            r.redis_op);
        jrows.push_back(JsonObject()
                            .Str("placement", pl.name)
                            .Int("connections", conns)
                            .Str("op", r.op)
                            .Str("redis_op", r.redis_op)
                            .Num("cistern_ops_per_s", c)
                            .Num("redis_ops_per_s", rd)
                            .Num("ratio", c / rd)
                            .Num("target_ratio", r.target)
                            .Raw("cistern_runs", Numbers(r.cistern))
                            .Raw("redis_runs", Numbers(r.redis))
                            .Build());
        if (pl.spread) continue;
        targets->push_back({fmt::format("3. C={} {} / Redis {}", conns, r.op, r.redis_op), "ratio",
                            c / rd, r.target, false});
      }
    }
    if (pl.spread) {
      SetAffinity(d.pid(), all_daemon);
      SetAffinity(redis.pid(), all_daemon);
    }
  }
  json->Raw("vs_redis", JsonObject()
                            .Str("redis_version", redis_version)
                            .Str("redis_transport", "tcp 127.0.0.1")
                            .Int("value_bytes", kValue)
                            .Int("ops_per_single_op_test", n_single)
                            .Int("keys_per_batch_test", n_batch)
                            .Int("batch", kBatch)
                            .Raw("results", Json(jrows))
                            .Build());
}

// ------------------------------------------------------------- 4. memory ----

void BenchMemory(const Options& opt, std::vector<Target>* targets, JsonObject* json) {
  constexpr size_t kKeyBytes = 16, kValueBytes = 64, kBatch = 4096;
  const uint64_t n = opt.objects;
  // A fresh daemon, so the heap it grows is only this phase's.
  Daemon d(opt.cisternd, "-objects", kGiB);
  d.Start();
  auto c = d.MustConnect();
  // One put and remove first, so lazily created per-session and table state exists.
  std::byte value[kValueBytes];
  Fill(value, kValueBytes, 5);
  Must(c->Put("warm", std::span<const std::byte>(value, kValueBytes)), "put warm");
  Must(c->Remove("warm").status(), "remove warm");
  uint64_t before_stats = c->Stats()->tiers(0).used_bytes();
  uint64_t anon0 = ProcStatusBytes(d.pid(), "RssAnon");
  uint64_t shmem0 = ProcStatusBytes(d.pid(), "RssShmem");
  fmt::print(
      "\n== 4. Daemon memory per object: {} objects, {}-byte keys (obj-%012d), {}-byte values "
      "==\n"
      "   PutMany in batches of {} (default options) into a fresh cisternd with a 1 GiB tier; "
      "RssAnon of cisternd from\n"
      "   /proc/<pid>/status before and after. The arena is a MAP_SHARED tmpfs file, counted "
      "in RssShmem, not RssAnon.\n",
      n, kKeyBytes, kValueBytes, kBatch);
  auto t0 = Clock::now();
  std::vector<std::pair<std::string, std::span<const std::byte>>> items;
  for (uint64_t i = 0; i < n; i += kBatch) {
    items.clear();
    for (uint64_t j = i; j < std::min(n, i + kBatch); ++j) {
      items.emplace_back(fmt::format("obj-{:012}", j), std::span<const std::byte>(value));
    }
    for (const auto& r : c->PutMany(items)) Must(r.status(), "put_many");
  }
  double secs = Seconds(Clock::now() - t0);
  DaemonStats st = Must(c->Stats(), "stats");
  if (st.objects() != n) Die(fmt::format("daemon holds {} objects, expected {}", st.objects(), n));
  uint64_t anon1 = ProcStatusBytes(d.pid(), "RssAnon");
  uint64_t shmem1 = ProcStatusBytes(d.pid(), "RssShmem");
  double per = (double(anon1) - double(anon0)) / n;
  double arena_per = (double(st.tiers(0).used_bytes()) - double(before_stats)) / n;
  fmt::print("   {:<44} {:>14}\n", "RssAnon before (bytes)", anon0);
  fmt::print("   {:<44} {:>14}\n", "RssAnon after (bytes)", anon1);
  fmt::print("   {:<44} {:>14.1f}\n", "RssAnon growth per object (bytes)", per);
  fmt::print("   {:<44} {:>14.1f}   target <= 256\n", "  minus the 16-byte key (bytes)",
             per - kKeyBytes);
  fmt::print("   {:<44} {:>14.1f}   (shared memory, not daemon heap)\n",
             "arena bytes used per object", arena_per);
  fmt::print("   {:<44} {:>14} -> {}\n", "RssShmem before -> after (bytes)", shmem0, shmem1);
  fmt::print("   {:<44} {:>14.2f}   ({:.0f} objects/s)\n", "PutMany time (s)", secs, n / secs);
  json->Raw("memory_per_object", JsonObject()
                                     .Int("objects", n)
                                     .Int("key_bytes", kKeyBytes)
                                     .Int("value_bytes", kValueBytes)
                                     .Int("batch", kBatch)
                                     .Int("rss_anon_before", anon0)
                                     .Int("rss_anon_after", anon1)
                                     .Num("rss_anon_per_object", per)
                                     .Num("rss_anon_per_object_minus_key", per - kKeyBytes)
                                     .Num("arena_bytes_per_object", arena_per)
                                     .Int("rss_shmem_before", shmem0)
                                     .Int("rss_shmem_after", shmem1)
                                     .Num("put_many_seconds", secs)
                                     .Build());
  targets->push_back(
      {"4. daemon RssAnon per object minus key", "bytes", per - kKeyBytes, 256, true});
}

// ------------------------------------------------------------ 6. cold puts ----

void BenchColdPuts(const Options& opt, std::vector<Target>* targets, JsonObject* json) {
  const uint64_t n = kGiB;
  Buffer src(n), warm(n);
  Fill(src.data, n, 11);
  Fill(warm.data, n, 12);  // pre-faults the warm memcpy destination
  const int rounds = 2;
  fmt::print(
      "\n== 6. Cold puts: 1 GiB into a daemon just started (GB/s = 1e9 bytes/s) ==\n"
      "   arenas in {}; put: Client::Put(key, 1 GiB, checksum=false), one per fresh daemon;\n"
      "   pre-faulted: timed after the daemon logged its background walk done (walk s = its\n"
      "   own account); memcpy warm: into a pre-faulted heap buffer, the better of two;\n"
      "   memcpy cold: into a fresh file's mapping there; {} rounds\n",
      opt.arena_dir, rounds);
  fmt::print("   {:>5} {:>12} {:>12} {:>14} {:>8} {:>14}\n", "round", "memcpy warm", "memcpy cold",
             "put cold arena", "walk s", "put prefaulted");
  auto gbps = [&](Clock::duration d) { return n / Seconds(d) / 1e9; };
  std::vector<double> r_warm, r_cold, r_put_cold, r_put_pre;
  std::vector<Json> jrows;
  PutOptions po;
  po.checksum = false;
  for (int round = 0; round < rounds; ++round) {
    double mw = 0;  // the better of two copies: the peer at its best
    for (int i = 0; i < 2; ++i) {
      auto t = Clock::now();
      std::memcpy(warm.data, src.data, n);
      mw = std::max(mw, gbps(Clock::now() - t));
    }
    auto t0 = Clock::now();
    double mc = 0;
    {
      std::string path = fmt::format("{}/cistern-bench-{}-cold", opt.arena_dir, getpid());
      AddCleanupPath(path);
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(n)) != 0) Die("cannot make " + path);
      void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) Die("cannot map " + path);
      t0 = Clock::now();
      std::memcpy(p, src.data, n);
      mc = gbps(Clock::now() - t0);
      ::munmap(p, n);
      ::close(fd);
      ::unlink(path.c_str());
    }
    double pc = 0, pp = 0, walk = 0;
    for (bool prefault : {false, true}) {
      Daemon d(opt.cisternd, prefault ? "-pre" : "-lazy", n + 64 * kMiB, opt.arena_dir,
               prefault ? "" : "    prefault: false\n");
      d.Start();
      if (prefault) walk = d.WaitPrefaulted();
      auto c = d.MustConnect();
      t0 = Clock::now();
      Must(c->Put("cold", src.span(n), po).status(), "put of 1 GiB");
      (prefault ? pp : pc) = gbps(Clock::now() - t0);
    }
    fmt::print("   {:>5} {:>12.2f} {:>12.2f} {:>14.2f} {:>8.2f} {:>14.2f}\n", round + 1, mw, mc, pc,
               walk, pp);
    r_warm.push_back(mw);
    r_cold.push_back(mc);
    r_put_cold.push_back(pc);
    r_put_pre.push_back(pp);
    jrows.push_back(JsonObject()
                        .Int("round", round + 1)
                        .Num("memcpy_warm_gbps", mw)
                        .Num("memcpy_cold_gbps", mc)
                        .Num("put_cold_arena_gbps", pc)
                        .Num("prefault_walk_seconds", walk)
                        .Num("put_prefaulted_gbps", pp)
                        .Build());
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  };
  double ratio = median(r_put_pre) / median(r_warm);
  fmt::print(
      "   median: put into a pre-faulted arena {:.2f} GB/s = {:.2f}x warm memcpy; into a cold "
      "arena {:.2f} GB/s = {:.2f}x; cold memcpy {:.2f}x\n",
      median(r_put_pre), ratio, median(r_put_cold), median(r_put_cold) / median(r_warm),
      median(r_cold) / median(r_warm));
  targets->push_back(
      {"6. 1 GiB put into a pre-faulted arena / warm memcpy", "ratio of GB/s", ratio, 0.8, false});
  json->Raw("cold_puts", JsonObject()
                             .Str("arena_dir", opt.arena_dir)
                             .Raw("rounds", Json(jrows))
                             .Num("put_prefaulted_over_warm_memcpy", ratio)
                             .Build());
}

int Main(int argc, char** argv) {
  Options opt = ParseArgs(argc, argv);
  InstallCleanupHandlers();
  if (::access(opt.cisternd.c_str(), X_OK) != 0) Die("no cisternd at " + opt.cisternd);

  utsname u{};
  ::uname(&u);
  std::string cpu = CpuModel(), load0 = LoadAvg();
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  fmt::print("cistern_store_bench: {} CPUs ({}), kernel {} {}, load average {}, scale {}\n", cpus,
             cpu, u.sysname, u.release, load0, opt.scale);
  auto start = Clock::now();

  std::vector<Target> targets;
  JsonObject json;
  json.Str("benchmark", "cistern_store_bench");
  if (opt.phases.find_first_of("1235") != std::string::npos) {
    Daemon d(opt.cisternd, "", opt.tier_bytes);
    d.Start();
    // Measure nothing while the daemon's background walk takes a core.
    double walk = d.WaitPrefaulted();
    fmt::print("cisternd pid {}, tier of {} at {} (pre-faulted in {:.2f} s)\n", d.pid(),
               SizeName(opt.tier_bytes), d.arena_path(), walk);
    Buffer src(kGiB);
    auto want = [&](char p) { return opt.phases.find(p) != std::string::npos; };
    if (want('1')) BenchGetLatency(opt, d, src, &targets, &json);
    if (want('2')) BenchPutBandwidth(opt, d, src, &targets, &json);
    if (want('3')) BenchVsRedis(opt, d, &targets, &json);
    if (want('5')) BenchStreamAcks(opt, d, &targets, &json);
  }
  if (opt.phases.find('4') != std::string::npos) BenchMemory(opt, &targets, &json);
  if (opt.phases.find('6') != std::string::npos) BenchColdPuts(opt, &targets, &json);

  double total = Seconds(Clock::now() - start);
  std::string load1 = LoadAvg();
  fmt::print("\n== Targets ==\n   {:<56} {:>10} {:>10}  {}\n", "target", "measured", "threshold",
             "verdict");
  std::vector<Json> jt;
  int met = 0;
  for (const Target& t : targets) {
    std::string verdict = t.met() ? fmt::format("met (margin {:.1f}%)", 100 * t.margin())
                                  : fmt::format("MISSED by {:.1f}%", -100 * t.margin());
    met += t.met();
    fmt::print("   {:<56} {:>10.3f} {:>3}{:>7.2f}  {}\n", t.name, t.value,
               t.at_most ? "<=" : ">=", t.threshold, verdict);
    jt.push_back(JsonObject()
                     .Str("target", t.name)
                     .Str("unit", t.measured_as)
                     .Num("measured", t.value)
                     .Str("comparison", t.at_most ? "<=" : ">=")
                     .Num("threshold", t.threshold)
                     .Bool("met", t.met())
                     .Num("margin_fraction", t.margin())
                     .Build());
  }
  fmt::print("   {} of {} met. Total run {:.1f} s; load average {} at start, {} at end\n", met,
             targets.size(), total, load0, load1);

  if (!opt.json_path.empty()) {
    json.Raw("machine", JsonObject()
                            .Int("cpus_online", cpus)
                            .Str("cpu_model", cpu)
                            .Str("kernel", fmt::format("{} {}", u.sysname, u.release))
                            .Str("load_average_start", load0)
                            .Str("load_average_end", load1)
                            .Build())
        .Num("scale", opt.scale)
        .Num("total_seconds", total)
        .Raw("targets", Json(jt));
    std::ofstream f(opt.json_path);
    f << json.Build().dump(2) << "\n";
    if (!f) Die("cannot write " + opt.json_path);
    fmt::print("wrote {}\n", opt.json_path);
  }
  return 0;
}

}  // namespace
}  // namespace cistern::bench

int main(int argc, char** argv) { return cistern::bench::Main(argc, argv); }

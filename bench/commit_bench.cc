// cistern_commit_bench: what a stream committer does to everyone else's gets
// (issue 13, item 5; docs/benchmarks.md, "A get while a session commits").
//
// For each ledger mode, a fresh cisternd with one 256 MiB tier whose registry
// database is on disk (its runtime_dir, under /tmp; not tmpfs, where an
// fsync costs nothing):
//   group commit  the default: the loop writes the transaction, a sync
//                 thread fdatasyncs, the commit's reply waits for it;
//   sync on loop  registry.sync_on_loop: true, every ledger write fsyncs on
//                 the event loop (the behaviour before group commit).
// In each, a getter thread times Get + release of one 4 KiB object for
// --seconds, over the socket (fast_path = false: one round trip through the
// event loop) and then on the fast path (no round trip): first alone, then
// while --committers threads each put a 64-byte object and commit it to a
// stream, one ref per commit, as fast as their replies come. Reported: the
// get's p50, p99 and p99.9, the commits per second, and the ratio of the
// get's p99 with the committers to without (the target: within 2x).
// Modes alternate in order over --rounds. --hogs N adds N spinning
// processes for the whole run: a busy host. Not a pass/fail test: tables,
// and JSON with --json.

#include "bench/bench_common.h"
#include "include/cistern/stream.h"

namespace cistern::bench {
namespace {

struct Options {
  std::string cisternd = std::string(CISTERN_BUILD_DIR) + "/src/daemon/cisternd";
  std::string json_path;
  int rounds = 2;
  double seconds = 4;
  int committers = 1;
  int hogs = 0;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) Die(fmt::format("{} needs a value", argv[i]));
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--cisternd") {
      o.cisternd = need(i);
    } else if (a == "--json") {
      o.json_path = need(i);
    } else if (a == "--rounds") {
      o.rounds = std::max(1, std::atoi(need(i).c_str()));
    } else if (a == "--seconds") {
      o.seconds = std::strtod(need(i).c_str(), nullptr);
    } else if (a == "--committers") {
      o.committers = std::max(1, std::atoi(need(i).c_str()));
    } else if (a == "--hogs") {
      o.hogs = std::atoi(need(i).c_str());
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: cistern_commit_bench [--cisternd PATH] [--json FILE] [--rounds N]\n"
          "                            [--seconds S] [--committers N] [--hogs N]\n"
          "  --rounds N      times each mode is measured, order alternating (default 2)\n"
          "  --seconds S     each timed get window (default 4)\n"
          "  --committers N  sessions committing at full rate (default 1)\n"
          "  --hogs N        N spinning processes beside the run (default 0)\n");
      std::exit(0);
    } else {
      Die("unknown argument '" + a + "' (see --help)");
    }
  }
  if (const char* y = getenv("CISTERN_BENCH_DAEMON_YAML"); y && strstr(y, "registry")) {
    Die("CISTERN_BENCH_DAEMON_YAML sets registry keys; this benchmark sets them itself");
  }
  return o;
}

struct GetResult {
  LatencyStats stats;
  double p999_ns = 0;
};

struct Window {
  std::string path;  // "socket" or "fast"
  bool committing = false;
  GetResult get;
  double commits_per_s = 0;
};

struct ModeResult {
  std::string mode;
  int round = 0;
  std::vector<Window> windows;
};

// Gets of "hot" for `seconds` on `c`, each timed with its release.
GetResult TimeGets(Client& c, double seconds) {
  std::vector<double> ns;
  ns.reserve(1 << 20);
  auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    auto t0 = Clock::now();
    {
      auto v = c.Get("hot");
      if (!v.ok()) Die(fmt::format("get hot: {}", v.status().ToString()));
      Escape(v->data());
    }
    ns.push_back(Nanos(Clock::now() - t0));
  }
  GetResult r;
  std::vector<double> sorted = ns;
  std::sort(sorted.begin(), sorted.end());
  r.p999_ns = sorted.empty() ? 0 : sorted[std::min(sorted.size() - 1, sorted.size() * 999 / 1000)];
  r.stats = Summarize(std::move(ns));
  return r;
}

// Committer threads: put a 64-byte object, commit it (one ref), repeat.
class Committers {
 public:
  Committers(const Daemon& d, int n, int round) {
    for (int t = 0; t < n; ++t) clients_.push_back(d.MustConnect());
    auto s = Stream::Open(clients_[0].get(), "bench");
    if (!s.ok()) Die(fmt::format("open stream: {}", s.status().ToString()));
    for (int t = 0; t < n; ++t) {
      threads_.emplace_back([this, t, round] {
        auto s = Stream::Open(clients_[t].get(), "bench");
        if (!s.ok()) Die(fmt::format("open stream: {}", s.status().ToString()));
        std::string value(64, 'c');
        for (uint64_t i = 0; !stop_.load(std::memory_order_relaxed); ++i) {
          std::string key = fmt::format("c/{}/{}/{}", round, t, i);
          auto ref = clients_[t]->Put(key, value);
          if (!ref.ok()) Die(fmt::format("put {}: {}", key, ref.status().ToString()));
          auto r =
              s->Commit({SampleRef{.sample_id = key, .key = key, .generation = ref->generation}});
          if (!r.ok()) Die(fmt::format("commit {}: {}", key, r.status().ToString()));
          commits_.fetch_add(1, std::memory_order_relaxed);
        }
      });
    }
  }
  ~Committers() { Stop(); }
  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  uint64_t commits() const { return commits_.load(); }

 private:
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> commits_{0};
};

ModeResult MeasureMode(const Options& opt, bool sync_on_loop, int round) {
  ModeResult m;
  m.mode = sync_on_loop ? "sync on loop" : "group commit";
  m.round = round;
  Daemon d(opt.cisternd, sync_on_loop ? "-loop" : "-group", 256 << 20, "/dev/shm", "",
           sync_on_loop ? "registry:\n  sync_on_loop: true\n" : "");
  d.Start();
  {
    auto c = d.MustConnect();
    Must(c->Put("hot", std::string(4096, 'h')).status(), "put hot");
  }
  for (bool fast : {false, true}) {
    auto getter = d.MustConnect(fast);
    Must(getter->Get("hot").status(), "warm-up get");
    for (bool committing : {false, true}) {
      Window w;
      w.path = fast ? "fast" : "socket";
      w.committing = committing;
      std::unique_ptr<Committers> cs;
      if (committing) {
        cs = std::make_unique<Committers>(d, opt.committers, round * 2 + fast);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      uint64_t before = cs ? cs->commits() : 0;
      auto t0 = Clock::now();
      w.get = TimeGets(*getter, opt.seconds);
      if (cs) {
        w.commits_per_s = (cs->commits() - before) / Seconds(Clock::now() - t0);
        cs->Stop();
      }
      m.windows.push_back(w);
    }
  }
  return m;
}

void Print(const ModeResult& m) {
  fmt::print("\n== {} (round {}) ==\n", m.mode, m.round);
  fmt::print("   {:<8} {:<12} {:>10} {:>10} {:>11} {:>11}\n", "get", "committers", "p50 us",
             "p99 us", "p99.9 us", "commits/s");
  for (const Window& w : m.windows) {
    fmt::print("   {:<8} {:<12} {:>10.1f} {:>10.1f} {:>11.1f} {:>11.0f}\n", w.path,
               w.committing ? "committing" : "none", w.get.stats.p50_ns / 1e3,
               w.get.stats.p99_ns / 1e3, w.get.p999_ns / 1e3, w.commits_per_s);
  }
}

// The p99 with the committers over the p99 without, per mode and path.
void PrintSummary(const std::vector<ModeResult>& all) {
  fmt::print("\n== get p99 with committers / without (target: within 2x) ==\n");
  for (const ModeResult& m : all) {
    for (size_t i = 0; i + 1 < m.windows.size(); i += 2) {
      const Window& quiet = m.windows[i];
      const Window& busy = m.windows[i + 1];
      fmt::print(
          "   {:<14} round {}  {:<7} {:>6.2f}x  (p99 {:.1f} -> {:.1f} us, p99.9 {:.1f} -> "
          "{:.1f} us, {:.0f} commits/s)\n",
          m.mode, m.round, quiet.path, busy.get.stats.p99_ns / quiet.get.stats.p99_ns,
          quiet.get.stats.p99_ns / 1e3, busy.get.stats.p99_ns / 1e3, quiet.get.p999_ns / 1e3,
          busy.get.p999_ns / 1e3, busy.commits_per_s);
    }
  }
}

Json ToJson(const ModeResult& m) {
  Json windows = Json::array();
  for (const Window& w : m.windows) {
    windows.push_back(JsonObject()
                          .Str("get", w.path)
                          .Bool("committing", w.committing)
                          .Int("gets", w.get.stats.n)
                          .Num("p50_us", w.get.stats.p50_ns / 1e3)
                          .Num("p99_us", w.get.stats.p99_ns / 1e3)
                          .Num("p999_us", w.get.p999_ns / 1e3)
                          .Num("commits_per_s", w.commits_per_s)
                          .Build());
  }
  return JsonObject().Str("mode", m.mode).Int("round", m.round).Raw("windows", windows).Build();
}

int Main(int argc, char** argv) {
  Options opt = ParseArgs(argc, argv);
  InstallCleanupHandlers();
  if (::access(opt.cisternd.c_str(), X_OK) != 0) Die("no cisternd at " + opt.cisternd);
  std::string load0 = LoadAvg();
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  fmt::print(
      "cistern_commit_bench: {} CPUs ({}), kernel {}, load average {}; {} rounds, {} s per "
      "window, {} committers, {} hogs\n",
      cpus, CpuModel(), KernelName(), load0, opt.rounds, opt.seconds, opt.committers, opt.hogs);
  auto start = Clock::now();
  std::vector<pid_t> hogs = StartHogs(opt.hogs);
  std::vector<ModeResult> all;
  for (int round = 1; round <= opt.rounds; ++round) {
    for (bool sync_on_loop : {round % 2 == 0, round % 2 != 0}) {
      all.push_back(MeasureMode(opt, sync_on_loop, round));
      Print(all.back());
    }
  }
  StopHogs(hogs);
  PrintSummary(all);
  double total = Seconds(Clock::now() - start);
  std::string load1 = LoadAvg();
  fmt::print("   Total run {:.1f} s; load average {} at start, {} at end\n", total, load0, load1);
  if (!opt.json_path.empty()) {
    std::vector<Json> rows;
    for (const ModeResult& m : all) rows.push_back(ToJson(m));
    Json j = JsonObject()
                 .Str("benchmark", "cistern_commit_bench")
                 .Raw("machine", MachineJson(load0, load1))
                 .Int("committers", opt.committers)
                 .Int("hogs", opt.hogs)
                 .Num("seconds", opt.seconds)
                 .Num("total_seconds", total)
                 .Raw("results", Json(rows))
                 .Build();
    WriteJson(opt.json_path, j);
  }
  return 0;
}

}  // namespace
}  // namespace cistern::bench

int main(int argc, char** argv) { return cistern::bench::Main(argc, argv); }

// cistern_poll_bench: what cisternd's busy polling (busy_poll_us) costs in CPU
// and buys in latency (issue 13; docs/benchmarks.md, "Busy polling: CPU cost").
//
// For each busy_poll_us value (--polls, default 200,50,20,0) a fresh cisternd
// with one 256 MiB tier is measured; rounds repeat the values in alternating
// order. Per daemon:
//   idle: its CPU time over --idle-seconds with no client, then with one
//     connected client that did one put and one get and then sends nothing;
//     and how often each of its threads was scheduled in (wakeups).
//   ops: for --op-seconds each (after a short warm-up), the daemon's CPU
//     seconds per million ops, the client's, and the latency p50/p99 of
//       socket get   Get + release of 4 KiB with fast_path = false (a round
//                    trip and a one-way release), closed loop, C=1;
//       paced get    the same, one started every 100 us and every 1 ms: the
//                    gaps a polling daemon may or may not bridge;
//       fast get     Get + release on the fast path (no round trip), C=1;
//       put          Put of 4 KiB (create + seal, checksum on), overwriting
//                    one key per thread, C=1 and C=4.
// Daemon CPU: the sum over its threads of /proc/<pid>/task/<tid>/schedstat
// (nanoseconds on a CPU; the third field counts the times the thread was
// scheduled in), with utime+stime of /proc/<pid>/stat (clock ticks) beside it.
// Client CPU: getrusage(RUSAGE_SELF) of this process, whose only busy threads
// are the clients. Each daemon's header also says how many CPUs other
// processes took meanwhile (/proc/stat's busy time less this process's, the
// daemon's and the hogs'): the load average counts this benchmark's own
// runnable threads. --hogs N starts N processes that spin (nice 0) for the
// whole run: a busy host. Not a pass/fail test: tables, and JSON with --json.
#include <sys/prctl.h>
#include <sys/resource.h>

#include <functional>
#include <iterator>
#include <map>
#include <span>

#include "bench/bench_common.h"
#include "src/common/units.h"

namespace cistern::bench {
namespace {

struct Options {
  std::string cisternd = std::string(CISTERN_BUILD_DIR) + "/src/daemon/cisternd";
  std::string json_path;
  std::vector<uint32_t> polls = {200, 50, 20, 0};
  int rounds = 2;
  double idle_seconds = 10;
  double op_seconds = 3;
  int hogs = 0;
};

std::vector<uint32_t> ParseList(const std::string& s) {
  std::vector<uint32_t> out;
  std::istringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoul(item));
  if (out.empty()) Die("--polls needs at least one value");
  return out;
}

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
    } else if (a == "--polls") {
      o.polls = ParseList(need(i));
    } else if (a == "--rounds") {
      o.rounds = std::max(1, std::atoi(need(i).c_str()));
    } else if (a == "--idle-seconds") {
      o.idle_seconds = std::strtod(need(i).c_str(), nullptr);
    } else if (a == "--op-seconds") {
      o.op_seconds = std::strtod(need(i).c_str(), nullptr);
    } else if (a == "--hogs") {
      o.hogs = std::atoi(need(i).c_str());
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: cistern_poll_bench [--cisternd PATH] [--json FILE] [--polls 200,50,20,0]\n"
          "                          [--rounds N] [--idle-seconds S] [--op-seconds S] [--hogs N]\n"
          "  --polls L        busy_poll_us values to compare (default 200,50,20,0)\n"
          "  --rounds N       times each value is measured, order alternating (default 2)\n"
          "  --idle-seconds S each idle window (default 10)\n"
          "  --op-seconds S   each timed workload (default 3)\n"
          "  --hogs N         N spinning processes beside the run (default 0)\n");
      std::exit(0);
    } else {
      Die("unknown argument '" + a + "' (see --help)");
    }
  }
  if (const char* y = getenv("CISTERN_BENCH_DAEMON_YAML"); y && strstr(y, "busy_poll_us")) {
    Die("CISTERN_BENCH_DAEMON_YAML sets busy_poll_us; this benchmark sets it itself (--polls)");
  }
  return o;
}

// ------------------------------------------------------------- daemon CPU ----

struct ThreadCpu {
  std::string comm;
  uint64_t ns = 0;      // on a CPU
  uint64_t slices = 0;  // times scheduled in
};

struct DaemonCpu {
  double stat_seconds = 0;  // utime + stime of the whole process
  std::map<int, ThreadCpu> threads;
};

// utime + stime of a process, all its threads (clock ticks, so 10 ms steps).
double ProcessCpuSeconds(pid_t pid) {
  std::string stat = ReadFile(fmt::format("/proc/{}/stat", pid));
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) Die(fmt::format("cannot read /proc/{}/stat", pid));
  std::istringstream in(stat.substr(paren + 2));
  std::vector<std::string> f(std::istream_iterator<std::string>(in), {});
  if (f.size() < 13) Die(fmt::format("short /proc/{}/stat", pid));
  // f[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (std::stod(f[11]) + std::stod(f[12])) / ::sysconf(_SC_CLK_TCK);
}

// CPU seconds the whole machine spent busy (every CPU, /proc/stat: all but
// idle and iowait).
double MachineBusySeconds() {
  std::istringstream in(ReadFile("/proc/stat"));
  std::string cpu;
  in >> cpu;
  double busy = 0, v;
  for (int i = 0; i < 8 && in >> v; ++i) {
    if (i != 3 && i != 4) busy += v;  // 3 idle, 4 iowait
  }
  return busy / ::sysconf(_SC_CLK_TCK);
}

DaemonCpu SampleDaemon(pid_t pid) {
  DaemonCpu out;
  out.stat_seconds = ProcessCpuSeconds(pid);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    int tid = std::atoi(e.path().filename().c_str());
    std::istringstream ss(ReadFile(e.path().string() + "/schedstat"));
    ThreadCpu t;
    uint64_t wait_ns = 0;
    if (!(ss >> t.ns >> wait_ns >> t.slices)) continue;  // exited meanwhile
    t.comm = ReadFile(e.path().string() + "/comm");
    while (!t.comm.empty() && t.comm.back() == '\n') t.comm.pop_back();
    out.threads[tid] = t;
  }
  return out;
}

// What happened between two samples; a thread that started between them
// counts from zero, one that ended is lost from the per-thread sums (but not
// from stat_seconds).
struct CpuDelta {
  double seconds = 0;       // from schedstat
  double stat_seconds = 0;  // from /proc/<pid>/stat
  uint64_t slices = 0;
  std::vector<std::pair<std::string, ThreadCpu>> per_thread;  // "comm/tid"
};

CpuDelta Diff(const DaemonCpu& a, const DaemonCpu& b) {
  CpuDelta d;
  d.stat_seconds = b.stat_seconds - a.stat_seconds;
  for (const auto& [tid, t] : b.threads) {
    ThreadCpu x = t;
    if (auto it = a.threads.find(tid); it != a.threads.end()) {
      x.ns -= it->second.ns;
      x.slices -= it->second.slices;
    }
    d.seconds += x.ns / 1e9;
    d.slices += x.slices;
    d.per_thread.push_back({fmt::format("{}/{}", t.comm, tid), x});
  }
  return d;
}

double ClientCpuSeconds() {
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  auto s = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return s(r.ru_utime) + s(r.ru_stime);
}

// --------------------------------------------------------------- measure ----

struct IdleResult {
  std::string name;
  double window_s = 0;
  CpuDelta daemon;
  double client_cpu_s = 0;
};

IdleResult MeasureIdle(const Daemon& d, const std::string& name, double seconds) {
  std::this_thread::sleep_for(std::chrono::seconds(1));  // past any polling and closing
  IdleResult r;
  r.name = name;
  DaemonCpu a = SampleDaemon(d.pid());
  double c0 = ClientCpuSeconds();  // not counting the samples' own reads of /proc
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  r.client_cpu_s = ClientCpuSeconds() - c0;
  DaemonCpu b = SampleDaemon(d.pid());
  r.window_s = Seconds(Clock::now() - t0);
  r.daemon = Diff(a, b);
  return r;
}

struct OpResult {
  std::string name;
  int threads = 1;
  uint64_t ops = 0;
  double wall_s = 0;
  LatencyStats latency;
  CpuDelta daemon;
  double client_cpu_s = 0;
  double DaemonPerMillion() const { return daemon.seconds / ops * 1e6; }
  double ClientPerMillion() const { return client_cpu_s / ops * 1e6; }
};

// One timed op of a workload: returns its latency in ns.
using OpFn = std::function<double(Client&, int thread)>;

// Runs `op` on `threads` threads, each with its own client, for `seconds`
// after a warm-up of a tenth of that. With `interval` > 0 each thread starts
// an op every `interval` (no catching up when late). Latency is kept for
// every `sample_every`th op.
OpResult Measure(const Daemon& d, const std::string& name, int threads, bool fast_path,
                 double seconds, std::chrono::microseconds interval, int sample_every, OpFn op) {
  std::vector<std::unique_ptr<Client>> clients;
  for (int t = 0; t < threads; ++t) clients.push_back(d.MustConnect(fast_path));
  std::atomic<int> phase{0};  // 0 wait, 1 warm-up, 2 timed, 3 stop
  std::atomic<int> started{0};
  std::vector<std::vector<double>> lat(threads);
  std::vector<uint64_t> ops(threads, 0);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      ::prctl(PR_SET_TIMERSLACK, 1000UL);  // paced ops: wake within ~1 us of the mark
      started.fetch_add(1);
      phase.wait(0);
      Clock::time_point next = Clock::now();
      uint64_t i = 0;
      bool timing = false;
      for (int p; (p = phase.load(std::memory_order_relaxed)) != 3;) {
        if (p == 2 && !timing) {
          timing = true;
          i = 0;
        }
        if (interval.count() > 0) {
          next += interval;
          Clock::time_point now = Clock::now();
          if (next > now) {
            std::this_thread::sleep_until(next);
          } else {
            next = now;
          }
        }
        double ns = op(*clients[t], t);
        if (timing) {
          if (i % sample_every == 0) lat[t].push_back(ns);
          ++i;
        }
      }
      ops[t] = i;
    });
  }
  while (started.load() < threads) std::this_thread::yield();
  phase.store(1);
  phase.notify_all();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds / 10));
  DaemonCpu a = SampleDaemon(d.pid());
  double c0 = ClientCpuSeconds();
  auto t0 = Clock::now();
  phase.store(2);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  phase.store(3);
  for (auto& th : ts) th.join();
  OpResult r;
  r.wall_s = Seconds(Clock::now() - t0);
  r.client_cpu_s = ClientCpuSeconds() - c0;
  r.daemon = Diff(a, SampleDaemon(d.pid()));
  r.name = name;
  r.threads = threads;
  std::vector<double> all;
  for (int t = 0; t < threads; ++t) {
    r.ops += ops[t];
    all.insert(all.end(), lat[t].begin(), lat[t].end());
  }
  r.latency = Summarize(std::move(all));
  return r;
}

// ------------------------------------------------------------------ round ----

struct ConfigResult {
  uint32_t poll_us = 0;
  int round = 0;
  std::string load_start;
  // What other processes (not this one, its daemon or its hogs) took of the
  // machine while this daemon was measured: CPU seconds per second.
  double others_cpus = 0;
  std::vector<IdleResult> idle;
  std::vector<OpResult> ops;
};

ConfigResult MeasureConfig(const Options& opt, uint32_t poll_us, int round,
                           const std::vector<pid_t>& hogs) {
  ConfigResult cr;
  cr.poll_us = poll_us;
  cr.round = round;
  cr.load_start = LoadAvg();
  Daemon d(opt.cisternd, fmt::format("-poll{}", poll_us), 256 * kMiB, "/dev/shm", "",
           fmt::format("busy_poll_us: {}\n", poll_us));
  d.Start();
  d.WaitPrefaulted();
  auto ours = [&] {
    double s = ClientCpuSeconds() + ProcessCpuSeconds(d.pid());
    for (pid_t h : hogs) s += ProcessCpuSeconds(h);
    return s;
  };
  const double busy0 = MachineBusySeconds(), ours0 = ours();
  const auto t0 = Clock::now();
  cr.idle.push_back(MeasureIdle(d, "no client", opt.idle_seconds));
  constexpr uint64_t kValue = 4 * kKiB;
  std::vector<std::byte> value(kValue);
  for (size_t i = 0; i < kValue; ++i) value[i] = std::byte(i * 7);
  const std::span<const std::byte> val(value);
  {
    auto c = d.MustConnect();
    Must(c->Put("poll-4KiB", val).status(), "put poll-4KiB");
    Must(c->Get("poll-4KiB").status(), "get poll-4KiB");
    cr.idle.push_back(MeasureIdle(d, "one silent client", opt.idle_seconds));
  }
  auto get = [](Client& c, int) {
    auto t0 = Clock::now();
    {
      auto v = c.Get("poll-4KiB");
      if (!v.ok() || v->size() != kValue) Die("get poll-4KiB: " + v.status().ToString());
      Escape(v->data());
    }
    return Nanos(Clock::now() - t0);
  };
  auto put = [&](Client& c, int t) {
    std::string key = fmt::format("poll-w{}", t);
    auto t0 = Clock::now();
    if (auto r = c.Put(key, val); !r.ok()) Die("put " + key + ": " + r.status().ToString());
    return Nanos(Clock::now() - t0);
  };
  using std::chrono::microseconds;
  const double s = opt.op_seconds;
  cr.ops.push_back(Measure(d, "socket get, C=1", 1, false, s, microseconds(0), 1, get));
  cr.ops.push_back(Measure(d, "socket get, 1 per 100 us", 1, false, s, microseconds(100), 1, get));
  cr.ops.push_back(Measure(d, "socket get, 1 per 1 ms", 1, false, s, microseconds(1000), 1, get));
  cr.ops.push_back(Measure(d, "fast get, C=1", 1, true, s, microseconds(0), 16, get));
  cr.ops.push_back(Measure(d, "put, C=1", 1, true, s, microseconds(0), 1, put));
  cr.ops.push_back(Measure(d, "put, C=4", 4, true, s, microseconds(0), 1, put));
  cr.others_cpus =
      std::max(0.0, (MachineBusySeconds() - busy0) - (ours() - ours0)) / Seconds(Clock::now() - t0);
  return cr;
}

void Print(const ConfigResult& cr) {
  fmt::print(
      "\n== busy_poll_us {} (round {}), load average {}; other processes took {:.2f} CPUs ==\n",
      cr.poll_us, cr.round, cr.load_start, cr.others_cpus);
  for (const IdleResult& r : cr.idle) {
    std::string threads;
    for (const auto& [name, t] : r.daemon.per_thread) {
      if (t.slices == 0 && t.ns == 0) continue;
      threads += fmt::format(" {} {:.1f}/s {:.2f} ms;", name, t.slices / r.window_s, t.ns / 1e6);
    }
    fmt::print(
        "   idle, {:<18} daemon {:.4f} s CPU in {:.1f} s ({:.3f}% of a core; stat {:.2f} s), "
        "{:.1f} wakeups/s; client {:.4f} s\n"
        "      threads scheduled in:{}\n",
        r.name + ":", r.daemon.seconds, r.window_s, 100 * r.daemon.seconds / r.window_s,
        r.daemon.stat_seconds, r.daemon.slices / r.window_s, r.client_cpu_s,
        threads.empty() ? " none" : threads);
  }
  fmt::print("   {:<26} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9} {:>12} {:>11}\n", "op", "ops", "ops/s",
             "p50 us", "p99 us", "daemon s/M", "daemon %", "client s/M", "wakeups/op");
  for (const OpResult& r : cr.ops) {
    fmt::print(
        "   {:<26} {:>9} {:>9.0f} {:>9.2f} {:>9.2f} {:>12.2f} {:>8.1f}% {:>12.2f} {:>11.2f}\n",
        r.name, r.ops, r.ops / r.wall_s, r.latency.p50_ns / 1e3, r.latency.p99_ns / 1e3,
        r.DaemonPerMillion(), 100 * r.daemon.seconds / r.wall_s, r.ClientPerMillion(),
        double(r.daemon.slices) / r.ops);
  }
}

Json ToJson(const ConfigResult& cr) {
  std::vector<Json> idle, ops;
  for (const IdleResult& r : cr.idle) {
    Json threads = Json::array();
    for (const auto& [name, t] : r.daemon.per_thread) {
      threads.push_back(JsonObject()
                            .Str("thread", name)
                            .Num("cpu_seconds", t.ns / 1e9)
                            .Int("scheduled_in", t.slices)
                            .Build());
    }
    idle.push_back(JsonObject()
                       .Str("clients", r.name)
                       .Num("window_seconds", r.window_s)
                       .Num("daemon_cpu_seconds", r.daemon.seconds)
                       .Num("daemon_stat_cpu_seconds", r.daemon.stat_seconds)
                       .Num("daemon_wakeups_per_second", r.daemon.slices / r.window_s)
                       .Num("client_cpu_seconds", r.client_cpu_s)
                       .Raw("threads", threads)
                       .Build());
  }
  for (const OpResult& r : cr.ops) {
    ops.push_back(JsonObject()
                      .Str("op", r.name)
                      .Int("threads", r.threads)
                      .Int("ops", r.ops)
                      .Num("seconds", r.wall_s)
                      .Num("ops_per_second", r.ops / r.wall_s)
                      .Num("p50_us", r.latency.p50_ns / 1e3)
                      .Num("p99_us", r.latency.p99_ns / 1e3)
                      .Num("mean_us", r.latency.mean_ns / 1e3)
                      .Num("daemon_cpu_seconds", r.daemon.seconds)
                      .Num("daemon_stat_cpu_seconds", r.daemon.stat_seconds)
                      .Num("daemon_cpu_seconds_per_million_ops", r.DaemonPerMillion())
                      .Num("client_cpu_seconds_per_million_ops", r.ClientPerMillion())
                      .Num("daemon_wakeups_per_op", double(r.daemon.slices) / r.ops)
                      .Build());
  }
  return JsonObject()
      .Int("busy_poll_us", cr.poll_us)
      .Int("round", cr.round)
      .Str("load_average_start", cr.load_start)
      .Num("other_processes_cpus", cr.others_cpus)
      .Raw("idle", Json(idle))
      .Raw("ops", Json(ops))
      .Build();
}

// Per op and busy_poll_us, over the rounds: daemon s/M ops and p50, each as
// median (min-max).
void PrintSummary(const Options& opt, const std::vector<ConfigResult>& all) {
  fmt::print("\n== Summary over {} rounds: median (min-max) ==\n", opt.rounds);
  fmt::print("   {:<26} {:>6} {:>26} {:>24} {:>24}\n", "op", "poll", "daemon CPU s / M ops",
             "p50 us", "p99 us");
  auto cell = [](std::vector<double> v, int prec) {
    return fmt::format("{:.{}f} ({:.{}f}-{:.{}f})", Median(v), prec,
                       *std::min_element(v.begin(), v.end()), prec,
                       *std::max_element(v.begin(), v.end()), prec);
  };
  for (size_t i = 0; i < all.front().idle.size(); ++i) {
    for (uint32_t poll : opt.polls) {
      std::vector<double> cpu, wakeups;
      for (const ConfigResult& cr : all) {
        if (cr.poll_us != poll) continue;
        const IdleResult& r = cr.idle[i];
        cpu.push_back(r.daemon.seconds / r.window_s * 1e6);
        wakeups.push_back(r.daemon.slices / r.window_s);
      }
      fmt::print("   {:<26} {:>6} {:>26} {:>24}  (idle: CPU us per s, wakeups per s)\n",
                 "idle, " + all.front().idle[i].name, poll, cell(cpu, 1), cell(wakeups, 1));
    }
  }
  for (size_t i = 0; i < all.front().ops.size(); ++i) {
    for (uint32_t poll : opt.polls) {
      std::vector<double> cpu, p50, p99;
      for (const ConfigResult& cr : all) {
        if (cr.poll_us != poll) continue;
        cpu.push_back(cr.ops[i].DaemonPerMillion());
        p50.push_back(cr.ops[i].latency.p50_ns / 1e3);
        p99.push_back(cr.ops[i].latency.p99_ns / 1e3);
      }
      fmt::print("   {:<26} {:>6} {:>26} {:>24} {:>24}\n", all.front().ops[i].name, poll,
                 cell(cpu, 2), cell(p50, 2), cell(p99, 1));
    }
  }
}

int Main(int argc, char** argv) {
  Options opt = ParseArgs(argc, argv);
  InstallCleanupHandlers();
  if (::access(opt.cisternd.c_str(), X_OK) != 0) Die("no cisternd at " + opt.cisternd);
  std::string load0 = LoadAvg();
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  std::string polls;
  for (uint32_t p : opt.polls) polls += fmt::format("{}{}", polls.empty() ? "" : ",", p);
  fmt::print(
      "cistern_poll_bench: {} CPUs ({}), kernel {}, load average {}; busy_poll_us {}, "
      "{} rounds, idle {} s, ops {} s each, {} hogs\n",
      cpus, CpuModel(), KernelName(), load0, polls, opt.rounds, opt.idle_seconds, opt.op_seconds,
      opt.hogs);
  auto start = Clock::now();
  std::vector<pid_t> hogs = StartHogs(opt.hogs);
  std::vector<ConfigResult> all;
  for (int round = 1; round <= opt.rounds; ++round) {
    std::vector<uint32_t> order = opt.polls;
    if (round % 2 == 0) std::reverse(order.begin(), order.end());
    for (uint32_t poll : order) {
      all.push_back(MeasureConfig(opt, poll, round, hogs));
      Print(all.back());
    }
  }
  StopHogs(hogs);
  PrintSummary(opt, all);
  double total = Seconds(Clock::now() - start);
  std::string load1 = LoadAvg();
  fmt::print("   Total run {:.1f} s; load average {} at start, {} at end\n", total, load0, load1);
  if (!opt.json_path.empty()) {
    std::vector<Json> rows;
    for (const ConfigResult& cr : all) rows.push_back(ToJson(cr));
    Json j = JsonObject()
                 .Str("benchmark", "cistern_poll_bench")
                 .Raw("machine", MachineJson(load0, load1))
                 .Int("hogs", opt.hogs)
                 .Num("idle_seconds", opt.idle_seconds)
                 .Num("op_seconds", opt.op_seconds)
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

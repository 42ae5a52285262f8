// cistern_registry_bench: the cluster registry (cistern-registry's
// RegistryServer, the catalog, SQLite) side by side with bare SQLite in one
// run, against the registry issue's targets (docs/benchmarks.md, "Cluster
// registry").
//
//   1. Publications acknowledged per second, 8 daemons publishing at once:
//      an in-process RegistryServer (SQLite backend on disk, WAL,
//      synchronous=FULL) on 127.0.0.1, 8 client threads, each with its own
//      RegistryClient (its own TCP connection) and host, each sending Publish
//      requests of B replicas with consecutive seqs for a fixed time, and a
//      Heartbeat every heartbeat interval as a daemon does. Reported:
//      acknowledged replicas/s, Publish p50/p99, requests per group commit
//      (from the server's metrics). Peers, after it, on the same disk: bare
//      SQLite (one writer, one kv table, WAL, synchronous=FULL) inserting the
//      same replica rows with as many rows per transaction as the registry's
//      average group carried; the same with one publication's rows per
//      transaction; and the catalog + SQLite backend in one thread without
//      gRPC (as many publications per Apply as a group carried). Targets:
//      >= 20,000 replicas/s and >= 0.5x bare SQLite.
//   2. Locate: a registry with 100k replicas over 8 hosts, one client thread
//      calling Locate of random keys over gRPC; default scheduling, the
//      registry's threads pinned to one CPU (client on the other), and
//      everything on one CPU; four client threads as a diagnostic; the
//      in-process Catalog::Locate rate for scale. Target: >= 20,000/s with
//      the registry on one CPU.
//   3. Catalog memory per replica at 1M replicas: an in-process Catalog over a
//      backend that discards writes, heap in use (mallinfo2) and RSS before
//      and after 1M replicas (1 per key over 8 hosts; 4 per key over 4
//      hosts). Target: <= 200 bytes per replica.
//   4. Recovery: a SQLite database with 1M replicas over 8 hosts, then a
//      restart (RegistryServer::Start, i.e. Catalog::Load) and 8 daemons
//      registering with a matching StateVersion (no sync), again with the
//      database's pages dropped from the page cache first, and again with
//      each daemon sending its full inventory (SyncInventory, chunks of 4096).
//   5. Publication delay: from the moment a client calls Publish to the
//      moment a Locate from another thread (its own connection) finds the
//      replica, p50/p99, with the registry idle and with the 8 publishers of
//      measurement 1 running.
//
// Databases live in a temporary directory under --dir (default /var/tmp, not
// tmpfs; the filesystem is printed), removed at the end, also on SIGINT and
// SIGTERM. Not a pass/fail test: it prints tables and, with --json FILE,
// writes every number as JSON.
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "cistern/catalog.pb.h"
#include "cistern/registry.grpc.pb.h"
#include "cistern/registry.pb.h"
#include "fmt/format.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"
#include "src/catalog/catalog.h"
#include "src/catalog/records.h"
#include "src/cluster/registry_client.h"
#include "src/registry/metadata_backend.h"
#include "src/registry/sqlite_backend.h"
#include "src/registryd/registry_metrics.h"
#include "src/registryd/registry_server.h"

namespace cistern::bench {
namespace {

namespace v1 = cistern::registry::v1;
using SteadyClock = std::chrono::steady_clock;

constexpr char kCluster[] = "bench";
constexpr char kToken[] = "bench-token";
constexpr uint64_t kReplicaSize = 64ull << 20;  // a 64 MiB layer; only a number here

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }
double Micros(SteadyClock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

// ---------------------------------------------------------------- cleanup ----
// Files and the directory to remove on exit, in plain arrays so that the
// signal handler can unlink them (unlink and rmdir are async-signal-safe).
struct CleanupList {
  static constexpr int kMax = 64;
  char paths[kMax][512] = {};
  std::atomic<int> n{0};
  char dir[512] = {};
};
CleanupList g_cleanup;
bool g_keep = false;

void CleanupNow() {
  if (g_keep) return;
  for (int i = 0; i < std::min(g_cleanup.n.load(), CleanupList::kMax); ++i) {
    ::unlink(g_cleanup.paths[i]);
  }
  if (g_cleanup.dir[0] != '\0') ::rmdir(g_cleanup.dir);
}

void OnSignal(int sig) {
  CleanupNow();
  ::_exit(128 + sig);
}

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "cistern_registry_bench: %s\n", msg.c_str());
  CleanupNow();
  std::_Exit(1);
}

// A database file and its companions, removed at exit.
void AddDbForCleanup(const std::string& db) {
  for (const std::string& p : {db, db + "-wal", db + "-shm", db + "-journal"}) {
    int i = g_cleanup.n.fetch_add(1);
    if (i >= CleanupList::kMax || p.size() >= 512) Die("cleanup list overflow");
    std::memcpy(g_cleanup.paths[i], p.c_str(), p.size() + 1);
  }
}

void RemoveDb(const std::string& db) {
  for (const std::string& p : {db, db + "-wal", db + "-shm", db + "-journal"}) ::unlink(p.c_str());
}

template <typename T>
T Must(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) Die(fmt::format("{}: {}", what, v.status().ToString()));
  return std::move(*v);
}
void Must(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Die(fmt::format("{}: {}", what, s.ToString()));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string LoadAvg() {
  std::istringstream in(ReadFile("/proc/loadavg"));
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

// The filesystem holding `dir`: the longest mount point of /proc/self/mounts
// that is a prefix of its real path, "device type (mount point)".
struct FsInfo {
  std::string type, device, mount_point;
  bool tmpfs = false;
};
FsInfo FilesystemOf(const std::string& dir) {
  FsInfo out;
  std::string real = std::filesystem::canonical(dir).string();
  std::ifstream in("/proc/self/mounts");
  std::string dev, mnt, type, rest;
  size_t best = 0;
  while (in >> dev >> mnt >> type && std::getline(in, rest)) {
    bool prefix = real == mnt || mnt == "/" ||
                  (real.rfind(mnt, 0) == 0 && real.size() > mnt.size() && real[mnt.size()] == '/');
    if (prefix && mnt.size() >= best) {
      best = mnt.size();
      out.type = type;
      out.device = dev;
      out.mount_point = mnt;
    }
  }
  struct statfs st {};
  if (::statfs(dir.c_str(), &st) == 0 && st.f_type == 0x01021994) out.tmpfs = true;  // TMPFS_MAGIC
  if (out.type == "tmpfs" || out.type == "ramfs") out.tmpfs = true;
  return out;
}

// ------------------------------------------------------------------- json ----

using Json = nlohmann::ordered_json;

Json Number(double v) {
  return std::isfinite(v) ? Json(std::stod(fmt::format("{:.6g}", v))) : Json();
}

class JsonObject {
 public:
  JsonObject& Num(const std::string& k, double v) { return Raw(k, Number(v)); }
  JsonObject& Int(const std::string& k, uint64_t v) { return Raw(k, v); }
  JsonObject& Str(const std::string& k, const std::string& v) { return Raw(k, v); }
  JsonObject& Bool(const std::string& k, bool v) { return Raw(k, v); }
  JsonObject& Raw(const std::string& k, Json v) {
    j_[k] = std::move(v);
    return *this;
  }
  const Json& Build() const { return j_; }

 private:
  Json j_ = Json::object();
};

// What else ran on the machine during a phase: /proc/stat's busy and idle
// time of all CPUs against this process's CPU time (the machine is shared;
// other sessions' processes need not be visible here).
struct CpuSnapshot {
  double total = 0, idle = 0, own = 0;  // CPU-seconds
  std::string load;
};
CpuSnapshot TakeCpuSnapshot() {
  CpuSnapshot c;
  std::istringstream in(ReadFile("/proc/stat"));
  std::string cpu;
  in >> cpu;
  double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  for (int i = 0; i < 8; ++i) {
    double v = 0;
    in >> v;
    c.total += v / hz;
    if (i == 3 || i == 4) c.idle += v / hz;  // idle, iowait
  }
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  c.own = ts.tv_sec + ts.tv_nsec * 1e-9;
  c.load = LoadAvg();
  return c;
}
CpuSnapshot g_phase;
std::vector<Json> g_phase_loads;

void PhaseStart() {
  g_phase = TakeCpuSnapshot();
  fmt::print("   load average {} at start\n", g_phase.load);
}
void PhaseEnd(const std::string& phase) {
  CpuSnapshot e = TakeCpuSnapshot();
  double total = e.total - g_phase.total;
  double idle = e.idle - g_phase.idle, own = e.own - g_phase.own;
  double others = std::max(0.0, total - idle - own);
  if (total <= 0) total = 1;
  fmt::print(
      "   load average {} at end; over the phase, of all CPU time: {:.0f}% this process, {:.0f}% "
      "other processes, {:.0f}% idle\n",
      e.load, 100 * own / total, 100 * others / total, 100 * idle / total);
  g_phase_loads.push_back(JsonObject()
                              .Str("phase", phase)
                              .Str("load_average_start", g_phase.load)
                              .Str("load_average_end", e.load)
                              .Num("own_share", own / total)
                              .Num("others_share", others / total)
                              .Num("idle_share", idle / total)
                              .Build());
}

// ---------------------------------------------------------------- targets ----

struct Target {
  std::string name;
  std::string unit;
  double value;
  double threshold;
  bool at_most;
  bool met() const { return at_most ? value <= threshold : value >= threshold; }
  double margin() const {
    return at_most ? (threshold - value) / threshold : (value - threshold) / threshold;
  }
};

// ------------------------------------------------------------- latencies ----

struct Summary {
  size_t n = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};

Summary Summarize(std::vector<double> v) {
  Summary s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto pct = [&](double q) {
    size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  s.p50 = pct(0.50);
  s.p90 = pct(0.90);
  s.p99 = pct(0.99);
  s.max = v.back();
  return s;
}

Json SummaryJson(const Summary& s) {
  return JsonObject()
      .Int("n", s.n)
      .Num("mean", s.mean)
      .Num("p50", s.p50)
      .Num("p90", s.p90)
      .Num("p99", s.p99)
      .Num("max", s.max)
      .Build();
}

// ---------------------------------------------------------------- options ----

struct Options {
  std::string json_path;
  std::string dir = "/var/tmp";
  std::string phases = "12345";
  int publishers = 8;
  int batch = 64;
  double seconds = 10;
  double peer_seconds = 5;
  uint64_t locate_replicas = 100'000;
  double locate_seconds = 5;
  uint64_t memory_replicas = 1'000'000;
  uint64_t recovery_replicas = 1'000'000;
  int delay_samples = 2000;
  double delay_max_seconds = 30;
  bool allow_tmpfs = false;
  bool no_deadlock_detection = false;
  std::string registry_bin;  // cistern-registry, for measurement 2's separate process
  int in_flight = 32;        // async Locate calls in flight against it
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) Die(fmt::format("{} needs a value", argv[i]));
    return argv[++i];
  };
  auto num = [&](int& i) { return std::strtod(need(i).c_str(), nullptr); };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") {
      o.json_path = need(i);
    } else if (a == "--dir") {
      o.dir = need(i);
    } else if (a == "--phases") {
      o.phases = need(i);
    } else if (a == "--publishers") {
      o.publishers = static_cast<int>(num(i));
    } else if (a == "--batch") {
      o.batch = static_cast<int>(num(i));
    } else if (a == "--seconds") {
      o.seconds = num(i);
    } else if (a == "--peer-seconds") {
      o.peer_seconds = num(i);
    } else if (a == "--locate-replicas") {
      o.locate_replicas = static_cast<uint64_t>(num(i));
    } else if (a == "--locate-seconds") {
      o.locate_seconds = num(i);
    } else if (a == "--memory-replicas") {
      o.memory_replicas = static_cast<uint64_t>(num(i));
    } else if (a == "--recovery-replicas") {
      o.recovery_replicas = static_cast<uint64_t>(num(i));
    } else if (a == "--delay-samples") {
      o.delay_samples = static_cast<int>(num(i));
    } else if (a == "--delay-max-seconds") {
      o.delay_max_seconds = num(i);
    } else if (a == "--registry-bin") {
      o.registry_bin = need(i);
    } else if (a == "--in-flight") {
      o.in_flight = std::stoi(need(i));
    } else if (a == "--allow-tmpfs") {
      o.allow_tmpfs = true;
    } else if (a == "--no-deadlock-detection") {
      o.no_deadlock_detection = true;
    } else if (a == "--keep") {
      g_keep = true;
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: cistern_registry_bench [--json FILE] [--dir DIR] [--phases S]\n"
          "  --dir DIR               parent of the temporary database directory (default\n"
          "                          /var/tmp; tmpfs is refused unless --allow-tmpfs)\n"
          "  --phases S              measurements to run, digits of 12345 (default 12345)\n"
          "  --publishers N          daemons publishing at once (default 8)\n"
          "  --batch B               replicas per Publish (default 64)\n"
          "  --seconds S             publishing time of measurement 1 (default 10)\n"
          "  --peer-seconds S        time of each bare-SQLite peer (default 5)\n"
          "  --locate-replicas N     replicas catalogued for measurement 2 (default 100000)\n"
          "  --locate-seconds S      time of each Locate run (default 5)\n"
          "  --memory-replicas N     replicas for measurement 3 (default 1000000)\n"
          "  --recovery-replicas N   replicas for measurement 4 (default 1000000)\n"
          "  --delay-samples N       publication-delay samples per condition (default 2000)\n"
          "  --delay-max-seconds S   stop sampling a condition after S seconds (default 30)\n"
          "  --keep                  keep the database directory\n"
          "  --registry-bin PATH     cistern-registry for measurement 2's separate process\n"
          "                          (default: ../src/registryd/cistern-registry beside this)\n"
          "  --in-flight N           async Locate calls in flight against it (default 32)\n"
          "  --no-deadlock-detection a diagnostic: turn off absl::Mutex deadlock detection\n"
          "                          (on in Debian's abseil, which gRPC's locks use)\n");
      std::exit(0);
    } else {
      Die("unknown argument '" + a + "' (see --help)");
    }
  }
  if (o.publishers < 1 || o.batch < 1 || o.batch > 8192) Die("bad --publishers or --batch");
  if (o.in_flight < 1 || o.in_flight > 4096) Die("bad --in-flight (1..4096)");
  return o;
}

// ----------------------------------------------------------- requests ----

std::string LayerKey(int host_index, uint64_t i) {
  return fmt::format("model-{}/layer-{:07d}", host_index, i);  // 21 bytes
}

// A cluster-unique generation as a daemon issues them: a counter, then the
// host number in the low 16 bits.
uint64_t Generation(uint64_t counter, uint32_t host_number) {
  return ((counter + 1) << 16) | host_number;
}

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

void FillReplica(v1::Replica* r, std::string key, uint64_t generation) {
  r->set_key(std::move(key));
  r->set_generation(generation);
  r->set_tier("ram");
  r->set_size(kReplicaSize);
  r->set_checksum(Mix(generation));
  r->set_has_checksum(true);
}

std::string HostId(int i) { return fmt::format("daemon-{}", i); }

v1::RegisterRequest RegisterReq(const std::string& host, uint64_t incarnation,
                                const v1::StateVersion& version) {
  v1::RegisterRequest req;
  req.set_host_id(host);
  req.set_advertise(host + ".cluster.local:7471");
  req.set_incarnation(incarnation);
  auto* t = req.add_tiers();
  t->set_name("ram");
  t->set_capacity_bytes(1ull << 40);
  *req.mutable_version() = version;
  req.set_daemon_version("bench");
  return req;
}

// ------------------------------------------------------------ processes ----

// Heap bytes in use (every arena, mmapped chunks included) and RSS, after
// giving free memory back to the system.
struct MemSample {
  uint64_t heap = 0;
  uint64_t rss = 0;
};
MemSample SampleMemory() {
  ::malloc_trim(0);
  struct mallinfo2 mi = ::mallinfo2();
  MemSample m;
  m.heap = mi.uordblks + mi.hblkhd;
  std::istringstream in(ReadFile("/proc/self/statm"));
  uint64_t size = 0, resident = 0;
  in >> size >> resident;
  m.rss = resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return m;
}

double ProcessCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
double ThreadCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

std::vector<pid_t> ThreadIds() {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    out.push_back(static_cast<pid_t>(std::stol(e.path().filename().string())));
  }
  return out;
}

void PinThread(pid_t tid, int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  ::sched_setaffinity(tid, sizeof s, &s);  // a thread that just exited: ignored
}

// The CPUs this process may run on.
std::vector<int> AllowedCpus(cpu_set_t* mask) {
  CPU_ZERO(mask);
  ::sched_getaffinity(0, sizeof *mask, mask);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, mask)) cpus.push_back(c);
  }
  return cpus;
}

// Established TCP connections to 127.0.0.1:port, counted from the client
// side in /proc/net/tcp and tcp6 (gRPC's sockets are IPv6 with v4-mapped
// addresses), to tell whether the clients share a connection.
int ConnectionsTo(uint16_t port) {
  int n = 0;
  for (const auto& [file, want] :
       {std::pair{"/proc/net/tcp", fmt::format("0100007F:{:04X}", port)},
        std::pair{"/proc/net/tcp6",
                  fmt::format("0000000000000000FFFF00000100007F:{:04X}", port)}}) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, st;
      f >> sl >> local >> remote >> st;
      if (remote == want && st == "01") ++n;
    }
  }
  return n;
}

// -------------------------------------------------------------- registry ----

// A backend that accepts every write and holds nothing: for in-process
// catalogs whose durability is not what is measured.
class DiscardBackend : public registry::MetadataBackend {
 public:
  absl::Status Apply(const registry::WriteBatch& batch) override {
    ops_ += batch.size();
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<std::string>> Get(std::string_view) override {
    return std::optional<std::string>();
  }
  absl::Status Scan(std::string_view,
                    absl::FunctionRef<bool(std::string_view, std::string_view)>) override {
    return absl::OkStatus();
  }
  std::string Describe() const override { return "discard"; }
  uint64_t ops() const { return ops_; }

 private:
  uint64_t ops_ = 0;
};

catalog::CatalogOptions BenchCatalogOptions() {
  catalog::CatalogOptions o;
  o.cluster_id = kCluster;
  return o;
}

// An in-process catalog: Load, then every change applied to `backend` and
// committed at once.
class LocalCatalog {
 public:
  explicit LocalCatalog(registry::MetadataBackend* backend) : backend_(backend) {
    catalog::Txn txn;
    catalog_ = Must(catalog::Catalog::Load(*backend_, BenchCatalogOptions(), Clock::Real(), &txn),
                    "Catalog::Load");
    Must(backend_->Apply(txn.batch), "apply the load");
    catalog_->Commit(&txn);
  }
  catalog::Catalog& c() { return *catalog_; }

  uint32_t Register(const std::string& host) {
    catalog::Txn txn;
    auto r = Must(catalog_->Register(RegisterReq(host, 1, {}), &txn), "Register " + host);
    Must(backend_->Apply(txn.batch), "apply a registration");
    catalog_->Commit(&txn);
    return r.host_number();
  }
  v1::PublishReply Publish(const v1::PublishRequest& req) {
    catalog::Txn txn;
    auto r = Must(catalog_->Publish(req, &txn), "Publish");
    Must(backend_->Apply(txn.batch), "apply a publication");
    catalog_->Commit(&txn);
    return r;
  }

 private:
  registry::MetadataBackend* backend_;
  std::unique_ptr<catalog::Catalog> catalog_;
};

struct Server {
  std::unique_ptr<registryd::RegistryMetrics> metrics;
  std::unique_ptr<registryd::RegistryServer> server;
  std::string address;
  uint16_t port = 0;
  ~Server() {
    if (server) server->Stop();
    server.reset();
  }
};

std::unique_ptr<registry::MetadataBackend> OpenSqlite(const std::string& path) {
  registry::SqliteOptions so;
  so.path = path;
  return Must(registry::OpenSqliteBackend(so), "open " + path);
}

std::unique_ptr<Server> StartServer(std::unique_ptr<registry::MetadataBackend> backend) {
  auto s = std::make_unique<Server>();
  s->metrics = std::make_unique<registryd::RegistryMetrics>("bench");
  registryd::RegistryServerOptions o;
  o.catalog = BenchCatalogOptions();
  o.token = kToken;
  o.listen_address = "127.0.0.1";
  o.port = 0;
  s->server =
      Must(registryd::RegistryServer::Start(o, std::move(backend), s->metrics.get()), "start");
  s->port = s->server->port();
  s->address = fmt::format("127.0.0.1:{}", s->port);
  return s;
}

// Each client gets its own channel and connection: gRPC shares a connection
// between channels whose arguments are equal, so every client's maximum
// message size differs by a few bytes (a daemon is its own process and has
// its own connection).
std::unique_ptr<cluster::RegistryClient> NewClient(const std::string& address, int index) {
  cluster::RegistryClientOptions o;
  o.address = address;
  o.cluster_id = kCluster;
  o.token = kToken;
  o.rpc_timeout = std::chrono::seconds(60);
  o.max_message_bytes = (64 << 20) + index;
  return Must(cluster::RegistryClient::Create(o), "client");
}

// One value of the server's metrics text (a line "name value", or
// "name{labels} value" with `name` including the labels).
double MetricValue(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
        line[name.size()] == ' ') {
      return std::strtod(line.c_str() + name.size() + 1, nullptr);
    }
  }
  return 0;
}

struct GroupCounters {
  double groups = 0, requests = 0, apply_sum = 0, apply_count = 0, publish_sum = 0,
         publish_count = 0;
};
GroupCounters ScrapeGroups(const Server& s) {
  std::string t = s.metrics->Scrape();
  GroupCounters g;
  g.groups = MetricValue(t, "cistern_registry_group_commits_total");
  g.requests = MetricValue(t, "cistern_registry_group_commit_requests_total");
  g.apply_sum = MetricValue(t, "cistern_registry_group_commit_duration_seconds_sum");
  g.apply_count = MetricValue(t, "cistern_registry_group_commit_duration_seconds_count");
  g.publish_sum =
      MetricValue(t, "cistern_registry_request_duration_seconds_sum{method=\"Publish\"}");
  g.publish_count =
      MetricValue(t, "cistern_registry_request_duration_seconds_count{method=\"Publish\"}");
  return g;
}

// A daemon as the registry sees it: a host, a connection, a publish seq.
struct Daemon {
  int index = 0;
  std::string host_id;
  uint64_t incarnation = 1;
  uint32_t number = 0;
  uint64_t seq = 0;
  uint64_t next = 0;  // replicas published so far
  std::chrono::milliseconds heartbeat{1000};
  SteadyClock::time_point last_heartbeat{};
  v1::StateVersion version;
  std::unique_ptr<cluster::RegistryClient> client;
};

void RegisterDaemon(Daemon& d) {
  auto r = Must(d.client->Register(RegisterReq(d.host_id, d.incarnation, d.version)),
                "Register " + d.host_id);
  d.number = r.host_number();
  d.version = r.registry_version();
  d.seq = d.version.publish_seq();
  d.heartbeat = std::chrono::milliseconds(std::max<uint64_t>(1, r.heartbeat_interval_ms()));
  d.last_heartbeat = SteadyClock::now();
}

v1::PublishRequest NextPublication(Daemon& d, int batch) {
  v1::PublishRequest req;
  req.set_host_id(d.host_id);
  req.set_incarnation(d.incarnation);
  req.set_seq(d.seq + 1);
  for (int j = 0; j < batch; ++j, ++d.next) {
    FillReplica(req.add_added(), LayerKey(d.index, d.next), Generation(d.next, d.number));
  }
  return req;
}

struct PublisherStats {
  uint64_t publishes = 0, replicas = 0, heartbeats = 0, heartbeat_sync_required = 0;
  std::vector<double> latency_us;
  double cpu_seconds = 0;  // of the publisher thread
};

// Publishes until `stop`, heartbeating as a daemon does; times each Publish
// call (the request is built before the clock starts).
void PublisherLoop(Daemon& d, int batch, const std::atomic<bool>& stop, PublisherStats* out) {
  double cpu0 = ThreadCpuSeconds();
  while (!stop.load(std::memory_order_relaxed)) {
    auto now = SteadyClock::now();
    if (now - d.last_heartbeat >= d.heartbeat) {
      v1::HeartbeatRequest hb;
      hb.set_host_id(d.host_id);
      hb.set_incarnation(d.incarnation);
      *hb.mutable_version() = d.version;
      auto r = Must(d.client->Heartbeat(hb), "Heartbeat " + d.host_id);
      out->heartbeats++;
      out->heartbeat_sync_required += r.sync_required();
      d.last_heartbeat = now;
    }
    v1::PublishRequest req = NextPublication(d, batch);
    auto t0 = SteadyClock::now();
    auto r = Must(d.client->Publish(req), "Publish " + d.host_id);
    out->latency_us.push_back(Micros(SteadyClock::now() - t0));
    d.seq = req.seq();
    d.version = r.registry_version();
    out->publishes++;
    out->replicas += static_cast<uint64_t>(batch);
  }
  out->cpu_seconds = ThreadCpuSeconds() - cpu0;
}

void SendHeartbeat(Daemon& d) {
  v1::HeartbeatRequest hb;
  hb.set_host_id(d.host_id);
  hb.set_incarnation(d.incarnation);
  *hb.mutable_version() = d.version;
  Must(d.client->Heartbeat(hb).status(), "Heartbeat " + d.host_id);
  d.last_heartbeat = SteadyClock::now();
}

// Heartbeats for daemons that are not publishing, so that they stay alive
// (suspect after 5 s, dead after 15 s without one) while other things are
// measured. The daemons must not be used by anyone else meanwhile.
class Heartbeats {
 public:
  explicit Heartbeats(std::vector<Daemon*> daemons) : daemons_(std::move(daemons)) {
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> l(mu_);
      while (!stop_) {
        l.unlock();
        for (Daemon* d : daemons_) SendHeartbeat(*d);
        l.lock();
        cv_.wait_for(l, std::chrono::milliseconds(500), [&] { return stop_; });
      }
    });
  }
  ~Heartbeats() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::vector<Daemon*> daemons_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// ------------------------------------------------------- 1. publications ----

struct Cluster {
  std::unique_ptr<Server> server;
  std::vector<std::unique_ptr<Daemon>> daemons;
};

Cluster StartPublishCluster(const Options& opt, const std::string& db) {
  Cluster c;
  c.server = StartServer(OpenSqlite(db));
  for (int i = 0; i < opt.publishers; ++i) {
    auto d = std::make_unique<Daemon>();
    d->index = i;
    d->host_id = HostId(i);
    d->client = NewClient(c.server->address, i);
    RegisterDaemon(*d);
    c.daemons.push_back(std::move(d));
  }
  return c;
}

struct LoadRun {
  double seconds = 0;
  uint64_t publishes = 0, replicas = 0, heartbeats = 0, heartbeat_sync_required = 0;
  Summary latency;
  GroupCounters before, after;
  double client_cpu = 0, process_cpu = 0;  // CPU-seconds over the run
};

// Runs the publishers for `seconds`, or until `until` returns true when given.
LoadRun RunPublishers(Cluster& c, int batch, double seconds,
                      const std::function<void()>& during = nullptr) {
  std::atomic<bool> stop{false};
  std::vector<PublisherStats> stats(c.daemons.size());
  LoadRun run;
  run.before = ScrapeGroups(*c.server);
  double p0 = ProcessCpuSeconds();
  auto t0 = SteadyClock::now();
  std::vector<std::thread> threads;
  for (size_t i = 0; i < c.daemons.size(); ++i) {
    threads.emplace_back([&, i] { PublisherLoop(*c.daemons[i], batch, stop, &stats[i]); });
  }
  if (during) {
    during();
  } else {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  }
  stop = true;
  for (auto& t : threads) t.join();
  run.seconds = Seconds(SteadyClock::now() - t0);
  run.process_cpu = ProcessCpuSeconds() - p0;
  run.after = ScrapeGroups(*c.server);
  std::vector<double> all;
  for (auto& s : stats) {
    run.publishes += s.publishes;
    run.replicas += s.replicas;
    run.heartbeats += s.heartbeats;
    run.heartbeat_sync_required += s.heartbeat_sync_required;
    run.client_cpu += s.cpu_seconds;
    all.insert(all.end(), s.latency_us.begin(), s.latency_us.end());
  }
  run.latency = Summarize(std::move(all));
  return run;
}

// Bare SQLite with the registry's durability and table: one connection, one
// writer, WAL, synchronous=FULL, locking_mode=EXCLUSIVE, kv(key BLOB PRIMARY
// KEY, value BLOB NOT NULL) WITHOUT ROWID, INSERT OR REPLACE of replica rows
// keyed and valued exactly as the catalog writes them (c/r/<key><gen><host>,
// a ReplicaRecord), `rows_per_txn` rows per BEGIN IMMEDIATE ... COMMIT, for
// `seconds`. Times the whole loop, key formatting included.
struct PeerRun {
  double seconds = 0;
  uint64_t rows = 0, txns = 0;
  Summary txn_us;
};
PeerRun BareSqlite(const std::string& path, uint64_t rows_per_txn, double seconds) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    Die("sqlite open " + path);
  }
  auto exec = [&](const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      Die(fmt::format("sqlite '{}': {}", sql, err ? err : "?"));
    }
  };
  exec("PRAGMA locking_mode=EXCLUSIVE");
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=FULL");
  exec("CREATE TABLE IF NOT EXISTS kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID");
  sqlite3_stmt* put = nullptr;
  if (sqlite3_prepare_v3(db, "INSERT OR REPLACE INTO kv(key, value) VALUES (?1, ?2)", -1,
                         SQLITE_PREPARE_PERSISTENT, &put, nullptr) != SQLITE_OK) {
    Die("sqlite prepare");
  }
  catalog::ReplicaRecord rec;
  rec.set_tier("ram");
  rec.set_size(kReplicaSize);
  rec.set_checksum(0x0123456789abcdefull);
  rec.set_has_checksum(true);
  std::string value = rec.SerializeAsString();
  PeerRun run;
  std::vector<double> lat;
  uint64_t counter = 0;
  auto t0 = SteadyClock::now();
  auto deadline = t0 + std::chrono::duration_cast<SteadyClock::duration>(
                           std::chrono::duration<double>(seconds));
  while (SteadyClock::now() < deadline) {
    auto a = SteadyClock::now();
    exec("BEGIN IMMEDIATE");
    for (uint64_t i = 0; i < rows_per_txn; ++i, ++counter) {
      uint32_t host = static_cast<uint32_t>(counter % 8) + 1;
      std::string key = catalog::ReplicaKey(LayerKey(static_cast<int>(host - 1), counter),
                                            Generation(counter, host), host);
      sqlite3_bind_blob(put, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
      sqlite3_bind_blob(put, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
      if (sqlite3_step(put) != SQLITE_DONE) Die("sqlite insert");
      sqlite3_reset(put);
    }
    exec("COMMIT");
    lat.push_back(Micros(SteadyClock::now() - a));
    run.rows += rows_per_txn;
    run.txns++;
  }
  run.seconds = Seconds(SteadyClock::now() - t0);
  run.txn_us = Summarize(std::move(lat));
  sqlite3_finalize(put);
  sqlite3_close(db);
  return run;
}

// The registry's write path without gRPC and without the committer's
// threads: one thread, a Catalog over the SQLite backend, `per_apply`
// publications of `batch` replicas (hosts in turn) in one Txn, one Apply
// (one fsync), Commit. Times only Publish + Apply + Commit (the requests are
// built before).
struct InProcessRun {
  double seconds = 0;  // summed timed sections
  uint64_t publishes = 0, replicas = 0, applies = 0, batch_ops = 0;
  double catalog_seconds = 0, apply_seconds = 0, commit_seconds = 0;
};
InProcessRun CatalogOverSqlite(const std::string& path, int hosts, int batch, int per_apply,
                               double seconds) {
  auto backend = OpenSqlite(path);
  LocalCatalog lc(backend.get());
  std::vector<Daemon> ds(static_cast<size_t>(hosts));
  for (int i = 0; i < hosts; ++i) {
    ds[i].index = i;
    ds[i].host_id = HostId(i);
    ds[i].number = lc.Register(ds[i].host_id);
  }
  InProcessRun run;
  auto wall0 = SteadyClock::now();
  size_t turn = 0;
  while (Seconds(SteadyClock::now() - wall0) < seconds) {
    std::vector<v1::PublishRequest> reqs;
    for (int g = 0; g < per_apply; ++g) {
      Daemon& d = ds[turn++ % ds.size()];
      reqs.push_back(NextPublication(d, batch));
      d.seq++;
    }
    catalog::Txn txn;
    auto a = SteadyClock::now();
    for (auto& req : reqs) Must(lc.c().Publish(req, &txn).status(), "Publish");
    auto b = SteadyClock::now();
    run.batch_ops += txn.batch.size();
    Must(backend->Apply(txn.batch), "Apply");
    auto c = SteadyClock::now();
    lc.c().Commit(&txn);
    auto e = SteadyClock::now();
    run.catalog_seconds += Seconds(b - a);
    run.apply_seconds += Seconds(c - b);
    run.commit_seconds += Seconds(e - c);
    run.publishes += reqs.size();
    run.replicas += reqs.size() * static_cast<uint64_t>(batch);
    run.applies++;
  }
  run.seconds = run.catalog_seconds + run.apply_seconds + run.commit_seconds;
  return run;
}

// ----------------------------------------------------------- 5. delay ----

struct DelayRun {
  Summary visible_us, ack_us, polls;
  double visible_before_ack = 0;  // share of samples
  int samples = 0;
  double seconds = 0;
};

// One prober host publishes one replica at a time; an observer thread with
// its own connection calls Locate for it in a loop from the moment Publish is
// called until it is found.
DelayRun MeasureDelay(const std::string& address, Daemon& probe, int samples, double max_seconds) {
  auto observer_client = NewClient(address, 1000);
  std::mutex mu;
  std::condition_variable cv;
  std::string target;
  uint64_t target_index = 0, seen_index = 0;
  bool quit = false;
  SteadyClock::time_point seen_at{};
  uint64_t polls = 0;
  std::thread observer([&] {
    uint64_t done = 0;
    for (;;) {
      std::string key;
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return quit || target_index > done; });
        if (quit) return;
        key = target;
        done = target_index;
      }
      v1::LocateRequest req;
      req.set_key(key);
      uint64_t n = 0;
      for (;;) {
        ++n;
        auto r = observer_client->Locate(req);
        if (r.ok()) break;
        if (r.status().code() != absl::StatusCode::kNotFound) Must(r.status(), "Locate");
      }
      auto now = SteadyClock::now();
      std::lock_guard<std::mutex> l(mu);
      seen_at = now;
      seen_index = done;
      polls = n;
      cv.notify_all();
    }
  });
  DelayRun run;
  std::vector<double> visible, ack, poll_counts;
  int before_ack = 0;
  auto start = SteadyClock::now();
  for (int i = 0; i < samples && Seconds(SteadyClock::now() - start) < max_seconds; ++i) {
    if (SteadyClock::now() - probe.last_heartbeat >= probe.heartbeat) SendHeartbeat(probe);
    v1::PublishRequest req = NextPublication(probe, 1);
    SteadyClock::time_point t0;
    {
      std::lock_guard<std::mutex> l(mu);
      target = req.added(0).key();
      target_index++;
      t0 = SteadyClock::now();
      cv.notify_all();
    }
    auto r = Must(probe.client->Publish(req), "probe Publish");
    auto t_ack = SteadyClock::now();
    probe.seq = req.seq();
    probe.version = r.registry_version();
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return seen_index == target_index; });
    visible.push_back(Micros(seen_at - t0));
    ack.push_back(Micros(t_ack - t0));
    poll_counts.push_back(static_cast<double>(polls));
    before_ack += seen_at < t_ack;
    run.samples++;
  }
  run.seconds = Seconds(SteadyClock::now() - start);
  {
    std::lock_guard<std::mutex> l(mu);
    quit = true;
    cv.notify_all();
  }
  observer.join();
  run.visible_us = Summarize(visible);
  run.ack_us = Summarize(ack);
  run.polls = Summarize(poll_counts);
  run.visible_before_ack = run.samples ? static_cast<double>(before_ack) / run.samples : 0;
  return run;
}

Json DelayJson(const DelayRun& d) {
  return JsonObject()
      .Int("samples", static_cast<uint64_t>(d.samples))
      .Num("seconds", d.seconds)
      .Raw("call_to_visible_us", SummaryJson(d.visible_us))
      .Raw("call_to_ack_us", SummaryJson(d.ack_us))
      .Raw("locate_polls_per_sample", SummaryJson(d.polls))
      .Num("visible_before_ack_fraction", d.visible_before_ack)
      .Build();
}

void PrintDelay(const char* label, const DelayRun& d) {
  fmt::print(
      "   {:<26} {:>7} {:>10.0f} {:>10.0f} {:>10.0f} {:>10.0f} {:>10.0f} {:>8.0f} {:>9.1f}%\n",
      label, d.samples, d.visible_us.p50, d.visible_us.p99, d.visible_us.max, d.ack_us.p50,
      d.ack_us.p99, d.polls.p50, 100 * d.visible_before_ack);
}

void BenchPublishAndDelay(const Options& opt, const std::string& dir, bool want_publish,
                          bool want_delay, std::vector<Target>* targets, JsonObject* json) {
  std::string db = dir + "/publish.db";
  AddDbForCleanup(db);
  Cluster c = StartPublishCluster(opt, db);
  int conns = ConnectionsTo(c.server->port);

  LoadRun run;
  double rate = 0, groups = 0, pubs_per_group = 0, requests_per_group = 0, apply_mean_us = 0,
         server_pub_us = 0;
  if (want_publish) {
    fmt::print(
        "\n== 1. Publications, {} daemons publishing at once, {} replicas per Publish, {:.0f} s "
        "==\n",
        opt.publishers, opt.batch, opt.seconds);
    PhaseStart();
    fmt::print("   {} TCP connections to the registry\n", conns);
    run = RunPublishers(c, opt.batch, opt.seconds);
    groups = run.after.groups - run.before.groups;
    double requests = run.after.requests - run.before.requests;
    requests_per_group = groups > 0 ? requests / groups : 0;
    pubs_per_group = groups > 0 ? static_cast<double>(run.publishes) / groups : 0;
    double applies = run.after.apply_count - run.before.apply_count;
    apply_mean_us = applies > 0 ? 1e6 * (run.after.apply_sum - run.before.apply_sum) / applies : 0;
    double server_pub = run.after.publish_count - run.before.publish_count;
    server_pub_us =
        server_pub > 0 ? 1e6 * (run.after.publish_sum - run.before.publish_sum) / server_pub : 0;
    rate = static_cast<double>(run.replicas) / run.seconds;
    fmt::print(
        "   registry: {} replicas acknowledged in {:.2f} s = {:.0f} replicas/s ({:.0f} "
        "Publish/s)\n",
        run.replicas, run.seconds, rate, run.publishes / run.seconds);
    fmt::print(
        "   Publish latency (client): p50 {:.0f} us, p90 {:.0f} us, p99 {:.0f} us, max {:.0f} us; "
        "server-side mean {:.0f} us\n",
        run.latency.p50, run.latency.p90, run.latency.p99, run.latency.max, server_pub_us);
    fmt::print(
        "   group commits: {:.0f} groups, {:.2f} requests per group ({:.2f} publications per "
        "group; the other requests are {} heartbeats and the liveness ticks), Apply (the fsync) "
        "mean {:.0f} us\n",
        groups, requests_per_group, pubs_per_group, run.heartbeats, apply_mean_us);
    fmt::print(
        "   CPU over the run: the {} publisher threads (building requests, gRPC client) {:.0f}% of "
        "one CPU, the rest of the process (the registry, gRPC's shared threads) {:.0f}%\n",
        opt.publishers, 100 * run.client_cpu / run.seconds,
        100 * (run.process_cpu - run.client_cpu) / run.seconds);
    if (run.heartbeat_sync_required) {
      fmt::print("   WARNING: {} heartbeats answered sync_required\n", run.heartbeat_sync_required);
    }
    PhaseEnd("publish");
  }

  if (want_delay) {
    fmt::print(
        "\n== 5. Publication delay: Publish called -> a Locate from another connection finds it "
        "==\n");
    PhaseStart();
    Daemon probe;
    probe.index = 100;
    probe.host_id = "probe";
    probe.client = NewClient(c.server->address, 2000);
    RegisterDaemon(probe);
    fmt::print("   {:<26} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}\n", "condition",
               "samples", "vis p50us", "vis p99us", "vis max", "ack p50us", "ack p99us", "polls",
               "vis<ack");
    DelayRun idle;
    {
      std::vector<Daemon*> ds;
      for (auto& d : c.daemons) ds.push_back(d.get());
      Heartbeats keep_alive(ds);
      idle = MeasureDelay(c.server->address, probe, opt.delay_samples, opt.delay_max_seconds);
    }
    PrintDelay("registry idle", idle);
    DelayRun loaded;
    LoadRun bg = RunPublishers(c, opt.batch, 0, [&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      loaded = MeasureDelay(c.server->address, probe, opt.delay_samples, opt.delay_max_seconds);
    });
    PrintDelay(fmt::format("{} publishers running", opt.publishers).c_str(), loaded);
    fmt::print(
        "   vis = call to visible (the observer's Locate reply arrived); ack = call to the Publish "
        "reply; polls = Locate calls per sample (p50); vis<ack = found before the ack arrived\n"
        "   background load during the loaded samples: {:.0f} replicas/s, Publish p50 {:.0f} us, "
        "p99 {:.0f} us\n",
        bg.replicas / bg.seconds, bg.latency.p50, bg.latency.p99);
    PhaseEnd("delay");
    json->Raw("publication_delay",
              JsonObject()
                  .Raw("idle", DelayJson(idle))
                  .Raw("loaded", DelayJson(loaded))
                  .Num("background_replicas_per_s", bg.replicas / bg.seconds)
                  .Raw("background_publish_latency_us", SummaryJson(bg.latency))
                  .Build());
  }
  c.daemons.clear();
  c.server.reset();
  RemoveDb(db);
  if (!want_publish) return;

  // The peers, with the registry stopped, on the same disk.
  fmt::print("\n== 1. (cont.) Peers: the same replica rows, same durability, same disk ==\n");
  PhaseStart();
  uint64_t rows_per_group =
      std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(pubs_per_group * opt.batch)));
  int per_apply = std::max(1, static_cast<int>(std::lround(pubs_per_group)));
  std::string pdb = dir + "/peer.db";
  AddDbForCleanup(pdb);
  PeerRun bare = BareSqlite(pdb, rows_per_group, opt.peer_seconds);
  RemoveDb(pdb);
  PeerRun bare1 = BareSqlite(pdb, static_cast<uint64_t>(opt.batch), opt.peer_seconds);
  RemoveDb(pdb);
  InProcessRun inproc =
      CatalogOverSqlite(pdb, opt.publishers, opt.batch, per_apply, opt.peer_seconds);
  RemoveDb(pdb);
  double bare_rate = bare.rows / bare.seconds;
  double bare1_rate = bare1.rows / bare1.seconds;
  double inproc_rate = inproc.replicas / inproc.seconds;
  double ops_per_pub =
      inproc.publishes ? static_cast<double>(inproc.batch_ops) / inproc.publishes : 0;
  fmt::print("   {:<62} {:>10} {:>9} {:>10} {:>10} {:>8}\n", "variant", "rows/s", "rows/txn",
             "p50 us", "p99 us", "ratio");
  fmt::print("   {:<62} {:>10.0f} {:>9.1f} {:>10.0f} {:>10.0f} {:>7.2f}x\n",
             "registry (8 daemons over gRPC, group commit; Publish latency)", rate,
             pubs_per_group * opt.batch, run.latency.p50, run.latency.p99, 1.0);
  fmt::print("   {:<62} {:>10.0f} {:>9} {:>10.0f} {:>10.0f} {:>7.2f}x\n",
             "bare SQLite, rows/txn = registry's average group (txn time)", bare_rate,
             rows_per_group, bare.txn_us.p50, bare.txn_us.p99, rate / bare_rate);
  fmt::print("   {:<62} {:>10.0f} {:>9} {:>10.0f} {:>10.0f} {:>7.2f}x\n",
             fmt::format("bare SQLite, rows/txn = one publication ({})", opt.batch), bare1_rate,
             opt.batch, bare1.txn_us.p50, bare1.txn_us.p99, rate / bare1_rate);
  fmt::print("   {:<62} {:>10.0f} {:>9} {:>10} {:>10} {:>7.2f}x\n",
             fmt::format("catalog + SQLite backend, 1 thread, {} publications/Apply", per_apply),
             inproc_rate, per_apply * opt.batch, "-", "-", rate / inproc_rate);
  fmt::print(
      "   ratio = registry / variant. In process: {:.2f} batch ops per publication of {} "
      "(a replica row each, plus the meta and host records); time split catalog {:.0f}% / "
      "Apply {:.0f}% / Commit {:.0f}%\n",
      ops_per_pub, opt.batch, 100 * inproc.catalog_seconds / inproc.seconds,
      100 * inproc.apply_seconds / inproc.seconds, 100 * inproc.commit_seconds / inproc.seconds);
  PhaseEnd("peers");

  targets->push_back(
      {fmt::format("1. publications, {} daemons, B={} (replicas/s)", opt.publishers, opt.batch),
       "replicas/s", rate, 20000, false});
  targets->push_back(
      {"1. registry / bare SQLite, same rows per fsync", "ratio", rate / bare_rate, 0.5, false});
  json->Raw("publish",
            JsonObject()
                .Int("publishers", static_cast<uint64_t>(opt.publishers))
                .Int("batch", static_cast<uint64_t>(opt.batch))
                .Int("tcp_connections", static_cast<uint64_t>(conns))
                .Num("seconds", run.seconds)
                .Int("publishes", run.publishes)
                .Int("replicas", run.replicas)
                .Num("replicas_per_s", rate)
                .Raw("publish_latency_us", SummaryJson(run.latency))
                .Num("server_publish_mean_us", server_pub_us)
                .Num("groups", groups)
                .Num("requests_per_group", requests_per_group)
                .Num("publications_per_group", pubs_per_group)
                .Int("heartbeats", run.heartbeats)
                .Num("apply_mean_us", apply_mean_us)
                .Num("publisher_threads_cpu_share", run.client_cpu / run.seconds)
                .Num("other_threads_cpu_share", (run.process_cpu - run.client_cpu) / run.seconds)
                .Raw("bare_sqlite_group_rows", JsonObject()
                                                   .Int("rows_per_txn", rows_per_group)
                                                   .Num("rows_per_s", bare_rate)
                                                   .Raw("txn_us", SummaryJson(bare.txn_us))
                                                   .Num("ratio", rate / bare_rate)
                                                   .Build())
                .Raw("bare_sqlite_one_publication",
                     JsonObject()
                         .Int("rows_per_txn", static_cast<uint64_t>(opt.batch))
                         .Num("rows_per_s", bare1_rate)
                         .Raw("txn_us", SummaryJson(bare1.txn_us))
                         .Num("ratio", rate / bare1_rate)
                         .Build())
                .Raw("catalog_sqlite_in_process",
                     JsonObject()
                         .Int("publications_per_apply", static_cast<uint64_t>(per_apply))
                         .Num("replicas_per_s", inproc_rate)
                         .Num("batch_ops_per_publication", ops_per_pub)
                         .Num("catalog_seconds", inproc.catalog_seconds)
                         .Num("apply_seconds", inproc.apply_seconds)
                         .Num("commit_seconds", inproc.commit_seconds)
                         .Num("ratio", rate / inproc_rate)
                         .Build())
                .Build());
}

// ------------------------------------------------------------ 2. locate ----

// Registers 8 hosts with the registry at `address` and publishes `n`
// replicas over them (1 per key, chunks of 4096), the same publications into
// `twin` when given; appends the keys to `keys`.
std::vector<std::unique_ptr<Daemon>> FillForLocate(const std::string& address, uint64_t n,
                                                   std::vector<std::string>* keys,
                                                   LocalCatalog* twin_catalog) {
  constexpr int kHosts = 8;
  keys->reserve(keys->size() + n);
  std::vector<std::unique_ptr<Daemon>> daemons;
  for (int h = 0; h < kHosts; ++h) {
    daemons.push_back(std::make_unique<Daemon>());
    Daemon& d = *daemons.back();
    d.index = h;
    d.host_id = HostId(h);
    d.client = NewClient(address, h);
    RegisterDaemon(d);
    Daemon twin;  // the same publications into the in-process catalog
    twin.index = h;
    twin.host_id = d.host_id;
    if (twin_catalog != nullptr) {
      twin.number = twin_catalog->Register(twin.host_id);
      if (twin.number != d.number) Die("host numbers differ between the two catalogs");
    }
    uint64_t mine = n / kHosts + (static_cast<uint64_t>(h) < n % kHosts);
    while (d.next < mine) {
      int batch = static_cast<int>(std::min<uint64_t>(4096, mine - d.next));
      uint64_t first = d.next;
      v1::PublishRequest req = NextPublication(d, batch);
      d.version = Must(d.client->Publish(req), "fill Publish").registry_version();
      d.seq = req.seq();
      if (twin_catalog != nullptr) {
        v1::PublishRequest twin_req = req;
        twin_req.set_seq(twin.seq + 1);
        twin_catalog->Publish(twin_req);
        twin.seq++;
      }
      for (uint64_t i = first; i < d.next; ++i) keys->push_back(LayerKey(h, i));
    }
  }
  return daemons;
}

// cistern-registry as its own process, as it runs in production, pinned to
// one CPU: a generated config (port 0, state_dir under the bench's
// directory, log_level warn), ready once <state_dir>/registry.endpoint is
// written. SIGTERM and waitpid on destruction.
struct ExternalRegistry {
  pid_t pid = -1;
  std::string address;
  std::string state_dir;
  ~ExternalRegistry() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
  // utime + stime of the process, from /proc/<pid>/stat.
  double CpuSeconds() const {
    std::string stat = ReadFile(fmt::format("/proc/{}/stat", pid));
    size_t close = stat.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream in(stat.substr(close + 2));
    std::string field;
    uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
};

std::string DefaultRegistryBin() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  return (self / "../src/registryd/cistern-registry").lexically_normal().string();
}

std::unique_ptr<ExternalRegistry> StartExternalRegistry(const std::string& bin,
                                                        const std::string& dir, int cpu) {
  auto r = std::make_unique<ExternalRegistry>();
  r->state_dir = dir + "/external-registry";
  std::filesystem::create_directories(r->state_dir);
  AddDbForCleanup(r->state_dir + "/registry.db");
  const std::string config = r->state_dir + "/config.yaml";
  std::ofstream(config) << fmt::format(
      "cluster_id: {}\ntoken: {}\nlisten_address: 127.0.0.1\nport: 0\nmetrics_port: 0\n"
      "state_dir: {}\nlog_level: warn\n",
      kCluster, kToken, r->state_dir);
  const std::string log = r->state_dir + "/registry.log";
  pid_t pid = ::fork();
  if (pid < 0) Die(fmt::format("fork: {}", std::strerror(errno)));
  if (pid == 0) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    ::sched_setaffinity(0, sizeof s, &s);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execl(bin.c_str(), bin.c_str(), "--config", config.c_str(), nullptr);
    std::fprintf(stderr, "cannot run %s: %s\n", bin.c_str(), std::strerror(errno));
    std::_Exit(127);
  }
  r->pid = pid;
  const std::string endpoint_file = r->state_dir + "/registry.endpoint";
  auto deadline = SteadyClock::now() + std::chrono::seconds(30);
  for (;;) {
    std::string ep = ReadFile(endpoint_file);
    if (ep.size() > 1 && ep.back() == '\n') {
      ep.pop_back();
      r->address = ep;
      break;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      r->pid = -1;
      Die(fmt::format("{} exited during start; its log:\n{}", bin, ReadFile(log)));
    }
    if (SteadyClock::now() > deadline) Die(bin + " did not write its endpoint within 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return r;
}

// Locate of random keys from one client thread through gRPC's async API
// (one channel, `in_flight` calls outstanding, each replaced as it
// completes) for `seconds`: what a registry can serve when the client is not
// the limit. Latency is per call, start to completion, queueing included.
struct AsyncLocateRun {
  double seconds = 0;
  uint64_t calls = 0;
  Summary latency;
  double client_cpu = 0;    // CPU-seconds of the client thread
  double registry_cpu = 0;  // of the registry process
};

AsyncLocateRun RunAsyncLocate(const ExternalRegistry& reg, const std::vector<std::string>& keys,
                              int in_flight, double seconds) {
  auto channel = grpc::CreateChannel(reg.address, grpc::InsecureChannelCredentials());
  auto stub = v1::Registry::NewStub(channel);
  grpc::CompletionQueue cq;
  struct Call {
    grpc::ClientContext ctx;
    v1::LocateRequest req;
    v1::LocateReply reply;
    grpc::Status status;
    SteadyClock::time_point start;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::LocateReply>> rpc;
  };
  std::mt19937_64 rng(99);
  std::uniform_int_distribution<size_t> pick(0, keys.size() - 1);
  auto start_call = [&] {
    auto* c = new Call;
    c->ctx.AddMetadata("x-cistern-cluster", kCluster);
    c->ctx.AddMetadata("x-cistern-token", kToken);
    c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    c->req.set_key(keys[pick(rng)]);
    c->start = SteadyClock::now();
    c->rpc = stub->AsyncLocate(&c->ctx, c->req, &cq);
    c->rpc->Finish(&c->reply, &c->status, c);
  };
  // Runs until `until`, keeping `in_flight` calls outstanding; then drains.
  auto run = [&](SteadyClock::time_point until, std::vector<double>* lat) {
    for (int i = 0; i < in_flight; ++i) start_call();
    int outstanding = in_flight;
    while (outstanding > 0) {
      void* tag = nullptr;
      bool ok = false;
      if (!cq.Next(&tag, &ok)) Die("completion queue shut down");
      auto* c = static_cast<Call*>(tag);
      auto now = SteadyClock::now();
      if (!ok || !c->status.ok()) Die("async Locate: " + c->status.error_message());
      if (c->reply.locations_size() == 0) Die("async Locate found no location");
      if (lat != nullptr) lat->push_back(Micros(now - c->start));
      delete c;
      --outstanding;
      if (now < until) {
        start_call();
        ++outstanding;
      }
    }
  };
  run(SteadyClock::now() + std::chrono::seconds(1), nullptr);  // connect, warm up
  std::vector<double> lat;
  lat.reserve(1'000'000);
  AsyncLocateRun out;
  double c0 = ThreadCpuSeconds(), r0 = reg.CpuSeconds();
  auto t0 = SteadyClock::now();
  run(t0 +
          std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(seconds)),
      &lat);
  out.seconds = Seconds(SteadyClock::now() - t0);
  out.client_cpu = ThreadCpuSeconds() - c0;
  out.registry_cpu = reg.CpuSeconds() - r0;
  out.calls = lat.size();
  out.latency = Summarize(std::move(lat));
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  return out;
}

enum class Pin { kNone, kRegistryOnOne, kAllOnOne };

struct LocateRun {
  std::string label;
  int threads = 1;
  double seconds = 0;
  uint64_t calls = 0;
  Summary latency;
  double client_cpu = 0, other_cpu = 0;  // CPU-seconds in the window
};

LocateRun RunLocate(const std::string& address, const std::vector<std::string>& keys, int threads,
                    double seconds, Pin pin, const std::vector<int>& cpus, const cpu_set_t& all) {
  LocateRun run;
  run.threads = threads;
  pid_t self = ::gettid();
  if (pin != Pin::kNone) {
    for (pid_t t : ThreadIds()) PinThread(t, cpus[0]);
    PinThread(self, pin == Pin::kRegistryOnOne ? cpus[1] : cpus[0]);  // clients inherit
  }
  std::barrier sync(threads + 1);
  std::vector<std::vector<double>> lat(threads);
  std::vector<double> cpu(threads);
  std::vector<uint64_t> calls(threads);
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) {
    ts.emplace_back([&, i] {
      auto client = NewClient(address, 3000 + i);
      std::mt19937_64 rng(42 + i);
      std::uniform_int_distribution<size_t> pick(0, keys.size() - 1);
      v1::LocateRequest req;
      auto once = [&] {
        req.set_key(keys[pick(rng)]);
        auto r = Must(client->Locate(req), "Locate");
        if (r.locations_size() == 0) Die("Locate found no location");
      };
      for (int w = 0; w < 2000; ++w) once();  // connect, warm up
      sync.arrive_and_wait();
      double c0 = ThreadCpuSeconds();
      auto t0 = SteadyClock::now();
      auto end = t0 + std::chrono::duration_cast<SteadyClock::duration>(
                          std::chrono::duration<double>(seconds));
      lat[i].reserve(200000);
      for (auto now = t0; now < end;) {
        once();
        auto after = SteadyClock::now();
        lat[i].push_back(Micros(after - now));
        now = after;
      }
      cpu[i] = ThreadCpuSeconds() - c0;
      calls[i] = lat[i].size();
      sync.arrive_and_wait();
    });
  }
  sync.arrive_and_wait();
  double p0 = ProcessCpuSeconds();
  auto t0 = SteadyClock::now();
  sync.arrive_and_wait();
  run.seconds = Seconds(SteadyClock::now() - t0);
  double p1 = ProcessCpuSeconds();
  for (auto& t : ts) t.join();
  if (pin != Pin::kNone) {
    for (pid_t t : ThreadIds()) ::sched_setaffinity(t, sizeof all, &all);
  }
  std::vector<double> merged;
  for (int i = 0; i < threads; ++i) {
    run.calls += calls[i];
    run.client_cpu += cpu[i];
    merged.insert(merged.end(), lat[i].begin(), lat[i].end());
  }
  run.other_cpu = std::max(0.0, (p1 - p0) - run.client_cpu);
  run.latency = Summarize(std::move(merged));
  return run;
}

void BenchLocate(const Options& opt, const std::string& dir, std::vector<Target>* targets,
                 JsonObject* json) {
  fmt::print("\n== 2. Locate, {} replicas over 8 hosts (1 replica per key), random keys ==\n",
             opt.locate_replicas);
  PhaseStart();
  std::string db = dir + "/locate.db";
  AddDbForCleanup(db);
  auto server = StartServer(OpenSqlite(db));
  std::vector<std::string> keys;
  DiscardBackend discard;
  LocalCatalog local(&discard);
  auto fill0 = SteadyClock::now();
  std::vector<std::unique_ptr<Daemon>> daemons =
      FillForLocate(server->address, opt.locate_replicas, &keys, &local);
  fmt::print("   filled over gRPC in {:.2f} s; {} TCP connections open\n",
             Seconds(SteadyClock::now() - fill0), ConnectionsTo(server->port));
  std::vector<Daemon*> ptrs;
  for (auto& d : daemons) ptrs.push_back(d.get());
  auto keep_alive = std::make_unique<Heartbeats>(ptrs);  // 8 heartbeats every 0.5 s

  // In process, no RPC.
  LocateRun inproc;
  {
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<size_t> pick(0, keys.size() - 1);
    v1::LocateRequest req;
    std::vector<double> lat;
    lat.reserve(4'000'000);
    auto t0 = SteadyClock::now();
    auto end = t0 + std::chrono::seconds(2);
    for (auto now = t0; now < end;) {
      req.set_key(keys[pick(rng)]);
      auto r = local.c().Locate(req);
      if (!r.ok() || r->locations_size() == 0) Die("in-process Locate");
      auto after = SteadyClock::now();
      lat.push_back(Micros(after - now));
      now = after;
    }
    inproc.seconds = Seconds(SteadyClock::now() - t0);
    inproc.calls = lat.size();
    inproc.latency = Summarize(std::move(lat));
  }

  cpu_set_t all;
  std::vector<int> cpus = AllowedCpus(&all);
  struct Mode {
    std::string label;
    int threads;
    Pin pin;
  };
  std::vector<Mode> modes = {{"1 client thread, default scheduling", 1, Pin::kNone}};
  if (cpus.size() >= 2) {
    modes.push_back(
        {fmt::format("1 client thread, registry on CPU {}, client on CPU {}", cpus[0], cpus[1]), 1,
         Pin::kRegistryOnOne});
    modes.push_back({fmt::format("1 client thread, all on CPU {}", cpus[0]), 1, Pin::kAllOnOne});
    modes.push_back(
        {fmt::format("4 client threads, registry on CPU {}, clients on CPU {}", cpus[0], cpus[1]),
         4, Pin::kRegistryOnOne});
  }
  modes.push_back({"4 client threads, default scheduling", 4, Pin::kNone});
  fmt::print("   {:<58} {:>10} {:>8} {:>8} {:>9} {:>9} {:>12}\n", "variant", "Locate/s", "p50 us",
             "p99 us", "cli CPU", "other CPU", "/other CPU-s");
  std::vector<Json> rows;
  for (const Mode& m : modes) {
    LocateRun r = RunLocate(server->address, keys, m.threads, opt.locate_seconds, m.pin, cpus, all);
    double rate = r.calls / r.seconds;
    double per_cpu = r.other_cpu > 0 ? r.calls / r.other_cpu : 0;
    fmt::print("   {:<58} {:>10.0f} {:>8.1f} {:>8.1f} {:>8.0f}% {:>8.0f}% {:>12.0f}\n", m.label,
               rate, r.latency.p50, r.latency.p99, 100 * r.client_cpu / r.seconds,
               100 * r.other_cpu / r.seconds, per_cpu);
    rows.push_back(JsonObject()
                       .Str("variant", m.label)
                       .Int("client_threads", static_cast<uint64_t>(m.threads))
                       .Num("seconds", r.seconds)
                       .Int("calls", r.calls)
                       .Num("locates_per_s", rate)
                       .Raw("latency_us", SummaryJson(r.latency))
                       .Num("client_threads_cpu_share", r.client_cpu / r.seconds)
                       .Num("other_threads_cpu_share", r.other_cpu / r.seconds)
                       .Num("locates_per_other_cpu_second", per_cpu)
                       .Build());
  }
  double in_rate = inproc.calls / inproc.seconds;
  fmt::print("   {:<58} {:>10.0f} {:>8.2f} {:>8.2f}\n",
             "in process: Catalog::Locate, no RPC, 1 thread", in_rate, inproc.latency.p50,
             inproc.latency.p99);
  fmt::print(
      "   cli CPU = CPU time of the client threads; other CPU = the rest of the process (the "
      "registry's threads and gRPC's shared threads), as a share of one CPU;\n"
      "   /other CPU-s = Locates per CPU-second of the rest (the registry's cost per call, RPC "
      "included). Pinning moves every thread already running to the first CPU, then the client "
      "threads (and what they start) to the second\n");
  keep_alive.reset();
  daemons.clear();
  server.reset();
  RemoveDb(db);

  // cistern-registry in its own process on one CPU, the async client on the
  // other: the registry's capacity on one core.
  std::vector<Json> ext_rows;
  double ext_rate = 0;
  if (cpus.size() >= 2) {
    const std::string bin = opt.registry_bin.empty() ? DefaultRegistryBin() : opt.registry_bin;
    auto reg = StartExternalRegistry(bin, dir, cpus[0]);
    PinThread(::gettid(), cpus[1]);
    std::vector<std::string> ext_keys;
    auto ext_daemons = FillForLocate(reg->address, opt.locate_replicas, &ext_keys, nullptr);
    std::vector<Daemon*> ext_ptrs;
    for (auto& d : ext_daemons) ext_ptrs.push_back(d.get());
    auto ext_alive = std::make_unique<Heartbeats>(ext_ptrs);
    fmt::print("   cistern-registry process ({}) on CPU {}, one async client thread on CPU {}:\n",
               bin, cpus[0], cpus[1]);
    fmt::print("   {:<58} {:>10} {:>8} {:>8} {:>9} {:>9} {:>12}\n", "in flight", "Locate/s",
               "p50 us", "p99 us", "cli CPU", "reg CPU", "/reg CPU-s");
    for (int k : {1, opt.in_flight}) {
      AsyncLocateRun r = RunAsyncLocate(*reg, ext_keys, k, opt.locate_seconds);
      double rate = r.calls / r.seconds;
      double per_cpu = r.registry_cpu > 0 ? r.calls / r.registry_cpu : 0;
      std::string label = fmt::format("{} call{} in flight", k, k == 1 ? "" : "s");
      fmt::print("   {:<58} {:>10.0f} {:>8.1f} {:>8.1f} {:>8.0f}% {:>8.0f}% {:>12.0f}\n", label,
                 rate, r.latency.p50, r.latency.p99, 100 * r.client_cpu / r.seconds,
                 100 * r.registry_cpu / r.seconds, per_cpu);
      if (k == opt.in_flight) ext_rate = rate;
      ext_rows.push_back(JsonObject()
                             .Int("in_flight", static_cast<uint64_t>(k))
                             .Num("seconds", r.seconds)
                             .Int("calls", r.calls)
                             .Num("locates_per_s", rate)
                             .Raw("latency_us", SummaryJson(r.latency))
                             .Num("client_thread_cpu_share", r.client_cpu / r.seconds)
                             .Num("registry_process_cpu_share", r.registry_cpu / r.seconds)
                             .Num("locates_per_registry_cpu_second", per_cpu)
                             .Build());
    }
    fmt::print(
        "   reg CPU = CPU time of the cistern-registry process (/proc/<pid>/stat) as a share of "
        "one CPU; its heartbeats (8 hosts, every 0.5 s) are included\n");
    ext_alive.reset();
    ext_daemons.clear();
    ::sched_setaffinity(::gettid(), sizeof all, &all);
  } else {
    fmt::print("   (one CPU: the separate-process run needs two)\n");
  }
  PhaseEnd("locate");
  if (ext_rate > 0) {
    targets->push_back(
        {fmt::format("2. Locate/s, cistern-registry on one CPU, {} in flight", opt.in_flight),
         "calls/s", ext_rate, 20000, false});
  }
  json->Raw("locate", JsonObject()
                          .Int("replicas", opt.locate_replicas)
                          .Raw("grpc", Json(rows))
                          .Raw("separate_process", Json(ext_rows))
                          .Raw("in_process", JsonObject()
                                                 .Num("locates_per_s", in_rate)
                                                 .Raw("latency_us", SummaryJson(inproc.latency))
                                                 .Build())
                          .Build());
}

// ------------------------------------------------------------ 3. memory ----

// The number of slots absl::flat_hash_map has after `n` insertions into an
// empty map (capacity 2^k - 1, grown when full at 7/8).
uint64_t SwissCapacity(uint64_t n) {
  uint64_t cap = 1;
  auto growth = [](uint64_t c) { return c == 7 ? 6 : c - c / 8; };
  while (growth(cap) < n) cap = cap * 2 + 1;
  return cap;
}

void BenchMemory(const Options& opt, std::vector<Target>* targets, JsonObject* json) {
  fmt::print(
      "\n== 3. Catalog memory per replica (in process, a backend that discards writes) ==\n");
  PhaseStart();
  fmt::print("   {:<40} {:>9} {:>9} {:>13} {:>12} {:>11} {:>10} {:>10}\n", "layout", "replicas",
             "keys", "heap B/repl", "RSS B/repl", "slots", "load s", "repl/s");
  struct Variant {
    std::string label;
    int hosts;
    int copies;
  };
  std::vector<Json> rows;
  for (const Variant& v : {Variant{"1 replica per key, keys over 8 hosts", 8, 1},
                           Variant{"4 replicas per key over 4 hosts", 4, 4}}) {
    uint64_t n = opt.memory_replicas;
    uint64_t nkeys = n / static_cast<uint64_t>(v.copies);
    double per_repl_heap = 0, per_repl_rss = 0;
    uint64_t replicas = 0, keys = 0;
    double load_s = 0;
    {
      DiscardBackend discard;
      auto lc = std::make_unique<LocalCatalog>(&discard);
      std::vector<Daemon> ds(static_cast<size_t>(v.hosts));
      for (int h = 0; h < v.hosts; ++h) {
        ds[h].host_id = HostId(h);
        ds[h].number = lc->Register(ds[h].host_id);
      }
      MemSample before = SampleMemory();
      auto t0 = SteadyClock::now();
      // Key i: "model/layer-%07d" (19 bytes). With 1 copy, host i*hosts/nkeys
      // holds it; with c copies, every host holds generation (i, host 1).
      constexpr uint64_t kChunk = 4096;
      for (int h = 0; h < v.hosts; ++h) {
        uint64_t lo = v.copies == 1 ? nkeys * h / v.hosts : 0;
        uint64_t hi = v.copies == 1 ? nkeys * (h + 1) / v.hosts : nkeys;
        for (uint64_t i = lo; i < hi; i += kChunk) {
          v1::PublishRequest req;
          req.set_host_id(ds[h].host_id);
          req.set_incarnation(1);
          req.set_seq(++ds[h].seq);
          for (uint64_t k = i; k < std::min(hi, i + kChunk); ++k) {
            uint32_t issuer = v.copies == 1 ? ds[h].number : ds[0].number;
            FillReplica(req.add_added(), fmt::format("model/layer-{:07d}", k),
                        Generation(k, issuer));
          }
          lc->Publish(req);
        }
      }
      load_s = Seconds(SteadyClock::now() - t0);
      MemSample after = SampleMemory();
      replicas = lc->c().replica_count();
      keys = lc->c().key_count();
      if (replicas != nkeys * v.copies) Die("memory: replica count");
      per_repl_heap = static_cast<double>(after.heap - before.heap) / replicas;
      per_repl_rss = static_cast<double>(static_cast<int64_t>(after.rss - before.rss)) / replicas;
    }
    uint64_t slots = SwissCapacity(keys);
    fmt::print("   {:<40} {:>9} {:>9} {:>13.1f} {:>12.1f} {:>11} {:>10.2f} {:>10.0f}\n", v.label,
               replicas, keys, per_repl_heap, per_repl_rss, slots, load_s, replicas / load_s);
    targets->push_back({fmt::format("3. catalog bytes per replica at {}M, {}", replicas / 1e6,
                                    v.copies == 1 ? "1 per key" : "4 per key"),
                        "bytes", per_repl_heap, 200, true});
    rows.push_back(JsonObject()
                       .Str("layout", v.label)
                       .Int("replicas", replicas)
                       .Int("keys", keys)
                       .Num("heap_bytes_per_replica", per_repl_heap)
                       .Num("rss_bytes_per_replica", per_repl_rss)
                       .Int("hash_slots_model", slots)
                       .Num("load_seconds", load_s)
                       .Build());
  }
  fmt::print(
      "   heap = mallinfo2 uordblks + hblkhd (every arena, mmapped chunks included), after "
      "malloc_trim; slots = absl::flat_hash_map capacity for that many keys (2^k - 1, grows at "
      "7/8), a model, not read from the catalog\n");
  PhaseEnd("memory");
  json->Raw("memory", Json(rows));
}

// ---------------------------------------------------------- 4. recovery ----

struct RecoveryRun {
  std::string label;
  double open_s = 0, start_s = 0, registered_s = 0, synced_s = 0;
  uint64_t replicas = 0;
  uint64_t heap_growth = 0;
  uint64_t kept = 0, changed = 0;
};

void DropFromPageCache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void BenchRecovery(const Options& opt, const std::string& dir, JsonObject* json) {
  constexpr int kHosts = 8;
  constexpr int kChunk = 4096;
  fmt::print(
      "\n== 4. Recovery: restart with {} replicas over {} hosts, {} daemons reconciling ==\n",
      opt.recovery_replicas, kHosts, kHosts);
  PhaseStart();
  std::string db = dir + "/recovery.db";
  AddDbForCleanup(db);
  std::vector<Daemon> ds(kHosts);
  std::vector<std::vector<v1::Replica>> inventory(kHosts);
  auto fill0 = SteadyClock::now();
  {
    auto backend = OpenSqlite(db);
    LocalCatalog lc(backend.get());
    for (int h = 0; h < kHosts; ++h) {
      ds[h].index = h;
      ds[h].host_id = HostId(h);
      ds[h].number = lc.Register(ds[h].host_id);
      uint64_t mine = opt.recovery_replicas / kHosts +
                      (static_cast<uint64_t>(h) < opt.recovery_replicas % kHosts);
      while (ds[h].next < mine) {
        int n = static_cast<int>(std::min<uint64_t>(8192, mine - ds[h].next));
        v1::PublishRequest req = NextPublication(ds[h], n);
        auto r = lc.Publish(req);
        ds[h].seq = req.seq();
        ds[h].version = r.registry_version();
        for (auto& rep : *req.mutable_added()) inventory[h].push_back(std::move(rep));
      }
    }
  }
  double fill_s = Seconds(SteadyClock::now() - fill0);
  uint64_t db_bytes = std::filesystem::file_size(db);
  uint64_t wal_bytes =
      std::filesystem::exists(db + "-wal") ? std::filesystem::file_size(db + "-wal") : 0;
  fmt::print(
      "   filled in {:.1f} s (catalog + SQLite backend in process, 8192 replicas per "
      "Apply); database {:.1f} MiB, WAL {:.1f} MiB\n",
      fill_s, db_bytes / 1048576.0, wal_bytes / 1048576.0);

  auto restart = [&](const std::string& label, bool cold, bool sync, uint64_t incarnation) {
    RecoveryRun run;
    run.label = label;
    if (cold) {
      DropFromPageCache(db);
      DropFromPageCache(db + "-wal");
    }
    std::vector<std::unique_ptr<cluster::RegistryClient>> clients;
    MemSample m0 = SampleMemory();
    auto t0 = SteadyClock::now();
    auto backend = OpenSqlite(db);
    run.open_s = Seconds(SteadyClock::now() - t0);
    auto server = StartServer(std::move(backend));
    run.start_s = Seconds(SteadyClock::now() - t0);
    MemSample m1 = SampleMemory();
    run.heap_growth = m1.heap - m0.heap;
    std::vector<double> reg_done(kHosts), sync_done(kHosts);
    std::vector<uint64_t> kept(kHosts), changed(kHosts);
    std::vector<std::thread> ts;
    for (int h = 0; h < kHosts; ++h) {
      ts.emplace_back([&, h] {
        auto client = NewClient(server->address, h);
        v1::StateVersion version = sync ? v1::StateVersion() : ds[h].version;
        auto r = Must(client->Register(RegisterReq(ds[h].host_id, incarnation, version)),
                      "Register after restart");
        reg_done[h] = Seconds(SteadyClock::now() - t0);
        if (r.sync_required() != sync) {
          Die(fmt::format("{}: sync_required = {} after the restart, expected {}", ds[h].host_id,
                          r.sync_required(), sync));
        }
        if (!sync) return;
        const auto& inv = inventory[h];
        size_t pos = 0;
        bool done = false;
        size_t chunks = std::max<size_t>(1, (inv.size() + kChunk - 1) / kChunk);
        auto reply = Must(client->SyncInventory(
                              [&](v1::InventoryChunk* c) {
                                if (done) return false;
                                c->set_host_id(ds[h].host_id);
                                c->set_incarnation(incarnation);
                                size_t end = std::min(inv.size(), pos + kChunk);
                                for (; pos < end; ++pos) *c->add_replicas() = inv[pos];
                                if (pos == inv.size()) {
                                  c->set_last(true);
                                  c->set_publish_seq(ds[h].seq);
                                  done = true;
                                }
                                return true;
                              },
                              chunks),
                          "SyncInventory");
        sync_done[h] = Seconds(SteadyClock::now() - t0);
        kept[h] = reply.report().kept();
        changed[h] = reply.report().added() + reply.report().removed() + reply.report().updated();
        if (reply.registry_version().digest() != ds[h].version.digest() ||
            reply.registry_version().count() != ds[h].version.count()) {
          Die(ds[h].host_id + ": the version after the sync differs");
        }
      });
    }
    for (auto& t : ts) t.join();
    run.registered_s = *std::max_element(reg_done.begin(), reg_done.end());
    run.synced_s = sync ? *std::max_element(sync_done.begin(), sync_done.end()) : 0;
    for (int h = 0; h < kHosts; ++h) {
      run.kept += kept[h];
      run.changed += changed[h];
    }
    auto q = Must(NewClient(server->address, 99)->QuerySystem(), "QuerySystem");
    run.replicas = q.replicas();
    for (const auto& hi : q.hosts()) {
      if (hi.state() != v1::HOST_STATE_ALIVE) Die("a host is not alive after the restart");
    }
    server.reset();
    return run;
  };

  std::vector<RecoveryRun> runs;
  runs.push_back(restart("register, versions match (warm page cache)", false, false, 1));
  runs.push_back(restart("register, versions match (db dropped from page cache)", true, false, 1));
  runs.push_back(restart("register + full SyncInventory, chunks of 4096", false, true, 2));
  fmt::print("   {:<56} {:>8} {:>9} {:>13} {:>11} {:>11} {:>12}\n", "variant", "open s", "start s",
             "all reg. s", "all sync s", "catalogued", "heap MiB");
  std::vector<Json> rows;
  for (const auto& r : runs) {
    fmt::print("   {:<56} {:>8.3f} {:>9.3f} {:>13.3f} {:>11} {:>11} {:>12.1f}\n", r.label, r.open_s,
               r.start_s, r.registered_s,
               r.synced_s > 0 ? fmt::format("{:.3f}", r.synced_s) : std::string("-"), r.replicas,
               r.heap_growth / 1048576.0);
    rows.push_back(JsonObject()
                       .Str("variant", r.label)
                       .Num("open_seconds", r.open_s)
                       .Num("start_seconds", r.start_s)
                       .Num("all_registered_seconds", r.registered_s)
                       .Num("all_synced_seconds", r.synced_s)
                       .Int("replicas_after", r.replicas)
                       .Int("sync_kept", r.kept)
                       .Int("sync_changed", r.changed)
                       .Int("heap_growth_bytes", r.heap_growth)
                       .Build());
  }
  fmt::print(
      "   every time from the start of the restart: open = OpenSqliteBackend (quick_check); start "
      "= "
      "open + RegistryServer::Start (Catalog::Load, the epoch written, listening); all reg. = "
      "until the 8th Register reply; all sync = until the 8th SyncReply ({} kept, {} changed in "
      "the sync run). heap = heap growth of the process after Start\n",
      runs.back().kept, runs.back().changed);
  PhaseEnd("recovery");
  json->Raw("recovery", JsonObject()
                            .Int("replicas", opt.recovery_replicas)
                            .Num("fill_seconds", fill_s)
                            .Int("database_bytes", db_bytes)
                            .Int("wal_bytes", wal_bytes)
                            .Raw("runs", Json(rows))
                            .Build());
  RemoveDb(db);
}

// ------------------------------------------------------------------ main ----

int Main(int argc, char** argv) {
  Options opt = ParseArgs(argc, argv);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  spdlog::set_level(spdlog::level::warn);
  if (opt.no_deadlock_detection) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  }

  std::string tmpl = opt.dir + "/cistern-registry-bench-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr)
    Die(fmt::format("mkdtemp {}: {}", tmpl, std::strerror(errno)));
  std::string dir = buf.data();
  if (dir.size() >= sizeof g_cleanup.dir) Die("directory name too long");
  std::memcpy(g_cleanup.dir, dir.c_str(), dir.size() + 1);
  FsInfo fs = FilesystemOf(dir);
  if (fs.tmpfs && !opt.allow_tmpfs)
    Die(dir + " is on tmpfs; pass another --dir (or --allow-tmpfs)");

  utsname u{};
  ::uname(&u);
  std::string cpu = CpuModel(), load0 = LoadAvg();
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  fmt::print("cistern_registry_bench: {} CPUs ({}), kernel {} {}, SQLite {}, load average {}\n",
             cpus, cpu, u.sysname, u.release, sqlite3_libversion(), load0);
  fmt::print("databases in {} on {} {} (mounted at {}); WAL, synchronous=FULL{}\n", dir, fs.type,
             fs.device, fs.mount_point,
             opt.no_deadlock_detection ? "; absl deadlock detection OFF (diagnostic)" : "");
  auto start = SteadyClock::now();
  CpuSnapshot run0 = TakeCpuSnapshot();
  std::vector<Target> targets;
  JsonObject json;
  json.Str("benchmark", "cistern_registry_bench");
  auto want = [&](char p) { return opt.phases.find(p) != std::string::npos; };
  if (want('3')) BenchMemory(opt, &targets, &json);  // first: before gRPC and SQLite warm the heap
  if (want('1') || want('5')) BenchPublishAndDelay(opt, dir, want('1'), want('5'), &targets, &json);
  if (want('2')) BenchLocate(opt, dir, &targets, &json);
  if (want('4')) BenchRecovery(opt, dir, &json);

  double total = Seconds(SteadyClock::now() - start);
  std::string load1 = LoadAvg();
  fmt::print("\n== Targets ==\n   {:<58} {:>11} {:>11}  {}\n", "target", "measured", "threshold",
             "verdict");
  std::vector<Json> jt;
  int met = 0;
  for (const Target& t : targets) {
    std::string verdict = t.met() ? fmt::format("met (margin {:.1f}%)", 100 * t.margin())
                                  : fmt::format("MISSED by {:.1f}%", -100 * t.margin());
    met += t.met();
    fmt::print("   {:<58} {:>11.2f} {:>3}{:>8.2f}  {}\n", t.name, t.value,
               t.at_most ? "<=" : ">=", t.threshold, verdict);
    jt.push_back(JsonObject()
                     .Str("target", t.name)
                     .Str("unit", t.unit)
                     .Num("measured", t.value)
                     .Str("comparison", t.at_most ? "<=" : ">=")
                     .Num("threshold", t.threshold)
                     .Bool("met", t.met())
                     .Num("margin_fraction", t.margin())
                     .Build());
  }
  CpuSnapshot run1 = TakeCpuSnapshot();
  double all_cpu = std::max(1e-9, run1.total - run0.total);
  double own_share = (run1.own - run0.own) / all_cpu,
         idle_share = (run1.idle - run0.idle) / all_cpu;
  double others_share = std::max(0.0, 1 - own_share - idle_share);
  fmt::print("   {} of {} met. Total run {:.1f} s; load average {} at start, {} at end\n", met,
             targets.size(), total, load0, load1);
  fmt::print(
      "   of all CPU time during the run: {:.0f}% this process, {:.0f}% other processes, "
      "{:.0f}% idle\n",
      100 * own_share, 100 * others_share, 100 * idle_share);
  if (!opt.json_path.empty()) {
    json.Raw("machine", JsonObject()
                            .Int("cpus_online", static_cast<uint64_t>(cpus))
                            .Str("cpu_model", cpu)
                            .Str("kernel", fmt::format("{} {}", u.sysname, u.release))
                            .Str("sqlite", sqlite3_libversion())
                            .Str("database_dir", dir)
                            .Str("filesystem", fs.type)
                            .Str("device", fs.device)
                            .Str("mount_point", fs.mount_point)
                            .Str("load_average_start", load0)
                            .Str("load_average_end", load1)
                            .Bool("absl_deadlock_detection_off", opt.no_deadlock_detection)
                            .Build())
        .Num("total_seconds", total)
        .Raw("phase_load", Json(g_phase_loads))
        .Raw("run_cpu", JsonObject()
                            .Num("own_share", own_share)
                            .Num("others_share", others_share)
                            .Num("idle_share", idle_share)
                            .Build())
        .Raw("targets", Json(jt));
    std::ofstream f(opt.json_path);
    f << json.Build().dump(2) << "\n";
    if (!f) Die("cannot write " + opt.json_path);
    fmt::print("wrote {}\n", opt.json_path);
  }
  CleanupNow();
  return 0;
}

}  // namespace
}  // namespace cistern::bench

int main(int argc, char** argv) { return cistern::bench::Main(argc, argv); }

// cisternd: the per-host shared-memory object store daemon.
//
// Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when the daemon
// could not start or serve (arena in use, corrupt arena, socket taken), 2 for
// a usage or configuration error or a metrics port that is taken (checked
// before anything else is touched).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/cleanup/cleanup.h"
#include "spdlog/spdlog.h"
#include "src/cluster/agent.h"
#include "src/cluster/peer.h"
#include "src/cluster/replicate.h"
#include "src/common/fmt_absl.h"
#include "src/common/unique_fd.h"
#include "src/config/daemon_config.h"
#include "src/daemon/arena_file.h"
#include "src/daemon/metrics.h"
#include "src/daemon/prefault.h"
#include "src/daemon/process.h"
#include "src/daemon/server.h"
#include "src/registry/sqlite_backend.h"
#include "src/service/http_server.h"
#include "src/service/logging.h"
#include "src/service/stdio_rotation.h"
#include "src/store/fast_lease.h"
#include "src/store/object_store.h"
#include "src/store/shared_index.h"
#include "src/store/shared_lease_table.h"
#include "src/stream/stream_manager.h"

namespace {

cistern::daemon::Server* g_server = nullptr;
cistern::daemon::Metrics* g_metrics = nullptr;

cistern::wire::ReplicateReply ReplicateReplyOf(const cistern::cluster::ReplicateResult& r) {
  cistern::wire::ReplicateReply out;
  out.set_key(r.key);
  out.set_generation(r.generation);
  for (const auto& t : r.targets) {
    auto* w = out.add_targets();
    w->set_host_id(t.host_id);
    w->set_code(static_cast<int32_t>(t.status.code()));
    w->set_message(std::string(t.status.message()));
    w->set_already_held(t.already_held);
    w->set_upstream(t.upstream);
    for (const auto& [host, bytes] : t.sources) {
      auto* s = w->add_sources();
      s->set_host_id(host);
      s->set_bytes(bytes);
    }
  }
  for (const auto& [host, bytes] : r.sent) {
    auto* s = out.add_sent();
    s->set_host_id(host);
    s->set_bytes(bytes);
  }
  return out;
}

void OnSignal(int) {
  if (g_metrics) g_metrics->set_state(cistern::daemon::HealthState::kDraining);
  if (g_server) g_server->Shutdown();
}

int Serve(const cistern::config::DaemonConfig& cfg, bool format) {
  using namespace cistern;
  // The metrics endpoint is bound first, so that a port in use stops the
  // daemon before it has touched an arena or the socket. /health answers 503
  // until the daemon serves.
  daemon::Metrics metrics(CISTERN_VERSION);
  service::HttpServerOptions http_opts;
  http_opts.address = cfg.metrics_address();
  http_opts.port = static_cast<uint16_t>(cfg.metrics_port());
  service::HttpServer http(http_opts);
  http.Handle("/metrics", [&metrics] { return metrics.MetricsPage(); });
  http.Handle("/health", [&metrics] { return metrics.HealthPage(); });
  // In the background (log_file set) stdout and stderr are the session's
  // stderr.log: rotated like the log, checked once a second by the server's
  // loop (below).
  std::optional<service::StdioRotation> stdio;
  if (!cfg.log_file().empty()) {
    stdio = service::StdioRotation::ForDescriptors(
        {STDERR_FILENO, STDOUT_FILENO}, cfg.log_max_bytes(), static_cast<int>(cfg.log_max_files()));
  }
  if (absl::Status s = http.Start(); !s.ok()) {
    spdlog::error(
        "cannot serve metrics: {} (another cisternd? set metrics_port; 0 picks a free one)",
        s.message());
    return 2;
  }
  spdlog::info("metrics on http://{}/metrics, health on http://{}/health", http.endpoint(),
               http.endpoint());

  std::error_code ec;
  std::filesystem::create_directories(cfg.runtime_dir(), ec);
  std::filesystem::create_directories(std::filesystem::path(cfg.socket_path()).parent_path(), ec);

  std::vector<std::unique_ptr<daemon::ArenaFile>> files;
  std::vector<store::TierSpec> specs;
  daemon::ServerOptions sopts;
  for (int i = 0; i < cfg.tiers_size(); ++i) {
    const auto& t = cfg.tiers(i);
    bool formatted = false;
    auto f = daemon::ArenaFile::Open(t.path(), t.size(), i, t.name(), format, &formatted);
    if (!f.ok()) {
      spdlog::error("tier '{}': {}", t.name(), f.status().message());
      return 1;
    }
    spdlog::info("tier '{}': arena '{}' of {} bytes {}", t.name(), t.path(), t.size(),
                 formatted ? "formatted" : "reopened");
    specs.push_back({t.name(), (*f)->base(), (*f)->size(), t.high_watermark(), t.low_watermark()});
    wire::TierInfo info;
    info.set_name(t.name());
    info.set_index(i);
    info.set_arena_bytes(t.size());
    sopts.tiers.push_back(info);
    sopts.arena_fds.push_back((*f)->share_fd());
    files.push_back(std::move(*f));
  }
  // Declared after `files`: stops before the arenas are unmapped.
  std::vector<daemon::PrefaultRegion> to_prefault;
  for (int i = 0; i < cfg.tiers_size(); ++i) {
    if (cfg.tiers(i).prefault()) {
      to_prefault.push_back(
          {cfg.tiers(i).name(), files[i]->base(), files[i]->size(), files[i]->share_fd()});
    }
  }
  std::unique_ptr<daemon::Prefaulter> prefaulter;
  if (!to_prefault.empty()) {
    prefaulter = std::make_unique<daemon::Prefaulter>(std::move(to_prefault));
  }

  // The shared lease table: the leases and writes of client processes that
  // outlived the previous daemon keep their blocks (docs/operations.md).
  std::vector<uint64_t> identity;
  for (const auto& f : files) identity.push_back(store::Arena::Identity(f->base()));
  const uint32_t lease_slots = 2 * cfg.max_sessions();  // recovered sessions need slots too
  const uint64_t table_bytes = store::SharedLeaseTable::BytesFor(lease_slots, cfg.max_leases());
  bool table_new = false;
  auto lease_file =
      daemon::ArenaFile::OpenLeaseTable(cfg.lease_table_path(), table_bytes, &table_new);
  if (!lease_file.ok()) {
    spdlog::error("lease table: {}", lease_file.status().message());
    return 1;
  }
  std::vector<store::SharedLeaseTable::Session> living;
  std::vector<daemon::RecoveredHolder> holders;
  absl::StatusOr<store::SharedLeaseTable::Contents> contents =
      absl::NotFoundError("new lease table");
  if (!table_new) {
    contents = store::SharedLeaseTable::Read((*lease_file)->base(), table_bytes, lease_slots,
                                             cfg.max_leases(), identity);
    if (!contents.ok()) {
      spdlog::warn(
          "lease table '{}': {}; starting a new one (no lease held across the restart "
          "is kept)",
          cfg.lease_table_path(), contents.status().message());
    }
  }
  if (!contents.ok()) {
    if (absl::Status s = store::SharedLeaseTable::Format(
            (*lease_file)->base(), table_bytes, lease_slots, cfg.max_leases(), identity, 1);
        !s.ok()) {
      spdlog::error("lease table '{}': {}", cfg.lease_table_path(), s.message());
      return 1;
    }
  } else {
    for (const auto& sess : contents->sessions) {
      auto pidfd = daemon::OpenLivingProcess(sess.pid, sess.pid_start);
      if (!pidfd.ok()) continue;  // the holder is gone: its blocks are freed below
      living.push_back(sess);
      holders.push_back({daemon::kRecoveredSessionBase + holders.size(), sess.incarnation,
                         sess.session_id, sess.pid, sess.uid, std::move(*pidfd)});
    }
  }
  store::SharedLeaseTable lease_table =
      store::SharedLeaseTable::Attach((*lease_file)->base(), table_bytes, living);

  store::StoreOptions store_opts;
  store_opts.shared_leases = &lease_table;

  // The local fast path (docs/architecture.md): the index clients read, and
  // the lease slots they write (one region per slot of the lease table, kept
  // across a restart with it). The index is derived: rebuilt at every start.
  std::unique_ptr<daemon::ArenaFile> index_file, fast_file;
  std::optional<store::SharedIndex> shared_index;
  std::optional<store::FastLeaseRegions> fast_regions;
  UniqueFd index_ro;
  if (cfg.fast_path().enabled()) {
    const std::string index_path = cfg.lease_table_path() + ".index";
    const std::string fast_path = cfg.lease_table_path() + ".fast";
    const uint64_t index_bytes = store::SharedIndex::BytesFor(cfg.fast_path().index_slots());
    bool fresh = false;
    auto fi = daemon::ArenaFile::OpenLeaseTable(index_path, index_bytes, &fresh);
    if (!fi.ok()) {
      spdlog::error("fast path index: {}", fi.status().message());
      return 1;
    }
    // The index is rebuilt: drop the earlier one's pages (tmpfs), so that only
    // the slots this daemon writes take memory. A client still reading the old
    // index sees zeros (a miss) or an old entry, which it checks in the arena.
    bool zeroed = fresh;
    if (!zeroed) {
      zeroed = ::fallocate((*fi)->share_fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           store::kIndexHeaderBytes,
                           static_cast<off_t>(index_bytes - store::kIndexHeaderBytes)) == 0;
    }
    auto idx = store::SharedIndex::Format((*fi)->base(), index_bytes, cfg.fast_path().index_slots(),
                                          zeroed);
    if (!idx.ok()) {
      spdlog::error("fast path index '{}': {}", index_path, idx.status().message());
      return 1;
    }
    index_ro.Reset(::open(index_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!index_ro.valid()) {
      spdlog::error("fast path index '{}': {}", index_path, std::strerror(errno));
      return 1;
    }
    const uint64_t fast_bytes = store::FastLeaseRegions::BytesFor(lease_slots);
    auto ff = daemon::ArenaFile::OpenLeaseTable(fast_path, fast_bytes, &fresh);
    if (!ff.ok()) {
      spdlog::error("fast lease file: {}", ff.status().message());
      return 1;
    }
    absl::StatusOr<store::FastLeaseRegions> regions = absl::NotFoundError("a new file");
    if (!fresh && !format) {
      regions = store::FastLeaseRegions::Open((*ff)->base(), fast_bytes, lease_slots);
      if (!regions.ok()) {
        spdlog::warn(
            "fast lease file '{}': {}; starting a new one (no fast lease held across "
            "the restart is kept)",
            fast_path, regions.status().message());
      }
    }
    if (!regions.ok())
      regions = store::FastLeaseRegions::Format((*ff)->base(), fast_bytes, lease_slots);
    if (!regions.ok()) {
      spdlog::error("fast lease file '{}': {}", fast_path, regions.status().message());
      return 1;
    }
    shared_index.emplace(*idx);
    fast_regions.emplace(*regions);
    store_opts.index = &*shared_index;
    store_opts.fast_leases = &*fast_regions;
    store_opts.process_lives = [](int32_t pid, uint64_t start) {
      return daemon::ProcessLives(pid, start);
    };
    sopts.index_fd = index_ro.get();
    sopts.index_bytes = index_bytes;
    sopts.fast_lease_fd = (*ff)->share_fd();
    index_file = std::move(*fi);
    fast_file = std::move(*ff);
  }
  for (size_t i = 0; i < living.size(); ++i) {
    store_opts.recovered.push_back({holders[i].session, living[i]});
  }
  switch (cfg.recovery().on_corrupt_object()) {
    case config::CORRUPT_OBJECT_POLICY_FAIL:
      store_opts.on_corrupt = store::Arena::OnCorrupt::kFail;
      break;
    case config::CORRUPT_OBJECT_POLICY_DROP:
      store_opts.on_corrupt = store::Arena::OnCorrupt::kDrop;
      break;
    default:
      store_opts.on_corrupt = store::Arena::OnCorrupt::kQuarantine;
      break;
  }
  store::RecoveryReport report;
  auto store = store::ObjectStore::Open(specs, store_opts, &report);
  if (!store.ok()) {
    spdlog::error("recovery failed: {}", store.status().message());
    return 1;
  }
  spdlog::info(
      "recovery: {} objects ({} bytes) kept, {} unsealed or removed blocks freed, {} superseded "
      "generations freed, {} corrupt objects quarantined, {} dropped, next generation > {}",
      report.objects, report.bytes, report.freed_blocks, report.superseded,
      report.quarantined.size(), report.dropped.size(), report.max_generation);
  for (const auto& d : report.dropped) {
    spdlog::error("dropped corrupt object '{}' at offset {}: {}", d.key, d.block_offset, d.reason);
  }
  if (!holders.empty() || report.stale_entries > 0) {
    spdlog::info(
        "lease table: {} client processes outlived the previous daemon; kept {} of their leases "
        "and {} pending writes until they reconnect or exit ({} stale entries cleared)",
        holders.size(), report.kept_leases, report.kept_writes, report.stale_entries);
  }
  for (const auto& q : report.quarantined) {
    spdlog::error(
        "quarantined corrupt object {} (tier '{}', offset {}, {} bytes): {}; it is not served; "
        "`cistern quarantine rm {}:{}` frees it",
        q.key.empty() ? "(key unreadable)" : cistern::QuoteKey(q.key), q.tier, q.block_offset,
        q.block_size, q.reason, q.tier, q.block_offset);
  }
  metrics.SetRecovery(report);

  // The embedded registry and the streams in it, reconciled against the store.
  std::filesystem::create_directories(std::filesystem::path(cfg.registry().path()).parent_path(),
                                      ec);
  auto registry = registry::OpenSqliteBackend(
      {.path = cfg.registry().path(), .background_sync = !cfg.registry().sync_on_loop()});
  if (!registry.ok()) {
    spdlog::error("registry: {}", registry.status().message());
    return 1;
  }
  stream::StreamDefaults stream_defaults;
  stream_defaults.lease_timeout_ms = cfg.streams().lease_timeout_ms();
  stream_defaults.high_watermark_bytes = cfg.streams().high_watermark_bytes();
  stream_defaults.low_watermark_bytes = cfg.streams().low_watermark_bytes();
  stream_defaults.max_lease_refs = cfg.streams().max_lease_refs();
  std::vector<std::pair<std::string, stream::ReconcileReport>> reconciled;
  auto streams = stream::StreamManager::Open(registry->get(), store->get(), Clock::Real(),
                                             stream_defaults, &reconciled);
  if (!streams.ok()) {
    spdlog::error("streams: {}", streams.status().message());
    return 1;
  }
  spdlog::info("registry {}: {} streams", (*registry)->Describe(), reconciled.size());
  for (const auto& [name, r] : reconciled) {
    spdlog::info("stream '{}' reconciled: {} released, {} requeued, {} lost", name, r.released,
                 r.requeued, r.lost);
  }

  sopts.socket_path = cfg.socket_path();
  sopts.token = cfg.token();
  sopts.allowed_uids.assign(cfg.allowed_uids().begin(), cfg.allowed_uids().end());
  sopts.max_frame_bytes = cfg.max_frame_bytes();
  sopts.hello_timeout = std::chrono::milliseconds(cfg.hello_timeout_ms());
  sopts.max_sessions = cfg.max_sessions();
  sopts.max_pending_sessions = cfg.max_pending_sessions();
  sopts.idle_timeout = std::chrono::milliseconds(cfg.session_idle_timeout_ms());
  sopts.max_unsent_reply_bytes = cfg.max_unsent_reply_bytes();
  sopts.max_read_ahead_bytes = cfg.max_read_ahead_bytes();
  sopts.max_batch = cfg.max_batch();
  sopts.busy_poll = std::chrono::microseconds(cfg.busy_poll_us());
  sopts.daemon_version = CISTERN_VERSION;
  sopts.metrics = metrics.requests();
  sopts.metrics_endpoint = http.endpoint();
  sopts.incarnation = lease_table.incarnation();
  daemon::Server server(sopts, store->get(), streams->get(), Clock::Real());
  if (absl::Status s = server.Listen(); !s.ok()) {
    spdlog::error("{}", s.message());
    return 1;
  }
  server.WatchRecoveredHolders(std::move(holders));
  // In a cluster: register, sync, heartbeat and publish (src/cluster/agent.h).
  // The daemon serves its local objects whether the registry answers or not.
  std::unique_ptr<cluster::ClusterAgent> agent;
  std::unique_ptr<cluster::PeerNode> peers;
  if (!cfg.cluster().registry().empty()) {
    const auto& cl = cfg.cluster();
    cluster::AgentOptions ao;
    ao.host_id = cfg.host_id();
    ao.advertise = cl.advertise();
    ao.daemon_version = CISTERN_VERSION;
    ao.incarnation = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
    ao.registry.address = cl.registry();
    ao.registry.cluster_id = cl.cluster_id();
    ao.registry.token = cl.token();
    ao.registry.ca_file = cl.tls().ca_file();
    ao.registry.cert_file = cl.tls().cert_file();
    ao.registry.key_file = cl.tls().key_file();
    ao.registry.server_name = cl.tls().server_name();
    ao.registry.rpc_timeout = std::chrono::milliseconds(cl.rpc_timeout_ms());
    ao.publish_delay = std::chrono::milliseconds(cl.publish_delay_ms());
    ao.publish_batch = cl.publish_batch();
    ao.max_backoff = std::chrono::milliseconds(cl.max_retry_backoff_ms());
    ao.on_published = [&server] { server.NotifyPublished(); };
    cluster::RegistryClientOptions ao_registry = ao.registry;
    agent = std::make_unique<cluster::ClusterAgent>(std::move(ao), store->get());
    if (absl::Status s = agent->Start(); !s.ok()) {
      spdlog::error("cluster: {}", s.message());
      return 2;
    }
    server.SetClusterStatus([&agent, &peers](wire::ClusterStatus* out) {
      agent->FillStatus(out);
      if (!peers) return;
      cluster::Fetcher::Stats f = peers->fetcher().stats();
      out->set_pulls(f.pulls);
      out->set_pulls_failed(f.failed);
      out->set_pulled_bytes(f.bytes);
      out->set_pull_retries(f.retries);
      out->set_peer_bytes_sent(peers->server().bytes_sent());
      out->set_peer_leases(peers->server().open_leases());
    });
    server.SetPublication(
        [&agent](std::string_view key, uint64_t gen) { return agent->IsPublished(key, gen); },
        [&agent] { return agent->WhyLate(); });
    // Peer to peer: serve this host's objects to pullers at advertise, and
    // pull what a get asks for and this host lacks (src/cluster/peer.h).
    cluster::PeerNodeOptions po;
    po.host_id = cfg.host_id();
    po.advertise = cl.advertise();
    po.transport_port = static_cast<uint16_t>(cl.transport_port());
    po.channel.cluster_id = cl.cluster_id();
    po.channel.token = cl.token();
    po.channel.ca_file = cl.tls().ca_file();
    po.channel.cert_file = cl.tls().cert_file();
    po.channel.key_file = cl.tls().key_file();
    po.channel.peer_server_name = cl.tls().peer_server_name();
    po.registry = ao_registry;
    po.pull_threads = cl.pull_threads();
    po.stall_timeout = std::chrono::milliseconds(cl.pull_stall_timeout_ms());
    po.transfer = cl.transfer() == "am"    ? cluster::Transfer::kActiveMessage
                  : cl.transfer() == "get" ? cluster::Transfer::kOneSided
                                           : cluster::Transfer::kAuto;
    po.on_pull_done = [&server] { server.NotifyPublished(); };
    std::vector<char*> bases;
    for (const auto& spec : specs) {
      bases.push_back(spec.base);
      po.tier_sizes.push_back(spec.size);
    }
    auto node = cluster::PeerNode::Start(std::move(po), store->get(), std::move(bases));
    if (!node.ok()) {
      spdlog::error("cluster: {}", node.status().message());
      return 2;
    }
    peers = std::move(*node);
    daemon::Server::RemoteGet remote;
    remote.default_timeout = std::chrono::milliseconds(cl.pull_timeout_ms());
    remote.start = [&peers](std::string_view key, uint64_t generation, std::string_view prefer,
                            std::chrono::milliseconds timeout) {
      peers->fetcher().Start({std::string(key), generation, std::string(prefer),
                              std::chrono::steady_clock::now() + timeout});
    };
    remote.poll = [&peers](std::string_view key,
                           uint64_t generation) -> std::optional<absl::Status> {
      auto o = peers->fetcher().Poll(key, generation);
      if (o.state == cluster::Fetcher::State::kRunning) return std::nullopt;
      return o.status;  // kNone (forgotten): OK, and the get says NotFound
    };
    remote.replicate_start = [&peers, &cl](const wire::Replicate& r) {
      cluster::ReplicateRequest req;
      req.key = r.key();
      req.generation = r.generation();
      req.to.assign(r.to().begin(), r.to().end());
      req.all = r.all();
      req.fanout = r.fanout();
      uint64_t ms = r.wait_ms() != 0 ? r.wait_ms() : cl.pull_timeout_ms();
      req.timeout =
          std::chrono::milliseconds(std::min<uint64_t>(ms, daemon::Server::kMaxReplicateWaitMs));
      return peers->replicator().Start(std::move(req));
    };
    remote.replicate_poll =
        [&peers](uint64_t job) -> std::optional<absl::StatusOr<wire::ReplicateReply>> {
      auto done = peers->replicator().Poll(job);
      if (!done) return std::nullopt;
      if (!done->ok()) return done->status();
      return ReplicateReplyOf(**done);
    };
    remote.replicate_forget = [&peers](uint64_t job) { peers->replicator().Forget(job); };
    server.SetRemoteGet(std::move(remote));
    spdlog::info(
        "cluster '{}': host '{}', registry {}, serving peers at {} (control, {}) and {} "
        "(transport)",
        cl.cluster_id(), cfg.host_id(), cl.registry(), cl.advertise(),
        cl.tls().cert_file().empty() ? "plaintext" : "mutual TLS", peers->transport_address());
  }
  // Housekeeping on the event loop, once a second: the eviction summary,
  // the stderr.log rotation, the end of peers' expired leases, and the
  // blocks that waited for fast leases to end.
  server.Every(std::chrono::seconds(1), [&metrics, &stdio, &peers, &store] {
    metrics.LogEvictions();
    (*store)->ReapFastRegions();
    (*store)->ReclaimFastHeld();
    if (peers) peers->server().ExpireLeases();
    if (stdio && stdio->Check()) spdlog::info("rotated {}", stdio->path().string());
  });
  metrics.Attach(store->get(), [&server] { return server.session_count(); });
  metrics.AttachLedger(registry->get());
  absl::Cleanup detach = [&metrics] { metrics.Detach(); };
  g_metrics = &metrics;
  g_server = &server;
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGXFSZ, SIG_IGN);  // a file-size limit surfaces as a write error (EFBIG)
  spdlog::info("cisternd {} ready on '{}' (pid {})", CISTERN_VERSION, cfg.socket_path(), getpid());
  metrics.set_state(daemon::HealthState::kReady);
  server.Run();
  metrics.set_state(daemon::HealthState::kDraining);
  peers.reset();  // pulls end and peers' leases are released before the store goes
  if (agent) agent->Stop(/*deregister=*/true);
  g_server = nullptr;
  g_metrics = nullptr;
  http.Stop();
  spdlog::info("cisternd stopped cleanly");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cisternd: Cistern's per-host shared-memory tensor store daemon"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool format = false;
  app.add_option("--config", config_path, "YAML config file (see deploy/config/cisternd.yaml)");
  app.add_option("--set", overrides, "override a config key, e.g. --set tiers.0.size=4GB")
      ->take_all()
      ->allow_extra_args(false);
  app.add_flag("--format", format,
               "discard existing arenas and start empty (for a corrupt or incompatible arena)");
  app.set_version_flag("--version", std::string(CISTERN_VERSION));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  // The log goes to stdout (`cistern daemon logs`); stderr carries only what
  // is printed before logging starts (usage and config errors) and crashes.
  cistern::service::StartConsoleLog("cisternd");
  auto cfg = cistern::config::LoadDaemonConfig(config_path, overrides);
  if (!cfg.ok()) {
    std::fprintf(stderr, "cisternd: configuration error: %s\n",
                 std::string(cfg.status().message()).c_str());
    return 2;
  }
  // Rotated at log_max_bytes: cisternd.log, cisternd.1.log (the newest) ...
  if (absl::Status s =
          cistern::service::ConfigureLog("cisternd", cfg->log_file(), cfg->log_max_bytes(),
                                         cfg->log_max_files(), cfg->log_level());
      !s.ok()) {
    std::fprintf(stderr, "cisternd: configuration error: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return Serve(*cfg, format);
}

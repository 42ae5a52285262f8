#include "src/registryd/registry_server.h"

#include <utility>

#include "fmt/format.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/metric_family.h"
#include "spdlog/spdlog.h"
#include "src/common/fmt_absl.h"
#include "src/service/grpc_util.h"
#include "src/service/prom_util.h"

namespace cistern::registryd {
namespace {

namespace v1 = cistern::registry::v1;

std::string HostPort(const std::string& address, uint16_t port) {
  if (address.find(':') != std::string::npos) return fmt::format("[{}]:{}", address, port);
  return fmt::format("{}:{}", address, port);
}

}  // namespace

// ---------------------------------------------------------------------------
// The gRPC service

// Locate, the hot read, uses gRPC's callback API: it runs on the thread
// that read the request, with no hand-off to a worker thread of the
// synchronous pool. On the 2-vCPU VM that took the registry's cost from about
// 11,700 to about 20,000 Locates per CPU-second (docs/benchmarks.md,
// "Cluster registry"). It never blocks but for the catalog's reader lock.
// Every other method is synchronous.
class RegistryServer::Service final
    : public v1::Registry::WithCallbackMethod_Locate<v1::Registry::Service> {
 public:
  explicit Service(RegistryServer* server) : s_(server) {}

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterReply* reply) override {
    return Write("Register", ctx, [&](catalog::Catalog& c, catalog::Txn* txn) {
      auto r = c.Register(*req, txn);
      if (!r.ok()) return r.status();
      *reply = std::move(*r);
      if (reply->sync_required()) {
        spdlog::info(
            "host '{}' registered (incarnation {}, number {}); inventory differs, sync "
            "asked",
            req->host_id(), req->incarnation(), reply->host_number());
      } else {
        spdlog::info("host '{}' registered (incarnation {}, number {}); inventory matches",
                     req->host_id(), req->incarnation(), reply->host_number());
      }
      return absl::OkStatus();
    });
  }

  grpc::Status SyncInventory(grpc::ServerContext* ctx, grpc::ServerReader<v1::InventoryChunk>* in,
                             v1::SyncReply* reply) override {
    Clock::TimePoint start = Clock::Real()->Now();
    grpc::Status st = Authorize(ctx);
    if (st.ok()) {
      v1::InventoryChunk chunk;
      bool first = true;
      bool ended = false;
      while (!ended && in->Read(&chunk)) {
        if (chunk.replicas_size() > static_cast<int>(s_->options_.max_entries_per_request)) {
          st = service::ToGrpc(absl::InvalidArgumentError(
              fmt::format("inventory chunk of {} replicas exceeds max_entries_per_request {}",
                          chunk.replicas_size(), s_->options_.max_entries_per_request)));
          break;
        }
        absl::Status s = s_->committer_->Run([&](catalog::Catalog& c, catalog::Txn* txn) {
          auto r = c.SyncChunk(chunk, first, txn);
          if (!r.ok()) return r.status();
          *reply = std::move(*r);
          return absl::OkStatus();
        });
        if (!s.ok()) {
          st = service::ToGrpc(s);
          break;
        }
        first = false;
        ended = chunk.last();
      }
      if (st.ok() && !ended) {
        st = grpc::Status(grpc::StatusCode::ABORTED,
                          "the inventory stream ended before its last chunk; register again and "
                          "resend it");
      }
      if (st.ok()) {
        const auto& r = reply->report();
        spdlog::info(
            "host '{}' inventory reconciled: {} added, {} removed, {} updated, {} kept, {} "
            "conflicts",
            chunk.host_id(), r.added(), r.removed(), r.updated(), r.kept(), r.conflicts());
      }
    }
    s_->metrics_->RecordRequest("SyncInventory", static_cast<absl::StatusCode>(st.error_code()),
                                Clock::Real()->Now() - start);
    return st;
  }

  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatReply* reply) override {
    return Write("Heartbeat", ctx, [&](catalog::Catalog& c, catalog::Txn* txn) {
      auto r = c.Heartbeat(*req, txn);
      if (!r.ok()) return r.status();
      *reply = std::move(*r);
      return absl::OkStatus();
    });
  }

  grpc::Status Publish(grpc::ServerContext* ctx, const v1::PublishRequest* req,
                       v1::PublishReply* reply) override {
    size_t n = static_cast<size_t>(req->added_size()) + static_cast<size_t>(req->removed_size());
    if (n > s_->options_.max_entries_per_request) {
      return Refuse("Publish", absl::InvalidArgumentError(fmt::format(
                                   "publication of {} entries exceeds max_entries_per_request {}",
                                   n, s_->options_.max_entries_per_request)));
    }
    return Write("Publish", ctx, [&](catalog::Catalog& c, catalog::Txn* txn) {
      auto r = c.Publish(*req, txn);
      if (!r.ok()) return r.status();
      *reply = std::move(*r);
      return absl::OkStatus();
    });
  }

  grpc::Status Deregister(grpc::ServerContext* ctx, const v1::DeregisterRequest* req,
                          v1::DeregisterReply* reply) override {
    return Write("Deregister", ctx, [&](catalog::Catalog& c, catalog::Txn* txn) {
      auto r = c.Deregister(*req, txn);
      if (!r.ok()) return r.status();
      *reply = std::move(*r);
      spdlog::info("host '{}' deregistered; {} replicas dropped", req->host_id(),
                   reply->replicas_dropped());
      return absl::OkStatus();
    });
  }

  grpc::Status ClaimTransfer(grpc::ServerContext* ctx, const v1::ClaimTransferRequest* req,
                             v1::ClaimTransferReply* reply) override {
    return Write("ClaimTransfer", ctx, [&](catalog::Catalog& c, catalog::Txn* txn) {
      auto r = c.ClaimTransfer(*req, txn);
      if (!r.ok()) return r.status();
      *reply = std::move(*r);
      return absl::OkStatus();
    });
  }

  grpc::Status CompleteTransfer(grpc::ServerContext* ctx, const v1::CompleteTransferRequest* req,
                                v1::CompleteTransferReply*) override {
    return Write("CompleteTransfer", ctx, [&](catalog::Catalog& c, catalog::Txn* txn) {
      return c.CompleteTransfer(*req, txn);
    });
  }

  grpc::ServerUnaryReactor* Locate(grpc::CallbackServerContext* ctx, const v1::LocateRequest* req,
                                   v1::LocateReply* reply) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(Read("Locate", ctx, [&](const catalog::Catalog& c) {
      auto r = c.Locate(*req);
      if (!r.ok()) return r.status();
      *reply = std::move(*r);
      return absl::OkStatus();
    }));
    return reactor;
  }

  grpc::Status QuerySystem(grpc::ServerContext* ctx, const v1::QuerySystemRequest*,
                           v1::QuerySystemReply* reply) override {
    return Read("QuerySystem", ctx, [&](const catalog::Catalog& c) {
      *reply = c.QuerySystem();
      return absl::OkStatus();
    });
  }

 private:
  grpc::Status Authorize(grpc::ServerContextBase* ctx) {
    service::AuthFailure failure;
    grpc::Status st = service::CheckCaller(*ctx, s_->options_.catalog.cluster_id,
                                           s_->options_.token, "this registry", &failure);
    if (failure == service::AuthFailure::kClusterId) s_->metrics_->RecordAuthFailure("cluster_id");
    if (failure == service::AuthFailure::kToken) s_->metrics_->RecordAuthFailure("token");
    return st;
  }

  grpc::Status Refuse(const char* method, const absl::Status& s) {
    s_->metrics_->RecordRequest(method, s.code(), Clock::Duration(0));
    return service::ToGrpc(s);
  }

  template <class F>
  grpc::Status Write(const char* method, grpc::ServerContext* ctx, F&& op) {
    Clock::TimePoint start = Clock::Real()->Now();
    grpc::Status st = Authorize(ctx);
    if (st.ok()) st = service::ToGrpc(s_->committer_->Run(op));
    s_->metrics_->RecordRequest(method, static_cast<absl::StatusCode>(st.error_code()),
                                Clock::Real()->Now() - start);
    return st;
  }

  template <class F>
  grpc::Status Read(const char* method, grpc::ServerContextBase* ctx, F&& op) {
    Clock::TimePoint start = Clock::Real()->Now();
    grpc::Status st = Authorize(ctx);
    if (st.ok()) {
      ReaderLock lock(&s_->catalog_mu_);
      st = service::ToGrpc(op(static_cast<const catalog::Catalog&>(*s_->catalog_)));
    }
    s_->metrics_->RecordRequest(method, static_cast<absl::StatusCode>(st.error_code()),
                                Clock::Real()->Now() - start);
    return st;
  }

  RegistryServer* const s_;
};

// ---------------------------------------------------------------------------
// Start and stop

absl::StatusOr<std::unique_ptr<RegistryServer>> RegistryServer::Start(
    RegistryServerOptions options, std::unique_ptr<registry::MetadataBackend> backend,
    RegistryMetrics* metrics, Clock* clock) {
  std::unique_ptr<RegistryServer> s(new RegistryServer());
  s->options_ = std::move(options);
  s->metrics_ = metrics;
  s->backend_ = std::move(backend);
  {
    catalog::Txn txn;
    auto c = catalog::Catalog::Load(*s->backend_, s->options_.catalog, clock, &txn);
    if (!c.ok()) return c.status();
    if (absl::Status st = s->backend_->Apply(txn.batch); !st.ok()) {
      return absl::Status(st.code(), fmt::format("cannot record the registry's start in {}: {}",
                                                 s->backend_->Describe(), st.message()));
    }
    (*c)->Commit(&txn);
    s->catalog_ = std::move(*c);
  }
  s->committer_ = std::make_unique<GroupCommitter>(
      s->catalog_.get(), &s->catalog_mu_, s->backend_.get(), s->options_.max_group_commit,
      [metrics](const GroupStats& st) { metrics->RecordGroup(st); });

  s->service_ = std::make_unique<Service>(s.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  auto creds = service::ServerCredentials(s->options_.tls_cert_pem, s->options_.tls_key_pem,
                                          s->options_.tls_client_ca_pem);
  std::string address = HostPort(s->options_.listen_address, s->options_.port);
  int bound = 0;
  builder.AddListeningPort(address, creds, &bound);
  // gRPC would share a port with another process (SO_REUSEPORT): two
  // registries on one port must be an error, not a split of the daemons.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(s->options_.max_message_bytes);
  builder.SetMaxSendMessageSize(s->options_.max_message_bytes);
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || bound == 0) {
    s->committer_->Stop();
    return absl::FailedPreconditionError(fmt::format(
        "cannot listen on {}: the port is in use or the address is not this host's", address));
  }
  s->port_ = static_cast<uint16_t>(bound);

  metrics->Attach([srv = s.get()](std::vector<prometheus::MetricFamily>* out) {
    ReaderLock lock(&srv->catalog_mu_);
    const catalog::Catalog& c = *srv->catalog_;
    auto hosts = service::Family("cistern_registry_hosts", "Registered hosts, by state.",
                                 prometheus::MetricType::Gauge);
    std::vector<uint64_t> by_state = c.HostsByState();
    for (int st = v1::HostState_MIN; st <= v1::HostState_MAX; ++st) {
      if (st == v1::HOST_STATE_UNSPECIFIED) continue;
      prometheus::ClientMetric m;
      std::string name = v1::HostState_Name(static_cast<v1::HostState>(st)).substr(11);
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      m.label.push_back({"state", name});
      m.gauge.value = static_cast<double>(by_state[st]);
      hosts.metric.push_back(std::move(m));
    }
    out->push_back(std::move(hosts));
    out->push_back(service::SingleGauge("cistern_registry_replicas", "Catalogued replicas.",
                                        static_cast<double>(c.replica_count())));
    out->push_back(service::SingleGauge("cistern_registry_keys", "Keys with a catalogued replica.",
                                        static_cast<double>(c.key_count())));
    out->push_back(service::SingleGauge("cistern_registry_epoch",
                                        "Registry starts recorded in the database.",
                                        static_cast<double>(c.epoch())));
    out->push_back(service::SingleGauge("cistern_registry_generation_floor",
                                        "The highest generation the catalog has seen.",
                                        static_cast<double>(c.generation_floor())));
    out->push_back(service::SingleGauge("cistern_registry_transfers_in_flight",
                                        "Transfer claims not completed or lapsed.",
                                        static_cast<double>(c.claim_count())));
    const catalog::CatalogCounters& k = c.counters();
    auto rec = service::Family("cistern_registry_reconciled_replicas_total",
                               "Replicas inventory syncs changed in the catalog, by change.",
                               prometheus::MetricType::Counter);
    for (auto [name, v] :
         {std::pair{"added", k.reconcile_added}, std::pair{"removed", k.reconcile_removed},
          std::pair{"updated", k.reconcile_updated}}) {
      prometheus::ClientMetric m;
      m.label.push_back({"change", name});
      m.counter.value = static_cast<double>(v);
      rec.metric.push_back(std::move(m));
    }
    out->push_back(std::move(rec));
    out->push_back(service::SingleCounter(
        "cistern_registry_conflicts_total",
        "Replicas refused: another host holds that (key, generation) with other bytes.",
        static_cast<double>(k.conflicts)));
    out->push_back(service::SingleCounter("cistern_registry_hosts_suspected_total",
                                          "Hosts that became suspect (missed heartbeats).",
                                          static_cast<double>(k.hosts_suspected)));
    out->push_back(service::SingleCounter("cistern_registry_hosts_died_total",
                                          "Hosts declared dead.",
                                          static_cast<double>(k.hosts_died)));
    out->push_back(service::SingleCounter("cistern_registry_replicas_dropped_total",
                                          "Replicas of dead hosts dropped after the grace.",
                                          static_cast<double>(k.replicas_dropped_dead)));
    out->push_back(service::SingleCounter("cistern_registry_transfer_claims_refused_total",
                                          "Transfer claims refused: every source at its cap.",
                                          static_cast<double>(k.claims_refused)));
    out->push_back(service::SingleCounter("cistern_registry_transfer_claims_expired_total",
                                          "Transfer claims that lapsed uncompleted.",
                                          static_cast<double>(k.claims_expired)));
  });

  s->ticker_ = std::thread([srv = s.get()] {
    for (;;) {
      {
        MutexLock lock(&srv->tick_mu_);
        if (!srv->stopping_) srv->tick_cv_.WaitFor(&srv->tick_mu_, srv->options_.tick_interval);
        if (srv->stopping_) break;
      }
      if (absl::Status st = srv->TickForTest(); !st.ok()) {
        spdlog::warn("liveness tick: {}", st.message());
      }
    }
  });
  return s;
}

absl::Status RegistryServer::TickForTest() {
  return committer_->Run([](catalog::Catalog& c, catalog::Txn* txn) {
    c.Tick(txn);
    return absl::OkStatus();
  });
}

uint64_t RegistryServer::epoch() const {
  ReaderLock lock(&catalog_mu_);
  return catalog_->epoch();
}

void RegistryServer::Stop(std::chrono::milliseconds grace) {
  if (stopped_.exchange(true)) return;
  {
    MutexLock lock(&tick_mu_);
    stopping_ = true;
    tick_cv_.SignalAll();
  }
  if (ticker_.joinable()) ticker_.join();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + grace);
  if (committer_) committer_->Stop();
  if (metrics_) metrics_->Detach();
  if (server_) server_->Wait();
}

RegistryServer::~RegistryServer() { Stop(); }

}  // namespace cistern::registryd

#include "src/daemon/metrics.h"

#include <chrono>
#include <utility>

#include "absl/strings/ascii.h"
#include "prometheus/gauge.h"
#include "prometheus/text_serializer.h"
#include "spdlog/spdlog.h"
#include "src/service/prom_util.h"

namespace cistern::daemon {

using service::Family;
using service::SingleCounter;
using service::SingleGauge;
using service::StatusCodeLabel;
namespace {

constexpr std::string_view kVerbNames[kVerbCount] = {
    "hello",
    "create",
    "seal",
    "abort",
    "get",
    "release",
    "remove",
    "stat",
    "list",
    "stats",
    "batch_get",
    "batch_release",
    "batch_create",
    "batch_seal",
    "daemon_status",
    "quarantine_list",
    "quarantine_remove",
    "adopt",
    "wait_published",
    "prefetch",
    "replicate",
    "stream_open",
    "stream_commit",
    "stream_lease",
    "stream_ack",
    "stream_fail",
    "stream_stat",
    "stream_list",
    "stream_reconcile",
    "fast_released",
    "put",
    "put_extent",
    "invalid",
};

}  // namespace

Verb VerbOf(const wire::Request& req) {
  switch (req.body_case()) {
    case wire::Request::kHello:
      return Verb::kHello;
    case wire::Request::kCreate:
      return Verb::kCreate;
    case wire::Request::kSeal:
      return Verb::kSeal;
    case wire::Request::kAbort:
      return Verb::kAbort;
    case wire::Request::kGet:
      return Verb::kGet;
    case wire::Request::kRelease:
      return Verb::kRelease;
    case wire::Request::kFastReleased:
      return Verb::kFastReleased;
    case wire::Request::kPut:
      return Verb::kPut;
    case wire::Request::kPutExtent:
      return Verb::kPutExtent;
    case wire::Request::kRemove:
      return Verb::kRemove;
    case wire::Request::kStat:
      return Verb::kStat;
    case wire::Request::kList:
      return Verb::kList;
    case wire::Request::kStats:
      return Verb::kStats;
    case wire::Request::kBatchGet:
      return Verb::kBatchGet;
    case wire::Request::kBatchRelease:
      return Verb::kBatchRelease;
    case wire::Request::kBatchCreate:
      return Verb::kBatchCreate;
    case wire::Request::kBatchSeal:
      return Verb::kBatchSeal;
    case wire::Request::kDaemonStatus:
      return Verb::kDaemonStatus;
    case wire::Request::kQuarantineList:
      return Verb::kQuarantineList;
    case wire::Request::kQuarantineRemove:
      return Verb::kQuarantineRemove;
    case wire::Request::kAdopt:
      return Verb::kAdopt;
    case wire::Request::kWaitPublished:
      return Verb::kWaitPublished;
    case wire::Request::kPrefetch:
      return Verb::kPrefetch;
    case wire::Request::kReplicate:
      return Verb::kReplicate;
    case wire::Request::kStreamOpen:
      return Verb::kStreamOpen;
    case wire::Request::kStreamCommit:
      return Verb::kStreamCommit;
    case wire::Request::kStreamLease:
      return Verb::kStreamLease;
    case wire::Request::kStreamAck:
      return Verb::kStreamAck;
    case wire::Request::kStreamFail:
      return Verb::kStreamFail;
    case wire::Request::kStreamStat:
      return Verb::kStreamStat;
    case wire::Request::kStreamList:
      return Verb::kStreamList;
    case wire::Request::kStreamReconcile:
      return Verb::kStreamReconcile;
    default:
      return Verb::kInvalid;
  }
}

std::string_view VerbName(Verb verb) { return kVerbNames[static_cast<size_t>(verb)]; }

const std::vector<double>& RequestDurationBuckets() {
  static const std::vector<double> buckets = {
      1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4,
      5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1,
  };
  return buckets;
}

RequestMetrics::RequestMetrics(prometheus::Registry& registry) {
  auto& requests = prometheus::BuildCounter()
                       .Name("cistern_requests_total")
                       .Help("Requests answered, by verb.")
                       .Register(registry);
  errors_ = &prometheus::BuildCounter()
                 .Name("cistern_request_errors_total")
                 .Help("Requests answered with an error, by verb and status code.")
                 .Register(registry);
  auto& duration = prometheus::BuildHistogram()
                       .Name("cistern_request_duration_seconds")
                       .Help("Time from a request's arrival at the daemon to its answer, by verb.")
                       .Register(registry);
  for (size_t v = 0; v < kVerbCount; ++v) {
    prometheus::Labels labels = {{"verb", std::string(kVerbNames[v])}};
    requests_[v] = &requests.Add(labels);
    duration_[v] = &duration.Add(labels, RequestDurationBuckets());
  }
}

void RequestMetrics::Record(Verb verb, absl::StatusCode code, Clock::Duration latency) {
  size_t v = static_cast<size_t>(verb);
  requests_[v]->Increment();
  duration_[v]->Observe(std::chrono::duration<double>(latency).count());
  if (code == absl::StatusCode::kOk) return;
  size_t c = static_cast<size_t>(code);
  if (c >= kStatusCodeCount) {
    code = absl::StatusCode::kUnknown;
    c = static_cast<size_t>(code);
  }
  std::atomic<prometheus::Counter*>& slot = error_counters_[v][c];
  prometheus::Counter* counter = slot.load(std::memory_order_acquire);
  if (counter == nullptr) {
    // Family::Add returns the existing counter for labels it already has, so
    // two threads racing here end up with the same one.
    counter =
        &errors_->Add({{"verb", std::string(kVerbNames[v])}, {"code", StatusCodeLabel(code)}});
    slot.store(counter, std::memory_order_release);
  }
  counter->Increment();
}

prometheus::Gauge* Metrics::NewGauge(const std::string& name, const std::string& help) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(registry_).Add({});
}

Metrics::Metrics(std::string version) {
  recovered_objects_ =
      NewGauge("cistern_recovered_objects", "Sealed objects the last start recovered.");
  recovered_bytes_ =
      NewGauge("cistern_recovered_bytes", "Payload bytes of the objects the last start recovered.");
  recovery_dropped_ =
      NewGauge("cistern_recovery_dropped_objects",
               "Corrupt objects the last start dropped (recovery.on_corrupt_object: drop).");
  NewGauge("cistern_start_time_seconds",
           "When the daemon started, in seconds since the Unix epoch.")
      ->Set(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                .count());
  prometheus::BuildGauge()
      .Name("cistern_build_info")
      .Help("Always 1; the daemon's version is a label.")
      .Register(registry_)
      .Add({{"version", std::move(version)}})
      .Set(1);
}

void Metrics::SetRecovery(const store::RecoveryReport& report) {
  recovered_objects_->Set(static_cast<double>(report.objects));
  recovered_bytes_->Set(static_cast<double>(report.bytes));
  recovery_dropped_->Set(static_cast<double>(report.dropped.size()));
}

void Metrics::Attach(const store::ObjectStore* store, std::function<uint64_t()> sessions) {
  MutexLock l(&mu_);
  store_ = store;
  sessions_ = std::move(sessions);
}

void Metrics::AttachLedger(const registry::MetadataBackend* ledger) {
  MutexLock l(&mu_);
  ledger_ = ledger;
}

void Metrics::Detach() {
  MutexLock l(&mu_);
  store_ = nullptr;
  sessions_ = nullptr;
  ledger_ = nullptr;
}

std::vector<prometheus::MetricFamily> Metrics::CollectLive() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  MutexLock l(&mu_);
  if (store_ != nullptr) {
    store::StoreStats st = store_->Stats();
    auto bytes = Family("cistern_tier_bytes",
                        "Bytes of each tier: its capacity, the bytes in use (objects and their "
                        "headers) and the bytes of evictable objects no one leases.",
                        MetricType::Gauge);
    auto evictions =
        Family("cistern_evictions_total", "Objects evicted from each tier.", MetricType::Counter);
    for (const store::TierStats& t : st.tiers) {
      for (auto [kind, value] : {std::pair<const char*, uint64_t>{"capacity", t.capacity_bytes},
                                 {"used", t.used_bytes},
                                 {"evictable", t.evictable_bytes}}) {
        prometheus::ClientMetric m;
        m.label = {{"kind", kind}, {"tier", t.name}};
        m.gauge.value = static_cast<double>(value);
        bytes.metric.push_back(std::move(m));
      }
      prometheus::ClientMetric m;
      m.label = {{"tier", t.name}};
      m.counter.value = static_cast<double>(t.evictions);
      evictions.metric.push_back(std::move(m));
    }
    out.push_back(std::move(bytes));
    out.push_back(std::move(evictions));
    out.push_back(
        SingleGauge("cistern_objects", "Visible objects.", static_cast<double>(st.objects)));
    out.push_back(
        SingleGauge("cistern_leases", "Leases held by clients.", static_cast<double>(st.leases)));
    out.push_back(SingleGauge("cistern_pending_writes", "Objects created and not yet sealed.",
                              static_cast<double>(st.pending_writes)));
    out.push_back(SingleGauge(
        "cistern_reserved_bytes",
        "Write space sessions hold reserved ahead of their puts (part of the used bytes).",
        static_cast<double>(st.reserved_bytes)));
    out.push_back(
        SingleGauge("cistern_quarantined_objects",
                    "Corrupt objects set aside at recovery: not served, bytes kept until removed.",
                    static_cast<double>(st.quarantined_objects)));
    out.push_back(SingleGauge("cistern_quarantined_bytes",
                              "Bytes of the blocks of quarantined objects.",
                              static_cast<double>(st.quarantined_bytes)));
  }
  if (sessions_) {
    out.push_back(
        SingleGauge("cistern_sessions", "Open client sessions.", static_cast<double>(sessions_())));
  }
  if (ledger_ != nullptr) {
    registry::SyncProgress p = ledger_->sync_progress();
    out.push_back(SingleCounter("cistern_ledger_writes_total",
                                "Stream ledger transactions written (to the WAL).",
                                static_cast<double>(p.written)));
    out.push_back(SingleCounter("cistern_ledger_durable_writes_total",
                                "Stream ledger transactions fdatasynced; the replies waiting "
                                "for them have gone out.",
                                static_cast<double>(p.durable)));
    out.push_back(SingleCounter("cistern_ledger_syncs_total",
                                "fdatasyncs of the stream ledger's WAL (one per group of writes).",
                                static_cast<double>(p.syncs)));
    out.push_back(SingleCounter("cistern_ledger_checkpoints_total",
                                "Checkpoints of the stream ledger's WAL into its database.",
                                static_cast<double>(p.checkpoints)));
    out.push_back(SingleGauge("cistern_ledger_sync_failed",
                              "1 once an fdatasync of the stream ledger failed: ledger writes are "
                              "refused until cisternd restarts.",
                              p.failed.ok() ? 0.0 : 1.0));
  }
  return out;
}

std::string Metrics::Scrape() const {
  std::vector<prometheus::MetricFamily> families = registry_.Collect();
  for (auto& f : CollectLive()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

HttpResponse Metrics::MetricsPage() const {
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = Scrape();
  return r;
}

HttpResponse Metrics::HealthPage() const {
  HttpResponse r;
  switch (state()) {
    case HealthState::kReady:
      r.body = "ok\n";
      break;
    case HealthState::kStarting:
      r.status = 503;
      r.body = "starting\n";
      break;
    case HealthState::kDraining:
      r.status = 503;
      r.body = "draining\n";
      break;
  }
  return r;
}

void Metrics::LogEvictions() {
  MutexLock l(&mu_);
  if (store_ == nullptr) return;
  store::StoreStats st = store_->Stats();
  logged_evictions_.resize(st.tiers.size());
  for (size_t i = 0; i < st.tiers.size(); ++i) {
    const store::TierStats& t = st.tiers[i];
    if (t.evictions == logged_evictions_[i]) continue;
    spdlog::info("tier '{}': evicted {} objects ({} since start); {} of {} bytes used", t.name,
                 t.evictions - logged_evictions_[i], t.evictions, t.used_bytes, t.capacity_bytes);
    logged_evictions_[i] = t.evictions;
  }
}

}  // namespace cistern::daemon

// cisternd's Prometheus metrics and health state.
//
// Two kinds of figures. Request counts, errors and latencies are events: the
// server records each answered request in RequestMetrics, whose counters and
// histograms are created up front (errors on first use) and indexed by verb
// and status code, so recording costs a few atomic operations and no lookup.
// Everything else is state that already lives in the store or the server
// (bytes per tier, objects, leases, sessions, evictions): Metrics reads it when
// /metrics is scraped, so serving requests pays nothing for it.
//
// Every name starts with cistern_ and carries its unit; the text passes
// `promtool check metrics`. The families:
//   cistern_requests_total{verb}                    counter
//   cistern_request_errors_total{verb,code}         counter (absl code, snake_case)
//   cistern_request_duration_seconds{verb}          histogram, 1 µs .. 100 ms buckets
//   cistern_tier_bytes{tier,kind}                   gauge, kind = capacity|used|evictable
//   cistern_evictions_total{tier}                   counter (objects evicted)
//   cistern_objects, cistern_leases, cistern_pending_writes, cistern_reserved_bytes,
//   cistern_sessions   gauges
//   cistern_quarantined_objects, cistern_quarantined_bytes                     gauges
//   cistern_recovered_objects, cistern_recovered_bytes,
//   cistern_recovery_dropped_objects                gauges: what the last start recovered
//   cistern_ledger_writes_total, cistern_ledger_durable_writes_total,
//   cistern_ledger_syncs_total, cistern_ledger_checkpoints_total   counters:
//                                                   the stream ledger's group commit
//   cistern_ledger_sync_failed                      gauge, 1 once an fdatasync failed
//   cistern_start_time_seconds                      gauge, Unix time
//   cistern_build_info{version}                     gauge, always 1
//
// Thread-safety: all of it. Lock order: Metrics::mu_ before ObjectStore::mu_
// (a scrape reads the store's stats under mu_).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "cistern/local.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "src/common/clock.h"
#include "src/common/mutex.h"
#include "src/registry/metadata_backend.h"
#include "src/service/http_server.h"
#include "src/service/prom_util.h"
#include "src/store/object_store.h"

namespace cistern::daemon {

using service::HttpResponse;

// The verb label of a request: its body's field name in local.proto, or
// "invalid" for a frame that does not parse or has no body.
enum class Verb : uint8_t {
  kHello,
  kCreate,
  kSeal,
  kAbort,
  kGet,
  kRelease,
  kRemove,
  kStat,
  kList,
  kStats,
  kBatchGet,
  kBatchRelease,
  kBatchCreate,
  kBatchSeal,
  kDaemonStatus,
  kQuarantineList,
  kQuarantineRemove,
  kAdopt,
  kWaitPublished,
  kPrefetch,
  kReplicate,
  kStreamOpen,
  kStreamCommit,
  kStreamLease,
  kStreamAck,
  kStreamFail,
  kStreamStat,
  kStreamList,
  kStreamReconcile,
  kFastReleased,
  kPut,
  kPutExtent,
  kInvalid,
};
inline constexpr size_t kVerbCount = static_cast<size_t>(Verb::kInvalid) + 1;
inline constexpr size_t kStatusCodeCount = 17;  // absl::StatusCode 0..16

Verb VerbOf(const wire::Request& req);
std::string_view VerbName(Verb verb);
using service::StatusCodeLabel;

// Upper bounds of the request duration buckets, in seconds: 1-2-5 steps from
// 1 µs to 100 ms (a request is a few map operations; a parked create waits).
const std::vector<double>& RequestDurationBuckets();

// Per-verb request counters and latency histograms, registered in `registry`
// (which must outlive this). Record() is thread-safe and lock-free except for
// the first error of each (verb, code), which creates its counter.
class RequestMetrics {
 public:
  explicit RequestMetrics(prometheus::Registry& registry);

  void Record(Verb verb, absl::StatusCode code, Clock::Duration latency);

 private:
  prometheus::Family<prometheus::Counter>* errors_;
  std::array<prometheus::Counter*, kVerbCount> requests_{};
  std::array<prometheus::Histogram*, kVerbCount> duration_{};
  std::array<std::array<std::atomic<prometheus::Counter*>, kStatusCodeCount>, kVerbCount>
      error_counters_{};
};

// What /health answers: 503 "starting" until the daemon serves, 200 "ok"
// while it does, 503 "draining" from shutdown until exit.
enum class HealthState : int { kStarting, kReady, kDraining };

class Metrics {
 public:
  explicit Metrics(std::string version);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  RequestMetrics* requests() { return &requests_; }

  void SetRecovery(const store::RecoveryReport& report);

  // The sources read at scrape time; `store` and whatever `sessions` reads
  // must stay alive until Detach(). Until Attach and after Detach the store
  // and session families are left out of the text.
  void Attach(const store::ObjectStore* store, std::function<uint64_t()> sessions);
  // The stream ledger, whose sync progress a scrape reads (it must stay alive
  // until Detach). Until then the ledger families are left out.
  void AttachLedger(const registry::MetadataBackend* ledger);
  void Detach();

  // The exposition, Prometheus text format 0.0.4.
  std::string Scrape() const;

  // Async-signal-safe.
  void set_state(HealthState s) { state_.store(static_cast<int>(s)); }
  HealthState state() const { return static_cast<HealthState>(state_.load()); }

  // The handlers of GET /metrics and GET /health.
  HttpResponse MetricsPage() const;
  HttpResponse HealthPage() const;

  // Logs one line for each tier whose eviction count moved since the last
  // call (the daemon calls it once a second off the request path).
  void LogEvictions();

 private:
  prometheus::Gauge* NewGauge(const std::string& name, const std::string& help);
  std::vector<prometheus::MetricFamily> CollectLive() const;

  prometheus::Registry registry_;
  RequestMetrics requests_{registry_};
  prometheus::Gauge* recovered_objects_;
  prometheus::Gauge* recovered_bytes_;
  prometheus::Gauge* recovery_dropped_;
  std::atomic<int> state_{static_cast<int>(HealthState::kStarting)};
  static_assert(std::atomic<int>::is_always_lock_free);

  mutable Mutex mu_;
  const store::ObjectStore* store_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::function<uint64_t()> sessions_ ABSL_GUARDED_BY(mu_);
  const registry::MetadataBackend* ledger_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<uint64_t> logged_evictions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cistern::daemon

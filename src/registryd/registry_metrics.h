// cistern-registry's Prometheus metrics and health state. Events (requests,
// group commits, refused calls) are counted as they happen; the catalog's
// state (hosts by state, replicas, keys, transfers, reconcile counters) is
// read at scrape time through the function Attach installs.
//
// The families (every name starts with cistern_registry_ and passes
// `promtool check metrics`):
//   cistern_registry_requests_total{method,code}           counter
//   cistern_registry_request_duration_seconds{method}      histogram
//   cistern_registry_auth_failures_total{reason}           counter, reason = cluster_id|token
//   cistern_registry_group_commits_total                   counter (groups written)
//   cistern_registry_group_commit_requests_total           counter (requests in them)
//   cistern_registry_group_commit_failures_total           counter
//   cistern_registry_group_commit_duration_seconds         histogram (the Apply, i.e. the fsync)
//   cistern_registry_hosts{state}                          gauge
//   cistern_registry_replicas, _keys, _transfers_in_flight, _epoch, _generation_floor   gauges
//   cistern_registry_reconciled_replicas_total{change}     counter, change = added|removed|updated
//   cistern_registry_conflicts_total, _hosts_suspected_total, _hosts_died_total,
//   _replicas_dropped_total, _transfer_claims_refused_total, _transfer_claims_expired_total
//   cistern_registry_start_time_seconds                    gauge
//   cistern_registry_build_info{version}                   gauge, always 1
//
// Thread-safety: all of it.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "src/common/clock.h"
#include "src/common/mutex.h"
#include "src/service/http_server.h"

namespace cistern::registryd {

struct GroupStats;

class RegistryMetrics {
 public:
  explicit RegistryMetrics(std::string version);

  void RecordRequest(std::string_view method, absl::StatusCode code, Clock::Duration elapsed);
  void RecordAuthFailure(std::string_view reason);
  void RecordGroup(const GroupStats& stats);

  // `collect` appends the live families; it runs on each scrape until Detach.
  void Attach(std::function<void(std::vector<prometheus::MetricFamily>*)> collect);
  void Detach();

  void set_ready(bool ready) { ready_.store(ready); }
  std::string Scrape() const;
  service::HttpResponse MetricsPage() const;
  service::HttpResponse HealthPage() const;

 private:
  prometheus::Registry registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* durations_;
  prometheus::Family<prometheus::Counter>* auth_failures_;
  prometheus::Counter* groups_;
  prometheus::Counter* group_requests_;
  prometheus::Counter* group_failures_;
  prometheus::Histogram* group_duration_;
  mutable Mutex mu_;
  std::function<void(std::vector<prometheus::MetricFamily>*)> collect_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> ready_{false};
};

}  // namespace cistern::registryd

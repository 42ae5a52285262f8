#include "src/registryd/registry_metrics.h"

#include <chrono>
#include <utility>

#include "prometheus/gauge.h"
#include "prometheus/text_serializer.h"
#include "src/registryd/group_commit.h"
#include "src/service/prom_util.h"

namespace cistern::registryd {

namespace {

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> b = {1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3,
                                        5e-3, 1e-2, 2e-2, 5e-2, 0.1,  0.2,  0.5,  1.0};
  return b;
}

}  // namespace

RegistryMetrics::RegistryMetrics(std::string version) {
  requests_ = &prometheus::BuildCounter()
                   .Name("cistern_registry_requests_total")
                   .Help("Calls answered, by method and status code.")
                   .Register(registry_);
  durations_ = &prometheus::BuildHistogram()
                    .Name("cistern_registry_request_duration_seconds")
                    .Help("Time from a call's arrival to its answer, by method.")
                    .Register(registry_);
  auth_failures_ = &prometheus::BuildCounter()
                        .Name("cistern_registry_auth_failures_total")
                        .Help("Calls refused for a wrong cluster id or token.")
                        .Register(registry_);
  groups_ = &prometheus::BuildCounter()
                 .Name("cistern_registry_group_commits_total")
                 .Help("Group commits written (one durable batch each).")
                 .Register(registry_)
                 .Add({});
  group_requests_ = &prometheus::BuildCounter()
                         .Name("cistern_registry_group_commit_requests_total")
                         .Help("Requests carried by the group commits.")
                         .Register(registry_)
                         .Add({});
  group_failures_ = &prometheus::BuildCounter()
                         .Name("cistern_registry_group_commit_failures_total")
                         .Help("Group commits the database refused (every request in them failed).")
                         .Register(registry_)
                         .Add({});
  group_duration_ = &prometheus::BuildHistogram()
                         .Name("cistern_registry_group_commit_duration_seconds")
                         .Help("Time to make one group durable (the database write and fsync).")
                         .Register(registry_)
                         .Add({}, LatencyBuckets());
  prometheus::BuildGauge()
      .Name("cistern_registry_start_time_seconds")
      .Help("When the registry started, in seconds since the Unix epoch.")
      .Register(registry_)
      .Add({})
      .Set(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
               .count());
  prometheus::BuildGauge()
      .Name("cistern_registry_build_info")
      .Help("Always 1; the registry's version is a label.")
      .Register(registry_)
      .Add({{"version", std::move(version)}})
      .Set(1);
}

void RegistryMetrics::RecordRequest(std::string_view method, absl::StatusCode code,
                                    Clock::Duration elapsed) {
  std::string m(method);
  requests_->Add({{"method", m}, {"code", service::StatusCodeLabel(code)}}).Increment();
  durations_->Add({{"method", m}}, LatencyBuckets())
      .Observe(std::chrono::duration<double>(elapsed).count());
}

void RegistryMetrics::RecordAuthFailure(std::string_view reason) {
  auth_failures_->Add({{"reason", std::string(reason)}}).Increment();
}

void RegistryMetrics::RecordGroup(const GroupStats& stats) {
  groups_->Increment();
  group_requests_->Increment(static_cast<double>(stats.ops));
  if (stats.failed) group_failures_->Increment();
  group_duration_->Observe(std::chrono::duration<double>(stats.apply_time).count());
}

void RegistryMetrics::Attach(std::function<void(std::vector<prometheus::MetricFamily>*)> collect) {
  MutexLock lock(&mu_);
  collect_ = std::move(collect);
}

void RegistryMetrics::Detach() {
  MutexLock lock(&mu_);
  collect_ = nullptr;
}

std::string RegistryMetrics::Scrape() const {
  std::vector<prometheus::MetricFamily> families = registry_.Collect();
  {
    MutexLock lock(&mu_);
    if (collect_) collect_(&families);
  }
  return prometheus::TextSerializer().Serialize(families);
}

service::HttpResponse RegistryMetrics::MetricsPage() const {
  service::HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = Scrape();
  return r;
}

service::HttpResponse RegistryMetrics::HealthPage() const {
  service::HttpResponse r;
  if (ready_.load()) {
    r.body = "ok\n";
  } else {
    r.status = 503;
    r.body = "starting\n";
  }
  return r;
}

}  // namespace cistern::registryd

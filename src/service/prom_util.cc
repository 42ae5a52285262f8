#include "src/service/prom_util.h"

#include <utility>

#include "absl/strings/ascii.h"

namespace cistern::service {

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

prometheus::MetricFamily SingleGauge(std::string name, std::string help, double value) {
  auto f = Family(std::move(name), std::move(help), prometheus::MetricType::Gauge);
  prometheus::ClientMetric m;
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

prometheus::MetricFamily SingleCounter(std::string name, std::string help, double value) {
  auto f = Family(std::move(name), std::move(help), prometheus::MetricType::Counter);
  prometheus::ClientMetric m;
  m.counter.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

std::string StatusCodeLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

}  // namespace cistern::service

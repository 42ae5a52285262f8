// Small pieces for the Prometheus metrics of every Cistern server: families
// built at scrape time from live state, and the status-code label.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "prometheus/metric_family.h"

namespace cistern::service {

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type);
// A family of one unlabelled gauge (or counter) with `value`.
prometheus::MetricFamily SingleGauge(std::string name, std::string help, double value);
prometheus::MetricFamily SingleCounter(std::string name, std::string help, double value);

// "not_found" for kNotFound: absl's name in lower case.
std::string StatusCodeLabel(absl::StatusCode code);

}  // namespace cistern::service

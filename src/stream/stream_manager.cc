#include "src/stream/stream_manager.h"

#include "absl/strings/escaping.h"
#include "fmt/format.h"
#include "src/common/fmt_absl.h"
#include "src/common/status_macros.h"
#include "src/stream/ledger_keys.h"

namespace cistern::stream {
namespace {

struct Ledger {
  std::optional<ledger::StreamMeta> meta;
  ledger::Marker marker;
  std::vector<std::pair<uint64_t, ledger::SampleRecord>> records;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StreamManager>> StreamManager::Open(
    registry::MetadataBackend* backend, store::ObjectStore* store, Clock* clock,
    const StreamDefaults& defaults, std::vector<std::pair<std::string, ReconcileReport>>* reports) {
  std::unique_ptr<StreamManager> m(new StreamManager(backend, store, clock, defaults));
  std::map<std::string, Ledger> ledgers;
  absl::Status bad;
  RETURN_IF_ERROR(backend->Scan(kLedgerRoot, [&](std::string_view key, std::string_view value) {
    std::string_view rest = key.substr(kLedgerRoot.size());
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      bad = absl::DataLossError(fmt::format("registry key '{}' is not a stream ledger key", key));
      return false;
    }
    std::string name(rest.substr(0, slash));
    std::string_view what = rest.substr(slash + 1);
    Ledger& l = ledgers[name];
    bool ok = true;
    if (what == "meta") {
      l.meta.emplace();
      ok = l.meta->ParseFromArray(value.data(), static_cast<int>(value.size()));
    } else if (what == "marker") {
      ok = l.marker.ParseFromArray(value.data(), static_cast<int>(value.size()));
    } else if (what.starts_with("s/")) {
      auto seq = SeqOfSampleKey(key, SamplePrefix(name).size());
      ledger::SampleRecord r;
      ok = seq.has_value() && r.ParseFromArray(value.data(), static_cast<int>(value.size()));
      if (ok) l.records.emplace_back(*seq, std::move(r));
    } else {
      ok = false;
    }
    if (!ok) {
      bad = absl::DataLossError(
          fmt::format("registry {}: record '{}' of stream '{}' does not parse", backend->Describe(),
                      absl::CHexEscape(absl::string_view(key.data(), key.size())), name));
      return false;
    }
    return true;
  }));
  RETURN_IF_ERROR(bad);
  for (auto& [name, l] : ledgers) {
    if (!l.meta) {
      return absl::DataLossError(fmt::format("registry {}: stream '{}' has records but no meta",
                                             backend->Describe(), name));
    }
    ReconcileReport rep;
    ASSIGN_OR_RETURN(auto s,
                     Stream::Load(name, *l.meta, l.marker, l.records, backend, store, clock, &rep));
    if (reports) reports->emplace_back(name, rep);
    m->streams_.emplace(name, std::move(s));
  }
  return m;
}

wire::StreamOptions StreamManager::WithDefaults(const wire::StreamOptions& o) const {
  wire::StreamOptions r;
  r.set_lease_timeout_ms(defaults_.lease_timeout_ms);
  r.set_high_watermark_bytes(defaults_.high_watermark_bytes);
  r.set_low_watermark_bytes(defaults_.low_watermark_bytes);
  r.set_max_in_flight_per_producer(defaults_.max_in_flight_per_producer);
  r.set_max_lease_refs(defaults_.max_lease_refs);
  // A high watermark given without a low one brings its own low (80%).
  if (o.has_high_watermark_bytes() && !o.has_low_watermark_bytes()) {
    r.set_low_watermark_bytes(o.high_watermark_bytes() / 5 * 4);
  }
  r.MergeFrom(o);
  return r;
}

absl::StatusOr<Stream*> StreamManager::OpenStream(std::string_view name,
                                                  const wire::StreamOptions& options) {
  RETURN_IF_ERROR(ValidateStreamName(name));
  auto it = streams_.find(name);
  if (it != streams_.end()) {
    wire::StreamOptions update = options;
    if (options.has_high_watermark_bytes() && !options.has_low_watermark_bytes()) {
      update.set_low_watermark_bytes(options.high_watermark_bytes() / 5 * 4);
    }
    RETURN_IF_ERROR(it->second->UpdateOptions(update));
    return it->second.get();
  }
  ASSIGN_OR_RETURN(
      auto s, Stream::Create(std::string(name), WithDefaults(options), backend_, store_, clock_));
  Stream* raw = s.get();
  streams_.emplace(std::string(name), std::move(s));
  ++created_;
  return raw;
}

absl::StatusOr<Stream*> StreamManager::Find(std::string_view name) {
  RETURN_IF_ERROR(ValidateStreamName(name));
  auto it = streams_.find(name);
  if (it == streams_.end()) {
    return absl::NotFoundError(fmt::format("no stream named '{}' (open it first)", name));
  }
  return it->second.get();
}

uint64_t StreamManager::epoch() const {
  uint64_t e = created_;
  for (const auto& [name, s] : streams_) e += s->epoch();
  return e;
}

std::optional<Clock::TimePoint> StreamManager::NextLeaseExpiry() const {
  std::optional<Clock::TimePoint> next;
  for (const auto& [name, s] : streams_) {
    auto t = s->NextLeaseExpiry();
    if (t && (!next || *t < *next)) next = t;
  }
  return next;
}

}  // namespace cistern::stream

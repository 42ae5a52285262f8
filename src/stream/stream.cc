// How a stream keeps memory behind the ledger.
//
// Every verb first decides everything it will do against the in-memory state
// without changing it (validation, duplicate detection, pins taken from the
// store), then writes one registry batch, and only when that batch is durable
// applies the change in memory. A failed write therefore leaves memory exactly
// as it was (pins taken for the call are released), which is what "the
// in-memory state never runs ahead of the durable state" means here.
//
// Memory holds the live samples (pending, leased, awaiting a durable marker)
// with their records, and only the ids of finished ones (released, dropped,
// lost) so that commit stays idempotent for the stream's whole life. The queue
// is a map by queue position: commit appends, a requeue appends again, lease
// takes from the front — skipping refs outside the asked partition, so a lease
// with a partition costs the number of refs it skips.
//
// Release is derived from the marker, never stored: a sample's record says
// ACKED with its ack step (or, without one, its ack sequence number); the
// marker says up to which step (and which step-less ack) the optimizer state
// is durable. Load applies the same rule, so a restart releases exactly what
// the running stream had released or was about to.
#include "src/stream/stream.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "src/common/fmt_absl.h"
#include "src/common/quote.h"
#include "src/common/status_macros.h"
#include "src/common/utf8.h"
#include "src/stream/ledger_keys.h"
#include "src/stream/rules.h"

namespace cistern::stream {
namespace {

constexpr size_t kMaxSampleIdBytes = 256;
constexpr size_t kMaxMetadataEntries = 32;
constexpr size_t kMaxMetadataBytes = 4096;
constexpr size_t kMaxFeatures = 1024;
constexpr size_t kMaxFeatureNameBytes = 256;
constexpr size_t kMaxRank = 16;

std::string Quote(std::string_view s) { return QuoteKey(s); }

absl::Status ValidateSampleId(std::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError("sample_id is empty");
  if (id.size() > kMaxSampleIdBytes) {
    return absl::InvalidArgumentError(
        fmt::format("sample_id of {} bytes exceeds the limit of {}", id.size(), kMaxSampleIdBytes));
  }
  if (id.find('\0') != std::string_view::npos || !IsValidUtf8(id)) {
    return absl::InvalidArgumentError(
        fmt::format("sample_id {} is not UTF-8 without NUL bytes", Quote(id)));
  }
  return absl::OkStatus();
}

absl::Status ValidateRef(const wire::SampleRef& r, bool adopt_visible) {
  RETURN_IF_ERROR(ValidateSampleId(r.sample_id()));
  auto bad = [&](std::string what) {
    return absl::InvalidArgumentError(
        fmt::format("ref of sample {}: {}", Quote(r.sample_id()), what));
  };
  if (absl::Status s = store::ValidateKey(r.key()); !s.ok()) return bad(std::string(s.message()));
  if (r.generation() == 0 && !adopt_visible) {
    return bad("generation 0; a ref names one sealed generation (or set adopt_visible)");
  }
  if (r.lease_id() != 0 || r.deliveries() != 0) {
    return bad("lease_id and deliveries are set by lease, not by the producer");
  }
  if (r.metadata_size() > static_cast<int>(kMaxMetadataEntries)) {
    return bad(fmt::format("{} metadata entries exceed the limit of {}", r.metadata_size(),
                           kMaxMetadataEntries));
  }
  size_t meta_bytes = 0;
  for (const auto& [k, v] : r.metadata()) meta_bytes += k.size() + v.size();
  if (meta_bytes > kMaxMetadataBytes) {
    return bad(fmt::format(
        "metadata of {} bytes exceeds the limit of {} (tensor bytes belong in the object)",
        meta_bytes, kMaxMetadataBytes));
  }
  if (r.features_size() > static_cast<int>(kMaxFeatures)) {
    return bad(fmt::format("{} features exceed the limit of {}", r.features_size(), kMaxFeatures));
  }
  for (const auto& f : r.features()) {
    if (f.name().empty() || f.name().size() > kMaxFeatureNameBytes || !IsValidUtf8(f.name())) {
      return bad(fmt::format("feature name {} must be 1..{} bytes of UTF-8", Quote(f.name()),
                             kMaxFeatureNameBytes));
    }
    if (f.dtype() <= wire::DTYPE_UNSPECIFIED || f.dtype() > static_cast<int>(kMaxDType)) {
      return bad(fmt::format("feature {} has no valid dtype ({})", Quote(f.name()),
                             static_cast<int>(f.dtype())));
    }
    if (f.shape_size() > static_cast<int>(kMaxRank)) {
      return bad(fmt::format("feature {} has rank {} above {}", Quote(f.name()), f.shape_size(),
                             kMaxRank));
    }
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t Stream::PartitionHash(std::string_view sample_id) {
  return XXH64(sample_id.data(), sample_id.size(), 0);
}

Stream::Stream(std::string name, registry::MetadataBackend* backend, store::ObjectStore* store,
               Clock* clock)
    : name_(std::move(name)),
      holder_(fmt::format("stream '{}'", name_)),
      backend_(backend),
      store_(store),
      clock_(clock) {
  // Lease ids differ across restarts, so a handle from before a restart never
  // matches a lease granted after it: each incarnation starts at a random
  // point (a start from the wall clock repeats when a restart takes under a
  // millisecond or the clock steps back).
  std::random_device rd;
  next_lease_id_ = ((uint64_t{rd()} << 32 | rd()) >> 1) + 1;
}

Stream::~Stream() {
  // The pins end with the store's kStreamSession, which the daemon closes.
}

absl::StatusOr<std::unique_ptr<Stream>> Stream::Create(std::string name,
                                                       const wire::StreamOptions& options,
                                                       registry::MetadataBackend* backend,
                                                       store::ObjectStore* store, Clock* clock) {
  RETURN_IF_ERROR(ValidateStreamName(name));
  RETURN_IF_ERROR(ValidateOptions(options));
  std::unique_ptr<Stream> s(new Stream(std::move(name), backend, store, clock));
  *s->meta_.mutable_options() = options;
  s->meta_.set_create_unix_ms(UnixMs());
  s->marker_.set_next_ack_seq(1);
  registry::WriteBatch batch;
  batch.Put(MetaKey(s->name_), s->meta_.SerializeAsString());
  batch.Put(MarkerKey(s->name_), s->marker_.SerializeAsString());
  RETURN_IF_ERROR(backend->Apply(batch));
  return s;
}

absl::StatusOr<std::unique_ptr<Stream>> Stream::Load(
    std::string name, const ledger::StreamMeta& meta, const ledger::Marker& marker,
    const std::vector<std::pair<uint64_t, ledger::SampleRecord>>& records,
    registry::MetadataBackend* backend, store::ObjectStore* store, Clock* clock,
    ReconcileReport* report) {
  std::unique_ptr<Stream> s(new Stream(std::move(name), backend, store, clock));
  s->meta_ = meta;
  s->marker_ = marker;
  if (s->marker_.next_ack_seq() == 0) s->marker_.set_next_ack_seq(1);
  RETURN_IF_ERROR(ValidateOptions(meta.options()));
  ReconcileReport rep;
  registry::WriteBatch batch;
  // After the batch is durable; `released` counts those still there.
  std::vector<std::pair<wire::SampleRef, bool>> to_free;
  std::vector<uint64_t> pins;  // taken here; given back if the batch fails
  for (const auto& [seq, rec] : records) {
    s->next_seq_ = std::max(s->next_seq_, seq + 1);
    const std::string& id = rec.ref().sample_id();
    ++s->counters_.committed;
    switch (rec.state()) {
      case ledger::SampleRecord::DROPPED:
        ++s->counters_.dropped;
        s->done_[id] = Done::kDropped;
        to_free.push_back({rec.ref(), false});
        continue;
      case ledger::SampleRecord::LOST:
        ++s->counters_.lost;
        s->done_[id] = Done::kLost;
        continue;
      case ledger::SampleRecord::ACKED:
        if (s->Durable(rec)) {
          ++s->counters_.acked;
          s->done_[id] = Done::kReleased;
          to_free.push_back({rec.ref(), true});
          continue;
        }
        break;
      default:
        break;
    }
    // Committed, or acked without a durable marker: back in the queue, if the
    // bytes are still there.
    auto pin = store->Hold(kStreamSession, rec.ref().key(), rec.ref().generation(), s->holder_);
    if (!pin.ok()) {
      spdlog::error("stream '{}': sample {} lost: its object {} generation {} is gone ({})",
                    s->name_, Quote(id), Quote(rec.ref().key()), rec.ref().generation(),
                    pin.status().message());
      ledger::SampleRecord lost = rec;
      lost.set_state(ledger::SampleRecord::LOST);
      batch.Put(SampleKey(s->name_, seq), lost.SerializeAsString());
      ++s->counters_.lost;
      s->done_[id] = Done::kLost;
      ++rep.lost;
      continue;
    }
    pins.push_back(pin->lease_id);
    auto sample = std::make_unique<Sample>();
    sample->seq = seq;
    sample->record = rec;
    if (rec.state() == ledger::SampleRecord::ACKED) {
      sample->record.set_state(ledger::SampleRecord::COMMITTED);
      sample->record.clear_ack_step();
      sample->record.set_ack_seq(0);
      batch.Put(SampleKey(s->name_, seq), sample->record.SerializeAsString());
    }
    ++rep.requeued;
    sample->pin = pin->lease_id;
    sample->hash = PartitionHash(id);
    s->resident_bytes_ += rec.ref().nbytes();
    ++s->producer_in_flight_[rec.producer()];
    Sample* raw = sample.get();
    s->live_keys_.emplace(rec.ref().key(), id);
    s->live_.emplace(id, std::move(sample));
    s->Enqueue(raw);
  }
  if (absl::Status st = backend->Apply(batch); !st.ok()) {
    for (uint64_t pin : pins) (void)store->Release(kStreamSession, pin);
    return st;
  }
  for (const auto& [ref, released] : to_free) {
    // Only this generation: a producer may have put a newer one under the key.
    if (store->Remove(ref.key(), ref.generation()).ok() && released) ++rep.released;
  }
  s->paused_ = s->UpdatePaused();
  if (report) *report = rep;
  return s;
}

absl::Status Stream::UpdateOptions(const wire::StreamOptions& update) {
  wire::StreamOptions merged = meta_.options();
  merged.MergeFrom(update);
  RETURN_IF_ERROR(ValidateOptions(merged));
  if (merged.SerializeAsString() == meta_.options().SerializeAsString()) return absl::OkStatus();
  ledger::StreamMeta meta = meta_;
  *meta.mutable_options() = merged;
  registry::WriteBatch batch;
  batch.Put(MetaKey(name_), meta.SerializeAsString());
  RETURN_IF_ERROR(backend_->Apply(batch));
  meta_ = std::move(meta);
  UpdatePaused();  // the new watermarks apply from now on, hysteresis included
  ++epoch_;
  return absl::OkStatus();
}

bool Stream::UpdatePaused() {
  uint64_t high = meta_.options().high_watermark_bytes();
  if (high == 0) return false;
  if (resident_bytes_ >= high) return paused_ = true;
  if (paused_ && resident_bytes_ < meta_.options().low_watermark_bytes()) paused_ = false;
  return paused_;
}

bool Stream::Durable(const ledger::SampleRecord& r) const {
  if (r.has_ack_step()) return marker_.has_durable_step() && r.ack_step() <= marker_.durable_step();
  return r.ack_seq() != 0 && r.ack_seq() <= marker_.durable_ack_seq();
}

void Stream::Enqueue(Sample* s) {
  s->state = State::kPending;
  s->queue_pos = next_queue_pos_++;
  queue_.emplace(s->queue_pos, s);
}

void Stream::Dequeue(Sample* s) { queue_.erase(s->queue_pos); }

void Stream::FreeObject(const wire::SampleRef& ref, uint64_t pin) {
  if (pin != 0) (void)store_->Release(kStreamSession, pin);
  // Only this generation: a producer may have put a newer one under the key.
  (void)store_->Remove(ref.key(), ref.generation());
}

void Stream::Finish(Sample* s, Done how) {
  const std::string id = s->record.ref().sample_id();
  switch (s->state) {
    case State::kPending:
      Dequeue(s);
      break;
    case State::kLeased:
      leased_.erase({s->lease_deadline, s});
      break;
    case State::kAwaitingDurable:
      if (s->record.has_ack_step()) {
        auto [b, e] = awaiting_by_step_.equal_range(s->record.ack_step());
        for (auto it = b; it != e; ++it) {
          if (it->second == s) {
            awaiting_by_step_.erase(it);
            break;
          }
        }
      } else {
        auto [b, e] = awaiting_stepless_.equal_range(s->record.ack_seq());
        for (auto it = b; it != e; ++it) {
          if (it->second == s) {
            awaiting_stepless_.erase(it);
            break;
          }
        }
      }
      break;
  }
  FreeObject(s->record.ref(), s->pin);
  resident_bytes_ -= s->record.ref().nbytes();
  done_[id] = how;
  reconciled_.erase(id);
  live_keys_.erase(s->record.ref().key());
  live_.erase(id);
  ++epoch_;
}

void Stream::ReclaimExpired() {
  Clock::TimePoint now = clock_->Now();
  // Back to the queue by deadline, then in commit order (leased_ orders the
  // refs of one lease by address).
  std::vector<Sample*> expired;
  while (!leased_.empty() && leased_.begin()->first <= now) {
    expired.push_back(leased_.begin()->second);
    leased_.erase(leased_.begin());
  }
  std::stable_sort(expired.begin(), expired.end(), [](const Sample* a, const Sample* b) {
    return a->lease_deadline != b->lease_deadline ? a->lease_deadline < b->lease_deadline
                                                  : a->seq < b->seq;
  });
  for (Sample* s : expired) {
    s->lease_id = 0;
    Enqueue(s);
    ++counters_.expired_leases;
    ++epoch_;
  }
}

std::optional<Clock::TimePoint> Stream::NextLeaseExpiry() const {
  if (leased_.empty()) return std::nullopt;
  return leased_.begin()->first;
}

absl::Status Stream::Commit(const wire::StreamCommit& req, std::string_view producer,
                            wire::StreamCommitReply* reply, bool* blocked) {
  *blocked = false;
  // Validate everything and find the new samples before touching anything.
  std::vector<const wire::SampleRef*> fresh;
  absl::flat_hash_map<std::string_view, bool> seen;
  uint32_t duplicates = 0;
  for (const auto& r : req.refs()) RETURN_IF_ERROR(ValidateRef(r, req.adopt_visible()));
  for (const auto& r : req.refs()) {
    if (live_.contains(r.sample_id()) || done_.contains(r.sample_id()) ||
        !seen.emplace(r.sample_id(), true).second) {
      ++duplicates;
      continue;
    }
    fresh.push_back(&r);
  }
  // One live sample per object: releasing one would free the other's bytes.
  absl::flat_hash_map<std::string_view, std::string_view> keys;
  for (const wire::SampleRef* r : fresh) {
    auto held = live_keys_.find(r->key());
    std::string_view other = held != live_keys_.end() ? std::string_view(held->second) : "";
    if (other.empty()) {
      auto [it, added] = keys.emplace(r->key(), r->sample_id());
      if (!added) other = it->second;
    }
    if (!other.empty()) {
      return absl::InvalidArgumentError(fmt::format(
          "ref of sample {} names object {}, which sample {} of stream '{}' already holds; "
          "each sample needs its own object",
          Quote(r->sample_id()), Quote(r->key()), Quote(other), name_));
    }
  }
  if (fresh.empty()) {
    reply->set_committed(0);
    reply->set_duplicates(duplicates);
    FillHeld(req, reply);
    return absl::OkStatus();
  }
  const auto& o = meta_.options();
  if (UpdatePaused()) {
    *blocked = true;
    return absl::ResourceExhaustedError(fmt::format(
        "stream '{}' is paused: it holds {} bytes, at or above high_watermark_bytes {}; "
        "producers resume below low_watermark_bytes {}",
        name_, resident_bytes_, o.high_watermark_bytes(), o.low_watermark_bytes()));
  }
  std::string who(producer);
  uint64_t in_flight = producer_in_flight_.contains(who) ? producer_in_flight_[who] : 0;
  if (o.max_in_flight_per_producer() > 0 &&
      in_flight + fresh.size() > o.max_in_flight_per_producer()) {
    if (fresh.size() > o.max_in_flight_per_producer()) {
      return absl::InvalidArgumentError(fmt::format(
          "a commit of {} new refs can never fit max_in_flight_per_producer {} of stream '{}'",
          fresh.size(), o.max_in_flight_per_producer(), name_));
    }
    *blocked = true;
    return absl::ResourceExhaustedError(
        fmt::format("producer '{}' has {} unacked refs in stream '{}'; {} more exceed "
                    "max_in_flight_per_producer {}",
                    who, in_flight, name_, fresh.size(), o.max_in_flight_per_producer()));
  }
  // Hold every object: the ref must name a sealed, visible generation (with
  // adopt_visible and generation 0: whichever is visible now). From here on
  // the object can be neither removed nor replaced until the stream lets go.
  std::vector<store::ObjectStore::LeaseInfo> pins;
  auto give_back = [&] {
    for (const auto& p : pins) (void)store_->Release(kStreamSession, p.lease_id);
  };
  for (const wire::SampleRef* r : fresh) {
    auto pin = store_->Hold(kStreamSession, r->key(), r->generation(), holder_);
    if (!pin.ok()) {
      give_back();
      return absl::Status(
          pin.status().code(),
          fmt::format("ref of sample {}: {}", Quote(r->sample_id()), pin.status().message()));
    }
    pins.push_back(*pin);
    if (r->nbytes() != 0 && r->nbytes() != pin->size) {
      give_back();
      return absl::InvalidArgumentError(fmt::format(
          "ref of sample {} says nbytes {} but object {} generation {} holds {}",
          Quote(r->sample_id()), r->nbytes(), Quote(r->key()), pin->generation, pin->size));
    }
  }
  // Durable first.
  registry::WriteBatch batch;
  std::vector<std::unique_ptr<Sample>> samples;
  uint64_t now_ms = UnixMs();
  for (size_t i = 0; i < fresh.size(); ++i) {
    auto s = std::make_unique<Sample>();
    s->seq = next_seq_ + i;
    *s->record.mutable_ref() = *fresh[i];
    s->record.mutable_ref()->set_generation(pins[i].generation);
    s->record.mutable_ref()->set_nbytes(pins[i].size);
    s->record.set_producer(who);
    s->record.set_state(ledger::SampleRecord::COMMITTED);
    s->record.set_commit_unix_ms(now_ms);
    s->pin = pins[i].lease_id;
    s->hash = PartitionHash(fresh[i]->sample_id());
    batch.Put(SampleKey(name_, s->seq), s->record.SerializeAsString());
    samples.push_back(std::move(s));
  }
  if (absl::Status st = backend_->Apply(batch); !st.ok()) {
    give_back();
    return absl::Status(st.code(), fmt::format("stream '{}': commit of {} refs not written: {}",
                                               name_, fresh.size(), st.message()));
  }
  next_seq_ += fresh.size();
  for (auto& s : samples) {
    resident_bytes_ += s->record.ref().nbytes();
    Sample* raw = s.get();
    live_keys_.emplace(s->record.ref().key(), s->record.ref().sample_id());
    live_.emplace(s->record.ref().sample_id(), std::move(s));
    Enqueue(raw);
  }
  producer_in_flight_[who] += fresh.size();
  counters_.committed += fresh.size();
  UpdatePaused();
  ++epoch_;
  reply->set_committed(fresh.size());
  reply->set_duplicates(duplicates);
  FillHeld(req, reply);
  return absl::OkStatus();
}

void Stream::FillHeld(const wire::StreamCommit& req, wire::StreamCommitReply* reply) const {
  for (const auto& r : req.refs()) {
    auto* held = reply->add_held();
    auto it = live_.find(r.sample_id());
    if (it == live_.end()) continue;  // released, dropped or lost: holds nothing
    held->set_generation(it->second->record.ref().generation());
    held->set_nbytes(it->second->record.ref().nbytes());
  }
}

absl::Status Stream::Lease(const wire::StreamLease& req, bool final, wire::StreamLeaseReply* reply,
                           bool* blocked) {
  *blocked = false;
  if (req.max_refs() == 0) return absl::InvalidArgumentError("max_refs is 0");
  if (req.partition_count() > 0 && req.partition_index() >= req.partition_count()) {
    return absl::InvalidArgumentError(fmt::format("partition index {} is not below count {}",
                                                  req.partition_index(), req.partition_count()));
  }
  if (req.partition_count() == 0 && req.partition_index() != 0) {
    return absl::InvalidArgumentError("partition_index set without partition_count");
  }
  ReclaimExpired();
  uint32_t max = std::min(req.max_refs(), meta_.options().max_lease_refs());
  uint32_t min = std::clamp<uint32_t>(req.min_refs(), 1, max);
  std::vector<Sample*> picked;
  for (auto it = queue_.begin(); it != queue_.end() && picked.size() < max; ++it) {
    Sample* s = it->second;
    if (req.partition_count() > 0 && s->hash % req.partition_count() != req.partition_index()) {
      continue;
    }
    picked.push_back(s);
  }
  if (picked.size() < min && !final) {
    *blocked = true;
    return absl::OkStatus();
  }
  if (picked.empty()) ++counters_.consumer_empty;
  Clock::TimePoint deadline =
      clock_->Now() + std::chrono::milliseconds(meta_.options().lease_timeout_ms());
  for (Sample* s : picked) {
    Dequeue(s);
    s->state = State::kLeased;
    s->lease_id = next_lease_id_++;
    s->lease_deadline = deadline;
    ++s->deliveries;
    leased_.emplace(deadline, s);
    wire::SampleRef* out = reply->add_refs();
    *out = s->record.ref();
    out->set_lease_id(s->lease_id);
    out->set_deliveries(s->deliveries);
  }
  return absl::OkStatus();
}

absl::Status Stream::Resolve(const google::protobuf::RepeatedPtrField<wire::RefHandle>& refs,
                             bool for_ack, std::vector<Sample*>* leased, uint32_t* already) {
  absl::flat_hash_map<Sample*, bool> seen;
  *already = 0;
  for (const auto& h : refs) {
    auto it = live_.find(h.sample_id());
    if (it == live_.end()) {
      auto d = done_.find(h.sample_id());
      if (d == done_.end()) {
        return absl::NotFoundError(
            fmt::format("stream '{}' has no sample {}", name_, Quote(h.sample_id())));
      }
      if (for_ack && d->second == Done::kReleased) {
        ++*already;
        continue;
      }
      return absl::FailedPreconditionError(
          fmt::format("sample {} of stream '{}' is {}", Quote(h.sample_id()), name_,
                      d->second == Done::kReleased  ? "already acked and released"
                      : d->second == Done::kDropped ? "dropped"
                                                    : "lost"));
    }
    Sample* s = it->second.get();
    if (h.generation() != 0 && h.generation() != s->record.ref().generation()) {
      return absl::FailedPreconditionError(
          fmt::format("sample {} of stream '{}' is generation {}, not {}", Quote(h.sample_id()),
                      name_, s->record.ref().generation(), h.generation()));
    }
    if (s->state == State::kAwaitingDurable) {
      if (for_ack) {
        ++*already;
        continue;
      }
      return absl::FailedPreconditionError(
          fmt::format("sample {} of stream '{}' is already acked", Quote(h.sample_id()), name_));
    }
    if (s->state != State::kLeased || s->lease_id != h.lease_id()) {
      if (h.lease_id() < reconcile_lease_floor_ && reconciled_.contains(h.sample_id())) {
        return absl::FailedPreconditionError(fmt::format(
            "lease {} on sample {} of stream '{}' was ended by `stream reconcile`, which sent "
            "every leased and un-durable sample back to the queue{}",
            h.lease_id(), Quote(h.sample_id()), name_,
            s->state == State::kLeased ? "; it has been leased again" : ""));
      }
      return absl::FailedPreconditionError(fmt::format(
          "lease {} on sample {} of stream '{}' is not current: the lease expired and the "
          "sample went back to the queue{}",
          h.lease_id(), Quote(h.sample_id()), name_,
          s->state == State::kLeased ? " and was leased again" : ""));
    }
    if (seen.emplace(s, true).second) leased->push_back(s);
  }
  return absl::OkStatus();
}

absl::Status Stream::Ack(const wire::StreamAck& req, wire::StreamAckReply* reply) {
  std::vector<Sample*> targets;
  uint32_t already = 0;
  ReclaimExpired();
  RETURN_IF_ERROR(Resolve(req.refs(), /*for_ack=*/true, &targets, &already));
  std::optional<uint64_t> step;
  if (req.has_global_step()) step = req.global_step();
  // The marker after this ack.
  ledger::Marker marker = marker_;
  uint64_t ack_seq = marker.next_ack_seq();
  marker.set_next_ack_seq(ack_seq + 1);
  if (step && (!marker.has_global_step() || *step > marker.global_step())) {
    marker.set_global_step(*step);
  }
  if (req.optimizer_durable()) {
    if (step) {
      if (!marker.has_durable_step() || *step > marker.durable_step())
        marker.set_durable_step(*step);
    } else {
      marker.set_durable_ack_seq(ack_seq);
    }
  }
  marker.set_optimizer_durable(req.optimizer_durable());
  registry::WriteBatch batch;
  std::vector<ledger::SampleRecord> records;
  for (Sample* s : targets) {
    ledger::SampleRecord r = s->record;
    r.set_state(ledger::SampleRecord::ACKED);
    if (step) {
      r.set_ack_step(*step);
    } else {
      r.clear_ack_step();
    }
    r.set_ack_seq(ack_seq);
    batch.Put(SampleKey(name_, s->seq), r.SerializeAsString());
    records.push_back(std::move(r));
  }
  batch.Put(MarkerKey(name_), marker.SerializeAsString());
  if (absl::Status st = backend_->Apply(batch); !st.ok()) {
    return absl::Status(st.code(), fmt::format("stream '{}': ack of {} refs not written: {}", name_,
                                               targets.size(), st.message()));
  }
  // Durable: now memory may forget.
  marker_ = std::move(marker);
  for (size_t i = 0; i < targets.size(); ++i) {
    Sample* s = targets[i];
    leased_.erase({s->lease_deadline, s});
    s->lease_id = 0;
    s->record = std::move(records[i]);
    s->state = State::kAwaitingDurable;
    if (s->record.has_ack_step()) {
      awaiting_by_step_.emplace(s->record.ack_step(), s);
    } else {
      awaiting_stepless_.emplace(s->record.ack_seq(), s);
    }
    --producer_in_flight_[s->record.producer()];
  }
  if (!targets.empty()) ++epoch_;  // a producer at its in-flight cap may go on
  uint64_t released = ReleaseCovered();
  reply->set_acked(targets.size());
  reply->set_already(already);
  reply->set_released(released);
  return absl::OkStatus();
}

uint64_t Stream::ReleaseCovered() {
  std::vector<Sample*> covered;
  if (marker_.has_durable_step()) {
    for (auto it = awaiting_by_step_.begin();
         it != awaiting_by_step_.end() && it->first <= marker_.durable_step(); ++it) {
      covered.push_back(it->second);
    }
  }
  for (auto it = awaiting_stepless_.begin();
       it != awaiting_stepless_.end() && it->first <= marker_.durable_ack_seq(); ++it) {
    covered.push_back(it->second);
  }
  for (Sample* s : covered) {
    Finish(s, Done::kReleased);
    ++counters_.acked;
  }
  if (!covered.empty()) UpdatePaused();
  return covered.size();
}

absl::Status Stream::Fail(const wire::StreamFail& req, wire::StreamFailReply* reply) {
  std::vector<Sample*> targets;
  uint32_t already = 0;
  ReclaimExpired();
  RETURN_IF_ERROR(Resolve(req.refs(), /*for_ack=*/false, &targets, &already));
  if (req.retryable()) {
    for (Sample* s : targets) {
      leased_.erase({s->lease_deadline, s});
      s->lease_id = 0;
      Enqueue(s);
    }
    counters_.requeued += targets.size();
    ++epoch_;
    reply->set_requeued(targets.size());
    return absl::OkStatus();
  }
  registry::WriteBatch batch;
  for (Sample* s : targets) {
    ledger::SampleRecord r = s->record;
    r.set_state(ledger::SampleRecord::DROPPED);
    batch.Put(SampleKey(name_, s->seq), r.SerializeAsString());
  }
  if (absl::Status st = backend_->Apply(batch); !st.ok()) {
    return absl::Status(st.code(), fmt::format("stream '{}': drop of {} refs not written: {}",
                                               name_, targets.size(), st.message()));
  }
  for (Sample* s : targets) {
    --producer_in_flight_[s->record.producer()];
    Finish(s, Done::kDropped);
  }
  counters_.dropped += targets.size();
  UpdatePaused();
  reply->set_dropped(targets.size());
  return absl::OkStatus();
}

absl::StatusOr<ReconcileReport> Stream::Reconcile() {
  ReconcileReport rep;
  std::vector<Sample*> awaiting;
  for (auto& [step, s] : awaiting_by_step_) awaiting.push_back(s);
  for (auto& [seq, s] : awaiting_stepless_) awaiting.push_back(s);
  std::sort(awaiting.begin(), awaiting.end(),
            [](const Sample* a, const Sample* b) { return a->seq < b->seq; });
  registry::WriteBatch batch;
  std::vector<ledger::SampleRecord> records;
  for (Sample* s : awaiting) {
    ledger::SampleRecord r = s->record;
    r.set_state(ledger::SampleRecord::COMMITTED);
    r.clear_ack_step();
    r.set_ack_seq(0);
    batch.Put(SampleKey(name_, s->seq), r.SerializeAsString());
    records.push_back(std::move(r));
  }
  if (absl::Status st = backend_->Apply(batch); !st.ok()) {
    return absl::Status(st.code(),
                        fmt::format("stream '{}': reconcile not written: {}", name_, st.message()));
  }
  // Leased refs in commit order, then the un-acked ones, to the tail.
  std::vector<Sample*> leased;
  for (auto& [deadline, s] : leased_) leased.push_back(s);
  leased_.clear();
  for (size_t i = 0; i < awaiting.size(); ++i) {
    awaiting[i]->record = std::move(records[i]);
    ++producer_in_flight_[awaiting[i]->record.producer()];
    leased.push_back(awaiting[i]);
  }
  awaiting_by_step_.clear();
  awaiting_stepless_.clear();
  std::sort(leased.begin(), leased.end(),
            [](const Sample* a, const Sample* b) { return a->seq < b->seq; });
  if (!leased.empty()) {  // a reconcile that changes nothing forgets nothing
    reconciled_.clear();
    reconcile_lease_floor_ = next_lease_id_;
  }
  for (Sample* s : leased) {
    s->lease_id = 0;
    reconciled_.insert(s->record.ref().sample_id());
    Enqueue(s);
  }
  rep.requeued = leased.size();
  counters_.requeued += leased.size();
  if (rep.requeued) ++epoch_;
  return rep;
}

void Stream::FillInfo(wire::StreamInfo* info) {
  ReclaimExpired();
  info->set_name(name_);
  *info->mutable_options() = meta_.options();
  info->set_create_unix_ms(meta_.create_unix_ms());
  info->set_depth(queue_.size());
  info->set_in_flight(leased_.size());
  info->set_awaiting_durable(awaiting_by_step_.size() + awaiting_stepless_.size());
  info->set_resident_bytes(resident_bytes_);
  info->set_paused(UpdatePaused());
  info->set_committed(counters_.committed);
  info->set_acked(counters_.acked);
  info->set_dropped(counters_.dropped);
  info->set_lost(counters_.lost);
  if (marker_.has_global_step()) info->set_global_step(marker_.global_step());
  if (marker_.has_durable_step()) info->set_durable_step(marker_.durable_step());
  info->set_optimizer_durable(marker_.optimizer_durable());
  info->set_producer_waits(counters_.producer_waits);
  info->set_producer_rejections(counters_.producer_rejections);
  info->set_consumer_starved(counters_.consumer_starved);
  info->set_consumer_empty(counters_.consumer_empty);
  info->set_expired_leases(counters_.expired_leases);
  info->set_requeued(counters_.requeued);
}

}  // namespace cistern::stream

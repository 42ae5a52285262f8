#include "include/cistern/stream.h"

#include <xxhash.h>

#include <algorithm>

#include "src/client/connection.h"
#include "src/common/wire_duration.h"

namespace cistern {
namespace {

void ToWire(const SampleRef& r, wire::SampleRef* w) {
  w->set_sample_id(r.sample_id);
  w->set_key(r.key);
  w->set_generation(r.generation);
  w->set_nbytes(r.nbytes);
  for (const auto& f : r.features) {
    auto* wf = w->add_features();
    wf->set_name(f.name);
    wf->set_dtype(static_cast<wire::DType>(f.dtype));
    for (uint64_t d : f.shape) wf->add_shape(d);
  }
  for (const auto& [k, v] : r.metadata) (*w->mutable_metadata())[k] = v;
}

SampleRef FromWire(const wire::SampleRef& w) {
  SampleRef r;
  r.sample_id = w.sample_id();
  r.key = w.key();
  r.generation = w.generation();
  r.nbytes = w.nbytes();
  for (const auto& wf : w.features()) {
    r.features.push_back({wf.name(), static_cast<DType>(wf.dtype()),
                          std::vector<uint64_t>(wf.shape().begin(), wf.shape().end())});
  }
  for (const auto& [k, v] : w.metadata()) r.metadata[k] = v;
  r.lease_id = w.lease_id();
  r.deliveries = w.deliveries();
  return r;
}

void ToWire(const StreamOptions& o, wire::StreamOptions* w) {
  if (o.lease_timeout_ms) w->set_lease_timeout_ms(*o.lease_timeout_ms);
  if (o.high_watermark_bytes) w->set_high_watermark_bytes(*o.high_watermark_bytes);
  if (o.low_watermark_bytes) w->set_low_watermark_bytes(*o.low_watermark_bytes);
  if (o.max_in_flight_per_producer) {
    w->set_max_in_flight_per_producer(*o.max_in_flight_per_producer);
  }
  if (o.max_lease_refs) w->set_max_lease_refs(*o.max_lease_refs);
}

template <typename Msg>
void AddHandles(const std::vector<SampleRef>& refs, Msg* m) {
  for (const auto& r : refs) {
    auto* h = m->add_refs();
    h->set_sample_id(r.sample_id);
    h->set_generation(r.generation);
    h->set_lease_id(r.lease_id);
  }
}

}  // namespace

absl::StatusOr<Stream> Stream::Open(Client* client, std::string_view name,
                                    const StreamOptions& options) {
  wire::Request req;
  req.mutable_stream_open()->set_name(std::string(name));
  ToWire(options, req.mutable_stream_open()->mutable_options());
  auto opened = client->conn_->Call(req, &wire::Response::mutable_stream_info);
  if (!opened.ok()) return opened.status();
  return Stream(client, std::string(name));
}

absl::StatusOr<std::vector<StreamInfo>> Stream::List(Client* client) {
  wire::Request req;
  req.mutable_stream_list();
  auto r = client->conn_->Call(req, &wire::Response::mutable_stream_list);
  if (!r.ok()) return r.status();
  return std::vector<StreamInfo>(std::make_move_iterator(r->mutable_streams()->begin()),
                                 std::make_move_iterator(r->mutable_streams()->end()));
}

absl::StatusOr<CommitResult> Stream::Commit(const std::vector<SampleRef>& refs,
                                            std::chrono::milliseconds wait,
                                            std::string_view producer) {
  return Commit(refs, CommitOptions{.wait = wait, .producer = std::string(producer)});
}

absl::StatusOr<CommitResult> Stream::Commit(const std::vector<SampleRef>& refs,
                                            const CommitOptions& options) {
  wire::Request req;
  auto* c = req.mutable_stream_commit();
  c->set_name(name_);
  for (const auto& r : refs) ToWire(r, c->add_refs());
  c->set_producer(options.producer);
  c->set_wait_ms(WaitToWireMs(options.wait));
  c->set_adopt_visible(options.adopt_visible);
  auto r = client_->conn_->Call(req, &wire::Response::mutable_stream_commit);
  if (!r.ok()) return r.status();
  CommitResult out{r->committed(), r->duplicates(), {}};
  for (int i = 0; i < r->held_size() && i < static_cast<int>(refs.size()); ++i) {
    out.held.push_back({refs[i].key, r->held(i).generation(), r->held(i).nbytes()});
  }
  return out;
}

absl::StatusOr<SampleRef> Stream::Put(std::string_view sample_id,
                                      const std::vector<TensorInput>& tensors,
                                      const SamplePutOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + ClampWait(options.wait);
  auto left = [&] {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return std::max(ms, std::chrono::milliseconds(0));
  };
  SampleRef ref;
  ref.sample_id = std::string(sample_id);
  ref.key = name_ + "/" + ref.sample_id;
  ref.metadata = options.metadata;
  for (const TensorInput& t : tensors) ref.features.push_back({t.name, t.dtype, t.shape});
  // Twice at most: the visible generation found by a failed if_absent put may
  // be evicted or removed before the commit adopts it; then write it after all.
  for (int attempt = 0;; ++attempt) {
    PutOptions put;
    put.evictable = true;
    put.if_absent = true;
    put.wait = left();
    auto written = client_->PutTensors(ref.key, tensors, put);
    if (!written.ok() && written.status().code() != absl::StatusCode::kAlreadyExists) {
      return written.status();
    }
    const uint64_t mine = written.ok() ? written->generation : 0;
    ref.generation = mine;
    ref.nbytes = 0;
    auto committed = Commit(
        {ref}, CommitOptions{.wait = left(), .producer = options.producer, .adopt_visible = true});
    if (!committed.ok()) {
      if (mine != 0) (void)client_->Remove(ref.key, mine);
      if (mine == 0 && attempt == 0 && committed.status().code() == absl::StatusCode::kNotFound) {
        continue;
      }
      return committed.status();
    }
    const ObjectRef held = committed->held.empty() ? ObjectRef{} : committed->held[0];
    // Another producer's generation (or none, for a sample finished before)
    // is what the stream has: ours is surplus. Never remove a held one: the
    // store refuses that anyway.
    if (mine != 0 && held.generation != mine) (void)client_->Remove(ref.key, mine);
    ref.generation = held.generation;
    ref.nbytes = held.size;
    return ref;
  }
}

absl::StatusOr<std::vector<SampleRef>> Stream::Lease(const LeaseOptions& options) {
  wire::Request req;
  auto* l = req.mutable_stream_lease();
  l->set_name(name_);
  l->set_max_refs(options.max_refs);
  l->set_min_refs(options.min_refs);
  l->set_wait_ms(WaitToWireMs(options.wait));
  if (options.partition) {
    l->set_partition_index(options.partition->first);
    l->set_partition_count(options.partition->second);
  }
  auto r = client_->conn_->Call(req, &wire::Response::mutable_stream_lease);
  if (!r.ok()) return r.status();
  std::vector<SampleRef> out;
  out.reserve(r->refs_size());
  for (const auto& ref : r->refs()) out.push_back(FromWire(ref));
  return out;
}

absl::StatusOr<AckResult> Stream::Ack(const std::vector<SampleRef>& refs,
                                      std::optional<uint64_t> global_step, bool optimizer_durable) {
  wire::Request req;
  auto* a = req.mutable_stream_ack();
  a->set_name(name_);
  AddHandles(refs, a);
  if (global_step) a->set_global_step(*global_step);
  a->set_optimizer_durable(optimizer_durable);
  return client_->conn_->Call(req, &wire::Response::mutable_stream_ack);
}

absl::StatusOr<FailResult> Stream::Fail(const std::vector<SampleRef>& refs, bool retryable) {
  wire::Request req;
  auto* f = req.mutable_stream_fail();
  f->set_name(name_);
  AddHandles(refs, f);
  f->set_retryable(retryable);
  return client_->conn_->Call(req, &wire::Response::mutable_stream_fail);
}

absl::StatusOr<StreamInfo> Stream::Stat() {
  wire::Request req;
  req.mutable_stream_stat()->set_name(name_);
  return client_->conn_->Call(req, &wire::Response::mutable_stream_info);
}

absl::StatusOr<ReconcileResult> Stream::Reconcile() {
  wire::Request req;
  req.mutable_stream_reconcile()->set_name(name_);
  return client_->conn_->Call(req, &wire::Response::mutable_stream_reconcile);
}

uint32_t Stream::PartitionOf(std::string_view sample_id, uint32_t count) {
  if (count == 0) return 0;
  return static_cast<uint32_t>(XXH64(sample_id.data(), sample_id.size(), 0) % count);
}

}  // namespace cistern

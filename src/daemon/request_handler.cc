#include "src/daemon/request_handler.h"

#include "fmt/format.h"
#include "src/common/quote.h"
#include "src/store/checksum.h"

namespace cistern::daemon {
namespace {

void FillInfo(const store::ObjectInfo& s, wire::ObjectInfo* out) {
  out->set_key(s.key);
  out->set_generation(s.generation);
  out->set_size(s.size);
  out->set_tier(s.tier);
  out->set_evictable(s.evictable);
  out->set_local_only(s.local_only);
  out->set_leases(s.leases);
  out->set_checksum(s.checksum);
  out->set_has_checksum(s.has_checksum);
  out->set_tensors(s.tensors);
  out->set_create_unix_ms(s.create_unix_ms);
}

absl::Status BatchTooLarge(int n, uint32_t max) {
  return absl::InvalidArgumentError(
      fmt::format("batch of {} entries exceeds max_batch {}", n, max));
}

}  // namespace

void SetStatus(const absl::Status& s, wire::Response* resp) {
  if (s.ok()) {
    resp->clear_status();
    return;
  }
  resp->mutable_status()->set_code(static_cast<int32_t>(s.code()));
  resp->mutable_status()->set_message(std::string(s.message()));
}

absl::Status RequestHandler::CreateArgsOf(const wire::Create& c,
                                          store::ObjectStore::CreateArgs* out) {
  store::ObjectStore::CreateArgs& args = *out;
  args.key = c.key();
  args.size = c.size();
  args.evictable = c.evictable();
  args.local_only = c.local_only();
  args.if_absent = c.if_absent();
  args.tier = c.tier();
  args.tensors.reserve(c.tensors_size());
  for (const wire::Tensor& t : c.tensors()) {
    TensorInfo info;
    info.name = t.name();
    int d = static_cast<int>(t.dtype());
    if (d < 1 || d > kMaxDType) {
      return absl::InvalidArgumentError(
          fmt::format("tensor '{}' has unknown dtype {}", t.name(), d));
    }
    info.dtype = static_cast<DType>(d);
    info.shape.assign(t.shape().begin(), t.shape().end());
    info.offset = t.offset();
    info.nbytes = t.nbytes();
    args.tensors.push_back(std::move(info));
  }
  return absl::OkStatus();
}

void RequestHandler::HandleCreate(store::SessionId s, const wire::Create& c, wire::Response* resp) {
  store::ObjectStore::CreateArgs args;
  if (absl::Status st = CreateArgsOf(c, &args); !st.ok()) return SetStatus(st, resp);
  auto w = store_->Create(s, args);
  if (!w.ok()) return SetStatus(w.status(), resp);
  auto* r = resp->mutable_create();
  r->set_write_id(w->write_id);
  r->set_tier(w->tier);
  r->set_payload_offset(w->payload_offset);
  r->set_size(w->size);
}

void RequestHandler::HandleSeal(store::SessionId s, const wire::Seal& c, wire::Response* resp) {
  std::optional<uint64_t> sum;
  if (c.has_checksum()) sum = c.checksum();
  // The tier for reserve_extent: the write's, known only before the seal.
  std::optional<uint32_t> tier;
  if (c.reserve_extent() != 0) tier = store_->WriteTier(s, c.write_id());
  auto g = store_->Seal(s, c.write_id(), sum);
  if (!g.ok()) return SetStatus(g.status(), resp);
  resp->mutable_seal()->set_generation(*g);
  if (tier) GrantExtent(s, *tier, c.reserve_extent(), resp->mutable_seal()->mutable_extent());
}

void RequestHandler::GrantExtent(store::SessionId s, uint32_t tier, uint64_t bytes,
                                 wire::ExtentGrant* out) {
  // Speculative: a refusal (no room to spare, one held already) is no error;
  // the client goes on with create + seal.
  auto e = store_->ReserveExtent(s, tier, bytes);
  if (!e.ok()) return;
  out->set_id(e->id);
  out->set_tier(e->tier);
  out->set_block_offset(e->block_offset);
  out->set_bytes(e->bytes);
}

void RequestHandler::HandlePutExtent(store::SessionId s, const wire::PutExtent& p,
                                     wire::Response* resp) {
  if (static_cast<uint32_t>(p.items_size()) > options_.max_batch) {
    return SetStatus(BatchTooLarge(p.items_size(), options_.max_batch), resp);
  }
  std::vector<store::ObjectStore::ExtentPut> puts(p.items_size());
  for (int i = 0; i < p.items_size(); ++i) {
    const wire::ExtentItem& item = p.items(i);
    if (absl::Status st = CreateArgsOf(item.create(), &puts[i].args); !st.ok()) {
      return SetStatus(st, resp);
    }
    if (item.has_checksum()) puts[i].checksum = item.checksum();
  }
  std::optional<uint32_t> tier = store_->WriteTier(s, p.extent_id());
  auto results = store_->PutExtent(s, p.extent_id(), puts);
  if (!results.ok()) return SetStatus(results.status(), resp);
  auto* r = resp->mutable_batch_seal();
  for (const absl::StatusOr<uint64_t>& g : *results) {
    wire::Response* one = r->add_results();
    if (g.ok()) {
      one->mutable_seal()->set_generation(*g);
    } else {
      SetStatus(g.status(), one);
    }
  }
  if (p.reserve_extent() != 0 && tier) {
    GrantExtent(s, *tier, p.reserve_extent(), r->mutable_extent());
  }
}

void RequestHandler::HandlePut(store::SessionId s, const wire::Put& p, wire::Response* resp) {
  // The copy and the checksum run on the event loop: keep them short. Clients
  // send Put up to 64 KiB; larger values belong in create + seal.
  constexpr size_t kPutAtMost = 1 << 20;
  if (p.data().size() > kPutAtMost) {
    return SetStatus(absl::InvalidArgumentError(fmt::format(
                         "put of {} in one request carries {} bytes, over the {} allowed; "
                         "use create and seal",
                         QuoteKey(p.create().key()), p.data().size(), kPutAtMost)),
                     resp);
  }
  if (p.data().size() != p.create().size()) {
    return SetStatus(absl::InvalidArgumentError(fmt::format(
                         "put of {}: {} bytes sent for a size of {}", QuoteKey(p.create().key()),
                         p.data().size(), p.create().size())),
                     resp);
  }
  // The bytes are at hand: a checksum that does not match them is refused
  // here rather than sealed (and quarantined at the next start).
  if (p.has_checksum() && store::Checksum(p.data().data(), p.data().size()) != p.checksum()) {
    return SetStatus(absl::DataLossError(fmt::format(
                         "put of {}: the checksum sent does not match the {} bytes sent",
                         QuoteKey(p.create().key()), p.data().size())),
                     resp);
  }
  wire::Response created;
  HandleCreate(s, p.create(), &created);
  if (created.has_status()) {
    *resp->mutable_status() = created.status();
    return;
  }
  const uint64_t write_id = created.create().write_id();
  if (absl::Status f = store_->FillWrite(s, write_id, p.data()); !f.ok()) {
    (void)store_->Abort(s, write_id);
    return SetStatus(f, resp);
  }
  wire::Seal seal;
  seal.set_write_id(write_id);
  seal.set_checksum(p.checksum());
  seal.set_has_checksum(p.has_checksum());
  HandleSeal(s, seal, resp);  // a failed seal aborts the write itself
}

void RequestHandler::HandleGet(store::SessionId s, const wire::Get& g, wire::Response* resp) {
  auto l = store_->Get(s, g.key(), g.generation());
  if (!l.ok()) return SetStatus(l.status(), resp);
  auto* r = resp->mutable_get();
  r->set_lease_id(l->lease_id);
  r->set_generation(l->generation);
  r->set_tier(l->tier);
  r->set_block_offset(l->block_offset);
  r->set_payload_offset(l->payload_offset);
  r->set_size(l->size);
}

void RequestHandler::FillStats(wire::StatsReply* r) {
  store::StoreStats st = store_->Stats();
  for (const auto& t : st.tiers) {
    auto* tt = r->add_tiers();
    tt->set_name(t.name);
    tt->set_capacity_bytes(t.capacity_bytes);
    tt->set_used_bytes(t.used_bytes);
    tt->set_evictable_bytes(t.evictable_bytes);
    tt->set_largest_free_bytes(t.largest_free_bytes);
    tt->set_fragmentation(t.fragmentation);
    tt->set_objects(t.objects);
    tt->set_evictions(t.evictions);
  }
  r->set_objects(st.objects);
  r->set_leases(st.leases);
  r->set_fast_leases(st.fast_leases);
  r->set_pending_writes(st.pending_writes);
  r->set_reserved_bytes(st.reserved_bytes);
  r->set_deferred_frees(st.deferred_frees);
  r->set_sessions(sessions_);
}

void RequestHandler::Handle(store::SessionId s, const wire::Request& req, wire::Response* resp) {
  resp->set_id(req.id());
  switch (req.body_case()) {
    case wire::Request::kCreate:
      return HandleCreate(s, req.create(), resp);
    case wire::Request::kSeal:
      return HandleSeal(s, req.seal(), resp);
    case wire::Request::kPut:
      return HandlePut(s, req.put(), resp);
    case wire::Request::kAbort:
      return SetStatus(store_->Abort(s, req.abort().write_id()), resp);
    case wire::Request::kGet:
      return HandleGet(s, req.get(), resp);
    case wire::Request::kRelease:
      return SetStatus(store_->Release(s, req.release().lease_id()), resp);
    case wire::Request::kFastReleased:
      if (req.fast_released().done()) store_->FastPathDone(s);
      store_->ReclaimFastHeld();
      return;
    case wire::Request::kRemove: {
      auto g = store_->Remove(req.remove().key(), req.remove().generation());
      if (!g.ok()) return SetStatus(g.status(), resp);
      resp->mutable_remove()->set_generation(*g);
      return;
    }
    case wire::Request::kStat: {
      auto st = store_->Stat(req.stat().key());
      if (!st.ok()) return SetStatus(st.status(), resp);
      FillInfo(*st, resp->mutable_stat());
      return;
    }
    case wire::Request::kList: {
      uint32_t limit = req.list().limit() == 0 ? kDefaultListLimit : req.list().limit();
      if (limit > options_.max_batch) limit = options_.max_batch;
      auto page = store_->List(req.list().prefix(), limit, req.list().cursor());
      auto* r = resp->mutable_list();
      for (const auto& o : page.objects) FillInfo(o, r->add_objects());
      r->set_next_cursor(page.next_cursor);
      return;
    }
    case wire::Request::kStats:
      return FillStats(resp->mutable_stats());
    case wire::Request::kDaemonStatus:
    case wire::Request::kAdopt:
    case wire::Request::kWaitPublished:
      return SetStatus(absl::InternalError("answered by the server, not the request handler"),
                       resp);
    case wire::Request::kQuarantineList: {
      auto* r = resp->mutable_quarantine_list();
      for (const store::QuarantinedObject& q : store_->Quarantined()) {
        auto* o = r->add_objects();
        o->set_tier(q.tier);
        o->set_block_offset(q.block_offset);
        o->set_block_bytes(q.block_size);
        o->set_key(q.key);
        o->set_reason(q.reason);
      }
      return;
    }
    case wire::Request::kQuarantineRemove:
      return SetStatus(store_->RemoveQuarantined(req.quarantine_remove().tier(),
                                                 req.quarantine_remove().block_offset()),
                       resp);
    case wire::Request::kBatchGet: {
      const auto& gets = req.batch_get().gets();
      if (static_cast<uint32_t>(gets.size()) > options_.max_batch) {
        return SetStatus(BatchTooLarge(gets.size(), options_.max_batch), resp);
      }
      auto* r = resp->mutable_batch_get();
      for (const wire::Get& g : gets) HandleGet(s, g, r->add_results());
      return;
    }
    case wire::Request::kBatchRelease: {
      const auto& ids = req.batch_release().lease_ids();
      if (static_cast<uint32_t>(ids.size()) > options_.max_batch) {
        return SetStatus(BatchTooLarge(ids.size(), options_.max_batch), resp);
      }
      // Releases what it can; reports the first failure.
      absl::Status first;
      for (uint64_t id : ids) {
        absl::Status st = store_->Release(s, id);
        if (!st.ok() && first.ok()) first = st;
      }
      return SetStatus(first, resp);
    }
    case wire::Request::kBatchCreate: {
      const auto& creates = req.batch_create().creates();
      if (static_cast<uint32_t>(creates.size()) > options_.max_batch) {
        return SetStatus(BatchTooLarge(creates.size(), options_.max_batch), resp);
      }
      auto* r = resp->mutable_batch_create();
      for (const wire::Create& c : creates) HandleCreate(s, c, r->add_results());
      return;
    }
    case wire::Request::kBatchSeal: {
      const auto& seals = req.batch_seal().seals();
      if (static_cast<uint32_t>(seals.size()) > options_.max_batch) {
        return SetStatus(BatchTooLarge(seals.size(), options_.max_batch), resp);
      }
      std::optional<uint32_t> tier;
      if (req.batch_seal().reserve_extent() != 0 && !seals.empty()) {
        tier = store_->WriteTier(s, seals[0].write_id());
      }
      auto* r = resp->mutable_batch_seal();
      for (const wire::Seal& c : seals) {
        wire::Seal one = c;
        one.clear_reserve_extent();  // one extent per session: the batch asks once
        HandleSeal(s, one, r->add_results());
      }
      if (tier) GrantExtent(s, *tier, req.batch_seal().reserve_extent(), r->mutable_extent());
      return;
    }
    case wire::Request::kPutExtent:
      return HandlePutExtent(s, req.put_extent(), resp);
    case wire::Request::kHello:
      return SetStatus(absl::FailedPreconditionError("hello was already said on this session"),
                       resp);
    case wire::Request::BODY_NOT_SET:
      return SetStatus(absl::InvalidArgumentError("request has no body (unknown request type?)"),
                       resp);
  }
}

}  // namespace cistern::daemon

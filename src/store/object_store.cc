// Life of an object. Create reserves a block and writes its header in state
// writing; nothing can see it. Seal assigns the next generation (one counter for
// the whole store, persisted in the superblocks, so generations never repeat,
// even across restarts) and makes it its key's visible generation; the previous
// one is retired. Remove, supersession and eviction all retire: the object
// becomes invisible at once, and its block is freed when its last lease ends
// (immediately if it has none). A reference (key, generation) therefore reads
// exactly its own bytes or gets NotFound: once retired, a generation never
// becomes visible again, and its block is reused only after every lease on it
// has ended.
//
// Eviction. Each tier keeps its evictable, visible, unleased objects in LRU
// order (evictor.h). Create first tries to allocate; while that fails it
// evicts the least recently used object and retries, so a put fails with
// ResourceExhausted only when nothing evictable is left. After a successful
// create, if the tier's used bytes exceed the high watermark, objects are
// evicted from the front until used bytes are at or below the low watermark.
// Pinned (non-evictable) and leased objects are never evicted.
#include "src/store/object_store.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "fmt/format.h"
#include "src/common/check.h"
#include "src/common/fmt_absl.h"
#include "src/store/checksum.h"
#include "src/store/manifest.h"

namespace cistern::store {
namespace {

uint64_t UnixNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ObjectStore>> ObjectStore::Open(std::vector<TierSpec> tiers,
                                                               const StoreOptions& options,
                                                               RecoveryReport* report) {
  if (tiers.empty()) return absl::InvalidArgumentError("no tiers configured");
  std::unique_ptr<ObjectStore> store(new ObjectStore);
  RecoveryReport local;
  if (report == nullptr) report = &local;
  *report = RecoveryReport();
  MutexLock lock(&store->mu_);
  store->tiers_.reserve(tiers.size());
  for (uint32_t i = 0; i < tiers.size(); ++i) {
    const TierSpec& spec = tiers[i];
    if (!(spec.low_watermark >= 0 && spec.low_watermark <= spec.high_watermark &&
          spec.high_watermark <= 1)) {
      return absl::InvalidArgumentError(
          fmt::format("tier '{}': watermarks must satisfy 0 <= low ({}) <= high ({}) <= 1",
                      spec.name, spec.low_watermark, spec.high_watermark));
    }
    auto arena = Arena::Attach(spec.base, spec.size, i, spec.name);
    if (!arena.ok()) {
      return absl::Status(arena.status().code(),
                          fmt::format("tier '{}': {}", spec.name, arena.status().message()));
    }
    store->tiers_.push_back(Tier{spec.name, *arena,
                                 Allocator(arena->data_offset(), arena->data_bytes()), LruList(),
                                 spec.high_watermark, spec.low_watermark});
    store->tier_names_.push_back(spec.name);
  }
  store->shared_ = options.shared_leases;
  if (options.index != nullptr || options.fast_leases != nullptr) {
    if (options.index == nullptr || options.fast_leases == nullptr) {
      return absl::InvalidArgumentError("the fast path needs the index and the fast lease regions");
    }
    store->index_ = options.index;
    store->fast_ = options.fast_leases;
    store->process_lives_ = options.process_lives;
  }
  {
    std::random_device rd;  // write ids, like lease ids, differ across restarts
    store->next_write_id_ = ((uint64_t{rd()} << 32 | rd()) >> 1) + 1;
  }
  // Blocks that processes still alive hold, by tier: recovery keeps them.
  std::vector<absl::flat_hash_set<uint64_t>> keep(store->tiers_.size());
  for (const RecoveredSession& rs : options.recovered) {
    for (const auto& e : rs.shared.entries) {
      if (e.tier < keep.size()) keep[e.tier].insert(e.block_offset);
    }
  }
  // And the blocks named in the fast lease regions of processes still alive;
  // the other regions are cleared (their clients are gone).
  if (store->fast_ != nullptr) {
    for (uint32_t r = store->fast_->region_count(); r-- > 0;) {
      auto [pid, start] = store->fast_->Owner(r);
      if (pid > 0 && (!store->process_lives_ || store->process_lives_(pid, start))) {
        store->regions_[r] = {pid, start, 0, false};
      } else {
        store->fast_->Clear(r);
        store->free_regions_.push_back(r);
      }
    }
    FastLeaseSet held;
    store->fast_->Collect(store->FastRegions(), &held);
    for (uint64_t location : held) {
      if (LocationTier(location) < keep.size()) {
        keep[LocationTier(location)].insert(LocationOffset(location));
      }
    }
  }
  // What the arenas hold, by (tier, block offset), until leases are restored.
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, Object*> at;
  absl::flat_hash_map<Object*, ObjectState> kept_state;  // kept blocks only
  std::vector<Object*> sealed;                           // in arena order
  for (uint32_t i = 0; i < store->tiers_.size(); ++i) {
    Tier& tier = store->tiers_[i];
    Arena::RecoverOptions recover;
    recover.on_corrupt = options.on_corrupt;
    recover.keep = &keep[i];
    auto result = tier.arena.Recover(&tier.alloc, recover);
    if (!result.ok()) {
      return absl::Status(result.status().code(),
                          fmt::format("tier '{}': {}", tier.name, result.status().message()));
    }
    report->freed_blocks += result->freed_blocks;
    for (auto& d : result->dropped) report->dropped.push_back(d);
    for (auto& q : result->quarantined) {
      QuarantinedObject obj{tier.name, q.block_offset, q.block_size, q.key, q.reason};
      report->quarantined.push_back(obj);
      store->quarantined_.emplace(std::make_pair(i, q.block_offset), std::move(obj));
    }
    store->max_generation_ = std::max(store->max_generation_, result->max_generation);
    for (const Arena::RecoveredObject& r : result->sealed) {
      Object* obj = store->table_.NewObject(r.key);
      obj->generation = r.generation;
      obj->block_offset = r.block_offset;
      obj->block_size = r.block_size;
      obj->payload_size = r.payload_size;
      obj->tier = i;
      obj->evictable = (r.flags & kFlagEvictable) != 0;
      ++tier.objects;
      sealed.push_back(obj);
      at[{i, r.block_offset}] = obj;
    }
    for (const Arena::KeptBlock& k : result->kept) {
      Object* obj = store->table_.NewObject(k.key);
      obj->generation = k.state == ObjectState::kWriting ? 0 : k.generation;
      obj->block_offset = k.block_offset;
      obj->block_size = k.block_size;
      obj->tier = i;
      ++tier.objects;
      kept_state[obj] = k.state;
      at[{i, k.block_offset}] = obj;
    }
  }
  // The leases and writes of living holders, under their recovered sessions.
  // An entry that no longer matches its block (a block freed, or reused for
  // another generation, after the entry was written) is cleared.
  absl::flat_hash_set<Object*> writing;
  for (const RecoveredSession& rs : options.recovered) {
    if (store->shared_) store->slots_[rs.id] = rs.shared.slot;
    for (const auto& e : rs.shared.entries) {
      auto it = at.find({e.tier, e.block_offset});
      Object* obj = it == at.end() ? nullptr : it->second;
      auto ks = obj ? kept_state.find(obj) : kept_state.end();
      bool lease = e.kind == SharedLeaseTable::Kind::kLease;
      bool ok = false;
      if (obj != nullptr && lease) {
        ok = (ks == kept_state.end() || ks->second == ObjectState::kRemoved) && e.generation != 0 &&
             obj->generation == e.generation &&
             store->leases_.AddWithId(e.id, obj, rs.id,
                                      store->shared_ ? e.index : LeaseTable::kNoEntry);
      } else if (obj != nullptr) {
        ok = ks != kept_state.end() && ks->second != ObjectState::kRemoved &&
             !writing.contains(obj) && !store->writes_.contains(e.id);
      }
      if (!ok) {
        if (store->shared_) store->shared_->RemoveEntry(e.index);
        ++report->stale_entries;
        continue;
      }
      if (lease) {
        ++obj->leases;
        ++report->kept_leases;
      } else {
        writing.insert(obj);
        store->writes_.emplace(
            e.id, Write{obj, rs.id, false, store->shared_ ? e.index : LeaseTable::kNoEntry, true});
        store->session_writes_[rs.id].insert(e.id);
        ++report->kept_writes;
      }
    }
  }
  // Who is visible. A crash between sealing a generation and retiring its
  // predecessor leaves both sealed: keep the newest, retire the other (freed
  // now, or when a surviving lease on it ends).
  for (Object* obj : sealed) {
    Tier& tier = store->tiers_[obj->tier];
    Object* current = obj->key->visible;
    if (current && current->generation > obj->generation) {
      store->RetireRecovered(obj);
      ++report->superseded;
      continue;
    }
    if (current) {
      store->Retire(current);
      ++report->superseded;
    }
    store->table_.SetVisible(obj);
    if (obj->evictable && obj->leases == 0) tier.lru.PushBack(obj);
  }
  for (auto& [obj, state] : kept_state) {
    if (state == ObjectState::kRemoved) {
      store->RetireRecovered(obj);
    } else if (!writing.contains(obj)) {
      store->AbortObject(obj);
    }
  }
  for (Tier& tier : store->tiers_) tier.arena.NoteGeneration(store->max_generation_);
  report->max_generation = store->max_generation_;
  for (Object* obj : store->table_.List("", SIZE_MAX, "")) {
    ++report->objects;
    report->bytes += obj->payload_size;
    if (store->index_ != nullptr) {
      store->index_->Publish(obj->key->key, obj->tier, obj->block_offset, obj->generation);
    }
  }
  return store;
}

ObjectStore::~ObjectStore() {
  MutexLock lock(&mu_);
  absl::flat_hash_set<Object*> all;
  for (auto& [id, w] : writes_) all.insert(w.obj);
  for (const LeaseTable::Lease& l : leases_.RemoveAll()) all.insert(l.obj);
  for (Object* obj : table_.List("", SIZE_MAX, "")) all.insert(obj);
  for (Object* obj : fast_held_) all.insert(obj);
  for (Object* obj : all) {
    tiers_[obj->tier].lru.Remove(obj);
    table_.DeleteObject(obj);
  }
}

absl::StatusOr<uint32_t> ObjectStore::TierIndex(std::string_view name) const {
  if (name.empty()) return 0;
  for (uint32_t i = 0; i < tiers_.size(); ++i) {
    if (tiers_[i].name == name) return i;
  }
  std::string known;
  for (const Tier& t : tiers_) known += (known.empty() ? "" : ", ") + t.name;
  return absl::InvalidArgumentError(fmt::format("unknown tier '{}' (configured: {})", name, known));
}

absl::StatusOr<ObjectStore::WriteInfo> ObjectStore::Create(SessionId session,
                                                           const CreateArgs& args) {
  if (absl::Status s = ValidateKey(args.key); !s.ok()) return s;
  if (args.size == 0) {
    return absl::InvalidArgumentError(
        fmt::format("size of {} is 0; objects hold at least one byte", QuoteKey(args.key)));
  }
  MutexLock lock(&mu_);
  auto tier_index = TierIndex(args.tier);
  if (!tier_index.ok()) return tier_index.status();
  Tier& tier = tiers_[*tier_index];
  uint64_t manifest_bytes = 0;
  if (!args.tensors.empty()) {
    if (absl::Status s = ValidateManifest(args.tensors, args.size); !s.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("manifest of {}: {}", QuoteKey(args.key), s.message()));
    }
    manifest_bytes = EncodedManifestBytes(args.tensors);
  }
  uint64_t capacity = tier.alloc.capacity();
  if (args.size > capacity || manifest_bytes > capacity ||
      BlockBytes(args.key.size(), manifest_bytes, args.size) > capacity) {
    return absl::InvalidArgumentError(
        fmt::format("{} of {} bytes does not fit in tier '{}' even when empty ({} bytes)",
                    QuoteKey(args.key), args.size, tier.name, capacity));
  }
  if (Object* v = table_.FindVisible(args.key)) {
    if (args.if_absent) {
      return absl::AlreadyExistsError(
          fmt::format("{} exists (generation {})", QuoteKey(args.key), v->generation));
    }
    if (v->holds > 0) return HeldError(v, "replaced");
  }
  uint64_t block = BlockBytes(args.key.size(), manifest_bytes, args.size);
  auto a = AllocateEvicting(tier, block);
  if (!a) {
    return absl::ResourceExhaustedError(fmt::format(
        "tier '{}' has no room for {} ({} bytes with header): {} of {} bytes used, largest "
        "free range {} bytes, nothing evictable left",
        tier.name, QuoteKey(args.key), block, tier.alloc.used_bytes(), capacity,
        tier.alloc.largest_free()));
  }
  Object* obj = table_.NewObject(args.key);
  obj->block_offset = a->offset;
  obj->block_size = block;
  obj->payload_size = args.size;
  obj->tier = *tier_index;
  obj->evictable = args.evictable;
  tier.arena.InitObject(*a, block, args.key, args.tensors, manifest_bytes, args.size, FlagsOf(args),
                        UnixNowNs());
  ++tier.objects;
  auto id = AddWrite(
      Write{obj, session, args.if_absent, LeaseTable::kNoEntry, false, args.replica_generation});
  if (!id.ok()) return id.status();
  EvictToWatermark(tier);
  return WriteInfo{*id, *tier_index, a->offset + tier.arena.header(a->offset)->payload_offset,
                   args.size};
}

uint32_t ObjectStore::FlagsOf(const CreateArgs& args) {
  return (args.evictable ? uint32_t{kFlagEvictable} : 0u) |
         (args.local_only ? uint32_t{kFlagLocalOnly} : 0u) |
         (args.tensors.empty() ? 0u : uint32_t{kFlagTensorDict});
}

absl::StatusOr<uint64_t> ObjectStore::AddWrite(Write w) {
  uint64_t id;
  do {
    id = next_write_id_++;
  } while (id == 0 || writes_.contains(id));
  if (auto slot = slots_.find(w.session); slot != slots_.end()) {
    auto e = shared_->AddEntry(slot->second, SharedLeaseTable::Kind::kWrite, w.obj->tier, id,
                               w.obj->block_offset, 0);
    if (!e.ok()) {
      AbortObject(w.obj);
      return e.status();
    }
    w.entry = *e;
  }
  session_writes_[w.session].insert(id);
  writes_.emplace(id, w);
  return id;
}

std::optional<Allocator::Allocation> ObjectStore::AllocateEvicting(Tier& tier, uint64_t n) {
  std::optional<FastLeaseSet> held;
  bool reclaimed = false;
  for (;;) {
    if (auto a = tier.alloc.Allocate(n)) return a;
    if (!reclaimed && !fast_held_.empty()) {
      reclaimed = true;
      ReclaimFastHeldLocked();
      continue;
    }
    Object* victim = EvictionVictim(tier, &held);
    if (victim == nullptr) return std::nullopt;
    Evict(victim);
  }
}

void ObjectStore::EvictToWatermark(Tier& tier) {
  uint64_t cap = tier.alloc.capacity();
  if (tier.alloc.used_bytes() <= tier.high_watermark * cap) return;
  std::optional<FastLeaseSet> held;
  while (tier.alloc.used_bytes() > tier.low_watermark * cap) {
    Object* victim = EvictionVictim(tier, &held);
    if (victim == nullptr) break;
    Evict(victim);
  }
}

Object* ObjectStore::EvictionVictim(Tier& tier, std::optional<FastLeaseSet>* held) {
  if (fast_ == nullptr || regions_.empty() || tier.lru.empty()) return tier.lru.Front();
  if (!held->has_value()) {
    held->emplace();
    fast_->Collect(FastRegions(), &**held);
  }
  // Objects clients are reading through fast leases are passed over (their
  // blocks could not be freed anyway) and count as just used.
  std::vector<Object*> in_use;
  Object* victim = nullptr;
  for (Object* o = tier.lru.Front(); o != nullptr; o = o->lru_next) {
    if (!(*held)->contains(PackLocation(o->tier, o->block_offset))) {
      victim = o;
      break;
    }
    in_use.push_back(o);
  }
  for (Object* o : in_use) {
    tier.lru.Remove(o);
    tier.lru.PushBack(o);
  }
  return victim;
}

void ObjectStore::Evict(Object* obj) {
  CHECK(obj->leases == 0 && obj->visibility == Visibility::kVisible);
  ++tiers_[obj->tier].evictions;
  Retire(obj);
}

void ObjectStore::Retire(Object* obj) {
  Tier& tier = tiers_[obj->tier];
  if (observer_ != nullptr) observer_->OnGone(StatOf(obj));
  tier.lru.Remove(obj);
  table_.ClearVisible(obj);
  if (index_ != nullptr) index_->Unpublish(obj->key->key);
  tier.arena.SetState(obj->block_offset, ObjectState::kRemoved);
  if (obj->leases == 0) {
    FreeUnlessFastHeld(obj);
  } else {
    ++deferred_frees_;
  }
}

void ObjectStore::RetireRecovered(Object* obj) {
  obj->visibility = Visibility::kRemoved;
  tiers_[obj->tier].arena.SetState(obj->block_offset, ObjectState::kRemoved);
  if (obj->leases == 0) {
    FreeUnlessFastHeld(obj);
  } else {
    ++deferred_frees_;
  }
}

void ObjectStore::FreeUnlessFastHeld(Object* obj) {
  // The block's state is removed (stored by the caller); Collect's fence
  // orders that store before the slots are read (fast_lease.h).
  if (fast_ != nullptr && !regions_.empty()) {
    FastLeaseSet held;
    fast_->Collect(FastRegions(), &held);
    if (held.contains(PackLocation(obj->tier, obj->block_offset))) {
      fast_held_.push_back(obj);
      ++deferred_frees_;
      return;
    }
  }
  FreeObject(obj);
}

void ObjectStore::ReclaimFastHeld() {
  MutexLock lock(&mu_);
  ReclaimFastHeldLocked();
}

void ObjectStore::ReclaimFastHeldLocked() {
  if (fast_held_.empty()) return;
  FastLeaseSet held;
  fast_->Collect(FastRegions(), &held);
  std::vector<Object*> still;
  for (Object* obj : fast_held_) {
    if (held.contains(PackLocation(obj->tier, obj->block_offset))) {
      still.push_back(obj);
    } else {
      --deferred_frees_;
      FreeObject(obj);
    }
  }
  fast_held_ = std::move(still);
}

std::vector<uint32_t> ObjectStore::FastRegions() const {
  std::vector<uint32_t> out;
  out.reserve(regions_.size());
  for (const auto& [r, state] : regions_) out.push_back(r);
  return out;
}

std::vector<uint32_t> ObjectStore::CountedFastRegions() const {
  std::vector<uint32_t> out;
  for (const auto& [r, st] : regions_) {
    if (st.session != 0 || !process_lives_ || process_lives_(st.pid, st.start)) out.push_back(r);
  }
  return out;
}

void ObjectStore::FreeFastRegion(uint32_t r) {
  fast_->Clear(r);
  regions_.erase(r);
  free_regions_.push_back(r);
}

absl::StatusOr<uint32_t> ObjectStore::OpenFastPath(SessionId session, const SessionOwner& owner,
                                                   std::optional<uint32_t> hint) {
  MutexLock lock(&mu_);
  if (fast_ == nullptr) return absl::FailedPreconditionError("this cisternd has no fast path");
  if (auto it = session_region_.find(session); it != session_region_.end()) return it->second;
  uint32_t r;
  if (auto h = hint ? regions_.find(*hint) : regions_.end();
      h != regions_.end() && h->second.session == 0 && h->second.pid == owner.pid &&
      h->second.start == owner.pid_start) {
    r = *hint;  // the same process takes its region back (it may hold leases there)
  } else if (free_regions_.empty()) {
    return absl::ResourceExhaustedError(fmt::format(
        "all {} fast lease regions belong to running processes", fast_->region_count()));
  } else {
    r = free_regions_.back();
    free_regions_.pop_back();
    fast_->SetOwner(r, owner.pid, owner.pid_start);
  }
  regions_[r] = {owner.pid, owner.pid_start, session, false};
  session_region_[session] = r;
  return r;
}

void ObjectStore::FastPathDone(SessionId session) {
  MutexLock lock(&mu_);
  if (auto it = session_region_.find(session); it != session_region_.end()) {
    regions_[it->second].done = true;
  }
}

void ObjectStore::ReapFastRegions() {
  MutexLock lock(&mu_);
  if (!process_lives_) return;
  std::vector<uint32_t> gone;
  for (const auto& [r, st] : regions_) {
    if (st.session == 0 && !process_lives_(st.pid, st.start)) gone.push_back(r);
  }
  for (uint32_t r : gone) FreeFastRegion(r);
  if (!gone.empty()) ReclaimFastHeldLocked();
}

void ObjectStore::FreeObject(Object* obj) {
  Tier& tier = tiers_[obj->tier];
  CHECK(!obj->in_lru && obj->leases == 0);
  auto [start, size] = tier.alloc.Free(obj->block_offset, obj->block_size);
  tier.arena.WriteFreeTag(start, size);
  --tier.objects;
  ++free_epoch_;
  table_.DeleteObject(obj);
}

absl::StatusOr<ObjectStore::Write> ObjectStore::TakeWrite(SessionId session, uint64_t write_id) {
  auto it = writes_.find(write_id);
  if (it == writes_.end()) {
    return absl::NotFoundError(fmt::format(
        "write {} is not pending (never created, already sealed or aborted)", write_id));
  }
  if (it->second.session != session) {
    return absl::PermissionDeniedError(
        fmt::format("write {} belongs to another session", write_id));
  }
  Write w = it->second;
  writes_.erase(it);
  if (auto e = extents_.find(session); e != extents_.end() && e->second == write_id) {
    extents_.erase(e);
  }
  if (w.entry != LeaseTable::kNoEntry) shared_->RemoveEntry(w.entry);
  auto sw = session_writes_.find(session);
  sw->second.erase(write_id);
  if (sw->second.empty()) session_writes_.erase(sw);
  return w;
}

absl::Status ObjectStore::FillWrite(SessionId session, uint64_t write_id, std::string_view bytes) {
  MutexLock lock(&mu_);
  auto it = writes_.find(write_id);
  if (it == writes_.end() || it->second.session != session) {
    return absl::NotFoundError(fmt::format("write {} is not pending in this session", write_id));
  }
  Object* obj = it->second.obj;
  if (bytes.size() != obj->payload_size) {
    return absl::InvalidArgumentError(fmt::format("{} bytes sent for the {} bytes of {}",
                                                  bytes.size(), obj->payload_size,
                                                  QuoteKey(obj->key->key)));
  }
  Arena& arena = tiers_[obj->tier].arena;
  char* payload =
      arena.base() + obj->block_offset + arena.header(obj->block_offset)->payload_offset;
  Copy(payload, bytes.data(), bytes.size());
  return absl::OkStatus();
}

void ObjectStore::AbortObject(Object* obj) {
  tiers_[obj->tier].arena.SetState(obj->block_offset, ObjectState::kAborted);
  FreeObject(obj);
}

absl::StatusOr<uint64_t> ObjectStore::Seal(SessionId session, uint64_t write_id,
                                           std::optional<uint64_t> checksum) {
  MutexLock lock(&mu_);
  if (auto it = writes_.find(write_id);
      it != writes_.end() && it->second.session == session && IsExtent(it->second.obj)) {
    return absl::FailedPreconditionError(fmt::format(
        "write {} is reserved write space, not an object: put into it (PutExtent) or abort it",
        write_id));
  }
  auto w = TakeWrite(session, write_id);
  if (!w.ok()) return w.status();
  if (w->orphaned) {
    absl::Status aborted = absl::AbortedError(fmt::format(
        "write {} of {} was open when cisternd restarted; nothing was stored, put it again",
        write_id, QuoteKey(w->obj->key->key)));
    AbortObject(w->obj);
    return aborted;
  }
  return SealLocked(*w, checksum);
}

absl::StatusOr<uint64_t> ObjectStore::SealLocked(const Write& write,
                                                 std::optional<uint64_t> checksum) {
  const Write* w = &write;
  Object* obj = w->obj;
  if (w->if_absent) {
    if (Object* v = obj->key->visible) {
      std::string msg = fmt::format("{} was created by another writer first (generation {})",
                                    QuoteKey(obj->key->key), v->generation);
      AbortObject(obj);
      return absl::AlreadyExistsError(msg);
    }
  }
  if (Object* v = obj->key->visible; v && v->holds > 0) {
    absl::Status held = HeldError(v, "replaced");
    AbortObject(obj);
    return held;
  }
  if (w->replica_generation != 0) {
    if (Object* v = obj->key->visible; v && v->generation >= w->replica_generation) {
      std::string msg = fmt::format(
          "{} already has generation {} here; the replica of generation {} is not needed",
          QuoteKey(obj->key->key), v->generation, w->replica_generation);
      AbortObject(obj);
      return absl::AlreadyExistsError(msg);
    }
  }
  Tier& tier = tiers_[obj->tier];
  obj->generation = w->replica_generation != 0 ? w->replica_generation : NextGeneration();
  max_generation_ = std::max(max_generation_, obj->generation);
  tier.arena.Seal(obj->block_offset, obj->generation, checksum ? &*checksum : nullptr);
  if (Object* old = obj->key->visible) Retire(old);
  table_.SetVisible(obj);
  if (index_ != nullptr) {
    index_->Publish(obj->key->key, obj->tier, obj->block_offset, obj->generation);
  }
  if (obj->evictable) tier.lru.PushBack(obj);
  if (observer_ != nullptr) observer_->OnVisible(StatOf(obj));
  return obj->generation;
}

absl::StatusOr<ObjectStore::ExtentInfo> ObjectStore::ReserveExtent(SessionId session,
                                                                   uint32_t tier_index,
                                                                   uint64_t bytes) {
  const uint64_t min_bytes = BlockBytes(kExtentKey.size(), 0, 1);
  if (bytes < min_bytes || bytes > kExtentMaxBytes) {
    return absl::InvalidArgumentError(
        fmt::format("write space of {} bytes asked; between {} and {} bytes can be reserved", bytes,
                    min_bytes, kExtentMaxBytes));
  }
  bytes = AlignUp(bytes, kAlign);
  MutexLock lock(&mu_);
  if (tier_index >= tiers_.size()) {
    return absl::InvalidArgumentError(
        fmt::format("write space asked in tier {}; there are {} tiers", tier_index, tiers_.size()));
  }
  if (auto e = extents_.find(session); e != extents_.end()) {
    return absl::FailedPreconditionError(
        fmt::format("the session already holds reserved write space (write {})", e->second));
  }
  Tier& tier = tiers_[tier_index];
  const double cap = static_cast<double>(tier.alloc.capacity());
  uint64_t reserved = 0;
  for (const auto& [s, id] : extents_) {
    const Object* obj = writes_.at(id).obj;
    if (obj->tier == tier_index) reserved += obj->block_size;
  }
  if (static_cast<double>(tier.alloc.used_bytes() + bytes) > tier.high_watermark * cap ||
      static_cast<double>(reserved + bytes) > cap / 8) {
    return absl::ResourceExhaustedError(fmt::format(
        "no write space reserved in tier '{}': {} of {} bytes used, {} already reserved", tier.name,
        tier.alloc.used_bytes(), tier.alloc.capacity(), reserved));
  }
  auto a = tier.alloc.Allocate(bytes);
  if (!a) {
    return absl::ResourceExhaustedError(
        fmt::format("no write space reserved in tier '{}': no free range of {} bytes (largest {})",
                    tier.name, bytes, tier.alloc.largest_free()));
  }
  Object* obj = table_.NewObject(kExtentKey);
  obj->block_offset = a->offset;
  obj->block_size = bytes;
  obj->payload_size = bytes - PayloadOffset(kExtentKey.size(), 0);
  obj->tier = tier_index;
  tier.arena.InitObject(*a, bytes, kExtentKey, {}, 0, obj->payload_size, 0, UnixNowNs());
  ++tier.objects;
  auto id = AddWrite(Write{obj, session, false, LeaseTable::kNoEntry, false, 0});
  if (!id.ok()) return id.status();
  extents_[session] = *id;
  return ExtentInfo{*id, tier_index, a->offset, bytes};
}

std::optional<uint32_t> ObjectStore::WriteTier(SessionId session, uint64_t write_id) const {
  MutexLock lock(&mu_);
  auto it = writes_.find(write_id);
  if (it == writes_.end() || it->second.session != session) return std::nullopt;
  return it->second.obj->tier;
}

absl::StatusOr<std::vector<absl::StatusOr<uint64_t>>> ObjectStore::PutExtent(
    SessionId session, uint64_t extent_id, const std::vector<ExtentPut>& puts) {
  if (puts.empty()) {
    return absl::InvalidArgumentError("a put into reserved write space names no object");
  }
  // Where each object goes is fixed by the sizes the client packed, whatever
  // else is wrong with it; an object that cannot be stored (`bad`) keeps its
  // place and is freed after the split.
  std::vector<uint64_t> manifest_bytes(puts.size(), 0);
  std::vector<uint64_t> blocks(puts.size(), 0);
  std::vector<absl::Status> bad(puts.size());
  uint64_t end = 0;
  for (size_t i = 0; i < puts.size(); ++i) {
    const CreateArgs& args = puts[i].args;
    if (!args.tensors.empty()) manifest_bytes[i] = EncodedManifestBytes(args.tensors);
    if (args.key.size() > kMaxKeyBytes || args.size > kExtentMaxBytes ||
        manifest_bytes[i] > kExtentMaxBytes) {
      return absl::InvalidArgumentError(fmt::format(
          "object {} of the put ({} bytes, key of {} bytes) cannot be in reserved write space "
          "(at most {} bytes)",
          i, args.size, args.key.size(), kExtentMaxBytes));
    }
    blocks[i] = BlockBytes(args.key.size(), manifest_bytes[i], args.size);
    if (blocks[i] < PayloadOffset(kExtentKey.size(), 0)) {
      return absl::InvalidArgumentError(
          fmt::format("object {} of the put has neither a key nor bytes", i));
    }
    end += blocks[i];
    if (absl::Status st = ValidateKey(args.key); !st.ok()) {
      bad[i] = st;
    } else if (args.size == 0) {
      bad[i] = absl::InvalidArgumentError(
          fmt::format("size of {} is 0; objects hold at least one byte", QuoteKey(args.key)));
    } else if (args.replica_generation != 0) {
      bad[i] = absl::InvalidArgumentError(
          fmt::format("{}: replicas are not put into reserved write space", QuoteKey(args.key)));
    } else if (!args.tensors.empty()) {
      if (absl::Status st = ValidateManifest(args.tensors, args.size); !st.ok()) {
        bad[i] = absl::InvalidArgumentError(
            fmt::format("manifest of {}: {}", QuoteKey(args.key), st.message()));
      }
    }
  }
  MutexLock lock(&mu_);
  auto it = writes_.find(extent_id);
  if (it == writes_.end() || !IsExtent(it->second.obj)) {
    return absl::NotFoundError(fmt::format(
        "write {} is not reserved write space (never reserved, already used or aborted)",
        extent_id));
  }
  if (it->second.session != session) {
    return absl::PermissionDeniedError(
        fmt::format("write {} belongs to another session", extent_id));
  }
  Object* ext = it->second.obj;
  if (it->second.orphaned) {
    AbortObject(TakeWrite(session, extent_id)->obj);
    return absl::AbortedError(fmt::format(
        "the write space reserved before cisternd restarted (write {}) was dropped; nothing was "
        "stored, put {} again",
        extent_id, QuoteKey(puts[0].args.key)));
  }
  if (end > ext->block_size) {
    return absl::InvalidArgumentError(
        fmt::format("{} objects need {} bytes; the reserved write space (write {}) holds {}",
                    puts.size(), end, extent_id, ext->block_size));
  }
  Tier& tier = tiers_[ext->tier];
  for (size_t i = 0; i < puts.size(); ++i) {
    const CreateArgs& args = puts[i].args;
    if (bad[i].ok() && !args.tier.empty() && args.tier != tier.name) {
      bad[i] = absl::InvalidArgumentError(
          fmt::format("{} is for tier '{}'; the reserved write space is in tier '{}'",
                      QuoteKey(args.key), args.tier, tier.name));
    }
  }
  // Split the block. Every tag behind the first block's is written before
  // that one shrinks (Arena::RebindWriting), so an arena walk sees either the
  // whole extent or the split, whenever the daemon dies.
  if (end < ext->block_size) {
    auto [start, size] = tier.alloc.Free(ext->block_offset + end, ext->block_size - end);
    tier.arena.WriteFreeTag(start, size);
    ++free_epoch_;
  }
  static const std::vector<TensorInfo> kNoTensors;
  std::vector<Object*> objs(puts.size(), nullptr);
  const uint64_t now = UnixNowNs();
  uint64_t at = ext->block_offset + end;
  for (size_t i = puts.size(); i-- > 0;) {
    at -= blocks[i];
    const CreateArgs& args = puts[i].args;
    // A bad object's block is a placeholder, aborted below.
    const bool ok = bad[i].ok();
    std::string_view key = ok ? args.key : kExtentKey;
    const std::vector<TensorInfo>& tensors = ok ? args.tensors : kNoTensors;
    const uint64_t mb = ok ? manifest_bytes[i] : 0;
    const uint64_t size = ok ? args.size : blocks[i] - PayloadOffset(kExtentKey.size(), 0);
    const uint32_t flags = ok ? FlagsOf(args) : 0u;
    if (i > 0) {
      tier.arena.InitObject(Allocator::Allocation{at, 0, 0}, blocks[i], key, tensors, mb, size,
                            flags, now);
    } else {
      tier.arena.RebindWriting(at, blocks[i], key, tensors, mb, size, flags, now);
    }
    Object* obj = table_.NewObject(key);
    obj->block_offset = at;
    obj->block_size = blocks[i];
    obj->payload_size = size;
    obj->tier = ext->tier;
    obj->evictable = ok && args.evictable;
    objs[i] = obj;
  }
  // The objects are sealed at once, under this lock: they need no write
  // entries (the extent's goes, with its write).
  CHECK(TakeWrite(session, extent_id).ok());
  table_.DeleteObject(ext);
  tier.objects += puts.size() - 1;
  std::vector<absl::StatusOr<uint64_t>> out;
  out.reserve(puts.size());
  for (size_t i = 0; i < puts.size(); ++i) {
    if (!bad[i].ok()) {
      AbortObject(objs[i]);
      out.push_back(bad[i]);
      continue;
    }
    Write w{objs[i], session, puts[i].args.if_absent, LeaseTable::kNoEntry, false, 0};
    out.push_back(SealLocked(w, puts[i].checksum));
  }
  return out;
}

absl::Status ObjectStore::Abort(SessionId session, uint64_t write_id) {
  MutexLock lock(&mu_);
  auto w = TakeWrite(session, write_id);
  if (!w.ok()) return w.status();
  AbortObject(w->obj);
  return absl::OkStatus();
}

absl::StatusOr<ObjectStore::LeaseInfo> ObjectStore::Get(SessionId session, std::string_view key,
                                                        uint64_t generation) {
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  MutexLock lock(&mu_);
  return LeaseLocked(session, key, generation, std::nullopt);
}

absl::StatusOr<ObjectStore::LeaseInfo> ObjectStore::Hold(SessionId session, std::string_view key,
                                                         uint64_t generation,
                                                         std::string_view holder) {
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  MutexLock lock(&mu_);
  return LeaseLocked(session, key, generation, holder);
}

absl::StatusOr<ObjectStore::LeaseInfo> ObjectStore::LeaseLocked(
    SessionId session, std::string_view key, uint64_t generation,
    std::optional<std::string_view> holder) {
  Object* obj = table_.FindVisible(key);
  if (obj == nullptr) return absl::NotFoundError(fmt::format("{} not found", QuoteKey(key)));
  if (generation != 0 && obj->generation != generation) {
    return absl::NotFoundError(fmt::format("generation {} of {} is not current (current is {})",
                                           generation, QuoteKey(key), obj->generation));
  }
  if (obj->leases++ == 0) tiers_[obj->tier].lru.Remove(obj);
  if (holder) {
    if (obj->holds++ == 0) obj->holder = HolderIndex(*holder);
  }
  LeaseInfo info;
  info.lease_id = leases_.Add(obj, session, holder.has_value());
  if (auto slot = slots_.find(session); slot != slots_.end()) {
    auto e = shared_->AddEntry(slot->second, SharedLeaseTable::Kind::kLease, obj->tier,
                               info.lease_id, obj->block_offset, obj->generation);
    if (!e.ok()) {
      DropLease(*leases_.Remove(info.lease_id, session));
      return e.status();
    }
    leases_.Find(info.lease_id)->entry = *e;
  }
  info.generation = obj->generation;
  info.tier = obj->tier;
  info.block_offset = obj->block_offset;
  info.payload_offset =
      obj->block_offset + tiers_[obj->tier].arena.header(obj->block_offset)->payload_offset;
  info.size = obj->payload_size;
  return info;
}

uint32_t ObjectStore::HolderIndex(std::string_view holder) {
  for (uint32_t i = 0; i < holders_.size(); ++i) {
    if (holders_[i] == holder) return i;
  }
  holders_.emplace_back(holder);
  return holders_.size() - 1;
}

absl::Status ObjectStore::HeldError(const Object* obj, std::string_view what) const {
  return absl::FailedPreconditionError(
      fmt::format("{} generation {} is held by {}{}; it cannot be {} until released",
                  QuoteKey(obj->key->key), obj->generation, holders_[obj->holder],
                  obj->holds > 1 ? fmt::format(" and {} more holds", obj->holds - 1) : "", what));
}

absl::Status ObjectStore::Release(SessionId session, uint64_t lease_id) {
  MutexLock lock(&mu_);
  auto lease = leases_.Remove(lease_id, session);
  if (!lease.ok()) return lease.status();
  DropLease(*lease);
  return absl::OkStatus();
}

void ObjectStore::DropLease(const LeaseTable::Lease& lease) {
  if (lease.entry != LeaseTable::kNoEntry) shared_->RemoveEntry(lease.entry);
  Object* obj = lease.obj;
  CHECK(obj->leases > 0);
  if (lease.hold) {
    CHECK(obj->holds > 0);
    --obj->holds;
  }
  if (--obj->leases > 0) return;
  if (obj->visibility == Visibility::kRemoved) {
    --deferred_frees_;
    FreeUnlessFastHeld(obj);
  } else if (obj->evictable) {
    tiers_[obj->tier].lru.PushBack(obj);
  }
}

absl::StatusOr<uint64_t> ObjectStore::Remove(std::string_view key, uint64_t generation) {
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  MutexLock lock(&mu_);
  Object* obj = table_.FindVisible(key);
  if (obj == nullptr) return absl::NotFoundError(fmt::format("{} not found", QuoteKey(key)));
  if (generation != 0 && obj->generation != generation) {
    return absl::NotFoundError(fmt::format("generation {} of {} is not current (current is {})",
                                           generation, QuoteKey(key), obj->generation));
  }
  if (obj->holds > 0) return HeldError(obj, "removed");
  uint64_t g = obj->generation;
  Retire(obj);
  return g;
}

ObjectInfo ObjectStore::StatOf(const Object* obj) const {
  const ObjectHeader* h = tiers_[obj->tier].arena.header(obj->block_offset);
  ObjectInfo s;
  s.key = obj->key->key;
  s.generation = obj->generation;
  s.size = obj->payload_size;
  s.tier = tiers_[obj->tier].name;
  s.evictable = obj->evictable;
  s.leases = obj->leases;
  s.has_checksum = (h->flags & kFlagHasChecksum) != 0;
  s.local_only = (h->flags & kFlagLocalOnly) != 0;
  s.checksum = h->checksum;
  s.tensors = h->tensor_count;
  s.create_unix_ms = h->create_unix_ns / 1'000'000;
  return s;
}

absl::StatusOr<ObjectInfo> ObjectStore::Stat(std::string_view key) const {
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  MutexLock lock(&mu_);
  Object* obj = table_.FindVisible(key);
  if (obj == nullptr) return absl::NotFoundError(fmt::format("{} not found", QuoteKey(key)));
  ObjectInfo info = StatOf(obj);
  if (fast_ != nullptr && !regions_.empty()) {
    FastLeaseRegions::Counts counts;
    fast_->Count(CountedFastRegions(), &counts);
    if (auto it = counts.find(PackLocation(obj->tier, obj->block_offset)); it != counts.end()) {
      info.leases += it->second;
    }
  }
  return info;
}

ObjectStore::ListPage ObjectStore::List(std::string_view prefix, size_t limit,
                                        std::string_view cursor) const {
  MutexLock lock(&mu_);
  ListPage page;
  // One more than asked tells whether another page exists (SIZE_MAX: every
  // object, and limit + 1 would wrap to none).
  std::vector<Object*> objs = table_.List(prefix, limit == SIZE_MAX ? limit : limit + 1, cursor);
  bool more = objs.size() > limit;
  if (more) objs.resize(limit);
  FastLeaseRegions::Counts counts;
  if (fast_ != nullptr && !regions_.empty()) fast_->Count(CountedFastRegions(), &counts);
  for (Object* obj : objs) {
    page.objects.push_back(StatOf(obj));
    if (auto it = counts.find(PackLocation(obj->tier, obj->block_offset)); it != counts.end()) {
      page.objects.back().leases += it->second;
    }
  }
  if (more && !page.objects.empty()) page.next_cursor = page.objects.back().key;
  return page;
}

void ObjectStore::SnapshotVisible(
    absl::FunctionRef<void(const std::vector<ObjectInfo>&)> atomically) const {
  MutexLock lock(&mu_);
  std::vector<ObjectInfo> all;
  for (Object* obj : table_.List("", SIZE_MAX, "")) all.push_back(StatOf(obj));
  atomically(all);
}

void ObjectStore::SetObserver(StoreObserver* observer) {
  MutexLock lock(&mu_);
  observer_ = observer;
}

void ObjectStore::SetGenerationScheme(uint32_t stride, uint32_t residue) {
  CHECK(stride >= 1 && residue < stride);
  MutexLock lock(&mu_);
  generation_stride_ = stride;
  generation_residue_ = residue;
}

void ObjectStore::RaiseGenerationFloor(uint64_t floor) {
  MutexLock lock(&mu_);
  generation_floor_ = std::max(generation_floor_, floor);
}

uint64_t ObjectStore::max_generation() const {
  MutexLock lock(&mu_);
  return max_generation_;
}

uint64_t ObjectStore::NextGeneration() {
  uint64_t g = std::max(max_generation_, generation_floor_) + 1;
  uint64_t r = g % generation_stride_;
  if (r != generation_residue_)
    g += (generation_residue_ + generation_stride_ - r) % generation_stride_;
  return g;
}

absl::Status ObjectStore::OpenSession(SessionId session, const SessionOwner& owner) {
  MutexLock lock(&mu_);
  if (shared_ == nullptr) return absl::OkStatus();
  if (slots_.contains(session)) {
    return absl::FailedPreconditionError(fmt::format("session {} is already open", session));
  }
  auto slot = shared_->OpenSlot(session, owner.pid, owner.uid, owner.pid_start);
  if (!slot.ok()) return slot.status();
  slots_[session] = *slot;
  return absl::OkStatus();
}

void ObjectStore::CloseSession(SessionId session) {
  MutexLock lock(&mu_);
  for (const LeaseTable::Lease& l : leases_.RemoveSession(session)) DropLease(l);
  auto sw = session_writes_.find(session);
  if (sw != session_writes_.end()) {
    std::vector<uint64_t> ids(sw->second.begin(), sw->second.end());
    for (uint64_t id : ids) AbortObject(TakeWrite(session, id)->obj);
  }
  if (auto slot = slots_.find(session); slot != slots_.end()) {
    shared_->CloseSlot(slot->second);
    slots_.erase(slot);
  }
  if (auto it = session_region_.find(session); it != session_region_.end()) {
    const uint32_t r = it->second;
    session_region_.erase(it);
    FastRegionState& st = regions_[r];
    if (st.done && fast_->CountInUse(r) == 0) {
      FreeFastRegion(r);
    } else {
      st.session = 0;  // kept, and read, until its process exits
      st.done = false;
    }
  }
  ReclaimFastHeldLocked();
}

ObjectStore::Adopted ObjectStore::AdoptSession(SessionId from, SessionId to) {
  MutexLock lock(&mu_);
  Adopted out;
  auto to_slot = slots_.find(to);
  // An entry follows its lease or write to the adopting session's slot (or
  // is cleared if that session is not recorded).
  auto move_entry = [&](uint64_t* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (*entry == LeaseTable::kNoEntry) return;
    if (to_slot != slots_.end()) {
      shared_->MoveEntry(*entry, to_slot->second);
    } else {
      shared_->RemoveEntry(*entry);
      *entry = LeaseTable::kNoEntry;
    }
  };
  for (uint64_t id : leases_.MoveSession(from, to)) {
    move_entry(&leases_.Find(id)->entry);
    ++out.leases;
  }
  if (auto e = extents_.find(from); e != extents_.end()) {
    // Kept as the adopting session's extent unless it has one (then it is
    // one more pending write of that session, aborted when it ends).
    if (!extents_.contains(to)) extents_[to] = e->second;
    extents_.erase(e);
  }
  if (auto sw = session_writes_.find(from); sw != session_writes_.end()) {
    std::vector<uint64_t> ids(sw->second.begin(), sw->second.end());
    session_writes_.erase(sw);
    for (uint64_t id : ids) {
      Write& w = writes_.at(id);
      w.session = to;
      move_entry(&w.entry);
      session_writes_[to].insert(id);
      ++out.writes;
    }
  }
  if (auto slot = slots_.find(from); slot != slots_.end()) {
    shared_->CloseSlot(slot->second);
    slots_.erase(slot);
  }
  return out;
}

StoreStats ObjectStore::Stats() const {
  MutexLock lock(&mu_);
  StoreStats s;
  for (const Tier& t : tiers_) {
    TierStats ts;
    ts.name = t.name;
    ts.capacity_bytes = t.alloc.capacity();
    ts.used_bytes = t.alloc.used_bytes();
    ts.evictable_bytes = t.lru.bytes();
    ts.largest_free_bytes = t.alloc.largest_free();
    ts.fragmentation = t.alloc.fragmentation();
    ts.objects = t.objects;
    ts.evictions = t.evictions;
    s.tiers.push_back(ts);
  }
  s.objects = table_.visible_count();
  s.leases = leases_.size();
  if (fast_ != nullptr) {
    for (uint32_t r : CountedFastRegions()) s.fast_leases += fast_->CountInUse(r);
    s.leases += s.fast_leases;
  }
  for (const auto& [id, w] : writes_) {
    if (IsExtent(w.obj)) {
      ++s.reserved_extents;
      s.reserved_bytes += w.obj->block_size;
    } else {
      ++s.pending_writes;
    }
  }
  s.deferred_frees = deferred_frees_;
  s.fast_held = fast_held_.size();
  s.indexed = index_ != nullptr ? index_->size() : 0;
  s.quarantined_objects = quarantined_.size();
  for (const auto& [at, q] : quarantined_) s.quarantined_bytes += q.block_size;
  return s;
}

std::vector<QuarantinedObject> ObjectStore::Quarantined() const {
  MutexLock lock(&mu_);
  std::vector<QuarantinedObject> out;
  for (const auto& [at, q] : quarantined_) out.push_back(q);
  return out;
}

absl::Status ObjectStore::RemoveQuarantined(std::string_view tier_name, uint64_t block_offset) {
  MutexLock lock(&mu_);
  auto tier = TierIndex(tier_name);
  if (!tier.ok()) return tier.status();
  auto it = quarantined_.find({*tier, block_offset});
  if (it == quarantined_.end()) {
    return absl::NotFoundError(fmt::format(
        "nothing is quarantined at offset {} of tier '{}' ({} quarantined objects in all)",
        block_offset, tiers_[*tier].name, quarantined_.size()));
  }
  Tier& t = tiers_[*tier];
  auto [start, size] = t.alloc.Free(block_offset, it->second.block_size);
  t.arena.WriteFreeTag(start, size);
  ++free_epoch_;
  quarantined_.erase(it);
  return absl::OkStatus();
}

ObjectStore::SessionStats ObjectStore::SessionInfo(SessionId session) const {
  MutexLock lock(&mu_);
  SessionStats s;
  s.leases = leases_.CountForSession(session);
  if (auto it = session_region_.find(session); it != session_region_.end()) {
    s.leases += fast_->CountInUse(it->second);
  }
  if (auto sw = session_writes_.find(session); sw != session_writes_.end()) {
    for (uint64_t id : sw->second) {
      const Object* obj = writes_.at(id).obj;
      if (IsExtent(obj)) {
        s.reserved_bytes += obj->block_size;
      } else {
        ++s.pending_writes;
      }
    }
  }
  return s;
}

uint64_t ObjectStore::free_epoch() const {
  MutexLock lock(&mu_);
  return free_epoch_;
}

}  // namespace cistern::store

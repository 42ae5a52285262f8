// How the catalog keeps memory and disk in step.
//
// Every replica lives once in memory, under its key, as a 32-byte ReplicaRec
// naming its host by number; per host the catalog keeps the replica count,
// bytes and the XOR of the replica digests, updated by the three functions
// that change replicas (InsertReplica, EraseReplica, UpdateReplica). Each of
// them, given a Txn, also writes the record to txn->batch and pushes a closure
// that reverses it (called with no Txn, so undoing writes nothing). Calls that
// change a host or the meta record first push a closure that restores a copy
// taken before the change; because Rollback runs closures in reverse, the
// replica undos of a call run before its host snapshot is restored, and memory
// ends exactly where it began. An inserted replica carries kPending until
// Commit clears it; readers skip pending replicas and pending hosts.
//
// Reconcile. A full inventory sync numbers itself with the host's sync_round;
// every replica the host names gets that round as its sync_mark, and the last
// chunk removes the host's replicas whose mark is older. Publications mark
// what they add with the current round, so a replica published after a sync is
// never mistaken for a stale one by the next. A (key, generation) that another
// host holds with other bytes (size, or checksum when both have one) is a
// conflict: refused, counted and reported, never catalogued, so a get by
// (key, generation) means the same bytes everywhere.
//
// Liveness is soft state: the last heartbeat is kept in memory only and the
// state is written when it changes. After a restart every host is UNKNOWN
// until it registers again; an UNKNOWN host that does not register within
// dead_after of the load is DEAD. A DEAD host's replicas are dropped
// replica_grace after it died (dead_unix_ms is durable, so the grace runs
// across registry restarts too).
#include "src/catalog/catalog.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include "fmt/format.h"
#include "src/catalog/records.h"
#include "src/common/fmt_absl.h"
#include "src/common/quote.h"
#include "src/store/key.h"

namespace cistern::catalog {
namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr uint32_t kMaxHostNumber = 65535;
constexpr size_t kMaxHostIdBytes = 64;
constexpr size_t kMaxTierNameBytes = 32;
constexpr size_t kMaxConflictsReported = 16;
// Generations above this are refused, so one bad host cannot push every
// other host's generations towards overflow.
constexpr uint64_t kMaxGeneration = 1ull << 62;

absl::Status ValidateHostId(std::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError("host_id is empty");
  if (id.size() > kMaxHostIdBytes) {
    return absl::InvalidArgumentError(
        fmt::format("host_id of {} bytes exceeds the limit of {}", id.size(), kMaxHostIdBytes));
  }
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return absl::InvalidArgumentError(
          fmt::format("host_id {} may hold only letters, digits, '.', '_' and '-'", QuoteKey(id)));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTierName(std::string_view name, std::string_view what) {
  if (name.empty() || name.size() > kMaxTierNameBytes) {
    return absl::InvalidArgumentError(
        fmt::format("{}: tier name must be 1..{} bytes", what, kMaxTierNameBytes));
  }
  for (char c : name) {
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tier name {} may hold only a-z, 0-9, '_' and '-'", what, QuoteKey(name)));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateReplicaRef(std::string_view key, uint64_t generation, std::string_view what) {
  if (absl::Status s = store::ValidateKey(key); !s.ok()) {
    return absl::InvalidArgumentError(fmt::format("{}: {}", what, s.message()));
  }
  if (generation == 0 || generation > kMaxGeneration) {
    return absl::InvalidArgumentError(
        fmt::format("{}: generation {} of {} is outside 1..2^62", what, generation, QuoteKey(key)));
  }
  return absl::OkStatus();
}

int StateRank(v1::HostState s) {
  switch (s) {
    case v1::HOST_STATE_ALIVE:
      return 0;
    case v1::HOST_STATE_UNKNOWN:
      return 1;
    case v1::HOST_STATE_SUSPECT:
      return 2;
    default:
      return 3;  // not offered
  }
}

bool Offered(v1::HostState s) { return StateRank(s) < 3; }

// Debian's abseil has its own string_view: heterogeneous lookups need it.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string ConflictId(std::string_view key, uint64_t generation) {
  std::string id(key);
  id.push_back('\0');
  for (int i = 7; i >= 0; --i) id.push_back(static_cast<char>((generation >> (8 * i)) & 0xff));
  return id;
}

}  // namespace

// ---------------------------------------------------------------------------
// Construction and loading

Catalog::Catalog(CatalogOptions options, Clock* clock)
    : options_(std::move(options)),
      clock_(clock),
      loaded_at_(clock->Now()),
      base_unix_ms_(UnixMs()) {}

Catalog::~Catalog() = default;

uint64_t Catalog::WallMs() const {
  return base_unix_ms_ +
         static_cast<uint64_t>(duration_cast<milliseconds>(clock_->Now() - loaded_at_).count());
}

absl::StatusOr<std::unique_ptr<Catalog>> Catalog::Load(registry::MetadataBackend& backend,
                                                       CatalogOptions options, Clock* clock,
                                                       Txn* txn) {
  std::unique_ptr<Catalog> c(new Catalog(std::move(options), clock));
  auto meta = backend.Get(kMetaKey);
  if (!meta.ok()) return meta.status();
  if (meta->has_value()) {
    if (!c->meta_.ParseFromString(**meta)) {
      return absl::DataLossError(
          fmt::format("{}: the catalog meta record does not parse", backend.Describe()));
    }
    if (c->meta_.cluster_id() != c->options_.cluster_id) {
      return absl::FailedPreconditionError(fmt::format(
          "{} holds the catalog of cluster '{}', but this registry is configured for cluster "
          "'{}'; point it at its own database or fix cluster_id",
          backend.Describe(), c->meta_.cluster_id(), c->options_.cluster_id));
    }
  } else {
    c->meta_.set_cluster_id(c->options_.cluster_id);
    c->meta_.set_next_host_number(1);
    c->meta_.set_next_claim_id(1);
  }

  absl::Status parse_error;
  auto fail = [&](std::string_view what, std::string_view key) {
    parse_error = absl::DataLossError(
        fmt::format("{}: {} record {} is corrupt", backend.Describe(), what, QuoteKey(key)));
    return false;
  };
  absl::Status s = backend.Scan(kHostPrefix, [&](std::string_view key, std::string_view value) {
    auto h = std::make_unique<Host>();
    if (!h->record.ParseFromArray(value.data(), static_cast<int>(value.size())) ||
        h->record.host_number() == 0 || h->record.host_number() > kMaxHostNumber ||
        h->record.host_id() != key.substr(kHostPrefix.size())) {
      return fail("host", key);
    }
    uint32_t n = h->record.host_number();
    if (c->hosts_.size() < n) c->hosts_.resize(n);
    if (c->hosts_[n - 1] != nullptr) return fail("host (duplicate number)", key);
    for (const auto& t : h->record.tiers()) h->tier_names.push_back(t.name());
    c->host_numbers_[h->record.host_id()] = n;
    c->hosts_[n - 1] = std::move(h);
    return true;
  });
  if (!s.ok()) return s;
  if (!parse_error.ok()) return parse_error;

  s = backend.Scan(kReplicaPrefix, [&](std::string_view key, std::string_view value) {
    std::string_view object_key;
    ReplicaRec rec;
    catalog::ReplicaRecord r;
    if (!ParseReplicaKey(key, &object_key, &rec.generation, &rec.host) ||
        !r.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      return fail("replica", key);
    }
    Host* host = c->HostByNumber(rec.host);
    if (host == nullptr) return fail("replica (of no host)", key);
    auto tier = c->TierIndex(*host, r.tier(), /*add=*/true, nullptr);
    if (!tier.ok()) return fail("replica (tier)", key);
    rec.tier = *tier;
    rec.size = r.size();
    rec.checksum = r.checksum();
    rec.flags = r.has_checksum() ? kHasChecksum : 0;
    c->InsertReplica(object_key, rec, nullptr);
    c->meta_.set_generation_floor(std::max(c->meta_.generation_floor(), rec.generation));
    return true;
  });
  if (!s.ok()) return s;
  if (!parse_error.ok()) return parse_error;

  s = backend.Scan(kClaimPrefix, [&](std::string_view key, std::string_view value) {
    uint64_t id = 0;
    Claim claim;
    if (!ParseClaimKey(key, &id) ||
        !claim.record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      return fail("transfer", key);
    }
    uint64_t now = c->WallMs();
    uint64_t left = claim.record.expires_unix_ms() > now ? claim.record.expires_unix_ms() - now : 0;
    claim.expires = clock->Now() + milliseconds(left);
    if (Host* src = c->HostByNumber(claim.record.source_host())) src->active_transfers++;
    c->claims_[id] = std::move(claim);
    return true;
  });
  if (!s.ok()) return s;
  if (!parse_error.ok()) return parse_error;

  c->SnapshotMeta(txn);
  c->meta_.set_epoch(c->meta_.epoch() + 1);
  c->SaveMeta(txn);
  for (auto& h : c->hosts_) {
    if (h == nullptr) continue;
    v1::HostState st = h->record.state();
    if (st != v1::HOST_STATE_LEFT && st != v1::HOST_STATE_DEAD) {
      h->record.set_state(v1::HOST_STATE_UNKNOWN);
      c->SaveHost(*h, txn);
    }
  }
  return c;
}

// ---------------------------------------------------------------------------
// Transactions

void Catalog::Commit(Txn* txn) {
  for (auto& f : txn->commit_) f();
  txn->commit_.clear();
  txn->undo_.clear();
  txn->batch.Clear();
}

void Catalog::Rollback(Txn* txn) {
  for (auto it = txn->undo_.rbegin(); it != txn->undo_.rend(); ++it) (*it)();
  txn->commit_.clear();
  txn->undo_.clear();
  txn->batch.Clear();
}

void Catalog::SnapshotHost(Host& host, Txn* txn) {
  if (txn == nullptr) return;
  uint32_t n = host.record.host_number();
  auto copy = std::make_shared<Host>(host);
  txn->undo_.push_back([this, n, copy] { *hosts_[n - 1] = *copy; });
}

void Catalog::SnapshotMeta(Txn* txn) {
  if (txn == nullptr) return;
  txn->undo_.push_back([this, copy = meta_] { meta_ = copy; });
}

void Catalog::SaveHost(Host& host, Txn* txn) {
  if (txn == nullptr) return;
  txn->batch.Put(HostKey(host.record.host_id()), host.record.SerializeAsString());
}

void Catalog::SaveMeta(Txn* txn) {
  if (txn == nullptr) return;
  txn->batch.Put(std::string(kMetaKey), meta_.SerializeAsString());
}

void Catalog::RaiseFloor(uint64_t generation, Txn* txn) {
  if (generation <= meta_.generation_floor()) return;
  SnapshotMeta(txn);
  meta_.set_generation_floor(generation);
  SaveMeta(txn);
}

// ---------------------------------------------------------------------------
// Hosts

const Catalog::Host* Catalog::HostByNumber(uint32_t number) const {
  if (number == 0 || number > hosts_.size()) return nullptr;
  return hosts_[number - 1].get();
}

Catalog::Host* Catalog::HostByNumber(uint32_t number) {
  if (number == 0 || number > hosts_.size()) return nullptr;
  return hosts_[number - 1].get();
}

absl::StatusOr<Catalog::Host*> Catalog::FindHost(std::string_view host_id) {
  if (absl::Status s = ValidateHostId(host_id); !s.ok()) return s;
  auto it = host_numbers_.find(AV(host_id));
  if (it == host_numbers_.end()) {
    return absl::NotFoundError(fmt::format("host '{}' is not registered", host_id));
  }
  return HostByNumber(it->second);
}

absl::StatusOr<Catalog::Host*> Catalog::CheckIncarnation(std::string_view host_id,
                                                         uint64_t incarnation) {
  auto host = FindHost(host_id);
  if (!host.ok()) return host.status();
  const HostRecord& r = (*host)->record;
  if (incarnation != r.incarnation()) {
    return absl::FailedPreconditionError(
        fmt::format("host '{}': incarnation {} is not the registered one ({}); register again",
                    host_id, incarnation, r.incarnation()));
  }
  switch (r.state()) {
    case v1::HOST_STATE_UNKNOWN:
      return absl::FailedPreconditionError(fmt::format(
          "host '{}': the registry restarted (epoch {}); register again", host_id, meta_.epoch()));
    case v1::HOST_STATE_DEAD:
      return absl::FailedPreconditionError(
          fmt::format("host '{}' was declared dead; register again", host_id));
    case v1::HOST_STATE_LEFT:
      return absl::FailedPreconditionError(
          fmt::format("host '{}' has deregistered; register again", host_id));
    default:
      return host;
  }
}

absl::StatusOr<uint8_t> Catalog::TierIndex(Host& host, std::string_view tier, bool add, Txn* txn) {
  for (size_t i = 0; i < host.tier_names.size(); ++i) {
    if (host.tier_names[i] == tier) return static_cast<uint8_t>(i);
  }
  if (!add || host.tier_names.size() >= 255) {
    return absl::InvalidArgumentError(
        fmt::format("host '{}' has no tier '{}'", host.record.host_id(), tier));
  }
  host.tier_names.emplace_back(tier);  // append-only: never undone, harmless
  return static_cast<uint8_t>(host.tier_names.size() - 1);
}

bool Catalog::EraseConflicted(Host& host, std::string_view key, uint64_t generation) {
  auto it = host.conflicted.find(ConflictId(key, generation));
  if (it == host.conflicted.end()) return false;
  host.digest ^= it->second.digest;
  host.conflicted.erase(it);
  return true;
}

v1::StateVersion Catalog::VersionOf(const Host& host) const {
  v1::StateVersion v;
  v.set_count(host.replicas + host.conflicted.size());
  v.set_digest(host.digest);
  v.set_publish_seq(host.record.publish_seq());
  return v;
}

std::optional<v1::StateVersion> Catalog::VersionForTest(std::string_view host_id) const {
  auto it = host_numbers_.find(AV(host_id));
  if (it == host_numbers_.end()) return std::nullopt;
  return VersionOf(*HostByNumber(it->second));
}

absl::StatusOr<v1::RegisterReply> Catalog::Register(const v1::RegisterRequest& req, Txn* txn) {
  if (absl::Status s = ValidateHostId(req.host_id()); !s.ok()) return s;
  if (req.advertise().empty() || req.advertise().size() > options_.max_advertise_bytes ||
      req.advertise().find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("host '{}': advertise address must be host:port, 1..{} bytes without spaces",
                    req.host_id(), options_.max_advertise_bytes));
  }
  if (req.incarnation() == 0) {
    return absl::InvalidArgumentError(fmt::format("host '{}': incarnation is 0", req.host_id()));
  }
  if (req.tiers().empty() || req.tiers_size() > static_cast<int>(options_.max_tiers)) {
    return absl::InvalidArgumentError(fmt::format("host '{}': {} tiers; 1..{} expected",
                                                  req.host_id(), req.tiers_size(),
                                                  options_.max_tiers));
  }
  for (int i = 0; i < req.tiers_size(); ++i) {
    const auto& t = req.tiers(i);
    std::string what = fmt::format("host '{}' tiers[{}]", req.host_id(), i);
    if (absl::Status s = ValidateTierName(t.name(), what); !s.ok()) return s;
    if (t.used_bytes() > t.capacity_bytes()) {
      return absl::InvalidArgumentError(fmt::format("{}: used_bytes {} exceeds capacity_bytes {}",
                                                    what, t.used_bytes(), t.capacity_bytes()));
    }
    for (int j = 0; j < i; ++j) {
      if (req.tiers(j).name() == t.name()) {
        return absl::InvalidArgumentError(
            fmt::format("{}: tier '{}' is named twice", what, t.name()));
      }
    }
  }
  if (req.max_generation() > kMaxGeneration) {
    return absl::InvalidArgumentError(fmt::format("host '{}': max_generation {} exceeds 2^62",
                                                  req.host_id(), req.max_generation()));
  }

  Host* host = nullptr;
  auto it = host_numbers_.find(AV(req.host_id()));
  if (it != host_numbers_.end()) {
    host = HostByNumber(it->second);
    if (req.incarnation() < host->record.incarnation()) {
      return absl::FailedPreconditionError(fmt::format(
          "host '{}': incarnation {} is older than the registered {}; is another daemon running "
          "with this host_id?",
          req.host_id(), req.incarnation(), host->record.incarnation()));
    }
    SnapshotHost(*host, txn);
    if (req.incarnation() != host->record.incarnation()) host->record.set_publish_seq(0);
  } else {
    if (meta_.next_host_number() > kMaxHostNumber) {
      return absl::ResourceExhaustedError(
          fmt::format("the cluster already has {} hosts; host '{}' cannot join", kMaxHostNumber,
                      req.host_id()));
    }
    SnapshotMeta(txn);
    uint32_t n = meta_.next_host_number();
    meta_.set_next_host_number(n + 1);
    SaveMeta(txn);
    if (hosts_.size() < n) hosts_.resize(n);
    hosts_[n - 1] = std::make_unique<Host>();
    host = hosts_[n - 1].get();
    host->record.set_host_id(req.host_id());
    host->record.set_host_number(n);
    host->pending = txn != nullptr;
    host_numbers_[req.host_id()] = n;
    if (txn != nullptr) {
      std::string id = req.host_id();
      txn->undo_.push_back([this, n, id] {
        hosts_[n - 1].reset();
        host_numbers_.erase(id);
      });
      txn->commit_.push_back([this, n] {
        if (Host* h = HostByNumber(n)) h->pending = false;
      });
    }
  }
  HostRecord& r = host->record;
  r.set_advertise(req.advertise());
  r.set_incarnation(req.incarnation());
  r.set_state(v1::HOST_STATE_ALIVE);
  r.set_registered_unix_ms(WallMs());
  r.set_dead_unix_ms(0);
  r.set_daemon_version(req.daemon_version());
  *r.mutable_tiers() = req.tiers();
  for (const auto& t : req.tiers()) (void)TierIndex(*host, t.name(), /*add=*/true, txn);
  host->last_heartbeat = clock_->Now();
  host->last_heartbeat_unix_ms = WallMs();
  host->syncing = false;
  SaveHost(*host, txn);
  RaiseFloor(req.max_generation(), txn);

  v1::RegisterReply reply;
  reply.set_host_number(r.host_number());
  reply.set_registry_epoch(meta_.epoch());
  reply.set_generation_floor(meta_.generation_floor());
  reply.set_heartbeat_interval_ms(
      static_cast<uint64_t>(duration_cast<milliseconds>(options_.heartbeat_interval).count()));
  *reply.mutable_registry_version() = VersionOf(*host);
  reply.set_sync_required(req.version().count() != host->replicas ||
                          req.version().digest() != host->digest);
  return reply;
}

absl::StatusOr<v1::HeartbeatReply> Catalog::Heartbeat(const v1::HeartbeatRequest& req, Txn* txn) {
  auto found = CheckIncarnation(req.host_id(), req.incarnation());
  if (!found.ok()) return found.status();
  Host* host = *found;
  for (int i = 0; i < req.tiers_size(); ++i) {
    const auto& t = req.tiers(i);
    if (t.used_bytes() > t.capacity_bytes()) {
      return absl::InvalidArgumentError(
          fmt::format("host '{}' tiers[{}]: used_bytes {} exceeds capacity_bytes {}", req.host_id(),
                      i, t.used_bytes(), t.capacity_bytes()));
    }
  }
  host->last_heartbeat = clock_->Now();
  host->last_heartbeat_unix_ms = WallMs();
  if (host->record.state() == v1::HOST_STATE_SUSPECT) {
    SnapshotHost(*host, txn);
    host->record.set_state(v1::HOST_STATE_ALIVE);
    SaveHost(*host, txn);
  }
  // Usage is soft state; it is written with the next host record.
  for (const auto& t : req.tiers()) {
    for (auto& mine : *host->record.mutable_tiers()) {
      if (mine.name() == t.name())
        mine.set_used_bytes(std::min(t.used_bytes(), mine.capacity_bytes()));
    }
  }
  v1::HeartbeatReply reply;
  reply.set_registry_epoch(meta_.epoch());
  reply.set_generation_floor(meta_.generation_floor());
  *reply.mutable_registry_version() = VersionOf(*host);
  reply.set_sync_required(
      !host->syncing && req.version().publish_seq() == host->record.publish_seq() &&
      (req.version().count() != host->replicas || req.version().digest() != host->digest));
  return reply;
}

absl::StatusOr<v1::DeregisterReply> Catalog::Deregister(const v1::DeregisterRequest& req,
                                                        Txn* txn) {
  auto found = CheckIncarnation(req.host_id(), req.incarnation());
  if (!found.ok()) return found.status();
  Host* host = *found;
  SnapshotHost(*host, txn);
  v1::DeregisterReply reply;
  reply.set_replicas_dropped(DropReplicasOf(host->record.host_number(), txn));
  host->record.set_state(v1::HOST_STATE_LEFT);
  host->syncing = false;
  SaveHost(*host, txn);
  return reply;
}

std::vector<uint64_t> Catalog::HostsByState() const {
  std::vector<uint64_t> n(v1::HostState_ARRAYSIZE, 0);
  for (const auto& h : hosts_) {
    if (h != nullptr && !h->pending) n[h->record.state()]++;
  }
  return n;
}

// ---------------------------------------------------------------------------
// Replicas

uint64_t Catalog::ReplicaDigestOf(const Host& host, std::string_view key,
                                  const ReplicaRec& r) const {
  return ReplicaDigest(key, r.generation, host.tier_names[r.tier], r.size, r.checksum,
                       (r.flags & kHasChecksum) != 0);
}

void Catalog::AddToHost(Host& host, std::string_view key, const ReplicaRec& r, int sign) {
  host.digest ^= ReplicaDigestOf(host, key, r);
  if (sign > 0) {
    host.replicas++;
    host.replica_bytes += r.size;
    replica_count_++;
  } else {
    host.replicas--;
    host.replica_bytes -= r.size;
    replica_count_--;
  }
}

Catalog::ReplicaRec* Catalog::FindReplica(std::string_view key, uint64_t generation,
                                          uint32_t host) {
  auto it = keys_.find(AV(key));
  if (it == keys_.end()) return nullptr;
  for (ReplicaRec& r : it->second) {
    if (r.generation == generation && r.host == host) return &r;
  }
  return nullptr;
}

void Catalog::InsertReplica(std::string_view key, const ReplicaRec& rec, Txn* txn) {
  KeyEntry& entry = keys_[AV(key)];
  ReplicaRec r = rec;
  if (txn != nullptr) r.flags |= kPending;
  auto pos = std::find_if(entry.begin(), entry.end(), [&](const ReplicaRec& e) {
    return e.generation < r.generation || (e.generation == r.generation && e.host > r.host);
  });
  entry.insert(pos, r);
  Host& host = *HostByNumber(r.host);
  AddToHost(host, key, r, +1);
  if (txn == nullptr) return;
  catalog::ReplicaRecord record;
  record.set_tier(host.tier_names[r.tier]);
  record.set_size(r.size);
  record.set_checksum(r.checksum);
  record.set_has_checksum((r.flags & kHasChecksum) != 0);
  txn->batch.Put(ReplicaKey(key, r.generation, r.host), record.SerializeAsString());
  std::string k(key);
  uint64_t gen = r.generation;
  uint32_t h = r.host;
  txn->undo_.push_back([this, k, gen, h] { EraseReplica(k, gen, h, nullptr); });
  txn->commit_.push_back([this, k, gen, h] {
    if (ReplicaRec* p = FindReplica(k, gen, h)) p->flags &= ~kPending;
  });
}

void Catalog::EraseReplica(std::string_view key, uint64_t generation, uint32_t host, Txn* txn) {
  auto it = keys_.find(AV(key));
  if (it == keys_.end()) return;
  KeyEntry& entry = it->second;
  auto pos = std::find_if(entry.begin(), entry.end(), [&](const ReplicaRec& e) {
    return e.generation == generation && e.host == host;
  });
  if (pos == entry.end()) return;
  ReplicaRec old = *pos;
  AddToHost(*HostByNumber(host), key, old, -1);
  entry.erase(pos);
  if (entry.empty()) keys_.erase(it);
  if (txn == nullptr) return;
  txn->batch.Delete(ReplicaKey(key, generation, host));
  old.flags &= ~kPending;
  txn->undo_.push_back([this, k = std::string(key), old] { InsertReplica(k, old, nullptr); });
}

void Catalog::UpdateReplica(std::string_view key, ReplicaRec* rec, const ReplicaRec& now,
                            Txn* txn) {
  Host& host = *HostByNumber(rec->host);
  ReplicaRec old = *rec;
  AddToHost(host, key, old, -1);
  rec->tier = now.tier;
  rec->size = now.size;
  rec->checksum = now.checksum;
  rec->flags = static_cast<uint8_t>((rec->flags & kPending) | (now.flags & kHasChecksum));
  rec->sync_mark = now.sync_mark;
  AddToHost(host, key, *rec, +1);
  if (txn == nullptr) return;
  catalog::ReplicaRecord record;
  record.set_tier(host.tier_names[rec->tier]);
  record.set_size(rec->size);
  record.set_checksum(rec->checksum);
  record.set_has_checksum((rec->flags & kHasChecksum) != 0);
  txn->batch.Put(ReplicaKey(key, rec->generation, rec->host), record.SerializeAsString());
  txn->undo_.push_back([this, k = std::string(key), old] {
    ReplicaRec* p = FindReplica(k, old.generation, old.host);
    if (p != nullptr) UpdateReplica(k, p, old, nullptr);
  });
}

uint64_t Catalog::DropReplicasOf(uint32_t host, Txn* txn) {
  std::vector<std::pair<std::string, uint64_t>> doomed;
  for (const auto& [key, entry] : keys_) {
    for (const ReplicaRec& r : entry) {
      if (r.host == host) doomed.emplace_back(key, r.generation);
    }
  }
  for (const auto& [key, gen] : doomed) EraseReplica(key, gen, host, txn);
  if (Host* h = HostByNumber(host)) {
    for (const auto& [id, c] : h->conflicted) h->digest ^= c.digest;
    h->conflicted.clear();
  }
  return doomed.size();
}

namespace {

absl::Status ValidateReported(const v1::Replica& r, std::string_view what) {
  if (absl::Status s = ValidateReplicaRef(r.key(), r.generation(), what); !s.ok()) return s;
  if (r.size() == 0) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: size of {} is 0; objects hold at least one byte", what, QuoteKey(r.key())));
  }
  if (r.size() > (1ull << 50)) {
    return absl::InvalidArgumentError(
        fmt::format("{}: size {} of {} exceeds 1 PiB", what, r.size(), QuoteKey(r.key())));
  }
  return ValidateTierName(r.tier(), what);
}

}  // namespace

void Catalog::ApplyReported(Host& host, const v1::Replica& r, uint16_t mark, Txn* txn,
                            v1::ReconcileReport* report) {
  uint32_t number = host.record.host_number();
  // A tier the host did not register: validated by the caller.
  ReplicaRec now;
  now.generation = r.generation();
  now.size = r.size();
  now.checksum = r.has_checksum() ? r.checksum() : 0;
  now.host = number;
  now.tier = *TierIndex(host, r.tier(), /*add=*/false, txn);
  now.flags = r.has_checksum() ? kHasChecksum : 0;
  now.sync_mark = mark;
  auto it = keys_.find(AV(r.key()));
  if (it != keys_.end()) {
    for (const ReplicaRec& other : it->second) {
      if (other.generation != r.generation() || other.host == number) continue;
      bool both = (other.flags & kHasChecksum) && r.has_checksum();
      if (other.size != r.size() || (both && other.checksum != r.checksum())) {
        uint64_t d = ReplicaDigest(r.key(), r.generation(), r.tier(), r.size(), r.checksum(),
                                   r.has_checksum());
        auto [slot, fresh] = host.conflicted.try_emplace(ConflictId(r.key(), r.generation()));
        if (!fresh) host.digest ^= slot->second.digest;
        slot->second.digest = d;
        slot->second.sync_mark = mark;
        host.digest ^= d;
        counters_.conflicts++;
        report->set_conflicts(report->conflicts() + 1);
        if (static_cast<size_t>(report->conflicted_size()) < kMaxConflictsReported) {
          auto* c = report->add_conflicted();
          c->set_key(r.key());
          c->set_generation(r.generation());
        }
        return;
      }
    }
  }
  RaiseFloor(r.generation(), txn);
  ReplicaRec* mine = FindReplica(r.key(), r.generation(), number);
  if (mine == nullptr) {
    InsertReplica(r.key(), now, txn);
    report->set_added(report->added() + 1);
  } else if (mine->tier != now.tier || mine->size != now.size || mine->checksum != now.checksum ||
             (mine->flags & kHasChecksum) != (now.flags & kHasChecksum)) {
    UpdateReplica(r.key(), mine, now, txn);
    report->set_updated(report->updated() + 1);
  } else {
    mine->sync_mark = mark;  // memory only; a rollback leaves a harmless newer mark
    report->set_kept(report->kept() + 1);
  }
}

absl::StatusOr<v1::SyncReply> Catalog::SyncChunk(const v1::InventoryChunk& chunk, bool first,
                                                 Txn* txn) {
  auto found = CheckIncarnation(chunk.host_id(), chunk.incarnation());
  if (!found.ok()) return found.status();
  Host* host = *found;
  if (!first && !host->syncing) {
    return absl::FailedPreconditionError(
        fmt::format("host '{}': inventory chunk outside a sync", chunk.host_id()));
  }
  for (int i = 0; i < chunk.replicas_size(); ++i) {
    const v1::Replica& r = chunk.replicas(i);
    std::string what = fmt::format("host '{}' inventory replicas[{}]", chunk.host_id(), i);
    if (absl::Status s = ValidateReported(r, what); !s.ok()) return s;
    if (!TierIndex(*host, r.tier(), /*add=*/false, nullptr).ok()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: host '{}' registered no tier '{}'", what, chunk.host_id(), r.tier()));
    }
  }
  SnapshotHost(*host, txn);
  if (first) {
    host->sync_round++;
    host->syncing = true;
    host->sync_report = v1::ReconcileReport();
  }
  for (const v1::Replica& r : chunk.replicas()) {
    ApplyReported(*host, r, host->sync_round, txn, &host->sync_report);
  }
  v1::SyncReply reply;
  if (chunk.last()) {
    uint32_t number = host->record.host_number();
    std::vector<std::pair<std::string, uint64_t>> stale;
    for (const auto& [key, entry] : keys_) {
      for (const ReplicaRec& r : entry) {
        if (r.host == number && r.sync_mark != host->sync_round)
          stale.emplace_back(key, r.generation);
      }
    }
    for (const auto& [key, gen] : stale) EraseReplica(key, gen, number, txn);
    for (auto it = host->conflicted.begin(); it != host->conflicted.end();) {
      if (it->second.sync_mark != host->sync_round) {
        host->digest ^= it->second.digest;
        host->conflicted.erase(it++);
      } else {
        ++it;
      }
    }
    host->sync_report.set_removed(host->sync_report.removed() + stale.size());
    host->syncing = false;
    host->record.set_publish_seq(chunk.publish_seq());
    SaveHost(*host, txn);
    counters_.reconcile_added += host->sync_report.added();
    counters_.reconcile_removed += host->sync_report.removed();
    counters_.reconcile_updated += host->sync_report.updated();
  }
  *reply.mutable_report() = host->sync_report;
  *reply.mutable_registry_version() = VersionOf(*host);
  return reply;
}

absl::StatusOr<v1::PublishReply> Catalog::Publish(const v1::PublishRequest& req, Txn* txn) {
  auto found = CheckIncarnation(req.host_id(), req.incarnation());
  if (!found.ok()) return found.status();
  Host* host = *found;
  v1::PublishReply reply;
  if (host->syncing) {
    return absl::FailedPreconditionError(fmt::format(
        "host '{}': publication {} during an inventory sync", req.host_id(), req.seq()));
  }
  if (req.seq() <= host->record.publish_seq()) {  // a retry of an applied publication
    *reply.mutable_registry_version() = VersionOf(*host);
    reply.set_generation_floor(meta_.generation_floor());
    return reply;
  }
  if (req.seq() != host->record.publish_seq() + 1) {
    return absl::FailedPreconditionError(
        fmt::format("host '{}': publication gap: expected seq {}, got {}; sync the inventory",
                    req.host_id(), host->record.publish_seq() + 1, req.seq()));
  }
  for (int i = 0; i < req.added_size(); ++i) {
    std::string what =
        fmt::format("host '{}' publication {} added[{}]", req.host_id(), req.seq(), i);
    if (absl::Status s = ValidateReported(req.added(i), what); !s.ok()) return s;
    if (!TierIndex(*host, req.added(i).tier(), /*add=*/false, nullptr).ok()) {
      return absl::InvalidArgumentError(fmt::format("{}: host '{}' registered no tier '{}'", what,
                                                    req.host_id(), req.added(i).tier()));
    }
  }
  for (int i = 0; i < req.removed_size(); ++i) {
    std::string what =
        fmt::format("host '{}' publication {} removed[{}]", req.host_id(), req.seq(), i);
    const auto& r = req.removed(i);
    if (absl::Status s = ValidateReplicaRef(r.key(), r.generation(), what); !s.ok()) return s;
  }
  SnapshotHost(*host, txn);
  v1::ReconcileReport report;
  for (const v1::Replica& r : req.added()) ApplyReported(*host, r, host->sync_round, txn, &report);
  for (const v1::ReplicaRef& r : req.removed()) {
    if (!EraseConflicted(*host, r.key(), r.generation())) {
      EraseReplica(r.key(), r.generation(), host->record.host_number(), txn);
    }
  }
  host->record.set_publish_seq(req.seq());
  SaveHost(*host, txn);
  *reply.mutable_conflicted() = report.conflicted();
  *reply.mutable_registry_version() = VersionOf(*host);
  reply.set_generation_floor(meta_.generation_floor());
  return reply;
}

// ---------------------------------------------------------------------------
// Lookup and transfers

std::vector<const Catalog::ReplicaRec*> Catalog::Ranked(std::string_view key, uint64_t generation,
                                                        std::string_view requester,
                                                        uint64_t* chosen) const {
  std::vector<const ReplicaRec*> out;
  *chosen = 0;
  auto it = keys_.find(AV(key));
  if (it == keys_.end()) return out;
  for (const ReplicaRec& r : it->second) {
    if (r.flags & kPending) continue;
    const Host* h = HostByNumber(r.host);
    if (h == nullptr || h->pending || !Offered(h->record.state())) continue;
    if (generation != 0 && r.generation != generation) continue;
    if (*chosen == 0) *chosen = r.generation;  // newest first
    if (r.generation != *chosen) break;
    out.push_back(&r);
  }
  auto tier_rank = [](const Host& h, const ReplicaRec& r) {
    const std::string& name = h.tier_names[r.tier];
    for (int i = 0; i < h.record.tiers_size(); ++i) {
      if (h.record.tiers(i).name() == name) return i;
    }
    return h.record.tiers_size();
  };
  std::stable_sort(out.begin(), out.end(), [&](const ReplicaRec* a, const ReplicaRec* b) {
    const Host& ha = *HostByNumber(a->host);
    const Host& hb = *HostByNumber(b->host);
    bool la = ha.record.host_id() == requester, lb = hb.record.host_id() == requester;
    if (la != lb) return la;
    int sa = StateRank(ha.record.state()), sb = StateRank(hb.record.state());
    if (sa != sb) return sa < sb;
    int ta = tier_rank(ha, *a), tb = tier_rank(hb, *b);
    if (ta != tb) return ta < tb;
    if (ha.active_transfers != hb.active_transfers)
      return ha.active_transfers < hb.active_transfers;
    return a->host < b->host;
  });
  return out;
}

void Catalog::FillLocation(const Host& host, const ReplicaRec& r, v1::Location* loc) const {
  loc->set_host_id(host.record.host_id());
  loc->set_advertise(host.record.advertise());
  loc->set_host_state(host.record.state());
  loc->set_tier(host.tier_names[r.tier]);
  loc->set_size(r.size);
  loc->set_checksum(r.checksum);
  loc->set_has_checksum((r.flags & kHasChecksum) != 0);
  loc->set_active_transfers(host.active_transfers);
}

absl::StatusOr<v1::LocateReply> Catalog::Locate(const v1::LocateRequest& req) const {
  if (absl::Status s = store::ValidateKey(req.key()); !s.ok()) return s;
  if (req.generation() > kMaxGeneration) {
    return absl::InvalidArgumentError(fmt::format("generation {} exceeds 2^62", req.generation()));
  }
  uint64_t chosen = 0;
  auto ranked = Ranked(req.key(), req.generation(), req.requester_host(), &chosen);
  if (ranked.empty()) {
    if (req.generation() != 0) {
      return absl::NotFoundError(fmt::format("{} generation {} has no live replica",
                                             QuoteKey(req.key()), req.generation()));
    }
    return absl::NotFoundError(fmt::format("{} has no live replica", QuoteKey(req.key())));
  }
  v1::LocateReply reply;
  reply.set_key(req.key());
  reply.set_generation(chosen);
  for (const ReplicaRec* r : ranked) {
    if (req.max_replicas() != 0 && reply.locations_size() >= static_cast<int>(req.max_replicas())) {
      break;
    }
    FillLocation(*HostByNumber(r->host), *r, reply.add_locations());
  }
  return reply;
}

absl::StatusOr<v1::ClaimTransferReply> Catalog::ClaimTransfer(const v1::ClaimTransferRequest& req,
                                                              Txn* txn) {
  if (absl::Status s = store::ValidateKey(req.key()); !s.ok()) return s;
  if (req.generation() > kMaxGeneration) {
    return absl::InvalidArgumentError(fmt::format("generation {} exceeds 2^62", req.generation()));
  }
  auto target = FindHost(req.target_host());
  if (!target.ok()) return target.status();
  if (!req.prefer_host().empty()) {
    if (absl::Status s = ValidateHostId(req.prefer_host()); !s.ok()) return s;
  }
  uint64_t chosen = 0;
  auto ranked = Ranked(req.key(), req.generation(), "", &chosen);
  const ReplicaRec* pick = nullptr;
  size_t sources = 0;
  for (const ReplicaRec* r : ranked) {
    const Host& h = *HostByNumber(r->host);
    if (h.record.host_id() == req.target_host()) continue;
    sources++;
    if (h.active_transfers >= options_.max_transfers_per_source) continue;
    if (pick == nullptr || h.record.host_id() == req.prefer_host()) pick = r;
    if (h.record.host_id() == req.prefer_host()) break;
  }
  if (sources == 0) {
    return absl::NotFoundError(
        fmt::format("{}{} has no live replica outside host '{}'", QuoteKey(req.key()),
                    req.generation() ? fmt::format(" generation {}", req.generation()) : "",
                    req.target_host()));
  }
  if (pick == nullptr) {
    counters_.claims_refused++;
    return absl::ResourceExhaustedError(fmt::format(
        "every source of {} generation {} ({} hosts) has {} transfers in flight, the cap; retry "
        "later",
        QuoteKey(req.key()), chosen, sources, options_.max_transfers_per_source));
  }
  Host& source = *HostByNumber(pick->host);
  SnapshotMeta(txn);
  SnapshotHost(source, txn);
  uint64_t id = meta_.next_claim_id();
  meta_.set_next_claim_id(id + 1);
  SaveMeta(txn);
  Claim claim;
  claim.record.set_key(req.key());
  claim.record.set_generation(chosen);
  claim.record.set_source_host(pick->host);
  claim.record.set_target_host(req.target_host());
  claim.record.set_expires_unix_ms(
      WallMs() + static_cast<uint64_t>(duration_cast<milliseconds>(options_.transfer_ttl).count()));
  claim.expires = clock_->Now() + options_.transfer_ttl;
  source.active_transfers++;
  if (txn != nullptr) {
    txn->batch.Put(ClaimKey(id), claim.record.SerializeAsString());
    txn->undo_.push_back([this, id] { claims_.erase(id); });
  }
  v1::ClaimTransferReply reply;
  reply.set_claim_id(id);
  reply.set_generation(chosen);
  reply.set_expires_unix_ms(claim.record.expires_unix_ms());
  FillLocation(source, *pick, reply.mutable_source());
  claims_[id] = std::move(claim);
  return reply;
}

absl::Status Catalog::CompleteTransfer(const v1::CompleteTransferRequest& req, Txn* txn) {
  auto it = claims_.find(req.claim_id());
  if (it == claims_.end()) {
    return absl::NotFoundError(fmt::format(
        "transfer claim {} is unknown: completed, lapsed or never issued", req.claim_id()));
  }
  Claim claim = it->second;
  claims_.erase(it);
  if (Host* src = HostByNumber(claim.record.source_host())) {
    SnapshotHost(*src, txn);
    if (src->active_transfers > 0) src->active_transfers--;
  }
  if (txn != nullptr) {
    txn->batch.Delete(ClaimKey(req.claim_id()));
    txn->undo_.push_back([this, id = req.claim_id(), claim] { claims_[id] = claim; });
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Liveness

void Catalog::Tick(Txn* txn) {
  Clock::TimePoint now = clock_->Now();
  for (auto& h : hosts_) {
    if (h == nullptr || h->pending) continue;
    HostRecord& r = h->record;
    v1::HostState before = r.state();
    Clock::TimePoint since = before == v1::HOST_STATE_UNKNOWN ? loaded_at_ : h->last_heartbeat;
    if (before == v1::HOST_STATE_ALIVE && now - since >= options_.suspect_after &&
        now - since < options_.dead_after) {
      SnapshotHost(*h, txn);
      r.set_state(v1::HOST_STATE_SUSPECT);
      counters_.hosts_suspected++;
      SaveHost(*h, txn);
    } else if ((before == v1::HOST_STATE_ALIVE || before == v1::HOST_STATE_SUSPECT ||
                before == v1::HOST_STATE_UNKNOWN) &&
               now - since >= options_.dead_after) {
      SnapshotHost(*h, txn);
      r.set_state(v1::HOST_STATE_DEAD);
      r.set_dead_unix_ms(WallMs());
      h->syncing = false;
      counters_.hosts_died++;
      SaveHost(*h, txn);
    } else if (before == v1::HOST_STATE_DEAD && h->replicas > 0 &&
               WallMs() - r.dead_unix_ms() >=
                   static_cast<uint64_t>(
                       duration_cast<milliseconds>(options_.replica_grace).count())) {
      SnapshotHost(*h, txn);
      counters_.replicas_dropped_dead += DropReplicasOf(r.host_number(), txn);
    }
  }
  std::vector<uint64_t> lapsed;
  for (const auto& [id, claim] : claims_) {
    if (claim.expires <= now) lapsed.push_back(id);
  }
  for (uint64_t id : lapsed) {
    v1::CompleteTransferRequest req;
    req.set_claim_id(id);
    (void)CompleteTransfer(req, txn);
    counters_.claims_expired++;
  }
}

// ---------------------------------------------------------------------------
// Operator view

v1::QuerySystemReply Catalog::QuerySystem() const {
  v1::QuerySystemReply reply;
  reply.set_cluster_id(meta_.cluster_id());
  reply.set_registry_epoch(meta_.epoch());
  reply.set_keys(keys_.size());
  reply.set_transfers_in_flight(claims_.size());
  reply.set_generation_floor(meta_.generation_floor());
  uint64_t replicas = 0;
  for (const auto& h : hosts_) {
    if (h == nullptr || h->pending) continue;
    const HostRecord& r = h->record;
    v1::HostInfo* info = reply.add_hosts();
    info->set_host_id(r.host_id());
    info->set_host_number(r.host_number());
    info->set_advertise(r.advertise());
    info->set_state(r.state());
    *info->mutable_tiers() = r.tiers();
    info->set_replicas(h->replicas);
    info->set_replica_bytes(h->replica_bytes);
    info->set_last_heartbeat_unix_ms(h->last_heartbeat_unix_ms);
    info->set_registered_unix_ms(r.registered_unix_ms());
    info->set_incarnation(r.incarnation());
    info->set_daemon_version(r.daemon_version());
    info->set_active_transfers(h->active_transfers);
    *info->mutable_version() = VersionOf(*h);
    replicas += h->replicas;
  }
  reply.set_replicas(replicas);
  return reply;
}

}  // namespace cistern::catalog

#include "src/cluster/agent.h"

#include <algorithm>
#include <random>
#include <utility>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "src/catalog/records.h"
#include "src/common/fmt_absl.h"

namespace cistern::cluster {
namespace {

namespace v1 = registry::v1;
using std::chrono::milliseconds;

constexpr uint32_t kGenerationStride = 65536;

uint64_t DigestOf(const store::ObjectInfo& info) {
  return catalog::ReplicaDigest(info.key, info.generation, info.tier, info.size, info.checksum,
                                info.has_checksum);
}

v1::Replica ReplicaOf(const store::ObjectInfo& info) {
  v1::Replica r;
  r.set_key(info.key);
  r.set_generation(info.generation);
  r.set_tier(info.tier);
  r.set_size(info.size);
  r.set_checksum(info.has_checksum ? info.checksum : 0);
  r.set_has_checksum(info.has_checksum);
  return r;
}

const char* StateName(int s) {
  static const char* names[] = {"registering", "syncing", "serving",
                                "unreachable", "refused", "stopped"};
  return names[s];
}

}  // namespace

ClusterAgent::ClusterAgent(AgentOptions options, store::ObjectStore* store)
    : options_(std::move(options)), store_(store) {}

ClusterAgent::~ClusterAgent() { Stop(/*deregister=*/false); }

std::string ClusterAgent::ExcludedId(const std::string& key, uint64_t generation) {
  return fmt::format("{}\n{}", generation, key);
}

absl::Status ClusterAgent::Start() {
  auto client = RegistryClient::Create(options_.registry);
  if (!client.ok()) return client.status();
  client_ = std::move(*client);
  store_->SetObserver(this);
  // The baseline: what the host holds now. Changes observed from here on
  // are queued; the first registration says whether the registry agrees.
  store_->SnapshotVisible([this](const std::vector<store::ObjectInfo>& all) {
    MutexLock lock(&mu_);
    queue_.clear();
    running_count_ = 0;
    running_digest_ = 0;
    local_only_.clear();
    for (const auto& info : all) {
      if (info.local_only) {
        local_only_.insert(ExcludedId(info.key, info.generation));
      } else {
        running_count_++;
        running_digest_ ^= DigestOf(info);
      }
    }
  });
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void ClusterAgent::Stop(bool deregister) {
  {
    MutexLock lock(&mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    wake_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  store_->SetObserver(nullptr);
  bool registered;
  {
    MutexLock lock(&mu_);
    registered = registered_;
    state_ = State::kStopped;
  }
  if (deregister && registered && client_ != nullptr) {
    v1::DeregisterRequest req;
    req.set_host_id(options_.host_id);
    req.set_incarnation(options_.incarnation);
    auto r = client_->Deregister(req);
    if (r.ok()) {
      spdlog::info("cluster: host '{}' left the cluster; the registry dropped {} replicas",
                   options_.host_id, r->replicas_dropped());
    } else {
      spdlog::warn("cluster: could not deregister: {}", r.status().message());
    }
  }
}

// --- the store's changes (its lock held) -------------------------------------

void ClusterAgent::OnVisible(const store::ObjectInfo& info) {
  MutexLock lock(&mu_);
  if (info.local_only) {
    local_only_.insert(ExcludedId(info.key, info.generation));
    return;
  }
  running_count_++;
  running_digest_ ^= DigestOf(info);
  if (queue_.empty()) oldest_queued_ = Clock::Real()->Now();
  queue_.push_back({true, ReplicaOf(info), running_count_, running_digest_});
  if (queue_.size() >= options_.publish_batch) wake_.Signal();
}

void ClusterAgent::OnGone(const store::ObjectInfo& info) {
  MutexLock lock(&mu_);
  if (local_only_.erase(ExcludedId(info.key, info.generation)) > 0) return;
  running_count_--;
  running_digest_ ^= DigestOf(info);
  Change c;
  c.added = false;
  c.replica.set_key(info.key);
  c.replica.set_generation(info.generation);
  c.count_after = running_count_;
  c.digest_after = running_digest_;
  if (queue_.empty()) oldest_queued_ = Clock::Real()->Now();
  queue_.push_back(std::move(c));
  if (queue_.size() >= options_.publish_batch) wake_.Signal();
}

// --- the agent's thread ------------------------------------------------------

void ClusterAgent::Run() {
  Clock::TimePoint next_heartbeat = Clock::Real()->Now();
  for (;;) {
    bool registered, sync, heartbeat = false, publish = false;
    {
      MutexLock lock(&mu_);
      if (stopping_) return;
      registered = registered_;
      sync = need_sync_;
      if (registered && !sync) {
        Clock::TimePoint now = Clock::Real()->Now();
        Clock::TimePoint publish_at = queue_.empty()
                                          ? Clock::TimePoint::max()
                                          : (queue_.size() >= options_.publish_batch
                                                 ? now
                                                 : oldest_queued_ + options_.publish_delay);
        heartbeat = now >= next_heartbeat;
        publish = now >= publish_at;
        if (!heartbeat && !publish) {
          Clock::TimePoint until = std::min(next_heartbeat, publish_at);
          wake_.WaitFor(&mu_, until - now);
          continue;
        }
      }
    }
    bool ok;
    if (!registered) {
      ok = RegisterHost();
      next_heartbeat = Clock::Real()->Now();
    } else if (sync) {
      ok = SyncInventory();
    } else if (heartbeat) {
      ok = SendHeartbeat();
      MutexLock lock(&mu_);
      next_heartbeat = Clock::Real()->Now() + heartbeat_interval_;
    } else {
      ok = PublishSome();
    }
    if (!ok) {
      Backoff();
    } else {
      MutexLock lock(&mu_);
      backoff_ = milliseconds(0);
    }
  }
}

void ClusterAgent::Backoff() {
  MutexLock lock(&mu_);
  backoff_ = backoff_.count() == 0 ? options_.initial_backoff
                                   : std::min(options_.max_backoff, backoff_ * 2);
  static thread_local std::mt19937_64 rng(std::random_device{}());
  // Jitter: 75%..125% of the backoff, so that daemons restarted together
  // do not retry together.
  auto jittered =
      milliseconds(static_cast<int64_t>(static_cast<double>(backoff_.count()) *
                                        std::uniform_real_distribution<double>(0.75, 1.25)(rng)));
  Clock::TimePoint until = Clock::Real()->Now() + jittered;
  while (!stopping_ && Clock::Real()->Now() < until) {
    wake_.WaitFor(&mu_, until - Clock::Real()->Now());
  }
}

void ClusterAgent::Fail(const absl::Status& s, bool reregister) {
  MutexLock lock(&mu_);
  State before = state_;
  last_error_ = s.ToString();
  switch (s.code()) {
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kInvalidArgument:
      state_ = State::kRefused;
      registered_ = false;
      break;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
      state_ = reregister ? State::kRegistering : State::kRefused;
      registered_ = false;
      break;
    default:
      state_ = State::kUnreachable;
      break;
  }
  if (state_ != before) {
    spdlog::warn("cluster: {} -> {}: {}", StateName(static_cast<int>(before)),
                 StateName(static_cast<int>(state_)), s.message());
  }
}

std::vector<v1::TierUsage> ClusterAgent::TierUsage() const {
  std::vector<v1::TierUsage> out;
  for (const auto& t : store_->Stats().tiers) {
    v1::TierUsage u;
    u.set_name(t.name);
    u.set_capacity_bytes(t.capacity_bytes);
    u.set_used_bytes(std::min(t.used_bytes, t.capacity_bytes));
    out.push_back(std::move(u));
  }
  return out;
}

v1::StateVersion ClusterAgent::AckedVersion() const {
  v1::StateVersion v;
  v.set_count(acked_count_);
  v.set_digest(acked_digest_);
  v.set_publish_seq(acked_seq_);
  return v;
}

bool ClusterAgent::RegisterHost() {
  v1::RegisterRequest req;
  req.set_host_id(options_.host_id);
  req.set_advertise(options_.advertise);
  req.set_incarnation(options_.incarnation);
  req.set_daemon_version(options_.daemon_version);
  for (auto& t : TierUsage()) *req.add_tiers() = std::move(t);
  req.set_max_generation(store_->max_generation());
  size_t covered = 0;  // the queued changes the version includes
  {
    MutexLock lock(&mu_);
    req.mutable_version()->set_count(running_count_);
    req.mutable_version()->set_digest(running_digest_);
    covered = queue_.size();
  }
  auto reply = client_->Register(req);
  if (!reply.ok()) {
    // A refusal here (wrong cluster, token, stale incarnation) is not cured
    // by registering again at once: back off like an outage.
    Fail(reply.status(), /*reregister=*/false);
    return false;
  }
  store_->SetGenerationScheme(kGenerationStride, reply->host_number() % kGenerationStride);
  store_->RaiseGenerationFloor(reply->generation_floor());
  MutexLock lock(&mu_);
  registered_ = true;
  registrations_++;
  host_number_ = reply->host_number();
  registry_epoch_ = reply->registry_epoch();
  generation_floor_ = reply->generation_floor();
  heartbeat_interval_ = milliseconds(std::max<uint64_t>(10, reply->heartbeat_interval_ms()));
  last_contact_unix_ms_ = UnixMs();
  last_error_.clear();
  if (reply->sync_required()) {
    need_sync_ = true;
    state_ = State::kSyncing;
  } else {
    // The registry's view is the host's state as registered: the changes
    // queued before the registration are no news (later ones still are).
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(covered));
    if (!queue_.empty()) oldest_queued_ = Clock::Real()->Now();
    acked_count_ = req.version().count();
    acked_digest_ = req.version().digest();
    acked_seq_ = reply->registry_version().publish_seq();
    state_ = State::kServing;
  }
  spdlog::info("cluster: registered with {} as host '{}' (number {}, epoch {}){}",
               options_.registry.address, options_.host_id, host_number_, registry_epoch_,
               need_sync_ ? "; sending the inventory" : "; the registry's view matches");
  if (!need_sync_ && options_.on_published) options_.on_published();
  return true;
}

bool ClusterAgent::SyncInventory() {
  std::vector<v1::Replica> replicas;
  uint64_t count = 0, digest = 0, seq = 0;
  // The snapshot and the queue's reset happen under the store's lock: every
  // later change is queued on top of exactly this state.
  store_->SnapshotVisible([&](const std::vector<store::ObjectInfo>& all) {
    MutexLock lock(&mu_);
    state_ = State::kSyncing;
    queue_.clear();
    local_only_.clear();
    running_count_ = 0;
    running_digest_ = 0;
    for (const auto& info : all) {
      if (info.local_only) {
        local_only_.insert(ExcludedId(info.key, info.generation));
        continue;
      }
      running_count_++;
      running_digest_ ^= DigestOf(info);
      replicas.push_back(ReplicaOf(info));
    }
    count = running_count_;
    digest = running_digest_;
    seq = acked_seq_;
  });
  size_t next = 0;
  size_t chunks =
      std::max<size_t>(1, (replicas.size() + options_.sync_chunk - 1) / options_.sync_chunk);
  size_t sent = 0;
  auto reply = client_->SyncInventory(
      [&](v1::InventoryChunk* chunk) {
        if (sent == chunks) return false;
        chunk->set_host_id(options_.host_id);
        chunk->set_incarnation(options_.incarnation);
        size_t end = std::min(replicas.size(), next + options_.sync_chunk);
        for (; next < end; ++next) *chunk->add_replicas() = std::move(replicas[next]);
        chunk->set_last(++sent == chunks);
        chunk->set_publish_seq(seq);
        return true;
      },
      chunks);
  if (!reply.ok()) {
    Fail(reply.status(), /*reregister=*/true);
    return false;
  }
  MutexLock lock(&mu_);
  need_sync_ = false;
  syncs_++;
  acked_count_ = count;
  acked_digest_ = digest;
  acked_seq_ = seq;
  last_contact_unix_ms_ = UnixMs();
  state_ = State::kServing;
  if (options_.on_published) options_.on_published();
  const auto& r = reply->report();
  spdlog::info(
      "cluster: inventory of {} replicas sent: {} added, {} removed, {} updated, {} "
      "kept, {} conflicts",
      count, r.added(), r.removed(), r.updated(), r.kept(), r.conflicts());
  if (reply->registry_version().count() != count || reply->registry_version().digest() != digest) {
    spdlog::warn("cluster: after the sync the registry counts {} replicas, this host {}",
                 reply->registry_version().count(), count);
  }
  return true;
}

bool ClusterAgent::SendHeartbeat() {
  v1::HeartbeatRequest req;
  req.set_host_id(options_.host_id);
  req.set_incarnation(options_.incarnation);
  for (auto& t : TierUsage()) *req.add_tiers() = std::move(t);
  {
    MutexLock lock(&mu_);
    *req.mutable_version() = AckedVersion();
  }
  auto reply = client_->Heartbeat(req);
  if (!reply.ok()) {
    Fail(reply.status(), /*reregister=*/true);
    return false;
  }
  store_->RaiseGenerationFloor(reply->generation_floor());
  MutexLock lock(&mu_);
  last_contact_unix_ms_ = UnixMs();
  generation_floor_ = reply->generation_floor();
  if (state_ == State::kUnreachable) {
    spdlog::info("cluster: the registry answers again");
    state_ = State::kServing;
    last_error_.clear();
  }
  if (reply->registry_epoch() != registry_epoch_) registry_epoch_ = reply->registry_epoch();
  if (reply->sync_required()) {
    spdlog::warn("cluster: the registry's view of this host differs; sending the inventory");
    need_sync_ = true;
  }
  return true;
}

bool ClusterAgent::PublishSome() {
  v1::PublishRequest req;
  size_t n = 0;
  uint64_t count_after = 0, digest_after = 0;
  {
    MutexLock lock(&mu_);
    req.set_host_id(options_.host_id);
    req.set_incarnation(options_.incarnation);
    req.set_seq(acked_seq_ + 1);
    for (const Change& c : queue_) {
      if (n == options_.publish_batch) break;
      if (c.added) {
        *req.add_added() = c.replica;
      } else {
        auto* r = req.add_removed();
        r->set_key(c.replica.key());
        r->set_generation(c.replica.generation());
      }
      count_after = c.count_after;
      digest_after = c.digest_after;
      n++;
    }
  }
  if (n == 0) return true;
  auto reply = client_->Publish(req);
  if (!reply.ok()) {
    Fail(reply.status(), /*reregister=*/true);
    return false;
  }
  store_->RaiseGenerationFloor(reply->generation_floor());
  MutexLock lock(&mu_);
  // Only this thread removes from the queue (or resets it, in a sync).
  queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  if (!queue_.empty()) oldest_queued_ = Clock::Real()->Now();
  acked_seq_ = req.seq();
  acked_count_ = count_after;
  acked_digest_ = digest_after;
  published_ += n;
  generation_floor_ = reply->generation_floor();
  last_contact_unix_ms_ = UnixMs();
  if (state_ == State::kUnreachable) {
    state_ = State::kServing;
    last_error_.clear();
  }
  if (options_.on_published) options_.on_published();
  if (reply->conflicted_size() > 0) {
    spdlog::warn(
        "cluster: {} replicas conflict with another host's (same key and generation, "
        "other bytes) and stay local; first: '{}' generation {}",
        reply->conflicted_size(), reply->conflicted(0).key(), reply->conflicted(0).generation());
  }
  return true;
}

bool ClusterAgent::IsPublished(std::string_view key, uint64_t generation) const {
  MutexLock lock(&mu_);
  for (const Change& c : queue_) {
    if (c.added && c.replica.generation() == generation && c.replica.key() == key) return false;
  }
  return true;
}

std::string ClusterAgent::WhyLate() const {
  MutexLock lock(&mu_);
  std::string why = fmt::format("the cluster agent is {} ({} changes queued)",
                                StateName(static_cast<int>(state_)), queue_.size());
  if (!last_error_.empty()) why += "; last error: " + last_error_;
  return why;
}

void ClusterAgent::FillStatus(wire::ClusterStatus* out) const {
  MutexLock lock(&mu_);
  out->set_state(StateName(static_cast<int>(state_)));
  out->set_registry(options_.registry.address);
  out->set_host_id(options_.host_id);
  out->set_host_number(host_number_);
  out->set_registry_epoch(registry_epoch_);
  out->set_last_error(last_error_);
  out->set_last_contact_unix_ms(last_contact_unix_ms_);
  out->set_published(published_);
  out->set_pending(queue_.size());
  out->set_registrations(registrations_);
  out->set_syncs(syncs_);
  out->set_generation_floor(generation_floor_);
  out->set_incarnation(options_.incarnation);
}

}  // namespace cistern::cluster

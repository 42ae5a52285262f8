#include "src/cluster/peer.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>

#include "cistern/peer.pb.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "src/cluster/replicate.h"
#include "src/common/fmt_absl.h"
#include "src/common/quote.h"
#include "src/common/status_macros.h"
#include "src/store/checksum.h"
#include "src/store/key.h"
#include "src/store/layout.h"
#include "src/store/manifest.h"

namespace cistern::cluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// A status with `context` before its message, the code kept.
absl::Status Annotate(const absl::Status& s, std::string_view context) {
  return absl::Status(s.code(), fmt::format("{}: {}", context, s.message()));
}

}  // namespace

// ---------------------------------------------------------------------------
// Arriving

Arriving::~Arriving() {
  uint64_t lease = 0;
  {
    MutexLock lock(&mu);
    lease = sealed_lease;
  }
  if (lease != 0) store->Release(kPeerSession, lease).IgnoreError();
}

void Arriving::MarkArrived(uint64_t offset, uint64_t n) {
  MutexLock lock(&mu);
  islands[offset] = n;
  for (auto it = islands.begin(); it != islands.end() && it->first <= available;) {
    available = std::max(available, it->first + it->second);
    it = islands.erase(it);
  }
}

void Arriving::Fail(std::string reason, milliseconds wait) {
  MutexLock lock(&mu);
  state = State::kFailed;
  why = std::move(reason);
  auto deadline = steady_clock::now() + wait;
  while (readers > 0 && steady_clock::now() < deadline) {
    reads_done.WaitFor(&mu, Remaining(deadline));
  }
  if (readers > 0) {
    SPDLOG_WARN(
        "fetch: {}: {} relay reads still being sent as its block is freed; their "
        "pullers' checksums will refuse what they got",
        QuoteKey(key), readers);
  }
}

void Arriving::Complete(uint64_t lease) {
  MutexLock lock(&mu);
  state = State::kComplete;
  available = size;
  sealed_lease = lease;
}

// ---------------------------------------------------------------------------
// PeerServer

PeerServer::PeerServer(store::ObjectStore* store, std::vector<char*> tier_bases,
                       PeerServerOptions options)
    : store_(store), tier_bases_(std::move(tier_bases)), options_(options) {}

PeerServer::~PeerServer() {
  MutexLock lock(&mu_);
  while (!leases_.empty()) EndLocked(leases_.begin()->first);
}

absl::StatusOr<pv1::PeerReply> PeerServer::HandleCall(const pv1::PeerRequest& req) {
  pv1::PeerReply reply;
  switch (req.kind_case()) {
    case pv1::PeerRequest::kOpen: {
      ASSIGN_OR_RETURN(*reply.mutable_open(), Open(req.open()));
      break;
    }
    case pv1::PeerRequest::kClose: {
      MutexLock lock(&mu_);
      auto it = leases_.find(req.close().region());
      if (it == leases_.end() || it->second.closed) {
        return absl::NotFoundError(fmt::format(
            "peer close: region {} is not open (closed or expired)", req.close().region()));
      }
      if (it->second.reads > 0) {
        it->second.closed = true;
      } else {
        EndLocked(it->first);
      }
      reply.mutable_close();
      break;
    }
    case pv1::PeerRequest::kProgress: {
      ASSIGN_OR_RETURN(*reply.mutable_progress(), Progress(req.progress().region()));
      break;
    }
    case pv1::PeerRequest::kFetch:
    case pv1::PeerRequest::kFetchStatus: {
      FetchHooks hooks = EnterHooks();
      if (!hooks.fetch) {
        LeaveHooks();
        return absl::UnavailableError("peer: this host is starting or stopping");
      }
      absl::Status s;
      if (req.has_fetch()) {
        auto out = hooks.fetch(req.fetch());
        if (out.ok()) *reply.mutable_fetch() = *std::move(out);
        s = out.status();
      } else {
        *reply.mutable_fetch_status() = hooks.fetch_status(req.fetch_status());
      }
      LeaveHooks();
      RETURN_IF_ERROR(s);
      break;
    }
    default:
      return absl::InvalidArgumentError(
          "peer request: empty (none of open, close, progress, fetch, fetch_status)");
  }
  return reply;
}

void PeerServer::SetRemoteKeys(std::vector<std::string> rkeys) {
  MutexLock lock(&mu_);
  rkeys_ = std::move(rkeys);
}

void PeerServer::SetTransportAddress(std::string address) {
  MutexLock lock(&mu_);
  transport_address_ = std::move(address);
}

void PeerServer::SetFetchHooks(FetchHooks hooks) {
  MutexLock lock(&mu_);
  hooks_ = std::move(hooks);
  while (hook_calls_ > 0) hooks_idle_.Wait(&mu_);  // the old ones are no longer called
}

FetchHooks PeerServer::EnterHooks() {
  MutexLock lock(&mu_);
  ++hook_calls_;
  return hooks_;
}

void PeerServer::LeaveHooks() {
  MutexLock lock(&mu_);
  if (--hook_calls_ == 0) hooks_idle_.SignalAll();
}

absl::StatusOr<pv1::OpenReply> PeerServer::OpenArriving(const std::string& key, uint64_t generation,
                                                        milliseconds lease,
                                                        const std::string& requester) {
  FetchHooks hooks = EnterHooks();
  bool pending = false;
  std::shared_ptr<Arriving> a =
      hooks.arriving ? hooks.arriving(key, generation, &pending) : nullptr;
  LeaveHooks();
  if (a == nullptr) {
    if (pending) {  // Aborted: "again", unlike Unavailable (go elsewhere)
      return absl::AbortedError(fmt::format(
          "{} generation {} is queued to arrive here and has not started: open it again",
          QuoteKey(key), generation));
    }
    return absl::NotFoundError(fmt::format("{} generation {} is neither held nor arriving here",
                                           QuoteKey(key), generation));
  }
  {
    MutexLock al(&a->mu);
    if (a->state == Arriving::State::kFailed) {
      return absl::UnavailableError(fmt::format("{} generation {} failed to arrive here: {}",
                                                QuoteKey(key), generation, a->why));
    }
  }
  pv1::OpenReply reply = a->open_reply;
  reply.set_arriving(true);
  MutexLock lock(&mu_);
  reply.set_transport_address(transport_address_);
  uint64_t region = ++next_region_;
  Lease& l = leases_[region];
  l.payload = a->data;
  l.size = a->size;
  l.duration = lease;
  l.expires = steady_clock::now() + lease;
  l.arriving = std::move(a);
  reply.set_region(region);
  SPDLOG_DEBUG("peer: {} generation {} (arriving) opened as region {} for host '{}'", QuoteKey(key),
               generation, region, requester);
  return reply;
}

absl::StatusOr<pv1::ProgressReply> PeerServer::Progress(uint64_t region) {
  std::shared_ptr<Arriving> a;
  {
    MutexLock lock(&mu_);
    auto it = leases_.find(region);
    if (it == leases_.end() || it->second.closed) {
      return absl::NotFoundError(
          fmt::format("peer progress: region {} is not open (closed or expired)", region));
    }
    it->second.expires = steady_clock::now() + it->second.duration;
    a = it->second.arriving;
  }
  pv1::ProgressReply reply;
  if (a == nullptr) {
    reply.set_available(0);
    reply.set_complete(true);  // a sealed object: all of it
  } else {
    MutexLock al(&a->mu);
    reply.set_available(a->available);
    reply.set_complete(a->state == Arriving::State::kComplete);
    reply.set_failed(a->state == Arriving::State::kFailed);
    reply.set_why(a->why);
  }
  return reply;
}

absl::StatusOr<pv1::OpenReply> PeerServer::Open(const pv1::OpenRequest& req) {
  milliseconds lease = options_.max_lease;
  if (req.lease_ms() != 0) lease = std::min(lease, milliseconds(req.lease_ms()));
  auto got = store_->Get(kPeerSession, req.key(), req.generation());
  if (!got.ok() && absl::IsNotFound(got.status()) && req.allow_arriving() &&
      req.generation() != 0) {
    return OpenArriving(req.key(), req.generation(), lease, req.requester_host());
  }
  if (!got.ok()) return got.status();
  char* base = tier_bases_[got->tier];
  const auto* h = reinterpret_cast<const store::ObjectHeader*>(base + got->block_offset);
  if ((h->flags & store::kFlagLocalOnly) != 0) {
    store_->Release(kPeerSession, got->lease_id).IgnoreError();
    return absl::FailedPreconditionError(fmt::format(
        "{} is local_only on this host: it is never served to other hosts", QuoteKey(req.key())));
  }
  pv1::OpenReply reply;
  reply.set_generation(got->generation);
  reply.set_size(got->size);
  reply.set_has_checksum((h->flags & store::kFlagHasChecksum) != 0);
  reply.set_checksum(reply.has_checksum() ? h->checksum : 0);
  reply.set_evictable((h->flags & store::kFlagEvictable) != 0);
  reply.set_tier(store_->tier_names()[got->tier]);
  reply.set_tensor_count(h->tensor_count);
  reply.set_manifest(base + got->block_offset + store::ManifestOffset(h->key_bytes),
                     h->manifest_bytes);
  if (got->size <= std::min(req.inline_max(), options_.max_inline)) {
    // Small: the bytes go in the reply, copied under the store lease, which
    // then ends; there is nothing to read or close.
    reply.set_payload(base + got->payload_offset, got->size);
    store_->Release(kPeerSession, got->lease_id).IgnoreError();
    MutexLock lock(&mu_);
    bytes_sent_ += got->size;
    return reply;
  }
  MutexLock lock(&mu_);
  reply.set_transport_address(transport_address_);
  if (got->tier < rkeys_.size() && !rkeys_[got->tier].empty()) {
    reply.set_rkey(rkeys_[got->tier]);
    reply.set_remote_address(reinterpret_cast<uint64_t>(base + got->payload_offset));
  }
  uint64_t region = ++next_region_;
  Lease& l = leases_[region];
  l.store_lease = got->lease_id;
  l.payload = base + got->payload_offset;
  l.size = got->size;
  l.duration = lease;
  l.expires = steady_clock::now() + lease;
  reply.set_region(region);
  SPDLOG_DEBUG("peer: {} generation {} opened as region {} for host '{}'", QuoteKey(req.key()),
               got->generation, region, req.requester_host());
  return reply;
}

void PeerServer::EndLocked(uint64_t region) {
  auto it = leases_.find(region);
  if (it == leases_.end()) return;
  if (it->second.arriving == nullptr) {
    store_->Release(kPeerSession, it->second.store_lease).IgnoreError();
  }
  leases_.erase(it);
}

absl::StatusOr<transport::ReadLease> PeerServer::Resolve(uint64_t region, uint64_t offset,
                                                         uint64_t length) {
  MutexLock lock(&mu_);
  auto it = leases_.find(region);
  if (it == leases_.end() || it->second.closed) {
    return absl::NotFoundError(
        fmt::format("region {} is not open (closed or expired); open it again", region));
  }
  Lease& l = it->second;
  if (offset > l.size || length > l.size - offset) {
    return absl::OutOfRangeError(
        fmt::format("read of {} bytes at offset {} is outside region {} ({} bytes)", length, offset,
                    region, l.size));
  }
  if (l.arriving != nullptr) return ResolveArriving(region, l, offset, length);
  ++l.reads;
  l.expires = steady_clock::now() + l.duration;  // a lease lives while it is read
  bytes_sent_ += length;
  transport::ReadLease out;
  out.data = l.payload + offset;
  out.release = [this, region] {
    MutexLock lock(&mu_);
    auto it = leases_.find(region);
    if (it == leases_.end()) return;
    if (--it->second.reads == 0 && it->second.closed) EndLocked(region);
  };
  return out;
}

absl::StatusOr<transport::ReadLease> PeerServer::ResolveArriving(uint64_t region, Lease& l,
                                                                 uint64_t offset, uint64_t length) {
  std::shared_ptr<Arriving> a = l.arriving;
  {
    MutexLock al(&a->mu);
    if (a->state == Arriving::State::kFailed) {
      return absl::UnavailableError(
          fmt::format("region {}: {} failed to arrive here: {}", region, QuoteKey(a->key), a->why));
    }
    if (offset + length > a->available) {
      return absl::OutOfRangeError(fmt::format(
          "region {}: bytes [{}, {}) have not arrived yet ({} have): ask progress first", region,
          offset, offset + length, a->available));
    }
    ++a->readers;
  }
  ++l.reads;
  l.expires = steady_clock::now() + l.duration;
  bytes_sent_ += length;
  transport::ReadLease out;
  out.data = l.payload + offset;
  out.release = [this, region, a] {
    {
      MutexLock al(&a->mu);
      if (--a->readers == 0) a->reads_done.SignalAll();
    }
    MutexLock lock(&mu_);
    auto it = leases_.find(region);
    if (it == leases_.end()) return;
    if (--it->second.reads == 0 && it->second.closed) EndLocked(region);
  };
  return out;
}

void PeerServer::ExpireLeases() {
  MutexLock lock(&mu_);
  auto now = steady_clock::now();
  std::vector<uint64_t> ended;
  for (auto& [region, l] : leases_) {
    if (l.closed || l.expires > now) continue;
    if (l.reads > 0) {
      l.closed = true;
    } else {
      ended.push_back(region);
    }
  }
  for (uint64_t region : ended) EndLocked(region);
}

uint64_t PeerServer::open_leases() const {
  MutexLock lock(&mu_);
  return leases_.size();
}

uint64_t PeerServer::bytes_sent() const {
  MutexLock lock(&mu_);
  return bytes_sent_;
}

// ---------------------------------------------------------------------------
// Fetcher

Fetcher::Fetcher(FetcherOptions options, store::ObjectStore* store, std::vector<char*> tier_bases,
                 RegistryClient* registry, PeerControlClient* control,
                 transport::Transport* transport)
    : options_(std::move(options)),
      store_(store),
      tier_bases_(std::move(tier_bases)),
      registry_(registry),
      control_(control),
      transport_(transport) {
  for (size_t i = 0; i < std::max<size_t>(options_.threads, 1); ++i) {
    threads_.emplace_back([this] { Work(); });
  }
}

Fetcher::~Fetcher() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  work_.SignalAll();
  for (auto& t : threads_) t.join();
}

std::string Fetcher::JobKey(std::string_view key, uint64_t generation) {
  return fmt::format("{}\n{}", generation, key);
}

void Fetcher::Start(Request request) {
  std::string id = JobKey(request.key, request.generation);
  {
    MutexLock lock(&mu_);
    auto now = steady_clock::now();
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      bool stale =
          it->second.state == State::kDone && now - it->second.finished > options_.keep_outcome;
      it = stale ? jobs_.erase(it) : std::next(it);
    }
    auto it = jobs_.find(id);
    if (it != jobs_.end() && it->second.state == State::kRunning) return;
    Job& job = jobs_[id];
    job = Job{};
    job.request = std::move(request);
    queue_.push_back(id);
  }
  work_.Signal();
}

Fetcher::Outcome Fetcher::Poll(std::string_view key, uint64_t generation) const {
  MutexLock lock(&mu_);
  auto it = jobs_.find(JobKey(key, generation));
  if (it == jobs_.end()) return {};
  return Outcome{it->second.state, it->second.status, it->second.sources};
}

std::shared_ptr<Arriving> Fetcher::FindArriving(std::string_view key, uint64_t generation,
                                                bool* pending) const {
  MutexLock lock(&mu_);
  std::string id = JobKey(key, generation);
  auto it = arriving_.find(id);
  if (it != arriving_.end()) return it->second;
  auto job = jobs_.find(id);
  *pending = job != jobs_.end() && job->second.state == State::kRunning;
  return nullptr;
}

absl::StatusOr<pv1::FetchReply> Fetcher::HandleFetch(const pv1::FetchRequest& req) {
  if (absl::Status k = store::ValidateKey(req.key()); !k.ok()) return k;
  if (req.generation() == 0) {
    return absl::InvalidArgumentError("peer fetch: a generation is required");
  }
  pv1::FetchReply reply;
  auto held = store_->Stat(req.key());
  if (held.ok() && held->generation >= req.generation()) {
    reply.set_already_held(true);
    return reply;
  }
  Request r;
  r.key = req.key();
  r.generation = req.generation();
  uint64_t ms = std::min<uint64_t>(req.deadline_ms(), 3600 * 1000);
  r.deadline = steady_clock::now() + milliseconds(ms);
  if (!req.upstream_host().empty()) {
    v1::Location up;
    up.set_host_id(req.upstream_host());
    up.set_advertise(req.upstream_advertise());
    up.set_size(req.size());
    up.set_checksum(req.checksum());
    up.set_has_checksum(req.has_checksum());
    r.upstream = std::move(up);
  }
  Start(std::move(r));
  return reply;
}

pv1::FetchStatusReply Fetcher::HandleFetchStatus(const pv1::FetchStatusRequest& req) const {
  Outcome o = Poll(req.key(), req.generation());
  pv1::FetchStatusReply reply;
  reply.set_running(o.state == State::kRunning);
  reply.set_done(o.state == State::kDone);
  reply.set_code(static_cast<int32_t>(o.status.code()));
  reply.set_message(std::string(o.status.message()));
  for (const auto& [host, bytes] : o.sources) {
    auto* src = reply.add_sources();
    src->set_host_id(host);
    src->set_bytes(bytes);
  }
  return reply;
}

Fetcher::Stats Fetcher::stats() const {
  MutexLock lock(&mu_);
  return stats_;
}

void Fetcher::Work() {
  for (;;) {
    std::string id;
    Request request;
    {
      MutexLock lock(&mu_);
      while (!stopping_ && queue_.empty()) work_.Wait(&mu_);
      if (stopping_) return;
      id = std::move(queue_.front());
      queue_.pop_front();
      request = jobs_[id].request;
    }
    Epilogue after;
    absl::Status s = Fetch(request, &after);
    if (!s.ok()) SPDLOG_WARN("fetch: {}", s.message());
    {
      MutexLock lock(&mu_);
      Job& job = jobs_[id];
      job.state = State::kDone;
      job.status = s;
      job.finished = steady_clock::now();
      ++stats_.pulls;
      if (!s.ok()) ++stats_.failed;
    }
    if (options_.on_done) options_.on_done();
    if (!after.close_control.empty()) {
      pv1::PeerRequest close;
      close.mutable_close()->set_region(after.close_region);
      auto c = control_->Call(after.close_control, close, options_.control_timeout);
      if (!c.ok()) SPDLOG_DEBUG("fetch: {}: close: {}", RequestName(request), c.status().message());
    }
    if (after.claim != 0) {
      v1::CompleteTransferRequest done;
      done.set_claim_id(after.claim);
      done.set_succeeded(true);
      if (absl::Status c = registry_->CompleteTransfer(done); !c.ok()) {
        SPDLOG_WARN("fetch: {}: completing claim {}: {}", RequestName(request), after.claim,
                    c.message());
      }
    }
  }
}

absl::Status Fetcher::Fetch(const Request& r, Epilogue* after) {
  *after = Epilogue();
  const std::string what = RequestName(r);
  std::set<std::string> tried;  // sources that failed this fetch
  absl::Status last;
  if (r.upstream && r.upstream->host_id() != options_.host_id) {
    bool source_fault = false;
    absl::Status s = PullFrom(r, r.generation, *r.upstream, &source_fault, after);
    if (s.ok() || absl::IsAlreadyExists(s)) return absl::OkStatus();
    if (!source_fault) return s;
    SPDLOG_WARN("fetch: {}; trying a complete replica", s.message());
    tried.insert(r.upstream->host_id());
    last = s;
    MutexLock lock(&mu_);
    ++stats_.retries;
  }
  for (;;) {
    if (steady_clock::now() >= r.deadline) {
      return absl::DeadlineExceededError(
          fmt::format("{}: the pull's deadline passed{}", what,
                      last.ok() ? std::string() : fmt::format(" (last: {})", last.message())));
    }
    // The claim picks the best replica itself (and the preferred host's when
    // it has one); only once a source has failed does the pull locate the
    // others first, to steer the claim away from the failed ones.
    uint64_t generation = r.generation;
    std::string prefer = r.prefer_host;
    if (!tried.empty()) {
      v1::LocateRequest lreq;
      lreq.set_key(r.key);
      lreq.set_generation(r.generation);
      lreq.set_requester_host(options_.host_id);
      auto located = registry_->Locate(lreq);
      // A source that just failed may be why none is live now: its error says more.
      if (!located.ok() && absl::IsNotFound(located.status())) return last;
      if (!located.ok()) return Annotate(located.status(), what);
      std::vector<const v1::Location*> candidates;
      for (const v1::Location& l : located->locations()) {
        if (l.host_id() != options_.host_id && !tried.contains(l.host_id())) {
          candidates.push_back(&l);
        }
      }
      if (candidates.empty()) return last;
      generation = located->generation();
      prefer = candidates.front()->host_id();
      for (const v1::Location* l : candidates) {
        if (l->host_id() == r.prefer_host) prefer = r.prefer_host;
      }
    }
    v1::ClaimTransferRequest creq;
    creq.set_key(r.key);
    creq.set_generation(generation);
    creq.set_target_host(options_.host_id);
    creq.set_prefer_host(prefer);
    auto claim = registry_->ClaimTransfer(creq);
    bool busy = !claim.ok() && absl::IsResourceExhausted(claim.status());
    if (!claim.ok() && !busy) return Annotate(claim.status(), what);
    if (claim.ok() && tried.contains(claim->source().host_id())) {
      // Only a source that already failed is under its cap: give the claim
      // back and wait for another.
      v1::CompleteTransferRequest done;
      done.set_claim_id(claim->claim_id());
      done.set_succeeded(false);
      registry_->CompleteTransfer(done).IgnoreError();
      busy = true;
    }
    if (busy) {
      std::this_thread::sleep_for(std::min(milliseconds{20}, Remaining(r.deadline)));
      continue;
    }
    bool source_fault = false;
    absl::Status s = PullFrom(r, claim->generation(), claim->source(), &source_fault, after);
    if (s.ok() || absl::IsAlreadyExists(s)) {
      after->claim = claim->claim_id();  // completed once the get is answered
      return absl::OkStatus();
    }
    v1::CompleteTransferRequest done;
    done.set_claim_id(claim->claim_id());
    done.set_succeeded(s.ok());
    if (absl::Status c = registry_->CompleteTransfer(done); !c.ok()) {
      SPDLOG_WARN("fetch: {}: completing claim {}: {}", what, claim->claim_id(), c.message());
    }
    if (!source_fault) return s;
    SPDLOG_WARN("fetch: {}; trying another replica", s.message());
    tried.insert(claim->source().host_id());
    last = s;
    MutexLock lock(&mu_);
    ++stats_.retries;
  }
}

std::string Fetcher::RequestName(const Request& r) {
  if (r.generation == 0) return fmt::format("pulling {}", QuoteKey(r.key));
  return fmt::format("pulling {} generation {}", QuoteKey(r.key), r.generation);
}

absl::Status Fetcher::PullFrom(const Request& r, uint64_t generation, const v1::Location& source,
                               bool* source_fault, Epilogue* after) {
  const std::string address = source.advertise();
  const std::string what = fmt::format("pulling {} generation {} from host '{}' ({})",
                                       QuoteKey(r.key), generation, source.host_id(), address);
  auto control_timeout = [&] { return std::min(options_.control_timeout, Remaining(r.deadline)); };
  *source_fault = true;

  const bool relay = r.upstream && r.upstream->host_id() == source.host_id();
  pv1::PeerRequest open;
  open.mutable_open()->set_key(r.key);
  open.mutable_open()->set_generation(generation);
  open.mutable_open()->set_requester_host(options_.host_id);
  open.mutable_open()->set_lease_ms(options_.lease.count());
  open.mutable_open()->set_allow_arriving(relay);
  open.mutable_open()->set_inline_max(options_.inline_max);
  absl::StatusOr<pv1::PeerReply> opened;
  for (;;) {
    opened = control_->Call(address, open, control_timeout());
    // A relay whose own pull is queued: it is about to start receiving.
    if (!relay || !absl::IsAborted(opened.status()) || steady_clock::now() >= r.deadline) break;
    std::this_thread::sleep_for(std::min(milliseconds{5}, Remaining(r.deadline)));
  }
  if (!opened.ok()) return Annotate(opened.status(), what);
  if (!opened->has_open()) {
    return absl::DataLossError(
        fmt::format("{}: the peer answered an Open with no OpenReply", what));
  }
  const pv1::OpenReply& o = opened->open();
  auto close = [&](milliseconds timeout) {
    if (o.has_payload()) return;  // inline: nothing was leased
    pv1::PeerRequest req;
    req.mutable_close()->set_region(o.region());
    auto c = control_->Call(address, req, timeout);
    if (!c.ok()) SPDLOG_DEBUG("fetch: {}: close: {}", what, c.status().message());
  };
  if (!o.has_payload() && o.transport_address().empty()) {
    close(options_.control_timeout);
    return absl::DataLossError(
        fmt::format("{}: the Open reply names no transport address to read from", what));
  }
  if (o.has_payload() && o.payload().size() != o.size()) {
    return absl::DataLossError(
        fmt::format("{}: the Open reply carries {} bytes of a {}-byte payload", what,
                    o.payload().size(), o.size()));
  }
  if (o.generation() != generation) {
    close(options_.control_timeout);
    return absl::NotFoundError(
        fmt::format("{}: it holds generation {} instead", what, o.generation()));
  }
  if (o.size() != source.size()) {
    close(options_.control_timeout);
    return absl::DataLossError(
        fmt::format("{}: it holds {} bytes, the registry says {}", what, o.size(), source.size()));
  }
  std::optional<uint64_t> expected;
  if (source.has_checksum()) expected = source.checksum();
  if (o.has_checksum()) {
    if (expected && *expected != o.checksum()) {
      close(options_.control_timeout);
      return absl::DataLossError(
          fmt::format("{}: its checksum {:016x} differs from the registry's {:016x}", what,
                      o.checksum(), *expected));
    }
    expected = o.checksum();
  }
  auto tensors = store::DecodeManifest(o.manifest(), o.tensor_count());
  if (!tensors.ok()) {
    close(options_.control_timeout);
    return Annotate(tensors.status(), what);
  }

  store::ObjectStore::CreateArgs args;
  args.key = r.key;
  args.size = o.size();
  args.tensors = std::move(*tensors);
  args.evictable = o.evictable();
  const auto& tiers = store_->tier_names();
  if (std::find(tiers.begin(), tiers.end(), o.tier()) != tiers.end()) args.tier = o.tier();
  args.replica_generation = generation;
  auto w = store_->Create(kFetchSession, args);
  if (!w.ok()) {
    close(options_.control_timeout);
    *source_fault = false;  // this host's store refused: another source will not help
    return Annotate(w.status(), what);
  }
  char* dest = tier_bases_[w->tier] + w->payload_offset;
  // What a relay downstream of this host is told when it opens this copy.
  pv1::OpenReply relayed = o;
  relayed.clear_region();
  relayed.clear_arriving();
  relayed.clear_rkey();  // an arriving copy is read by active messages only
  relayed.clear_remote_address();
  relayed.clear_transport_address();  // this host's, set by its PeerServer
  relayed.set_has_checksum(expected.has_value());
  relayed.set_checksum(expected.value_or(0));
  relayed.set_tier(store_->tier_names()[w->tier]);
  auto arriving =
      std::make_shared<Arriving>(store_, r.key, generation, dest, o.size(), std::move(relayed));
  const std::string id = JobKey(r.key, generation);
  const std::string job_id = JobKey(r.key, r.generation);
  {
    MutexLock lock(&mu_);
    arriving_[id] = arriving;
  }
  auto forget = [&] {
    MutexLock lock(&mu_);
    auto it = arriving_.find(id);
    if (it != arriving_.end() && it->second == arriving) arriving_.erase(it);
  };
  auto abort = [&](const std::string& why) {
    forget();
    arriving->Fail(why, options_.control_timeout);
    store_->Abort(kFetchSession, w->write_id).IgnoreError();
  };
  Source from{address, o.transport_address(), o.region()};
  if (!o.rkey().empty() && !o.arriving() && UseOneSided(from.address)) {
    from.rkey = o.rkey();
    from.remote = o.remote_address();
  }
  uint64_t actual = 0;  // the checksum of what landed
  auto arrived = [&](uint64_t offset, uint64_t n) {
    arriving->MarkArrived(offset, n);
    MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it != jobs_.end()) it->second.sources[source.host_id()] += n;
  };
  absl::Status read;
  if (o.has_payload()) {
    std::memcpy(dest, o.payload().data(), o.size());
    actual = store::Checksum(dest, o.size());
    arrived(0, o.size());
  } else {
    read = ReadPayload(from, o.size(), dest, o.arriving(), r.deadline, arrived, &actual);
  }
  if (!read.ok()) {
    abort(std::string(read.message()));
    // Briefly: a source that is down would hold up the failover by the
    // whole control timeout, and its lease lapses by itself.
    close(std::min(options_.control_timeout, milliseconds{500}));
    return Annotate(read, what);
  }
  if (expected && actual != *expected) {
    close(options_.control_timeout);
    abort("checksum mismatch");
    return absl::DataLossError(fmt::format(
        "{}: checksum mismatch: the bytes hash to {:016x}, expected {:016x}; not sealed", what,
        actual, *expected));
  }
  *source_fault = false;
  if (!o.has_payload()) {  // the source's lease ends after the get is answered
    after->close_control = address;
    after->close_region = o.region();
  }
  auto sealed = store_->Seal(kFetchSession, w->write_id, actual);
  if (!sealed.ok()) {
    forget();
    arriving->Fail(std::string(sealed.status().message()), options_.control_timeout);
    return Annotate(sealed.status(), what);
  }
  // Relays still reading this copy keep it by a lease of the sealed object.
  auto kept = store_->Get(kPeerSession, r.key, generation);
  if (kept.ok() && tier_bases_[kept->tier] + kept->payload_offset == dest) {
    arriving->Complete(kept->lease_id);
  } else {
    if (kept.ok()) store_->Release(kPeerSession, kept->lease_id).IgnoreError();
    arriving->Fail("removed as soon as it was sealed", options_.control_timeout);
  }
  forget();
  {
    MutexLock lock(&mu_);
    stats_.bytes += o.size();
  }
  SPDLOG_INFO("fetch: {} bytes of {} generation {} from host '{}' ({})", o.size(), QuoteKey(r.key),
              generation, source.host_id(),
              o.has_payload()     ? "inline"
              : from.rkey.empty() ? "active messages"
                                  : "one-sided get");
  return absl::OkStatus();
}

bool Fetcher::UseOneSided(const std::string& address) {
  switch (options_.transfer) {
    case Transfer::kActiveMessage:
      return false;
    case Transfer::kOneSided:
      return true;
    case Transfer::kAuto:
      break;
  }
  // The Open just made the connection; UCX says which lanes it chose.
  auto lanes = transport_->PeerTransports(address);
  return lanes.ok() && transport::Transport::LooksRdma(*lanes);
}

absl::Status Fetcher::ReadPayload(const Source& from, uint64_t size, char* dest, bool arriving,
                                  steady_clock::time_point deadline,
                                  const std::function<void(uint64_t, uint64_t)>& arrived,
                                  uint64_t* checksum) {
  store::ChecksumBuilder hash(size);
  std::atomic<bool> hash_at_end{false};  // a chunk that is not whole segments
  const std::string& address = from.address;
  const uint64_t region = from.region;
  const bool one_sided = !from.rkey.empty();
  // One-sided reads do not pass the holder's resolver, so they do not renew
  // its lease on the object: a Progress call does, at most every lease/4.
  Mutex renew_mu;
  steady_clock::time_point renewed = steady_clock::now();
  auto renew = [&]() -> absl::Status {
    {
      MutexLock lock(&renew_mu);
      if (steady_clock::now() - renewed < options_.lease / 4) return absl::OkStatus();
      renewed = steady_clock::now();
    }
    pv1::PeerRequest req;
    req.mutable_progress()->set_region(region);
    return control_
        ->Call(from.control, req, std::min(options_.control_timeout, Remaining(deadline)))
        .status();
  };
  const uint64_t chunk = std::max<uint64_t>(options_.chunk_bytes, 1);
  const uint64_t chunks = (size + chunk - 1) / chunk;
  std::atomic<uint64_t> next{0};
  Mutex error_mu;
  absl::Status error;
  std::atomic<bool> failed{false};
  // How much of an arriving source has arrived, as its Progress last said.
  Mutex progress_mu;
  uint64_t known = arriving ? 0 : size;
  // Waits until bytes [0, end) have arrived at the source.
  auto wait_for = [&](uint64_t end) -> absl::Status {
    MutexLock lock(&progress_mu);
    while (known < end) {
      if (failed.load(std::memory_order_relaxed))
        return absl::CancelledError("another read failed");
      if (steady_clock::now() >= deadline) {
        return absl::DeadlineExceededError(fmt::format(
            "the source's copy is still arriving ({} of {} bytes) at the deadline", known, size));
      }
      pv1::PeerRequest req;
      req.mutable_progress()->set_region(region);
      auto got = control_->Call(from.control, req,
                                std::min(options_.control_timeout, Remaining(deadline)));
      if (!got.ok()) return got.status();
      if (!got->has_progress()) {
        return absl::DataLossError("the peer answered a Progress with no ProgressReply");
      }
      const pv1::ProgressReply& p = got->progress();
      if (p.failed()) {
        return absl::UnavailableError(fmt::format("the source's own pull failed ({})", p.why()));
      }
      uint64_t now_known = p.complete() ? size : std::min(p.available(), size);
      if (now_known <= known) {
        std::this_thread::sleep_for(std::min(milliseconds{2}, Remaining(deadline)));
      }
      known = std::max(known, now_known);
    }
    return absl::OkStatus();
  };
  auto reader = [&] {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      uint64_t i = next.fetch_add(1);
      if (i >= chunks) return;
      uint64_t off = i * chunk;
      uint64_t n = std::min(chunk, size - off);
      absl::Status s = one_sided ? renew() : wait_for(off + n);
      bool stalled = false;  // the read this thread timed out (the others then fail too)
      if (s.ok()) {
        milliseconds left = Remaining(deadline);
        bool bounded = options_.stall_timeout < left;
        milliseconds timeout = bounded ? options_.stall_timeout : left;
        s = one_sided
                ? transport_->Get(address, from.rkey, from.remote + off, n, dest + off, timeout)
                : transport_->Pull(address, region, off, n, dest + off, timeout);
        if (bounded && absl::IsDeadlineExceeded(s)) {
          stalled = true;
          s = absl::UnavailableError(fmt::format(
              "a read of {} bytes took over {} ms (cluster.pull_stall_timeout_ms): the source's "
              "link or daemon is down, or the link is far too slow",
              n, options_.stall_timeout.count()));
        }
      }
      if (!s.ok()) {
        MutexLock lock(&error_mu);
        // The stall says why; the reads it cut off only say "closed".
        if (error.ok() || stalled) {
          error = Annotate(s, fmt::format("reading bytes [{}, {})", off, off + n));
        }
        failed = true;
        return;
      }
      if (hash.Fits(off, n)) {
        hash.Add(dest, off, n);
      } else {
        hash_at_end = true;
      }
      arrived(off, n);
    }
  };
  // Up to `window` reads in flight: this thread and window-1 helpers.
  std::vector<std::thread> helpers;
  size_t extra = std::min<uint64_t>(std::max<size_t>(options_.window, 1), chunks);
  for (size_t i = 1; i < extra; ++i) helpers.emplace_back(reader);
  reader();
  for (auto& t : helpers) t.join();
  MutexLock lock(&error_mu);
  if (error.ok()) *checksum = hash_at_end ? store::Checksum(dest, size) : hash.Finish();
  return error;
}

// ---------------------------------------------------------------------------
// PeerNode

// An InfiniBand / RoCE device (what UCX's rc/dc/ud transports run on).
static bool HasRdmaDevice() {
  std::error_code ec;
  auto it = std::filesystem::directory_iterator("/sys/class/infiniband", ec);
  return !ec && it != std::filesystem::directory_iterator();
}

absl::StatusOr<std::unique_ptr<PeerNode>> PeerNode::Start(PeerNodeOptions options,
                                                          store::ObjectStore* store,
                                                          std::vector<char*> tier_bases) {
  std::unique_ptr<PeerNode> node(new PeerNode());
  node->server_ = std::make_unique<PeerServer>(store, tier_bases, PeerServerOptions{});
  ASSIGN_OR_RETURN(node->registry_, RegistryClient::Create(options.registry));
  ASSIGN_OR_RETURN(node->control_client_, PeerControlClient::Create(options.channel));
  transport::TransportOptions to;
  size_t colon = options.advertise.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("advertise '{}' is not address:port", options.advertise));
  }
  to.listen_address = options.advertise.substr(0, colon);
  to.port = options.transport_port;
  to.token = options.channel.token;
  // auto turns one-sided reads on only where RDMA devices exist: on TCP they
  // are slower, and UCP_FEATURE_RMA there widened a UCX 1.13 crash on a
  // failing peer (ucx_transport.h).
  if (options.transfer == Transfer::kAuto && !HasRdmaDevice()) {
    options.transfer = Transfer::kActiveMessage;
  }
  to.one_sided = options.transfer != Transfer::kActiveMessage;
  to.net_devices = transport::NetDevicesFor(to.listen_address);
  PeerServer* server = node->server_.get();
  auto transport =
      transport::Transport::Start(to, [server](uint64_t region, uint64_t offset, uint64_t length) {
        return server->Resolve(region, offset, length);
      });
  if (!transport.ok()) {
    return Annotate(transport.status(),
                    fmt::format("peer transport at {}:{}", to.listen_address, to.port));
  }
  node->transport_ = std::move(*transport);
  if (const char* env = std::getenv("UCX_NET_DEVICES"); env != nullptr) {
    spdlog::info("peer transport: UCX network devices '{}' (UCX_NET_DEVICES)", env);
  } else if (to.net_devices.empty()) {
    spdlog::info("peer transport: every UCX network device ({} is on no one interface)",
                 to.listen_address);
  } else {
    spdlog::info("peer transport: UCX network devices '{}'", to.net_devices);
  }
  node->transport_address_ = fmt::format("{}:{}", to.listen_address, node->transport_->port());
  server->SetTransportAddress(node->transport_address_);
  if (options.transfer != Transfer::kActiveMessage) {
    // Registered once; the keys go to pullers only in Open replies, over the
    // control channel (the token checked; TLS when configured).
    std::vector<std::string> rkeys;
    for (size_t i = 0; i < tier_bases.size() && i < options.tier_sizes.size(); ++i) {
      auto rkey = node->transport_->RegisterMemory(tier_bases[i], options.tier_sizes[i]);
      if (!rkey.ok()) {
        SPDLOG_WARN("peer: tier {} is served by active messages only: {}", i,
                    rkey.status().message());
      }
      rkeys.push_back(rkey.ok() ? *rkey : std::string());
    }
    server->SetRemoteKeys(std::move(rkeys));
  }
  FetcherOptions fo;
  fo.host_id = options.host_id;
  fo.threads = options.pull_threads;
  fo.stall_timeout = options.stall_timeout;
  fo.transfer = options.transfer;
  fo.on_done = options.on_pull_done;
  node->fetcher_ =
      std::make_unique<Fetcher>(std::move(fo), store, std::move(tier_bases), node->registry_.get(),
                                node->control_client_.get(), node->transport_.get());
  Fetcher* fetcher = node->fetcher_.get();
  FetchHooks hooks;
  hooks.arriving = [fetcher](std::string_view key, uint64_t generation, bool* pending) {
    return fetcher->FindArriving(key, generation, pending);
  };
  hooks.fetch = [fetcher](const pv1::FetchRequest& r) { return fetcher->HandleFetch(r); };
  hooks.fetch_status = [fetcher](const pv1::FetchStatusRequest& r) {
    return fetcher->HandleFetchStatus(r);
  };
  server->SetFetchHooks(std::move(hooks));
  node->replicator_ = std::make_unique<Replicator>(options.host_id, node->registry_.get(),
                                                   node->control_client_.get(), fetcher,
                                                   std::move(options.on_pull_done));
  auto control = PeerControlServer::Start(
      options.advertise, options.channel,
      [server](const pv1::PeerRequest& r) { return server->HandleCall(r); });
  if (!control.ok()) {
    return Annotate(control.status(), fmt::format("peer control channel at {}", options.advertise));
  }
  node->control_server_ = std::move(*control);
  return node;
}

PeerNode::~PeerNode() {
  replicator_.reset();
  if (server_ != nullptr) server_->SetFetchHooks({});
  fetcher_.reset();
  control_server_.reset();
  transport_.reset();
  registry_.reset();
  server_.reset();
}

}  // namespace cistern::cluster

#include "src/cluster/replicate.h"

#include <algorithm>
#include <set>
#include <utility>

#include "cistern/peer.pb.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "spdlog/spdlog.h"
#include "src/common/fmt_absl.h"
#include "src/common/quote.h"
#include "src/store/key.h"

namespace cistern::cluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr milliseconds kPollEvery{20};
constexpr milliseconds kCallTimeout{5000};

}  // namespace

Replicator::Replicator(std::string host_id, RegistryClient* registry, PeerControlClient* control,
                       Fetcher* local, std::function<void()> on_done)
    : host_id_(std::move(host_id)),
      registry_(registry),
      control_(control),
      local_(local),
      on_done_(std::move(on_done)) {}

Replicator::~Replicator() {
  std::map<uint64_t, Job> jobs;
  {
    MutexLock lock(&mu_);
    jobs.swap(jobs_);
  }
  for (auto& [id, job] : jobs) {
    if (job.thread.joinable()) job.thread.join();
  }
}

absl::StatusOr<uint64_t> Replicator::Start(ReplicateRequest request) {
  if (absl::Status k = store::ValidateKey(request.key); !k.ok()) return k;
  if (request.to.empty() && !request.all) {
    return absl::InvalidArgumentError(fmt::format(
        "replicate {}: no target hosts named (name some, or ask for all)", QuoteKey(request.key)));
  }
  if (!request.to.empty() && request.all) {
    return absl::InvalidArgumentError(fmt::format(
        "replicate {}: both target hosts and all were given; choose one", QuoteKey(request.key)));
  }
  if (request.fanout == 0) request.fanout = 1;
  if (request.fanout > kMaxFanout) {
    return absl::InvalidArgumentError(fmt::format("replicate {}: fanout {} is outside 1..{}",
                                                  QuoteKey(request.key), request.fanout,
                                                  kMaxFanout));
  }
  std::vector<std::thread> finished;
  uint64_t id = 0;
  {
    MutexLock lock(&mu_);
    size_t running = 0;
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (it->second.done && it->second.forgotten) {
        finished.push_back(std::move(it->second.thread));
        it = jobs_.erase(it);
        continue;
      }
      if (!it->second.done) ++running;
      ++it;
    }
    if (running >= kMaxRunning) {
      return absl::ResourceExhaustedError(fmt::format(
          "replicate {}: {} replications are running on this host already; retry when one ends",
          QuoteKey(request.key), running));
    }
    id = ++next_id_;
    Job& job = jobs_[id];
    job.result = absl::UnknownError("running");
    job.thread = std::thread([this, id, r = std::move(request)] {
      absl::StatusOr<ReplicateResult> result = Run(r);
      {
        MutexLock lock(&mu_);
        auto it = jobs_.find(id);
        if (it != jobs_.end()) {
          it->second.result = std::move(result);
          it->second.done = true;
        }
      }
      if (on_done_) on_done_();
    });
  }
  for (auto& t : finished) t.join();
  return id;
}

std::optional<absl::StatusOr<ReplicateResult>> Replicator::Poll(uint64_t id) {
  std::thread thread;
  absl::StatusOr<ReplicateResult> result;
  {
    MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return absl::NotFoundError(fmt::format("no replication {}", id));
    if (!it->second.done) return std::nullopt;
    thread = std::move(it->second.thread);
    result = std::move(it->second.result);
    jobs_.erase(it);
  }
  if (thread.joinable()) thread.join();
  return result;
}

void Replicator::Forget(uint64_t id) {
  std::thread thread;
  {
    MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    if (!it->second.done) {
      it->second.forgotten = true;
      return;
    }
    thread = std::move(it->second.thread);
    jobs_.erase(it);
  }
  if (thread.joinable()) thread.join();
}

absl::StatusOr<pv1::PeerReply> Replicator::CallPeer(const std::string& host,
                                                    const std::string& advertise,
                                                    const pv1::PeerRequest& request,
                                                    milliseconds timeout) {
  if (host != host_id_) return control_->Call(advertise, request, timeout);
  pv1::PeerReply reply;
  if (request.has_fetch()) {
    auto out = local_->HandleFetch(request.fetch());
    if (!out.ok()) return out.status();
    *reply.mutable_fetch() = *std::move(out);
  } else {
    *reply.mutable_fetch_status() = local_->HandleFetchStatus(request.fetch_status());
  }
  return reply;
}

absl::StatusOr<ReplicateResult> Replicator::Run(const ReplicateRequest& r) {
  const auto deadline = steady_clock::now() + r.timeout;
  const std::string what = fmt::format("replicate {}", QuoteKey(r.key));
  auto annotate = [&](const absl::Status& s) {
    return absl::Status(s.code(), fmt::format("{}: {}", what, s.message()));
  };
  v1::LocateRequest lreq;
  lreq.set_key(r.key);
  lreq.set_generation(r.generation);
  lreq.set_requester_host(host_id_);
  auto located = registry_->Locate(lreq);
  if (!located.ok()) return annotate(located.status());
  const v1::Location* root = nullptr;
  for (const v1::Location& l : located->locations()) {
    bool live = l.host_state() == v1::HOST_STATE_ALIVE;
    if (live && (root == nullptr || l.host_id() == host_id_)) root = &l;
  }
  if (root == nullptr) {
    return absl::UnavailableError(fmt::format("{}: no live host holds generation {} to copy from",
                                              what, located->generation()));
  }
  auto system = registry_->QuerySystem();
  if (!system.ok()) return annotate(system.status());
  std::map<std::string, const v1::HostInfo*> hosts;
  for (const v1::HostInfo& h : system->hosts()) hosts[h.host_id()] = &h;

  ReplicateResult result;
  result.key = r.key;
  result.generation = located->generation();
  std::vector<std::string> names = r.to;
  if (r.all) {
    for (const auto& [id, h] : hosts) {
      if (h->state() == v1::HOST_STATE_ALIVE) names.push_back(id);
    }
  }
  std::vector<std::string> unknown;
  std::set<std::string> seen;
  for (const std::string& n : names) {
    if (!hosts.contains(n)) unknown.push_back(fmt::format("'{}'", n));
  }
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: no such host in the cluster: {}; nothing was copied", what, fmt::join(unknown, ", ")));
  }
  // The tree: nodes[0] is the root replica; nodes[k]'s parent is
  // nodes[(k - 1) / fanout].
  struct Node {
    std::string host;
    std::string advertise;
    size_t target = SIZE_MAX;  // index into result.targets
    bool running = false;
  };
  std::vector<Node> nodes;
  nodes.push_back(Node{root->host_id(), root->advertise()});
  for (const std::string& n : names) {
    if (!seen.insert(n).second) continue;
    ReplicateResult::Target t;
    t.host_id = n;
    const v1::HostInfo* h = hosts[n];
    // A host the registry lists is asked anyway (it answers already_held
    // when it does hold it): the registry may not have heard of a removal yet.
    if (n == root->host_id()) {
      t.already_held = true;
    } else if (h->state() != v1::HOST_STATE_ALIVE) {
      t.status = absl::UnavailableError(
          fmt::format("host '{}' is not alive (state {})", n, v1::HostState_Name(h->state())));
    } else {
      nodes.push_back(Node{n, h->advertise(), result.targets.size()});
    }
    result.targets.push_back(std::move(t));
  }
  const uint32_t fanout = std::max<uint32_t>(r.fanout, 1);
  for (size_t k = 1; k < nodes.size(); ++k) {
    Node& node = nodes[k];
    const Node& parent = nodes[(k - 1) / fanout];
    ReplicateResult::Target& t = result.targets[node.target];
    t.upstream = parent.host;
    pv1::PeerRequest req;
    pv1::FetchRequest* f = req.mutable_fetch();
    f->set_key(r.key);
    f->set_generation(result.generation);
    f->set_upstream_host(parent.host);
    f->set_upstream_advertise(parent.advertise);
    f->set_size(root->size());
    f->set_checksum(root->checksum());
    f->set_has_checksum(root->has_checksum());
    f->set_deadline_ms(Remaining(deadline).count());
    auto got =
        CallPeer(node.host, node.advertise, req, std::min(kCallTimeout, Remaining(deadline)));
    if (!got.ok()) {
      t.status = absl::Status(got.status().code(), fmt::format("asking host '{}' to pull: {}",
                                                               node.host, got.status().message()));
    } else if (!got->has_fetch()) {
      t.status = absl::DataLossError(
          fmt::format("host '{}' answered a Fetch with no FetchReply", node.host));
    } else if (got->fetch().already_held()) {
      t.already_held = true;
    } else {
      node.running = true;
    }
  }
  SPDLOG_INFO("{} generation {}: {} targets, fanout {}, from host '{}'", what, result.generation,
              nodes.size() - 1, fanout, root->host_id());
  for (;;) {
    bool any = false;
    for (size_t k = 1; k < nodes.size(); ++k) {
      Node& node = nodes[k];
      if (!node.running) continue;
      ReplicateResult::Target& t = result.targets[node.target];
      pv1::PeerRequest req;
      req.mutable_fetch_status()->set_key(r.key);
      req.mutable_fetch_status()->set_generation(result.generation);
      auto got =
          CallPeer(node.host, node.advertise, req, std::min(kCallTimeout, Remaining(deadline)));
      if (!got.ok() || !got->has_fetch_status()) {
        // Unreachable for now: asked again until the deadline.
        t.status = absl::UnavailableError(
            fmt::format("host '{}' did not answer how its pull went: {}", node.host,
                        got.ok() ? "no FetchStatusReply" : std::string(got.status().message())));
        any = true;
        continue;
      }
      const pv1::FetchStatusReply& st = got->fetch_status();
      t.sources.clear();
      for (const auto& s : st.sources()) t.sources[s.host_id()] = s.bytes();
      if (st.running()) {
        t.status = absl::OkStatus();
        any = true;
      } else if (st.done()) {
        t.status = absl::Status(static_cast<absl::StatusCode>(st.code()), st.message());
        node.running = false;
      } else {
        t.status = absl::InternalError(fmt::format(
            "host '{}' has no record of the pull it was asked for (restarted?)", node.host));
        node.running = false;
      }
    }
    if (!any) break;
    if (steady_clock::now() >= deadline) {
      for (size_t k = 1; k < nodes.size(); ++k) {
        if (!nodes[k].running) continue;
        ReplicateResult::Target& t = result.targets[nodes[k].target];
        t.status = absl::DeadlineExceededError(
            fmt::format("host '{}' did not finish within {} ms{}", t.host_id, r.timeout.count(),
                        t.status.ok() ? std::string() : fmt::format(" ({})", t.status.message())));
      }
      break;
    }
    std::this_thread::sleep_for(std::min(kPollEvery, Remaining(deadline)));
  }
  for (const ReplicateResult::Target& t : result.targets) {
    for (const auto& [host, bytes] : t.sources) result.sent[host] += bytes;
  }
  return result;
}

}  // namespace cistern::cluster

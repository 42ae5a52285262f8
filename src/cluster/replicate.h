// Fan-out: copying one object to many hosts (docs/cluster.md, "Fan-out").
//
// A Replicator runs on any daemon of the cluster. For a request it asks the
// registry which generation is newest and who holds it, picks the targets
// (the named hosts, or every live host that lacks it), and lays them out as
// a tree with `fanout` children per node rooted at one complete replica: a
// chain when fanout is 1, the default. Each target is asked (a peer Fetch
// call) to pull first from its parent, whose copy may itself still be
// arriving, so a byte leaves the origin about once and then hops host to
// host, chunk by chunk, behind the one before. A target whose parent fails
// falls back to any complete replica. The Replicator then polls every
// target until each has finished or the deadline passed, and reports per
// target what happened and how many bytes each host sent.
//
// Thread-safety: every public method may be called from any thread; each
// request runs on its own thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/cluster/peer.h"
#include "src/cluster/peer_channel.h"
#include "src/cluster/registry_client.h"
#include "src/common/mutex.h"

namespace cistern::cluster {

struct ReplicateRequest {
  std::string key;
  uint64_t generation = 0;  // 0: the newest any live host holds
  std::vector<std::string> to;
  bool all = false;  // every live host that lacks it (with `to` empty)
  uint32_t fanout = 1;
  std::chrono::milliseconds timeout{60000};
};

struct ReplicateResult {
  struct Target {
    std::string host_id;
    absl::Status status;
    bool already_held = false;
    std::string upstream;
    std::map<std::string, uint64_t> sources;  // bytes read from each host
  };
  std::string key;
  uint64_t generation = 0;
  std::vector<Target> targets;
  std::map<std::string, uint64_t> sent;  // bytes each host sent, all targets
};

class Replicator {
 public:
  // `local` is this host's Fetcher (a target that is this host is asked
  // directly); `on_done` is called on the request's thread when it ends.
  Replicator(std::string host_id, RegistryClient* registry, PeerControlClient* control,
             Fetcher* local, std::function<void()> on_done);
  ~Replicator();  // waits for the requests running (each ends by its deadline)

  static constexpr size_t kMaxRunning = 8;
  static constexpr uint32_t kMaxFanout = 64;

  // Starts `request`; its id for Poll. InvalidArgument for a bad key, no
  // targets named with `all` unset, or a fanout outside 1..kMaxFanout;
  // ResourceExhausted with kMaxRunning running.
  absl::StatusOr<uint64_t> Start(ReplicateRequest request);
  // Nothing while it runs; its result once (then it is forgotten).
  std::optional<absl::StatusOr<ReplicateResult>> Poll(uint64_t id);
  // Forgets a request whose asker went away (it still runs to its end).
  void Forget(uint64_t id);

 private:
  struct Job {
    std::thread thread;
    bool done = false;
    bool forgotten = false;
    absl::StatusOr<ReplicateResult> result;
  };
  absl::StatusOr<ReplicateResult> Run(const ReplicateRequest& r);
  // A peer call to `host` at `advertise`, or this host's Fetcher directly.
  absl::StatusOr<pv1::PeerReply> CallPeer(const std::string& host, const std::string& advertise,
                                          const pv1::PeerRequest& request,
                                          std::chrono::milliseconds timeout);

  const std::string host_id_;
  RegistryClient* const registry_;
  PeerControlClient* const control_;
  Fetcher* const local_;
  const std::function<void()> on_done_;

  Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, Job> jobs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cistern::cluster

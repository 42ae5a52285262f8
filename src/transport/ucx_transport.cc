#include "src/transport/ucx_transport.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "src/common/fmt_absl.h"
#include "src/common/mutex.h"
#include "src/common/secret.h"

namespace cistern::transport {
namespace {

constexpr unsigned kRequestAm = 1;  // puller -> holder: RequestHeader + token
constexpr unsigned kReplyAm = 2;    // holder -> puller: ReplyHeader + message, data = the bytes

struct RequestHeader {
  uint64_t id;
  uint64_t region;
  uint64_t offset;
  uint64_t length;
  uint32_t token_length;
  uint32_t reserved;  // 0
};

struct ReplyHeader {
  uint64_t id;
  int32_t code;  // absl::StatusCode
  uint32_t message_length;
};

constexpr uint32_t kMaxToken = 4096;
constexpr uint32_t kMaxMessage = 1024;
constexpr size_t kMaxRkeyBytes = 64 << 10;  // a packed remote key

absl::Status UcsError(ucs_status_t s, const std::string& what) {
  return absl::UnavailableError(fmt::format("{}: {}", what, ucs_status_string(s)));
}

// "a.b.c.d:port" -> sockaddr_in.
absl::StatusOr<sockaddr_in> ParseAddress(const std::string& address) {
  size_t colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (colon == std::string::npos || colon + 1 >= address.size()) {
    return absl::InvalidArgumentError(
        fmt::format("peer address '{}' is not a.b.c.d:port", address));
  }
  std::string host = address.substr(0, colon);
  char* end = nullptr;
  unsigned long port = std::strtoul(address.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port == 0 || port > 65535 ||
      ::inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        fmt::format("peer address '{}' is not a.b.c.d:port", address));
  }
  sa.sin_port = htons(static_cast<uint16_t>(port));
  return sa;
}

// Whether a TCP connection to `sa` can be made within `timeout`. UCX 1.13
// (Debian's, built with assertions) aborts the process in
// ucp_ep_set_failed -> wireup_ep cleanup when a client endpoint's
// connection is refused, so a peer is probed with a plain socket first.
absl::Status ProbeTcp(const sockaddr_in& sa, const std::string& address, int timeout_ms) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
  int err = rc == 0 ? 0 : errno;
  if (err == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, timeout_ms) == 1) {
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    } else {
      err = ETIMEDOUT;
    }
  }
  ::close(fd);
  if (err != 0) {
    return absl::UnavailableError(
        fmt::format("cannot connect to the peer at {}: {}", address, std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace

// One pull, shared by the caller (waiting) and the progress thread.
struct PullState {
  uint64_t id = 0;
  std::string address;
  uint64_t region = 0, offset = 0, length = 0;
  void* dest = nullptr;
  // A one-sided read (Get): the holder's packed remote key and the address
  // of the bytes in its memory.
  bool get = false;
  std::string rkey;
  uint64_t remote = 0;
  std::string request;  // RequestHeader + token, alive until the send completes
  ucp_ep_h ep = nullptr;
  bool receiving = false;  // the bytes are being received into dest
  bool failed_or_done = false;
  absl::Status final_status;

  Mutex mu;
  CondVar cv;
  bool finished ABSL_GUARDED_BY(mu) = false;
  absl::Status status ABSL_GUARDED_BY(mu);
};

class Transport::Impl {
 public:
  Impl(TransportOptions options, Resolver resolver)
      : options_(std::move(options)), resolver_(std::move(resolver)) {}

  ~Impl() { Stop(); }

  // Starts the progress thread, which makes the UCX context, worker and
  // listener itself: UCX ties a worker's async context to the thread that
  // made it, and calls from another thread trip its owner-thread checks.
  absl::Status Init() {
    std::promise<absl::Status> ready;
    std::future<absl::Status> started = ready.get_future();
    thread_ = std::thread([this, &ready] {
      absl::Status s = InitOnThread();
      bool ok = s.ok();
      ready.set_value(std::move(s));
      if (ok) Loop();
      Teardown();
    });
    absl::Status s = started.get();
    if (!s.ok()) {
      thread_.join();
      return s;
    }
    return absl::OkStatus();
  }

  absl::Status InitOnThread() {
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    if (options_.one_sided) params.features |= UCP_FEATURE_RMA;
    params.mt_workers_shared = 0;
    ucp_config_t* config = nullptr;
    if (ucs_status_t s = ucp_config_read(nullptr, nullptr, &config); s != UCS_OK) {
      return UcsError(s, "reading UCX's configuration");
    }
    if (!options_.net_devices.empty() && std::getenv("UCX_NET_DEVICES") == nullptr) {
      if (ucs_status_t s = ucp_config_modify(config, "NET_DEVICES", options_.net_devices.c_str());
          s != UCS_OK) {
        ucp_config_release(config);
        return absl::InvalidArgumentError(fmt::format("UCX refused the network devices '{}': {}",
                                                      options_.net_devices, ucs_status_string(s)));
      }
    }
    ucs_status_t s = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    if (s != UCS_OK) return UcsError(s, "ucp_init");

    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches it
    if ((s = ucp_worker_create(context_, &wp, &worker_)) != UCS_OK) {
      return UcsError(s, "ucp_worker_create");
    }
    for (auto [id, cb] :
         {std::pair{kRequestAm, &Impl::OnRequestThunk}, std::pair{kReplyAm, &Impl::OnReplyThunk}}) {
      ucp_am_handler_param_t hp{};
      hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                      UCP_AM_HANDLER_PARAM_FIELD_ARG;
      hp.id = id;
      hp.cb = cb;
      hp.arg = this;
      if ((s = ucp_worker_set_am_recv_handler(worker_, &hp)) != UCS_OK) {
        return UcsError(s, "ucp_worker_set_am_recv_handler");
      }
    }

    absl::StatusOr<sockaddr_in> listen = ParseAddress(
        fmt::format("{}:{}", options_.listen_address, options_.port == 0 ? 1 : options_.port));
    if (!listen.ok()) return listen.status();
    listen->sin_port = htons(options_.port);
    ucp_listener_params_t lp{};
    lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&*listen);
    lp.sockaddr.addrlen = sizeof(sockaddr_in);
    lp.conn_handler.cb = &Impl::OnConnectThunk;
    lp.conn_handler.arg = this;
    if ((s = ucp_listener_create(worker_, &lp, &listener_)) != UCS_OK) {
      return absl::FailedPreconditionError(fmt::format("cannot listen on {}:{}: {}",
                                                       options_.listen_address, options_.port,
                                                       ucs_status_string(s)));
    }
    ucp_listener_attr_t la{};
    la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    if ((s = ucp_listener_query(listener_, &la)) != UCS_OK)
      return UcsError(s, "ucp_listener_query");
    port_ = ntohs(reinterpret_cast<const sockaddr_in*>(&la.sockaddr)->sin_port);

    if ((s = ucp_worker_get_efd(worker_, &worker_fd_)) != UCS_OK) {
      return UcsError(s, "ucp_worker_get_efd");
    }
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (wake_fd_ < 0 || epoll_fd_ < 0) return absl::InternalError("eventfd/epoll_create1 failed");
    for (int fd : {worker_fd_, wake_fd_}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    }
    return absl::OkStatus();
  }

  uint16_t port() const { return port_; }

  absl::Status Pull(const std::string& address, uint64_t region, uint64_t offset, uint64_t length,
                    void* dest, std::chrono::milliseconds timeout) {
    auto st = std::make_shared<PullState>();
    st->id = next_id_.fetch_add(1) + 1;
    st->address = address;
    st->region = region;
    st->offset = offset;
    st->length = length;
    st->dest = dest;
    return Wait(st, timeout);
  }

  absl::Status Get(const std::string& address, std::string_view rkey, uint64_t remote,
                   uint64_t length, void* dest, std::chrono::milliseconds timeout) {
    if (!options_.one_sided) return OneSidedOff();
    if (rkey.empty() || rkey.size() > kMaxRkeyBytes) {
      return absl::InvalidArgumentError(
          fmt::format("a remote key of {} bytes (1..{} expected)", rkey.size(), kMaxRkeyBytes));
    }
    auto st = std::make_shared<PullState>();
    st->id = next_id_.fetch_add(1) + 1;
    st->address = address;
    st->get = true;
    st->rkey.assign(rkey);
    st->remote = remote;
    st->length = length;
    st->dest = dest;
    return Wait(st, timeout);
  }

  static absl::Status OneSidedOff() {
    return absl::FailedPreconditionError(
        "one-sided reads are off in this transport (TransportOptions::one_sided)");
  }

  absl::StatusOr<std::string> RegisterMemory(void* base, size_t length) {
    if (!options_.one_sided) return OneSidedOff();
    std::promise<absl::StatusOr<std::string>> done;
    auto got = done.get_future();
    Post([&] { done.set_value(MapMemory(base, length)); });
    return got.get();
  }

  absl::StatusOr<std::string> PeerTransports(const std::string& address) {
    std::promise<absl::StatusOr<std::string>> done;
    auto got = done.get_future();
    Post([&] { done.set_value(DescribeEp(address)); });
    return got.get();
  }

  absl::Status Wait(const std::shared_ptr<PullState>& st, std::chrono::milliseconds timeout) {
    Post([this, st] { StartPull(st); });
    MutexLock l(&st->mu);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!st->finished && std::chrono::steady_clock::now() < deadline) {
      st->cv.WaitFor(&st->mu, deadline - std::chrono::steady_clock::now());
    }
    if (!st->finished) {
      // Give the buffer back before returning: closing the endpoint fails
      // everything in flight on it.
      Post([this, st, timeout] {
        if (st->failed_or_done && !st->receiving) return;  // it ended meanwhile
        Finish(st,
               absl::DeadlineExceededError(fmt::format(
                   "pull of {} bytes of region {} from {} did not complete within {} ms",
                   st->length, st->region, st->address, timeout.count())),
               /*close_ep=*/true);
      });
      while (!st->finished) st->cv.Wait(&st->mu);
    }
    return st->status;
  }

  void Stop() {
    if (thread_.joinable()) {
      Post([this] { stopping_ = true; });
      thread_.join();
    }
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    wake_fd_ = epoll_fd_ = -1;
  }

 private:
  // ---- any thread ----
  void Post(std::function<void()> f) {
    {
      MutexLock l(&cmd_mu_);
      cmds_.push_back(std::move(f));
    }
    uint64_t one = 1;
    ssize_t n = ::write(wake_fd_, &one, sizeof one);
    (void)n;
  }

  // ---- the progress thread ----
  void Loop() {
    while (!stopping_) {
      while (ucp_worker_progress(worker_) != 0) {
      }
      RunCommands();
      if (gets_in_flight_ == 0 && !retired_rkeys_.empty()) {
        for (ucp_rkey_h rkey : retired_rkeys_) ucp_rkey_destroy(rkey);
        retired_rkeys_.clear();
      }
      if (stopping_) break;
      ucs_status_t s = ucp_worker_arm(worker_);
      if (s == UCS_ERR_BUSY) continue;  // more to progress
      epoll_event evs[2];
      int n = ::epoll_wait(epoll_fd_, evs, 2, 100);
      for (int i = 0; i < n; ++i) {
        if (evs[i].data.fd == wake_fd_) {
          uint64_t v;
          ssize_t r = ::read(wake_fd_, &v, sizeof v);
          (void)r;
        }
      }
    }
    // Shut down: fail what is in flight, close every endpoint.
    RunCommands();
    std::vector<std::shared_ptr<PullState>> left;
    for (auto& [id, st] : pulls_) left.push_back(st);
    for (auto& st : left) {
      Finish(st, absl::UnavailableError("the transport is shutting down"), /*close_ep=*/false);
    }
    std::vector<ucp_ep_h> eps;
    for (auto& [addr, ep] : client_eps_) eps.push_back(ep);
    for (ucp_ep_h ep : server_eps_) eps.push_back(ep);
    client_eps_.clear();
    server_eps_.clear();
    for (ucp_ep_h ep : eps) CloseEp(ep, /*force=*/true);
    // Let UCX finish what the closes started, briefly.
    for (int i = 0; i < 1000 && closing_ > 0; ++i) {
      ucp_worker_progress(worker_);
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  // On the progress thread, last: UCX's objects go, then whoever still waits
  // is told (UCX writes nowhere any more).
  void Teardown() {
    for (auto& [key, rkey] : rkeys_) retired_rkeys_.push_back(rkey);
    rkeys_.clear();
    for (ucp_rkey_h rkey : retired_rkeys_) ucp_rkey_destroy(rkey);
    retired_rkeys_.clear();
    for (ucp_mem_h m : mapped_) ucp_mem_unmap(context_, m);
    mapped_.clear();
    if (listener_ != nullptr) ucp_listener_destroy(listener_);
    listener_ = nullptr;
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    worker_ = nullptr;
    if (context_ != nullptr) ucp_cleanup(context_);
    context_ = nullptr;
    // Replies UCX never completed (their peer went as we stopped): their
    // bytes are not read any more.
    for (ReplyCtx* ctx : sending_) {
      if (ctx->lease.release) ctx->lease.release();
      delete ctx;
    }
    sending_.clear();
    for (auto& [id, st] : pulls_) {
      MutexLock l(&st->mu);
      if (st->finished) continue;
      st->status = st->failed_or_done ? st->final_status
                                      : absl::UnavailableError("the transport is shutting down");
      st->finished = true;
      st->cv.SignalAll();
    }
    pulls_.clear();
  }

  void RunCommands() {
    std::deque<std::function<void()>> cmds;
    {
      MutexLock l(&cmd_mu_);
      cmds.swap(cmds_);
    }
    for (auto& f : cmds) f();
  }

  // Ends `st` with `status` (the first status given wins). With `close_ep`
  // its endpoint is closed, failing the other pulls on it. The caller is told
  // only once UCX no longer writes to its buffer: while the bytes are being
  // received, the receive's completion ends it.
  void Finish(const std::shared_ptr<PullState>& st, absl::Status status, bool close_ep) {
    if (!st->failed_or_done) {
      st->failed_or_done = true;
      st->final_status = std::move(status);
    }
    if (close_ep && st->ep != nullptr) {
      ucp_ep_h ep = st->ep;
      st->ep = nullptr;
      DropEp(ep, absl::UnavailableError(fmt::format("the connection to {} was closed: {}",
                                                    st->address, st->final_status.message())));
    }
    if (st->receiving) return;
    pulls_.erase(st->id);
    MutexLock l(&st->mu);
    if (st->finished) return;
    st->status = st->final_status;
    st->finished = true;
    st->cv.SignalAll();
  }

  // Fails every pull on `ep` with `why` and closes it.
  void DropEp(ucp_ep_h ep, const absl::Status& why) {
    for (auto it = client_eps_.begin(); it != client_eps_.end();) {
      it = it->second == ep ? client_eps_.erase(it) : std::next(it);
    }
    server_eps_.erase(ep);
    std::vector<std::shared_ptr<PullState>> on_ep;
    for (auto& [id, st] : pulls_) {
      if (st->ep == ep) on_ep.push_back(st);
    }
    for (auto& st : on_ep) {
      st->ep = nullptr;
      Finish(st, why, /*close_ep=*/false);
    }
    // Its remote keys go once no read that might use them is in flight.
    for (auto it = rkeys_.begin(); it != rkeys_.end();) {
      if (it->first.first == ep) {
        retired_rkeys_.push_back(it->second);
        it = rkeys_.erase(it);
      } else {
        ++it;
      }
    }
    CloseEp(ep, /*force=*/true);
  }

  void CloseEp(ucp_ep_h ep, bool force) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    ucs_status_ptr_t r = ucp_ep_close_nbx(ep, &p);
    if (UCS_PTR_IS_PTR(r)) {
      ++closing_;
      closing_reqs_.push_back(r);
    }
    // Reap finished closes.
    for (auto it = closing_reqs_.begin(); it != closing_reqs_.end();) {
      if (ucp_request_check_status(*it) != UCS_INPROGRESS) {
        ucp_request_free(*it);
        --closing_;
        it = closing_reqs_.erase(it);
      } else {
        ++it;
      }
    }
  }

  absl::StatusOr<ucp_ep_h> ClientEp(const std::string& address) {
    if (auto it = client_eps_.find(address); it != client_eps_.end()) return it->second;
    absl::StatusOr<sockaddr_in> sa = ParseAddress(address);
    if (!sa.ok()) return sa.status();
    if (absl::Status s = ProbeTcp(*sa, address, 1000); !s.ok()) return s;
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&*sa);
    ep.sockaddr.addrlen = sizeof(sockaddr_in);
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &Impl::OnEpErrorThunk;
    ep.err_handler.arg = this;
    ucp_ep_h h = nullptr;
    if (ucs_status_t s = ucp_ep_create(worker_, &ep, &h); s != UCS_OK) {
      return UcsError(s, fmt::format("connecting to {}", address));
    }
    client_eps_[address] = h;
    return h;
  }

  void StartPull(const std::shared_ptr<PullState>& st) {
    if (st->failed_or_done) return;
    absl::StatusOr<ucp_ep_h> ep = ClientEp(st->address);
    if (!ep.ok()) {
      Finish(st, ep.status(), false);
      return;
    }
    st->ep = *ep;
    pulls_[st->id] = st;
    if (st->get) {
      StartGet(st);
      return;
    }
    RequestHeader h{
        st->id, st->region, st->offset, st->length, static_cast<uint32_t>(options_.token.size()),
        0};
    st->request.assign(reinterpret_cast<const char*>(&h), sizeof h);
    st->request += options_.token;
    ucp_request_param_t p{};
    p.op_attr_mask =
        UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.flags = UCP_AM_SEND_FLAG_REPLY;
    p.cb.send = &Impl::OnRequestSent;
    p.user_data = new std::pair<Impl*, std::shared_ptr<PullState>>(this, st);
    ucs_status_ptr_t r =
        ucp_am_send_nbx(*ep, kRequestAm, st->request.data(), st->request.size(), nullptr, 0, &p);
    if (!UCS_PTR_IS_PTR(r)) {
      delete static_cast<std::pair<Impl*, std::shared_ptr<PullState>>*>(p.user_data);
      if (UCS_PTR_IS_ERR(r)) {
        Finish(st, UcsError(UCS_PTR_STATUS(r), fmt::format("sending a pull to {}", st->address)),
               true);
      }
    }
  }

  // A one-sided read: UCX moves the bytes from the holder's registered
  // memory into dest; the holder's CPU is not asked (on TCP, UCX emulates
  // it with its own active messages).
  void StartGet(const std::shared_ptr<PullState>& st) {
    auto key = std::make_pair(st->ep, st->rkey);
    auto it = rkeys_.find(key);
    if (it == rkeys_.end()) {
      ucp_rkey_h rkey = nullptr;
      if (ucs_status_t s = ucp_ep_rkey_unpack(st->ep, st->rkey.data(), &rkey); s != UCS_OK) {
        Finish(st, UcsError(s, fmt::format("the remote key from {}", st->address)), false);
        return;
      }
      it = rkeys_.emplace(key, rkey).first;
    }
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &Impl::OnGetDone;
    p.user_data = new std::pair<Impl*, std::shared_ptr<PullState>>(this, st);
    st->receiving = true;
    ucs_status_ptr_t r = ucp_get_nbx(st->ep, st->dest, st->length, st->remote, it->second, &p);
    if (UCS_PTR_IS_PTR(r)) {
      ++gets_in_flight_;
    } else {
      delete static_cast<std::pair<Impl*, std::shared_ptr<PullState>>*>(p.user_data);
      st->receiving = false;
      Finish(st,
             UCS_PTR_IS_ERR(r)
                 ? UcsError(UCS_PTR_STATUS(r), fmt::format("reading from {}", st->address))
                 : absl::OkStatus(),
             UCS_PTR_IS_ERR(r));
    }
  }

  static void OnGetDone(void* request, ucs_status_t status, void* user_data) {
    auto* ctx = static_cast<std::pair<Impl*, std::shared_ptr<PullState>>*>(user_data);
    --ctx->first->gets_in_flight_;
    ctx->second->receiving = false;
    ctx->first->Finish(ctx->second,
                       status == UCS_OK
                           ? absl::OkStatus()
                           : UcsError(status, fmt::format("reading from {}", ctx->second->address)),
                       false);
    delete ctx;
    ucp_request_free(request);
  }

  absl::StatusOr<std::string> MapMemory(void* base, size_t length) {
    if (context_ == nullptr) return absl::FailedPreconditionError("the transport is not running");
    ucp_mem_map_params_t mp{};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = base;
    mp.length = length;
    ucp_mem_h memh = nullptr;
    if (ucs_status_t s = ucp_mem_map(context_, &mp, &memh); s != UCS_OK) {
      return UcsError(s, fmt::format("registering {} bytes with UCX", length));
    }
    void* packed = nullptr;
    size_t size = 0;
    if (ucs_status_t s = ucp_rkey_pack(context_, memh, &packed, &size); s != UCS_OK) {
      ucp_mem_unmap(context_, memh);
      return UcsError(s, "packing a remote key");
    }
    std::string key(static_cast<const char*>(packed), size);
    ucp_rkey_buffer_release(packed);
    if (key.size() > kMaxRkeyBytes) {
      ucp_mem_unmap(context_, memh);
      return absl::InternalError(fmt::format("a remote key of {} bytes", key.size()));
    }
    mapped_.push_back(memh);
    return key;
  }

  // What UCX says about the endpoint to `address` (its lanes and their
  // transports), once a call or pull has wired it up.
  absl::StatusOr<std::string> DescribeEp(const std::string& address) {
    auto it = client_eps_.find(address);
    if (it == client_eps_.end()) {
      return absl::NotFoundError(fmt::format("no connection to {} yet", address));
    }
    char* buf = nullptr;
    size_t size = 0;
    FILE* f = ::open_memstream(&buf, &size);
    if (f == nullptr) return absl::InternalError("open_memstream failed");
    ucp_ep_print_info(it->second, f);
    std::fclose(f);
    std::string out(buf, size);
    std::free(buf);
    return out;
  }

  static void OnRequestSent(void* request, ucs_status_t status, void* user_data) {
    auto* ctx = static_cast<std::pair<Impl*, std::shared_ptr<PullState>>*>(user_data);
    if (status != UCS_OK) {
      ctx->first->Finish(
          ctx->second, UcsError(status, fmt::format("sending a pull to {}", ctx->second->address)),
          true);
    }
    delete ctx;
    ucp_request_free(request);
  }

  // The holder's side of a pull.
  static ucs_status_t OnRequestThunk(void* arg, const void* header, size_t header_length,
                                     void* data, size_t length, const ucp_am_recv_param_t* param) {
    return static_cast<Impl*>(arg)->OnRequest(header, header_length, param);
  }
  ucs_status_t OnRequest(const void* header, size_t header_length,
                         const ucp_am_recv_param_t* param) {
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ||
        header_length < sizeof(RequestHeader)) {
      return UCS_OK;  // malformed: nothing to answer to
    }
    RequestHeader h;
    std::memcpy(&h, header, sizeof h);
    ucp_ep_h reply = param->reply_ep;
    if (h.token_length > kMaxToken || h.reserved != 0 ||
        header_length != sizeof h + h.token_length) {
      SendReply(reply, h.id, absl::InvalidArgumentError("malformed pull request"), {});
      return UCS_OK;
    }
    std::string_view token(static_cast<const char*>(header) + sizeof h, h.token_length);
    if (!SameSecret(token, options_.token)) {
      SendReply(reply, h.id, absl::PermissionDeniedError("wrong cluster token"), {});
      return UCS_OK;
    }
    absl::StatusOr<ReadLease> lease = resolver_(h.region, h.offset, h.length);
    SendReply(reply, h.id, lease.ok() ? absl::OkStatus() : lease.status(),
              lease.ok() ? *std::move(lease) : ReadLease{}, h.length);
    return UCS_OK;
  }

  struct ReplyCtx {
    Impl* owner = nullptr;
    std::string header;
    ReadLease lease;
  };

  void SendReply(ucp_ep_h ep, uint64_t id, const absl::Status& status, ReadLease lease,
                 uint64_t length = 0) {
    auto* ctx = new ReplyCtx;
    std::string message(status.message().substr(0, kMaxMessage));
    ReplyHeader h{id, static_cast<int32_t>(status.code()), static_cast<uint32_t>(message.size())};
    ctx->header.assign(reinterpret_cast<const char*>(&h), sizeof h);
    ctx->header += message;
    ctx->lease = std::move(lease);
    ctx->owner = this;
    ucp_request_param_t p{};
    p.op_attr_mask =
        UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.flags = UCP_AM_SEND_FLAG_RNDV;
    p.cb.send = &Impl::OnReplySent;
    p.user_data = ctx;
    const void* data = status.ok() ? ctx->lease.data : nullptr;
    size_t n = status.ok() ? length : 0;
    ucs_status_ptr_t r =
        ucp_am_send_nbx(ep, kReplyAm, ctx->header.data(), ctx->header.size(), data, n, &p);
    if (!UCS_PTR_IS_PTR(r)) {
      if (ctx->lease.release) ctx->lease.release();
      delete ctx;
      return;
    }
    sending_.insert(ctx);
  }

  static void OnReplySent(void* request, ucs_status_t, void* user_data) {
    auto* ctx = static_cast<ReplyCtx*>(user_data);
    ctx->owner->sending_.erase(ctx);
    if (ctx->lease.release) ctx->lease.release();
    delete ctx;
    ucp_request_free(request);
  }

  // The puller's side: the answer.
  static ucs_status_t OnReplyThunk(void* arg, const void* header, size_t header_length, void* data,
                                   size_t length, const ucp_am_recv_param_t* param) {
    return static_cast<Impl*>(arg)->OnReply(header, header_length, data, length, param);
  }
  ucs_status_t OnReply(const void* header, size_t header_length, void* data, size_t length,
                       const ucp_am_recv_param_t* param) {
    if (header_length < sizeof(ReplyHeader)) return UCS_OK;
    ReplyHeader h;
    std::memcpy(&h, header, sizeof h);
    auto it = pulls_.find(h.id);
    if (it == pulls_.end()) return UCS_OK;  // timed out or failed meanwhile: dropped
    std::shared_ptr<PullState> st = it->second;
    if (h.code != 0) {
      std::string_view msg(static_cast<const char*>(header) + sizeof h,
                           std::min<size_t>(h.message_length, header_length - sizeof h));
      Finish(st,
             absl::Status(static_cast<absl::StatusCode>(h.code),
                          fmt::format("{} (from {})", msg, st->address)),
             false);
      return UCS_OK;
    }
    if (length != st->length) {
      Finish(st,
             absl::DataLossError(
                 fmt::format("{} sent {} bytes for a pull of {}", st->address, length, st->length)),
             true);
      return UCS_OK;
    }
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
      if (length > 0) std::memcpy(st->dest, data, length);  // small: it came eagerly
      Finish(st, absl::OkStatus(), false);
      return UCS_OK;
    }
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.recv_am = &Impl::OnDataReceived;
    p.user_data = new std::pair<Impl*, std::shared_ptr<PullState>>(this, st);
    st->receiving = true;
    ucs_status_ptr_t r = ucp_am_recv_data_nbx(worker_, data, st->dest, length, &p);
    if (!UCS_PTR_IS_PTR(r)) {
      delete static_cast<std::pair<Impl*, std::shared_ptr<PullState>>*>(p.user_data);
      st->receiving = false;
      Finish(st,
             UCS_PTR_IS_ERR(r)
                 ? UcsError(UCS_PTR_STATUS(r), fmt::format("receiving from {}", st->address))
                 : absl::OkStatus(),
             false);
    }
    return UCS_OK;
  }

  static void OnDataReceived(void* request, ucs_status_t status, size_t, void* user_data) {
    auto* ctx = static_cast<std::pair<Impl*, std::shared_ptr<PullState>>*>(user_data);
    ctx->second->receiving = false;
    ctx->first->Finish(
        ctx->second,
        status == UCS_OK ? absl::OkStatus()
                         : UcsError(status, fmt::format("receiving from {}", ctx->second->address)),
        false);
    delete ctx;
    ucp_request_free(request);
  }

  static void OnConnectThunk(ucp_conn_request_h request, void* arg) {
    static_cast<Impl*>(arg)->OnConnect(request);
  }
  void OnConnect(ucp_conn_request_h request) {
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.conn_request = request;
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &Impl::OnEpErrorThunk;
    ep.err_handler.arg = this;
    ucp_ep_h h = nullptr;
    if (ucs_status_t s = ucp_ep_create(worker_, &ep, &h); s != UCS_OK) {
      spdlog::warn("transport: cannot accept a peer: {}", ucs_status_string(s));
      return;
    }
    server_eps_.insert(h);
  }

  static void OnEpErrorThunk(void* arg, ucp_ep_h ep, ucs_status_t status) {
    static_cast<Impl*>(arg)->DropEp(ep, UcsError(status, "the peer went away"));
  }

  const TransportOptions options_;
  const Resolver resolver_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_listener_h listener_ = nullptr;
  uint16_t port_ = 0;
  int worker_fd_ = -1, wake_fd_ = -1, epoll_fd_ = -1;
  std::thread thread_;
  std::atomic<uint64_t> next_id_{0};

  Mutex cmd_mu_;
  std::deque<std::function<void()>> cmds_ ABSL_GUARDED_BY(cmd_mu_);

  // The progress thread's own.
  bool stopping_ = false;
  std::map<std::string, ucp_ep_h> client_eps_;
  std::set<ucp_ep_h> server_eps_;
  std::unordered_map<uint64_t, std::shared_ptr<PullState>> pulls_;
  std::vector<ucs_status_ptr_t> closing_reqs_;
  std::set<ReplyCtx*> sending_;                                   // replies in flight
  std::vector<ucp_mem_h> mapped_;                                 // RegisterMemory's
  std::map<std::pair<ucp_ep_h, std::string>, ucp_rkey_h> rkeys_;  // unpacked, per endpoint
  std::vector<ucp_rkey_h> retired_rkeys_;                         // of closed endpoints
  int gets_in_flight_ = 0;
  int closing_ = 0;
};

Transport::Transport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Transport::~Transport() = default;

absl::StatusOr<std::unique_ptr<Transport>> Transport::Start(const TransportOptions& options,
                                                            Resolver resolver) {
  auto impl = std::make_unique<Impl>(options, std::move(resolver));
  if (absl::Status s = impl->Init(); !s.ok()) return s;
  return std::unique_ptr<Transport>(new Transport(std::move(impl)));
}

uint16_t Transport::port() const { return impl_->port(); }

absl::Status Transport::Pull(const std::string& address, uint64_t region, uint64_t offset,
                             uint64_t length, void* dest, std::chrono::milliseconds timeout) {
  return impl_->Pull(address, region, offset, length, dest, timeout);
}

absl::Status Transport::Get(const std::string& address, std::string_view rkey, uint64_t remote,
                            uint64_t length, void* dest, std::chrono::milliseconds timeout) {
  return impl_->Get(address, rkey, remote, length, dest, timeout);
}

absl::StatusOr<std::string> Transport::RegisterMemory(void* base, size_t length) {
  return impl_->RegisterMemory(base, length);
}

absl::StatusOr<std::string> Transport::PeerTransports(const std::string& address) {
  return impl_->PeerTransports(address);
}

std::string NetDevicesFor(const std::string& listen_address, const std::string& infiniband_sysfs) {
  in_addr want{};
  if (::inet_pton(AF_INET, listen_address.c_str(), &want) != 1 || want.s_addr == INADDR_ANY) {
    return "";
  }
  const bool loopback = (ntohl(want.s_addr) >> 24) == 127;
  std::string device;
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return "";
  for (ifaddrs* i = all; i != nullptr && device.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    const in_addr have = reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr;
    if (have.s_addr == want.s_addr || (loopback && (i->ifa_flags & IFF_LOOPBACK))) {
      device = i->ifa_name;
    }
  }
  ::freeifaddrs(all);
  if (device.empty()) return "";
  // RDMA ports, named as UCX names them: device:port.
  std::error_code ec;
  std::vector<std::string> ports;
  for (const auto& dev : std::filesystem::directory_iterator(infiniband_sysfs, ec)) {
    std::error_code pec;
    for (const auto& port : std::filesystem::directory_iterator(dev.path() / "ports", pec)) {
      ports.push_back(
          fmt::format("{}:{}", dev.path().filename().string(), port.path().filename().string()));
    }
  }
  std::sort(ports.begin(), ports.end());
  for (const std::string& p : ports) device += "," + p;
  return device;
}

bool Transport::LooksRdma(std::string_view description) {
  // ucp_ep_print_info names each lane's transport: rc_verbs, rc_mlx5,
  // dc_mlx5, ud_verbs, ... on InfiniBand/RoCE; tcp, sysv, posix, cma, ...
  // otherwise.
  // Each lane is printed as "N:transport/device".
  for (std::string_view tl : {":rc_", ":dc_", ":ud_", ":gga", ":srd"}) {
    if (description.find(tl) != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace cistern::transport

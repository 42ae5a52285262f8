#include "src/client/connection.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "fmt/format.h"
#include "src/client/fast_path.h"
#include "src/common/errno_status.h"
#include "src/common/fmt_absl.h"
#include "src/common/status_macros.h"

namespace cistern::client_internal {
namespace {
constexpr uint32_t kProtocolVersion = 1;
constexpr size_t kReadChunk = 64 * 1024;
}  // namespace

Connection::Connection(const ConnectOptions& options) : options_(options), in_(1ull << 30) {
  options_.socket_path = DiscoverSocket(options_.socket_path);
  if (options_.token.empty()) {
    if (const char* t = std::getenv("CISTERN_TOKEN"); t) options_.token = t;
  }
  if (options_.client_name.empty()) options_.client_name = fmt::format("pid-{}", getpid());
  if (const char* f = std::getenv("CISTERN_FAST_PATH"); f && std::string_view(f) == "0") {
    options_.fast_path = false;
  }
}

absl::StatusOr<wire::HelloReply> Connection::HelloLocked(std::vector<UniqueFd>* owned) {
  const std::string& path = options_.socket_path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(
        fmt::format("socket path '{}' is too long for a Unix socket", path));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd_.valid()) return ErrnoStatus(errno, "socket");
  if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    broken_ = true;
    return absl::UnavailableError(
        fmt::format("cisternd is not running at '{}': {}", path, std::strerror(errno)));
  }
  in_ = FrameBuffer(1ull << 30);
  broken_ = false;
  wire::Request req;
  auto* hello = req.mutable_hello();
  hello->set_protocol_version(kProtocolVersion);
  hello->set_token(options_.token);
  hello->set_client_name(options_.client_name);
  hello->set_want_fast_path(options_.fast_path);
  {
    MutexLock fast_lock(&fast_mu_);
    if (fast_) hello->set_fast_region_offset(fast_->region_offset());
  }
  absl::Status sent = SendLocked(req);
  // Even if sending failed, a refusal (uid, session limit) may be waiting.
  broken_ = false;
  std::vector<int> fds;
  auto resp = ReceiveLocked(&fds);
  for (int fd : fds) owned->emplace_back(fd);
  // The lambda runs under the caller's lock; Clang's analysis needs telling.
  auto fail = [&](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    broken_ = true;
    return s;
  };
  if (!resp.ok()) return fail(sent.ok() ? resp.status() : sent);
  if (resp->has_status() && resp->status().code() != 0) {
    return fail(absl::Status(static_cast<absl::StatusCode>(resp->status().code()),
                             resp->status().message()));
  }
  if (!resp->has_hello()) return fail(absl::InternalError("cisternd did not answer hello"));
  const wire::HelloReply& h = resp->hello();
  const size_t want = h.tiers_size() + (h.has_fast_path() ? 2 : 0);
  if (want != owned->size()) {
    return fail(absl::InternalError(
        fmt::format("hello announced {} tiers{} but passed {} descriptors", h.tiers_size(),
                    h.has_fast_path() ? " and the fast path" : "", owned->size())));
  }
  return h;
}

absl::StatusOr<std::shared_ptr<Connection>> Connection::Open(const ConnectOptions& options) {
  std::shared_ptr<Connection> c(new Connection(options));
  MutexLock lock(&c->mu_);
  std::vector<UniqueFd> owned;
  auto h = c->HelloLocked(&owned);
  if (!h.ok()) return h.status();
  c->session_id_ = h->session_id();
  c->incarnation_ = h->incarnation();
  c->put_in_one_request_ = h->put_in_one_request();
  c->reserve_extents_ = h->reserve_extents();
  for (int i = 0; i < h->tiers_size(); ++i) {
    uint64_t size = h->tiers(i).arena_bytes();
    struct stat st {};
    if (::fstat(owned[i].get(), &st) != 0) {
      return ErrnoStatus(errno, fmt::format("stat arena of tier '{}'", h->tiers(i).name()));
    }
    void* rw = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, owned[i].get(), 0);
    if (rw == MAP_FAILED) {
      return ErrnoStatus(errno, fmt::format("map arena of tier '{}'", h->tiers(i).name()));
    }
    void* ro = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, owned[i].get(), 0);
    if (ro == MAP_FAILED) {
      ::munmap(rw, size);
      return ErrnoStatus(errno, fmt::format("map arena of tier '{}'", h->tiers(i).name()));
    }
    c->tiers_.push_back({static_cast<char*>(rw), static_cast<const char*>(ro), size,
                         std::move(owned[i]), st.st_dev, st.st_ino});
    const uint64_t pages = size / static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) + 1;
    c->tiers_.back().populated.reset(new std::atomic<uint64_t>[(pages + 63) / 64]());
  }
  c->SetFastPathLocked(*h, owned);
  return c;
}

void Connection::SetFastPathLocked(const wire::HelloReply& h, std::vector<UniqueFd>& owned) {
  std::shared_ptr<FastPath> fast;
  if (h.has_fast_path()) {
    const size_t n = tiers_.size();
    std::shared_ptr<FastPath> current = this->fast();
    if (current && current->Same(owned[n].get(), h.fast_path().index_bytes(), owned[n + 1].get(),
                                 h.fast_path().region_offset())) {
      fast = std::move(current);  // a reconnect that got this process's region back
    } else {
      std::vector<store::ArenaMap> arenas;
      for (const Mapping& m : tiers_) arenas.push_back({m.read_base, m.size});
      auto f = FastPath::Map(owned[n].get(), h.fast_path().index_bytes(), owned[n + 1].get(),
                             h.fast_path().region_offset(), h.fast_path().region_bytes(),
                             std::move(arenas));
      // Without it every get takes the socket: slower, never wrong.
      if (f.ok()) fast = std::move(*f);
    }
  }
  MutexLock lock(&fast_mu_);
  fast_ = std::move(fast);
}

namespace {
std::atomic<uint64_t> populate_calls{0};
}  // namespace

uint64_t Connection::PopulateCallsForTest() {
  return populate_calls.load(std::memory_order_relaxed);
}

void Connection::PopulateForWrite(uint32_t tier, std::byte* p, uint64_t n) {
#ifndef MADV_POPULATE_WRITE
  constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14
#endif
  if (tier >= tiers_.size() || n == 0) return;
  const Mapping& m = tiers_[tier];
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t at = static_cast<uint64_t>(reinterpret_cast<char*>(p) - m.base);
  if (at >= m.size || n > m.size - at) return;
  const uint64_t first = at / page, last = (at + n - 1) / page;
  bool all = true;
  for (uint64_t i = first; i <= last && all; ++i) {
    all = (m.populated[i / 64].load(std::memory_order_relaxed) >> (i % 64)) & 1;
  }
  if (all) return;
  populate_calls.fetch_add(1, std::memory_order_relaxed);
  (void)::madvise(m.base + first * page, (last - first + 1) * page, MADV_POPULATE_WRITE);
  // Marked whether or not madvise worked: an older kernel (EINVAL) or a full
  // filesystem leaves the copy to fault as before, and asking again would not help.
  for (uint64_t i = first; i <= last; ++i) {
    m.populated[i / 64].fetch_or(uint64_t{1} << (i % 64), std::memory_order_relaxed);
  }
}

std::optional<Connection::Extent> Connection::TakeExtent(uint64_t bytes) {
  std::optional<Extent> e;
  {
    MutexLock lock(&extent_mu_);
    e = std::exchange(extent_, std::nullopt);
  }
  if (!e) return std::nullopt;
  if (e->bytes >= bytes && e->reconnects == reconnects()) return e;
  wire::Request abort;
  abort.mutable_abort()->set_write_id(e->id);
  SendOneway(abort);
  return std::nullopt;
}

void Connection::KeepExtent(const wire::ExtentGrant& g) {
  if (g.id() == 0) return;
  const bool inside = g.tier() < tiers_.size() && g.block_offset() <= tiers_[g.tier()].size &&
                      g.bytes() <= tiers_[g.tier()].size - g.block_offset();
  // A reconnect between the grant and here makes the extent an earlier
  // session's: the put into it then fails with Aborted and goes the long way.
  const uint64_t n = reconnects();
  if (inside) {
    MutexLock lock(&extent_mu_);
    if (!extent_) {
      extent_ = Extent{g.id(), g.tier(), g.block_offset(), g.bytes(), n};
      return;
    }
  }
  wire::Request abort;
  abort.mutable_abort()->set_write_id(g.id());
  SendOneway(abort);
}

bool Connection::extent_idle() const {
  MutexLock lock(&extent_mu_);
  return extent_.has_value();
}

std::shared_ptr<FastPath> Connection::fast() const {
  MutexLock lock(&fast_mu_);
  return fast_;
}

void Connection::SendFastReleased() {
  wire::Request req;
  req.mutable_fast_released();
  SendOneway(req);
}

Connection::~Connection() {
  // No view is left (each holds this connection): tell the daemon this
  // session's fast lease region can go to another process when it ends.
  {
    MutexLock lock(&mu_);
    bool fast = false;
    {
      MutexLock fast_lock(&fast_mu_);
      fast = fast_ != nullptr && fast_->Mine();
    }
    if (fast && !broken_) {
      wire::Request req;
      req.set_oneway(true);
      req.mutable_fast_released()->set_done(true);
      (void)SendLocked(req);
    }
  }
  for (const Mapping& m : tiers_) {
    ::munmap(m.base, m.size);
    ::munmap(const_cast<char*>(m.read_base), m.size);
  }
}

uint64_t Connection::session_id() const {
  MutexLock lock(&mu_);
  return session_id_;
}

uint64_t Connection::reconnects() const {
  MutexLock lock(&mu_);
  return reconnects_;
}

absl::Status Connection::ReconnectLocked() {
  if (!dead_.ok()) return dead_;
  std::vector<UniqueFd> owned;
  auto h = HelloLocked(&owned);
  if (!h.ok()) return h.status();
  // The views and writers of this process point into the arenas mapped at
  // Open; a daemon over other files (formatted again, resized) cannot serve
  // them, so this connection ends for good.
  bool same = static_cast<size_t>(h->tiers_size()) == tiers_.size();
  for (size_t i = 0; same && i < tiers_.size(); ++i) {
    struct stat st {};
    same = ::fstat(owned[i].get(), &st) == 0 && st.st_dev == tiers_[i].dev &&
           st.st_ino == tiers_[i].ino && h->tiers(i).arena_bytes() == tiers_[i].size;
  }
  if (!same) {
    dead_ = absl::UnavailableError(fmt::format(
        "cisternd at '{}' restarted over other arenas (formatted again or resized) than this "
        "client mapped; connect a new client",
        options_.socket_path));
    fd_.Reset();
    broken_ = true;
    return dead_;
  }
  SetFastPathLocked(*h, owned);
  uint64_t old_session = session_id_, old_incarnation = incarnation_;
  session_id_ = h->session_id();
  incarnation_ = h->incarnation();
  put_in_one_request_ = h->put_in_one_request();
  reserve_extents_ = h->reserve_extents();
  ++reconnects_;
  // Take back what the earlier session held. NotFound: nothing survived (the
  // daemon's shared memory was lost); the old lease ids then name nothing.
  wire::Request adopt;
  adopt.mutable_adopt()->set_incarnation(old_incarnation);
  adopt.mutable_adopt()->set_session_id(old_session);
  auto adopted = ExchangeLocked(adopt);
  if (!adopted.ok() && broken_) return adopted.status();
  if (adopted.ok() && !unsent_releases_.empty()) {
    wire::Request rel;
    rel.set_oneway(true);
    for (uint64_t id : unsent_releases_) rel.mutable_batch_release()->add_lease_ids(id);
    (void)SendLocked(rel);
  }
  unsent_releases_.clear();
  return absl::OkStatus();
}

absl::Status Connection::Broken() const {
  return absl::UnavailableError(
      fmt::format("cisternd closed the connection on '{}'", options_.socket_path));
}

absl::Status Connection::SendLocked(wire::Request& req) {
  if (broken_) return Broken();
  req.set_id(next_id_++);
  out_.clear();
  size_t size = req.ByteSizeLong();
  AppendFrameHeader(&out_, static_cast<uint32_t>(size));
  size_t at = out_.size();
  out_.resize(at + size);
  req.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out_.data() + at));
  size_t sent = 0;
  while (sent < out_.size()) {
    ssize_t n = ::send(fd_.get(), out_.data() + sent, out_.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      broken_ = true;
      return Broken();
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<wire::Response> Connection::ReceiveLocked(std::vector<int>* fds) {
  for (;;) {
    std::optional<std::string_view> frame;
    if (absl::Status s = in_.Next(&frame); !s.ok()) {
      broken_ = true;
      return absl::InternalError(fmt::format("bad frame from cisternd: {}", s.message()));
    }
    if (frame) {
      wire::Response resp;
      if (!resp.ParseFromArray(frame->data(), static_cast<int>(frame->size()))) {
        broken_ = true;
        return absl::InternalError("cisternd sent a response that does not parse");
      }
      return resp;
    }
    char* tail = in_.WritableTail(kReadChunk);
    ssize_t n;
    if (fds) {
      iovec iov{tail, kReadChunk};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 64)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      n = ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
      if (n > 0) {
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
          if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; ++i) {
              int fd;
              std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
              fds->push_back(fd);
            }
          }
        }
      }
    } else {
      n = ::recv(fd_.get(), tail, kReadChunk, MSG_DONTWAIT);
      if (n < 0 && errno == EAGAIN) {
        // Poll for a while before sleeping; yield so a daemon sharing this
        // CPU can run.
        auto until = std::chrono::steady_clock::now() + options_.spin;
        while (n < 0 && errno == EAGAIN && std::chrono::steady_clock::now() < until) {
          ::sched_yield();
          n = ::recv(fd_.get(), tail, kReadChunk, MSG_DONTWAIT);
        }
        if (n < 0 && errno == EAGAIN) n = ::recv(fd_.get(), tail, kReadChunk, 0);
      }
    }
    if (n > 0) {
      in_.Commit(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      broken_ = true;
      return Broken();
    }
  }
}

absl::StatusOr<wire::Response> Connection::ReplyLocked(uint64_t id) {
  for (;;) {
    auto resp = ReceiveLocked(nullptr);
    if (!resp.ok()) return resp.status();
    if (resp->id() != id) {
      if (resp->id() == 0 && resp->has_status()) {
        // The daemon rejected something at the session level.
        return absl::Status(static_cast<absl::StatusCode>(resp->status().code()),
                            resp->status().message());
      }
      continue;  // an answer to an earlier request we stopped waiting for
    }
    if (resp->has_status() && resp->status().code() != 0) {
      return absl::Status(static_cast<absl::StatusCode>(resp->status().code()),
                          resp->status().message());
    }
    return resp;
  }
}

absl::StatusOr<wire::Response> Connection::ExchangeLocked(wire::Request& req) {
  RETURN_IF_ERROR(SendLocked(req));
  return ReplyLocked(req.id());
}

absl::StatusOr<wire::Response> Connection::Call(wire::Request& req) {
  MutexLock lock(&mu_);
  if (broken_) {
    if (!options_.reconnect) return Broken();
    RETURN_IF_ERROR(ReconnectLocked());
  }
  if (absl::Status s = SendLocked(req); !s.ok()) {
    // The daemon never got it (it was gone before the send): send it again on
    // a new connection.
    if (!options_.reconnect || !broken_) return s;
    RETURN_IF_ERROR(ReconnectLocked());
    RETURN_IF_ERROR(SendLocked(req));
  }
  return ReplyLocked(req.id());
}

void Connection::SendOneway(wire::Request& req) {
  req.set_oneway(true);
  MutexLock lock(&mu_);
  absl::Status sent = broken_ ? Broken() : SendLocked(req);
  if (sent.ok() || !options_.reconnect) return;
  if (ReconnectLocked().ok() && SendLocked(req).ok()) return;
  // The daemon is down: keep the lease ids for after the next reconnect
  // (bounded; past that the leases end with this process).
  constexpr size_t kMaxUnsent = 1 << 20;
  if (req.has_release() && unsent_releases_.size() < kMaxUnsent) {
    unsent_releases_.push_back(req.release().lease_id());
  }
  for (uint64_t id : req.batch_release().lease_ids()) {
    if (unsent_releases_.size() < kMaxUnsent) unsent_releases_.push_back(id);
  }
}

}  // namespace cistern::client_internal

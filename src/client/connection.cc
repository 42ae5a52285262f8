#include "src/client/connection.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "fmt/format.h"
#include "src/common/errno_status.h"
#include "src/common/fmt_absl.h"

namespace cistern::client_internal {
namespace {
constexpr uint32_t kProtocolVersion = 1;
constexpr size_t kReadChunk = 64 * 1024;
}  // namespace

absl::StatusOr<std::shared_ptr<Connection>> Connection::Open(const ConnectOptions& options) {
  std::shared_ptr<Connection> c(new Connection);
  c->socket_path_ = options.socket_path.empty() ? DefaultSocketPath() : options.socket_path;
  c->spin_ = options.spin;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (c->socket_path_.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(
        fmt::format("socket path '{}' is too long for a Unix socket", c->socket_path_));
  }
  std::memcpy(addr.sun_path, c->socket_path_.data(), c->socket_path_.size());
  MutexLock lock(&c->mu_);
  c->fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!c->fd_.valid()) return ErrnoStatus(errno, "socket");
  if (::connect(c->fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return absl::UnavailableError(fmt::format("cisternd is not running at '{}': {}",
                                              c->socket_path_, std::strerror(errno)));
  }
  wire::Request req;
  auto* hello = req.mutable_hello();
  hello->set_protocol_version(kProtocolVersion);
  hello->set_token(options.token);
  hello->set_client_name(options.client_name.empty() ? fmt::format("pid-{}", getpid())
                                                     : options.client_name);
  absl::Status sent = c->SendLocked(req);
  // Even if sending failed, a refusal (uid, session limit) may be waiting.
  c->broken_ = false;
  std::vector<int> fds;
  auto resp = c->ReceiveLocked(&fds);
  std::vector<UniqueFd> owned;
  for (int fd : fds) owned.emplace_back(fd);
  if (!resp.ok()) return sent.ok() ? resp.status() : sent;
  if (resp->has_status() && resp->status().code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(resp->status().code()),
                        resp->status().message());
  }
  if (!resp->has_hello()) return absl::InternalError("cisternd did not answer hello");
  const wire::HelloReply& h = resp->hello();
  if (static_cast<size_t>(h.tiers_size()) != owned.size()) {
    return absl::InternalError(fmt::format("hello announced {} tiers but passed {} descriptors",
                                           h.tiers_size(), owned.size()));
  }
  c->session_id_ = h.session_id();
  for (int i = 0; i < h.tiers_size(); ++i) {
    uint64_t size = h.tiers(i).arena_bytes();
    void* rw = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, owned[i].get(), 0);
    if (rw == MAP_FAILED) {
      return ErrnoStatus(errno, fmt::format("map arena of tier '{}'", h.tiers(i).name()));
    }
    void* ro = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, owned[i].get(), 0);
    if (ro == MAP_FAILED) {
      ::munmap(rw, size);
      return ErrnoStatus(errno, fmt::format("map arena of tier '{}'", h.tiers(i).name()));
    }
    c->tiers_.push_back({static_cast<char*>(rw), static_cast<const char*>(ro), size});
  }
  return c;
}

Connection::~Connection() {
  for (const Mapping& m : tiers_) {
    ::munmap(m.base, m.size);
    ::munmap(const_cast<char*>(m.read_base), m.size);
  }
}

absl::Status Connection::Broken() const {
  return absl::UnavailableError(
      fmt::format("cisternd closed the connection on '{}'", socket_path_));
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
        auto until = std::chrono::steady_clock::now() + spin_;
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

absl::StatusOr<wire::Response> Connection::Call(wire::Request& req) {
  MutexLock lock(&mu_);
  if (absl::Status s = SendLocked(req); !s.ok()) return s;
  for (;;) {
    auto resp = ReceiveLocked(nullptr);
    if (!resp.ok()) return resp.status();
    if (resp->id() != req.id()) {
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

void Connection::SendOneway(wire::Request& req) {
  req.set_oneway(true);
  MutexLock lock(&mu_);
  (void)SendLocked(req);
}

}  // namespace cistern::client_internal

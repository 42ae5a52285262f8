// One thread polls the listening socket, an eventfd (stop and test wakeups)
// and every open connection. A connection goes through three phases:
// reading (until the blank line that ends the headers, the size limit or the
// deadline), writing (the one response), and draining. Draining is a
// "lingering close": after the response is sent the server shuts down its
// side for writing and reads and discards whatever the client still sends
// until it closes, so that closing with unread input (an oversized request,
// a body) cannot make the kernel reset the connection and destroy the
// response before the client has read it. One deadline, set at accept, bounds
// reading and writing; draining gets a short deadline of its own.
#include "src/daemon/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "src/common/errno_status.h"

namespace cistern::daemon {
namespace {

constexpr size_t kReadChunk = 4096;
constexpr size_t kMaxDrainBytes = 1 << 20;
constexpr auto kDrainTime = std::chrono::seconds(1);

// The header block ends with an empty line; tolerate bare LF line ends.
size_t HeaderEnd(std::string_view in) {
  size_t crlf = in.find("\r\n\r\n");
  size_t lf = in.find("\n\n");
  if (crlf == std::string_view::npos && lf == std::string_view::npos) return std::string_view::npos;
  if (crlf != std::string_view::npos && (lf == std::string_view::npos || crlf < lf)) {
    return crlf + 4;
  }
  return lf + 2;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c <= ' ' || c >= 0x7f || std::strchr("()<>@,;:\\\"/[]?={}", c)) return false;
  }
  return true;
}

HttpResponse Plain(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.body += '\n';
  return r;
}

}  // namespace

std::string_view HttpReason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

HttpServer::HttpServer(HttpServerOptions options, Clock* clock)
    : options_(std::move(options)), clock_(clock) {
  wake_fd_.Reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(std::string path, HttpHandler handler) {
  handlers_[std::move(path)] = std::move(handler);
}

void HttpServer::Every(Clock::Duration period, std::function<void()> fn) {
  tick_period_ = period;
  tick_ = std::move(fn);
}

std::string HttpServer::endpoint() const {
  uint16_t port = port_ != 0 ? port_ : options_.port;
  if (options_.address.find(':') != std::string::npos) {
    return fmt::format("[{}]:{}", options_.address, port);
  }
  return fmt::format("{}:{}", options_.address, port);
}

absl::Status HttpServer::Bind() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string port = std::to_string(options_.port);
  if (int rc = ::getaddrinfo(options_.address.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::InvalidArgumentError(fmt::format("address '{}' is not a numeric IP address: {}",
                                                  options_.address, ::gai_strerror(rc)));
  }
  UniqueFd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    ::freeaddrinfo(res);
    return ErrnoStatus(errno, "socket");
  }
  // Rebinding a port with connections in TIME_WAIT (a restart) is fine; on
  // Linux this does not let two listeners share a port.
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc = ::bind(fd.get(), res->ai_addr, res->ai_addrlen);
  int err = errno;
  ::freeaddrinfo(res);
  if (rc != 0) {
    if (err == EADDRINUSE) {
      return absl::FailedPreconditionError(
          fmt::format("{}: port {} is already in use", endpoint(), options_.port));
    }
    return ErrnoStatus(err, fmt::format("bind {}", endpoint()));
  }
  if (::listen(fd.get(), 64) != 0) return ErrnoStatus(errno, fmt::format("listen {}", endpoint()));
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                      : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  listen_fd_ = std::move(fd);
  return absl::OkStatus();
}

void HttpServer::Start() {
  Clock::TimePoint first_tick = clock_->Now() + tick_period_;
  thread_ = std::thread([this, first_tick] { Loop(first_tick); });
}

void HttpServer::Stop() {
  if (thread_.joinable()) {
    stop_.store(true);
    WakeForTest();
    thread_.join();
  }
  listen_fd_.Reset();
}

void HttpServer::WakeForTest() {
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  (void)n;
}

void HttpServer::Loop(Clock::TimePoint next_tick) {
  std::vector<pollfd> fds;
  while (!stop_.load()) {
    fds.clear();
    fds.push_back({wake_fd_.get(), POLLIN, 0});
    bool accepting = conns_.size() < static_cast<size_t>(options_.max_connections);
    fds.push_back({accepting ? listen_fd_.get() : -1, POLLIN, 0});
    Clock::TimePoint now = clock_->Now();
    Clock::Duration wait = std::chrono::minutes(1);
    if (tick_) wait = std::max(Clock::Duration(0), next_tick - now);
    for (auto& [fd, c] : conns_) {
      short events = c.phase == Phase::kWriting ? POLLOUT : POLLIN;
      fds.push_back({fd, events, 0});
      wait = std::min(wait, std::max(Clock::Duration(0), c.deadline - now));
    }
    int timeout_ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(wait).count());
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) {
      spdlog::error("metrics endpoint: poll: {}", std::strerror(errno));
      break;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      ssize_t r = ::read(wake_fd_.get(), &v, sizeof v);
      (void)r;
    }
    if (fds[1].revents & POLLIN) Accept();
    for (size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      auto it = conns_.find(fds[i].fd);
      if (it == conns_.end()) continue;
      if (!Advance(&it->second, fds[i].revents)) conns_.erase(it);
    }
    now = clock_->Now();
    if (tick_ && now >= next_tick) {
      tick_();
      next_tick = now + tick_period_;
    }
    for (auto it = conns_.begin(); it != conns_.end();) {
      Conn& c = it->second;
      if (now < c.deadline) {
        ++it;
        continue;
      }
      if (c.phase == Phase::kReading) {
        Queue(&c, Plain(408, "timed out waiting for the request"));
        c.deadline = now + kDrainTime;
        ++it;
        continue;
      }
      it = conns_.erase(it);
    }
  }
  conns_.clear();
}

void HttpServer::Accept() {
  while (conns_.size() < static_cast<size_t>(options_.max_connections)) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        spdlog::warn("metrics endpoint: accept: {}", std::strerror(errno));
      }
      return;
    }
    Conn& c = conns_[fd];
    c.fd.Reset(fd);
    c.deadline = clock_->Now() + options_.request_timeout;
  }
}

bool HttpServer::Advance(Conn* c, short revents) {
  if (c->phase == Phase::kWriting) return Send(c);
  // Reading or draining: take what has arrived.
  char buf[kReadChunk];
  for (;;) {
    ssize_t n = ::recv(c->fd.get(), buf, sizeof buf, 0);
    if (n == 0) {
      if (c->phase == Phase::kDraining) return false;
      // The client closed its side: answer what it sent, if anything.
      if (c->in.empty()) return false;
      Queue(c, Plain(400, "incomplete request"));
      return Send(c);
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return true;
      return false;
    }
    if (c->phase == Phase::kDraining) {
      c->drained += n;
      if (c->drained > kMaxDrainBytes) return false;
      continue;
    }
    c->in.append(buf, n);
    size_t end = HeaderEnd(c->in);
    if (end != std::string::npos && end <= options_.max_request_bytes) {
      Queue(c, Respond(std::string_view(c->in).substr(0, end)));
      return Send(c);
    }
    if (c->in.size() > options_.max_request_bytes) {
      Queue(c, Plain(400, fmt::format("request larger than {} bytes", options_.max_request_bytes)));
      return Send(c);
    }
  }
}

bool HttpServer::Send(Conn* c) {
  while (c->sent < c->out.size()) {
    ssize_t n = ::send(c->fd.get(), c->out.data() + c->sent, c->out.size() - c->sent, MSG_NOSIGNAL);
    if (n > 0) {
      c->sent += n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    return false;
  }
  ::shutdown(c->fd.get(), SHUT_WR);
  c->phase = Phase::kDraining;
  c->in.clear();
  c->deadline = std::min(c->deadline, clock_->Now() + kDrainTime);
  return true;
}

void HttpServer::Queue(Conn* c, const HttpResponse& r) {
  c->out = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
      r.status, HttpReason(r.status), r.content_type, r.body.size(),
      r.status == 405 ? "Allow: GET\r\n" : "");
  c->out += r.body;
  c->sent = 0;
  c->phase = Phase::kWriting;
}

HttpResponse HttpServer::Respond(std::string_view request) const {
  // Request line: METHOD SP request-target SP HTTP-version.
  size_t eol = request.find('\n');
  std::string_view line = request.substr(0, eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Plain(400, "malformed request line");
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!IsToken(method)) return Plain(400, "malformed method");
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return Plain(400, "only HTTP/1.0 and HTTP/1.1 are served");
  }
  if (target.empty() || target[0] != '/') return Plain(400, "the request target must be a path");
  // Header lines: a field name, a colon, a value.
  std::string_view rest = request.substr(eol + 1);
  while (!rest.empty()) {
    size_t next = rest.find('\n');
    std::string_view h = rest.substr(0, next);
    rest = next == std::string_view::npos ? std::string_view() : rest.substr(next + 1);
    if (!h.empty() && h.back() == '\r') h.remove_suffix(1);
    if (h.empty()) break;
    size_t colon = h.find(':');
    if (colon == std::string_view::npos || !IsToken(h.substr(0, colon))) {
      return Plain(400, "malformed header line");
    }
  }
  if (method != "GET") return Plain(405, "only GET is served");
  std::string_view path = target.substr(0, target.find('?'));
  auto it = handlers_.find(path);
  if (it == handlers_.end()) return Plain(404, "not found");
  return it->second();
}

}  // namespace cistern::daemon

#include "src/service/http_server.h"

#include <httplib.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/statusor.h"
#include "fmt/format.h"
#include "src/common/unique_fd.h"

namespace cistern::service {
namespace {

absl::Status ErrnoStatus(int err, const std::string& what) {
  return absl::Status(
      err == EACCES ? absl::StatusCode::kPermissionDenied : absl::StatusCode::kUnavailable,
      fmt::format("{}: {}", what, std::strerror(err)));
}

// The address as getaddrinfo parses it, numerically only.
absl::StatusOr<addrinfo*> Resolve(const std::string& address, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &res);
      rc != 0) {
    return absl::InvalidArgumentError(
        fmt::format("address '{}' is not a numeric IP address: {}", address, ::gai_strerror(rc)));
  }
  return res;
}

// Rebinding a port with connections in TIME_WAIT (a restart) is fine; on
// Linux this does not let two listeners share a port. (The library's default
// sets SO_REUSEPORT, which would let a second daemon share the first's port.)
void ReuseAddress(int fd) {
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
}

}  // namespace

HttpServer::HttpServer(HttpServerOptions options) : options_(std::move(options)) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(std::string path, HttpHandler handler) {
  handlers_[std::move(path)] = std::move(handler);
}

std::string HttpServer::endpoint() const {
  uint16_t p = port_ ? port_ : options_.port;
  if (options_.address.find(':') != std::string::npos) {
    return fmt::format("[{}]:{}", options_.address, p);
  }
  return fmt::format("{}:{}", options_.address, p);
}

absl::Status HttpServer::BindError() const {
  auto res = Resolve(options_.address, options_.port);
  if (!res.ok()) return res.status();
  UniqueFd fd(::socket((*res)->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int rc = fd.valid()
               ? (ReuseAddress(fd.get()), ::bind(fd.get(), (*res)->ai_addr, (*res)->ai_addrlen))
               : -1;
  int err = errno;
  ::freeaddrinfo(*res);
  if (rc == 0) return absl::UnavailableError(fmt::format("cannot listen on {}", endpoint()));
  if (err == EADDRINUSE) {
    return absl::FailedPreconditionError(
        fmt::format("{}: port {} is already in use", endpoint(), options_.port));
  }
  return ErrnoStatus(err, fmt::format("bind {}", endpoint()));
}

absl::Status HttpServer::Start() {
  if (server_) return absl::FailedPreconditionError("the HTTP server was started before");
  auto res = Resolve(options_.address, options_.port);
  if (!res.ok()) return res.status();
  ::freeaddrinfo(*res);

  auto server = std::make_unique<httplib::Server>();
  const int threads = std::max(1, options_.threads);
  server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server->set_socket_options(ReuseAddress);
  server->set_keep_alive_max_count(1);  // one request per connection
  server->set_read_timeout(options_.request_timeout);
  server->set_write_timeout(options_.request_timeout);
  server->set_payload_max_length(0);  // GET has no body
  server->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    auto it = handlers_.find(req.path);
    if (it == handlers_.end()) {
      res.status = 404;
      res.set_content(fmt::format("no such path: {}\n", req.path), "text/plain; charset=utf-8");
    } else if ((req.has_header("Content-Length") &&
                req.get_header_value("Content-Length") != "0") ||
               req.has_header("Transfer-Encoding")) {
      // Refused before the library reads the body.
      res.status = 413;
      res.set_content("a request to this server has no body\n", "text/plain; charset=utf-8");
    } else if (req.method != "GET") {
      res.status = 405;
      res.set_header("Allow", "GET");
      res.set_content(fmt::format("{} is not served; use GET\n", req.method),
                      "text/plain; charset=utf-8");
    } else {
      HttpResponse r = it->second();
      res.status = r.status;
      res.set_content(std::move(r.body), r.content_type.c_str());
    }
    return httplib::Server::HandlerResponse::Handled;
  });

  if (options_.port == 0) {
    int p = server->bind_to_any_port(options_.address);
    if (p <= 0) return BindError();
    port_ = static_cast<uint16_t>(p);
  } else {
    if (!server->bind_to_port(options_.address, options_.port)) return BindError();
    port_ = options_.port;
  }
  server_ = std::move(server);
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_.store(true);
  });
  // Stop() only reaches a server that runs: wait until it does.
  while (!server_->is_running() && !listen_returned_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace cistern::service

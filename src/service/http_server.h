// cisternd's /metrics and /health over HTTP/1.1, served by cpp-httplib
// (Debian's libcpp-httplib): a few worker threads, GET only, one request per
// connection (every response says `Connection: close`).
//
// What it answers:
//   404  a path with no handler (exact match; the query string is ignored)
//   405  a method other than GET on a served path (with `Allow: GET`)
//   400  a request the library cannot parse (a bad request line, a version
//        other than HTTP/1.x, request line or headers over 8 KiB; a header
//        line without a colon is ignored)
//   413  a request with a body (refused before it is read)
//   else what the handler for the path returns
// A client that sends nothing for `request_timeout` is disconnected; a slow
// client holds one worker at most that long per read, the others keep
// serving.
//
// Thread-safety: Handle() before Start(); handlers run on the worker
// threads, concurrently, and must be thread-safe. Stop() (or the destructor)
// from any other thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"

namespace httplib {
class Server;
}

namespace cistern::service {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpResponse()>;

struct HttpServerOptions {
  std::string address = "127.0.0.1";  // numeric IPv4 or IPv6
  uint16_t port = 0;                  // 0: the kernel picks a free port
  std::chrono::seconds request_timeout{2};
  int threads = 4;
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves GET `path` (exact match, e.g. "/metrics") with `handler`.
  void Handle(std::string path, HttpHandler handler);

  // Binds, listens and serves. FailedPrecondition naming the address and port
  // when the port is taken; InvalidArgument for an address that is not
  // numeric; the errno's code otherwise. Once.
  absl::Status Start();
  // The bound port (the chosen one when options.port was 0). After Start().
  uint16_t port() const { return port_; }
  // "127.0.0.1:9464", "[::1]:9464": the endpoint, for messages.
  std::string endpoint() const;

  // Stops accepting, lets the workers finish and releases the port. Idempotent.
  void Stop();

 private:
  // Why binding address:port failed, found by trying it ourselves (the
  // library reports only that it failed).
  absl::Status BindError() const;

  const HttpServerOptions options_;
  std::map<std::string, HttpHandler, std::less<>> handlers_;  // constant after Start
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  uint16_t port_ = 0;
};

}  // namespace cistern::service

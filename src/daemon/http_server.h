// A minimal HTTP/1.1 server for cisternd's /metrics and /health: one thread,
// poll(2) over the listening socket and at most `max_connections` clients,
// GET only, one request per connection (every response says
// `Connection: close` and the server closes after sending it).
//
// What it answers:
//   400  a request line or header block it cannot parse, a version other than
//        HTTP/1.x, or a request larger than `max_request_bytes`
//   404  a path with no handler
//   405  a method other than GET (with `Allow: GET`)
//   408  a client that has not sent a whole request within `request_timeout`
//   else what the handler for the path returns (the query string is ignored)
// A client that does not take its response within `request_timeout` is
// dropped. Request bodies are never read.
//
// Thread-safety: Handle(), Every() and Bind() before Start(); handlers run on the
// server's thread, one at a time, and must be thread-safe with respect to the
// rest of the program. Stop() (or the destructor) from any other thread joins
// the server thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "src/common/clock.h"
#include "src/common/unique_fd.h"

namespace cistern::daemon {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpResponse()>;

struct HttpServerOptions {
  std::string address = "127.0.0.1";  // numeric IPv4 or IPv6
  uint16_t port = 0;                  // 0: the kernel picks a free port
  size_t max_request_bytes = 8192;    // request line and headers
  Clock::Duration request_timeout = std::chrono::seconds(5);
  int max_connections = 16;  // more wait in the listen backlog
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, Clock* clock);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves GET `path` (exact match, e.g. "/metrics") with `handler`.
  void Handle(std::string path, HttpHandler handler);
  // Also calls `fn` on the server thread about once every `period`, for
  // housekeeping that should stay off other threads' paths.
  void Every(Clock::Duration period, std::function<void()> fn);

  // Binds and listens. FailedPrecondition naming the address and port when the
  // port is taken; InvalidArgument for an address that is not numeric; the
  // errno's code otherwise.
  absl::Status Bind();
  // The bound port (the chosen one when options.port was 0). After Bind().
  uint16_t port() const { return port_; }
  // "127.0.0.1:9464", "[::1]:9464": the bound endpoint, for messages.
  std::string endpoint() const;

  // Starts the server thread. After a successful Bind().
  void Start();
  // Closes every connection, joins the thread and releases the port. Idempotent.
  void Stop();

  // Makes the server thread look at the clock now (tests advance a FakeClock,
  // then call this instead of sleeping).
  void WakeForTest();

 private:
  enum class Phase { kReading, kWriting, kDraining };
  struct Conn {
    UniqueFd fd;
    Phase phase = Phase::kReading;
    std::string in;
    std::string out;
    size_t sent = 0;
    size_t drained = 0;
    Clock::TimePoint deadline;
  };

  void Loop(Clock::TimePoint next_tick);
  void Accept();
  // Moves a connection on after poll reported `revents`; false when it is done.
  bool Advance(Conn* c, short revents);
  // Sends what it can of the response; once all is sent, starts draining.
  bool Send(Conn* c);
  void Queue(Conn* c, const HttpResponse& r);
  HttpResponse Respond(std::string_view request) const;

  const HttpServerOptions options_;
  Clock* const clock_;
  std::map<std::string, HttpHandler, std::less<>> handlers_;  // constant after Start
  Clock::Duration tick_period_{};                             // constant after Start
  std::function<void()> tick_;                                // constant after Start
  UniqueFd listen_fd_;
  UniqueFd wake_fd_;  // eventfd: Stop() and WakeForTest()
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::map<int, Conn> conns_;  // by fd; server thread only
};

// The status line's reason phrase for the codes this server sends.
std::string_view HttpReason(int status);

}  // namespace cistern::daemon

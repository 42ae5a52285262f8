#include "src/daemon/server.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "src/common/errno_status.h"
#include "src/common/fmt_absl.h"
#include "src/common/wire_duration.h"
#include "src/daemon/process.h"

namespace cistern::daemon {
namespace {

constexpr uint64_t kListenTag = UINT64_MAX;
constexpr uint64_t kWakeTag = UINT64_MAX - 1;
constexpr uint64_t kNotifyTag = UINT64_MAX - 2;
constexpr uint64_t kDurableTag = UINT64_MAX - 3;
constexpr size_t kReadChunk = 64 * 1024;

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

sockaddr_un UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  return addr;
}

}  // namespace

Server::Server(ServerOptions options, store::ObjectStore* store, stream::StreamManager* streams,
               Clock* clock)
    : options_(std::move(options)),
      store_(store),
      clock_(clock),
      handler_(store, HandlerOptions{options_.max_batch}),
      streams_(streams),
      rejections_(/*per_second=*/20, /*burst=*/100, clock) {
  start_time_ = clock_->Now();
  start_unix_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  epoll_fd_.Reset(::epoll_create1(EPOLL_CLOEXEC));
  wake_fd_.Reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev);
  notify_fd_.Reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  ev.data.u64 = kNotifyTag;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, notify_fd_.get(), &ev);
  if (streams != nullptr) {
    ledger_ = streams->backend();
    durable_fd_.Reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    ev.data.u64 = kDurableTag;
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, durable_fd_.get(), &ev);
    ledger_->SetSyncListener([fd = durable_fd_.get()] {
      uint64_t one = 1;
      ssize_t n = ::write(fd, &one, sizeof one);
      (void)n;
    });
  }
}

void Server::NotifyPublished() {
  uint64_t one = 1;
  ssize_t n = ::write(notify_fd_.get(), &one, sizeof one);
  (void)n;
}

Server::~Server() {
  if (ledger_ != nullptr) ledger_->SetSyncListener(nullptr);
}

template <typename... Args>
void Server::LogRejection(spdlog::level::level_enum level, fmt::format_string<Args...> format,
                          Args&&... args) {
  if (!spdlog::default_logger_raw()->should_log(level)) return;
  uint64_t suppressed = 0;
  if (!rejections_.Allow(&suppressed)) return;
  std::string line = fmt::format(format, std::forward<Args>(args)...);
  if (suppressed > 0) line += fmt::format(" ({} similar lines suppressed)", suppressed);
  spdlog::log(level, "{}", line);
}

absl::Status Server::Listen() {
  const std::string& path = options_.socket_path;
  sockaddr_un addr = UnixAddress(path);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    // Someone answering on it is a live daemon; otherwise the file is stale.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return absl::FailedPreconditionError(
          fmt::format("another cisternd is listening on '{}'", path));
    }
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          fmt::format("socket_path '{}' exists and is not a socket", path));
    }
    ::unlink(path.c_str());
  }
  listen_fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_.valid()) return ErrnoStatus(errno, "socket");
  if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return ErrnoStatus(errno, fmt::format("bind '{}'", path));
  }
  bool only_me = options_.allowed_uids.size() == 1 && options_.allowed_uids[0] == ::geteuid();
  ::chmod(path.c_str(), only_me ? 0600 : 0666);
  if (::listen(listen_fd_.get(), 512) != 0) return ErrnoStatus(errno, "listen " + path);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, listen_fd_.get(), &ev);
  return absl::OkStatus();
}

void Server::Shutdown() {
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  (void)n;
}

void Server::WatchRecoveredHolders(std::vector<RecoveredHolder> holders) {
  for (RecoveredHolder& h : holders) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = h.session;
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, h.pidfd.get(), &ev);
    store::SessionId id = h.session;
    holders_.emplace(id, std::move(h));
  }
}

void Server::HolderExited(store::SessionId session) {
  auto it = holders_.find(session);
  if (it == holders_.end()) return;
  auto info = store_->SessionInfo(session);
  spdlog::info(
      "pid {} exited without reconnecting: its {} leases and {} writes from before the "
      "restart end",
      it->second.pid, info.leases, info.pending_writes);
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, it->second.pidfd.get(), nullptr);
  holders_.erase(it);
  store_->CloseSession(session);
}

void Server::HandleAdopt(Session* s, const wire::Request& req, wire::Response* resp) {
  resp->set_id(req.id());
  const wire::Adopt& a = req.adopt();
  auto it = std::find_if(holders_.begin(), holders_.end(), [&](const auto& kv) {
    return kv.second.incarnation == a.incarnation() && kv.second.old_session_id == a.session_id();
  });
  if (it == holders_.end()) {
    SetStatus(absl::NotFoundError(fmt::format(
                  "no leases of session {} of cisternd incarnation {} survived the restart",
                  a.session_id(), a.incarnation())),
              resp);
    return;
  }
  if (it->second.pid != s->pid || it->second.uid != s->uid) {
    SetStatus(absl::PermissionDeniedError(
                  fmt::format("session {} of incarnation {} belonged to pid {}, not pid {}",
                              a.session_id(), a.incarnation(), it->second.pid, s->pid)),
              resp);
    return;
  }
  auto adopted = store_->AdoptSession(it->first, s->id);
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, it->second.pidfd.get(), nullptr);
  holders_.erase(it);
  spdlog::info("session {} (pid {}) took back {} leases and {} writes from before the restart",
               s->id, s->pid, adopted.leases, adopted.writes);
  resp->mutable_adopt()->set_leases(adopted.leases);
  resp->mutable_adopt()->set_writes(adopted.writes);
}

void Server::Every(Clock::Duration period, std::function<void()> fn) {
  tick_period_ = period;
  tick_ = std::move(fn);
}

void Server::RunTick() {
  if (!tick_) return;
  Clock::TimePoint now = clock_->Now();
  if (now < next_tick_) return;
  tick_();
  next_tick_ = now + tick_period_;
}

void Server::Run() {
  std::vector<epoll_event> events(256);
  seen_free_epoch_ = store_->free_epoch();
  next_tick_ = clock_->Now() + tick_period_;
  Clock::TimePoint last_busy = clock_->Now() - options_.busy_poll;
  while (!stopping_) {
    bool polling = clock_->Now() - last_busy < options_.busy_poll;
    int n =
        ::epoll_wait(epoll_fd_.get(), events.data(), events.size(), polling ? 0 : NextTimeoutMs());
    if (n < 0 && errno != EINTR) {
      spdlog::error("epoll_wait: {}", std::strerror(errno));
      break;
    }
    if (n > 0) {
      last_busy = clock_->Now();
    } else if (polling) {
      ::sched_yield();  // let a client on this CPU run while we poll
    }
    for (int i = 0; i < n; ++i) {
      uint64_t tag = events[i].data.u64;
      if (tag == kListenTag) {
        Accept();
        continue;
      }
      if (tag == kWakeTag) {
        stopping_ = true;
        continue;
      }
      if (tag == kDurableTag) {
        uint64_t count;
        while (::read(durable_fd_.get(), &count, sizeof count) > 0) {
        }
        continue;  // ReleaseHeld below
      }
      if (tag == kNotifyTag) {
        uint64_t count;
        while (::read(notify_fd_.get(), &count, sizeof count) > 0) {
        }
        publish_changed_ = true;
        continue;
      }
      if (tag >= kRecoveredSessionBase && tag < stream::kStreamSession) {
        HolderExited(tag);
        continue;
      }
      auto it = sessions_.find(tag);
      if (it == sessions_.end()) continue;  // closed earlier in this round
      Session* s = it->second.get();
      if (events[i].events & EPOLLOUT) Flush(s);
      if (sessions_.count(tag) && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        OnReadable(s, (events[i].events & (EPOLLHUP | EPOLLERR)) != 0);
      }
    }
    ReleaseHeld();
    RetryParked();
    ExpireDeadlines();
    RunTick();
  }
  Drain();
}

void Server::Accept() {
  for (;;) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR) spdlog::warn("accept: {}", std::strerror(errno));
      return;
    }
    auto s = std::make_unique<Session>(options_.max_frame_bytes);
    s->id = next_session_id_++;
    s->fd.Reset(fd);
    ucred cred{};
    socklen_t len = sizeof cred;
    absl::Status refuse;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      refuse = absl::PermissionDeniedError("peer credentials unavailable");
    } else if (std::find(options_.allowed_uids.begin(), options_.allowed_uids.end(), cred.uid) ==
               options_.allowed_uids.end()) {
      refuse = absl::PermissionDeniedError(fmt::format("uid {} is not in allowed_uids", cred.uid));
    } else if (said_hello_ >= options_.max_sessions) {
      refuse = absl::ResourceExhaustedError(
          fmt::format("cisternd already serves max_sessions={} sessions", options_.max_sessions));
    }
    s->pid = cred.pid;
    s->uid = cred.uid;
    if (!refuse.ok()) {
      LogRejection(spdlog::level::info, "refused connection from pid {}: {}", cred.pid,
                   refuse.message());
      wire::Response resp;
      SetStatus(refuse, &resp);
      std::string frame;
      AppendFrameHeader(&frame, resp.ByteSizeLong());
      resp.AppendToString(&frame);
      ssize_t n = ::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL);
      (void)n;
      continue;  // s closes the fd
    }
    if (pending_ >= options_.max_pending_sessions) DropOldestPending();
    s->hello_deadline = clock_->Now() + options_.hello_timeout;
    s->interest = EPOLLIN;
    epoll_event ev{};
    ev.events = s->interest;
    ev.data.u64 = s->id;
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev);
    spdlog::debug("session {} opened by pid {} uid {}", s->id, s->pid, s->uid);
    sessions_.emplace(s->id, std::move(s));
    ++pending_;
  }
}

void Server::DropOldestPending() {
  // Session ids grow, so the first one found is the oldest.
  for (auto& [id, s] : sessions_) {
    if (s->hello_done || s->closing) continue;
    ReplyError(s.get(), 0,
               absl::ResourceExhaustedError(fmt::format(
                   "cisternd has max_pending_sessions={} connections that have not said hello; "
                   "this, the oldest, is closed",
                   options_.max_pending_sessions)),
               /*close=*/true);
    Session* oldest = s.get();
    uint64_t oldest_id = id;  // `id` dies with the map entry
    Flush(oldest);            // the error, if the socket takes it at once
    if (sessions_.count(oldest_id)) CloseSession(oldest, "dropped: max_pending_sessions");
    return;
  }
}

void Server::OnReadable(Session* s, bool hangup) {
  uint64_t id = s->id;
  for (int i = 0; i < 4; ++i) {
    if (!MayRead(s)) {
      // Not served and read far enough ahead: the rest waits in the socket.
      // A client that is gone cannot take its replies.
      if (hangup) {
        CloseSession(s, "closed");
        return;
      }
      break;
    }
    char* tail = s->in.WritableTail(kReadChunk);
    ssize_t n = ::recv(s->fd.get(), tail, kReadChunk, 0);
    if (n > 0) {
      s->in.Commit(n);
      ProcessFrames(s);
      if (!sessions_.count(id)) return;
      if (s->closing || static_cast<size_t>(n) < kReadChunk) break;
      continue;
    }
    if (n == 0) {
      CloseSession(s, s->in.buffered() ? "closed mid-frame" : "closed");
      return;
    }
    if (errno == EAGAIN || errno == EINTR) break;
    CloseSession(s, std::strerror(errno));
    return;
  }
  Flush(s);
}

void Server::ProcessFrames(Session* s) {
  while (!s->parked && !s->closing) {
    if (s->out.size() >= options_.max_unsent_reply_bytes) {
      s->stalled = true;  // Flush serves the rest once the client takes its replies
      return;
    }
    std::optional<std::string_view> frame;
    absl::Status st = s->in.Next(&frame);
    if (!st.ok()) {
      ReplyError(s, 0, st, /*close=*/true);
      RecordRequest(Verb::kInvalid, st.code(), clock_->Now());
      return;
    }
    if (!frame) return;
    HandleFrame(s, *frame);
  }
}

void Server::HandleFrame(Session* s, std::string_view frame) {
  Clock::TimePoint start = clock_->Now();
  s->last_request = start;
  wire::Request req;
  if (!req.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) {
    // Before hello, a frame that is not a Request is not a client of ours;
    // after it, a few are a bug worth an error each, many are an attack.
    ++s->malformed;
    bool close = !s->hello_done || s->malformed >= kMaxMalformedFrames;
    ReplyError(s, 0,
               absl::InvalidArgumentError(fmt::format(
                   "malformed request: {} bytes do not parse as a Request{}", frame.size(),
                   !close           ? ""
                   : !s->hello_done ? " (before hello)"
                                    : fmt::format(" ({} malformed frames)", s->malformed))),
               close);
    RecordRequest(Verb::kInvalid, absl::StatusCode::kInvalidArgument, start);
    return;
  }
  if (!s->hello_done) {
    if (!req.has_hello()) {
      ReplyError(s, req.id(),
                 absl::FailedPreconditionError("the first request of a session must be hello"),
                 /*close=*/true);
      RecordRequest(VerbOf(req), absl::StatusCode::kFailedPrecondition, start);
      return;
    }
    absl::Status hello = HandleHello(s, req);
    RecordRequest(Verb::kHello, hello.code(), start);
    return;
  }
  wire::Response resp;
  if (!stopping_ && Dispatch(s, req, StreamHandler::Attempt::kFirst, &resp)) {
    s->parked = std::make_unique<wire::Request>(std::move(req));
    s->parked_since = start;
    uint64_t wait_ms = s->parked->has_create()           ? s->parked->create().wait_ms()
                       : s->parked->has_put()            ? s->parked->put().create().wait_ms()
                       : s->parked->has_wait_published() ? s->parked->wait_published().wait_ms()
                       : s->parked->has_get()            ? RemoteGetWaitMs(s->parked->get())
                       : s->parked->has_replicate()      ? ReplicateWaitMs(s->parked->replicate())
                                                         : StreamHandler::WaitMs(*s->parked);
    s->parked_deadline = start + WaitFromWireMs(wait_ms);
    parked_.push_back(s->id);
    return;
  }
  auto code = static_cast<absl::StatusCode>(resp.has_status() ? resp.status().code() : 0);
  if (req.oneway()) {
    if (resp.has_status()) {
      spdlog::debug("session {}: oneway request failed: {}", s->id, resp.status().message());
    }
    RecordRequest(VerbOf(req), code, start);
    return;
  }
  if (resp.has_status()) {
    // Malformed or unauthorised requests point at a client bug: info. Misses,
    // conflicts and full tiers are normal traffic: debug.
    auto c = static_cast<absl::StatusCode>(resp.status().code());
    bool client_bug = c == absl::StatusCode::kInvalidArgument ||
                      c == absl::StatusCode::kPermissionDenied ||
                      c == absl::StatusCode::kFailedPrecondition;
    LogRejection(client_bug ? spdlog::level::info : spdlog::level::debug,
                 "session {} (pid {}): request {} rejected: {}", s->id, s->pid, req.id(),
                 resp.status().message());
  }
  Reply(s, resp, StreamHandler::Handles(req));
  RecordRequest(VerbOf(req), code, start);
}

bool Server::Dispatch(Session* s, const wire::Request& req, StreamHandler::Attempt attempt,
                      wire::Response* resp) {
  if (req.has_daemon_status()) {
    resp->set_id(req.id());
    FillDaemonStatus(resp->mutable_daemon_status());
    return false;
  }
  if (req.has_adopt()) {
    HandleAdopt(s, req, resp);
    return false;
  }
  if (req.has_wait_published()) {
    resp->set_id(req.id());
    const wire::WaitPublished& w = req.wait_published();
    if (absl::Status k = store::ValidateKey(w.key()); !k.ok()) {
      resp->mutable_status()->set_code(static_cast<int32_t>(k.code()));
      resp->mutable_status()->set_message(std::string(k.message()));
      return false;
    }
    if (!published_ || published_(w.key(), w.generation())) return false;
    if (attempt != StreamHandler::Attempt::kFinal && w.wait_ms() > 0) return true;  // park
    resp->mutable_status()->set_code(static_cast<int32_t>(absl::StatusCode::kDeadlineExceeded));
    resp->mutable_status()->set_message(
        fmt::format("{} generation {} is stored on this host but not yet published to the "
                    "registry: {}",
                    QuoteKey(w.key()), w.generation(), why_late_ ? why_late_() : "unknown"));
    return false;
  }
  if (req.has_prefetch()) {
    HandlePrefetch(req, resp);
    return false;
  }
  if (req.has_replicate()) return HandleReplicate(s, req, attempt, resp);
  if (StreamHandler::Handles(req)) {
    std::string client = s->client_name.empty() ? fmt::format("pid-{}", s->pid) : s->client_name;
    return streams_.Handle(req, client, attempt, resp);
  }
  handler_.Handle(s->id, req, resp);
  if (req.has_get() && remote_get_.start && resp->has_status() &&
      resp->status().code() == static_cast<int>(absl::StatusCode::kNotFound) &&
      !req.get().local_only()) {
    return RemoteGetAttempt(req.get(), attempt, resp);
  }
  const uint64_t create_wait_ms = req.has_create() ? req.create().wait_ms()
                                  : req.has_put()  ? req.put().create().wait_ms()
                                                   : 0;
  return attempt != StreamHandler::Attempt::kFinal && create_wait_ms > 0 && resp->has_status() &&
         resp->status().code() == static_cast<int>(absl::StatusCode::kResourceExhausted);
}

uint64_t Server::ReplicateWaitMs(const wire::Replicate& r) const {
  // The fan-out reports its own deadline; the park outlives it a little so
  // that report, naming each host, is what the client gets.
  uint64_t ms = r.wait_ms() != 0 ? r.wait_ms() : remote_get_.default_timeout.count();
  return std::min<uint64_t>(ms, kMaxReplicateWaitMs) + 10000;
}

bool Server::HandleReplicate(Session* s, const wire::Request& req, StreamHandler::Attempt attempt,
                             wire::Response* resp) {
  resp->set_id(req.id());
  auto fail = [&](const absl::Status& st) {
    resp->mutable_status()->set_code(static_cast<int32_t>(st.code()));
    resp->mutable_status()->set_message(std::string(st.message()));
    return false;
  };
  if (!remote_get_.replicate_start) {
    return fail(absl::FailedPreconditionError(
        "replicate needs a cluster: this daemon has no cluster.registry"));
  }
  const wire::Replicate& r = req.replicate();
  if (attempt == StreamHandler::Attempt::kFirst) {
    auto job = remote_get_.replicate_start(r);
    if (!job.ok()) return fail(job.status());
    s->replicate_job = *job;
    return true;  // park until it ends
  }
  auto done = remote_get_.replicate_poll(s->replicate_job);
  if (!done) {
    if (attempt == StreamHandler::Attempt::kRetry) return true;
    remote_get_.replicate_forget(s->replicate_job);
    s->replicate_job = 0;
    return fail(absl::DeadlineExceededError(
        fmt::format("replicate {}: the fan-out did not report within {} ms", QuoteKey(r.key()),
                    ReplicateWaitMs(r))));
  }
  s->replicate_job = 0;
  if (!done->ok()) return fail(done->status());
  *resp->mutable_replicate() = std::move(**done);
  return false;
}

void Server::HandlePrefetch(const wire::Request& req, wire::Response* resp) {
  resp->set_id(req.id());
  auto fail = [&](const absl::Status& st) {
    resp->mutable_status()->set_code(static_cast<int32_t>(st.code()));
    resp->mutable_status()->set_message(std::string(st.message()));
  };
  const auto& keys = req.prefetch().keys();
  if (!remote_get_.start) {
    return fail(absl::FailedPreconditionError(
        "prefetch needs a cluster: this daemon has no cluster.registry"));
  }
  if (static_cast<uint64_t>(keys.size()) > options_.max_batch) {
    return fail(absl::InvalidArgumentError(
        fmt::format("prefetch of {} keys exceeds max_batch {}", keys.size(), options_.max_batch)));
  }
  for (const std::string& key : keys) {
    if (absl::Status k = store::ValidateKey(key); !k.ok()) return fail(k);
  }
  uint32_t started = 0;
  for (const std::string& key : keys) {
    if (store_->Stat(key).ok()) continue;
    remote_get_.start(key, 0, "", remote_get_.default_timeout);
    ++started;
  }
  resp->mutable_prefetch()->set_started(started);
}

uint64_t Server::RemoteGetWaitMs(const wire::Get& get) const {
  return get.wait_ms() != 0 ? get.wait_ms() : remote_get_.default_timeout.count();
}

bool Server::RemoteGetAttempt(const wire::Get& get, StreamHandler::Attempt attempt,
                              wire::Response* resp) {
  auto fail = [&](const absl::Status& st) {
    resp->mutable_status()->set_code(static_cast<int32_t>(st.code()));
    resp->mutable_status()->set_message(std::string(st.message()));
    return false;
  };
  if (attempt == StreamHandler::Attempt::kFirst) {
    remote_get_.start(get.key(), get.generation(), get.prefer_host(),
                      std::chrono::milliseconds(RemoteGetWaitMs(get)));
    return true;  // park until the pull finishes
  }
  std::optional<absl::Status> done = remote_get_.poll(get.key(), get.generation());
  if (!done) {
    if (attempt == StreamHandler::Attempt::kRetry) return true;
    return fail(absl::DeadlineExceededError(
        fmt::format("{} is not held on this host and its pull from another host did not finish "
                    "within {} ms",
                    QuoteKey(get.key()), RemoteGetWaitMs(get))));
  }
  if (!done->ok()) return fail(*done);
  return false;  // pulled, yet gone again (removed, evicted): the local NotFound
}

void Server::Unpark(Session* s, wire::Response& resp) {
  uint64_t id = s->id;
  RecordRequest(VerbOf(*s->parked), static_cast<absl::StatusCode>(resp.status().code()),
                s->parked_since);
  bool ledger_reply = StreamHandler::Handles(*s->parked);
  s->parked.reset();
  parked_.erase(std::remove(parked_.begin(), parked_.end(), id), parked_.end());
  Reply(s, resp, ledger_reply);
  ProcessFrames(s);
  if (sessions_.count(id)) Flush(s);
}

void Server::RecordRequest(Verb verb, absl::StatusCode code, Clock::TimePoint start) {
  if (options_.metrics != nullptr) options_.metrics->Record(verb, code, clock_->Now() - start);
}

absl::Status Server::HandleHello(Session* s, const wire::Request& req) {
  const wire::Hello& h = req.hello();
  if (h.protocol_version() != kProtocolVersion) {
    absl::Status st = absl::FailedPreconditionError(
        fmt::format("protocol version {} is not supported; cisternd speaks {}",
                    h.protocol_version(), kProtocolVersion));
    ReplyError(s, req.id(), st, /*close=*/true);
    return st;
  }
  if (!options_.token.empty() && !ConstantTimeEquals(h.token(), options_.token)) {
    absl::Status st =
        absl::PermissionDeniedError(h.token().empty() ? "a token is required" : "wrong token");
    ReplyError(s, req.id(), st, /*close=*/true);
    return st;
  }
  if (said_hello_ >= options_.max_sessions) {
    absl::Status st = absl::ResourceExhaustedError(
        fmt::format("cisternd already serves max_sessions={} sessions", options_.max_sessions));
    ReplyError(s, req.id(), st, /*close=*/true);
    return st;
  }
  // Recorded in the shared lease table so that its leases outlive this daemon.
  if (absl::Status st =
          store_->OpenSession(s->id, {s->pid, s->uid, ProcessStartTime(s->pid).value_or(0)});
      !st.ok()) {
    ReplyError(s, req.id(), st, /*close=*/true);
    return st;
  }
  wire::Response resp;
  resp.set_id(req.id());
  auto* r = resp.mutable_hello();
  r->set_incarnation(options_.incarnation);
  r->set_protocol_version(kProtocolVersion);
  r->set_session_id(s->id);
  r->set_daemon_version(options_.daemon_version);
  for (const auto& t : options_.tiers) *r->add_tiers() = t;
  r->set_max_frame_bytes(options_.max_frame_bytes);
  r->set_max_batch(options_.max_batch);
  r->set_put_in_one_request(true);
  r->set_reserve_extents(true);
  std::vector<int> fds = options_.arena_fds;
  if (h.want_fast_path() && options_.fast_lease_fd >= 0) {
    std::optional<uint32_t> hint;
    if (uint64_t off = h.fast_region_offset(); off >= store::kFastRegionBytes &&
                                               off % store::kFastRegionBytes == 0 &&
                                               off / store::kFastRegionBytes - 1 <= UINT32_MAX) {
      hint = static_cast<uint32_t>(off / store::kFastRegionBytes - 1);
    }
    if (auto region = store_->OpenFastPath(
            s->id, {s->pid, s->uid, ProcessStartTime(s->pid).value_or(0)}, hint);
        region.ok()) {
      auto* f = r->mutable_fast_path();
      f->set_index_bytes(options_.index_bytes);
      f->set_region_offset(store::FastLeaseRegions::RegionOffset(*region));
      f->set_region_bytes(store::kFastRegionBytes);
      fds.push_back(options_.index_fd);
      fds.push_back(options_.fast_lease_fd);
    } else {
      spdlog::warn("session {}: no fast path: {}", s->id, region.status().message());
    }
  }
  std::string frame;
  AppendFrameHeader(&frame, resp.ByteSizeLong());
  resp.AppendToString(&frame);
  // The arena descriptors ride on the first byte sent with the hello response
  // (after any error responses still queued); the client collects them with
  // recvmsg until hello completes.
  std::string data = std::move(s->out);
  s->out.clear();
  data += frame;
  iovec iov{data.data(), data.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {  // a server with no arenas (tests) sends none
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n = ::sendmsg(s->fd.get(), &msg, MSG_NOSIGNAL);
  if (n <= 0) {
    absl::Status st = ErrnoStatus(errno, "send hello");
    spdlog::info("session {}: could not send hello: {}", s->id, std::strerror(errno));
    CloseAfterFlush(s);
    return st;
  }
  s->out.assign(data, n, std::string::npos);
  s->hello_done = true;
  --pending_;
  ++said_hello_;
  handler_.set_sessions(said_hello_);
  session_count_.store(said_hello_, std::memory_order_relaxed);
  s->client_name = h.client_name().substr(0, 128);
  spdlog::debug("session {} (pid {}) said hello as '{}'", s->id, s->pid, h.client_name());
  return absl::OkStatus();
}

void Server::FillDaemonStatus(wire::DaemonStatusReply* r) {
  r->set_version(options_.daemon_version);
  r->set_pid(::getpid());
  r->set_start_unix_ms(start_unix_ms_);
  r->set_uptime_ms(
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_->Now() - start_time_).count());
  r->set_socket_path(options_.socket_path);
  r->set_metrics_endpoint(options_.metrics_endpoint);
  r->set_parked_requests(parked_.size());
  if (cluster_status_) cluster_status_(r->mutable_cluster());
  handler_.FillStats(r->mutable_stats());
  for (auto& [id, s] : sessions_) {
    if (!s->hello_done) continue;
    auto info = store_->SessionInfo(id);
    auto* si = r->add_sessions();
    si->set_id(id);
    si->set_pid(s->pid);
    si->set_uid(s->uid);
    si->set_client_name(s->client_name);
    si->set_leases(info.leases);
    si->set_pending_writes(info.pending_writes);
  }
}

void Server::Reply(Session* s, const wire::Response& resp, bool ledger_reply) {
  if (ledger_ != nullptr && (ledger_reply || !s->held.empty())) {
    registry::SyncProgress p = ledger_->sync_progress();
    uint64_t at = ledger_reply && p.written > p.durable ? p.written : 0;
    if (at > 0 || !s->held.empty()) {
      s->held_bytes += resp.ByteSizeLong();
      s->held.push_back({at, resp});
      holding_.insert(s->id);
      return;
    }
  }
  AppendReply(s, resp);
}

void Server::AppendReply(Session* s, const wire::Response& resp) {
  size_t size = resp.ByteSizeLong();
  AppendFrameHeader(&s->out, static_cast<uint32_t>(size));
  size_t at = s->out.size();
  s->out.resize(at + size);
  resp.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(s->out.data() + at));
}

void Server::ReleaseHeld() {
  if (holding_.empty()) return;
  registry::SyncProgress p = ledger_->sync_progress();
  std::vector<uint64_t> ids(holding_.begin(), holding_.end());
  for (uint64_t id : ids) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) {
      holding_.erase(id);
      continue;
    }
    Session* s = it->second.get();
    bool moved = false;
    while (!s->held.empty()) {
      Session::Held& h = s->held.front();
      if (h.durable_at > p.durable) {
        if (p.failed.ok()) break;
        // Applied here, but never made durable: say so rather than OK.
        if (!h.resp.has_status() || h.resp.status().code() == 0) {
          LogRejection(spdlog::level::err, "session {}: a stream change is not durable: {}", id,
                       p.failed.message());
          SetStatus(absl::UnavailableError(fmt::format(
                        "the stream ledger could not be made durable ({}); the change is "
                        "applied in this daemon but may not survive a host crash, and cisternd "
                        "refuses ledger writes until it is restarted",
                        p.failed.message())),
                    &h.resp);
        }
      }
      wire::Response resp = std::move(h.resp);
      s->held_bytes -= std::min<uint64_t>(s->held_bytes, resp.ByteSizeLong());
      s->held.pop_front();
      AppendReply(s, resp);
      moved = true;
    }
    if (s->held.empty()) {
      s->held_bytes = 0;
      holding_.erase(id);
    }
    if (moved) Flush(s);
  }
}

void Server::ReplyError(Session* s, uint64_t id, const absl::Status& status, bool close) {
  LogRejection(spdlog::level::info, "session {} (pid {}): {}{}", s->id, s->pid, status.message(),
               close ? "; closing the session" : "");
  wire::Response resp;
  resp.set_id(id);
  SetStatus(status, &resp);
  Reply(s, resp);
  if (close) CloseAfterFlush(s);
}

void Server::CloseAfterFlush(Session* s) {
  if (s->closing) return;
  s->closing = true;
  s->close_deadline = clock_->Now() + options_.hello_timeout;
}

void Server::Flush(Session* s) {
  for (;;) {
    size_t sent = 0;
    bool would_block = false;
    while (sent < s->out.size()) {
      ssize_t n = ::send(s->fd.get(), s->out.data() + sent, s->out.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += n;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        would_block = true;
        break;
      }
      s->out.clear();
      CloseSession(s, "send failed");
      return;
    }
    s->out.erase(0, sent);
    if (s->out.empty() && s->closing) {
      CloseSession(s, "closed by cisternd");
      return;
    }
    // The client took replies: serve the requests held back while they were
    // backed up (ProcessFrames stalls again at the cap).
    if (!s->stalled || Blocked(s) || s->closing) break;
    s->stalled = false;
    ProcessFrames(s);
    if (would_block || s->out.empty()) break;
  }
  UpdateInterest(s);
}

void Server::UpdateInterest(Session* s) {
  // Without EPOLLIN the kernel still reports EPOLLHUP and EPOLLERR.
  uint32_t events =
      (MayRead(s) ? uint32_t{EPOLLIN} : 0u) | (s->out.empty() ? 0u : uint32_t{EPOLLOUT});
  if (events == s->interest) return;
  s->interest = events;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = s->id;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, s->fd.get(), &ev);
}

void Server::CloseSession(Session* s, const char* why, bool end_leases) {
  uint64_t id = s->id;
  auto info = store_->SessionInfo(id);
  spdlog::debug("session {} (pid {}) {}: {} {} leases and {} writes", id, s->pid, why,
                end_leases ? "ending" : "keeping (for the next daemon)", info.leases,
                info.pending_writes);
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, s->fd.get(), nullptr);
  if (end_leases) store_->CloseSession(id);
  if (s->replicate_job != 0 && remote_get_.replicate_forget) {
    remote_get_.replicate_forget(s->replicate_job);
  }
  parked_.erase(std::remove(parked_.begin(), parked_.end(), id), parked_.end());
  holding_.erase(id);
  if (s->hello_done) {
    --said_hello_;
  } else {
    --pending_;
  }
  sessions_.erase(id);
  handler_.set_sessions(said_hello_);
  session_count_.store(said_hello_, std::memory_order_relaxed);
}

void Server::RetryParked() {
  streams_.ReclaimExpired();  // expired stream leases bump the stream epoch
  uint64_t epoch = store_->free_epoch();
  uint64_t stream_epoch = streams_.epoch();
  // Answers given below that change a stream are seen next round.
  bool changed =
      epoch != seen_free_epoch_ || stream_epoch != seen_stream_epoch_ || publish_changed_;
  publish_changed_ = false;
  seen_free_epoch_ = epoch;
  seen_stream_epoch_ = stream_epoch;
  if (!changed || parked_.empty()) return;
  std::deque<uint64_t> waiting;
  waiting.swap(parked_);
  for (uint64_t id : waiting) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) continue;
    Session* s = it->second.get();
    wire::Response resp;
    if (Dispatch(s, *s->parked, StreamHandler::Attempt::kRetry, &resp)) {
      parked_.push_back(id);
      continue;
    }
    Unpark(s, resp);
  }
}

void Server::ExpireDeadlines() {
  Clock::TimePoint now = clock_->Now();
  bool idle_close = options_.idle_timeout > Clock::Duration::zero();
  std::vector<uint64_t> deaf, silent, expired, idle;
  for (auto& [id, s] : sessions_) {
    if (s->closing) {
      if (now >= s->close_deadline) deaf.push_back(id);
      continue;
    }
    if (!s->hello_done && now >= s->hello_deadline) silent.push_back(id);
    if (s->parked && now >= s->parked_deadline) expired.push_back(id);
    if (idle_close && s->hello_done && !s->parked &&
        now - s->last_request >= options_.idle_timeout) {
      idle.push_back(id);
    }
  }
  for (uint64_t id : deaf) CloseSession(sessions_[id].get(), "did not take its last replies");
  for (uint64_t id : silent) {
    Session* s = sessions_[id].get();
    ReplyError(s, 0, absl::DeadlineExceededError("no hello within hello_timeout_ms"), true);
    Flush(s);
  }
  // An idle session that holds nothing costs a slot and a descriptor; its
  // client reconnects when it next needs us. One that holds leases or writes
  // stays: closing it would end them.
  for (uint64_t id : idle) {
    Session* s = sessions_[id].get();
    auto info = store_->SessionInfo(id);
    // A request already in the socket is not idleness (and closing on it
    // would fail that request).
    int unread = 0;
    ::ioctl(s->fd.get(), FIONREAD, &unread);
    // Nor is reserved write space: its client may be writing there now.
    if (info.leases == 0 && info.pending_writes == 0 && info.reserved_bytes == 0 && unread == 0) {
      CloseSession(s, "idle for session_idle_timeout_ms");
    } else {
      s->last_request = now;
    }
  }
  for (uint64_t id : expired) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) continue;
    Session* s = it->second.get();
    wire::Response resp;
    Dispatch(s, *s->parked, StreamHandler::Attempt::kFinal, &resp);  // one last try
    if (resp.has_status()) {
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - s->parked_since);
      resp.mutable_status()->set_message(
          fmt::format("{} (waited {} ms)", resp.status().message(), waited.count()));
    }
    Unpark(s, resp);
  }
}

int Server::NextTimeoutMs() {
  bool any = false;
  Clock::TimePoint next{};
  auto consider = [&](Clock::TimePoint t) {
    if (!any || t < next) next = t;
    any = true;
  };
  bool idle_close = options_.idle_timeout > Clock::Duration::zero();
  for (auto& [id, s] : sessions_) {
    if (s->closing) {
      consider(s->close_deadline);
      continue;
    }
    if (!s->hello_done) consider(s->hello_deadline);
    if (idle_close && s->hello_done && !s->parked)
      consider(s->last_request + options_.idle_timeout);
    if (s->parked) consider(s->parked_deadline);
  }
  if (!parked_.empty()) {
    if (auto expiry = streams_.NextLeaseExpiry()) consider(*expiry);
  }
  if (tick_) consider(next_tick_);
  if (!any) return -1;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - clock_->Now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms + 1, 0, 60'000));
}

void Server::Drain() {
  spdlog::info("draining {} sessions", sessions_.size());
  if (listen_fd_.valid()) {
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, listen_fd_.get(), nullptr);
    listen_fd_.Reset();
    ::unlink(options_.socket_path.c_str());
  }
  // Answer every request already received; waits end with Unavailable.
  std::vector<uint64_t> ids;
  for (auto& [id, s] : sessions_) ids.push_back(id);
  for (uint64_t id : ids) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) continue;
    Session* s = it->second.get();
    if (s->parked) {
      wire::Response resp;
      resp.set_id(s->parked->id());
      SetStatus(absl::UnavailableError("cisternd is shutting down"), &resp);
      RecordRequest(VerbOf(*s->parked), absl::StatusCode::kUnavailable, s->parked_since);
      s->parked.reset();
      Reply(s, resp);
    }
    OnReadable(s, /*hangup=*/false);
  }
  parked_.clear();
  // Held replies go out once what they wait for is durable (one sync).
  if (!holding_.empty()) {
    absl::Status durable = ledger_->WaitDurable();
    if (!durable.ok()) spdlog::error("stream ledger: {}", durable.message());
    ReleaseHeld();
  }
  // Give clients up to two seconds to take their responses.
  auto deadline = clock_->Now() + std::chrono::seconds(2);
  for (auto& [id, s] : sessions_) {
    while (!s->out.empty() && clock_->Now() < deadline) {
      ssize_t n = ::send(s->fd.get(), s->out.data(), s->out.size(), MSG_NOSIGNAL);
      if (n > 0) {
        s->out.erase(0, n);
      } else if (n < 0 && errno == EAGAIN) {
        pollfd p{s->fd.get(), POLLOUT, 0};
        ::poll(&p, 1, 50);
      } else {
        break;
      }
    }
  }
  // The clients live on: their leases and writes stay in the shared lease
  // table for the next daemon.
  while (!sessions_.empty()) {
    CloseSession(sessions_.begin()->second.get(), "ended by shutdown", /*end_leases=*/false);
  }
}

}  // namespace cistern::daemon

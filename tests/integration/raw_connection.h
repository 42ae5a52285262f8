// A hand-driven session with cisternd speaking raw protocol frames, for
// requests the C++ client cannot make (malformed frames, a stream it never
// opened, fields a producer must not set). Test-only: failures are reported
// with gtest's EXPECT macros.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "cistern/local.pb.h"
#include "gtest/gtest.h"
#include "src/common/frame.h"
#include "src/common/unique_fd.h"

namespace cistern::testing {

class RawConnection {
 public:
  // Connects to the socket at `path` (10 s receive timeout); says nothing yet.
  explicit RawConnection(const std::string& path) {
    fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{10, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void SendBytes(const std::string& b) {
    ASSERT_EQ(::send(fd_.get(), b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
  }
  void SendFrame(const std::string& payload) {
    std::string f;
    AppendFrameHeader(&f, payload.size());
    SendBytes(f + payload);
  }
  void Send(const wire::Request& req) { SendFrame(req.SerializeAsString()); }
  // Sends a hello (its reply is left to Receive).
  void Hello(const std::string& token = "", uint32_t version = 1) {
    wire::Request r;
    r.set_id(next_id_++);
    r.mutable_hello()->set_protocol_version(version);
    r.mutable_hello()->set_token(token);
    Send(r);
  }
  // The next response; nullopt when the daemon closed the connection.
  std::optional<wire::Response> Receive() {
    for (;;) {
      std::optional<std::string_view> frame;
      EXPECT_TRUE(in_.Next(&frame).ok());
      if (frame) {
        wire::Response r;
        EXPECT_TRUE(r.ParseFromArray(frame->data(), frame->size()));
        return r;
      }
      char* tail = in_.WritableTail(65536);
      ssize_t n = ::recv(fd_.get(), tail, 65536, 0);
      if (n <= 0) return std::nullopt;
      in_.Commit(n);
    }
  }
  // Sends `req` with the next request id and returns its response (empty,
  // with a test failure, when the daemon closed the connection).
  wire::Response Call(wire::Request req) {
    req.set_id(next_id_++);
    Send(req);
    auto r = Receive();
    if (!r) {
      ADD_FAILURE() << "the daemon closed the connection";
      return {};
    }
    return *r;
  }
  int fd() const { return fd_.get(); }
  bool ClosedByPeer() {
    char c;
    return ::recv(fd_.get(), &c, 1, 0) == 0;
  }

 private:
  UniqueFd fd_;
  FrameBuffer in_{1 << 30};
  uint64_t next_id_ = 1;
};

}  // namespace cistern::testing

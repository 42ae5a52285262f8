// Turns one decoded request of an authenticated session into store calls and
// a response. Knows nothing of sockets or framing (server.h does). Its only
// state beyond options is the session count the server sets for the stats
// verb.
//
// Thread-safety: none; the server's loop thread owns it (the store it calls is
// thread-safe).
#pragma once

#include <cstdint>
#include <string>

#include "cistern/local.pb.h"
#include "src/store/object_store.h"

namespace cistern::daemon {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr uint32_t kDefaultListLimit = 1000;

struct HandlerOptions {
  uint32_t max_batch = 4096;
};

class RequestHandler {
 public:
  RequestHandler(store::ObjectStore* store, HandlerOptions options)
      : store_(store), options_(options) {}

  // Fills `resp` (status and body) for `req` issued by `session`. Hello is the
  // server's business and is answered there.
  void Handle(store::SessionId session, const wire::Request& req, wire::Response* resp);

  // Daemon-wide figures the handler cannot know (filled by the server).
  void set_sessions(uint64_t n) { sessions_ = n; }

  // Store-wide figures, as the stats verb answers them.
  void FillStats(wire::StatsReply* r);

 private:
  void HandleCreate(store::SessionId s, const wire::Create& c, wire::Response* resp);
  void HandleSeal(store::SessionId s, const wire::Seal& c, wire::Response* resp);
  void HandlePutExtent(store::SessionId s, const wire::PutExtent& p, wire::Response* resp);
  // Reserves write space for the session if the store can spare it (no error otherwise).
  void GrantExtent(store::SessionId s, uint32_t tier, uint64_t bytes, wire::ExtentGrant* out);
  static absl::Status CreateArgsOf(const wire::Create& c, store::ObjectStore::CreateArgs* out);
  void HandlePut(store::SessionId s, const wire::Put& p, wire::Response* resp);
  void HandleGet(store::SessionId s, const wire::Get& g, wire::Response* resp);

  store::ObjectStore* store_;
  HandlerOptions options_;
  uint64_t sessions_ = 0;
};

void SetStatus(const absl::Status& s, wire::Response* resp);

}  // namespace cistern::daemon

// cistern_stream_client: a stream consumer process for the integration tests.
//
//   lease SOCKET STREAM N   lease N refs of STREAM (waiting up to 20 s for
//                           them), print "leased <sample_id>..." and sleep
//                           until killed, holding the leases
// Exit 1 when fewer than N refs came, 2 on a client error.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "include/cistern/client.h"
#include "include/cistern/stream.h"

namespace {

int Lease(const char* socket, const char* name, int n) {
  cistern::ConnectOptions o;
  o.socket_path = socket;
  o.client_name = "stream-client";
  auto c = cistern::Client::Connect(o);
  if (!c.ok()) {
    std::fprintf(stderr, "connect: %s\n", c.status().ToString().c_str());
    return 2;
  }
  auto s = cistern::Stream::Open(c->get(), name);
  if (!s.ok()) {
    std::fprintf(stderr, "open: %s\n", s.status().ToString().c_str());
    return 2;
  }
  cistern::LeaseOptions lo;
  lo.max_refs = n;
  lo.min_refs = n;
  lo.wait = std::chrono::seconds(20);
  auto refs = s->Lease(lo);
  if (!refs.ok()) {
    std::fprintf(stderr, "lease: %s\n", refs.status().ToString().c_str());
    return 2;
  }
  if (static_cast<int>(refs->size()) != n) {
    std::fprintf(stderr, "leased %zu refs, not %d\n", refs->size(), n);
    return 1;
  }
  std::string line = "leased";
  for (const auto& r : *refs) line += " " + r.sample_id;
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  for (;;) pause();
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "lease" && argc == 5) return Lease(argv[2], argv[3], std::atoi(argv[4]));
  std::fprintf(stderr, "usage: see the comment at the top of stream_client.cc\n");
  return 2;
}

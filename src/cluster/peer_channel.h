// The control channel between daemons (docs/cluster.md, "Moving the bytes"):
// the gRPC service cistern.peer.v1.Peer, served by every daemon of a cluster
// on its cluster.advertise address. A puller's Open, Progress and Close, and
// a fan-out's Fetch and FetchStatus, travel here; so do the UCX remote keys
// of one-sided reads, which a holder hands out only in Open replies. The bytes
// travel over UCX (src/transport) to the address the Open reply names.
//
// Every call carries the cluster id and token (src/service/grpc_util.h); a
// server refuses a wrong token with PERMISSION_DENIED and another cluster's
// id with FAILED_PRECONDITION before its handler sees the request. With the
// daemons' certificates (cert_file, key_file) the channel is mutual TLS: the
// server speaks TLS only and requires a client certificate that chains to
// ca_file, and the client checks each peer's certificate against ca_file.
//
// Thread-safety: both classes may be used from any thread. The server calls
// its handler on gRPC's threads, several at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cistern/peer.grpc.pb.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/server.h"
#include "src/common/mutex.h"

namespace cistern::cluster {

namespace pv1 = cistern::peer::v1;

struct PeerChannelOptions {
  std::string cluster_id;
  std::string token;
  // Mutual TLS among the daemons when cert_file and key_file are set (then
  // ca_file is required): see above. Plaintext otherwise.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  // The name every peer's certificate carries; empty: the peer's address as
  // dialled (its advertise IP, which the certificate must then carry).
  std::string peer_server_name;
  int max_message_bytes = 64 << 20;
};

// Answers one request (the holder's PeerServer::HandleCall).
using PeerHandler = std::function<absl::StatusOr<pv1::PeerReply>(const pv1::PeerRequest&)>;

class PeerControlServer {
 public:
  // Listens at `address` ("a.b.c.d:port"): FAILED_PRECONDITION when the port
  // is taken or the address is not this host's; NOT_FOUND / INVALID_ARGUMENT
  // naming a TLS file that cannot be read.
  static absl::StatusOr<std::unique_ptr<PeerControlServer>> Start(const std::string& address,
                                                                  const PeerChannelOptions& options,
                                                                  PeerHandler handler);
  ~PeerControlServer();  // stops listening; calls in flight are answered first

  uint16_t port() const { return port_; }

  class Service;

 private:
  PeerControlServer() = default;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  uint16_t port_ = 0;
};

class PeerControlClient {
 public:
  // NOT_FOUND / INVALID_ARGUMENT naming a TLS file that cannot be read.
  static absl::StatusOr<std::unique_ptr<PeerControlClient>> Create(PeerChannelOptions options);

  // One call to the daemon whose control channel listens at `address`
  // (a.b.c.d:port). UNAVAILABLE when it cannot be reached, DEADLINE_EXCEEDED
  // after `timeout`, otherwise the peer's verdict. The channel to a peer is
  // made on first use and kept; after a failure it reconnects within about a
  // second of the peer coming back.
  absl::StatusOr<pv1::PeerReply> Call(const std::string& address, const pv1::PeerRequest& request,
                                      std::chrono::milliseconds timeout);

 private:
  PeerControlClient(PeerChannelOptions options, std::shared_ptr<grpc::ChannelCredentials> creds)
      : options_(std::move(options)), creds_(std::move(creds)) {}
  std::shared_ptr<pv1::Peer::Stub> Stub(const std::string& address);

  const PeerChannelOptions options_;
  const std::shared_ptr<grpc::ChannelCredentials> creds_;
  Mutex mu_;
  std::map<std::string, std::shared_ptr<pv1::Peer::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cistern::cluster

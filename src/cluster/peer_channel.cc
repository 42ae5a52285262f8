#include "src/cluster/peer_channel.h"

#include <utility>

#include "fmt/format.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/grpcpp.h"
#include "src/common/status_macros.h"
#include "src/service/grpc_util.h"

namespace cistern::cluster {

class PeerControlServer::Service final : public pv1::Peer::Service {
 public:
  Service(PeerChannelOptions options, PeerHandler handler)
      : options_(std::move(options)), handler_(std::move(handler)) {}

  grpc::Status Call(grpc::ServerContext* ctx, const pv1::PeerRequest* request,
                    pv1::PeerReply* reply) override {
    service::AuthFailure failure;
    grpc::Status st =
        service::CheckCaller(*ctx, options_.cluster_id, options_.token, "this daemon", &failure);
    if (!st.ok()) return st;
    absl::StatusOr<pv1::PeerReply> answer = handler_(*request);
    if (!answer.ok()) return service::ToGrpc(answer.status());
    *reply = *std::move(answer);
    return grpc::Status::OK;
  }

 private:
  const PeerChannelOptions options_;
  const PeerHandler handler_;
};

absl::StatusOr<std::unique_ptr<PeerControlServer>> PeerControlServer::Start(
    const std::string& address, const PeerChannelOptions& options, PeerHandler handler) {
  std::string cert, key, ca;
  if (!options.cert_file.empty()) {
    ASSIGN_OR_RETURN(cert, service::ReadPem(options.cert_file, "cluster.tls.cert_file"));
    ASSIGN_OR_RETURN(key, service::ReadPem(options.key_file, "cluster.tls.key_file"));
    ASSIGN_OR_RETURN(ca, service::ReadPem(options.ca_file, "cluster.tls.ca_file"));
  }
  std::unique_ptr<PeerControlServer> s(new PeerControlServer());
  s->service_ = std::make_unique<Service>(options, std::move(handler));
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort(address, service::ServerCredentials(cert, key, ca), &bound);
  // Two daemons on one port must be an error, not a split of the peers.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || bound == 0) {
    return absl::FailedPreconditionError(fmt::format(
        "cannot listen on {}: the port is in use or the address is not this host's", address));
  }
  s->port_ = static_cast<uint16_t>(bound);
  return s;
}

PeerControlServer::~PeerControlServer() {
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_->Wait();
  }
}

absl::StatusOr<std::unique_ptr<PeerControlClient>> PeerControlClient::Create(
    PeerChannelOptions options) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!options.cert_file.empty()) {
    ASSIGN_OR_RETURN(creds, service::ChannelCredentials(options.ca_file, options.cert_file,
                                                        options.key_file, "cluster.tls"));
  }
  return std::unique_ptr<PeerControlClient>(new PeerControlClient(std::move(options), creds));
}

std::shared_ptr<pv1::Peer::Stub> PeerControlClient::Stub(const std::string& address) {
  MutexLock lock(&mu_);
  auto it = stubs_.find(address);
  if (it != stubs_.end()) return it->second;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  // gRPC backs off up to two minutes between reconnects by default: a peer
  // that restarted would stay unreachable through this channel that long.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (!options_.cert_file.empty() && !options_.peer_server_name.empty()) {
    args.SetSslTargetNameOverride(options_.peer_server_name);
  }
  auto stub = std::shared_ptr<pv1::Peer::Stub>(
      pv1::Peer::NewStub(grpc::CreateCustomChannel(address, creds_, args)));
  stubs_.emplace(address, stub);
  return stub;
}

absl::StatusOr<pv1::PeerReply> PeerControlClient::Call(const std::string& address,
                                                       const pv1::PeerRequest& request,
                                                       std::chrono::milliseconds timeout) {
  std::shared_ptr<pv1::Peer::Stub> stub = Stub(address);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  service::AddCallerMetadata(&ctx, options_.cluster_id, options_.token);
  pv1::PeerReply reply;
  grpc::Status s = stub->Call(&ctx, request, &reply);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        fmt::format("{} (from the peer at {})", s.error_message(), address));
  }
  return reply;
}

}  // namespace cistern::cluster

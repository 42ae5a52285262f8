#include "src/cluster/registry_client.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "fmt/format.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "src/common/status_macros.h"

namespace cistern::cluster {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(fmt::format("{} '{}' cannot be read", what, path));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().empty())
    return absl::InvalidArgumentError(fmt::format("{} '{}' is empty", what, path));
  return ss.str();
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

absl::StatusOr<std::unique_ptr<RegistryClient>> RegistryClient::Create(
    RegistryClientOptions options) {
  if (options.address.empty()) return absl::InvalidArgumentError("registry address is empty");
  std::shared_ptr<grpc::ChannelCredentials> creds;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.ca_file, "tls.ca_file"));
    if (!options.cert_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem(options.cert_file, "tls.cert_file"));
      ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(options.key_file, "tls.key_file"));
    }
    creds = grpc::SslCredentials(ssl);
    if (!options.server_name.empty()) args.SetSslTargetNameOverride(options.server_name);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  auto channel = grpc::CreateCustomChannel(options.address, creds, args);
  auto stub = v1::Registry::NewStub(channel);
  return std::unique_ptr<RegistryClient>(new RegistryClient(std::move(options), std::move(stub)));
}

RegistryClient::RegistryClient(RegistryClientOptions options,
                               std::unique_ptr<v1::Registry::Stub> stub)
    : options_(std::move(options)), stub_(std::move(stub)) {}

void RegistryClient::Prepare(grpc::ClientContext* ctx, std::chrono::milliseconds timeout) const {
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  ctx->AddMetadata("x-cistern-cluster", options_.cluster_id);
  ctx->AddMetadata("x-cistern-token", options_.token);
}

absl::Status RegistryClient::Convert(const grpc::Status& s) const {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      fmt::format("registry {}: {}", options_.address, s.error_message()));
}

template <class Req, class Rep>
absl::StatusOr<Rep> RegistryClient::Unary(
    grpc::Status (v1::Registry::Stub::*method)(grpc::ClientContext*, const Req&, Rep*),
    const Req& req) {
  grpc::ClientContext ctx;
  Prepare(&ctx, options_.rpc_timeout);
  Rep reply;
  grpc::Status s = (stub_.get()->*method)(&ctx, req, &reply);
  if (!s.ok()) return Convert(s);
  return reply;
}

absl::StatusOr<v1::RegisterReply> RegistryClient::Register(const v1::RegisterRequest& req) {
  return Unary(&v1::Registry::Stub::Register, req);
}
absl::StatusOr<v1::HeartbeatReply> RegistryClient::Heartbeat(const v1::HeartbeatRequest& req) {
  return Unary(&v1::Registry::Stub::Heartbeat, req);
}
absl::StatusOr<v1::PublishReply> RegistryClient::Publish(const v1::PublishRequest& req) {
  return Unary(&v1::Registry::Stub::Publish, req);
}
absl::StatusOr<v1::DeregisterReply> RegistryClient::Deregister(const v1::DeregisterRequest& req) {
  return Unary(&v1::Registry::Stub::Deregister, req);
}
absl::StatusOr<v1::LocateReply> RegistryClient::Locate(const v1::LocateRequest& req) {
  return Unary(&v1::Registry::Stub::Locate, req);
}
absl::StatusOr<v1::ClaimTransferReply> RegistryClient::ClaimTransfer(
    const v1::ClaimTransferRequest& req) {
  return Unary(&v1::Registry::Stub::ClaimTransfer, req);
}
absl::Status RegistryClient::CompleteTransfer(const v1::CompleteTransferRequest& req) {
  return Unary(&v1::Registry::Stub::CompleteTransfer, req).status();
}
absl::StatusOr<v1::QuerySystemReply> RegistryClient::QuerySystem() {
  return Unary(&v1::Registry::Stub::QuerySystem, v1::QuerySystemRequest());
}

absl::StatusOr<v1::SyncReply> RegistryClient::SyncInventory(
    absl::FunctionRef<bool(v1::InventoryChunk*)> next, size_t expected_chunks) {
  grpc::ClientContext ctx;
  Prepare(&ctx, options_.rpc_timeout * static_cast<int>(std::max<size_t>(1, expected_chunks)));
  v1::SyncReply reply;
  auto writer = stub_->SyncInventory(&ctx, &reply);
  v1::InventoryChunk chunk;
  while (next(&chunk)) {
    if (!writer->Write(chunk)) break;  // the server ended the call; Finish says why
    chunk.Clear();
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) return Convert(s);
  return reply;
}

}  // namespace cistern::cluster

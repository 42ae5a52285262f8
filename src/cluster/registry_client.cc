#include "src/cluster/registry_client.h"

#include <utility>

#include "fmt/format.h"
#include "grpcpp/create_channel.h"
#include "src/common/status_macros.h"
#include "src/service/grpc_util.h"

namespace cistern::cluster {

absl::StatusOr<std::unique_ptr<RegistryClient>> RegistryClient::Create(
    RegistryClientOptions options) {
  if (options.address.empty()) return absl::InvalidArgumentError("registry address is empty");
  ASSIGN_OR_RETURN(auto creds, service::ChannelCredentials(options.ca_file, options.cert_file,
                                                           options.key_file));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.ca_file.empty() && !options.server_name.empty()) {
    args.SetSslTargetNameOverride(options.server_name);
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
  service::AddCallerMetadata(ctx, options_.cluster_id, options_.token);
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

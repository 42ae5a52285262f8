// RegistryClient: a gRPC client of cistern-registry (cistern.registry.v1,
// proto/cistern/registry.proto) for the daemon's cluster agent, the CLI and
// tests. Every call carries the cluster id and token as metadata, has a
// deadline (rpc_timeout) and returns the registry's status as an
// absl::Status whose message is prefixed with "registry <address>: ".
// Unavailable / DeadlineExceeded mean the registry could not be reached or
// answer in time; other codes are the registry's verdict.
//
// Thread-safety: every method may be called from any thread concurrently
// (gRPC channels and stubs are thread-safe).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cistern/registry.grpc.pb.h"

namespace cistern::cluster {

namespace v1 = cistern::registry::v1;

struct RegistryClientOptions {
  std::string address;  // host:port
  std::string cluster_id;
  std::string token;
  // TLS: with ca_file the channel is TLS; cert_file and key_file add a
  // client certificate (mTLS). server_name overrides the name checked.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::string server_name;
  std::chrono::milliseconds rpc_timeout{5000};
  int max_message_bytes = 64 << 20;
};

class RegistryClient {
 public:
  // NotFound / PermissionDenied naming a TLS file that cannot be read;
  // InvalidArgument for an empty address. Connecting happens at the first call.
  static absl::StatusOr<std::unique_ptr<RegistryClient>> Create(RegistryClientOptions options);

  absl::StatusOr<v1::RegisterReply> Register(const v1::RegisterRequest& req);
  absl::StatusOr<v1::HeartbeatReply> Heartbeat(const v1::HeartbeatRequest& req);
  absl::StatusOr<v1::PublishReply> Publish(const v1::PublishRequest& req);
  absl::StatusOr<v1::DeregisterReply> Deregister(const v1::DeregisterRequest& req);
  absl::StatusOr<v1::LocateReply> Locate(const v1::LocateRequest& req);
  absl::StatusOr<v1::ClaimTransferReply> ClaimTransfer(const v1::ClaimTransferRequest& req);
  absl::Status CompleteTransfer(const v1::CompleteTransferRequest& req);
  absl::StatusOr<v1::QuerySystemReply> QuerySystem();
  // Streams the chunks `next` fills (it returns false when there are no
  // more; the last chunk it fills must have `last` set). The deadline is
  // rpc_timeout per chunk.
  absl::StatusOr<v1::SyncReply> SyncInventory(absl::FunctionRef<bool(v1::InventoryChunk*)> next,
                                              size_t expected_chunks);

  const RegistryClientOptions& options() const { return options_; }

 private:
  RegistryClient(RegistryClientOptions options, std::unique_ptr<v1::Registry::Stub> stub);
  void Prepare(grpc::ClientContext* ctx, std::chrono::milliseconds timeout) const;
  absl::Status Convert(const grpc::Status& s) const;
  template <class Req, class Rep>
  absl::StatusOr<Rep> Unary(grpc::Status (v1::Registry::Stub::*method)(grpc::ClientContext*,
                                                                       const Req&, Rep*),
                            const Req& req);

  const RegistryClientOptions options_;
  std::unique_ptr<v1::Registry::Stub> stub_;
};

}  // namespace cistern::cluster

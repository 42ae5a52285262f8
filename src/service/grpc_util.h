// What every Cistern gRPC server and client shares (cistern-registry's
// service, the daemons' peer control channel, their clients): the check of a
// caller's cluster id and token, TLS credentials from PEM files, and the
// conversion between absl and gRPC statuses (the codes are the same numbers).
//
// Every call carries the cluster id as `x-cistern-cluster` and the cluster's
// shared secret as `x-cistern-token` metadata. Thread-safe: these are plain
// functions.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace cistern::service {

inline constexpr char kClusterMetadata[] = "x-cistern-cluster";
inline constexpr char kTokenMetadata[] = "x-cistern-token";

// Which check a refused caller failed (servers count them).
enum class AuthFailure { kNone, kClusterId, kToken };

// The verdict on a call's metadata: OK; FAILED_PRECONDITION naming both ids
// when the cluster id is missing or another cluster's; PERMISSION_DENIED when
// the token is missing or wrong. `server` names the server in the messages
// ("this registry"). `*failure` says which check failed.
grpc::Status CheckCaller(const grpc::ServerContextBase& ctx, std::string_view cluster_id,
                         std::string_view token, std::string_view server, AuthFailure* failure);

// Adds the cluster id and token to a call.
void AddCallerMetadata(grpc::ClientContext* ctx, const std::string& cluster_id,
                       const std::string& token);

grpc::Status ToGrpc(const absl::Status& s);
absl::Status FromGrpc(const grpc::Status& s);

// A PEM file's text: NOT_FOUND naming `what` (the config key) and the path
// when it cannot be read, INVALID_ARGUMENT when it is empty.
absl::StatusOr<std::string> ReadPem(const std::string& path, std::string_view what);

// Plaintext without a certificate; with `cert_pem` and `key_pem` TLS only;
// with `client_ca_pem` too, every client must present a certificate that
// chains to it (mTLS).
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const std::string& cert_pem,
                                                           const std::string& key_pem,
                                                           const std::string& client_ca_pem);

// Plaintext without `ca_file`; with it TLS, the server's certificate checked
// against it; `cert_file` and `key_file` add a client certificate (mTLS).
// `prefix` is the config keys' prefix in errors ("cluster.tls").
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const std::string& ca_file, const std::string& cert_file, const std::string& key_file,
    std::string_view prefix = "tls");

}  // namespace cistern::service

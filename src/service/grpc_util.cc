#include "src/service/grpc_util.h"

#include <fstream>
#include <sstream>

#include "fmt/format.h"
#include "src/common/secret.h"
#include "src/common/status_macros.h"

namespace cistern::service {

grpc::Status CheckCaller(const grpc::ServerContextBase& ctx, std::string_view cluster_id,
                         std::string_view token, std::string_view server, AuthFailure* failure) {
  const auto& md = ctx.client_metadata();
  *failure = AuthFailure::kNone;
  auto cluster = md.find(kClusterMetadata);
  if (cluster == md.end()) {
    *failure = AuthFailure::kClusterId;
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        fmt::format("the call carries no {}; {} serves cluster '{}'",
                                    kClusterMetadata, server, cluster_id));
  }
  std::string_view got(cluster->second.data(), cluster->second.size());
  if (got != cluster_id) {
    *failure = AuthFailure::kClusterId;
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        fmt::format("cluster id mismatch: the caller is configured for cluster "
                                    "'{}', {} serves cluster '{}'",
                                    got.substr(0, 64), server, cluster_id));
  }
  auto secret = md.find(kTokenMetadata);
  if (secret == md.end() ||
      !SameSecret(std::string_view(secret->second.data(), secret->second.size()), token)) {
    *failure = AuthFailure::kToken;
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        secret == md.end()
                            ? fmt::format("the call carries no {}", kTokenMetadata)
                            : fmt::format("wrong cluster token ({})", kTokenMetadata));
  }
  return grpc::Status::OK;
}

void AddCallerMetadata(grpc::ClientContext* ctx, const std::string& cluster_id,
                       const std::string& token) {
  ctx->AddMetadata(kClusterMetadata, cluster_id);
  ctx->AddMetadata(kTokenMetadata, token);
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

absl::StatusOr<std::string> ReadPem(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(fmt::format("{} '{}' cannot be read", what, path));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().empty()) {
    return absl::InvalidArgumentError(fmt::format("{} '{}' is empty", what, path));
  }
  return ss.str();
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const std::string& cert_pem,
                                                           const std::string& key_pem,
                                                           const std::string& client_ca_pem) {
  if (cert_pem.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      client_ca_pem.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = client_ca_pem;
  ssl.pem_key_cert_pairs.push_back({key_pem, cert_pem});
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const std::string& ca_file, const std::string& cert_file, const std::string& key_file,
    std::string_view prefix) {
  if (ca_file.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(ca_file, fmt::format("{}.ca_file", prefix)));
  if (!cert_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem(cert_file, fmt::format("{}.cert_file", prefix)));
    ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(key_file, fmt::format("{}.key_file", prefix)));
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace cistern::service

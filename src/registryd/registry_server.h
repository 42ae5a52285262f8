// RegistryServer: cistern-registry without its main — the catalog loaded
// from a MetadataBackend, the group committer, the gRPC service
// cistern.registry.v1 (plus the standard grpc.health.v1 service) and the
// liveness ticker. cistern-registry (main.cc) and the service tests run it.
//
// Every call is checked before anything else: the x-cistern-cluster metadata
// must equal the registry's cluster id (else FAILED_PRECONDITION naming both)
// and x-cistern-token the token (else PERMISSION_DENIED). Requests with more
// than max_entries_per_request replicas are INVALID_ARGUMENT. Writes go
// through the GroupCommitter (answered when durable); Locate and
// QuerySystem read under a shared lock.
//
// Thread-safety: Start once, then Stop (or the destructor) once; the
// accessors from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "cistern/registry.grpc.pb.h"
#include "src/catalog/catalog.h"
#include "src/common/clock.h"
#include "src/common/mutex.h"
#include "src/registry/metadata_backend.h"
#include "src/registryd/group_commit.h"
#include "src/registryd/registry_metrics.h"

namespace grpc {
class Server;
}

namespace cistern::registryd {

struct RegistryServerOptions {
  catalog::CatalogOptions catalog;
  std::string token;
  std::string listen_address = "127.0.0.1";
  uint16_t port = 0;  // 0: a free port
  // TLS (PEM text, not paths): with cert and key the port speaks TLS only;
  // with client_ca too, clients must present a certificate chaining to it.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  std::string tls_client_ca_pem;
  int max_message_bytes = 16 << 20;
  uint32_t max_entries_per_request = 8192;
  uint32_t max_group_commit = 4096;
  // How often liveness is evaluated.
  Clock::Duration tick_interval = std::chrono::milliseconds(200);
};

class RegistryServer {
 public:
  // Loads the catalog from `backend` (a new epoch; every host unknown),
  // writes the load's records, binds and serves. FailedPrecondition for a
  // port in use or a database of another cluster; the backend's error when
  // it cannot be read or written.
  static absl::StatusOr<std::unique_ptr<RegistryServer>> Start(
      RegistryServerOptions options, std::unique_ptr<registry::MetadataBackend> backend,
      RegistryMetrics* metrics, Clock* clock = Clock::Real());
  ~RegistryServer();

  // Stops accepting calls, waits (at most `grace`) for calls in progress,
  // stops the committer and the ticker.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));

  uint16_t port() const { return port_; }
  uint64_t epoch() const;
  // Runs one liveness evaluation now (tests with a fake clock).
  absl::Status TickForTest();

 private:
  class Service;
  RegistryServer() = default;

  RegistryServerOptions options_;
  RegistryMetrics* metrics_ = nullptr;
  std::unique_ptr<registry::MetadataBackend> backend_;
  mutable SharedMutex catalog_mu_;
  std::unique_ptr<catalog::Catalog> catalog_;  // guarded by catalog_mu_ (the pointer is constant)
  std::unique_ptr<GroupCommitter> committer_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  uint16_t port_ = 0;
  Mutex tick_mu_;
  CondVar tick_cv_;
  bool stopping_ ABSL_GUARDED_BY(tick_mu_) = false;
  std::thread ticker_;
  std::atomic<bool> stopped_{false};
};

}  // namespace cistern::registryd

// Runs a real cistern-registry for a test: a temporary state directory,
// free ports (port 0), a log, and cleanup on destruction (the process is
// killed and the directory removed), even when the test fails.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "src/cluster/registry_client.h"
#include "tests/util/test_certs.h"

namespace cistern::testing {

class Registry {
 public:
  // `settings` are --set assignments added to cluster_id, token and ports.
  explicit Registry(std::string cluster_id = "test-cluster", std::string token = "test-token",
                    std::vector<std::string> settings = {});
  ~Registry();

  // Starts the binary and waits until it has written its endpoint and
  // answers. False (the log in `error`) if it exits or does not within 20 s.
  bool Start(std::string* error = nullptr);
  void Kill(int sig = SIGKILL);
  int Wait();
  // kill -9, then start again over the same state directory (and port).
  bool Restart(std::string* error = nullptr);
  // The --set assignments the next Start uses (besides cluster_id, token,
  // ports and state_dir).
  void set_settings(std::vector<std::string> settings) { settings_ = std::move(settings); }

  const std::string& endpoint() const { return endpoint_; }  // host:port
  uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& cluster_id() const { return cluster_id_; }
  const std::string& token() const { return token_; }
  std::string Log() const;
  std::unique_ptr<cluster::RegistryClient> Client() const;
  // Clients (this harness's and DaemonYaml's) trust `ca_file` and dial
  // `host` (a name the registry's certificate carries) instead of the
  // address the registry wrote.
  void UseTls(std::string ca_file, std::string host = "localhost") {
    ca_file_ = std::move(ca_file);
    tls_host_ = std::move(host);
  }
  // The YAML `cluster:` block a daemon joins with.
  std::string DaemonYaml(const std::string& host_id, const std::string& advertise) const;

 private:
  std::string cluster_id_, token_, dir_, endpoint_;
  std::vector<std::string> settings_;
  std::string ca_file_, tls_host_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

// A registry that speaks TLS only, with `certs`' server certificate; its
// clients (Client(), DaemonYaml) trust certs.ca and dial localhost.
std::unique_ptr<Registry> TlsRegistry(const testing_tls::TestCerts& certs, std::string cluster_id,
                                      std::string token);

}  // namespace cistern::testing

#include "tests/cluster/registry_harness.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "fmt/format.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {

Registry::Registry(std::string cluster_id, std::string token, std::vector<std::string> settings)
    : cluster_id_(std::move(cluster_id)), token_(std::move(token)), settings_(std::move(settings)) {
  char tmpl[] = "/tmp/cistern-registry-test-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
}

Registry::~Registry() {
  if (pid_ > 0) {
    Kill(SIGKILL);
    Wait();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string Registry::Log() const {
  std::ifstream in(dir_ + "/registry.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Registry::Start(std::string* error) {
  std::string endpoint_file = dir_ + "/registry.endpoint";
  std::filesystem::remove(endpoint_file);
  std::vector<std::string> args = {
      BinaryPath("src/registryd/cistern-registry"),
      "--set",
      "cluster_id=" + cluster_id_,
      "--set",
      "token=" + token_,
      "--set",
      fmt::format("port={}", port_),  // 0 at first; the same port on a restart
      "--set",
      "metrics_port=0",
      "--set",
      "state_dir=" + dir_,
      "--set",
      "log_level=debug",
  };
  for (const auto& s : settings_) {
    args.push_back("--set");
    args.push_back(s);
  }
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open((dir_ + "/registry.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (error) *error = "cistern-registry exited during start:\n" + Log();
      return false;
    }
    std::ifstream in(endpoint_file);
    std::string ep;
    if (in >> ep && !ep.empty()) {
      endpoint_ = ep;
      port_ = static_cast<uint16_t>(std::stoi(ep.substr(ep.rfind(':') + 1)));
      if (Client()->QuerySystem().ok()) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (error) *error = "cistern-registry did not answer within 20 s:\n" + Log();
  return false;
}

void Registry::Kill(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

int Registry::Wait() {
  if (pid_ <= 0) return -1;
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool Registry::Restart(std::string* error) {
  Kill(SIGKILL);
  Wait();
  return Start(error);
}

std::unique_ptr<cluster::RegistryClient> Registry::Client() const {
  cluster::RegistryClientOptions o;
  o.address = ca_file_.empty() ? endpoint_ : tls_host_ + ":" + std::to_string(port_);
  o.ca_file = ca_file_;
  o.cluster_id = cluster_id_;
  o.token = token_;
  o.rpc_timeout = std::chrono::seconds(10);
  return std::move(*cluster::RegistryClient::Create(o));
}

std::string Registry::DaemonYaml(const std::string& host_id, const std::string& advertise) const {
  std::string yaml = fmt::format(
      "host_id: {}\ncluster:\n  registry: {}\n  cluster_id: {}\n  token: {}\n  advertise: {}\n"
      "  max_retry_backoff_ms: 200\n",
      host_id, ca_file_.empty() ? endpoint_ : tls_host_ + ":" + std::to_string(port_), cluster_id_,
      token_, advertise);
  if (!ca_file_.empty()) yaml += fmt::format("  tls:\n    ca_file: {}\n", ca_file_);
  return yaml;
}

std::unique_ptr<Registry> TlsRegistry(const testing_tls::TestCerts& certs, std::string cluster_id,
                                      std::string token) {
  auto r = std::make_unique<Registry>(std::move(cluster_id), std::move(token),
                                      std::vector<std::string>{"tls.cert_file=" + certs.server_cert,
                                                               "tls.key_file=" + certs.server_key});
  r->UseTls(certs.ca);
  return r;
}

}  // namespace cistern::testing

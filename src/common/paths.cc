#include "src/common/paths.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <string>

#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace cistern::paths {

std::string HomeDir() {
  if (const char* h = std::getenv("CISTERN_HOME"); h && *h) return h;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cistern";
}

std::string HostId() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::string machine;
  std::ifstream("/etc/machine-id") >> machine;
  return std::string(host) + "-" + (machine.empty() ? "nomachineid" : machine.substr(0, 8));
}

std::string HostDir() { return HomeDir() + "/hosts/" + HostId(); }

std::string DefaultRuntimeDir() {
  if (const char* h = std::getenv("CISTERN_HOME"); h && *h) return std::string(h) + "/run";
  return fmt::format("/tmp/cistern-{}", ::geteuid());
}

bool IsLiveProcess(int pid, std::string_view binary) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  // A zombie or a recycled pid that is not `binary` does not count.
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z') return false;
  std::ifstream cmd(fmt::format("/proc/{}/cmdline", pid));
  std::string argv0;
  std::getline(cmd, argv0, '\0');
  return argv0.find(binary) != std::string::npos;
}

bool IsLiveDaemon(int pid) { return IsLiveProcess(pid, "cisternd"); }

std::string CurrentSessionSocket() {
  std::string host = HostDir();
  std::string session;
  std::ifstream(host + "/current_session") >> session;
  if (session.empty() || session.find('/') != std::string::npos) return "";
  std::ifstream in(host + "/sessions/" + session + "/meta.json");
  if (!in) return "";
  auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("pid") || !j["pid"].is_number_integer() ||
      !j.contains("socket") || !j["socket"].is_string()) {
    return "";
  }
  if (!IsLiveDaemon(j["pid"].get<int>())) return "";
  return j["socket"].get<std::string>();
}

}  // namespace cistern::paths

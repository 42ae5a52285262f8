// cistern: the command line for Cistern's users and operators.
//
// Exit codes: 0 ok; 1 the operation failed (the daemon said no, or is not
// running); 2 usage or configuration error, a bad local path the user gave
// (missing, a directory where a file belongs) among them. With --json, commands print one
// JSON document on stdout (formats in docs/operations.md).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "google/protobuf/stubs/logging.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"
#include "src/cli/daemon_commands.h"
#include "src/cli/data_commands.h"
#include "src/cli/load_commands.h"
#include "src/cli/quarantine_commands.h"
#include "src/cli/registry_commands.h"
#include "src/cli/stream_commands.h"
#include "src/cli/system_commands.h"
#include "src/config/config_yaml.h"
#include "src/config/daemon_config.h"

namespace {

// libprotobuf's own messages go through the CLI's logger ("cistern: protobuf:
// ..." on stderr) rather than straight to stderr in its own format.
void LogProtobufMessage(google::protobuf::LogLevel level, const char* file, int line,
                        const std::string& message) {
  spdlog::level::level_enum l = level == google::protobuf::LOGLEVEL_INFO      ? spdlog::level::info
                                : level == google::protobuf::LOGLEVEL_WARNING ? spdlog::level::warn
                                : level == google::protobuf::LOGLEVEL_ERROR
                                    ? spdlog::level::err
                                    : spdlog::level::critical;
  spdlog::log(l, "protobuf: {} ({}:{})", message, file, line);
}

void SetUpLogging() {
  auto logger = spdlog::stderr_logger_mt("cistern");
  logger->set_pattern("cistern: %l: %v");
  spdlog::set_default_logger(logger);
  google::protobuf::SetLogHandler(&LogProtobufMessage);
}

int ConfigValidate(const std::string& path, const std::vector<std::string>& sets) {
  auto cfg = cistern::config::LoadDaemonConfig(path, sets);
  if (!cfg.ok()) {
    std::fprintf(stderr, "cistern: %s\n", std::string(cfg.status().message()).c_str());
    return 2;
  }
  std::printf("%s: valid\n", path.c_str());
  return 0;
}

int ConfigShow(const std::string& path, const std::vector<std::string>& sets, bool effective) {
  if (!effective) {
    if (path.empty()) {
      std::fprintf(stderr, "cistern: config show needs --config FILE (or --effective)\n");
      return 2;
    }
    std::ifstream in(path);
    if (!in) {
      std::fprintf(stderr, "cistern: cannot read '%s'\n", path.c_str());
      return 2;
    }
    std::cout << in.rdbuf();
    return 0;
  }
  auto cfg = cistern::config::LoadDaemonConfig(path, sets);
  if (!cfg.ok()) {
    std::fprintf(stderr, "cistern: %s\n", std::string(cfg.status().message()).c_str());
    return 2;
  }
  std::cout << cistern::ToYaml(*cfg);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  SetUpLogging();
  CLI::App app{"cistern: put, get and inspect tensors in the host's cisternd"};
  app.require_subcommand(1);
  // Global options (--json, --address, --token) may also follow a subcommand.
  app.fallthrough();
  cistern::cli::Target target;
  bool json = false;
  app.add_option("--address", target.socket,
                 "cisternd's socket (default: $CISTERN_ADDRESS, else the current daemon session, "
                 "else the default socket)");
  app.add_option("--token", target.token,
                 "shared secret (default: $CISTERN_TOKEN); for `system query` and `locate` the "
                 "cluster's token");
  app.add_flag("--json", json, "print one JSON document");

  int rc = 0;
  std::string key, file, out, prefix;
  bool evictable = false, if_absent = false;

  auto* put = app.add_subcommand("put", "store FILE (or - for stdin) as KEY");
  put->add_option("KEY", key)->required();
  put->add_option("FILE", file)->required();
  put->add_flag("--evictable", evictable, "may be evicted under memory pressure");
  put->add_flag("--if-absent", if_absent, "fail if KEY already has a value");
  put->callback([&] { rc = cistern::cli::Put(target, key, file, evictable, if_absent, json); });

  auto* get = app.add_subcommand("get", "write KEY's bytes to stdout or -o FILE");
  get->add_option("KEY", key)->required();
  get->add_option("-o,--output", out, "file to write (default: stdout)");
  get->callback([&] { rc = cistern::cli::Get(target, key, out, json); });

  auto* ls = app.add_subcommand("ls", "list keys (with PREFIX)");
  ls->add_option("PREFIX", prefix);
  ls->callback([&] { rc = cistern::cli::List(target, prefix, json); });

  auto* stat = app.add_subcommand("stat", "show one object");
  stat->add_option("KEY", key)->required();
  stat->callback([&] { rc = cistern::cli::Stat(target, key, json); });

  auto* rm = app.add_subcommand("rm", "remove KEY (leased bytes stay until released)");
  rm->add_option("KEY", key)->required();
  rm->callback([&] { rc = cistern::cli::Remove(target, key, json); });

  auto* config = app.add_subcommand("config", "check and show cisternd configuration");
  config->require_subcommand(1);
  std::string config_path;
  std::vector<std::string> sets;
  bool effective = false;
  auto* validate = config->add_subcommand("validate", "check a config file");
  validate->add_option("FILE", config_path)->required();
  validate->add_option("--set", sets, "override a key, e.g. --set tiers.0.size=4GB");
  validate->callback([&] { rc = ConfigValidate(config_path, sets); });
  auto* show = config->add_subcommand("show",
                                      "print a config file, or with --effective the "
                                      "config cisternd would run (defaults filled in)");
  show->add_option("--config", config_path, "the config file");
  show->add_option("--set", sets, "override a key");
  show->add_flag("--effective", effective, "apply overrides and defaults, then print");
  show->callback([&] { rc = ConfigShow(config_path, sets, effective); });

  cistern::cli::RegisterLoadCommands(&app, &target, &json, &rc);
  cistern::cli::RegisterDaemonCommands(&app, &target, &json, &rc);
  cistern::cli::RegisterStreamCommands(&app, &target, &json, &rc);
  cistern::cli::RegisterQuarantineCommands(&app, &target, &json, &rc);
  cistern::cli::RegisterRegistryCommands(&app, &target, &json, &rc);
  cistern::cli::RegisterSystemCommands(&app, &target, &json, &rc);

  std::function<void(CLI::App*)> fall = [&](CLI::App* a) {
    for (CLI::App* sub : a->get_subcommands({})) {
      sub->fallthrough();
      fall(sub);
    }
  };
  fall(&app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  cistern::cli::StopGrpc();  // every registry client is gone by now
  return rc;
}

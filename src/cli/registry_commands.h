// `cistern registry start|stop|restart|status|logs`: running cistern-registry
// (the cluster registry, src/registryd) in the background with per-session
// state under $CISTERN_HOME/registry, as `cistern daemon ...` runs cisternd;
// and the one way the CLI finds a registry to ask (FindRegistry), shared with
// `cistern system query` and `cistern locate` (system_commands.h).
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "src/cli/data_commands.h"
#include "src/cluster/registry_client.h"

namespace cistern::cli {

void RegisterRegistryCommands(CLI::App* app, Target* target, const bool* json, int* rc);

// What the user said about the registry to ask. Every field is optional; a
// set field wins over what discovery finds.
struct RegistryTarget {
  std::string address;     // --registry HOST:PORT
  std::string cluster_id;  // --cluster-id
  std::string token;       // the global --token (not $CISTERN_TOKEN: that is the daemon's)
  std::string ca_file;     // --ca-file: TLS, trusting this CA
  std::string cert_file;   // --cert-file, --key-file: a client certificate (mTLS)
  std::string key_file;
  std::string server_name;  // --server-name: the name the registry's certificate must carry
};

// "alive" for HOST_STATE_ALIVE: how the CLI names a host state.
std::string HostStateName(cluster::v1::HostState state);

// StartGrpc initialises gRPC for the CLI's registry calls (idempotent;
// FindRegistry and every registry command call it first) and sends gRPC's own
// log lines (a failed TLS handshake, say) to the CLI's log at debug level
// instead of stderr: the call's status already says what went wrong, and
// --json output stays one document. StopGrpc, once every RegistryClient is
// gone, waits until gRPC has shut down (its threads and their TLS state
// freed) so that the process exits with nothing of gRPC's left; main calls it
// before returning. No-op when gRPC was not started.
void StartGrpc();
void StopGrpc();

// Adds --registry, --cluster-id, --ca-file, --cert-file, --key-file and
// --server-name to `c`, filling `t`.
void AddRegistryTargetOptions(CLI::App* c, RegistryTarget* t);

// A registry to ask, and where its address came from ("--registry", "registry
// session <id>", "daemon session <id> (cluster.registry)") for messages.
struct FoundRegistry {
  cluster::RegistryClientOptions options;
  std::string source;
};

// Where a command finds the registry, first match wins:
//   1. --registry: with --cluster-id and --token (InvalidArgument naming the
//      missing flag otherwise); TLS only with --ca-file.
//   2. the current local registry session ($CISTERN_HOME/registry/
//      current_session) while its cistern-registry is alive: the endpoint it
//      reported (meta.json, else <state_dir>/registry.endpoint) and the
//      cluster_id and token of its config.yaml; when that config has TLS, the
//      CA is --ca-file, else tls.cert_file itself (right for a self-signed
//      certificate).
//   3. the current daemon session's config.yaml, when it sets
//      cluster.registry: its cluster_id, token and tls.*.
// Flags given override what 2 and 3 find. NotFound when none applies, naming
// what was looked at.
absl::StatusOr<FoundRegistry> FindRegistry(const RegistryTarget& t);

}  // namespace cistern::cli

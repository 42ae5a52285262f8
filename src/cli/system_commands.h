// `cistern system query` and `cistern locate KEY`: asking the cluster
// registry (cistern-registry) over gRPC what the cluster holds. The registry
// is found by FindRegistry (registry_commands.h): --registry, else the local
// `cistern registry start` session, else the current daemon session's
// cluster.registry. Exit codes: 0 ok; 1 no registry found, the registry could
// not be reached, or it said no (NotFound for a key no live host holds);
// 2 a usage error (--registry without --cluster-id or --token, an unreadable
// TLS file).
#pragma once

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "src/cli/data_commands.h"
#include "src/cli/registry_commands.h"

namespace cistern::cli {

void RegisterSystemCommands(CLI::App* app, Target* target, const bool* json, int* rc);

// Every host the registry knows: id, state, address, per-tier used/capacity,
// replicas and their bytes, last heartbeat age, incarnation; with `json` the
// QuerySystemReply field for field (proto_json.h).
int SystemQuery(const RegistryTarget& t, bool json);

// The ranked locations of `key` at `generation` (0: the newest any live host
// holds); with `json` the LocateReply field for field, checksums as hex.
int Locate(const RegistryTarget& t, const std::string& key, uint64_t generation, bool json);

}  // namespace cistern::cli

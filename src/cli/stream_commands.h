// `cistern stream ls|show|reconcile`: inspecting the daemon's streams (durable
// queues of sample refs, include/cistern/stream.h). None of them creates a
// stream: show and reconcile look the name up in the daemon's list first and
// exit 1 with "no stream named 'x'" when it is not there.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "src/cli/data_commands.h"

namespace cistern::cli {

void RegisterStreamCommands(CLI::App* app, Target* target, const bool* json, int* rc);

// Every stream: a table, or with `json` a JSON array of StreamShow's objects.
int StreamList(const Target& t, bool json);
// Every field of one stream's StreamInfo, grouped; with `json` one object.
int StreamShow(const Target& t, const std::string& name, bool json);
// Requeues the stream's leased and acked-but-not-durable samples.
int StreamReconcile(const Target& t, const std::string& name, bool json);

}  // namespace cistern::cli

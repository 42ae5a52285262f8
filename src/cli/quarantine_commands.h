// `cistern quarantine ls|rm`: the corrupt objects cisternd set aside at its
// last start (recovery.on_corrupt_object: quarantine). They are not served;
// their bytes stay for inspection until removed. An object is named
// TIER:OFFSET (its block in the tier's arena), as `ls` prints it.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "src/cli/data_commands.h"

namespace cistern::cli {

void RegisterQuarantineCommands(CLI::App* app, Target* target, const bool* json, int* rc);

// Every quarantined object: a table, or with `json` a JSON array of objects
// {id, tier, block_offset, block_bytes, key, reason}.
int QuarantineList(const Target& t, bool json);
// Frees the named objects (TIER:OFFSET), or with `all` every quarantined one.
// Exit 2 for an id that does not parse, 1 if the daemon refuses one (the
// others named before it are freed).
int QuarantineRemove(const Target& t, const std::vector<std::string>& ids, bool all, bool json);

}  // namespace cistern::cli

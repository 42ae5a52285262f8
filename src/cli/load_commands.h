// `cistern load` and `cistern export`: safetensors files in and out of Cistern.
//
//   cistern load PATH --key KEY [--evictable] [--if-absent]
//     PATH is a .safetensors file or a directory of *.safetensors shards (read
//     in name order; tensor names must be unique across them). Every header is
//     validated before anything is stored; the tensors become one tensor-dict
//     object, each at a 64-byte-aligned offset (as LayoutTensors places them),
//     read from the files straight into the object. "__metadata__" is not
//     stored (objects have no metadata); a note on stderr says so.
//   cistern export KEY PATH
//     Writes the tensor-dict object KEY as a safetensors file, its tensors in
//     manifest (offset) order with their data contiguous, through PATH.tmp and
//     a rename.
//
// Exit codes: 0 ok; 1 the operation failed (the daemon said no or is not
// running, the key is missing or not a tensor dict, an I/O error); 2 a usage
// error or a rejected input file.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "src/cli/data_commands.h"

namespace cistern::cli {

struct LoadOptions {
  std::string path;  // a .safetensors file or a directory of them
  std::string key;
  bool evictable = false;
  bool if_absent = false;
};

int Load(const Target& t, const LoadOptions& options, bool json);
int Export(const Target& t, const std::string& key, const std::string& path, bool json);

// Adds the subcommands to `app`. Their callbacks read *target and *json at run
// time and store the exit code in *rc.
void RegisterLoadCommands(CLI::App* app, const Target* target, const bool* json, int* rc);

}  // namespace cistern::cli

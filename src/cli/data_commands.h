// The data commands of the `cistern` CLI: put, get, ls, stat, rm. Each returns
// the process exit code (0 ok, 1 the operation failed, 2 usage or config error,
// a bad local path the user gave among them) and reports errors on stderr as
// "cistern: <what went wrong>". Local paths are checked before the daemon is
// asked anything.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "include/cistern/client.h"

namespace cistern::cli {

// Which daemon to talk to. An empty socket falls back to $CISTERN_ADDRESS, then
// the current daemon session (`cistern daemon start`), then the client
// library's default; an empty token to $CISTERN_TOKEN.
struct Target {
  std::string socket;
  std::string token;
};

// Prints "cistern: <message>" on stderr (with a hint when the daemon is not
// running) and returns exit code 1.
int Fail(const absl::Status& s);

// Prints "cistern: <message>" on stderr and returns exit code 2: a usage
// error, such as a bad local path the user gave.
int UsageError(const absl::Status& s);

// InvalidArgument naming `path` unless a file can be written there: `path` is
// not a directory, and its parent is a directory this process may write.
absl::Status CheckOutputPath(const std::string& path);

// Connects to the daemon `t` names (see Target).
absl::StatusOr<std::unique_ptr<Client>> ConnectTo(const Target& t);

int Put(const Target& t, const std::string& key, const std::string& file, bool evictable,
        bool if_absent, bool json);
int Get(const Target& t, const std::string& key, const std::string& out, bool json);
int List(const Target& t, const std::string& prefix, bool json);
int Stat(const Target& t, const std::string& key, bool json);
int Remove(const Target& t, const std::string& key, bool json);

// `n` bytes for people: "512 B", "1.5 MiB".
std::string HumanBytes(uint64_t n);

// `j` as JSON text (compact for indent -1); a string that is not UTF-8 (a
// file path, say) has its bad bytes replaced by U+FFFD rather than failing.
std::string JsonText(const nlohmann::ordered_json& j, int indent = -1);
// JsonText(j, 2) and a newline on stdout: the one way a command prints --json
// (`ls` alone streams its objects, one compact line each).
void PrintJson(const nlohmann::ordered_json& j);

}  // namespace cistern::cli

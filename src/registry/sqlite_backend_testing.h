// Test-only access to the SQLite backend: runs raw SQL on its connection, so
// tests can simulate faults SQLite itself can produce (a full database with
// `PRAGMA max_page_count=N`, a read-only one with `PRAGMA query_only=1`) or
// read its state (`PRAGMA page_count`). Never for production code.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "src/registry/metadata_backend.h"

namespace cistern::registry {

// Runs one SQL statement on `backend`'s connection, serialised with its other
// calls, and returns the first column of the first row as text ("" when it
// returns no rows). InvalidArgument when `backend` is not a SQLite backend;
// otherwise the same error mapping as the backend's own calls.
absl::StatusOr<std::string> ExecForTest(MetadataBackend* backend, std::string_view sql);

}  // namespace cistern::registry

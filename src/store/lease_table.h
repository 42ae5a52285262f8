// Leases: which session holds which generation. A lease keeps its object's
// bytes in place (never freed, never evicted) until released, explicitly or
// because its session ended. Not thread-safe; the ObjectStore serialises
// access. The table only records leases; the store adjusts Object::leases.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "src/store/object.h"

namespace cistern::store {

using SessionId = uint64_t;

class LeaseTable {
 public:
  // Records a new lease of `obj` by `session` and returns its id (never 0).
  uint64_t Add(Object* obj, SessionId session);
  // Removes the lease and returns its object. NotFound if no such lease exists;
  // PermissionDenied if it belongs to another session. Nothing changes on error.
  absl::StatusOr<Object*> Remove(uint64_t lease_id, SessionId session);
  // Removes every lease of `session`; returns their objects (one entry per lease).
  std::vector<Object*> RemoveSession(SessionId session);

  // Removes every lease; returns their objects.
  std::vector<Object*> RemoveAll();

  size_t size() const { return leases_.size(); }
  size_t CountForSession(SessionId session) const;

 private:
  struct Lease {
    Object* obj;
    SessionId session;
  };
  uint64_t next_id_ = 1;
  absl::flat_hash_map<uint64_t, Lease> leases_;
  absl::flat_hash_map<SessionId, absl::flat_hash_set<uint64_t>> by_session_;
};

}  // namespace cistern::store

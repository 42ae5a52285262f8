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
  static constexpr uint64_t kNoEntry = UINT64_MAX;
  struct Lease {
    Object* obj = nullptr;
    SessionId session = 0;
    bool hold = false;          // a hold (ObjectStore::Hold), not a plain lease
    uint64_t entry = kNoEntry;  // its SharedLeaseTable entry, if recorded there
  };

  // Ids start at a random point of a 63-bit space in each table, so a lease
  // id from before a daemon restart (one that was not recovered) does not
  // name a lease granted after it.
  LeaseTable();

  // Records a new lease of `obj` by `session` and returns its id (never 0).
  uint64_t Add(Object* obj, SessionId session, bool hold = false);
  // Records a lease recovered from an earlier daemon under its old id.
  // False (changing nothing) if the id is taken.
  bool AddWithId(uint64_t lease_id, Object* obj, SessionId session, uint64_t entry);
  // The lease, or nullptr. The pointer is valid until the table next changes
  // (an Add may rehash and move every lease): use it at once, never keep it.
  Lease* Find(uint64_t lease_id);
  // Gives every lease of `from` to `to`; returns their ids.
  std::vector<uint64_t> MoveSession(SessionId from, SessionId to);
  // Removes the lease and returns it. NotFound if no such lease exists;
  // PermissionDenied if it belongs to another session. Nothing changes on error.
  absl::StatusOr<Lease> Remove(uint64_t lease_id, SessionId session);
  // Removes every lease of `session` and returns them.
  std::vector<Lease> RemoveSession(SessionId session);

  // Removes every lease and returns them.
  std::vector<Lease> RemoveAll();

  size_t size() const { return leases_.size(); }
  size_t CountForSession(SessionId session) const;

 private:
  uint64_t next_id_;
  absl::flat_hash_map<uint64_t, Lease> leases_;
  absl::flat_hash_map<SessionId, absl::flat_hash_set<uint64_t>> by_session_;
};

}  // namespace cistern::store

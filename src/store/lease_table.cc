#include "src/store/lease_table.h"

#include "fmt/format.h"

namespace cistern::store {

uint64_t LeaseTable::Add(Object* obj, SessionId session) {
  uint64_t id = next_id_++;
  leases_.emplace(id, Lease{obj, session});
  by_session_[session].insert(id);
  return id;
}

absl::StatusOr<Object*> LeaseTable::Remove(uint64_t lease_id, SessionId session) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(fmt::format("lease {} is not held", lease_id));
  }
  if (it->second.session != session) {
    return absl::PermissionDeniedError(
        fmt::format("lease {} belongs to another session", lease_id));
  }
  Object* obj = it->second.obj;
  leases_.erase(it);
  auto s = by_session_.find(session);
  s->second.erase(lease_id);
  if (s->second.empty()) by_session_.erase(s);
  return obj;
}

std::vector<Object*> LeaseTable::RemoveSession(SessionId session) {
  std::vector<Object*> out;
  auto s = by_session_.find(session);
  if (s == by_session_.end()) return out;
  out.reserve(s->second.size());
  for (uint64_t id : s->second) {
    auto it = leases_.find(id);
    out.push_back(it->second.obj);
    leases_.erase(it);
  }
  by_session_.erase(s);
  return out;
}

std::vector<Object*> LeaseTable::RemoveAll() {
  std::vector<Object*> out;
  for (auto& [id, lease] : leases_) out.push_back(lease.obj);
  leases_.clear();
  by_session_.clear();
  return out;
}

size_t LeaseTable::CountForSession(SessionId session) const {
  auto s = by_session_.find(session);
  return s == by_session_.end() ? 0 : s->second.size();
}

}  // namespace cistern::store

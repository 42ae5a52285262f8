#include "src/store/lease_table.h"

#include <random>

#include "fmt/format.h"

namespace cistern::store {

LeaseTable::LeaseTable() {
  std::random_device rd;
  next_id_ = ((uint64_t{rd()} << 32 | rd()) >> 1) + 1;
}

uint64_t LeaseTable::Add(Object* obj, SessionId session, bool hold) {
  uint64_t id;
  do {
    id = next_id_++;
  } while (id == 0 || leases_.contains(id));  // recovered ids are kept as they were
  leases_.emplace(id, Lease{obj, session, hold});
  by_session_[session].insert(id);
  return id;
}

bool LeaseTable::AddWithId(uint64_t lease_id, Object* obj, SessionId session, uint64_t entry) {
  if (lease_id == 0 || !leases_.emplace(lease_id, Lease{obj, session, false, entry}).second) {
    return false;
  }
  by_session_[session].insert(lease_id);
  return true;
}

LeaseTable::Lease* LeaseTable::Find(uint64_t lease_id) {
  auto it = leases_.find(lease_id);
  return it == leases_.end() ? nullptr : &it->second;
}

std::vector<uint64_t> LeaseTable::MoveSession(SessionId from, SessionId to) {
  std::vector<uint64_t> ids;
  auto s = by_session_.find(from);
  if (s == by_session_.end()) return ids;
  ids.assign(s->second.begin(), s->second.end());
  by_session_.erase(s);
  auto& dest = by_session_[to];
  for (uint64_t id : ids) {
    leases_[id].session = to;
    dest.insert(id);
  }
  return ids;
}

absl::StatusOr<LeaseTable::Lease> LeaseTable::Remove(uint64_t lease_id, SessionId session) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(fmt::format("lease {} is not held", lease_id));
  }
  if (it->second.session != session) {
    return absl::PermissionDeniedError(
        fmt::format("lease {} belongs to another session", lease_id));
  }
  Lease lease = it->second;
  leases_.erase(it);
  auto s = by_session_.find(session);
  s->second.erase(lease_id);
  if (s->second.empty()) by_session_.erase(s);
  return lease;
}

std::vector<LeaseTable::Lease> LeaseTable::RemoveSession(SessionId session) {
  std::vector<Lease> out;
  auto s = by_session_.find(session);
  if (s == by_session_.end()) return out;
  out.reserve(s->second.size());
  for (uint64_t id : s->second) {
    auto it = leases_.find(id);
    out.push_back(it->second);
    leases_.erase(it);
  }
  by_session_.erase(s);
  return out;
}

std::vector<LeaseTable::Lease> LeaseTable::RemoveAll() {
  std::vector<Lease> out;
  for (auto& [id, lease] : leases_) out.push_back(lease);
  leases_.clear();
  by_session_.clear();
  return out;
}

size_t LeaseTable::CountForSession(SessionId session) const {
  auto s = by_session_.find(session);
  return s == by_session_.end() ? 0 : s->second.size();
}

}  // namespace cistern::store

#include <map>

#include "src/common/mutex.h"
#include "src/registry/metadata_backend.h"

namespace cistern::registry {

struct MemoryBackend::State {
  mutable Mutex mu;
  std::map<std::string, std::string, std::less<>> data ABSL_GUARDED_BY(mu);
  absl::Status fail ABSL_GUARDED_BY(mu);
  uint64_t applied ABSL_GUARDED_BY(mu) = 0;
};

MemoryBackend::MemoryBackend() : state_(std::make_unique<State>()) {}
MemoryBackend::~MemoryBackend() = default;

absl::Status MemoryBackend::Apply(const WriteBatch& batch) {
  MutexLock l(&state_->mu);
  if (!state_->fail.ok()) return state_->fail;
  for (const auto& op : batch.ops()) {
    if (op.value) {
      state_->data.insert_or_assign(op.key, *op.value);
    } else {
      state_->data.erase(op.key);
    }
  }
  ++state_->applied;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> MemoryBackend::Get(std::string_view key) {
  MutexLock l(&state_->mu);
  auto it = state_->data.find(key);
  if (it == state_->data.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

absl::Status MemoryBackend::Scan(
    std::string_view prefix, absl::FunctionRef<bool(std::string_view, std::string_view)> visit) {
  MutexLock l(&state_->mu);
  for (auto it = state_->data.lower_bound(prefix);
       it != state_->data.end() && std::string_view(it->first).starts_with(prefix); ++it) {
    if (!visit(it->first, it->second)) break;
  }
  return absl::OkStatus();
}

void MemoryBackend::FailWritesForTest(absl::Status status) {
  MutexLock l(&state_->mu);
  state_->fail = std::move(status);
}

uint64_t MemoryBackend::applied_batches() const {
  MutexLock l(&state_->mu);
  return state_->applied;
}

}  // namespace cistern::registry

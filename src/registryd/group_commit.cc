#include "src/registryd/group_commit.h"

#include <chrono>
#include <utility>

#include "spdlog/spdlog.h"
#include "src/common/fmt_absl.h"

namespace cistern::registryd {

GroupCommitter::GroupCommitter(catalog::Catalog* catalog, SharedMutex* catalog_mu,
                               registry::MetadataBackend* backend, size_t max_group,
                               std::function<void(const GroupStats&)> on_group)
    : catalog_(catalog),
      catalog_mu_(catalog_mu),
      backend_(backend),
      max_group_(max_group == 0 ? 1 : max_group),
      on_group_(std::move(on_group)) {
  thread_ = std::thread([this] { Loop(); });
}

GroupCommitter::~GroupCommitter() { Stop(); }

void GroupCommitter::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    work_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  MutexLock lock(&mu_);
  for (Pending* p : queue_) {
    p->status = absl::UnavailableError("the registry is shutting down");
    p->done = true;
  }
  queue_.clear();
  done_.SignalAll();
}

absl::Status GroupCommitter::Run(Op op) {
  Pending p{&op, absl::OkStatus()};
  MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the registry is shutting down");
  queue_.push_back(&p);
  work_.Signal();
  while (!p.done) done_.Wait(&mu_);
  return p.status;
}

void GroupCommitter::Loop() {
  for (;;) {
    std::deque<Pending*> group;
    {
      MutexLock lock(&mu_);
      while (queue_.empty() && !stopping_) work_.Wait(&mu_);
      if (stopping_) return;  // Stop answers what is queued
      while (!queue_.empty() && group.size() < max_group_) {
        group.push_back(queue_.front());
        queue_.pop_front();
      }
    }
    WriteGroup(group);
    MutexLock lock(&mu_);
    for (Pending* p : group) p->done = true;
    done_.SignalAll();
  }
}

void GroupCommitter::WriteGroup(std::deque<Pending*>& group) {
  catalog::Txn txn;
  std::vector<Pending*> applied;
  {
    WriterLock lock(catalog_mu_);
    for (Pending* p : group) {
      p->status = (*p->op)(*catalog_, &txn);
      if (p->status.ok()) applied.push_back(p);
    }
  }
  GroupStats stats;
  stats.ops = group.size();
  stats.batch_ops = txn.batch.size();
  Clock::TimePoint start = Clock::Real()->Now();
  absl::Status s = txn.batch.empty() ? absl::OkStatus() : backend_->Apply(txn.batch);
  stats.apply_time = Clock::Real()->Now() - start;
  {
    WriterLock lock(catalog_mu_);
    if (s.ok()) {
      catalog_->Commit(&txn);
    } else {
      catalog_->Rollback(&txn);
    }
  }
  if (!s.ok()) {
    stats.failed = true;
    for (Pending* p : applied) p->status = s;
    // Every caller gets the error; the log says it once a second, not once
    // per group, however fast the daemons retry.
    ++failures_unlogged_;
    Clock::TimePoint now = Clock::Real()->Now();
    if (now - last_failure_log_ >= std::chrono::seconds(1)) {
      spdlog::error(
          "a group commit of {} requests failed, nothing of it applied ({} failed since "
          "the last such line): {}",
          applied.size(), failures_unlogged_, s.message());
      last_failure_log_ = now;
      failures_unlogged_ = 0;
    }
  }
  if (on_group_) on_group_(stats);
}

}  // namespace cistern::registryd

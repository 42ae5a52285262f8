// A std::mutex with Clang thread-safety annotations, so members can be marked
// ABSL_GUARDED_BY(mu_); scripts/check_thread_safety (ctest ThreadSafetyCheck,
// in make test) compiles the tree with -Wthread-safety -Werror to check them.
// std::mutex rather than absl::Mutex because Debian's abseil is not built with
// TSan annotations and would hide races from TSan.
#pragma once

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace cistern {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* mu_;
};

}  // namespace cistern

// Test-only: a stand-in for fdatasync (SqliteOptions::fdatasync_for_test)
// that a test can hold shut, or make fail with EIO, and whose calls it can
// count and wait for.
#pragma once

#include <unistd.h>

#include <cerrno>

#include "src/common/mutex.h"

namespace cistern::registry {

class SyncGate {
 public:
  // The hook: records the call, waits while the gate is shut, then syncs (or
  // fails with EIO once FailFromNowOn was called).
  int Sync(int fd) {
    MutexLock l(&mu_);
    ++entered_;
    changed_.SignalAll();
    while (shut_) changed_.Wait(&mu_);
    if (fail_) {
      errno = EIO;
      return -1;
    }
    return ::fdatasync(fd);
  }
  void Shut() {
    MutexLock l(&mu_);
    shut_ = true;
  }
  void Open() {
    MutexLock l(&mu_);
    shut_ = false;
    changed_.SignalAll();
  }
  void FailFromNowOn() {
    MutexLock l(&mu_);
    fail_ = true;
  }
  // Waits until the hook was entered `n` times in all.
  void AwaitEntered(int n) {
    MutexLock l(&mu_);
    while (entered_ < n) changed_.Wait(&mu_);
  }
  int entered() {
    MutexLock l(&mu_);
    return entered_;
  }

 private:
  Mutex mu_;
  CondVar changed_;
  int entered_ = 0;
  bool shut_ = false;
  bool fail_ = false;
};

}  // namespace cistern::registry

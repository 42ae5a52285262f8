// A token bucket for log lines that a client can provoke (rejected requests,
// malformed frames, refused connections): without it, anyone allowed to
// connect could fill the disk with the daemon's log. Lines beyond the rate
// are dropped and counted; the next line let through says how many.
//
// Thread-safety: none (the server's loop thread owns it).
#pragma once

#include <algorithm>
#include <cstdint>

#include "src/common/clock.h"

namespace cistern::daemon {

class LogLimiter {
 public:
  // `burst` lines at once, then `per_second` lines a second.
  LogLimiter(double per_second, double burst, Clock* clock)
      : rate_(per_second), burst_(burst), tokens_(burst), clock_(clock), last_(clock->Now()) {}

  // True if one line may be written now; then *suppressed is the number of
  // lines dropped since the last one let through (and the count restarts).
  bool Allow(uint64_t* suppressed) {
    Clock::TimePoint now = clock_->Now();
    double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
    if (tokens_ < 1) {
      ++dropped_;
      return false;
    }
    tokens_ -= 1;
    *suppressed = dropped_;
    dropped_ = 0;
    return true;
  }

 private:
  double rate_, burst_, tokens_;
  Clock* clock_;
  Clock::TimePoint last_;
  uint64_t dropped_ = 0;
};

}  // namespace cistern::daemon

// CHECK(cond) << "context": aborts the process with the message when a broken
// invariant is found. For programming errors only; bad input gets a Status.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace cistern::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* cond) {
    stream_ << file << ":" << line << ": CHECK failed: " << cond << " ";
  }
  [[noreturn]] ~CheckFailure() {
    std::fprintf(stderr, "%s\n", stream_.str().c_str());
    std::fflush(stderr);
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace cistern::internal

#define CHECK(cond)                         \
  (cond) ? (void)0                          \
         : ::cistern::internal::Voidify() & \
               ::cistern::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()
#define CHECK_EQ(a, b) CHECK((a) == (b)) << "(" << (a) << " vs " << (b) << ") "

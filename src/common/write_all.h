// Writes all of a buffer to a file descriptor, retrying short writes and
// EINTR. False (with errno set) on any other failure.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>

namespace cistern {

inline bool WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace cistern

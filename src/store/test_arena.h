// Test helper: an arena in heap memory, formatted like the daemon formats files.
#pragma once

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "src/store/arena.h"

namespace cistern::store {

// Zeroed, page-aligned heap memory standing in for a mapped file (a lease
// table, an index, fast lease regions).
struct HeapBuffer {
  explicit HeapBuffer(uint64_t n)
      : base(static_cast<char*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))), size(n) {
    std::memset(base, 0, n);
  }
  ~HeapBuffer() { std::free(base); }
  HeapBuffer(const HeapBuffer&) = delete;
  HeapBuffer& operator=(const HeapBuffer&) = delete;
  char* base;
  uint64_t size;
};

class TestRegion {
 public:
  explicit TestRegion(uint64_t size, std::string tier = "mem", uint32_t index = 0)
      : size_(size), tier_(std::move(tier)), index_(index) {
    base_ = static_cast<char*>(std::aligned_alloc(4096, size));
    std::memset(base_, 0, size);
    auto s = Arena::Format(base_, size, index_, tier_, 1);
    if (!s.ok()) std::abort();
  }
  ~TestRegion() { std::free(base_); }
  TestRegion(const TestRegion&) = delete;
  TestRegion& operator=(const TestRegion&) = delete;

  char* base() const { return base_; }
  uint64_t size() const { return size_; }
  const std::string& tier() const { return tier_; }

 private:
  char* base_;
  uint64_t size_;
  std::string tier_;
  uint32_t index_;
};

}  // namespace cistern::store

// An offset allocator over one contiguous range of an arena. It tracks free
// ranges only; allocated ranges are owned by their objects. Pure arithmetic: it
// never touches the arena's memory (the Arena writes block tags). Not
// thread-safe; the ObjectStore serialises access.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

namespace cistern::store {

class Allocator {
 public:
  // Manages [begin, begin + size). Starts with nothing free; Free the ranges
  // that are (recovery frees what its arena walk finds free).
  Allocator(uint64_t begin, uint64_t size) : begin_(begin), size_(size) {}

  struct Allocation {
    uint64_t offset;
    // The part of the chosen free range left over, [remainder_offset, +remainder_size);
    // remainder_size is 0 when the range was used whole.
    uint64_t remainder_offset;
    uint64_t remainder_size;
  };
  // Best fit: the smallest free range that holds `n` bytes (a positive multiple
  // of 64), lowest offset among equals; the allocation is carved from its start.
  std::optional<Allocation> Allocate(uint64_t n);

  // Returns [offset, offset + n) and coalesces it with free neighbours. The
  // result is the free range that now contains it.
  std::pair<uint64_t, uint64_t> Free(uint64_t offset, uint64_t n);

  uint64_t capacity() const { return size_; }
  uint64_t free_bytes() const { return free_bytes_; }
  uint64_t used_bytes() const { return size_ - free_bytes_; }
  uint64_t largest_free() const { return by_size_.empty() ? 0 : by_size_.rbegin()->first; }
  size_t free_ranges() const { return by_offset_.size(); }
  // 1 - largest_free / free_bytes: 0 when all free space is one range.
  double fragmentation() const {
    return free_bytes_ == 0 ? 0.0 : 1.0 - double(largest_free()) / double(free_bytes_);
  }

  // Aborts if the free ranges overlap, leave the managed range or disagree
  // with free_bytes(). For tests.
  void CheckInvariantsForTest() const;

 private:
  void Insert(uint64_t offset, uint64_t n);
  void Erase(std::map<uint64_t, uint64_t>::iterator it);

  const uint64_t begin_;
  const uint64_t size_;
  uint64_t free_bytes_ = 0;
  std::map<uint64_t, uint64_t> by_offset_;           // offset -> size
  std::set<std::pair<uint64_t, uint64_t>> by_size_;  // (size, offset)
};

}  // namespace cistern::store

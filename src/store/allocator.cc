// Free ranges are kept twice: by offset (to find neighbours when coalescing) and
// by (size, offset) (to find the best fit in O(log n)). Allocation carves from
// the start of the best-fitting range, which keeps the remainder contiguous with
// whatever followed it. Freeing merges with the range ending exactly at the
// freed offset and the one starting exactly at its end, so two free ranges are
// never adjacent and the free list is as short as it can be.
#include "src/store/allocator.h"

#include <cstdlib>

#include "src/common/check.h"
#include "src/store/layout.h"

namespace cistern::store {

void Allocator::Insert(uint64_t offset, uint64_t n) {
  by_offset_.emplace(offset, n);
  by_size_.emplace(n, offset);
  free_bytes_ += n;
}

void Allocator::Erase(std::map<uint64_t, uint64_t>::iterator it) {
  by_size_.erase({it->second, it->first});
  free_bytes_ -= it->second;
  by_offset_.erase(it);
}

std::optional<Allocator::Allocation> Allocator::Allocate(uint64_t n) {
  CHECK(n > 0 && n % kAlign == 0) << "allocation size " << n;
  auto fit = by_size_.lower_bound({n, 0});
  if (fit == by_size_.end()) return std::nullopt;
  auto [size, offset] = *fit;
  Erase(by_offset_.find(offset));
  Allocation a{offset, offset + n, size - n};
  if (a.remainder_size > 0) Insert(a.remainder_offset, a.remainder_size);
  return a;
}

std::pair<uint64_t, uint64_t> Allocator::Free(uint64_t offset, uint64_t n) {
  CHECK(offset >= begin_ && n > 0 && offset + n <= begin_ + size_)
      << "free of [" << offset << ", +" << n << ") outside the arena";
  uint64_t start = offset;
  uint64_t end = offset + n;
  auto next = by_offset_.lower_bound(offset);
  if (next != by_offset_.end()) {
    CHECK(next->first >= end) << "double free at " << offset;
    if (next->first == end) {
      end += next->second;
      Erase(next);
    }
  }
  auto after = by_offset_.lower_bound(offset);
  if (after != by_offset_.begin()) {
    auto prev = std::prev(after);
    CHECK(prev->first + prev->second <= start) << "double free at " << offset;
    if (prev->first + prev->second == start) {
      start = prev->first;
      Erase(prev);
    }
  }
  Insert(start, end - start);
  return {start, end - start};
}

void Allocator::CheckInvariantsForTest() const {
  uint64_t total = 0;
  uint64_t last_end = begin_;
  bool first = true;
  for (auto [off, n] : by_offset_) {
    CHECK(off >= begin_ && off + n <= begin_ + size_);
    CHECK(first || off > last_end) << "adjacent or overlapping free ranges at " << off;
    CHECK(by_size_.count({n, off}) == 1);
    last_end = off + n;
    first = false;
    total += n;
  }
  CHECK_EQ(total, free_bytes_);
  CHECK_EQ(by_size_.size(), by_offset_.size());
}

}  // namespace cistern::store

// The eviction order of one tier: an intrusive doubly-linked list of the
// objects that may be evicted right now (evictable, visible, no lease), least
// recently used at the front. An object leaves the list when a lease is taken
// and rejoins at the back when its last lease ends, so the order is that of the
// last release — exact LRU over unleased objects, no sampling. Not thread-safe;
// the ObjectStore serialises access.
#pragma once

#include <cstdint>

#include "src/store/object.h"

namespace cistern::store {

class LruList {
 public:
  // Appends `obj` as most recently used. It must not be in a list.
  void PushBack(Object* obj);
  // Unlinks `obj` if it is in the list.
  void Remove(Object* obj);
  // The least recently used object, or nullptr.
  Object* Front() const { return head_; }
  bool empty() const { return head_ == nullptr; }
  uint64_t bytes() const { return bytes_; }
  uint64_t size() const { return size_; }

 private:
  Object* head_ = nullptr;
  Object* tail_ = nullptr;
  uint64_t bytes_ = 0;
  uint64_t size_ = 0;
};

}  // namespace cistern::store

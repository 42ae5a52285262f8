// The in-memory record of one generation of one key. Owned by the ObjectTable;
// every field is guarded by the ObjectStore's mutex.
#pragma once

#include <cstdint>
#include <string>

namespace cistern::store {

struct KeyRecord;

enum class Visibility : uint8_t {
  kWriting,  // created, not sealed: invisible
  kVisible,  // the key's current sealed generation
  kRemoved,  // removed, superseded or evicted: invisible, freed at the last release
};

struct Object {
  KeyRecord* key = nullptr;
  uint64_t generation = 0;  // 0 until sealed
  uint64_t block_offset = 0;
  uint64_t block_size = 0;
  uint64_t payload_size = 0;
  uint32_t tier = 0;
  uint32_t leases = 0;
  // Leases that are holds (ObjectStore::Hold): while any lives, the object
  // cannot be removed or replaced. `holder` names the first holder (an index
  // into the store's holder names).
  uint32_t holds = 0;
  uint32_t holder = 0;
  Visibility visibility = Visibility::kWriting;
  bool evictable = false;
  // Links in the tier's LRU list; non-null only while the object is in it.
  Object* lru_prev = nullptr;
  Object* lru_next = nullptr;
  bool in_lru = false;
};

// One key and its live generations (visible or lingering under leases).
struct KeyRecord {
  std::string key;
  Object* visible = nullptr;  // the current sealed generation, if any
  uint32_t objects = 0;       // Objects pointing here, visible or not
};

}  // namespace cistern::store

// The key index: key -> KeyRecord, ordered so List can page by key. It owns the
// Object and KeyRecord allocations. A KeyRecord lives while any Object refers to
// it. Not thread-safe; the ObjectStore serialises access.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/btree_set.h"
#include "src/store/object.h"

namespace cistern::store {

class ObjectTable {
 public:
  ObjectTable() = default;
  ~ObjectTable();
  ObjectTable(const ObjectTable&) = delete;
  ObjectTable& operator=(const ObjectTable&) = delete;

  // A new Object for `key`, attached to its KeyRecord (created if needed).
  Object* NewObject(std::string_view key);
  // Detaches and deletes `obj`; deletes its KeyRecord when nothing refers to it.
  void DeleteObject(Object* obj);

  // The key's record, or nullptr.
  KeyRecord* Find(std::string_view key) const;
  // The key's visible generation, or nullptr.
  Object* FindVisible(std::string_view key) const {
    KeyRecord* r = Find(key);
    return r ? r->visible : nullptr;
  }

  // Makes `obj` its key's visible generation. The key must have none.
  void SetVisible(Object* obj);
  // `obj` stops being visible (no-op if it was not).
  void ClearVisible(Object* obj);

  // Up to `limit` visible objects whose keys start with `prefix` and sort after
  // `cursor`, in key order.
  std::vector<Object*> List(std::string_view prefix, size_t limit, std::string_view cursor) const;

  size_t visible_count() const { return visible_; }
  size_t key_count() const { return index_.size(); }

 private:
  struct Less {
    using is_transparent = void;
    static std::string_view K(const KeyRecord* r) { return r->key; }
    static std::string_view K(std::string_view s) { return s; }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return K(a) < K(b);
    }
  };
  absl::btree_set<KeyRecord*, Less> index_;
  size_t visible_ = 0;
};

}  // namespace cistern::store

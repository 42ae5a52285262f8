#include "src/store/object_table.h"

#include "src/common/check.h"

namespace cistern::store {

ObjectTable::~ObjectTable() {
  // Objects are the owner's to free (~ObjectStore deletes every one it still
  // reaches: pending writes, leased and visible objects), which also frees
  // their key records. Only records left over are freed here; an Object the
  // owner did not delete would leak (ASan's leak check reports it in tests).
  for (KeyRecord* r : index_) delete r;
}

Object* ObjectTable::NewObject(std::string_view key) {
  KeyRecord* r = Find(key);
  if (r == nullptr) {
    r = new KeyRecord{std::string(key)};
    index_.insert(r);
  }
  ++r->objects;
  auto* obj = new Object;
  obj->key = r;
  return obj;
}

void ObjectTable::DeleteObject(Object* obj) {
  KeyRecord* r = obj->key;
  CHECK(!obj->in_lru);
  if (r->visible == obj) {
    r->visible = nullptr;
    --visible_;
  }
  CHECK(r->objects > 0);
  if (--r->objects == 0) {
    index_.erase(r);
    delete r;
  }
  delete obj;
}

KeyRecord* ObjectTable::Find(std::string_view key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : *it;
}

void ObjectTable::SetVisible(Object* obj) {
  KeyRecord* r = obj->key;
  CHECK(r->visible == nullptr);
  ++visible_;
  r->visible = obj;
  obj->visibility = Visibility::kVisible;
}

void ObjectTable::ClearVisible(Object* obj) {
  if (obj->key->visible == obj) {
    obj->key->visible = nullptr;
    --visible_;
  }
  if (obj->visibility == Visibility::kVisible) obj->visibility = Visibility::kRemoved;
}

std::vector<Object*> ObjectTable::List(std::string_view prefix, size_t limit,
                                       std::string_view cursor) const {
  std::vector<Object*> out;
  auto it =
      cursor.empty() || cursor < prefix ? index_.lower_bound(prefix) : index_.upper_bound(cursor);
  for (; it != index_.end() && out.size() < limit; ++it) {
    std::string_view k = (*it)->key;
    if (k.substr(0, prefix.size()) != prefix) break;
    if ((*it)->visible) out.push_back((*it)->visible);
  }
  return out;
}

}  // namespace cistern::store

#include "src/store/evictor.h"

#include "src/common/check.h"

namespace cistern::store {

void LruList::PushBack(Object* obj) {
  CHECK(!obj->in_lru);
  obj->in_lru = true;
  obj->lru_prev = tail_;
  obj->lru_next = nullptr;
  if (tail_)
    tail_->lru_next = obj;
  else
    head_ = obj;
  tail_ = obj;
  bytes_ += obj->block_size;
  ++size_;
}

void LruList::Remove(Object* obj) {
  if (!obj->in_lru) return;
  if (obj->lru_prev)
    obj->lru_prev->lru_next = obj->lru_next;
  else
    head_ = obj->lru_next;
  if (obj->lru_next)
    obj->lru_next->lru_prev = obj->lru_prev;
  else
    tail_ = obj->lru_prev;
  obj->lru_prev = obj->lru_next = nullptr;
  obj->in_lru = false;
  bytes_ -= obj->block_size;
  --size_;
}

}  // namespace cistern::store

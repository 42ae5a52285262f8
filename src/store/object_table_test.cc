#include "src/store/object_table.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cistern::store {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Owns the table and deletes, through it, whatever Objects a test leaves
// behind (the table's destructor frees only KeyRecords).
class ObjectTableTest : public ::testing::Test {
 protected:
  ~ObjectTableTest() override {
    for (Object* obj : live_) table_.DeleteObject(obj);
  }

  Object* New(std::string_view key) {
    Object* obj = table_.NewObject(key);
    live_.push_back(obj);
    return obj;
  }
  // A new object of `key`, made visible with `generation`.
  Object* NewVisible(std::string_view key, uint64_t generation = 1) {
    Object* obj = New(key);
    obj->generation = generation;
    table_.SetVisible(obj);
    return obj;
  }
  void Delete(Object* obj) {
    live_.erase(std::find(live_.begin(), live_.end(), obj));
    table_.DeleteObject(obj);
  }

  static std::vector<std::string> Keys(const std::vector<Object*>& objs) {
    std::vector<std::string> keys;
    for (const Object* obj : objs) keys.push_back(obj->key->key);
    return keys;
  }

  ObjectTable table_;
  std::vector<Object*> live_;
};

TEST_F(ObjectTableTest, NewObjectIsAttachedToItsKeyAndInvisibleUntilSetVisible) {
  Object* obj = New("a");
  ASSERT_NE(obj->key, nullptr);
  EXPECT_EQ(obj->key->key, "a");
  EXPECT_EQ(obj->key->objects, 1u);
  EXPECT_EQ(obj->visibility, Visibility::kWriting);
  EXPECT_EQ(obj->generation, 0u);
  EXPECT_EQ(table_.Find("a"), obj->key);
  EXPECT_EQ(table_.FindVisible("a"), nullptr);
  EXPECT_EQ(table_.key_count(), 1u);
  EXPECT_EQ(table_.visible_count(), 0u);
  EXPECT_THAT(table_.List("", 10, ""), IsEmpty());
}

TEST_F(ObjectTableTest, FindOfAnUnknownKeyIsNull) {
  NewVisible("ab");
  EXPECT_EQ(table_.Find("a"), nullptr);  // a prefix of a key is not that key
  EXPECT_EQ(table_.Find("abc"), nullptr);
  EXPECT_EQ(table_.Find(""), nullptr);
  EXPECT_EQ(table_.FindVisible("a"), nullptr);
  EXPECT_NE(table_.Find("ab"), nullptr);
}

TEST_F(ObjectTableTest, GenerationsOfOneKeyShareOneRecord) {
  Object* first = New("k");
  Object* second = New("k");
  Object* other = New("other");
  EXPECT_NE(first, second);
  EXPECT_EQ(first->key, second->key);
  EXPECT_NE(first->key, other->key);
  EXPECT_EQ(first->key->objects, 2u);
  EXPECT_EQ(table_.key_count(), 2u);
}

TEST_F(ObjectTableTest, RecordLivesUntilItsLastObjectIsDeleted) {
  Object* first = New("k");
  Object* second = New("k");
  KeyRecord* record = first->key;
  Delete(first);
  EXPECT_EQ(table_.Find("k"), record);
  EXPECT_EQ(record->objects, 1u);
  EXPECT_EQ(table_.key_count(), 1u);
  Delete(second);
  EXPECT_EQ(table_.Find("k"), nullptr);
  EXPECT_EQ(table_.key_count(), 0u);
  // A new object of the key gets a fresh record with a count of one.
  Object* third = New("k");
  EXPECT_EQ(third->key->objects, 1u);
  EXPECT_EQ(table_.key_count(), 1u);
}

TEST_F(ObjectTableTest, SetVisibleMakesTheObjectTheKeysVisibleGeneration) {
  Object* obj = New("k");
  obj->generation = 7;
  table_.SetVisible(obj);
  EXPECT_EQ(obj->visibility, Visibility::kVisible);
  EXPECT_EQ(obj->key->visible, obj);
  EXPECT_EQ(table_.FindVisible("k"), obj);
  EXPECT_EQ(table_.FindVisible("k")->generation, 7u);
  EXPECT_EQ(table_.visible_count(), 1u);
}

TEST_F(ObjectTableTest, ClearVisibleHidesTheKeyButKeepsItsRecord) {
  Object* obj = NewVisible("k");
  table_.ClearVisible(obj);
  EXPECT_EQ(obj->visibility, Visibility::kRemoved);
  EXPECT_EQ(table_.FindVisible("k"), nullptr);
  EXPECT_EQ(table_.Find("k"), obj->key);
  EXPECT_EQ(table_.visible_count(), 0u);
  EXPECT_THAT(table_.List("", 10, ""), IsEmpty());
  // A second ClearVisible is a no-op: the count does not go below zero.
  table_.ClearVisible(obj);
  EXPECT_EQ(obj->visibility, Visibility::kRemoved);
  EXPECT_EQ(table_.visible_count(), 0u);
}

TEST_F(ObjectTableTest, ClearVisibleOfAnObjectBeingWrittenChangesNothing) {
  Object* current = NewVisible("k", 1);
  Object* writing = New("k");
  table_.ClearVisible(writing);
  EXPECT_EQ(writing->visibility, Visibility::kWriting);
  EXPECT_EQ(table_.FindVisible("k"), current);
  EXPECT_EQ(current->visibility, Visibility::kVisible);
  EXPECT_EQ(table_.visible_count(), 1u);
}

TEST_F(ObjectTableTest, ANewGenerationReplacesTheVisibleOneWhileTheOldLingers) {
  Object* old_gen = NewVisible("k", 1);
  Object* new_gen = New("k");
  new_gen->generation = 2;
  table_.ClearVisible(old_gen);
  table_.SetVisible(new_gen);
  EXPECT_EQ(table_.FindVisible("k"), new_gen);
  EXPECT_EQ(old_gen->visibility, Visibility::kRemoved);
  EXPECT_EQ(table_.visible_count(), 1u);
  EXPECT_EQ(new_gen->key->objects, 2u);
  EXPECT_EQ(Keys(table_.List("", 10, "")), std::vector<std::string>{"k"});
  EXPECT_EQ(table_.List("", 10, "")[0]->generation, 2u);
  // Freeing the lingering generation leaves the current one alone.
  Delete(old_gen);
  EXPECT_EQ(table_.FindVisible("k"), new_gen);
  EXPECT_EQ(table_.visible_count(), 1u);
  EXPECT_EQ(new_gen->key->objects, 1u);
}

TEST_F(ObjectTableTest, DeletingTheVisibleGenerationHidesTheKey) {
  NewVisible("a");
  Object* b = NewVisible("b");
  EXPECT_EQ(table_.visible_count(), 2u);
  Delete(b);
  EXPECT_EQ(table_.FindVisible("b"), nullptr);
  EXPECT_EQ(table_.Find("b"), nullptr);
  EXPECT_EQ(table_.visible_count(), 1u);
  EXPECT_EQ(Keys(table_.List("", 10, "")), std::vector<std::string>{"a"});
}

TEST_F(ObjectTableTest, DeletingAnInvisibleGenerationKeepsTheVisibleCount) {
  NewVisible("k");
  Object* writing = New("k");
  Delete(writing);
  EXPECT_EQ(table_.visible_count(), 1u);
  EXPECT_NE(table_.FindVisible("k"), nullptr);
}

TEST_F(ObjectTableTest, ListReturnsVisibleObjectsInKeyOrderWhateverTheInsertionOrder) {
  for (std::string_view k : {"d", "b", "a", "e", "c"}) NewVisible(k);
  EXPECT_THAT(Keys(table_.List("", 10, "")), ElementsAre("a", "b", "c", "d", "e"));
}

TEST_F(ObjectTableTest, ListOrdersKeysBytewise) {
  // Bytes compare unsigned: upper case before lower case, UTF-8 after ASCII,
  // and a key before its extensions.
  for (std::string_view k : {"\xc3\xa9", "b", "B", "ab", "a"}) NewVisible(k);
  EXPECT_THAT(Keys(table_.List("", 10, "")), ElementsAre("B", "a", "ab", "b", "\xc3\xa9"));
}

TEST_F(ObjectTableTest, ListSkipsKeysWithNoVisibleGeneration) {
  NewVisible("a");
  New("b");  // being written
  Object* c = NewVisible("c");
  table_.ClearVisible(c);  // removed, lingering
  NewVisible("d");
  EXPECT_THAT(Keys(table_.List("", 10, "")), ElementsAre("a", "d"));
}

TEST_F(ObjectTableTest, ListStopsAtLimitAndInvisibleKeysDoNotCountTowardsIt) {
  NewVisible("a");
  for (std::string_view k : {"b", "c", "d"}) New(k);
  NewVisible("e");
  NewVisible("f");
  EXPECT_THAT(Keys(table_.List("", 2, "")), ElementsAre("a", "e"));
  EXPECT_THAT(Keys(table_.List("", 1, "")), ElementsAre("a"));
  EXPECT_THAT(table_.List("", 0, ""), IsEmpty());
}

TEST_F(ObjectTableTest, ListWithAPrefixReturnsOnlyKeysThatStartWithIt) {
  for (std::string_view k : {"a", "b", "b/1", "b/2", "b0", "ba", "c"}) NewVisible(k);
  EXPECT_THAT(Keys(table_.List("b/", 10, "")), ElementsAre("b/1", "b/2"));
  EXPECT_THAT(Keys(table_.List("b", 10, "")), ElementsAre("b", "b/1", "b/2", "b0", "ba"));
  EXPECT_THAT(Keys(table_.List("ba", 10, "")), ElementsAre("ba"));
  EXPECT_THAT(table_.List("bb", 10, ""), IsEmpty());
  EXPECT_THAT(table_.List("0", 10, ""), IsEmpty());
  EXPECT_THAT(table_.List("z", 10, ""), IsEmpty());
}

TEST_F(ObjectTableTest, ListReturnsOnlyKeysSortingStrictlyAfterTheCursor) {
  for (std::string_view k : {"a", "b", "c", "d"}) NewVisible(k);
  EXPECT_THAT(Keys(table_.List("", 10, "b")), ElementsAre("c", "d"));
  // A cursor that is not a key starts at the next key after it.
  EXPECT_THAT(Keys(table_.List("", 10, "bb")), ElementsAre("c", "d"));
  EXPECT_THAT(table_.List("", 10, "d"), IsEmpty());
  EXPECT_THAT(table_.List("", 10, "z"), IsEmpty());
}

TEST_F(ObjectTableTest, ListPagesThroughAPrefixWithTheLastKeyAsCursor) {
  for (std::string_view k : {"a/9", "p/5", "p/1", "p/4", "p/2", "p/3", "q/0"}) NewVisible(k);
  New("p/25");  // invisible: never listed
  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  while (true) {
    std::vector<Object*> page = table_.List("p/", 2, cursor);
    if (page.empty()) break;
    ASSERT_LE(page.size(), 2u);
    for (const std::string& k : Keys(page)) seen.push_back(k);
    cursor = page.back()->key->key;
    ASSERT_LT(++pages, 10) << "paging does not end";
  }
  EXPECT_THAT(seen, ElementsAre("p/1", "p/2", "p/3", "p/4", "p/5"));
  EXPECT_EQ(pages, 3);
}

TEST_F(ObjectTableTest, ListWithACursorBeforeThePrefixStartsAtThePrefix) {
  for (std::string_view k : {"a", "m", "p/1", "p/2", "z"}) NewVisible(k);
  EXPECT_THAT(Keys(table_.List("p/", 10, "a")), ElementsAre("p/1", "p/2"));
  EXPECT_THAT(Keys(table_.List("p/", 10, "p")), ElementsAre("p/1", "p/2"));
}

TEST_F(ObjectTableTest, ListWithACursorPastThePrefixIsEmpty) {
  for (std::string_view k : {"p/1", "p/2", "q", "r"}) NewVisible(k);
  EXPECT_THAT(table_.List("p/", 10, "p/2"), IsEmpty());
  EXPECT_THAT(table_.List("p/", 10, "q"), IsEmpty());
}

TEST_F(ObjectTableTest, CountsFollowEveryChange) {
  Object* a1 = NewVisible("a", 1);
  Object* a2 = New("a");
  Object* b = NewVisible("b", 2);
  EXPECT_EQ(table_.key_count(), 2u);
  EXPECT_EQ(table_.visible_count(), 2u);
  table_.ClearVisible(a1);
  a2->generation = 3;
  table_.SetVisible(a2);
  EXPECT_EQ(table_.visible_count(), 2u);
  Delete(a1);
  Delete(b);
  EXPECT_EQ(table_.key_count(), 1u);
  EXPECT_EQ(table_.visible_count(), 1u);
  Delete(a2);
  EXPECT_EQ(table_.key_count(), 0u);
  EXPECT_EQ(table_.visible_count(), 0u);
}

using ObjectTableDeathTest = ObjectTableTest;

TEST_F(ObjectTableDeathTest, SetVisibleOnAKeyThatHasAVisibleGenerationAborts) {
  NewVisible("k", 1);
  Object* second = New("k");
  EXPECT_DEATH(table_.SetVisible(second), "visible == nullptr");
}

TEST_F(ObjectTableDeathTest, DeletingAnObjectStillInAnLruListAborts) {
  Object* obj = NewVisible("k");
  obj->in_lru = true;
  EXPECT_DEATH(table_.DeleteObject(obj), "in_lru");
  obj->in_lru = false;
}

}  // namespace
}  // namespace cistern::store

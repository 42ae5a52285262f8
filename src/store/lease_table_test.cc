#include "src/store/lease_table.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cistern::store {
namespace {

using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using ::testing::UnorderedElementsAreArray;

// The table never dereferences its Object pointers, so plain Objects do.
class LeaseTableTest : public ::testing::Test {
 protected:
  LeaseTable table_;
  Object a_, b_, c_;
};

std::vector<Object*> Objects(const std::vector<LeaseTable::Lease>& leases) {
  std::vector<Object*> out;
  for (const LeaseTable::Lease& l : leases) out.push_back(l.obj);
  return out;
}

TEST_F(LeaseTableTest, AddRecordsALeaseThatFindReturns) {
  uint64_t id = table_.Add(&a_, 7);
  EXPECT_NE(id, 0u);
  LeaseTable::Lease* l = table_.Find(id);
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->obj, &a_);
  EXPECT_EQ(l->session, 7u);
  EXPECT_FALSE(l->hold);
  EXPECT_EQ(l->entry, LeaseTable::kNoEntry);
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_EQ(table_.CountForSession(7), 1u);
}

TEST_F(LeaseTableTest, AddRecordsWhetherTheLeaseIsAHold) {
  uint64_t plain = table_.Add(&a_, 1);
  uint64_t hold = table_.Add(&a_, 1, /*hold=*/true);
  EXPECT_FALSE(table_.Find(plain)->hold);
  EXPECT_TRUE(table_.Find(hold)->hold);
  EXPECT_EQ(table_.Find(hold)->entry, LeaseTable::kNoEntry);
}

TEST_F(LeaseTableTest, EveryAddReturnsADistinctNonZeroId) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < 1000; ++i) ids.push_back(table_.Add(i % 2 ? &a_ : &b_, i % 3));
  std::vector<uint64_t> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 0u), 0);
  EXPECT_EQ(table_.size(), 1000u);
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_NE(table_.Find(ids[i]), nullptr);
    EXPECT_EQ(table_.Find(ids[i])->session, i % 3);
  }
}

TEST_F(LeaseTableTest, IdsOfTwoTablesStartAtDifferentPointsOfA63BitSpace) {
  // The first ids of two tables coincide with probability 2^-63.
  LeaseTable other;
  uint64_t mine = table_.Add(&a_, 1);
  uint64_t theirs = other.Add(&a_, 1);
  EXPECT_NE(mine, theirs);
  EXPECT_LE(mine, uint64_t{1} << 63);
  EXPECT_LE(theirs, uint64_t{1} << 63);
  // An id of one table names nothing in the other.
  EXPECT_EQ(other.Find(mine), nullptr);
}

TEST_F(LeaseTableTest, FindOfAnUnknownIdIsNull) {
  uint64_t id = table_.Add(&a_, 1);
  EXPECT_EQ(table_.Find(0), nullptr);
  EXPECT_EQ(table_.Find(id + 1), nullptr);
  EXPECT_EQ(table_.Find(LeaseTable::kNoEntry), nullptr);
}

TEST_F(LeaseTableTest, AddWithIdKeepsTheRecoveredIdAndEntry) {
  EXPECT_TRUE(table_.AddWithId(42, &a_, 3, /*entry=*/5));
  LeaseTable::Lease* l = table_.Find(42);
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->obj, &a_);
  EXPECT_EQ(l->session, 3u);
  EXPECT_EQ(l->entry, 5u);
  EXPECT_FALSE(l->hold);
  EXPECT_EQ(table_.CountForSession(3), 1u);
}

TEST_F(LeaseTableTest, AddWithIdAcceptsNoEntry) {
  EXPECT_TRUE(table_.AddWithId(42, &a_, 3, LeaseTable::kNoEntry));
  EXPECT_EQ(table_.Find(42)->entry, LeaseTable::kNoEntry);
}

TEST_F(LeaseTableTest, AddWithIdOfATakenIdFailsAndChangesNothing) {
  ASSERT_TRUE(table_.AddWithId(42, &a_, 3, 5));
  uint64_t granted = table_.Add(&b_, 4);
  EXPECT_FALSE(table_.AddWithId(42, &c_, 9, 6));
  EXPECT_FALSE(table_.AddWithId(granted, &c_, 9, 6));
  EXPECT_EQ(table_.Find(42)->obj, &a_);
  EXPECT_EQ(table_.Find(42)->session, 3u);
  EXPECT_EQ(table_.Find(42)->entry, 5u);
  EXPECT_EQ(table_.Find(granted)->obj, &b_);
  EXPECT_EQ(table_.size(), 2u);
  EXPECT_EQ(table_.CountForSession(9), 0u);
}

TEST_F(LeaseTableTest, AddWithIdZeroFails) {
  EXPECT_FALSE(table_.AddWithId(0, &a_, 3, 5));
  EXPECT_EQ(table_.Find(0), nullptr);
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_EQ(table_.CountForSession(3), 0u);
}

TEST_F(LeaseTableTest, AddSkipsIdsTakenByRecoveredLeases) {
  uint64_t first = table_.Add(&a_, 1);
  ASSERT_TRUE(table_.AddWithId(first + 1, &b_, 2, 0));
  ASSERT_TRUE(table_.AddWithId(first + 2, &b_, 2, 1));
  uint64_t next = table_.Add(&c_, 1);
  EXPECT_EQ(next, first + 3);
  EXPECT_EQ(table_.Find(first + 1)->obj, &b_);
  EXPECT_EQ(table_.Find(first + 2)->obj, &b_);
  EXPECT_EQ(table_.Find(next)->obj, &c_);
}

TEST_F(LeaseTableTest, RemoveReturnsTheLeaseAndForgetsIt) {
  uint64_t id = table_.Add(&a_, 1, /*hold=*/true);
  uint64_t other = table_.Add(&b_, 1);
  auto l = table_.Remove(id, 1);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->obj, &a_);
  EXPECT_EQ(l->session, 1u);
  EXPECT_TRUE(l->hold);
  EXPECT_EQ(l->entry, LeaseTable::kNoEntry);
  EXPECT_EQ(table_.Find(id), nullptr);
  EXPECT_NE(table_.Find(other), nullptr);
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_EQ(table_.CountForSession(1), 1u);
}

TEST_F(LeaseTableTest, RemoveReturnsTheRecordedEntry) {
  ASSERT_TRUE(table_.AddWithId(42, &a_, 3, 17));
  auto l = table_.Remove(42, 3);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->entry, 17u);
}

TEST_F(LeaseTableTest, RemoveOfAnUnknownOrAlreadyRemovedLeaseIsNotFound) {
  uint64_t id = table_.Add(&a_, 1);
  EXPECT_EQ(table_.Remove(id + 1, 1).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(table_.Remove(id, 1).ok());
  auto again = table_.Remove(id, 1);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(again.status().message()), ::testing::HasSubstr(std::to_string(id)));
}

TEST_F(LeaseTableTest, RemoveByAnotherSessionIsPermissionDeniedAndChangesNothing) {
  uint64_t id = table_.Add(&a_, 1);
  auto l = table_.Remove(id, 2);
  EXPECT_EQ(l.status().code(), absl::StatusCode::kPermissionDenied);
  ASSERT_NE(table_.Find(id), nullptr);
  EXPECT_EQ(table_.Find(id)->session, 1u);
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_EQ(table_.CountForSession(1), 1u);
  EXPECT_EQ(table_.CountForSession(2), 0u);
  EXPECT_TRUE(table_.Remove(id, 1).ok());
}

TEST_F(LeaseTableTest, RemovingASessionsLastLeaseLeavesItWithNone) {
  uint64_t id = table_.Add(&a_, 1);
  ASSERT_TRUE(table_.Remove(id, 1).ok());
  EXPECT_EQ(table_.CountForSession(1), 0u);
  EXPECT_THAT(table_.RemoveSession(1), IsEmpty());
  EXPECT_THAT(table_.MoveSession(1, 2), IsEmpty());
  // The session can take leases again.
  uint64_t again = table_.Add(&b_, 1);
  EXPECT_EQ(table_.CountForSession(1), 1u);
  EXPECT_TRUE(table_.Remove(again, 1).ok());
}

TEST_F(LeaseTableTest, CountForSessionCountsOnlyThatSessionsLeases) {
  table_.Add(&a_, 1);
  table_.Add(&a_, 1);  // two leases of one object are two leases
  table_.Add(&b_, 2);
  EXPECT_EQ(table_.CountForSession(1), 2u);
  EXPECT_EQ(table_.CountForSession(2), 1u);
  EXPECT_EQ(table_.CountForSession(3), 0u);
  EXPECT_EQ(table_.size(), 3u);
}

TEST_F(LeaseTableTest, RemoveSessionRemovesExactlyThatSessionsLeases) {
  uint64_t a1 = table_.Add(&a_, 1);
  uint64_t b1 = table_.Add(&b_, 1, /*hold=*/true);
  uint64_t c2 = table_.Add(&c_, 2);
  std::vector<LeaseTable::Lease> removed = table_.RemoveSession(1);
  EXPECT_THAT(Objects(removed), UnorderedElementsAre(&a_, &b_));
  for (const LeaseTable::Lease& l : removed) {
    EXPECT_EQ(l.session, 1u);
    EXPECT_EQ(l.hold, l.obj == &b_);
  }
  EXPECT_EQ(table_.Find(a1), nullptr);
  EXPECT_EQ(table_.Find(b1), nullptr);
  EXPECT_NE(table_.Find(c2), nullptr);
  EXPECT_EQ(table_.CountForSession(1), 0u);
  EXPECT_EQ(table_.CountForSession(2), 1u);
  EXPECT_EQ(table_.size(), 1u);
}

TEST_F(LeaseTableTest, RemoveSessionOfASessionWithoutLeasesChangesNothing) {
  table_.Add(&a_, 1);
  EXPECT_THAT(table_.RemoveSession(2), IsEmpty());
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_EQ(table_.CountForSession(1), 1u);
}

TEST_F(LeaseTableTest, MoveSessionGivesEveryLeaseToTheNewSessionKeepingIds) {
  uint64_t a1 = table_.Add(&a_, 1);
  uint64_t b1 = table_.Add(&b_, 1, /*hold=*/true);
  ASSERT_TRUE(table_.AddWithId(42, &c_, 1, /*entry=*/9));
  uint64_t other = table_.Add(&c_, 3);
  std::vector<uint64_t> moved = table_.MoveSession(1, 2);
  EXPECT_THAT(moved, UnorderedElementsAre(a1, b1, 42u));
  EXPECT_EQ(table_.CountForSession(1), 0u);
  EXPECT_EQ(table_.CountForSession(2), 3u);
  EXPECT_EQ(table_.CountForSession(3), 1u);
  EXPECT_EQ(table_.size(), 4u);
  for (uint64_t id : moved) EXPECT_EQ(table_.Find(id)->session, 2u);
  EXPECT_EQ(table_.Find(other)->session, 3u);
  // What each lease is stays as it was.
  EXPECT_EQ(table_.Find(a1)->obj, &a_);
  EXPECT_FALSE(table_.Find(a1)->hold);
  EXPECT_EQ(table_.Find(a1)->entry, LeaseTable::kNoEntry);
  EXPECT_TRUE(table_.Find(b1)->hold);
  EXPECT_EQ(table_.Find(42)->entry, 9u);
}

TEST_F(LeaseTableTest, AfterMoveSessionOnlyTheNewSessionCanRemoveTheLeases) {
  uint64_t id = table_.Add(&a_, 1);
  table_.MoveSession(1, 2);
  EXPECT_EQ(table_.Remove(id, 1).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(table_.RemoveSession(1), IsEmpty());
  auto l = table_.Remove(id, 2);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->session, 2u);
  EXPECT_EQ(table_.CountForSession(2), 0u);
}

TEST_F(LeaseTableTest, MoveSessionJoinsTheLeasesTheNewSessionAlreadyHas) {
  uint64_t from = table_.Add(&a_, 1);
  uint64_t own = table_.Add(&b_, 2);
  EXPECT_THAT(table_.MoveSession(1, 2), UnorderedElementsAre(from));
  EXPECT_EQ(table_.CountForSession(2), 2u);
  std::vector<LeaseTable::Lease> removed = table_.RemoveSession(2);
  EXPECT_THAT(Objects(removed), UnorderedElementsAre(&a_, &b_));
  EXPECT_EQ(table_.Find(own), nullptr);
  EXPECT_EQ(table_.size(), 0u);
}

TEST_F(LeaseTableTest, MoveSessionOfASessionWithoutLeasesChangesNothing) {
  uint64_t id = table_.Add(&a_, 2);
  EXPECT_THAT(table_.MoveSession(1, 2), IsEmpty());
  EXPECT_THAT(table_.MoveSession(1, 3), IsEmpty());
  EXPECT_EQ(table_.CountForSession(2), 1u);
  EXPECT_EQ(table_.CountForSession(3), 0u);
  EXPECT_EQ(table_.Find(id)->session, 2u);
}

TEST_F(LeaseTableTest, MoveSessionOntoItselfKeepsEveryLease) {
  uint64_t a1 = table_.Add(&a_, 1);
  uint64_t b1 = table_.Add(&b_, 1);
  EXPECT_THAT(table_.MoveSession(1, 1), UnorderedElementsAre(a1, b1));
  EXPECT_EQ(table_.CountForSession(1), 2u);
  EXPECT_EQ(table_.Find(a1)->session, 1u);
  EXPECT_TRUE(table_.Remove(a1, 1).ok());
  EXPECT_TRUE(table_.Remove(b1, 1).ok());
}

TEST_F(LeaseTableTest, RemoveAllReturnsEveryLeaseAndEmptiesTheTable) {
  std::vector<Object*> expected;
  for (int i = 0; i < 5; ++i) {
    table_.Add(i % 2 ? &a_ : &b_, i);
    expected.push_back(i % 2 ? &a_ : &b_);
  }
  ASSERT_TRUE(table_.AddWithId(42, &c_, 9, 3));
  expected.push_back(&c_);
  std::vector<LeaseTable::Lease> all = table_.RemoveAll();
  EXPECT_THAT(Objects(all), UnorderedElementsAreArray(expected));
  EXPECT_EQ(table_.size(), 0u);
  for (SessionId s : {0, 1, 2, 3, 4, 9}) EXPECT_EQ(table_.CountForSession(s), 0u);
  EXPECT_EQ(table_.Find(42), nullptr);
  EXPECT_THAT(table_.RemoveAll(), IsEmpty());
}

}  // namespace
}  // namespace cistern::store

// Many threads putting, getting, removing and closing sessions at once. Run
// under TSan (make tsan) to check the store's locking; here it checks that no
// reader ever sees bytes of another generation and that memory returns to
// baseline.
#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "src/store/store_test_util.h"

namespace cistern::store {
namespace {

// Value of a generation: every byte derived from (key, generation) is not
// possible before seal, so encode the writer's tag in every byte instead.
std::string Fill(int thread, int i, size_t n) {
  return std::string(n, static_cast<char>('A' + (thread * 7 + i) % 26));
}

TEST(ObjectStoreConcurrencyTest, ConcurrentClientsNeverSeeTornOrForeignBytes) {
  StoreHarness h(8 << 20, 0.9, 0.7);
  uint64_t baseline = h.store().Stats().tiers[0].used_bytes;
  constexpr int kThreads = 4;
  constexpr int kOps = 3000;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      SessionId session = 100 + t;
      for (int i = 0; i < kOps; ++i) {
        std::string key = "k" + std::to_string(i % 16);
        switch (i % 4) {
          case 0:
          case 1: {
            ObjectStore::CreateArgs args;
            args.key = key;
            args.size = 256 + (i % 5) * 1000;
            args.evictable = (i % 3) == 0;
            auto w = h.store().Create(session, args);
            if (!w.ok()) break;
            std::string v = Fill(t, i, args.size);
            std::memcpy(h.base() + w->payload_offset, v.data(), v.size());
            if (i % 7 == 0) {
              (void)h.store().Abort(session, w->write_id);
            } else {
              (void)h.store().Seal(session, w->write_id, Checksum(v.data(), v.size()));
            }
            break;
          }
          case 2: {
            auto l = h.store().Get(session, key, 0);
            if (!l.ok()) break;
            const char* p = h.base() + l->payload_offset;
            for (uint64_t j = 1; j < l->size; ++j) {
              if (p[j] != p[0]) {
                ++bad;
                break;
              }
            }
            if (i % 5 == 0) (void)h.store().Remove(key, l->generation);
            (void)h.store().Release(session, l->lease_id);
            break;
          }
          case 3:
            if (i % 100 == 3) h.store().CloseSession(session);
            (void)h.store().Stats();
            (void)h.store().List("k", 5, "");
            break;
        }
      }
      h.store().CloseSession(session);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  auto stats = h.store().Stats();
  EXPECT_EQ(stats.leases, 0u);
  EXPECT_EQ(stats.pending_writes, 0u);
  EXPECT_EQ(stats.deferred_frees, 0u);
  for (auto& o : h.store().List("", 100, "").objects) ASSERT_TRUE(h.store().Remove(o.key, 0).ok());
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, baseline);
}

}  // namespace
}  // namespace cistern::store

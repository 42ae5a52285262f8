// Many threads putting, getting, removing and closing sessions at once. Run
// under TSan (make tsan) to check the store's locking; here it checks that no
// reader ever sees bytes of another generation and that memory returns to
// baseline.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gtest/gtest.h"
#include "src/store/store_test_util.h"

namespace cistern::store {
namespace {

constexpr int kThreads = 4;
constexpr int kOps = 3000;
constexpr int kKeys = 16;

// A generation is numbered only at seal, after its bytes are written, so a
// writer cannot put its generation into them. It writes a nonce unique to the
// write instead (thread and op), in the payload's first 8 bytes, followed by
// bytes drawn from a PRNG seeded with (key, nonce): the bytes name their key
// and their write, and every byte depends on both. The writer records which
// nonce each generation it sealed carries; a reader checks every byte against
// the key and nonce, and after the run that the nonce is the one its
// (key, generation) was sealed with.
uint64_t Nonce(int thread, int op) {
  return (static_cast<uint64_t>(thread + 1) << 32) | static_cast<uint32_t>(op);
}
int NonceOp(uint64_t nonce) { return static_cast<int>(nonce & 0xffffffff); }
int NonceThread(uint64_t nonce) { return static_cast<int>(nonce >> 32) - 1; }
uint64_t PayloadSize(int op) { return 256 + (op % 5) * 1000; }

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

std::string Payload(std::string_view key, uint64_t nonce, size_t n) {
  std::string v(n, '\0');
  std::memcpy(v.data(), &nonce, std::min<size_t>(n, sizeof(nonce)));
  uint64_t mixed = nonce;
  uint64_t state = Checksum(key.data(), key.size()) ^ SplitMix64(mixed);
  for (size_t j = sizeof(nonce); j < n; j += sizeof(uint64_t)) {
    uint64_t r = SplitMix64(state);
    std::memcpy(v.data() + j, &r, std::min(sizeof(r), n - j));
  }
  return v;
}

// A sealed generation (as its writer recorded it) or a leased one (as a
// reader found it).
struct Record {
  std::string key;
  uint64_t generation = 0;
  uint64_t nonce = 0;
};

// Checks what a lease of `key` points at: the object header (generation,
// key, size, header checksum and the payload checksum the writer sealed
// with) and every payload byte against the pattern of the key and the nonce
// the bytes carry. Returns what is wrong, or "" (with *nonce set).
std::string CheckLease(const char* base, std::string_view key, const ObjectStore::LeaseInfo& l,
                       uint64_t* nonce) {
  const auto* h = reinterpret_cast<const ObjectHeader*>(base + l.block_offset);
  const char* p = base + l.payload_offset;
  std::string where = fmt::format("'{}' generation {}", key, l.generation);
  if (h->generation != l.generation) {
    return fmt::format("{}: the header says generation {}", where, h->generation);
  }
  if (std::string_view(reinterpret_cast<const char*>(h + 1), h->key_bytes) != key) {
    return fmt::format("{}: the header names another key", where);
  }
  if (l.block_offset + h->payload_offset != l.payload_offset || h->payload_size != l.size) {
    return fmt::format("{}: the header places the payload elsewhere", where);
  }
  if (h->header_checksum != HeaderChecksum(h)) return where + ": bad header checksum";
  if ((h->flags & kFlagHasChecksum) == 0) return where + ": no checksum stored";
  if (h->checksum != Checksum(p, l.size)) return where + ": the bytes fail the stored checksum";
  if (l.size < sizeof(*nonce)) return fmt::format("{}: only {} bytes", where, l.size);
  std::memcpy(nonce, p, sizeof(*nonce));
  int thread = NonceThread(*nonce);
  int op = NonceOp(*nonce);
  if (thread < 0 || thread >= kThreads || op < 0 || op >= kOps) {
    return fmt::format("{}: no writer wrote nonce {:#x}", where, *nonce);
  }
  if (l.size != PayloadSize(op)) {
    return fmt::format("{}: {} bytes, but its writer wrote {}", where, l.size, PayloadSize(op));
  }
  std::string expected = Payload(key, *nonce, l.size);
  if (std::memcmp(p, expected.data(), l.size) != 0) {
    size_t j = 0;
    while (p[j] == expected[j]) ++j;
    return fmt::format("{}: byte {} is not what write {:#x} wrote", where, j, *nonce);
  }
  return "";
}

TEST(ObjectStoreConcurrencyTest, ConcurrentClientsNeverSeeTornOrForeignBytes) {
  StoreHarness h(8 << 20, 0.9, 0.7);
  uint64_t baseline = h.store().Stats().tiers[0].used_bytes;
  // Each thread's own records and errors, merged after the join: nothing in
  // the test orders the threads but the store.
  std::vector<std::vector<Record>> sealed(kThreads), leased(kThreads);
  std::vector<std::vector<std::string>> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      SessionId session = 100 + t;
      auto fail = [&](std::string what) {
        if (errors[t].size() < 10) errors[t].push_back(std::move(what));
      };
      for (int i = 0; i < kOps; ++i) {
        // Each group of four ops (two puts, a get, the rest) is on one key,
        // and every thread goes round the same keys.
        std::string key = "k" + std::to_string((i / 4) % kKeys);
        switch (i % 4) {
          case 0:
          case 1: {
            ObjectStore::CreateArgs args;
            args.key = key;
            args.size = PayloadSize(i);
            args.evictable = (i % 3) == 0;
            auto w = h.store().Create(session, args);
            if (!w.ok()) break;
            uint64_t nonce = Nonce(t, i);
            std::string v = Payload(key, nonce, args.size);
            std::memcpy(h.base() + w->payload_offset, v.data(), v.size());
            if (i % 7 == 0) {
              (void)h.store().Abort(session, w->write_id);
            } else {
              auto g = h.store().Seal(session, w->write_id, Checksum(v.data(), v.size()));
              if (g.ok()) sealed[t].push_back({key, *g, nonce});
            }
            break;
          }
          case 2: {
            auto l = h.store().Get(session, key, 0);
            if (!l.ok()) break;
            uint64_t nonce = 0;
            if (std::string e = CheckLease(h.base(), key, *l, &nonce); !e.empty()) fail(e);
            leased[t].push_back({key, l->generation, nonce});
            if (i % 5 == 0) {
              // Removed, the generation stays in place until the lease ends.
              (void)h.store().Remove(key, l->generation);
              uint64_t again = 0;
              if (std::string e = CheckLease(h.base(), key, *l, &again); !e.empty()) {
                fail("after remove: " + e);
              } else if (again != nonce) {
                fail(fmt::format("'{}' changed under its lease after remove", key));
              }
            }
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
  for (int t = 0; t < kThreads; ++t) {
    for (const std::string& e : errors[t]) ADD_FAILURE() << "thread " << t << ": " << e;
  }
  // Every generation is issued once, to one write.
  std::map<uint64_t, Record> by_generation;
  for (const auto& records : sealed) {
    for (const Record& r : records) {
      EXPECT_TRUE(by_generation.emplace(r.generation, r).second)
          << "generation " << r.generation << " sealed twice";
    }
  }
  // Every lease read the bytes of the write that its (key, generation) sealed.
  size_t reads = 0;
  for (const auto& records : leased) {
    for (const Record& r : records) {
      ++reads;
      auto it = by_generation.find(r.generation);
      if (it == by_generation.end()) {
        ADD_FAILURE() << "'" << r.key << "' generation " << r.generation << " was never sealed";
      } else if (it->second.key != r.key || it->second.nonce != r.nonce) {
        ADD_FAILURE() << fmt::format(
            "'{}' generation {} carried write {:#x}, but write {:#x} of '{}' sealed it", r.key,
            r.generation, r.nonce, it->second.nonce, it->second.key);
      }
    }
  }
  // The checks above saw real traffic.
  EXPECT_GT(by_generation.size(), static_cast<size_t>(kThreads * kOps / 4));
  EXPECT_GT(reads, 0u);
  auto stats = h.store().Stats();
  EXPECT_EQ(stats.leases, 0u);
  EXPECT_EQ(stats.pending_writes, 0u);
  EXPECT_EQ(stats.deferred_frees, 0u);
  for (auto& o : h.store().List("", 100, "").objects) ASSERT_TRUE(h.store().Remove(o.key, 0).ok());
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, baseline);
}

}  // namespace
}  // namespace cistern::store

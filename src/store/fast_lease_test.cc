#include "src/store/fast_lease.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace cistern::store {
namespace {

// A miniature daemon over real layout.h blocks: fixed-size blocks after a
// superblock-sized gap, a SharedIndex, and lease regions for readers. It puts
// generations of keys, retires the old ones and frees a block only when no
// fast lease names it, as the ObjectStore is to do. Everything lives in one
// MAP_SHARED region, so readers may be threads or forked processes.
constexpr uint32_t kKeys = 8;
constexpr uint32_t kBlocks = 24;
constexpr uint64_t kBlockBytes = 4096;
constexpr uint64_t kPayloadOffset = 1024;
constexpr uint64_t kPayloadBytes = kBlockBytes - kPayloadOffset;
constexpr uint32_t kReaders = 6;
constexpr uint32_t kLeasesPerReader = 4;
constexpr uint64_t kIndexSlots = 64;

std::string KeyName(uint32_t k) { return "key/" + std::to_string(k); }
// The payload word of generation `gen` of key `k`.
uint64_t Pattern(uint32_t k, uint64_t gen) { return gen * 1000003 + k; }

struct Control {
  std::atomic<uint64_t> stop;
  std::atomic<uint64_t> failures;
  std::atomic<uint64_t> verified;  // reads checked byte for byte
  std::atomic<uint64_t> published;
};

struct Shared {
  Shared() {
    bytes = kSuperblockBytes + kBlocks * kBlockBytes + SharedIndex::BytesFor(kIndexSlots) +
            kReaders * kLeasesPerReader * sizeof(FastLease) + sizeof(Control);
    base = static_cast<char*>(
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    if (base == MAP_FAILED) std::abort();
    new (control()) Control{};
  }
  ~Shared() { munmap(base, bytes); }
  char* arena() const { return base; }
  uint64_t arena_bytes() const { return kSuperblockBytes + kBlocks * kBlockBytes; }
  char* index() const { return base + arena_bytes(); }
  FastLease* leases(uint32_t reader) const {
    return reinterpret_cast<FastLease*>(index() + SharedIndex::BytesFor(kIndexSlots)) +
           reader * kLeasesPerReader;
  }
  Control* control() const { return reinterpret_cast<Control*>(leases(kReaders)); }
  std::span<FastLease> region(uint32_t reader) const { return {leases(reader), kLeasesPerReader}; }

  char* base;
  uint64_t bytes;
};

uint64_t BlockOffset(uint32_t b) { return kSuperblockBytes + b * kBlockBytes; }

void StoreState(ObjectHeader* h, ObjectState s) {
  StoreRelease(&h->state, static_cast<uint32_t>(s));
}

class MiniDaemon {
 public:
  explicit MiniDaemon(Shared* s, bool ignore_leases = false)
      : s_(s),
        ignore_leases_(ignore_leases),
        index_(*SharedIndex::Format(s->index(), SharedIndex::BytesFor(kIndexSlots), kIndexSlots)) {
    for (uint32_t b = 0; b < kBlocks; ++b) free_.push_back(b);
  }

  // Puts a new generation of key k; false when no block is free.
  bool Put(uint32_t k) {
    if (free_.empty()) Reclaim();
    if (free_.empty()) return false;
    uint32_t b = free_.back();
    free_.pop_back();
    auto* h = reinterpret_cast<ObjectHeader*>(s_->arena() + BlockOffset(b));
    StoreState(h, ObjectState::kWriting);
    const uint64_t gen = ++generation_;
    std::string key = KeyName(k);
    StoreRelease(&h->tag, MakeTag(kBlockBytes, kObjectBlock));
    std::atomic_ref<uint32_t>(h->magic).store(kObjectMagic, std::memory_order_relaxed);
    std::atomic_ref<uint64_t>(h->generation).store(gen, std::memory_order_relaxed);
    std::atomic_ref<uint32_t>(h->key_bytes).store(key.size(), std::memory_order_relaxed);
    std::atomic_ref<uint64_t>(h->payload_offset).store(kPayloadOffset, std::memory_order_relaxed);
    std::atomic_ref<uint64_t>(h->payload_size).store(kPayloadBytes, std::memory_order_relaxed);
    std::memcpy(h + 1, key.data(), key.size());
    auto* words = reinterpret_cast<uint64_t*>(s_->arena() + BlockOffset(b) + kPayloadOffset);
    for (uint64_t i = 0; i < kPayloadBytes / 8; ++i) words[i] = Pattern(k, gen);
    StoreState(h, ObjectState::kSealed);
    // Retire the old generation first, then publish the new one.
    if (current_[k].second != 0) {
      auto* old = reinterpret_cast<ObjectHeader*>(s_->arena() + BlockOffset(current_[k].first));
      StoreState(old, ObjectState::kRemoved);
      limbo_.push_back(current_[k]);
    }
    index_.Publish(key, 0, BlockOffset(b), gen);
    current_[k] = {b, gen};
    s_->control()->published.fetch_add(1, std::memory_order_relaxed);
    if (limbo_.size() >= 4) Reclaim();
    return true;
  }

  // Frees every retired block no lease names.
  void Reclaim() {
    FastLeaseSet held;
    if (!ignore_leases_) {
      std::vector<std::span<const FastLease>> regions;
      for (uint32_t r = 0; r < kReaders; ++r) regions.push_back(s_->region(r));
      CollectFastLeases(regions, &held);
    }
    std::vector<std::pair<uint32_t, uint64_t>> keep;
    for (auto [b, gen] : limbo_) {
      if (held.contains(PackLocation(0, BlockOffset(b)))) {
        keep.push_back({b, gen});
        ++deferred_;
      } else {
        StoreState(reinterpret_cast<ObjectHeader*>(s_->arena() + BlockOffset(b)),
                   ObjectState::kAborted);
        free_.push_back(b);
      }
    }
    limbo_ = std::move(keep);
  }

  size_t free_blocks() const { return free_.size(); }
  size_t limbo_blocks() const { return limbo_.size(); }
  // Frees put off because a lease named the block.
  uint64_t deferred() const { return deferred_; }
  SharedIndex& index() { return index_; }

 private:
  Shared* s_;
  bool ignore_leases_;
  SharedIndex index_;
  std::vector<uint32_t> free_;
  std::vector<std::pair<uint32_t, uint64_t>> limbo_;
  std::pair<uint32_t, uint64_t> current_[kKeys] = {};
  uint64_t generation_ = 0;
  uint64_t deferred_ = 0;
};

// Checks every payload word of a leased hit; false on a mismatch.
bool Verify(const Shared& s, uint32_t k, const FastHit& hit) {
  const auto* words =
      reinterpret_cast<const uint64_t*>(s.arena() + hit.block_offset + kPayloadOffset);
  for (uint64_t i = 0; i < kPayloadBytes / 8; ++i) {
    if (words[i] != Pattern(k, hit.generation)) return false;
  }
  return true;
}

// A reader: takes up to kLeasesPerReader fast leases at a time on random
// keys, checks each hit's bytes when it is taken and again before it is let
// go, until the control's stop flag is set.
void RunReader(Shared* s, uint32_t reader, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Control* c = s->control();
  const ArenaMap arena{s->arena(), s->arena_bytes()};
  auto index = SharedIndexReader::Open(s->index(), SharedIndex::BytesFor(kIndexSlots));
  if (!index.ok()) std::abort();
  std::span<FastLease> leases = s->region(reader);
  struct Held {
    uint32_t key;
    FastHit hit;
  };
  std::vector<Held> held;
  while (c->stop.load(std::memory_order_relaxed) == 0) {
    if (held.size() < kLeasesPerReader) {
      uint32_t slot = 0;
      while (std::atomic_ref<uint64_t>(leases[slot].location).load(std::memory_order_relaxed) != 0)
        ++slot;
      uint32_t k = rng() % kKeys;
      FastHit hit;
      if (TryAcquire(*index, {&arena, 1}, leases, slot, KeyName(k), &hit)) {
        if (!Verify(*s, k, hit)) c->failures.fetch_add(1);
        c->verified.fetch_add(1, std::memory_order_relaxed);
        held.push_back({k, hit});
      }
    }
    if (!held.empty() && (held.size() == kLeasesPerReader || rng() % 3 == 0)) {
      size_t i = rng() % held.size();
      if (rng() % 4 == 0) std::this_thread::yield();  // hold it across some puts
      if (!Verify(*s, held[i].key, held[i].hit)) c->failures.fetch_add(1);
      Release(leases[held[i].hit.slot]);
      held.erase(held.begin() + i);
    }
  }
  for (Held& h : held) Release(leases[h.hit.slot]);
}

TEST(FastLeaseTest, AHitIsTheKeysSealedGenerationAndARetiredOneIsNot) {
  Shared s;
  MiniDaemon d(&s);
  ASSERT_TRUE(d.Put(3));
  const ArenaMap arena{s.arena(), s.arena_bytes()};
  auto index = SharedIndexReader::Open(s.index(), SharedIndex::BytesFor(kIndexSlots));
  ASSERT_TRUE(index.ok());
  std::span<FastLease> leases = s.region(0);
  FastHit hit;
  ASSERT_TRUE(TryAcquire(*index, {&arena, 1}, leases, 0, KeyName(3), &hit));
  EXPECT_EQ(hit.generation, 1u);
  EXPECT_TRUE(Verify(s, 3, hit));
  EXPECT_EQ(leases[0].location, PackLocation(0, hit.block_offset));
  EXPECT_FALSE(TryAcquire(*index, {&arena, 1}, leases, 1, KeyName(4), &hit));  // never put
  EXPECT_EQ(leases[1].location, 0u);                                           // left free

  // The leased generation is retired but kept while the lease lives...
  FastHit first = hit;
  ASSERT_TRUE(d.Put(3));
  d.Reclaim();
  EXPECT_EQ(d.limbo_blocks(), 1u);
  EXPECT_TRUE(Verify(s, 3, first));
  // ...a new lookup finds the new generation, and checking the old one fails.
  ASSERT_TRUE(TryAcquire(*index, {&arena, 1}, leases, 1, KeyName(3), &hit));
  EXPECT_EQ(hit.generation, 2u);
  EXPECT_EQ(CheckSealed({&arena, 1}, PackLocation(0, first.block_offset), 1, KeyName(3)), nullptr);
  // Released, the old block is freed at the next reclaim.
  Release(leases[0]);
  d.Reclaim();
  EXPECT_EQ(d.limbo_blocks(), 0u);
}

TEST(FastLeaseTest, CheckSealedRefusesWhatDoesNotMatch) {
  Shared s;
  MiniDaemon d(&s);
  ASSERT_TRUE(d.Put(1));
  const ArenaMap arena{s.arena(), s.arena_bytes()};
  const uint64_t loc = PackLocation(0, BlockOffset(kBlocks - 1));  // the first block used
  ASSERT_NE(CheckSealed({&arena, 1}, loc, 1, KeyName(1)), nullptr);
  EXPECT_EQ(CheckSealed({&arena, 1}, loc, 2, KeyName(1)), nullptr);  // generation
  EXPECT_EQ(CheckSealed({&arena, 1}, loc, 1, KeyName(2)), nullptr);  // key
  EXPECT_EQ(CheckSealed({&arena, 1}, loc, 1, "key/1x"), nullptr);    // key length
  EXPECT_EQ(CheckSealed({&arena, 1}, PackLocation(1, BlockOffset(kBlocks - 1)), 1, KeyName(1)),
            nullptr);                                                                // tier
  EXPECT_EQ(CheckSealed({&arena, 1}, loc + 8, 1, KeyName(1)), nullptr);              // alignment
  EXPECT_EQ(CheckSealed({&arena, 1}, PackLocation(0, 64), 1, KeyName(1)), nullptr);  // superblock
  EXPECT_EQ(CheckSealed({&arena, 1}, PackLocation(0, s.arena_bytes()), 1, KeyName(1)), nullptr);
  auto* h = reinterpret_cast<ObjectHeader*>(s.arena() + LocationOffset(loc));
  h->payload_size = kBlockBytes;  // past the block
  EXPECT_EQ(CheckSealed({&arena, 1}, loc, 1, KeyName(1)), nullptr);
}

// Readers as threads (what TSan checks): no reader ever sees bytes other
// than its generation's, and every block comes back once the readers stop.
TEST(FastLeaseTest, StressThreadsNeverSeeAnotherGenerationsBytes) {
  Shared s;
  MiniDaemon d(&s);
  for (uint32_t k = 0; k < kKeys; ++k) ASSERT_TRUE(d.Put(k));
  std::vector<std::thread> readers;
  for (uint32_t r = 0; r < kReaders; ++r) readers.emplace_back(RunReader, &s, r, 1000 + r);
  std::mt19937_64 rng(7);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < end) {
    if (!d.Put(rng() % kKeys)) std::this_thread::yield();
  }
  s.control()->stop.store(1);
  for (auto& t : readers) t.join();
  d.Reclaim();
  Control* c = s.control();
  EXPECT_EQ(c->failures.load(), 0u);
  EXPECT_GT(c->verified.load(), 1000u);
  EXPECT_GT(c->published.load(), 1000u);
  EXPECT_GT(d.deferred(), 100u);  // retired blocks were held by readers, often
  std::fprintf(stderr, "%lu reads verified, %lu puts, %lu frees deferred\n", c->verified.load(),
               c->published.load(), d.deferred());
  EXPECT_EQ(d.limbo_blocks(), 0u);
  EXPECT_EQ(d.free_blocks(), kBlocks - kKeys);  // back to baseline
}

// Readers as processes, killed with SIGKILL at random and replaced; the
// daemon clears a dead reader's region (as it does when a session ends).
TEST(FastLeaseTest, StressProcessesKilledAtRandomNeverSeeAnotherGenerationsBytes) {
  Shared s;
  MiniDaemon d(&s);
  for (uint32_t k = 0; k < kKeys; ++k) ASSERT_TRUE(d.Put(k));
  pid_t pids[kReaders];
  uint64_t seed = 1;
  auto spawn = [&](uint32_t r) {
    pid_t p = fork();
    if (p == 0) {
      RunReader(&s, r, seed);
      _exit(0);
    }
    ++seed;
    return p;
  };
  for (uint32_t r = 0; r < kReaders; ++r) pids[r] = spawn(r);
  std::mt19937_64 rng(11);
  // Kills are paced by puts, not time: a fork of a big (sanitized) test
  // process can take tens of milliseconds, and time-paced kills then leave
  // the daemon no time to put.
  int kills = 0;
  uint64_t puts = 0;
  uint64_t next_kill = 50;
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (kills < 40 && std::chrono::steady_clock::now() < end) {
    if (d.Put(rng() % kKeys)) {
      ++puts;
    } else {
      std::this_thread::yield();
    }
    if (puts >= next_kill) {
      uint32_t r = rng() % kReaders;
      kill(pids[r], SIGKILL);
      waitpid(pids[r], nullptr, 0);
      for (FastLease& l : s.region(r)) Release(l);  // the session's end
      pids[r] = spawn(r);
      ++kills;
      next_kill = puts + 50 + rng() % 250;
    }
  }
  s.control()->stop.store(1);
  for (uint32_t r = 0; r < kReaders; ++r) {
    int status = 0;
    ASSERT_EQ(waitpid(pids[r], &status, 0), pids[r]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  d.Reclaim();
  Control* c = s.control();
  EXPECT_EQ(c->failures.load(), 0u);
  EXPECT_GT(c->verified.load(), 1000u);
  EXPECT_EQ(kills, 40);
  EXPECT_GT(d.deferred(), 100u);
  std::fprintf(stderr, "%lu reads verified, %lu puts, %lu frees deferred, %d readers killed\n",
               c->verified.load(), c->published.load(), d.deferred(), kills);
  EXPECT_EQ(d.limbo_blocks(), 0u);
  EXPECT_EQ(d.free_blocks(), kBlocks - kKeys);
}

// The stress check can fail: a daemon that frees blocks without looking at
// the leases is caught by the readers' byte checks.
TEST(FastLeaseTest, StressCatchesADaemonThatIgnoresLeases) {
  Shared s;
  MiniDaemon d(&s, /*ignore_leases=*/true);
  for (uint32_t k = 0; k < kKeys; ++k) ASSERT_TRUE(d.Put(k));
  pid_t pid = fork();
  if (pid == 0) {
    RunReader(&s, 0, 99);
    _exit(0);
  }
  std::mt19937_64 rng(5);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (s.control()->failures.load() == 0 && std::chrono::steady_clock::now() < end) {
    d.Put(rng() % kKeys);
  }
  s.control()->stop.store(1);
  waitpid(pid, nullptr, 0);
  EXPECT_GT(s.control()->failures.load(), 0u);
}

}  // namespace
}  // namespace cistern::store

#include "src/daemon/prefault.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cistern::daemon {
namespace {

using ::testing::HasSubstr;

// A file of `size` bytes (sparse: no page allocated yet), mapped shared.
class ArenaLike {
 public:
  ArenaLike(const std::string& path, uint64_t size) : path_(path), size_(size) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd_, 0) << path;
    EXPECT_EQ(::ftruncate(fd_, static_cast<off_t>(size)), 0);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    EXPECT_NE(p, MAP_FAILED);
    base_ = static_cast<char*>(p);
  }
  ~ArenaLike() {
    ::munmap(base_, size_);
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  uint64_t allocated() const {
    struct stat st {};
    ::fstat(fd_, &st);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }
  PrefaultRegion region() const { return {"t", base_, size_, fd_}; }
  char* base() const { return base_; }

 private:
  std::string path_;
  uint64_t size_;
  int fd_ = -1;
  char* base_ = nullptr;
};

std::string ShmPath(const std::string& what) {
  return "/dev/shm/cistern-prefault-test-" + std::to_string(::getpid()) + "-" + what;
}

TEST(PrefaultTest, AllocatesEveryPageAndChangesNoByte) {
  constexpr uint64_t kSize = 32 << 20;
  ArenaLike a(ShmPath("all"), kSize);
  EXPECT_LT(a.allocated(), kSize / 4);
  // Bytes written before and while the walk runs stay as written.
  std::memset(a.base() + 4096 * 3, 0x5a, 10000);
  Prefaulter p({a.region()}, /*chunk=*/1 << 20);
  for (uint64_t at = 0; at < kSize; at += 1 << 20) a.base()[at + 17] = static_cast<char>(at >> 20);
  p.Wait();
  EXPECT_TRUE(p.finished());
  EXPECT_TRUE(p.status().ok()) << p.status();
  EXPECT_EQ(p.done_bytes(), kSize);
  EXPECT_GE(a.allocated(), kSize);
  for (int i = 0; i < 10000; ++i) ASSERT_EQ(a.base()[4096 * 3 + i], 0x5a) << i;
  for (uint64_t at = 0; at < kSize; at += 1 << 20) {
    ASSERT_EQ(a.base()[at + 17], static_cast<char>(at >> 20)) << at;
  }
  EXPECT_EQ(a.base()[kSize - 1], 0);  // never written: still zero
}

TEST(PrefaultTest, WalksEveryRegionInTurn) {
  ArenaLike a(ShmPath("r1"), 4 << 20), b(ShmPath("r2"), 8 << 20);
  Prefaulter p({a.region(), b.region()}, 1 << 20);
  p.Wait();
  EXPECT_TRUE(p.status().ok()) << p.status();
  EXPECT_EQ(p.done_bytes(), uint64_t{12} << 20);
  EXPECT_GE(a.allocated(), uint64_t{4} << 20);
  EXPECT_GE(b.allocated(), uint64_t{8} << 20);
}

TEST(PrefaultTest, StopEndsTheWalkAfterTheChunkInProgress) {
  constexpr uint64_t kSize = 256 << 20;
  ArenaLike a(ShmPath("stop"), kSize);
  Prefaulter p({a.region()}, 1 << 20);
  p.Stop();
  EXPECT_TRUE(p.finished());
  EXPECT_TRUE(p.status().ok()) << p.status();  // stopping is not a failure
  EXPECT_LT(p.done_bytes(), kSize);
  EXPECT_LT(a.allocated(), kSize);
  p.Stop();  // again: nothing
}

// A tmpfs smaller than the arena (a common /dev/shm mistake): the walk stops
// with a status that names the tier and how far it got, and the process
// lives (MADV_POPULATE_WRITE reports what a write would have got as SIGBUS).
TEST(PrefaultTest, AFilesystemSmallerThanTheArenaStopsWithAStatus) {
  ASSERT_EQ(::geteuid(), 0u) << "mounting a small tmpfs needs root";
  std::string dir = ::testing::TempDir() + "/prefault-small-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  ASSERT_EQ(std::system(("mount -t tmpfs -o size=8m tmpfs " + dir).c_str()), 0);
  {
    ArenaLike a(dir + "/arena", 32 << 20);
    Prefaulter p({a.region()}, 1 << 20);
    p.Wait();
    ASSERT_FALSE(p.status().ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(p.status().message(), HasSubstr("tier 't'"));
    EXPECT_THAT(p.status().message(), HasSubstr("has no room"));
    EXPECT_THAT(p.status().message(), HasSubstr("of 33554432 bytes were pre-faulted"));
    EXPECT_LE(p.done_bytes(), uint64_t{8} << 20);
  }
  EXPECT_EQ(std::system(("umount " + dir).c_str()), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cistern::daemon

#include "src/service/stdio_rotation.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace cistern::service {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(int fd, const std::string& s) {
  ASSERT_EQ(::write(fd, s.data(), s.size()), static_cast<ssize_t>(s.size()));
}

class StdioRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/stdio_rotation_XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ / "stderr.log";
    a_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    b_ = ::dup(a_);
    ASSERT_GE(a_, 0);
  }
  void TearDown() override {
    ::close(a_);
    ::close(b_);
    fs::remove_all(dir_);
  }
  fs::path dir_, path_;
  int a_ = -1, b_ = -1;
};

// Issue 9, item 10: the daemon's stdout and stderr file (the session's
// stderr.log) was never rotated, however much was written to it.
TEST_F(StdioRotationTest, RotatesAtMaxBytesAndMovesEveryDescriptor) {
  auto r = StdioRotation::ForDescriptors({a_, b_}, 100, 2);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->path(), path_);
  WriteAll(a_, std::string(60, 'a'));
  EXPECT_FALSE(r->Check()) << "rotated below max_bytes";
  WriteAll(b_, std::string(60, 'b'));
  EXPECT_TRUE(r->Check());
  EXPECT_EQ(Slurp(dir_ / "stderr.1.log"), std::string(60, 'a') + std::string(60, 'b'));
  // Both descriptors now write to the fresh file.
  WriteAll(a_, "after-a\n");
  WriteAll(b_, "after-b\n");
  EXPECT_EQ(Slurp(path_), "after-a\nafter-b\n");

  // Older files shift up; the oldest beyond max_files goes.
  WriteAll(a_, std::string(100, 'c'));
  EXPECT_TRUE(r->Check());
  WriteAll(a_, std::string(100, 'd'));
  EXPECT_TRUE(r->Check());
  EXPECT_EQ(Slurp(dir_ / "stderr.1.log"), std::string(100, 'd'));
  EXPECT_EQ(Slurp(dir_ / "stderr.2.log"), "after-a\nafter-b\n" + std::string(100, 'c'));
  EXPECT_FALSE(fs::exists(dir_ / "stderr.3.log"));
  EXPECT_EQ(Slurp(path_), "");
}

// CI failure (CliRegressTest.DaemonStartRotatesTheSessionStderr): rotation
// renamed the file to <name>.1 and then created a new one, so a reader that
// opened the name in between (`cistern daemon logs`, tail -F, the test) found
// no file. The name must never leave the directory: inotify sees every step.
TEST_F(StdioRotationTest, TheFilesNameNeverGoesMissing) {
  auto r = StdioRotation::ForDescriptors({a_, b_}, 10, 2);
  ASSERT_TRUE(r.has_value());
  int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(in, 0);
  ASSERT_GE(::inotify_add_watch(in, dir_.c_str(), IN_MOVED_FROM | IN_DELETE | IN_CREATE), 0);
  for (int round = 0; round < 3; ++round) {
    WriteAll(a_, std::string(20, 'x'));
    ASSERT_TRUE(r->Check());
  }
  std::vector<std::string> gone;  // names that left the directory
  alignas(inotify_event) char buf[8192];
  for (ssize_t n; (n = ::read(in, buf, sizeof buf)) > 0;) {
    for (char* p = buf; p < buf + n;) {
      auto* e = reinterpret_cast<inotify_event*>(p);
      if ((e->mask & (IN_MOVED_FROM | IN_DELETE)) && e->len > 0) gone.emplace_back(e->name);
      p += sizeof(inotify_event) + e->len;
    }
  }
  ::close(in);
  EXPECT_EQ(std::count(gone.begin(), gone.end(), "stderr.log"), 0);
  EXPECT_EQ(Slurp(dir_ / "stderr.1.log"), std::string(20, 'x'));
  EXPECT_EQ(Slurp(dir_ / "stderr.2.log"), std::string(20, 'x'));
  EXPECT_FALSE(fs::exists(dir_ / "stderr.log.new"));
}

TEST_F(StdioRotationTest, NoKeptFilesStartsTheFileOver) {
  auto r = StdioRotation::ForDescriptors({a_}, 10, 0);
  ASSERT_TRUE(r.has_value());
  WriteAll(a_, std::string(20, 'x'));
  EXPECT_TRUE(r->Check());
  WriteAll(a_, "y");
  EXPECT_EQ(Slurp(path_), "y");
  EXPECT_FALSE(fs::exists(dir_ / "stderr.1.log"));
}

TEST_F(StdioRotationTest, OnlyTheSameFileMovesAlong) {
  fs::path other = dir_ / "other.log";
  int c = ::open(other.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(c, 0);
  auto r = StdioRotation::ForDescriptors({a_, c}, 10, 1);
  ASSERT_TRUE(r.has_value());
  WriteAll(a_, std::string(20, 'x'));
  EXPECT_TRUE(r->Check());
  WriteAll(c, "still other");
  EXPECT_EQ(Slurp(other), "still other");
  EXPECT_EQ(Slurp(path_), "");
  ::close(c);
}

TEST_F(StdioRotationTest, NothingToBoundForAPipeOrNull) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  EXPECT_FALSE(StdioRotation::ForDescriptors({p[1]}, 10, 1).has_value());
  ::close(p[0]);
  ::close(p[1]);
  int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  EXPECT_FALSE(StdioRotation::ForDescriptors({null}, 10, 1).has_value());
  ::close(null);
}

}  // namespace
}  // namespace cistern::service

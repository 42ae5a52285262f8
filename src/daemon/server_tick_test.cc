// Server::Every: housekeeping runs on the event loop as the clock moves.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "src/common/clock.h"
#include "src/daemon/server.h"
#include "src/store/store_test_util.h"

namespace cistern::daemon {
namespace {

TEST(ServerTickTest, EveryRunsOnTheLoopThreadAsTheClockMoves) {
  store::StoreHarness h(1 << 20);
  FakeClock clock;
  char dir[] = "/tmp/cistern-tick-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  ServerOptions o;
  o.socket_path = std::string(dir) + "/s.sock";
  o.busy_poll = std::chrono::microseconds(0);
  Server server(o, &h.store(), nullptr, &clock);
  ASSERT_TRUE(server.Listen().ok());
  std::atomic<int> ticks{0};
  std::atomic<bool> on_loop{false};
  std::thread::id loop;
  server.Every(std::chrono::seconds(1), [&] {
    on_loop.store(std::this_thread::get_id() == loop);
    ticks.fetch_add(1);
  });
  std::thread t([&] { server.Run(); });
  loop = t.get_id();
  // The fake clock has not moved: however long the loop runs, no tick. (The
  // loop wakes at least once a second to look at the clock.)
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(ticks.load(), 0);
  clock.Advance(std::chrono::seconds(1));
  for (int i = 0; i < 5000 && ticks.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(ticks.load(), 1);
  EXPECT_TRUE(on_loop.load());
  server.Shutdown();
  t.join();
  ::unlink(o.socket_path.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace cistern::daemon

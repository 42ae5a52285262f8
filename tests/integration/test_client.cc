// cistern_test_client: client processes for the integration tests.
//
//   putget SOCKET ID COUNT   put COUNT keys "p<ID>-<i>" of varied sizes, read each
//                            back and read other processes' keys; verify bytes
//   hold SOCKET KEY WRITES   lease KEY, open WRITES unsealed writes, print
//                            "ready", then sleep until killed
//   writer SOCKET ID         put keys "w<ID>-<i>" forever, printing "<key> <gen>"
//                            after each put returns; exit 0 when the daemon goes
//   fastread SOCKET KEYS     get keys "f0".."f<KEYS-1>" at random forever (the
//                            fast path), holding up to 4 views at once and
//                            checking each one's bytes (FastValue) when taken
//                            and again before it is released; prints "ready"
//                            after the first hit
// Exit 0 on success, 1 on a verification failure, 2 on a client error.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "include/cistern/client.h"
#include "tests/integration/daemon_harness.h"

using cistern::testing::FillForKey;
using cistern::testing::MatchesKey;

namespace {

std::unique_ptr<cistern::Client> Connect(const char* socket) {
  cistern::ConnectOptions o;
  o.socket_path = socket;
  auto c = cistern::Client::Connect(o);
  if (!c.ok()) {
    std::fprintf(stderr, "connect: %s\n", c.status().ToString().c_str());
    std::exit(2);
  }
  return std::move(*c);
}

int PutGet(const char* socket, int id, int count) {
  auto c = Connect(socket);
  std::vector<std::byte> buf;
  for (int i = 0; i < count; ++i) {
    std::string key = "p" + std::to_string(id) + "-" + std::to_string(i);
    size_t n = 1 + (i * 7919 + id * 104729) % (256 * 1024);
    buf.resize(n);
    FillForKey(key, buf.data(), n);
    auto ref = c->Put(key, buf);
    if (!ref.ok()) {
      std::fprintf(stderr, "put %s: %s\n", key.c_str(), ref.status().ToString().c_str());
      return 2;
    }
    auto v = c->Get(key, ref->generation);
    if (!v.ok() || v->size() != n || !MatchesKey(key, v->data(), n)) {
      std::fprintf(stderr, "readback of %s failed\n", key.c_str());
      return 1;
    }
    // Another process's key, if it is there yet.
    std::string other = "p" + std::to_string(id + 1) + "-" + std::to_string(i / 2);
    auto o = c->Get(other);
    if (o.ok() && !MatchesKey(other, o->data(), o->size())) {
      std::fprintf(stderr, "foreign object %s has wrong bytes\n", other.c_str());
      return 1;
    }
    if (i % 3 == 0) (void)c->Remove(key);
  }
  return 0;
}

int Hold(const char* socket, const char* key, int writes) {
  auto c = Connect(socket);
  auto v = c->Get(key);
  if (!v.ok()) return 2;
  std::vector<cistern::Writer> pending;
  for (int i = 0; i < writes; ++i) {
    auto w = c->Create("unsealed-" + std::to_string(getpid()) + "-" + std::to_string(i), 100000);
    if (!w.ok()) return 2;
    pending.push_back(std::move(*w));
  }
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) pause();
}

// A value written by FastReadStress (daemon_test.cc): 8 bytes of version,
// then FillForKey("<key>#<version>").
bool FastValueOk(const std::string& key, const cistern::ObjectView& v, uint64_t* version) {
  if (v.size() < 16) return false;
  uint64_t got;
  std::memcpy(&got, v.data(), 8);
  if (*version != 0 && got != *version) return false;
  *version = got;
  return MatchesKey(key + "#" + std::to_string(got), v.data() + 8, v.size() - 8);
}

int FastRead(const char* socket, int keys) {
  auto c = Connect(socket);
  std::mt19937_64 rng(getpid());
  struct Held {
    std::string key;
    uint64_t version;
    cistern::ObjectView view;
  };
  std::vector<Held> held;
  bool ready = false;
  for (;;) {
    std::string key = "f" + std::to_string(rng() % keys);
    auto v = c->Get(key);
    if (v.ok()) {
      uint64_t version = 0;
      if (!FastValueOk(key, *v, &version)) {
        std::fprintf(stderr, "%s: wrong bytes when taken\n", key.c_str());
        return 1;
      }
      held.push_back({key, version, std::move(*v)});
      if (!ready) {
        std::printf("ready\n");
        std::fflush(stdout);
        ready = true;
      }
    }
    if (!held.empty() && (held.size() >= 4 || rng() % 2 == 0)) {
      size_t i = rng() % held.size();
      if (!FastValueOk(held[i].key, held[i].view, &held[i].version)) {
        std::fprintf(stderr, "%s: bytes changed under the lease\n", held[i].key.c_str());
        return 1;
      }
      held.erase(held.begin() + i);
    }
  }
}

int Writer(const char* socket, int id) {
  auto c = Connect(socket);
  std::vector<std::byte> buf;
  for (int i = 0;; ++i) {
    std::string key = "w" + std::to_string(id) + "-" + std::to_string(i);
    size_t n = 64 + (i * 7919) % (512 * 1024);
    buf.resize(n);
    FillForKey(key, buf.data(), n);
    auto ref = c->Put(key, buf);
    if (!ref.ok()) {
      if (ref.status().code() == absl::StatusCode::kUnavailable) return 0;
      std::fprintf(stderr, "put %s: %s\n", key.c_str(), ref.status().ToString().c_str());
      return 2;
    }
    std::printf("%s %llu\n", key.c_str(), static_cast<unsigned long long>(ref->generation));
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "putget" && argc == 5) return PutGet(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
  if (mode == "hold" && argc == 5) return Hold(argv[2], argv[3], std::atoi(argv[4]));
  if (mode == "writer" && argc == 4) return Writer(argv[2], std::atoi(argv[3]));
  if (mode == "fastread" && argc == 4) return FastRead(argv[2], std::atoi(argv[3]));
  std::fprintf(stderr, "usage: see the comment at the top of test_client.cc\n");
  return 2;
}

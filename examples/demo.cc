// cistern_demo: the steps of `make demo` (driven by scripts/demo.sh).
//
//   put SOCKET KEY BYTES   write a synthetic tensor dict of ~BYTES in place
//   attach SOCKET KEY      attach it zero-copy and report the time it took
//   check SOCKET KEY       read every byte and verify it against the checksum
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "include/cistern/client.h"
#include "src/store/checksum.h"

namespace {

using Clock = std::chrono::steady_clock;

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

long RssAnonKiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stol(line.substr(8));
  }
  return -1;
}

std::unique_ptr<cistern::Client> Connect(const char* socket) {
  cistern::ConnectOptions o;
  o.socket_path = socket;
  o.client_name = "cistern_demo";
  auto c = cistern::Client::Connect(o);
  if (!c.ok()) {
    std::fprintf(stderr, "connect: %s\n", c.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*c);
}

int Put(const char* socket, const char* key, uint64_t bytes) {
  auto c = Connect(socket);
  // 16 layers of bfloat16 weights plus a float32 bias each: a state dict.
  std::vector<cistern::TensorInfo> manifest;
  uint64_t per_layer = bytes / 16;
  uint64_t cols = 4096;
  uint64_t rows = per_layer / (cols * 2);
  uint64_t offset = 0;
  for (int l = 0; l < 16; ++l) {
    manifest.push_back({"layers." + std::to_string(l) + ".weight",
                        cistern::DType::kBFloat16,
                        {rows, cols},
                        offset,
                        rows * cols * 2});
    offset += rows * cols * 2;
    manifest.push_back({"layers." + std::to_string(l) + ".bias",
                        cistern::DType::kFloat32,
                        {cols},
                        offset,
                        cols * 4});
    offset += cols * 4;
  }
  auto t0 = Clock::now();
  auto w = c->Create(key, offset, {}, manifest);
  if (!w.ok()) {
    std::fprintf(stderr, "create: %s\n", w.status().ToString().c_str());
    return 1;
  }
  for (size_t i = 0; i < manifest.size(); ++i) {
    // Written in place: tensor i is filled with the byte i.
    std::memset(w->data() + manifest[i].offset, static_cast<int>(i), manifest[i].nbytes);
  }
  auto ref = w->Seal();
  if (!ref.ok()) {
    std::fprintf(stderr, "seal: %s\n", ref.status().ToString().c_str());
    return 1;
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("  put '%s': %zu tensors, %.2f GiB, generation %llu, written in place in %.2f s\n",
              key, manifest.size(), offset / double(1 << 30),
              static_cast<unsigned long long>(ref->generation), s);
  return 0;
}

int Attach(const char* socket, const char* key) {
  long rss_before = RssAnonKiB();
  auto c = Connect(socket);
  auto t0 = Clock::now();
  auto v = c->Get(key);
  auto t1 = Clock::now();
  if (!v.ok()) {
    std::fprintf(stderr, "get: %s\n", v.status().ToString().c_str());
    return 1;
  }
  // Read one element of every tensor to show the view is live and right.
  for (size_t i = 0; i < v->tensors().size(); ++i) {
    auto bytes = v->tensor(v->tensors()[i].name);
    if (!bytes.ok() || static_cast<size_t>((*bytes)[0]) != i) {
      std::fprintf(stderr, "tensor %zu has the wrong bytes\n", i);
      return 1;
    }
  }
  long rss_after = RssAnonKiB();
  std::printf(
      "  pid %d attached '%s' (gen %llu, %zu tensors, %.2f GiB at %p) in %.1f us; private "
      "memory grew by %ld KiB (zero-copy)\n",
      getpid(), key, static_cast<unsigned long long>(v->generation()), v->tensors().size(),
      v->size() / double(1 << 30), static_cast<const void*>(v->data()), Us(t1 - t0),
      rss_after - rss_before);
  return 0;
}

int Check(const char* socket, const char* key) {
  auto c = Connect(socket);
  auto info = c->Stat(key);
  auto v = c->Get(key);
  if (!info.ok() || !v.ok()) {
    std::fprintf(stderr, "'%s' is missing after restart: %s\n", key,
                 (info.ok() ? v.status() : info.status()).ToString().c_str());
    return 1;
  }
  auto t0 = Clock::now();
  uint64_t sum = cistern::store::Checksum(v->data(), v->size());
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!info->has_checksum() || sum != info->checksum()) {
    std::fprintf(stderr, "'%s' checksum mismatch after restart\n", key);
    return 1;
  }
  std::printf(
      "  '%s' survived the kill: generation %llu, %zu tensors, all %.2f GiB verified "
      "against its XXH3 checksum in %.2f s\n",
      key, static_cast<unsigned long long>(v->generation()), v->tensors().size(),
      v->size() / double(1 << 30), s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "put" && argc == 5) return Put(argv[2], argv[3], std::stoull(argv[4]));
  if (mode == "attach" && argc == 4) return Attach(argv[2], argv[3]);
  if (mode == "check" && argc == 4) return Check(argv[2], argv[3]);
  std::fprintf(stderr, "usage: cistern_demo put|attach|check SOCKET KEY [BYTES]\n");
  return 2;
}

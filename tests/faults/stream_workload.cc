// stream_workload: one producer and one consumer over a stream of cisternd
// that ride out daemon kills (reconnecting until it is back), and write a
// journal of what the daemon confirmed. tests/faults/stream_kill_test.cc kills
// the daemon under it and checks the journal.
//
//   stream_workload SOCKET STREAM JOURNAL SEED SAMPLES [resume]
//
// The producer puts sample "<STREAM>-<i>" (i < SAMPLES) as object "obj-<id>"
// with bytes that are a function of the id (FillForKey; the size too), and
// commits a ref to it. The consumer leases batches, reads and verifies every
// object, and acks the batch with the next global step, optimizer_durable on
// every kDurableEvery-th ack; now and then it fails a batch back instead.
// With `resume`, an earlier driver on the same journal was killed: the
// producer goes on after the samples the journal has as committed, and the
// consumer starts as a restarted consumer does, with a reconcile.
//
// Journal (appended, one write(2) per line; C, a and A lines are fdatasync'ed,
// and C and A only after the daemon answered OK, so the journal never claims
// more than the daemon confirmed):
//   C <id> <generation> new|dup   the commit of <id> is confirmed (dup: an
//                                 earlier try whose answer was lost had done it)
//   L <id> <generation> <deliveries> ok|unverified|BAD:<why>
//                                 a lease returned <id>; its bytes checked
//   a <step> <durable> <id>...    an ack about to be sent
//   A <step> <durable> <id>...    that ack confirmed
//   F <id>...                     a retryable fail confirmed
//   O <key> <generation>          an object no stream pins removed (put again
//                                 for a sample whose commit had happened)
//   R                             the consumer reconnected and reconciled (the
//                                 daemon restarted, or this driver is new)
//   E <what>                      the driver saw something that must not happen
// stdout: one '.' per C or A line, so the test can place its kills.
//
// Exit 0 once every sample is committed and the stream is drained (nothing
// pending, leased or awaiting a durable marker); 1 after an E line; 2 when
// the daemon stays away for 60 s.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "include/cistern/client.h"
#include "include/cistern/stream.h"
#include "tests/integration/daemon_harness.h"

namespace {

using cistern::Client;
using cistern::SampleRef;
using cistern::Stream;
using cistern::testing::FillForKey;
using cistern::testing::MatchesKey;
using Code = absl::StatusCode;

constexpr int kBatch = 8;
constexpr int kDurableEvery = 3;
constexpr auto kCommitWait = std::chrono::milliseconds(2000);
constexpr auto kLeaseWait = std::chrono::milliseconds(100);
constexpr auto kGiveUp = std::chrono::seconds(60);
constexpr auto kRunLimit = std::chrono::seconds(120);

struct Args {
  std::string socket, stream, journal;
  uint64_t seed = 0;
  int samples = 0;
  bool resume = false;  // an earlier driver on this journal was killed
};
Args args;

// A sample's size: 1..48 KiB, from the seed and the id.
size_t SizeOf(const std::string& id) {
  uint64_t h = std::hash<std::string>{}(id) ^ (args.seed * 0x9E3779B97F4A7C15ull);
  return 1024 + h % (47 * 1024);
}
std::string IdOf(int i) { return fmt::format("{}-{:05d}", args.stream, i); }
std::string KeyOf(const std::string& id) { return "obj-" + id; }

class Journal {
 public:
  explicit Journal(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) {
    if (fd_ < 0) {
      std::perror(path.c_str());
      std::exit(2);
    }
  }
  // Appends one line; with `sync`, returns after it is on disk. `progress`
  // writes the '.' for the test.
  void Write(const std::string& line, bool sync, bool progress = false) {
    std::lock_guard<std::mutex> l(mu_);
    std::string s = line + "\n";
    if (::write(fd_, s.data(), s.size()) != static_cast<ssize_t>(s.size()) ||
        (sync && ::fdatasync(fd_) != 0)) {
      std::perror("journal");
      std::exit(2);
    }
    if (progress && ::write(1, ".", 1) != 1) std::exit(2);
  }

 private:
  std::mutex mu_;
  int fd_;
};
Journal* journal;
std::atomic<bool> failed = false;

void Fail(const std::string& what) {
  journal->Write("E " + what, true);
  std::fprintf(stderr, "stream_workload: %s\n", what.c_str());
  failed = true;
}

// One client and its stream handle, reconnected when the daemon goes away.
class Conn {
 public:
  explicit Conn(const char* name) : name_(name) {}
  // Connects (again) if needed; false if the daemon stayed away too long.
  // Sets *reconnected when an earlier connection was lost.
  bool Ensure(bool* reconnected = nullptr) {
    if (client_ && !broken_) return true;
    if (reconnected) *reconnected = client_ != nullptr || args.resume;
    stream_.reset();
    client_.reset();
    auto deadline = std::chrono::steady_clock::now() + kGiveUp;
    while (std::chrono::steady_clock::now() < deadline) {
      cistern::ConnectOptions o;
      o.socket_path = args.socket;
      o.client_name = name_;
      auto c = Client::Connect(o);
      if (c.ok()) {
        cistern::StreamOptions so;
        so.high_watermark_bytes = 2 << 20;
        so.low_watermark_bytes = 1 << 20;
        auto s = Stream::Open(c->get(), args.stream, so);
        if (s.ok()) {
          client_ = std::move(*c);
          stream_.emplace(std::move(*s));
          broken_ = false;
          return true;
        }
        if (s.status().code() != Code::kUnavailable) {
          Fail(fmt::format("{}: open: {}", name_, s.status().ToString()));
          return false;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::fprintf(stderr, "stream_workload: %s: no daemon for 60 s\n", name_);
    std::exit(2);
  }
  // Marks the connection lost when `s` says the daemon is gone; true then.
  bool Lost(const absl::Status& s) {
    if (s.code() == Code::kUnavailable) broken_ = true;
    return broken_;
  }
  Client* client() { return client_.get(); }
  Stream* stream() { return &*stream_; }

 private:
  const char* name_;
  std::unique_ptr<Client> client_;
  std::optional<Stream> stream_;
  bool broken_ = false;
};

// Commits sample `i` exactly once, whatever happens meanwhile. After an answer
// lost to a kill, the object (sealed objects survive a kill) is looked up
// again rather than put again, so the stream never holds a generation that a
// newer one superseded. A put only happens when the key has no object; if a
// commit of an earlier object had happened after all (that object was
// released since), the commit answers dup and the new object, which no stream
// pins, is removed. `maybe_committed`: an earlier driver may have committed it.
bool ProduceOne(Conn& conn, int i, bool maybe_committed) {
  const std::string id = IdOf(i), key = KeyOf(id);
  const size_t n = SizeOf(id);
  uint64_t gen = 0;
  std::vector<std::byte> bytes;
  for (;;) {
    if (failed || !conn.Ensure()) return false;
    Client* c = conn.client();
    if (gen == 0 || maybe_committed) {
      auto info = c->Stat(key);
      if (!info.ok() && conn.Lost(info.status())) continue;
      if (info.ok()) {
        gen = info->generation();
      } else if (info.status().code() == Code::kNotFound) {
        if (bytes.empty()) {
          bytes.resize(n);
          FillForKey(id, bytes.data(), n);
        }
        cistern::PutOptions po;
        po.if_absent = true;
        auto ref = c->Put(key, bytes, po);
        if (!ref.ok()) {
          if (conn.Lost(ref.status()) || ref.status().code() == Code::kAlreadyExists) continue;
          Fail(fmt::format("put {}: {}", key, ref.status().ToString()));
          return false;
        }
        gen = ref->generation;
      } else {
        Fail(fmt::format("stat {}: {}", key, info.status().ToString()));
        return false;
      }
    }
    SampleRef r;
    r.sample_id = id;
    r.key = key;
    r.generation = gen;
    r.features = {{"bytes", cistern::DType::kUInt8, {n}}};
    auto res = conn.stream()->Commit({r}, kCommitWait, "producer");
    if (!res.ok()) {
      if (conn.Lost(res.status())) {
        maybe_committed = true;
        continue;
      }
      if (res.status().code() == Code::kResourceExhausted) continue;  // backpressure
      Fail(fmt::format("commit {} generation {}: {}", id, gen, res.status().ToString()));
      return false;
    }
    bool dup = res->duplicates == 1;
    if (dup && !maybe_committed) {
      Fail(fmt::format("commit {} answered dup, but no earlier commit of it was sent", id));
      return false;
    }
    // A dup's object is the stream's (held: the store refuses to remove it)
    // or ours to remove.
    while (dup) {
      if (!conn.Ensure()) return false;
      auto rm = conn.client()->Remove(key, gen);
      if (rm.ok()) journal->Write(fmt::format("O {} {}", key, gen), false);
      if (rm.ok() || rm.status().code() == Code::kNotFound ||
          rm.status().code() == Code::kFailedPrecondition) {
        break;
      }
      if (!conn.Lost(rm.status())) {
        Fail(fmt::format("remove {} generation {}: {}", key, gen, rm.status().ToString()));
        return false;
      }
    }
    // Last, so that a driver killed before this line does the above again.
    journal->Write(fmt::format("C {} {} {}", id, gen, dup ? "dup" : "new"), true, true);
    return true;
  }
}

std::atomic<bool> produced = false;

// Samples before `first` are committed (an earlier driver's journal says so).
void Producer(int first) {
  Conn conn("producer");
  for (int i = first; i < args.samples; ++i) {
    if (!ProduceOne(conn, i, /*maybe_committed=*/i == first && args.resume)) return;
  }
  produced = true;
}

std::string Joined(const std::vector<SampleRef>& refs) {
  std::string s;
  for (const auto& r : refs) s += " " + r.sample_id;
  return s;
}

void Consumer() {
  Conn conn("consumer");
  std::mt19937_64 rng(args.seed * 7919 + 1);
  uint64_t step = 0;
  bool need_step = true;
  while (!failed) {
    bool reconnected = false;
    if (!conn.Ensure(&reconnected)) return;
    if (reconnected) {
      journal->Write("R", true);
      // After a daemon restart there is nothing left to requeue (doing it
      // again must change nothing); after a driver restart this returns the
      // killed consumer's leased and acked-not-durable samples to the queue.
      auto rec = conn.stream()->Reconcile();
      if (!rec.ok()) {
        conn.Lost(rec.status());
        if (rec.status().code() != Code::kUnavailable) {
          Fail("reconcile: " + rec.status().ToString());
          return;
        }
        continue;
      }
    }
    // Learn the marker's step after any restart: steps must keep rising.
    if (need_step || reconnected) {
      need_step = true;
      auto info = conn.stream()->Stat();
      if (!info.ok()) {
        conn.Lost(info.status());
        continue;
      }
      step = std::max<uint64_t>(step, info->global_step());
      need_step = false;
    }
    auto refs = conn.stream()->Lease({.max_refs = kBatch, .min_refs = 1, .wait = kLeaseWait});
    if (!refs.ok()) {
      if (conn.Lost(refs.status())) continue;
      Fail("lease: " + refs.status().ToString());
      return;
    }
    std::vector<SampleRef> batch = std::move(*refs);
    bool durable = false;
    if (batch.empty()) {
      if (!produced) continue;
      auto info = conn.stream()->Stat();
      if (!info.ok()) {
        conn.Lost(info.status());
        continue;
      }
      if (info->depth() == 0 && info->in_flight() == 0 && info->awaiting_durable() == 0) return;
      if (info->awaiting_durable() == 0) continue;
      durable = true;  // nothing left to lease: make the acked ones durable
    }
    // Read every object before acking it.
    bool lost = false;
    for (const auto& r : batch) {
      std::string verdict = "ok";
      size_t n = SizeOf(r.sample_id);
      auto v = conn.client()->Get(r.key, r.generation);
      if (!v.ok()) {
        if (conn.Lost(v.status())) {
          verdict = "unverified";
          lost = true;
        } else {
          verdict = "BAD:get:" + std::string(absl::StatusCodeToString(v.status().code()));
        }
      } else if (v->size() != n) {
        verdict = fmt::format("BAD:size:{}", v->size());
      } else if (!MatchesKey(r.sample_id, v->data(), n)) {
        verdict = "BAD:bytes";
      } else if (r.nbytes != n) {
        verdict = fmt::format("BAD:nbytes:{}", r.nbytes);
      }
      journal->Write(fmt::format("L {} {} {} {}", r.sample_id, r.generation, r.deliveries, verdict),
                     false);
      if (verdict.starts_with("BAD")) Fail(fmt::format("lease of {}: {}", r.sample_id, verdict));
      if (lost) break;
    }
    if (lost || failed) continue;
    if (!batch.empty() && rng() % 10 == 0) {
      auto f = conn.stream()->Fail(batch, /*retryable=*/true);
      if (f.ok()) {
        journal->Write("F" + Joined(batch), false);
      } else if (!conn.Lost(f.status())) {
        Fail("fail: " + f.status().ToString());
        return;
      }
      continue;
    }
    ++step;
    durable = durable || step % kDurableEvery == 0;
    std::string what = fmt::format("{} {}{}", step, durable ? 1 : 0, Joined(batch));
    journal->Write("a " + what, true);
    auto ack = conn.stream()->Ack(batch, step, durable);
    if (!ack.ok()) {
      if (conn.Lost(ack.status())) continue;
      Fail("ack: " + ack.status().ToString());
      return;
    }
    journal->Write("A " + what, true, true);
    if (ack->acked() != batch.size()) {
      Fail(fmt::format("ack of {} refs acked {} ({} already)", batch.size(), ack->acked(),
                       ack->already()));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6 && !(argc == 7 && std::string(argv[6]) == "resume")) {
    std::fprintf(stderr, "usage: stream_workload SOCKET STREAM JOURNAL SEED SAMPLES [resume]\n");
    return 2;
  }
  args = {argv[1],  argv[2], argv[3], std::strtoull(argv[4], nullptr, 10), std::atoi(argv[5]),
          argc == 7};
  // The producer is sequential: its C lines are samples 0, 1, ... in order.
  int first = 0;
  if (args.resume) {
    std::ifstream in(args.journal);
    for (std::string line; std::getline(in, line);) first += line.starts_with("C ");
  }
  journal = new Journal(args.journal);
  std::thread watchdog([] {
    auto deadline = std::chrono::steady_clock::now() + kRunLimit;
    while (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (failed) return;
    }
    Fail("the workload did not finish within its run limit");
    std::_Exit(1);
  });
  watchdog.detach();
  std::thread producer(Producer, first);
  std::thread consumer(Consumer);
  producer.join();
  consumer.join();
  return failed ? 1 : 0;
}

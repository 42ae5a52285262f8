#include "src/cli/stream_commands.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "include/cistern/client.h"
#include "include/cistern/stream.h"
#include "src/cli/data_commands.h"
#include "src/cli/proto_json.h"
#include "src/stream/rules.h"

namespace cistern::cli {
namespace {

using Json = nlohmann::ordered_json;

// "1.5 MiB (1572864 bytes)": the unit for reading, the count for scripts.
std::string BytesExact(uint64_t n) {
  return n < 1024 ? HumanBytes(n) : fmt::format("{} ({} bytes)", HumanBytes(n), n);
}

std::string UtcTime(uint64_t unix_ms) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// Exit code 2 with the reason unless `name` can name a stream.
int CheckName(const std::string& name) {
  absl::Status s = stream::ValidateStreamName(name);
  if (s.ok()) return 0;
  std::fprintf(stderr, "cistern: %s\n", std::string(s.message()).c_str());
  return 2;
}

// The stream called `name` from the daemon's list: looking it up this way
// never creates it (Stream::Open would).
absl::StatusOr<StreamInfo> FindStream(Client* c, const std::string& name) {
  auto all = Stream::List(c);
  if (!all.ok()) return all.status();
  for (StreamInfo& s : *all) {
    if (s.name() == name) return std::move(s);
  }
  return absl::NotFoundError(fmt::format("no stream named '{}'", name));
}

}  // namespace

int StreamList(const Target& t, bool json) {
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  auto all = Stream::List(c->get());
  if (!all.ok()) return Fail(all.status());
  std::sort(all->begin(), all->end(),
            [](const StreamInfo& a, const StreamInfo& b) { return a.name() < b.name(); });
  if (json) {
    Json arr = Json::array();
    for (const StreamInfo& s : *all) arr.push_back(ProtoToJson(s));
    PrintJson(arr);
    return 0;
  }
  if (all->empty()) {
    std::printf("no streams\n");
    return 0;
  }
  size_t w = 6;
  for (const StreamInfo& s : *all) w = std::max(w, s.name().size());
  std::printf("%-*s %10s %10s %17s %12s %12s %12s %7s\n", static_cast<int>(w), "stream", "depth",
              "in flight", "awaiting durable", "resident", "committed", "acked", "paused");
  for (const StreamInfo& s : *all) {
    std::printf(
        "%-*s %10llu %10llu %17llu %12s %12llu %12llu %7s\n", static_cast<int>(w), s.name().c_str(),
        static_cast<unsigned long long>(s.depth()), static_cast<unsigned long long>(s.in_flight()),
        static_cast<unsigned long long>(s.awaiting_durable()),
        HumanBytes(s.resident_bytes()).c_str(), static_cast<unsigned long long>(s.committed()),
        static_cast<unsigned long long>(s.acked()), s.paused() ? "yes" : "no");
  }
  return 0;
}

int StreamShow(const Target& t, const std::string& name, bool json) {
  if (int rc = CheckName(name); rc != 0) return rc;
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  auto s = FindStream(c->get(), name);
  if (!s.ok()) return Fail(s.status());
  if (json) {
    PrintJson(ProtoToJson(*s));
    return 0;
  }
  const wire::StreamOptions& o = s->options();
  auto line = [](const char* label, const std::string& value) {
    std::printf("  %-28s %s\n", (std::string(label) + ":").c_str(), value.c_str());
  };
  auto n = [](uint64_t v) { return std::to_string(v); };
  auto yes = [](bool b) { return std::string(b ? "yes" : "no"); };
  auto watermark = [](bool set, uint64_t v) {
    return !set ? std::string("default") : v == 0 ? std::string("off (0)") : BytesExact(v);
  };
  std::printf("stream %s (created %s)\n", s->name().c_str(), UtcTime(s->create_unix_ms()).c_str());
  std::printf("queue:\n");
  line("depth", n(s->depth()));
  line("in flight", n(s->in_flight()));
  line("awaiting durable", n(s->awaiting_durable()));
  line("resident bytes", BytesExact(s->resident_bytes()));
  line("paused", yes(s->paused()));
  std::printf("totals:\n");
  line("committed", n(s->committed()));
  line("acked", n(s->acked()));
  line("dropped", n(s->dropped()));
  line("lost", n(s->lost()));
  std::printf("marker:\n");
  line("global step", s->has_global_step() ? n(s->global_step()) : "none");
  line("durable step", s->has_durable_step() ? n(s->durable_step()) : "none");
  line("optimizer durable", yes(s->optimizer_durable()));
  std::printf("watermarks and options:\n");
  line("high watermark", watermark(o.has_high_watermark_bytes(), o.high_watermark_bytes()));
  line("low watermark", watermark(o.has_low_watermark_bytes(), o.low_watermark_bytes()));
  line("lease timeout",
       o.has_lease_timeout_ms() ? fmt::format("{} ms", o.lease_timeout_ms()) : "default");
  std::string cap = "default";
  if (o.has_max_in_flight_per_producer()) {
    cap = o.max_in_flight_per_producer() == 0 ? "no cap (0)" : n(o.max_in_flight_per_producer());
  }
  line("max in flight per producer", cap);
  line("max lease refs", o.has_max_lease_refs() ? n(o.max_lease_refs()) : "default");
  std::printf("starvation:\n");
  line("producer waits", n(s->producer_waits()));
  line("producer rejections", n(s->producer_rejections()));
  line("consumer starved", n(s->consumer_starved()));
  line("consumer empty", n(s->consumer_empty()));
  line("expired leases", n(s->expired_leases()));
  line("requeued", n(s->requeued()));
  return 0;
}

int StreamReconcile(const Target& t, const std::string& name, bool json) {
  if (int rc = CheckName(name); rc != 0) return rc;
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  // Look first: Open would create a stream that does not exist. Streams are
  // never deleted, so the one found is still there for Open to return.
  if (auto found = FindStream(c->get(), name); !found.ok()) return Fail(found.status());
  auto s = Stream::Open(c->get(), name);  // no options: changes nothing
  if (!s.ok()) return Fail(s.status());
  auto r = s->Reconcile();
  if (!r.ok()) return Fail(r.status());
  if (json) {
    Json j{{"name", name}};
    j.update(ProtoToJson(*r));
    PrintJson(j);
  } else {
    std::printf("reconciled stream %s: %llu released, %llu requeued, %llu lost, %llu pending\n",
                name.c_str(), static_cast<unsigned long long>(r->released()),
                static_cast<unsigned long long>(r->requeued()),
                static_cast<unsigned long long>(r->lost()),
                static_cast<unsigned long long>(r->pending()));
  }
  return 0;
}

void RegisterStreamCommands(CLI::App* app, Target* target, const bool* json, int* rc) {
  auto* st = app->add_subcommand("stream", "inspect streams (durable queues of sample refs)");
  st->require_subcommand(1);

  auto* ls = st->add_subcommand("ls", "every stream: depth, in flight, bytes, totals");
  ls->callback([=] { *rc = StreamList(*target, *json); });

  static std::string name;
  auto* show = st->add_subcommand("show", "every counter, marker and option of one stream");
  show->add_option("NAME", name, "the stream")->required();
  show->callback([=] { *rc = StreamShow(*target, name, *json); });

  auto* rec =
      st->add_subcommand("reconcile",
                         "return a stream's leased and acked-but-not-durable samples to its queue "
                         "(after a consumer restart)");
  rec->add_option("NAME", name, "the stream")->required();
  rec->callback([=] { *rc = StreamReconcile(*target, name, *json); });
}

}  // namespace cistern::cli

#include "src/cli/data_commands.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "fmt/format.h"
#include "include/cistern/client.h"
#include "src/cli/proto_json.h"
#include "src/common/unique_fd.h"
#include "src/common/write_all.h"

namespace cistern::cli {
namespace {

// The object as JSON: the wire fields, with the checksum as hex (null when
// the object has none).
nlohmann::ordered_json InfoJson(const ObjectInfo& o) {
  nlohmann::ordered_json j = ProtoToJson(o);
  j.erase("has_checksum");
  j["checksum"] = o.has_checksum() ? nlohmann::ordered_json(fmt::format("{:016x}", o.checksum()))
                                   : nlohmann::ordered_json(nullptr);
  return j;
}

}  // namespace

absl::Status CheckOutputPath(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        fmt::format("cannot write '{}': it is a directory; name a file", path));
  }
  fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) parent = ".";
  if (!fs::is_directory(parent, ec)) {
    return absl::InvalidArgumentError(
        fmt::format("cannot write '{}': directory '{}' does not exist", path, parent.string()));
  }
  if (::access(parent.c_str(), W_OK) != 0) {
    return absl::InvalidArgumentError(fmt::format("cannot write '{}': directory '{}': {}", path,
                                                  parent.string(), std::strerror(errno)));
  }
  return absl::OkStatus();
}

int UsageError(const absl::Status& s) {
  std::fprintf(stderr, "cistern: %s\n", std::string(s.message()).c_str());
  return 2;
}

int Fail(const absl::Status& s) {
  std::string msg(s.message());
  if (s.code() == absl::StatusCode::kUnavailable) msg += " (is cisternd running?)";
  std::fprintf(stderr, "cistern: %s\n", msg.c_str());
  return 1;
}

absl::StatusOr<std::unique_ptr<Client>> ConnectTo(const Target& t) {
  ConnectOptions o;
  o.socket_path = t.socket;  // empty: the client's discovery (DiscoverSocket)
  o.token = t.token;         // empty: $CISTERN_TOKEN
  o.client_name = "cistern-cli";
  return Client::Connect(o);
}

std::string HumanBytes(uint64_t n) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(n);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {}", v, kUnits[u]);
}

std::string JsonText(const nlohmann::ordered_json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void PrintJson(const nlohmann::ordered_json& j) { std::printf("%s\n", JsonText(j, 2).c_str()); }

int Put(const Target& t, const std::string& key, const std::string& file, bool evictable,
        bool if_absent, bool json) {
  UniqueFd fd(file == "-" ? ::dup(0) : ::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    std::fprintf(stderr, "cistern: cannot open '%s': %s\n", file.c_str(), std::strerror(errno));
    return 2;
  }
  struct stat st {};
  bool stat_ok = ::fstat(fd.get(), &st) == 0;
  if (stat_ok && S_ISDIR(st.st_mode)) {
    std::fprintf(stderr, "cistern: '%s' is a directory; put stores one file (or - for stdin)\n",
                 file.c_str());
    return 2;
  }
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  PutOptions opts;
  opts.evictable = evictable;
  opts.if_absent = if_absent;
  absl::StatusOr<ObjectRef> ref;
  if (stat_ok && S_ISREG(st.st_mode)) {
    // A regular file: read it straight into the reserved object.
    auto w = (*c)->Create(key, st.st_size, opts);
    if (!w.ok()) return Fail(w.status());
    size_t done = 0;
    while (done < w->size()) {
      ssize_t n = ::read(fd.get(), w->data() + done, w->size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        std::fprintf(stderr, "cistern: reading '%s' failed after %zu bytes\n", file.c_str(), done);
        return 1;  // the writer aborts
      }
      done += n;
    }
    ref = w->Seal();
  } else {
    std::string data;
    char buf[1 << 16];
    for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        std::fprintf(stderr, "cistern: reading '%s': %s\n", file.c_str(), std::strerror(errno));
        return 1;
      }
      data.append(buf, n);
    }
    ref = (*c)->Put(key, data, opts);
  }
  if (!ref.ok()) return Fail(ref.status());
  if (json) {
    PrintJson({{"key", key}, {"generation", ref->generation}, {"size", ref->size}});
  } else {
    std::printf("put %s: generation %llu, %llu bytes\n", key.c_str(),
                static_cast<unsigned long long>(ref->generation),
                static_cast<unsigned long long>(ref->size));
  }
  return 0;
}

int Get(const Target& t, const std::string& key, const std::string& out, bool json) {
  if (!out.empty()) {
    if (absl::Status s = CheckOutputPath(out); !s.ok()) return UsageError(s);
  }
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  auto v = (*c)->Get(key);
  if (!v.ok()) return Fail(v.status());
  UniqueFd fd(out.empty() ? ::dup(1)
                          : ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    std::fprintf(stderr, "cistern: cannot write '%s': %s\n", out.c_str(), std::strerror(errno));
    return 2;
  }
  if (!WriteAll(fd.get(), v->data(), v->size())) {
    std::fprintf(stderr, "cistern: writing %s failed: %s\n", out.empty() ? "stdout" : out.c_str(),
                 std::strerror(errno));
    return 1;
  }
  if (json && !out.empty()) {
    PrintJson(
        {{"key", key}, {"generation", v->generation()}, {"size", v->size()}, {"output", out}});
  }
  return 0;
}

int List(const Target& t, const std::string& prefix, bool json) {
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  std::string cursor;
  bool first = true;
  if (json) std::printf("{\"objects\": [");
  do {
    auto page = (*c)->List(prefix, 0, cursor);
    if (!page.ok()) {
      if (json) std::printf("]}\n");
      return Fail(page.status());
    }
    for (const ObjectInfo& o : page->objects()) {
      if (json) {
        std::printf("%s\n  %s", first ? "" : ",", JsonText(InfoJson(o)).c_str());
      } else {
        std::printf("%-40s %14llu  gen %-8llu %s%s\n", o.key().c_str(),
                    static_cast<unsigned long long>(o.size()),
                    static_cast<unsigned long long>(o.generation()), o.tier().c_str(),
                    o.evictable() ? " evictable" : "");
      }
      first = false;
    }
    cursor = page->next_cursor();
  } while (!cursor.empty());
  if (json) std::printf("%s]}\n", first ? "" : "\n");
  return 0;
}

int Stat(const Target& t, const std::string& key, bool json) {
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  auto o = (*c)->Stat(key);
  if (!o.ok()) return Fail(o.status());
  if (json) {
    PrintJson(InfoJson(*o));
    return 0;
  }
  std::printf(
      "key:        %s\ngeneration: %llu\nsize:       %llu bytes\ntier:       %s\n"
      "evictable:  %s\nleases:     %u\ntensors:    %u\nchecksum:   %s\n",
      o->key().c_str(), static_cast<unsigned long long>(o->generation()),
      static_cast<unsigned long long>(o->size()), o->tier().c_str(), o->evictable() ? "yes" : "no",
      o->leases(), o->tensors(),
      o->has_checksum() ? fmt::format("xxh3:{:016x}", o->checksum()).c_str() : "none");
  return 0;
}

int Remove(const Target& t, const std::string& key, bool json) {
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  auto g = (*c)->Remove(key);
  if (!g.ok()) return Fail(g.status());
  if (json) {
    PrintJson({{"key", key}, {"generation", *g}});
  } else {
    std::printf("removed %s (generation %llu)\n", key.c_str(), static_cast<unsigned long long>(*g));
  }
  return 0;
}

}  // namespace cistern::cli

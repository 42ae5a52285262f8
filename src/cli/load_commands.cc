#include "src/cli/load_commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string_view>
#include <system_error>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "fmt/format.h"
#include "include/cistern/client.h"
#include "src/cli/data_commands.h"
#include "src/cli/safetensors.h"
#include "src/common/errno_status.h"
#include "src/common/fmt_absl.h"
#include "src/common/unique_fd.h"
#include "src/common/write_all.h"
#include "src/store/layout.h"
#include "src/store/manifest.h"

namespace cistern::cli {
namespace {

// Bytes per pread into the object, and so the progress bar's step at most.
constexpr uint64_t kReadChunk = 16 << 20;

int BadInput(absl::string_view msg) {
  std::fprintf(stderr, "cistern: %.*s\n", static_cast<int>(msg.size()), msg.data());
  return 2;
}

// One input file, open from header validation until its bytes are copied.
struct Shard {
  std::string path;
  UniqueFd fd;
  SafetensorsFile header;
};

// The files PATH names: itself, or a directory's *.safetensors in name order.
absl::StatusOr<std::vector<std::string>> ShardPaths(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec) {
    return absl::InvalidArgumentError(fmt::format("cannot open '{}': {}", path, ec.message()));
  }
  if (fs::is_regular_file(st)) return std::vector<std::string>{path};
  if (!fs::is_directory(st)) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' is neither a regular file nor a directory", path));
  }
  std::vector<std::string> out;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".safetensors" && it->is_regular_file(ec)) {
      out.push_back(it->path().string());
    }
  }
  if (ec) {
    return absl::InvalidArgumentError(fmt::format("cannot list '{}': {}", path, ec.message()));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(fmt::format("'{}' holds no *.safetensors files", path));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Progress on stdout: on a terminal one line redrawn in place (when the whole
// percentage or the shard changes), elsewhere a line per finished shard, and
// nothing at all in JSON mode.
class Progress {
 public:
  Progress(bool json, uint64_t total, size_t shards)
      : bar_(!json && ::isatty(1)), lines_(!json && !bar_), total_(total), shards_(shards) {}

  void Add(uint64_t n) {
    done_ += n;
    Draw();
  }

  void StartShard(size_t index) {
    shard_ = index;
    Draw();
  }

  void ShardDone(const Shard& s, size_t index) {
    if (!lines_) return;
    uint64_t bytes = 0;
    for (const SafetensorsTensor& t : s.header.tensors) bytes += t.nbytes();
    std::printf("read %zu/%zu %s: %zu tensors, %s\n", index + 1, shards_, s.path.c_str(),
                s.header.tensors.size(), HumanBytes(bytes).c_str());
    std::fflush(stdout);
  }

  void Finish() {
    if (bar_ && drawn_) std::printf("\n");
  }

 private:
  void Draw() {
    if (!bar_) return;
    constexpr int kWidth = 30;
    int percent = total_ == 0 ? 100 : static_cast<int>(done_ * 100 / total_);
    if (drawn_ && percent == percent_ && shard_ == drawn_shard_) return;
    int filled = percent * kWidth / 100;
    std::printf("\rloading [%s%s] %3d%%  %s / %s  file %zu/%zu", std::string(filled, '#').c_str(),
                std::string(kWidth - filled, '.').c_str(), percent, HumanBytes(done_).c_str(),
                HumanBytes(total_).c_str(), shard_ + 1, shards_);
    std::printf("\x1b[K");  // clear what a longer previous line left
    std::fflush(stdout);
    drawn_ = true;
    percent_ = percent;
    drawn_shard_ = shard_;
  }

  const bool bar_;
  const bool lines_;
  const uint64_t total_;
  const size_t shards_;
  uint64_t done_ = 0;
  size_t shard_ = 0;
  bool drawn_ = false;
  int percent_ = -1;
  size_t drawn_shard_ = 0;
};

// Copies tensor `t` from the shard's file to `out`.
absl::Status ReadInto(const Shard& s, const SafetensorsTensor& t, std::byte* out,
                      Progress* progress) {
  uint64_t at = s.header.data_start + t.begin;
  uint64_t n = t.nbytes();
  while (n > 0) {
    ssize_t r = ::pread(s.fd.get(), out, std::min(n, kReadChunk), at);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, fmt::format("reading '{}'", s.path));
    if (r == 0) {
      return absl::DataLossError(fmt::format(
          "{}: file ended at byte {}, inside tensor '{}' (did it change after its header was "
          "read?)",
          s.path, at, t.name));
    }
    out += r;
    at += r;
    n -= r;
    progress->Add(r);
  }
  return absl::OkStatus();
}

}  // namespace

int Load(const Target& target, const LoadOptions& options, bool json) {
  // Open and validate every file before connecting, so that a bad one stores nothing.
  auto paths = ShardPaths(options.path);
  if (!paths.ok()) return BadInput(paths.status().message());
  std::vector<Shard> shards;
  for (const std::string& path : *paths) {
    Shard s{path, UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), {}};
    if (!s.fd.valid()) {
      return BadInput(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
    }
    auto header = ReadSafetensorsHeader(s.fd.get(), path);
    if (!header.ok()) {
      if (header.status().code() == absl::StatusCode::kInvalidArgument) {
        return BadInput(header.status().message());
      }
      return Fail(header.status());
    }
    s.header = *std::move(header);
    shards.push_back(std::move(s));
  }

  // One manifest for all the shards, laid out as LayoutTensors does.
  std::vector<TensorInfo> manifest;
  absl::flat_hash_map<std::string_view, const Shard*> owner;
  uint64_t total = 0, data_bytes = 0;
  size_t metadata_entries = 0;
  for (const Shard& s : shards) {
    for (const SafetensorsTensor& t : s.header.tensors) {
      auto [it, inserted] = owner.emplace(t.name, &s);
      if (!inserted) {
        return BadInput(
            fmt::format("tensor '{}' is in both '{}' and '{}'", t.name, it->second->path, s.path));
      }
      uint64_t offset = store::AlignUp(total, store::kAlign);
      manifest.push_back({t.name, t.dtype, t.shape, offset, t.nbytes()});
      total = offset + t.nbytes();
      data_bytes += t.nbytes();
    }
    metadata_entries += s.header.metadata.size();
  }
  if (manifest.empty()) {
    return BadInput(fmt::format("'{}' holds no tensors; there is nothing to store", options.path));
  }
  if (absl::Status s = store::ValidateManifest(manifest, total); !s.ok()) {
    return BadInput(
        fmt::format("{}: cannot be stored as a tensor dict: {}", options.path, s.message()));
  }
  if (metadata_entries > 0) {
    std::fprintf(stderr,
                 "cistern: note: the __metadata__ of %s (%zu %s) was not stored; Cistern "
                 "objects have no metadata\n",
                 options.path.c_str(), metadata_entries,
                 metadata_entries == 1 ? "entry" : "entries");
  }

  auto c = ConnectTo(target);
  if (!c.ok()) return Fail(c.status());
  PutOptions put;
  put.evictable = options.evictable;
  put.if_absent = options.if_absent;
  auto w = (*c)->Create(options.key, total, put, manifest);
  if (!w.ok()) return Fail(w.status());

  Progress progress(json, data_bytes, shards.size());
  size_t i = 0;     // manifest[i] is the next tensor, in shard order
  uint64_t at = 0;  // zero the alignment padding, so the checksum is the same for the same files
  for (size_t k = 0; k < shards.size(); ++k) {
    progress.StartShard(k);
    for (const SafetensorsTensor& t : shards[k].header.tensors) {
      const TensorInfo& m = manifest[i++];
      std::memset(w->data() + at, 0, m.offset - at);
      if (absl::Status s = ReadInto(shards[k], t, w->data() + m.offset, &progress); !s.ok()) {
        progress.Finish();
        return Fail(s);  // the writer aborts
      }
      at = m.offset + m.nbytes;
    }
    progress.ShardDone(shards[k], k);
  }
  auto ref = w->Seal();
  progress.Finish();
  if (!ref.ok()) return Fail(ref.status());
  if (json) {
    PrintJson({{"key", options.key},
               {"generation", ref->generation},
               {"tensors", manifest.size()},
               {"bytes", ref->size},
               {"files", shards.size()}});
  } else {
    std::printf("loaded %s: generation %llu, %zu tensors, %llu bytes\n", options.key.c_str(),
                static_cast<unsigned long long>(ref->generation), manifest.size(),
                static_cast<unsigned long long>(ref->size));
  }
  return 0;
}

int Export(const Target& target, const std::string& key, const std::string& path, bool json) {
  if (absl::Status s = CheckOutputPath(path); !s.ok()) return UsageError(s);
  auto c = ConnectTo(target);
  if (!c.ok()) return Fail(c.status());
  auto v = (*c)->Get(key);
  if (!v.ok()) return Fail(v.status());
  if (v->tensors().empty()) {
    std::fprintf(stderr,
                 "cistern: '%s' is a raw-bytes object, not a tensor dict; only tensor dicts "
                 "(stored by `cistern load` or PutTensors) export as safetensors\n",
                 key.c_str());
    return 1;
  }
  std::vector<TensorInfo> tensors = v->tensors();
  std::stable_sort(tensors.begin(), tensors.end(),
                   [](const TensorInfo& a, const TensorInfo& b) { return a.offset < b.offset; });
  auto header = MakeSafetensorsHeader(tensors);
  if (!header.ok()) {
    std::fprintf(stderr, "cistern: cannot export '%s' as safetensors: %s\n", key.c_str(),
                 std::string(header.status().message()).c_str());
    return 1;
  }

  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    std::fprintf(stderr, "cistern: cannot write '%s': %s\n", tmp.c_str(), std::strerror(errno));
    return 2;
  }
  auto failed = [&](const char* what) {
    int err = errno;
    fd.Reset();
    ::unlink(tmp.c_str());
    std::fprintf(stderr, "cistern: %s '%s' failed: %s\n", what, tmp.c_str(), std::strerror(err));
    return 1;
  };
  if (!WriteAll(fd.get(), header->data(), header->size())) return failed("writing");
  uint64_t file_bytes = header->size();
  for (const TensorInfo& t : tensors) {
    // The daemon validated the manifest against the payload; a violation is a bug.
    if (t.offset > v->size() || t.nbytes > v->size() - t.offset) std::abort();
    if (!WriteAll(fd.get(), v->data() + t.offset, t.nbytes)) return failed("writing");
    file_bytes += t.nbytes;
  }
  if (::fsync(fd.get()) != 0) return failed("syncing");
  if (::close(fd.Release()) != 0) return failed("closing");
  if (::rename(tmp.c_str(), path.c_str()) != 0) return failed("renaming");
  if (json) {
    PrintJson({{"key", key},
               {"generation", v->generation()},
               {"tensors", tensors.size()},
               {"bytes", file_bytes},
               {"output", path}});
  } else {
    std::printf("exported %s (generation %llu): %zu tensors, %llu bytes to %s\n", key.c_str(),
                static_cast<unsigned long long>(v->generation()), tensors.size(),
                static_cast<unsigned long long>(file_bytes), path.c_str());
  }
  return 0;
}

void RegisterLoadCommands(CLI::App* app, const Target* target, const bool* json, int* rc) {
  auto load_options = std::make_shared<LoadOptions>();
  auto* load = app->add_subcommand(
      "load",
      "store a .safetensors file, or a directory of *.safetensors shards, as one "
      "tensor-dict object");
  load->add_option("PATH", load_options->path, "the file, or the directory of shards")->required();
  load->add_option("--key", load_options->key, "the key to store it as")->required();
  load->add_flag("--evictable", load_options->evictable, "may be evicted under memory pressure");
  load->add_flag("--if-absent", load_options->if_absent, "fail if KEY already has a value");
  load->callback([=] { *rc = Load(*target, *load_options, *json); });

  auto export_args = std::make_shared<std::pair<std::string, std::string>>();
  auto* exp = app->add_subcommand("export",
                                  "write the tensor-dict object KEY as a .safetensors "
                                  "file");
  exp->add_option("KEY", export_args->first, "the object")->required();
  exp->add_option("PATH", export_args->second, "the file to write (through PATH.tmp)")->required();
  exp->callback([=] { *rc = Export(*target, export_args->first, export_args->second, *json); });
}

}  // namespace cistern::cli

#include "include/cistern/client.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "fmt/format.h"
#include "src/client/connection.h"
#include "src/client/fast_path.h"
#include "src/common/fmt_absl.h"
#include "src/common/paths.h"
#include "src/common/status_macros.h"
#include "src/common/wire_duration.h"
#include "src/store/checksum.h"
#include "src/store/layout.h"
#include "src/store/manifest.h"

namespace cistern {

using client_internal::Connection;

std::string DefaultSocketPath() { return paths::DefaultRuntimeDir() + "/cisternd.sock"; }

std::string DiscoverSocket(std::string_view address) {
  if (!address.empty()) return std::string(address);
  // $CISTERN_SOCKET: the name this variable had before the CLI existed.
  for (const char* var : {"CISTERN_ADDRESS", "CISTERN_SOCKET"}) {
    if (const char* v = std::getenv(var); v && *v) return v;
  }
  if (std::string s = paths::CurrentSessionSocket(); !s.empty()) return s;
  return DefaultSocketPath();
}

std::vector<TensorInfo> LayoutTensors(const std::vector<TensorInput>& tensors, uint64_t* total) {
  std::vector<TensorInfo> out;
  uint64_t offset = 0;
  for (const TensorInput& t : tensors) {
    offset = store::AlignUp(offset, store::kAlign);
    out.push_back({t.name, t.dtype, t.shape, offset, t.data.size()});
    offset += t.data.size();
  }
  *total = offset;
  return out;
}

namespace {

// Puts of at least this many bytes map their block's pages in one call first.
constexpr uint64_t kPopulateAtLeast = 1 << 20;

// Puts of at most this many bytes travel inside their request (wire::Put):
// one round trip instead of create + seal. Larger ones go through the shared
// mapping, where the copy through the socket would cost more than the round
// trip it saves.
constexpr uint64_t kPutInOneRequestAtMost = 64 << 10;

// The write space a seal asks for: the blocks of the put just made, with room
// for a longer key or manifest, in 64 KiB steps (at most kMaxExtentBytes).
// A put that finds it big enough then takes one round trip (PutIntoExtent).
constexpr uint64_t kExtentSlack = 4096;
constexpr uint64_t kExtentStep = 64 << 10;

wire::Create MakeCreate(std::string_view key, uint64_t size, const PutOptions& o,
                        const std::vector<TensorInfo>& tensors) {
  wire::Create c;
  c.set_key(std::string(key));
  c.set_size(size);
  c.set_evictable(o.evictable);
  c.set_local_only(o.local_only);
  c.set_if_absent(o.if_absent);
  c.set_tier(o.tier);
  c.set_wait_ms(WaitToWireMs(o.wait));
  for (const TensorInfo& t : tensors) {
    auto* w = c.add_tensors();
    w->set_name(t.name);
    w->set_dtype(static_cast<wire::DType>(t.dtype));
    for (uint64_t d : t.shape) w->add_shape(d);
    w->set_offset(t.offset);
    w->set_nbytes(t.nbytes);
  }
  return c;
}

absl::Status StatusOf(const wire::Response& r) {
  if (!r.has_status() || r.status().code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(r.status().code()), r.status().message());
}

// Where a create reply says to write; DataLoss if it points outside the arena.
absl::StatusOr<std::byte*> PayloadOf(Connection& c, const wire::CreateReply& r) {
  if (r.tier() >= c.tier_count() || r.payload_offset() > c.tier_size(r.tier()) ||
      r.size() > c.tier_size(r.tier()) - r.payload_offset()) {
    return absl::DataLossError("cisternd returned an allocation outside the arena");
  }
  return reinterpret_cast<std::byte*>(c.tier_base(r.tier()) + r.payload_offset());
}

}  // namespace

// ---- ObjectView ----

ObjectView::~ObjectView() { Reset(); }
ObjectView::ObjectView(ObjectView&& o) noexcept { *this = std::move(o); }
ObjectView& ObjectView::operator=(ObjectView&& o) noexcept {
  if (this != &o) {
    Reset();
    conn_ = std::move(o.conn_);
    key_ = std::move(o.key_);
    generation_ = std::exchange(o.generation_, 0);
    lease_id_ = std::exchange(o.lease_id_, 0);
    fast_ = std::move(o.fast_);
    fast_slot_ = std::exchange(o.fast_slot_, 0);
    fast_header_ = std::exchange(o.fast_header_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    tensors_ = std::move(o.tensors_);
  }
  return *this;
}

void ObjectView::Reset() {
  if (conn_ && lease_id_) {
    wire::Request req;
    req.mutable_release()->set_lease_id(lease_id_);
    conn_->SendOneway(req);
  }
  if (fast_) {
    store::FastHit hit;
    hit.slot = fast_slot_;
    hit.header = static_cast<const store::ObjectHeader*>(fast_header_);
    if (fast_->Release(hit) && conn_) conn_->SendFastReleased();
    fast_.reset();
    fast_header_ = nullptr;
  }
  conn_.reset();
  lease_id_ = 0;
  data_ = nullptr;
  size_ = 0;
  tensors_.reset();
}

const std::vector<TensorInfo>& ObjectView::tensors() const {
  static const std::vector<TensorInfo> kNone;
  return tensors_ ? *tensors_ : kNone;
}

absl::Status ObjectView::Release() {
  if (fast_) {  // ends in shared memory; nothing to wait for
    Reset();
    return absl::OkStatus();
  }
  if (!conn_ || !lease_id_) return absl::FailedPreconditionError("view holds no lease");
  wire::Request req;
  req.mutable_release()->set_lease_id(lease_id_);
  auto resp = conn_->Call(req);
  lease_id_ = 0;
  Reset();
  return resp.status();
}

absl::StatusOr<std::span<const std::byte>> ObjectView::tensor(std::string_view name) const {
  for (const TensorInfo& t : tensors()) {
    if (t.name == name) return std::span<const std::byte>(data_ + t.offset, t.nbytes);
  }
  return absl::NotFoundError(fmt::format("object '{}' has no tensor '{}'", key_, name));
}

absl::StatusOr<PrivateBytes> ObjectView::MakePrivate() const {
  if (!valid()) return absl::FailedPreconditionError("the view holds no lease");
  PrivateBytes out;
  out.size_ = size_;
  if (size_ < PrivateBytes::kPrivateMapAtLeast) {
    // Aligned like a block, so that each tensor keeps its alignment.
    out.copy_ = std::aligned_alloc(store::kAlign,
                                   store::AlignUp(std::max<size_t>(size_, 1), store::kAlign));
    if (out.copy_ == nullptr) {
      return absl::ResourceExhaustedError(
          fmt::format("no memory for a private copy of the {} bytes of '{}'", size_, key_));
    }
    out.data_ = static_cast<std::byte*>(out.copy_);
    std::memcpy(out.data_, data_, size_);
    return out;
  }
  const char* at = reinterpret_cast<const char*>(data_);
  for (size_t i = 0; i < conn_->tier_count(); ++i) {
    const char* base = conn_->tier_read_base(static_cast<uint32_t>(i));
    if (at < base || at >= base + conn_->tier_size(static_cast<uint32_t>(i))) continue;
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t offset = static_cast<uint64_t>(at - base);
    const uint64_t map_offset = offset / page * page;
    const uint64_t map_bytes = store::AlignUp(offset + size_, page) - map_offset;
    // MAP_NORESERVE: the pages are the shared ones until written, so reserve
    // no swap for all of them up front (a 100 GiB model would be refused
    // under the default overcommit heuristic otherwise).
    void* p = ::mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
                     conn_->tier_fd(static_cast<uint32_t>(i)), static_cast<off_t>(map_offset));
    if (p == MAP_FAILED) {
      return absl::ResourceExhaustedError(
          fmt::format("cannot map a private copy-on-write view of the {} bytes of '{}': {}", size_,
                      key_, std::strerror(errno)));
    }
    out.map_ = p;
    out.map_bytes_ = map_bytes;
    out.data_ = static_cast<std::byte*>(p) + (offset - map_offset);
    return out;
  }
  return absl::InternalError(
      fmt::format("the view of '{}' lies outside every arena this client maps", key_));
}

// ---- PrivateBytes ----

PrivateBytes::~PrivateBytes() { Reset(); }
PrivateBytes::PrivateBytes(PrivateBytes&& o) noexcept { *this = std::move(o); }
PrivateBytes& PrivateBytes::operator=(PrivateBytes&& o) noexcept {
  if (this != &o) {
    Reset();
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    copy_ = std::exchange(o.copy_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void PrivateBytes::Reset() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  std::free(copy_);
  copy_ = nullptr;
  data_ = nullptr;
  size_ = 0;
}

// ---- Writer ----

Writer::~Writer() {
  if (conn_ && write_id_) (void)Abort();
  if (map_) ::munmap(map_, map_bytes_);
}
Writer::Writer(Writer&& o) noexcept { *this = std::move(o); }
Writer& Writer::operator=(Writer&& o) noexcept {
  if (this != &o) {
    if (conn_ && write_id_) (void)Abort();
    if (map_) ::munmap(map_, map_bytes_);
    conn_ = std::move(o.conn_);
    key_ = std::move(o.key_);
    write_id_ = std::exchange(o.write_id_, 0);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    checksum_ = o.checksum_;
    tensors_ = std::move(o.tensors_);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    map_offset_ = o.map_offset_;
    map_fd_ = o.map_fd_;
  }
  return *this;
}

void Writer::Detach() {
  if (map_ == nullptr) return;
  // Same address, same pages, now private: later stores stay in this process.
  void* p = ::mmap(map_, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, map_fd_,
                   static_cast<off_t>(map_offset_));
  if (p == MAP_FAILED) {
    // Cannot keep it readable: take the pages away instead (a later access
    // faults rather than reaching shared memory).
    (void)::mmap(map_, map_bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  }
}

absl::StatusOr<ObjectRef> Writer::Seal() {
  if (!conn_ || !write_id_) return absl::FailedPreconditionError("writer holds no pending write");
  wire::Request req;
  auto* seal = req.mutable_seal();
  seal->set_write_id(write_id_);
  if (checksum_) {
    seal->set_checksum(store::Checksum(data_, size_));
    seal->set_has_checksum(true);
  }
  Detach();
  auto sealed = conn_->Call(req, &wire::Response::mutable_seal);
  ObjectRef ref{key_, 0, size_};
  write_id_ = 0;
  conn_.reset();
  data_ = nullptr;
  if (!sealed.ok()) return sealed.status();
  ref.generation = sealed->generation();
  return ref;
}

absl::Status Writer::Abort() {
  if (!conn_ || !write_id_) return absl::FailedPreconditionError("writer holds no pending write");
  Detach();
  wire::Request req;
  req.mutable_abort()->set_write_id(write_id_);
  auto resp = conn_->Call(req);
  write_id_ = 0;
  conn_.reset();
  data_ = nullptr;
  return resp.status();
}

// ---- Client ----

Client::Client(std::shared_ptr<Connection> conn) : conn_(std::move(conn)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ConnectOptions& options) {
  auto conn = Connection::Open(options);
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<Client>(new Client(std::move(*conn)));
}

uint64_t Client::session_id() const { return conn_->session_id(); }
const std::string& Client::socket_path() const { return conn_->socket_path(); }

absl::StatusOr<Writer> Client::Create(std::string_view key, uint64_t size,
                                      const PutOptions& options,
                                      const std::vector<TensorInfo>& tensors) {
  return CreateWriter(key, size, options, tensors, /*own_mapping=*/true);
}

absl::StatusOr<Writer> Client::CreateWriter(std::string_view key, uint64_t size,
                                            const PutOptions& options,
                                            const std::vector<TensorInfo>& tensors,
                                            bool own_mapping) {
  wire::Request req;
  *req.mutable_create() = MakeCreate(key, size, options, tensors);
  auto created = conn_->Call(req, &wire::Response::mutable_create);
  if (!created.ok()) return created.status();
  Writer w;
  w.conn_ = conn_;
  w.key_ = std::string(key);
  w.write_id_ = created->write_id();
  w.size_ = created->size();
  w.checksum_ = options.checksum;
  auto data = PayloadOf(*conn_, *created);
  if (!data.ok()) return data.status();  // w aborts
  w.data_ = *data;
  if (!own_mapping && w.size_ >= kPopulateAtLeast) {
    conn_->PopulateForWrite(created->tier(), w.data_, w.size_);
  }
  if (own_mapping) {
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t at = created->payload_offset();
    w.map_offset_ = at / page * page;
    w.map_bytes_ = store::AlignUp(at + w.size_, page) - w.map_offset_;
    w.map_fd_ = conn_->tier_fd(created->tier());
    // MAP_POPULATE: one call maps every page, where the caller's first write
    // would otherwise take a page fault per 4 KiB (costly on virtual machines).
    void* p = ::mmap(nullptr, w.map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                     w.map_fd_, static_cast<off_t>(w.map_offset_));
    if (p == MAP_FAILED) {
      w.map_bytes_ = 0;
      return absl::ResourceExhaustedError(fmt::format(
          "cannot map the {} bytes of '{}' for writing: {}", w.size_, key, std::strerror(errno)));
    }
    w.map_ = p;
    w.data_ = static_cast<std::byte*>(p) + (at - w.map_offset_);
  }
  return w;
}

absl::StatusOr<Writer> Client::CreateTensors(std::string_view key,
                                             const std::vector<TensorSpec>& tensors,
                                             const PutOptions& options) {
  std::vector<TensorInfo> manifest;
  manifest.reserve(tensors.size());
  uint64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    const uint64_t item = DTypeSize(t.dtype);
    if (item == 0) {
      return absl::InvalidArgumentError(fmt::format("tensor '{}' of '{}' has no valid dtype ({})",
                                                    t.name, key, static_cast<int>(t.dtype)));
    }
    uint64_t nbytes = item;
    bool overflow = false;
    for (uint64_t d : t.shape) overflow |= __builtin_mul_overflow(nbytes, d, &nbytes);
    if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) {
      nbytes = 0;  // an empty tensor, whatever its other dimensions
      overflow = false;
    }
    offset = store::AlignUp(offset, store::kAlign);
    constexpr uint64_t kTooLarge = uint64_t{1} << 62;  // no arena is near it
    if (overflow || nbytes >= kTooLarge || offset + nbytes >= kTooLarge) {
      return absl::InvalidArgumentError(
          fmt::format("tensor '{}' of '{}' is too large: its shape makes {} bytes", t.name, key,
                      overflow ? std::string("more than 2^64") : std::to_string(nbytes)));
    }
    offset += nbytes;
    manifest.push_back({t.name, t.dtype, t.shape, offset - nbytes, nbytes});
  }
  auto w = Create(key, offset, options, manifest);
  if (!w.ok()) return w.status();
  uint64_t at = 0;
  for (const TensorInfo& t : manifest) {
    std::memset(w->data_ + at, 0, t.offset - at);  // alignment padding: no stale bytes
    at = t.offset + t.nbytes;
  }
  w->tensors_ = std::move(manifest);
  return w;
}

absl::StatusOr<ObjectRef> Client::PutInOneRequest(std::string_view key, std::string data,
                                                  const std::vector<TensorInfo>& tensors,
                                                  const PutOptions& options) {
  const uint64_t size = data.size();
  wire::Request req;
  auto* put = req.mutable_put();
  *put->mutable_create() = MakeCreate(key, size, options, tensors);
  if (options.checksum) {
    put->set_checksum(store::Checksum(data.data(), size));
    put->set_has_checksum(true);
  }
  put->set_data(std::move(data));
  auto r = conn_->Call(req, &wire::Response::mutable_seal);
  if (!r.ok()) return r.status();
  if (options.wait_published.count() > 0) {
    RETURN_IF_ERROR(WaitPublished(key, r->generation(), options.wait_published));
  }
  return ObjectRef{std::string(key), r->generation(), size};
}

absl::StatusOr<ObjectRef> Client::Put(std::string_view key, std::span<const std::byte> value,
                                      const PutOptions& options) {
  if (value.size() <= kPutInOneRequestAtMost && conn_->put_in_one_request()) {
    return PutInOneRequest(
        key, std::string(reinterpret_cast<const char*>(value.data()), value.size()), {}, options);
  }
  static const std::vector<TensorInfo> kRaw;
  auto fill = [&](std::byte* dst) -> std::optional<uint64_t> {
    if (options.checksum) return store::CopyAndChecksum(dst, value.data(), value.size());
    store::Copy(dst, value.data(), value.size());
    return std::nullopt;
  };
  if (auto in_extent = PutIntoExtent({{key, &kRaw, value.size(), fill}}, options)) {
    absl::StatusOr<ObjectRef>& r = (*in_extent)[0];
    if (r.ok() && options.wait_published.count() > 0) {
      RETURN_IF_ERROR(WaitPublished(key, r->generation, options.wait_published));
    }
    return std::move(r);
  }
  auto w = CreateWriter(key, value.size(), options, {}, /*own_mapping=*/false);
  if (!w.ok()) return w.status();
  wire::Request req;
  auto* seal = req.mutable_seal();
  seal->set_write_id(w->write_id_);
  if (std::optional<uint64_t> sum = fill(w->data_)) {
    seal->set_checksum(*sum);
    seal->set_has_checksum(true);
  }
  seal->set_reserve_extent(ExtentToAsk(store::BlockBytes(key.size(), 0, value.size())));
  w->write_id_ = 0;  // the seal below settles it either way
  auto r = conn_->Call(req, &wire::Response::mutable_seal);
  if (!r.ok()) return r.status();
  conn_->KeepExtent(r->extent());
  if (options.wait_published.count() > 0) {
    RETURN_IF_ERROR(WaitPublished(key, r->generation(), options.wait_published));
  }
  return ObjectRef{std::string(key), r->generation(), value.size()};
}

uint64_t Client::ExtentToAsk(uint64_t need) const {
  if (!conn_->reserve_extents() || conn_->extent_idle()) return 0;
  if (need > store::kMaxExtentBytes) return 0;  // two round trips are little next to the copy
  return std::min(store::kMaxExtentBytes, store::AlignUp(need + kExtentSlack, kExtentStep));
}

std::optional<std::vector<absl::StatusOr<ObjectRef>>> Client::PutIntoExtent(
    const std::vector<ExtentPutItem>& items, const PutOptions& options) {
  if (!conn_->reserve_extents() || items.empty()) return std::nullopt;
  // Where each payload goes: blocks packed from the extent's start (wire::PutExtent).
  std::vector<uint64_t> at(items.size());
  uint64_t need = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const ExtentPutItem& item = items[i];
    if (item.size == 0 || item.key.empty() || item.key.size() > store::kMaxKeyBytes) {
      return std::nullopt;  // the daemon's create explains it
    }
    const uint64_t manifest =
        item.tensors->empty() ? 0 : store::EncodedManifestBytes(*item.tensors);
    at[i] = need + store::PayloadOffset(item.key.size(), manifest);
    need += store::BlockBytes(item.key.size(), manifest, item.size);
    if (need > store::kMaxExtentBytes) return std::nullopt;
  }
  std::optional<client_internal::Connection::Extent> e = conn_->TakeExtent(need);
  if (!e) return std::nullopt;
  std::byte* base = reinterpret_cast<std::byte*>(conn_->tier_base(e->tier)) + e->block_offset;
  wire::Request req;
  auto* put = req.mutable_put_extent();
  put->set_extent_id(e->id);
  for (size_t i = 0; i < items.size(); ++i) {
    const ExtentPutItem& item = items[i];
    if (item.size >= kPopulateAtLeast) conn_->PopulateForWrite(e->tier, base + at[i], item.size);
    std::optional<uint64_t> sum = item.fill(base + at[i]);
    auto* one = put->add_items();
    *one->mutable_create() = MakeCreate(item.key, item.size, options, *item.tensors);
    if (sum) {
      one->set_checksum(*sum);
      one->set_has_checksum(true);
    }
  }
  // Ask for the next extent now: the session holds none once this one is used.
  put->set_reserve_extent(
      std::min(store::kMaxExtentBytes, store::AlignUp(std::max(need, e->bytes), kExtentStep)));
  auto resp = conn_->Call(req);
  if (!resp.ok()) {
    // Aborted: the daemon restarted and dropped the extent; nothing was
    // stored. Any other error for the whole request leaves the extent with
    // the daemon; this client will not write there again, so let it go.
    if (resp.status().code() == absl::StatusCode::kAborted) return std::nullopt;
    wire::Request abort;
    abort.mutable_abort()->set_write_id(e->id);
    conn_->SendOneway(abort);
    return std::vector<absl::StatusOr<ObjectRef>>(items.size(), resp.status());
  }
  const wire::BatchSealReply& sealed = resp->batch_seal();
  conn_->KeepExtent(sealed.extent());
  std::vector<absl::StatusOr<ObjectRef>> out;
  out.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    if (i >= static_cast<size_t>(sealed.results_size())) {
      out.push_back(absl::InternalError("batch answer has the wrong length"));
      continue;
    }
    const wire::Response& r = sealed.results(i);
    if (absl::Status s = StatusOf(r); !s.ok()) {
      out.push_back(s);
    } else {
      out.push_back(ObjectRef{std::string(items[i].key), r.seal().generation(), items[i].size});
    }
  }
  return out;
}

absl::Status Client::WaitPublished(std::string_view key, uint64_t generation,
                                   std::chrono::milliseconds timeout) {
  wire::Request req;
  auto* w = req.mutable_wait_published();
  w->set_key(std::string(key));
  w->set_generation(generation);
  w->set_wait_ms(WaitToWireMs(timeout));
  return conn_->Call(req).status();
}

absl::StatusOr<ObjectRef> Client::PutTensors(std::string_view key,
                                             const std::vector<TensorInput>& tensors,
                                             const PutOptions& options) {
  uint64_t total = 0;
  std::vector<TensorInfo> manifest = LayoutTensors(tensors, &total);
  if (total <= kPutInOneRequestAtMost && conn_->put_in_one_request()) {
    std::string data(total, '\0');  // the padding stays zero
    for (size_t i = 0; i < tensors.size(); ++i) {
      store::Copy(data.data() + manifest[i].offset, tensors[i].data.data(), manifest[i].nbytes);
    }
    return PutInOneRequest(key, std::move(data), manifest, options);
  }
  auto fill = [&](std::byte* dst) -> std::optional<uint64_t> {
    uint64_t at = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      std::memset(dst + at, 0, manifest[i].offset - at);  // alignment padding
      store::Copy(dst + manifest[i].offset, tensors[i].data.data(), manifest[i].nbytes);
      at = manifest[i].offset + manifest[i].nbytes;
    }
    if (options.checksum) return store::Checksum(dst, total);
    return std::nullopt;
  };
  if (total > 0) {
    if (auto in_extent = PutIntoExtent({{key, &manifest, total, fill}}, options)) {
      absl::StatusOr<ObjectRef>& r = (*in_extent)[0];
      if (r.ok() && options.wait_published.count() > 0) {
        RETURN_IF_ERROR(WaitPublished(key, r->generation, options.wait_published));
      }
      return std::move(r);
    }
  }
  auto w = CreateWriter(key, total, options, manifest, /*own_mapping=*/false);
  if (!w.ok()) return w.status();
  wire::Request req;
  auto* seal = req.mutable_seal();
  seal->set_write_id(w->write_id_);
  if (std::optional<uint64_t> sum = fill(w->data_)) {
    seal->set_checksum(*sum);
    seal->set_has_checksum(true);
  }
  seal->set_reserve_extent(
      ExtentToAsk(store::BlockBytes(key.size(), store::EncodedManifestBytes(manifest), total)));
  w->write_id_ = 0;
  auto r = conn_->Call(req, &wire::Response::mutable_seal);
  if (!r.ok()) return r.status();
  conn_->KeepExtent(r->extent());
  if (options.wait_published.count() > 0) {
    RETURN_IF_ERROR(WaitPublished(key, r->generation(), options.wait_published));
  }
  return ObjectRef{std::string(key), r->generation(), total};
}

absl::StatusOr<ObjectView> Client::MakeView(std::string_view key, const void* get_reply) {
  const auto& r = *static_cast<const wire::GetReply*>(get_reply);
  ObjectView v;
  v.conn_ = conn_;
  v.key_ = std::string(key);
  v.generation_ = r.generation();
  v.lease_id_ = r.lease_id();
  uint64_t arena = r.tier() < conn_->tier_count() ? conn_->tier_size(r.tier()) : 0;
  if (r.payload_offset() > arena || r.size() > arena - r.payload_offset() ||
      r.block_offset() + sizeof(store::ObjectHeader) > r.payload_offset()) {
    return absl::DataLossError("cisternd returned a lease outside the arena");  // v releases
  }
  const char* base = conn_->tier_read_base(r.tier());
  v.data_ = reinterpret_cast<const std::byte*>(base + r.payload_offset());
  v.size_ = r.size();
  const auto* h = reinterpret_cast<const store::ObjectHeader*>(base + r.block_offset());
  if (h->flags & store::kFlagTensorDict) {
    uint64_t m = r.block_offset() + store::ManifestOffset(h->key_bytes);
    if (m + h->manifest_bytes > r.payload_offset()) {
      return absl::DataLossError(fmt::format("manifest of '{}' is malformed", key));
    }
    auto tensors =
        store::DecodeManifest(std::string_view(base + m, h->manifest_bytes), h->tensor_count);
    if (!tensors.ok()) return tensors.status();
    v.tensors_ = std::make_shared<const std::vector<TensorInfo>>(std::move(*tensors));
  }
  return v;
}

absl::StatusOr<ObjectView> Client::Get(std::string_view key, uint64_t generation) {
  return Get(key, GetOptions{.generation = generation});
}

std::optional<ObjectView> Client::FastGet(std::string_view key, uint64_t generation) {
  std::shared_ptr<client_internal::FastPath> fast = conn_->fast();
  if (!fast) return std::nullopt;
  store::FastHit hit;
  if (!fast->Acquire(key, generation, &hit)) return std::nullopt;
  ObjectView v;
  v.conn_ = conn_;
  v.fast_ = std::move(fast);
  v.fast_slot_ = hit.slot;
  v.fast_header_ = hit.header;
  v.key_ = std::string(key);
  v.generation_ = hit.generation;
  // Acquire checked the header against the block's bounds; while the lease
  // lives the object stays sealed, so its words no longer change.
  const store::ObjectHeader* h = hit.header;
  const char* block = reinterpret_cast<const char*>(h);
  v.data_ = reinterpret_cast<const std::byte*>(block + h->payload_offset);
  v.size_ = h->payload_size;
  if (h->flags & store::kFlagTensorDict) {
    v.tensors_ = v.fast_->Manifest(hit);
    if (!v.tensors_) return std::nullopt;  // v ends the lease; the socket path reports it
  }
  return v;
}

absl::StatusOr<ObjectView> Client::Get(std::string_view key, const GetOptions& options) {
  if (auto v = FastGet(key, options.generation)) return std::move(*v);
  wire::Request req;
  wire::Get* g = req.mutable_get();
  g->set_key(std::string(key));
  g->set_generation(options.generation);
  g->set_local_only(options.local_only);
  g->set_wait_ms(WaitToWireMs(options.deadline));
  g->set_prefer_host(options.prefer_host);
  auto r = conn_->Call(req, &wire::Response::mutable_get);
  if (!r.ok()) return r.status();
  return MakeView(key, &*r);
}

absl::StatusOr<uint32_t> Client::Prefetch(const std::vector<std::string>& keys) {
  wire::Request req;
  for (const std::string& k : keys) req.mutable_prefetch()->add_keys(k);
  auto r = conn_->Call(req, &wire::Response::mutable_prefetch);
  if (!r.ok()) return r.status();
  return r->started();
}

absl::Status ReplicateResult::status() const {
  for (const Target& t : targets) {
    if (!t.status.ok()) {
      return absl::Status(t.status.code(),
                          fmt::format("host '{}': {}", t.host_id, t.status.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ReplicateResult> Client::Replicate(std::string_view key,
                                                  const ReplicateOptions& options) {
  wire::Request req;
  wire::Replicate* r = req.mutable_replicate();
  r->set_key(std::string(key));
  r->set_generation(options.generation);
  for (const std::string& h : options.to) r->add_to(h);
  r->set_all(options.all);
  r->set_fanout(options.fanout);
  r->set_wait_ms(WaitToWireMs(options.deadline));
  auto got = conn_->Call(req, &wire::Response::mutable_replicate);
  if (!got.ok()) return got.status();
  ReplicateResult out;
  out.key = got->key();
  out.generation = got->generation();
  for (const wire::ReplicateTarget& t : got->targets()) {
    ReplicateResult::Target o;
    o.host_id = t.host_id();
    o.status = absl::Status(static_cast<absl::StatusCode>(t.code()), t.message());
    o.already_held = t.already_held();
    o.upstream = t.upstream();
    for (const auto& s : t.sources()) o.sources[s.host_id()] = s.bytes();
    out.targets.push_back(std::move(o));
  }
  for (const auto& s : got->sent()) out.bytes_sent[s.host_id()] = s.bytes();
  return out;
}

absl::StatusOr<uint64_t> Client::Remove(std::string_view key, uint64_t generation) {
  wire::Request req;
  req.mutable_remove()->set_key(std::string(key));
  req.mutable_remove()->set_generation(generation);
  auto r = conn_->Call(req, &wire::Response::mutable_remove);
  if (!r.ok()) return r.status();
  return r->generation();
}

absl::StatusOr<ObjectInfo> Client::Stat(std::string_view key) {
  wire::Request req;
  req.mutable_stat()->set_key(std::string(key));
  return conn_->Call(req, &wire::Response::mutable_stat);
}

absl::StatusOr<ListResult> Client::List(std::string_view prefix, uint32_t limit,
                                        std::string_view cursor) {
  wire::Request req;
  req.mutable_list()->set_prefix(std::string(prefix));
  req.mutable_list()->set_limit(limit);
  req.mutable_list()->set_cursor(std::string(cursor));
  return conn_->Call(req, &wire::Response::mutable_list);
}

absl::StatusOr<DaemonStats> Client::Stats() {
  wire::Request req;
  req.mutable_stats();
  return conn_->Call(req, &wire::Response::mutable_stats);
}

absl::StatusOr<DaemonStatus> Client::Status() {
  wire::Request req;
  req.mutable_daemon_status();
  return conn_->Call(req, &wire::Response::mutable_daemon_status);
}

absl::StatusOr<std::vector<QuarantinedObjectInfo>> Client::Quarantined() {
  wire::Request req;
  req.mutable_quarantine_list();
  auto r = conn_->Call(req, &wire::Response::mutable_quarantine_list);
  if (!r.ok()) return r.status();
  return std::vector<QuarantinedObjectInfo>(std::make_move_iterator(r->mutable_objects()->begin()),
                                            std::make_move_iterator(r->mutable_objects()->end()));
}

absl::Status Client::RemoveQuarantined(std::string_view tier, uint64_t block_offset) {
  wire::Request req;
  req.mutable_quarantine_remove()->set_tier(std::string(tier));
  req.mutable_quarantine_remove()->set_block_offset(block_offset);
  return conn_->Call(req).status();
}

std::vector<absl::StatusOr<ObjectView>> Client::GetMany(const std::vector<std::string>& keys) {
  // What the fast path serves needs no message; the rest go in one batch.
  std::vector<absl::StatusOr<ObjectView>> out;
  out.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) out.emplace_back(absl::UnknownError("not attempted"));
  std::vector<size_t> asked;
  wire::Request req;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (auto v = FastGet(keys[i], 0)) {
      out[i] = std::move(*v);
    } else {
      req.mutable_batch_get()->add_gets()->set_key(keys[i]);
      asked.push_back(i);
    }
  }
  if (asked.empty()) return out;
  auto resp = conn_->Call(req);
  if (!resp.ok() || resp->batch_get().results_size() != static_cast<int>(asked.size())) {
    absl::Status s =
        resp.ok() ? absl::InternalError("batch answer has the wrong length") : resp.status();
    for (size_t i : asked) out[i] = s;
    return out;
  }
  for (size_t j = 0; j < asked.size(); ++j) {
    const wire::Response& r = resp->batch_get().results(j);
    absl::Status s = StatusOf(r);
    out[asked[j]] = s.ok() ? MakeView(keys[asked[j]], &r.get()) : s;
  }
  return out;
}

absl::Status Client::ReleaseMany(std::vector<ObjectView>& views) {
  wire::Request req;
  for (ObjectView& v : views) {
    if (v.conn_ == conn_ && v.lease_id_) {
      req.mutable_batch_release()->add_lease_ids(v.lease_id_);
      v.lease_id_ = 0;
    }
    v.Reset();
  }
  if (req.batch_release().lease_ids_size() == 0) return absl::OkStatus();
  return conn_->Call(req).status();
}

std::vector<absl::StatusOr<ObjectRef>> Client::PutMany(
    const std::vector<std::pair<std::string, std::span<const std::byte>>>& items,
    const PutOptions& options) {
  static const std::vector<TensorInfo> kRaw;
  std::vector<ExtentPutItem> packed;
  packed.reserve(items.size());
  uint64_t need = 0;
  for (const auto& item : items) {
    std::span<const std::byte> value = item.second;
    packed.push_back({item.first, &kRaw, value.size(), [&options, value](std::byte* dst) {
                        std::optional<uint64_t> sum;
                        if (options.checksum) {
                          sum = store::CopyAndChecksum(dst, value.data(), value.size());
                        } else {
                          store::Copy(dst, value.data(), value.size());
                        }
                        return sum;
                      }});
    need += store::BlockBytes(item.first.size(), 0, value.size());
  }
  if (auto in_extent = PutIntoExtent(packed, options)) return std::move(*in_extent);
  std::vector<absl::StatusOr<ObjectRef>> out(items.size(), absl::UnknownError("not attempted"));
  wire::Request creq;
  for (const auto& [key, value] : items) {
    *creq.mutable_batch_create()->add_creates() = MakeCreate(key, value.size(), options, {});
  }
  auto created = conn_->Call(creq);
  if (!created.ok() || created->batch_create().results_size() != static_cast<int>(items.size())) {
    absl::Status s =
        created.ok() ? absl::InternalError("batch answer has the wrong length") : created.status();
    for (auto& o : out) o = s;
    return out;
  }
  wire::Request sreq;
  std::vector<size_t> sealed_index;
  for (size_t i = 0; i < items.size(); ++i) {
    const wire::Response& r = created->batch_create().results(i);
    if (absl::Status s = StatusOf(r); !s.ok()) {
      out[i] = s;
      continue;
    }
    auto data = PayloadOf(*conn_, r.create());
    if (!data.ok()) {
      out[i] = data.status();  // the write stays pending until the session ends
      continue;
    }
    auto* seal = sreq.mutable_batch_seal()->add_seals();
    seal->set_write_id(r.create().write_id());
    const auto& value = items[i].second;
    if (options.checksum) {
      seal->set_checksum(store::CopyAndChecksum(*data, value.data(), value.size()));
      seal->set_has_checksum(true);
    } else {
      std::memcpy(*data, value.data(), value.size());
    }
    sealed_index.push_back(i);
  }
  if (sealed_index.empty()) return out;
  sreq.mutable_batch_seal()->set_reserve_extent(ExtentToAsk(need));
  auto sealed = conn_->Call(sreq);
  if (sealed.ok()) conn_->KeepExtent(sealed->batch_seal().extent());
  for (size_t j = 0; j < sealed_index.size(); ++j) {
    size_t i = sealed_index[j];
    if (!sealed.ok()) {
      out[i] = sealed.status();
      continue;
    }
    const wire::Response& r = sealed->batch_seal().results(j);
    if (absl::Status s = StatusOf(r); !s.ok()) {
      out[i] = s;
    } else {
      out[i] = ObjectRef{items[i].first, r.seal().generation(), items[i].second.size()};
    }
  }
  return out;
}

}  // namespace cistern

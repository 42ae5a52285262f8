// The C++ client API against a real cisternd.
#include "include/cistern/client.h"

#include <cstring>
#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/client/connection.h"
#include "src/store/checksum.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/raw_connection.h"

namespace cistern::testing {
namespace {

using ::testing::HasSubstr;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    ASSERT_TRUE(daemon_.Start({}, &err)) << err;
    auto c = daemon_.Connect();
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }
  uint64_t Used() { return client_->Stats()->tiers(0).used_bytes(); }
  // cistern_requests_total of `verb`, from the daemon's /metrics.
  double scrape(std::string_view verb) {
    auto r = HttpGet(daemon_.metrics_port(), "/metrics");
    std::string line = fmt::format("cistern_requests_total{{verb=\"{}\"}} ", verb);
    size_t at = r.body.find(line);
    return at == std::string::npos ? 0.0 : std::stod(r.body.substr(at + line.size()));
  }
  // Less the write space the session holds reserved for its next put.
  uint64_t UsedByObjects() {
    auto st = client_->Stats();
    return st->tiers(0).used_bytes() - st->reserved_bytes();
  }

  Daemon daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, PutGetRoundTripIsZeroCopyIntoTheArena) {
  auto ref = client_->Put("hello", "world");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto v = client_->Get("hello");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(v->data()), v->size()), "world");
  EXPECT_EQ(v->generation(), ref->generation);
  // A second process-local view of the same object points at the same bytes.
  auto w = client_->Get("hello");
  EXPECT_EQ(v->data(), w->data());
}

TEST_F(ClientTest, TensorDictKeepsItsManifest) {
  std::vector<float> w(12);
  for (size_t i = 0; i < w.size(); ++i) w[i] = i * 0.5f;
  std::vector<int64_t> b = {7, 8, 9};
  std::vector<TensorInput> in = {
      {"layer.weight", DType::kFloat32, {3, 4}, std::as_bytes(std::span(w))},
      {"layer.bias", DType::kInt64, {3}, std::as_bytes(std::span(b))}};
  auto ref = client_->PutTensors("sd", in);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto v = client_->Get("sd");
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->tensors().size(), 2u);
  EXPECT_EQ(v->tensors()[0].name, "layer.weight");
  EXPECT_EQ(v->tensors()[0].shape, (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(v->tensors()[1].offset % 64, 0u);
  auto bias = v->tensor("layer.bias");
  ASSERT_TRUE(bias.ok());
  EXPECT_EQ(std::memcmp(bias->data(), b.data(), 24), 0);
  EXPECT_EQ(v->tensor("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Stat("sd")->tensors(), 2u);
}

// Fast-path gets of a tensor dict share one decoded manifest per (block,
// generation); a new generation in the same block is decoded afresh, never
// served from the cache of the one before.
TEST_F(ClientTest, ADecodedManifestIsSharedWithinAGenerationAndNeverOutlivesIt) {
  std::vector<float> w(16, 1.0f);
  auto put = [&](const std::vector<std::string>& names) {
    std::vector<TensorInput> in;
    for (const std::string& n : names) {
      in.push_back({n, DType::kFloat32, {4, 4}, std::as_bytes(std::span(w))});
    }
    return client_->PutTensors("cached", in);
  };
  // Names of one length: every generation's manifest has the same size, so
  // one that lands in the same block has its payload at the same address.
  ASSERT_TRUE(put({"a0", "b0"}).ok());
  const void* first_payload = nullptr;
  {
    auto v1 = client_->Get("cached");
    auto v2 = client_->Get("cached");
    ASSERT_TRUE(v1.ok() && v2.ok());
    ASSERT_EQ(v1->tensors().size(), 2u);
    EXPECT_EQ(&v1->tensors(), &v2->tensors()) << "each fast get decoded its own manifest";
    EXPECT_EQ(v1->tensors()[1].name, "b0");
    first_payload = v1->data();
  }
  // Overwrite and remove until a new generation lands in the block the first
  // one used (the allocator hands the freed block out again).
  bool reused = false;
  for (int i = 0; i < 8 && !reused; ++i) {
    ASSERT_TRUE(client_->Remove("cached").ok());
    ASSERT_TRUE(put({"x" + std::to_string(i), "y" + std::to_string(i)}).ok());
    auto v = client_->Get("cached");
    ASSERT_TRUE(v.ok());
    ASSERT_EQ(v->tensors().size(), 2u);
    EXPECT_EQ(v->tensors()[0].name, "x" + std::to_string(i));
    reused = v->data() == first_payload;
  }
  EXPECT_TRUE(reused) << "no later generation reused the first one's block; the test proves less";
}

TEST_F(ClientTest, WriterFillsInPlaceAndAbortsWhenDropped) {
  uint64_t baseline = Used();
  {
    auto w = client_->Create("dropped", 1 << 20);
    ASSERT_TRUE(w.ok());
    std::memset(w->data(), 1, w->size());
  }
  EXPECT_EQ(client_->Get("dropped").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Used(), baseline);
  auto w = client_->Create("kept", 4096);
  ASSERT_TRUE(w.ok());
  std::memset(w->data(), 'k', w->size());
  auto ref = w->Seal();
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_TRUE(client_->Stat("kept")->has_checksum());
  EXPECT_EQ(w->Seal().status().code(), absl::StatusCode::kFailedPrecondition);
}

// A private version takes writes that no one else sees: not the view it came
// from, not a later get, not another connection. Small objects are copied,
// larger ones mapped copy-on-write (the size below ends mid-page and the
// object need not start on a page boundary).
TEST_F(ClientTest, PrivateBytesTakeWritesThatNoOtherReaderSees) {
  auto other = daemon_.Connect();
  ASSERT_TRUE(other.ok()) << other.status();
  for (size_t size : {size_t{4096}, size_t{3 << 20} + 17}) {
    SCOPED_TRACE(size);
    std::string value(size, '\0');
    for (size_t i = 0; i < size; ++i) value[i] = static_cast<char>(i * 7 + 1);
    ASSERT_TRUE(client_->Put("p", value).ok());
    auto v = client_->Get("p");
    ASSERT_TRUE(v.ok()) << v.status();
    auto mine = v->MakePrivate();
    ASSERT_TRUE(mine.ok()) << mine.status();
    EXPECT_EQ(mine->mapped(), size >= PrivateBytes::kPrivateMapAtLeast);
    ASSERT_EQ(mine->size(), size);
    // Tensors keep their alignment (blocks start on 64 bytes).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(mine->data()) % 64,
              reinterpret_cast<uintptr_t>(v->data()) % 64);
    ASSERT_EQ(std::memcmp(mine->data(), value.data(), size), 0);
    std::memset(mine->data(), 'x', size);
    EXPECT_EQ(std::memcmp(v->data(), value.data(), size), 0);
    auto again = client_->Get("p");
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(std::memcmp(again->data(), value.data(), size), 0);
    auto theirs = (*other)->Get("p");
    ASSERT_TRUE(theirs.ok());
    EXPECT_EQ(std::memcmp(theirs->data(), value.data(), size), 0);
    EXPECT_EQ(mine->data()[size - 1], std::byte{'x'});
    // Moving it keeps the bytes; the moved-from one is empty.
    PrivateBytes moved = std::move(*mine);
    EXPECT_EQ(moved.data()[0], std::byte{'x'});
    EXPECT_EQ(mine->data(), nullptr);
  }
  ObjectView empty;
  EXPECT_EQ(empty.MakePrivate().status().code(), absl::StatusCode::kFailedPrecondition);
}

// A tensor dict filled in place reads back exactly like PutTensors would
// have stored it: same manifest, same bytes, padding zeroed even where the
// block held other bytes before.
TEST_F(ClientTest, CreateTensorsFillsATensorDictInPlace) {
  std::string junk(1 << 16, '\xee');
  ASSERT_TRUE(client_->Put("junk", junk).ok());
  ASSERT_TRUE(client_->Remove("junk").ok());  // its block is free again, bytes and all
  std::vector<TensorSpec> specs = {{"w", DType::kFloat32, {3, 5}},
                                   {"idx", DType::kInt64, {7}},
                                   {"empty", DType::kFloat16, {0, 9}}};
  auto w = client_->CreateTensors("td", specs);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->tensors().size(), 3u);
  std::vector<float> wv(15);
  std::vector<int64_t> iv(7);
  for (size_t i = 0; i < wv.size(); ++i) wv[i] = 0.25f * i;
  for (size_t i = 0; i < iv.size(); ++i) iv[i] = -int64_t(i);
  std::memcpy(w->data() + w->tensors()[0].offset, wv.data(), 60);
  std::memcpy(w->data() + w->tensors()[1].offset, iv.data(), 56);
  ASSERT_TRUE(w->Seal().ok());
  std::vector<TensorInput> same = {{"w", DType::kFloat32, {3, 5}, std::as_bytes(std::span(wv))},
                                   {"idx", DType::kInt64, {7}, std::as_bytes(std::span(iv))},
                                   {"empty", DType::kFloat16, {0, 9}, {}}};
  ASSERT_TRUE(client_->PutTensors("put", same).ok());
  auto a = client_->Get("td");
  auto b = client_->Get("put");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  EXPECT_EQ(std::memcmp(a->data(), b->data(), a->size()), 0);
  ASSERT_EQ(a->tensors().size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(a->tensors()[i].name, b->tensors()[i].name);
    EXPECT_EQ(a->tensors()[i].offset, b->tensors()[i].offset);
    EXPECT_EQ(a->tensors()[i].shape, b->tensors()[i].shape);
  }

  auto huge = client_->CreateTensors(
      "bad", {{"ok", DType::kUInt8, {4}}, {"big", DType::kFloat64, {1ull << 40, 1ull << 30}}});
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(huge.status().message(), HasSubstr("'big'"));
  auto bad = client_->CreateTensors("bad", {{"t", static_cast<DType>(99), {4}}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Get("bad").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Stats()->pending_writes(), 0u);
}

// Small puts travel in one request (wire::Put), larger ones through the
// shared mapping; either way the bytes, the manifest and the checksum come
// out the same. Counted through the daemon's per-verb metrics.
TEST_F(ClientTest, SmallPutsTakeOneRequestAndReadBackTheSame) {
  for (size_t size : {size_t{1}, size_t{4096}, size_t{64} << 10, (size_t{64} << 10) + 1}) {
    SCOPED_TRACE(size);
    const double puts = scrape("put"), creates = scrape("create");
    std::string value(size, '\0');
    for (size_t i = 0; i < size; ++i) value[i] = static_cast<char>(i * 13 + size);
    auto ref = client_->Put("small", value);
    ASSERT_TRUE(ref.ok()) << ref.status();
    const bool one = size <= (64 << 10);
    EXPECT_EQ(scrape("put"), puts + (one ? 1 : 0));
    EXPECT_EQ(scrape("create"), creates + (one ? 0 : 1));
    auto v = client_->Get("small");
    ASSERT_TRUE(v.ok());
    ASSERT_EQ(v->size(), size);
    EXPECT_EQ(std::memcmp(v->data(), value.data(), size), 0);
    auto info = client_->Stat("small");
    ASSERT_TRUE(info.ok());
    EXPECT_TRUE(info->has_checksum());
  }
  // A tensor dict in one request: padding zeroed, the same bytes as a
  // dict written in place.
  std::vector<float> w(5, 2.5f);
  std::vector<int16_t> b(3, -4);
  const double puts = scrape("put");
  ASSERT_TRUE(client_
                  ->PutTensors("td", {{"w", DType::kFloat32, {5}, std::as_bytes(std::span(w))},
                                      {"b", DType::kInt16, {3}, std::as_bytes(std::span(b))}})
                  .ok());
  EXPECT_EQ(scrape("put"), puts + 1);
  auto wr = client_->CreateTensors("td2", {{"w", DType::kFloat32, {5}}, {"b", DType::kInt16, {3}}});
  ASSERT_TRUE(wr.ok());
  std::memcpy(wr->data() + wr->tensors()[0].offset, w.data(), 20);
  std::memcpy(wr->data() + wr->tensors()[1].offset, b.data(), 6);
  ASSERT_TRUE(wr->Seal().ok());
  auto x = client_->Get("td"), y = client_->Get("td2");
  ASSERT_TRUE(x.ok() && y.ok());
  ASSERT_EQ(x->size(), y->size());
  EXPECT_EQ(std::memcmp(x->data(), y->data(), x->size()), 0);
  EXPECT_EQ(client_->Stat("td")->checksum(), client_->Stat("td2")->checksum());
  // The daemon takes at most 1 MiB in one request (the copy and the
  // checksum run on its event loop); a raw client sending more is refused.
  {
    RawConnection raw(daemon_.socket_path());
    raw.Hello();
    ASSERT_TRUE(raw.Receive());
    wire::Request req;
    req.set_id(7);
    req.mutable_put()->mutable_create()->set_key("too-big");
    req.mutable_put()->mutable_create()->set_size((1 << 20) + 1);
    req.mutable_put()->set_data(std::string((1 << 20) + 1, 'b'));
    raw.Send(req);
    auto r = raw.Receive();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(r->status().message(), HasSubstr("use create and seal"));
    EXPECT_EQ(client_->Get("too-big").status().code(), absl::StatusCode::kNotFound);
  }
  // if_absent and a held key refuse it as a create would, storing nothing.
  PutOptions once;
  once.if_absent = true;
  EXPECT_EQ(client_->Put("small", "again", once).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(client_->Stats()->pending_writes(), 0u);
}

// Puts over 64 KiB (and batches) take create + seal until the session holds
// reserved write space; from then on, one request each (issue 13, item 2).
TEST_F(ClientTest, LargerPutsTakeOneRequestOnceWriteSpaceIsReserved) {
  auto value_of = [](size_t size, int seed) {
    std::string v(size, '\0');
    for (size_t i = 0; i < size; ++i) v[i] = static_cast<char>(i * 31 + seed);
    return v;
  };
  auto check = [&](const std::string& key, const std::string& value) {
    auto v = client_->Get(key);
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_EQ(v->size(), value.size());
    EXPECT_EQ(std::memcmp(v->data(), value.data(), value.size()), 0);
    auto info = client_->Stat(key);
    ASSERT_TRUE(info.ok());
    ASSERT_TRUE(info->has_checksum());
    EXPECT_EQ(info->checksum(), store::Checksum(value.data(), value.size()));
  };
  // The first put of 1 MiB: create + seal, and the seal reserves space.
  std::string first = value_of(1 << 20, 1);
  ASSERT_TRUE(client_->Put("m0", first).ok());
  EXPECT_EQ(scrape("create"), 1);
  EXPECT_GE(client_->Stats()->reserved_bytes(), 1u << 20);
  check("m0", first);
  // Then one request per put, sizes up to what was reserved, each value intact.
  int n = 0;
  for (size_t size : {size_t{1} << 20, size_t{300000}, (size_t{64} << 10) + 1, size_t{1} << 20}) {
    SCOPED_TRACE(size);
    std::string value = value_of(size, ++n);
    std::string key = "m" + std::to_string(n);
    ASSERT_TRUE(client_->Put(key, value).ok());
    check(key, value);
  }
  EXPECT_EQ(scrape("create"), 1);
  EXPECT_EQ(scrape("put_extent"), 4);
  // A larger put does not fit: create + seal again, then a larger reservation.
  std::string big = value_of(3 << 20, 9);
  ASSERT_TRUE(client_->Put("big", big).ok());
  ASSERT_TRUE(client_->Put("big2", big).ok());
  EXPECT_EQ(scrape("create"), 2);
  EXPECT_EQ(scrape("put_extent"), 5);
  check("big", big);
  check("big2", big);
  // A tensor dict, its manifest and padding as PutTensors lays them out.
  std::vector<float> w(100000, 1.5f);
  std::vector<int16_t> b(3, -4);
  ASSERT_TRUE(client_
                  ->PutTensors("td", {{"w", DType::kFloat32, {100000}, std::as_bytes(std::span(w))},
                                      {"b", DType::kInt16, {3}, std::as_bytes(std::span(b))}})
                  .ok());
  EXPECT_EQ(scrape("put_extent"), 6);
  {
    auto td = client_->Get("td");
    ASSERT_TRUE(td.ok());
    ASSERT_EQ(td->tensors().size(), 2u);
    EXPECT_EQ(std::memcmp(td->data() + td->tensors()[0].offset, w.data(), 400000), 0);
    EXPECT_EQ(std::memcmp(td->data() + td->tensors()[1].offset, b.data(), 6), 0);
  }
  // A batch: one request, every object packed into the space.
  std::vector<std::string> values;
  std::vector<std::pair<std::string, std::span<const std::byte>>> items;
  for (int i = 0; i < 40; ++i) values.push_back(value_of(4096 + i, 100 + i));
  for (int i = 0; i < 40; ++i) {
    items.push_back({"b" + std::to_string(i), std::as_bytes(std::span(values[i]))});
  }
  const double creates = scrape("create"), batch_creates = scrape("batch_create");
  for (auto& r : client_->PutMany(items)) ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(scrape("put_extent"), 7);
  EXPECT_EQ(scrape("create"), creates);
  EXPECT_EQ(scrape("batch_create"), batch_creates);
  for (int i = 0; i < 40; ++i) check("b" + std::to_string(i), values[i]);
  // if_absent refuses through the space as a create would, storing nothing.
  PutOptions once;
  once.if_absent = true;
  EXPECT_EQ(client_->Put("m1", value_of(200000, 5), once).status().code(),
            absl::StatusCode::kAlreadyExists);
  check("m1", value_of(1 << 20, 1));
  EXPECT_EQ(client_->Stats()->pending_writes(), 0u);
  // The session ending gives the space back.
  const uint64_t reserved = client_->Stats()->reserved_bytes();
  EXPECT_GT(reserved, 0u);
  auto other = daemon_.Connect();
  ASSERT_TRUE(other.ok());
  const uint64_t used = (*other)->Stats()->tiers(0).used_bytes();
  client_.reset();
  for (int i = 0; i < 200 && (*other)->Stats()->reserved_bytes() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ((*other)->Stats()->reserved_bytes(), 0u);
  EXPECT_EQ((*other)->Stats()->tiers(0).used_bytes(), used - reserved);
}

// The daemon restarts while the session holds reserved write space: the
// space survives (the client might have been writing there), the next put
// into it is refused by the new daemon, and the client puts the long way.
TEST_F(ClientTest, APutIntoSpaceReservedBeforeARestartIsStoredTheLongWay) {
  std::string v1(1 << 20, 'a'), v2(1 << 20, 'b');
  ASSERT_TRUE(client_->Put("k1", v1).ok());
  ASSERT_GT(client_->Stats()->reserved_bytes(), 0u);
  std::string err;
  ASSERT_TRUE(daemon_.Restart(&err)) << err;
  auto ref = client_->Put("k2", v2);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto v = client_->Get("k2");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(v->data()), v->size()), v2);
  EXPECT_EQ(client_->Stats()->pending_writes(), 0u);
  // Later puts go through the new reservation.
  ASSERT_TRUE(client_->Put("k3", v1).ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(client_->Get("k3")->data()), 1 << 20), v1);
}

// Puts of 1 MiB or more map their pages first (madvise MADV_POPULATE_WRITE);
// on pages already mapped that cost more than the copy, on every put.
// Each page is now populated once per connection.
TEST_F(ClientTest, RepeatedLargePutsPopulateTheirPagesOnce) {
  std::string value(2 << 20, 'p');
  const uint64_t before = client_internal::Connection::PopulateCallsForTest();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(client_->Put("k", value).ok());
    ASSERT_TRUE(client_->Remove("k").ok());
  }
  const uint64_t calls = client_internal::Connection::PopulateCallsForTest() - before;
  EXPECT_GE(calls, 1u);
  EXPECT_LT(calls, 10u) << "the same few arena ranges were populated again and again";
  auto v = client_->Put("k", value);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::memcmp(client_->Get("k")->data(), value.data(), value.size()), 0);
}

TEST_F(ClientTest, ViewKeepsBytesAliveAfterRemoveUntilReleased) {
  uint64_t baseline = UsedByObjects();
  std::string value(100000, 'v');
  ASSERT_TRUE(client_->Put("k", value).ok());
  auto v = client_->Get("k");
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(client_->Remove("k").ok());
  EXPECT_EQ(client_->Get("k").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::memcmp(v->data(), value.data(), value.size()), 0);
  EXPECT_GT(UsedByObjects(), baseline);
  ASSERT_TRUE(v->Release().ok());
  EXPECT_EQ(UsedByObjects(), baseline);
}

TEST_F(ClientTest, DroppedViewReleasesItsLease) {
  ASSERT_TRUE(client_->Put("k", "v").ok());
  { auto v = client_->Get("k"); }
  EXPECT_EQ(client_->Stats()->leases(), 0u);  // the oneway release came first
}

TEST_F(ClientTest, BatchGetReleaseAndPut) {
  std::vector<std::string> values;
  std::vector<std::pair<std::string, std::span<const std::byte>>> items;
  for (int i = 0; i < 64; ++i) values.push_back(std::string(4096, 'a' + i % 26));
  for (int i = 0; i < 64; ++i) {
    items.push_back({"b" + std::to_string(i), std::as_bytes(std::span(values[i]))});
  }
  auto refs = client_->PutMany(items);
  for (auto& r : refs) ASSERT_TRUE(r.ok()) << r.status();
  std::vector<std::string> keys;
  for (auto& [k, v] : items) keys.push_back(k);
  keys.push_back("missing");
  auto views = client_->GetMany(keys);
  ASSERT_EQ(views.size(), 65u);
  EXPECT_EQ(views[64].status().code(), absl::StatusCode::kNotFound);
  std::vector<ObjectView> held;
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(views[i].ok());
    EXPECT_EQ(std::memcmp(views[i]->data(), values[i].data(), 4096), 0);
    held.push_back(std::move(*views[i]));
  }
  EXPECT_EQ(client_->Stats()->leases(), 64u);
  ASSERT_TRUE(client_->ReleaseMany(held).ok());
  EXPECT_EQ(client_->Stats()->leases(), 0u);
}

TEST_F(ClientTest, WaitingPutSucceedsWhenSpaceIsFreed) {
  auto fill = client_->Create("big", 40 << 20);
  ASSERT_TRUE(fill.ok());
  ASSERT_TRUE(fill->Seal().ok());
  auto other = daemon_.Connect();
  ASSERT_TRUE(other.ok());
  // Space is freed only once the daemon reports the put's create parked.
  std::thread remover([&] {
    EXPECT_TRUE(Eventually([&] {
      auto st = client_->Status();
      return st.ok() && st->parked_requests() == 1;
    })) << "the waiting create was never parked";
    EXPECT_TRUE(client_->Remove("big").ok());
  });
  PutOptions o;
  o.wait = std::chrono::seconds(30);
  std::string v(40 << 20, 'w');
  auto ref = (*other)->Put("waiter", v, o);
  remover.join();
  EXPECT_TRUE(ref.ok()) << ref.status();
}

// The same for a small put, which travels in one request: the request
// parks until the space is freed.
TEST_F(ClientTest, WaitingSmallPutParksAndSucceedsWhenSpaceIsFreed) {
  auto fill = client_->Create("big", client_->Stats()->tiers(0).capacity_bytes() - (1 << 20));
  ASSERT_TRUE(fill.ok()) << fill.status();
  ASSERT_TRUE(fill->Seal().ok());
  std::string v(16 << 10, 's');
  absl::Status full;
  for (int i = 0; i < 1000 && full.ok(); ++i) {
    full = client_->Put(fmt::format("s{}", i), v).status();
  }
  ASSERT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  auto other = daemon_.Connect();
  ASSERT_TRUE(other.ok());
  std::thread remover([&] {
    EXPECT_TRUE(Eventually([&] {
      auto st = client_->Status();
      return st.ok() && st->parked_requests() == 1;
    })) << "the waiting put was never parked";
    EXPECT_TRUE(client_->Remove("big").ok());
  });
  PutOptions o;
  o.wait = std::chrono::seconds(30);
  auto ref = (*other)->Put("waiter", v, o);
  remover.join();
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto got = client_->Get("waiter");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got->data()), got->size()), v);
}

TEST_F(ClientTest, WaitingPutGivesUpAtItsDeadline) {
  auto fill = client_->Create("big", 40 << 20);
  ASSERT_TRUE(fill.ok() && fill->Seal().ok());
  PutOptions o;
  o.wait = std::chrono::milliseconds(100);
  auto ref = client_->Put("waiter", std::string(40 << 20, 'w'), o);
  EXPECT_EQ(ref.status().code(), absl::StatusCode::kResourceExhausted);
  // The message says how long it waited: the deadline or a little more.
  std::string msg(ref.status().message());
  auto at = msg.find("waited ");
  ASSERT_NE(at, std::string::npos) << msg;
  EXPECT_GE(std::stoll(msg.substr(at + 7)), 100) << msg;
}

TEST_F(ClientTest, ClientGetsUnavailableWhenTheDaemonDies) {
  ASSERT_TRUE(client_->Put("k", "v").ok());
  daemon_.Kill(SIGKILL);
  daemon_.Wait();
  // A key this host holds is still served from shared memory (the fast path,
  // with its lease in shared memory, which a restarted daemon honours)...
  auto v = client_->Get("k");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(v->data()), v->size()), "v");
  // ...and whatever needs the daemon is Unavailable.
  EXPECT_EQ(client_->Get("other").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client_->Put("k", "v").status().code(), absl::StatusCode::kUnavailable);
  auto socket_only = daemon_.Connect("", /*fast_path=*/false);
  EXPECT_EQ(socket_only.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ClientTest, StatusListsSessionsWithTheirLeasesAndWrites) {
  ASSERT_TRUE(client_->Put("k", "v").ok());
  auto v = client_->Get("k");
  auto w = client_->Create("pending", 10);
  ASSERT_TRUE(v.ok() && w.ok());
  auto st = client_->Status();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_FALSE(st->version().empty());
  EXPECT_GT(st->pid(), 0);
  EXPECT_EQ(st->socket_path(), daemon_.socket_path());
  ASSERT_EQ(st->sessions().size(), 1u);
  EXPECT_EQ(st->sessions(0).pid(), getpid());
  EXPECT_EQ(st->sessions(0).leases(), 1u);
  EXPECT_EQ(st->sessions(0).pending_writes(), 1u);
  EXPECT_EQ(st->stats().objects(), 1u);
}

TEST(ClientConnectTest, NoDaemonIsUnavailableNamingTheSocket) {
  ConnectOptions o;
  o.socket_path = "/tmp/no-such-cisternd.sock";
  auto c = Client::Connect(o);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/tmp/no-such-cisternd.sock"));
}

}  // namespace
}  // namespace cistern::testing

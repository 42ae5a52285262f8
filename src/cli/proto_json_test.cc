#include "src/cli/proto_json.h"

#include "cistern/local.pb.h"
#include "cistern/stream.pb.h"
#include "gtest/gtest.h"

namespace cistern::cli {
namespace {

using Json = nlohmann::ordered_json;

TEST(ProtoToJsonTest, ScalarsAreNumbersAndUnsetOptionalsAreNull) {
  wire::StreamInfo info;
  info.set_name("rollouts");
  info.set_depth(uint64_t{1} << 63);  // beyond a double's exact range: still exact
  info.set_paused(true);
  info.set_global_step(7);
  info.mutable_options()->set_max_lease_refs(32);
  Json j = ProtoToJson(info);
  EXPECT_EQ(j["name"], "rollouts");
  EXPECT_EQ(j["depth"].get<uint64_t>(), uint64_t{1} << 63);
  EXPECT_TRUE(j["depth"].is_number_unsigned());
  EXPECT_EQ(j["paused"], true);
  EXPECT_EQ(j["global_step"], 7);
  EXPECT_TRUE(j["durable_step"].is_null());  // optional, unset
  EXPECT_EQ(j["in_flight"], 0);              // plain proto3: its default
  EXPECT_EQ(j["options"]["max_lease_refs"], 32);
  EXPECT_TRUE(j["options"]["lease_timeout_ms"].is_null());
  // Every field of the message, in declaration order.
  const auto* d = wire::StreamInfo::descriptor();
  ASSERT_EQ(j.size(), static_cast<size_t>(d->field_count()));
  int k = 0;
  for (const auto& [name, value] : j.items()) EXPECT_EQ(name, d->field(k++)->name());
}

TEST(ProtoToJsonTest, RepeatedMapsEnumsAndDoubles) {
  wire::StatsReply stats;
  auto* t = stats.add_tiers();
  t->set_name("mem");
  t->set_fragmentation(0.25);
  stats.add_tiers()->set_name("ssd");
  Json j = ProtoToJson(stats);
  ASSERT_EQ(j["tiers"].size(), 2u);
  EXPECT_EQ(j["tiers"][0]["name"], "mem");
  EXPECT_DOUBLE_EQ(j["tiers"][0]["fragmentation"].get<double>(), 0.25);
  EXPECT_EQ(j["tiers"][1]["name"], "ssd");

  wire::SampleRef ref;
  (*ref.mutable_metadata())["epoch"] = "3";
  auto* f = ref.add_features();
  f->set_dtype(wire::DTYPE_FLOAT32);
  f->add_shape(2);
  f->add_shape(3);
  Json r = ProtoToJson(ref);
  EXPECT_EQ(r["metadata"], (Json{{"epoch", "3"}}));
  EXPECT_EQ(r["features"][0]["dtype"], "DTYPE_FLOAT32");
  EXPECT_EQ(r["features"][0]["shape"], (Json{2, 3}));
  EXPECT_TRUE(ProtoToJson(wire::SampleRef())["features"].is_array());
}

}  // namespace
}  // namespace cistern::cli

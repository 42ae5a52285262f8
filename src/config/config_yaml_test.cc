#include "src/config/config_yaml.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cistern/config.pb.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/wrappers.pb.h"
#include "gtest/gtest.h"
#include "src/common/units.h"

namespace cistern {
namespace {

using config::DaemonConfig;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

DaemonConfig MustLoad(std::string_view yaml) {
  DaemonConfig c;
  absl::Status s = LoadYamlString(yaml, &c);
  EXPECT_TRUE(s.ok()) << s << "\n" << yaml;
  return c;
}

// The status of loading `yaml` into a fresh DaemonConfig, as "CODE: message".
std::string LoadError(std::string_view yaml) {
  DaemonConfig c;
  return LoadYamlString(yaml, &c).ToString();
}

std::string OverrideError(std::string_view assignment, DaemonConfig c = {}) {
  return ApplyOverride(assignment, &c).ToString();
}

template <typename M>
std::string LoadErrorInto(std::string_view yaml) {
  M m;
  return LoadYamlString(yaml, &m).ToString();
}

auto IsInvalid(auto... parts) {
  return AllOf(StartsWith("INVALID_ARGUMENT: "), HasSubstr(parts)...);
}

bool Same(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

// ---- ParseSize, ParseDurationMs, ParseFraction ----

TEST(ParseSizeTest, PlainIntegerIsBytes) {
  EXPECT_EQ(*ParseSize("0"), 0u);
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("18446744073709551615"), UINT64_MAX);
}

TEST(ParseSizeTest, DecimalUnitsArePowersOfAThousand) {
  EXPECT_EQ(*ParseSize("4GB"), 4000000000u);
  EXPECT_EQ(*ParseSize("4G"), 4000000000u);
  EXPECT_EQ(*ParseSize("10B"), 10u);
  EXPECT_EQ(*ParseSize("3K"), 3000u);
  EXPECT_EQ(*ParseSize("2MB"), 2000000u);
  EXPECT_EQ(*ParseSize("1TB"), 1000000000000u);
}

TEST(ParseSizeTest, BinaryUnitsArePowersOf1024) {
  EXPECT_EQ(*ParseSize("512MiB"), 536870912u);
  EXPECT_EQ(*ParseSize("1Ki"), 1024u);
  EXPECT_EQ(*ParseSize("4GiB"), 4 * kGiB);
  EXPECT_EQ(*ParseSize("2Ti"), 2 * 1024 * kGiB);
}

TEST(ParseSizeTest, UnitsAreCaseInsensitiveWithOptionalSpace) {
  EXPECT_EQ(*ParseSize("4gb"), 4000000000u);
  EXPECT_EQ(*ParseSize("512 mib"), 536870912u);
  EXPECT_EQ(*ParseSize("1 KIB"), 1024u);
  EXPECT_EQ(*ParseSize("  7  "), 7u);
}

TEST(ParseSizeTest, DecimalIsAcceptedWhenTheResultIsWholeBytes) {
  EXPECT_EQ(*ParseSize("1.5GiB"), 1610612736u);
  EXPECT_EQ(*ParseSize("0.5KiB"), 512u);
  EXPECT_EQ(*ParseSize("1.5KB"), 1500u);
  EXPECT_EQ(*ParseSize("2.000B"), 2u);
  EXPECT_EQ(*ParseSize("0.0009765625KiB"), 1u);
}

TEST(ParseSizeTest, FractionalByteCountIsRejected) {
  EXPECT_THAT(ParseSize("1.5B").status().ToString(), IsInvalid("not a whole number of bytes"));
  EXPECT_FALSE(ParseSize("0.1KiB").ok());
  EXPECT_FALSE(ParseSize("1.0000000001GB").ok());
}

TEST(ParseSizeTest, NegativeIsRejected) {
  EXPECT_THAT(ParseSize("-1").status().ToString(), IsInvalid("negative"));
  EXPECT_THAT(ParseSize("-4GB").status().ToString(), IsInvalid("negative"));
}

TEST(ParseSizeTest, OverflowIsRejected) {
  EXPECT_THAT(ParseSize("18446744073709551616").status().ToString(), IsInvalid("too large"));
  EXPECT_THAT(ParseSize("16777216TiB").status().ToString(), IsInvalid("too large"));
  EXPECT_FALSE(ParseSize("18446744073.709551616GB").ok());
}

TEST(ParseSizeTest, EmptyAndJunkAreRejected) {
  for (std::string_view bad : {"", "  ", "abc", "GB", "4 GB extra", "1..5GB", "1.GB", ".5GB", "1e9",
                               "0x10", "+5", "4 G B"}) {
    EXPECT_THAT(ParseSize(bad).status().ToString(), IsInvalid("invalid size")) << bad;
  }
  EXPECT_THAT(ParseSize("4XB").status().ToString(), IsInvalid("unknown unit 'XB'", "MiB"));
}

TEST(ParseDurationMsTest, PlainIntegerIsMilliseconds) {
  EXPECT_EQ(*ParseDurationMs("250"), 250u);
  EXPECT_EQ(*ParseDurationMs("0"), 0u);
}

TEST(ParseDurationMsTest, UnitsScaleToMilliseconds) {
  EXPECT_EQ(*ParseDurationMs("250ms"), 250u);
  EXPECT_EQ(*ParseDurationMs("30s"), 30000u);
  EXPECT_EQ(*ParseDurationMs("2m"), 120000u);
  EXPECT_EQ(*ParseDurationMs("1h"), 3600000u);
  EXPECT_EQ(*ParseDurationMs("5 S"), 5000u);
}

TEST(ParseDurationMsTest, DecimalIsAcceptedWhenTheResultIsWholeMilliseconds) {
  EXPECT_EQ(*ParseDurationMs("1.5s"), 1500u);
  EXPECT_EQ(*ParseDurationMs("0.25h"), 900000u);
  EXPECT_THAT(ParseDurationMs("0.5ms").status().ToString(),
              IsInvalid("not a whole number of milliseconds"));
  EXPECT_FALSE(ParseDurationMs("1.0005s").ok());
}

TEST(ParseDurationMsTest, NegativeJunkAndOverflowAreRejected) {
  EXPECT_THAT(ParseDurationMs("-1s").status().ToString(), IsInvalid("negative"));
  EXPECT_THAT(ParseDurationMs("5d").status().ToString(), IsInvalid("unknown unit 'd'"));
  EXPECT_THAT(ParseDurationMs("18446744073709551615h").status().ToString(), IsInvalid("too large"));
  for (std::string_view bad : {"", "s", "fast", "1s2", "1e3"}) {
    EXPECT_FALSE(ParseDurationMs(bad).ok()) << bad;
  }
}

TEST(ParseFractionTest, NumberBetweenZeroAndOneIsItself) {
  EXPECT_DOUBLE_EQ(*ParseFraction("0.9"), 0.9);
  EXPECT_DOUBLE_EQ(*ParseFraction("0"), 0.0);
  EXPECT_DOUBLE_EQ(*ParseFraction("1"), 1.0);
}

TEST(ParseFractionTest, PercentageIsDividedByAHundred) {
  EXPECT_DOUBLE_EQ(*ParseFraction("90%"), 0.9);
  EXPECT_DOUBLE_EQ(*ParseFraction("12.5 %"), 0.125);
  EXPECT_DOUBLE_EQ(*ParseFraction("100%"), 1.0);
  EXPECT_DOUBLE_EQ(*ParseFraction("0%"), 0.0);
}

TEST(ParseFractionTest, OutOfRangeNegativeAndJunkAreRejected) {
  EXPECT_THAT(ParseFraction("90").status().ToString(), IsInvalid("between 0 and 1", "90%"));
  EXPECT_FALSE(ParseFraction("1.5").ok());
  EXPECT_FALSE(ParseFraction("101%").ok());
  EXPECT_THAT(ParseFraction("-0.1").status().ToString(), IsInvalid("negative"));
  for (std::string_view bad : {"", "%", "abc", "0.5x", "1e-1", "nan", "50%%"}) {
    EXPECT_FALSE(ParseFraction(bad).ok()) << bad;
  }
}

// ---- LoadYamlString: the whole schema ----

TEST(LoadYamlTest, FullDaemonConfigLoads) {
  DaemonConfig c = MustLoad(R"(
runtime_dir: /run/cistern
socket_path: /run/cistern/cisternd.sock
tiers:
  - name: dram
    size: 4GB
    high_watermark: 90%
    low_watermark: 0.8
  - name: huge
    path: /dev/hugepages/cistern.arena
    size: 512MiB
token: s3cret
allowed_uids: [0, 1000]
log_level: debug
max_frame_bytes: 64MiB
hello_timeout_ms: 5s
max_sessions: 256
max_batch: 1024
recovery:
  on_corrupt_object: drop
)");
  EXPECT_EQ(c.runtime_dir(), "/run/cistern");
  EXPECT_EQ(c.socket_path(), "/run/cistern/cisternd.sock");
  ASSERT_EQ(c.tiers_size(), 2);
  EXPECT_EQ(c.tiers(0).name(), "dram");
  EXPECT_EQ(c.tiers(0).size(), 4000000000u);
  EXPECT_DOUBLE_EQ(c.tiers(0).high_watermark(), 0.9);
  EXPECT_DOUBLE_EQ(c.tiers(0).low_watermark(), 0.8);
  EXPECT_EQ(c.tiers(1).path(), "/dev/hugepages/cistern.arena");
  EXPECT_EQ(c.tiers(1).size(), 536870912u);
  EXPECT_EQ(c.token(), "s3cret");
  EXPECT_THAT(c.allowed_uids(), ElementsAre(0u, 1000u));
  EXPECT_EQ(c.log_level(), config::LOG_LEVEL_DEBUG);
  EXPECT_EQ(c.max_frame_bytes(), 64u << 20);
  EXPECT_EQ(c.hello_timeout_ms(), 5000u);
  EXPECT_EQ(c.max_sessions(), 256u);
  EXPECT_EQ(c.max_batch(), 1024u);
  EXPECT_EQ(c.recovery().on_corrupt_object(), config::CORRUPT_OBJECT_POLICY_DROP);
}

TEST(LoadYamlTest, EmptyOrNullDocumentLeavesMessageUnchanged) {
  DaemonConfig before;
  before.set_token("keep");
  before.add_tiers()->set_name("dram");
  for (std::string_view yaml : {"", "\n\n", "# only a comment\n", "~", "null", "---\n"}) {
    DaemonConfig c = before;
    EXPECT_TRUE(LoadYamlString(yaml, &c).ok()) << yaml;
    EXPECT_TRUE(Same(c, before)) << yaml;
  }
}

TEST(LoadYamlTest, TopLevelNonMappingIsRejected) {
  EXPECT_THAT(LoadError("- a\n- b\n"), IsInvalid("must be a mapping", "found a sequence"));
  EXPECT_THAT(LoadError("just words\n"), IsInvalid("must be a mapping", "'just words'"));
}

TEST(LoadYamlTest, MoreThanOneDocumentIsRejected) {
  EXPECT_THAT(LoadError("token: a\n---\ntoken: b\n"), IsInvalid("one YAML document", "found 2"));
}

TEST(LoadYamlTest, SyntaxErrorReportsLineAndColumn) {
  EXPECT_THAT(LoadError("token: a\ntiers: [1, 2\n"), IsInvalid("YAML syntax error", "line "));
  EXPECT_THAT(LoadError("a: b: c\n"), IsInvalid("line 1, column"));
}

TEST(LoadYamlTest, LoadingLayersOverEarlierValues) {
  DaemonConfig c;
  ASSERT_TRUE(LoadYamlString("token: a\nrecovery: {on_corrupt_object: fail}\n", &c).ok());
  ASSERT_TRUE(LoadYamlString("log_level: warn\nrecovery: {}\n", &c).ok());
  EXPECT_EQ(c.token(), "a");
  EXPECT_EQ(c.log_level(), config::LOG_LEVEL_WARN);
  EXPECT_EQ(c.recovery().on_corrupt_object(), config::CORRUPT_OBJECT_POLICY_FAIL);
}

// ---- keys ----

TEST(LoadYamlTest, UnknownTopLevelKeyIsNamedWithTheValidKeys) {
  EXPECT_THAT(LoadError("token: a\nsockt_path: /x\n"),
              IsInvalid("unknown key 'sockt_path' at line 2, column 1",
                        "runtime_dir, socket_path, tiers, token"));
}

TEST(LoadYamlTest, UnknownNestedKeyIsNamedWithItsPath) {
  EXPECT_THAT(LoadError(R"(tiers:
  - name: dram
    size: 1GB
  - name: ssd
    sise: 1GB
)"),
              IsInvalid("unknown key 'tiers[1].sise' at line 5",
                        "valid keys of TierConfig: name, path, size, high_watermark, "
                        "low_watermark, prefault"));
  EXPECT_THAT(LoadError("recovery:\n  on_corupt_object: drop\n"),
              IsInvalid("unknown key 'recovery.on_corupt_object'", "on_corrupt_object"));
}

TEST(LoadYamlTest, KeysAreExactFieldNames) {
  EXPECT_THAT(LoadError("socketPath: /x\n"), IsInvalid("unknown key 'socketPath'"));
  EXPECT_THAT(LoadError("Token: x\n"), IsInvalid("unknown key 'Token'"));
}

TEST(LoadYamlTest, DuplicateKeyIsRejected) {
  EXPECT_THAT(LoadError("token: a\ntoken: b\n"), IsInvalid("duplicate key 'token' at line 2"));
  EXPECT_THAT(LoadError("tiers:\n  - name: a\n    name: b\n"),
              IsInvalid("duplicate key 'tiers[0].name'"));
}

TEST(LoadYamlTest, NonScalarKeyIsRejected) {
  EXPECT_THAT(LoadError("? [a, b]\n: c\n"), IsInvalid("mapping keys must be plain names"));
}

// ---- values of each type ----

TEST(LoadYamlTest, SizeFieldAcceptsIntegersAndUnits) {
  EXPECT_EQ(MustLoad("max_frame_bytes: 1048576").max_frame_bytes(), 1048576u);
  EXPECT_EQ(MustLoad("max_frame_bytes: 4GB").max_frame_bytes(), 4000000000u);
  EXPECT_EQ(MustLoad("max_frame_bytes: '512MiB'").max_frame_bytes(), 536870912u);
  EXPECT_EQ(MustLoad("max_frame_bytes: 1.5GiB").max_frame_bytes(), 1610612736u);
  EXPECT_EQ(MustLoad("tiers: [{size: 2 GiB}]").tiers(0).size(), 2 * kGiB);
}

TEST(LoadYamlTest, BadSizeIsNamedWithItsPath) {
  EXPECT_THAT(LoadError("tiers:\n  - size: 4XB\n"),
              IsInvalid("'tiers[0].size' at line 2, column 11", "unknown unit 'XB'"));
  EXPECT_THAT(LoadError("max_frame_bytes: -1\n"), IsInvalid("'max_frame_bytes'", "negative"));
}

TEST(LoadYamlTest, DurationFieldAcceptsIntegersAndUnits) {
  EXPECT_EQ(MustLoad("hello_timeout_ms: 250").hello_timeout_ms(), 250u);
  EXPECT_EQ(MustLoad("hello_timeout_ms: 30s").hello_timeout_ms(), 30000u);
  EXPECT_EQ(MustLoad("hello_timeout_ms: 2m").hello_timeout_ms(), 120000u);
  EXPECT_EQ(MustLoad("hello_timeout_ms: 1.5s").hello_timeout_ms(), 1500u);
  EXPECT_THAT(LoadError("hello_timeout_ms: soon"), IsInvalid("'hello_timeout_ms'", "duration"));
}

TEST(LoadYamlTest, FractionFieldsAcceptNumbersAndPercentages) {
  DaemonConfig c = MustLoad("tiers: [{high_watermark: 95%, low_watermark: 0.75}]");
  EXPECT_DOUBLE_EQ(c.tiers(0).high_watermark(), 0.95);
  EXPECT_DOUBLE_EQ(c.tiers(0).low_watermark(), 0.75);
  EXPECT_THAT(LoadError("tiers: [{high_watermark: 1.2}]"),
              IsInvalid("'tiers[0].high_watermark'", "between 0 and 1"));
  EXPECT_THAT(LoadError("tiers: [{low_watermark: 120%}]"), IsInvalid("'tiers[0].low_watermark'"));
}

TEST(LoadYamlTest, OptionalFieldsHavePresenceOnlyWhenGiven) {
  DaemonConfig c = MustLoad("tiers: [{name: a, low_watermark: 0}, {name: b}]");
  EXPECT_TRUE(c.tiers(0).has_low_watermark());
  EXPECT_DOUBLE_EQ(c.tiers(0).low_watermark(), 0.0);
  EXPECT_FALSE(c.tiers(0).has_high_watermark());
  EXPECT_FALSE(c.tiers(1).has_low_watermark());
}

TEST(LoadYamlTest, EnumAcceptsShortOrFullNameInAnyCase) {
  EXPECT_EQ(MustLoad("log_level: debug").log_level(), config::LOG_LEVEL_DEBUG);
  EXPECT_EQ(MustLoad("log_level: INFO").log_level(), config::LOG_LEVEL_INFO);
  EXPECT_EQ(MustLoad("log_level: Trace").log_level(), config::LOG_LEVEL_TRACE);
  EXPECT_EQ(MustLoad("log_level: LOG_LEVEL_WARN").log_level(), config::LOG_LEVEL_WARN);
  EXPECT_EQ(MustLoad("log_level: log_level_error").log_level(), config::LOG_LEVEL_ERROR);
  EXPECT_EQ(MustLoad("log_level: off").log_level(), config::LOG_LEVEL_OFF);
  EXPECT_EQ(MustLoad("recovery: {on_corrupt_object: drop}").recovery().on_corrupt_object(),
            config::CORRUPT_OBJECT_POLICY_DROP);
  EXPECT_EQ(MustLoad("recovery: {on_corrupt_object: CORRUPT_OBJECT_POLICY_FAIL}")
                .recovery()
                .on_corrupt_object(),
            config::CORRUPT_OBJECT_POLICY_FAIL);
}

TEST(LoadYamlTest, EnumUnspecifiedIsRejected) {
  EXPECT_THAT(LoadError("log_level: unspecified"), IsInvalid("'log_level'", "found 'unspecified'"));
  EXPECT_THAT(LoadError("log_level: LOG_LEVEL_UNSPECIFIED"), IsInvalid("'log_level'"));
}

TEST(LoadYamlTest, UnknownEnumNameListsTheAcceptedNamesInLowercase) {
  EXPECT_THAT(LoadError("log_level: verbose"),
              IsInvalid("'log_level' at line 1, column 12",
                        "expected one of trace, debug, info, warn, error, off, found 'verbose'"));
  EXPECT_THAT(LoadError("recovery: {on_corrupt_object: ignore}"),
              IsInvalid("'recovery.on_corrupt_object'", "one of fail, drop"));
  EXPECT_THAT(LoadError("log_level: 3"), IsInvalid("'log_level'", "found '3'"));
}

TEST(LoadYamlTest, EnumWithoutACommonPrefixTakesFullNames) {
  google::protobuf::FileOptions o;
  ASSERT_TRUE(LoadYamlString("optimize_for: code_size", &o).ok());
  EXPECT_EQ(o.optimize_for(), google::protobuf::FileOptions::CODE_SIZE);
  google::protobuf::FieldDescriptorProto f;
  ASSERT_TRUE(LoadYamlString("type: int32\nlabel: LABEL_REPEATED", &f).ok());
  EXPECT_EQ(f.type(), google::protobuf::FieldDescriptorProto::TYPE_INT32);
  EXPECT_EQ(f.label(), google::protobuf::FieldDescriptorProto::LABEL_REPEATED);
}

TEST(LoadYamlTest, StringFieldTakesAnyScalarText) {
  EXPECT_EQ(MustLoad("token: 12345").token(), "12345");
  EXPECT_EQ(MustLoad("token: yes").token(), "yes");
  EXPECT_EQ(MustLoad("token: ''").token(), "");
  EXPECT_EQ(MustLoad("token: 'null'").token(), "null");
  EXPECT_EQ(MustLoad("token: \"a: b # c\"").token(), "a: b # c");
}

TEST(LoadYamlTest, ScalarFieldWithoutAValueIsRejected) {
  EXPECT_THAT(LoadError("token:\n"),
              IsInvalid("'token' at line 1", "expected a string, found null"));
  EXPECT_THAT(LoadError("max_batch: ~\n"), IsInvalid("'max_batch'", "found null"));
}

TEST(LoadYamlTest, IntegerFieldRejectsNonIntegers) {
  EXPECT_THAT(
      LoadError("max_sessions: abc"),
      IsInvalid("'max_sessions' at line 1", "expected a non-negative integer, found 'abc'"));
  EXPECT_THAT(LoadError("max_sessions: 1.5"), IsInvalid("'max_sessions'", "found '1.5'"));
  EXPECT_THAT(LoadError("max_sessions: 1e3"), IsInvalid("'max_sessions'", "found '1e3'"));
  EXPECT_THAT(LoadError("max_sessions: true"), IsInvalid("'max_sessions'"));
  EXPECT_THAT(LoadError("max_sessions: 10MB"), IsInvalid("'max_sessions'"));
}

TEST(LoadYamlTest, UnsignedFieldRejectsNegatives) {
  EXPECT_THAT(LoadError("max_batch: -1"),
              IsInvalid("'max_batch'", "expected a non-negative integer, found '-1'"));
  EXPECT_THAT(LoadError("allowed_uids: [0, -2]"), IsInvalid("'allowed_uids[1]' at line 1"));
}

TEST(LoadYamlTest, Uint32FieldRejectsValuesOutOfRange) {
  EXPECT_EQ(MustLoad("max_batch: 4294967295").max_batch(), 4294967295u);
  EXPECT_THAT(LoadError("max_batch: 4294967296"),
              IsInvalid("'max_batch'", "out of range for uint32"));
  EXPECT_THAT(LoadError("max_batch: 99999999999999999999999"), IsInvalid("'max_batch'", "range"));
}

TEST(LoadYamlTest, Int32FieldRejectsValuesOutOfRange) {
  EXPECT_THAT(LoadErrorInto<google::protobuf::Int32Value>("value: 2147483648"),
              IsInvalid("'value'", "out of range for int32"));
  google::protobuf::Int32Value v;
  ASSERT_TRUE(LoadYamlString("value: -2147483648", &v).ok());
  EXPECT_EQ(v.value(), INT32_MIN);
}

TEST(LoadYamlTest, BoolFieldAcceptsTrueFalseYesNoOnOff) {
  for (auto [text, want] : {std::pair{"true", true},
                            {"False", false},
                            {"yes", true},
                            {"NO", false},
                            {"on", true},
                            {"Off", false}}) {
    google::protobuf::BoolValue v;
    v.set_value(!want);
    ASSERT_TRUE(LoadYamlString(std::string("value: ") + text, &v).ok()) << text;
    EXPECT_EQ(v.value(), want) << text;
  }
  EXPECT_THAT(LoadErrorInto<google::protobuf::BoolValue>("value: 1"),
              IsInvalid("'value'", "true/false", "found '1'"));
  EXPECT_THAT(LoadErrorInto<google::protobuf::BoolValue>("value: maybe"), IsInvalid("'value'"));
}

TEST(LoadYamlTest, FloatingFieldsTakeFiniteNumbers) {
  google::protobuf::DoubleValue d;
  ASSERT_TRUE(LoadYamlString("value: -2.5e3", &d).ok());
  EXPECT_DOUBLE_EQ(d.value(), -2500);
  EXPECT_THAT(LoadErrorInto<google::protobuf::DoubleValue>("value: .inf"), IsInvalid("finite"));
  EXPECT_THAT(LoadErrorInto<google::protobuf::DoubleValue>("value: 1.5x"), IsInvalid("'value'"));
  EXPECT_THAT(LoadErrorInto<google::protobuf::FloatValue>("value: 1e39"),
              IsInvalid("out of range for float"));
}

TEST(LoadYamlTest, MapFieldsAreRejectedAsUnsupported) {
  EXPECT_THAT(LoadErrorInto<google::protobuf::Struct>("fields: {a: 1}"),
              IsInvalid("'fields'", "map fields are not supported"));
}

// ---- shapes ----

TEST(LoadYamlTest, MappingWhereAScalarIsExpectedIsRejected) {
  EXPECT_THAT(LoadError("log_level: {name: debug}"),
              IsInvalid("'log_level' at line 1", "found a mapping"));
}

TEST(LoadYamlTest, SequenceForANonRepeatedFieldIsRejected) {
  EXPECT_THAT(LoadError("token: [a, b]"), IsInvalid("'token'", "a single value", "a sequence"));
  EXPECT_THAT(LoadError("recovery: [drop]"),
              IsInvalid("'recovery'", "expected a mapping of RecoveryConfig keys"));
}

TEST(LoadYamlTest, ScalarForAMessageFieldIsRejected) {
  EXPECT_THAT(LoadError("recovery: drop"),
              IsInvalid("'recovery'", "mapping of RecoveryConfig keys, found 'drop'"));
  EXPECT_THAT(LoadError("tiers: [dram]"), IsInvalid("'tiers[0]'", "found 'dram'"));
}

TEST(LoadYamlTest, RepeatedFieldNeedsASequence) {
  EXPECT_THAT(LoadError("allowed_uids: 1000"),
              IsInvalid("'allowed_uids' at line 1", "expected a sequence of values, found '1000'"));
  EXPECT_THAT(LoadError("tiers: {name: dram}"),
              IsInvalid("'tiers'", "expected a sequence of mappings, found a mapping"));
  EXPECT_THAT(LoadError("allowed_uids: [[1]]"), IsInvalid("'allowed_uids[0]'", "a sequence"));
}

TEST(LoadYamlTest, SequenceReplacesTheRepeatedField) {
  DaemonConfig c;
  c.add_allowed_uids(1);
  c.add_allowed_uids(2);
  c.add_tiers()->set_name("old");
  ASSERT_TRUE(LoadYamlString("allowed_uids: [7]\ntiers: [{name: new}]", &c).ok());
  EXPECT_THAT(c.allowed_uids(), ElementsAre(7u));
  ASSERT_EQ(c.tiers_size(), 1);
  EXPECT_EQ(c.tiers(0).name(), "new");
  EXPECT_FALSE(c.tiers(0).has_high_watermark());
  ASSERT_TRUE(LoadYamlString("allowed_uids: []\ntiers:\n", &c).ok());
  EXPECT_EQ(c.allowed_uids_size(), 0);
  EXPECT_EQ(c.tiers_size(), 0);
}

TEST(LoadYamlTest, NullMessageFieldIsPresentAndEmpty) {
  DaemonConfig c = MustLoad("recovery:\n");
  EXPECT_TRUE(c.has_recovery());
  EXPECT_EQ(c.recovery().on_corrupt_object(), config::CORRUPT_OBJECT_POLICY_UNSPECIFIED);
}

TEST(LoadYamlTest, ErrorLeavesTheMessageUnchanged) {
  DaemonConfig before;
  before.set_token("keep");
  before.add_allowed_uids(5);
  before.add_tiers()->set_size(1);
  DaemonConfig c = before;
  // Every key but the last is valid and would change the message.
  absl::Status s = LoadYamlString(R"(
token: changed
allowed_uids: [1, 2, 3]
tiers: [{name: x, size: 2GB}, {name: y}]
recovery: {on_corrupt_object: drop}
max_batch: lots
)",
                                  &c);
  EXPECT_THAT(s.ToString(), IsInvalid("'max_batch'"));
  EXPECT_TRUE(Same(c, before)) << c.DebugString();
}

// ---- LoadYamlFile ----

class LoadYamlFileTest : public ::testing::Test {
 protected:
  std::string Write(std::string_view name, std::string_view text) {
    std::string path = ::testing::TempDir() + "/config_yaml_test_" + std::to_string(::getpid()) +
                       "_" + std::string(name);
    std::ofstream(path) << text;
    paths_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const std::string& p : paths_) std::remove(p.c_str());
  }

  std::vector<std::string> paths_;
};

TEST_F(LoadYamlFileTest, FileIsLoaded) {
  std::string path = Write("ok.yaml", "token: t\ntiers:\n  - name: dram\n    size: 1GiB\n");
  DaemonConfig c;
  ASSERT_TRUE(LoadYamlFile(path, &c).ok());
  EXPECT_EQ(c.token(), "t");
  EXPECT_EQ(c.tiers(0).size(), kGiB);
}

TEST_F(LoadYamlFileTest, MissingFileIsNotFoundNamingThePath) {
  std::string path = ::testing::TempDir() + "/no/such/cistern.yaml";
  DaemonConfig c;
  EXPECT_THAT(LoadYamlFile(path, &c).ToString(), AllOf(StartsWith("NOT_FOUND"), HasSubstr(path)));
}

TEST_F(LoadYamlFileTest, UnreadableFileIsPermissionDeniedNamingThePath) {
  std::string path = Write("secret.yaml", "token: t\n");
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  // Root reads anything; check in a child that drops to an unprivileged uid.
  EXPECT_EXIT(
      {
        if (::geteuid() == 0 && ::setresuid(65534, 65534, 65534) != 0) std::_Exit(3);
        DaemonConfig c;
        std::string got = LoadYamlFile(path, &c).ToString();
        bool ok = got.rfind("PERMISSION_DENIED", 0) == 0 && got.find(path) != std::string::npos;
        std::_Exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(LoadYamlFileTest, DirectoryIsRejected) {
  DaemonConfig c;
  EXPECT_THAT(LoadYamlFile(::testing::TempDir(), &c).ToString(), IsInvalid("is a directory"));
}

TEST_F(LoadYamlFileTest, ErrorsNameTheFileAndLine) {
  std::string bad_syntax = Write("syntax.yaml", "token: a\ntiers: [1, 2\n");
  std::string bad_key = Write("key.yaml", "token: a\n\nlog_levl: info\n");
  DaemonConfig c;
  EXPECT_THAT(LoadYamlFile(bad_syntax, &c).ToString(),
              IsInvalid(bad_syntax + ": YAML syntax error at line"));
  EXPECT_THAT(LoadYamlFile(bad_key, &c).ToString(),
              IsInvalid(bad_key + ": unknown key 'log_levl' at line 3"));
  EXPECT_TRUE(Same(c, DaemonConfig()));
}

TEST_F(LoadYamlFileTest, EmptyFileLeavesMessageUnchanged) {
  std::string path = Write("empty.yaml", "");
  DaemonConfig c;
  c.set_token("keep");
  ASSERT_TRUE(LoadYamlFile(path, &c).ok());
  EXPECT_EQ(c.token(), "keep");
}

// ---- ApplyOverride ----

DaemonConfig OneTier() {
  DaemonConfig c;
  c.add_tiers()->set_name("dram");
  return c;
}

TEST(ApplyOverrideTest, SetsAScalarAtTheTopLevel) {
  DaemonConfig c;
  ASSERT_TRUE(ApplyOverride("log_level=debug", &c).ok());
  ASSERT_TRUE(ApplyOverride("max_sessions=64", &c).ok());
  EXPECT_EQ(c.log_level(), config::LOG_LEVEL_DEBUG);
  EXPECT_EQ(c.max_sessions(), 64u);
}

TEST(ApplyOverrideTest, NumericComponentIndexesARepeatedField) {
  DaemonConfig c = OneTier();
  ASSERT_TRUE(ApplyOverride("tiers.0.size=4GB", &c).ok());
  ASSERT_EQ(c.tiers_size(), 1);
  EXPECT_EQ(c.tiers(0).name(), "dram");
  EXPECT_EQ(c.tiers(0).size(), 4000000000u);
}

TEST(ApplyOverrideTest, ValueIsReadLikeAYamlScalarForTheField) {
  DaemonConfig c = OneTier();
  ASSERT_TRUE(ApplyOverride("recovery.on_corrupt_object=drop", &c).ok());
  ASSERT_TRUE(ApplyOverride("hello_timeout_ms=1.5s", &c).ok());
  ASSERT_TRUE(ApplyOverride("tiers.0.high_watermark=85%", &c).ok());
  EXPECT_EQ(c.recovery().on_corrupt_object(), config::CORRUPT_OBJECT_POLICY_DROP);
  EXPECT_EQ(c.hello_timeout_ms(), 1500u);
  EXPECT_TRUE(c.tiers(0).has_high_watermark());
  EXPECT_DOUBLE_EQ(c.tiers(0).high_watermark(), 0.85);
}

TEST(ApplyOverrideTest, StringValueIsTakenVerbatim) {
  DaemonConfig c;
  c.set_token("old");
  ASSERT_TRUE(ApplyOverride("token=", &c).ok());
  EXPECT_EQ(c.token(), "");
  ASSERT_TRUE(ApplyOverride("token=a=b: c # d", &c).ok());
  EXPECT_EQ(c.token(), "a=b: c # d");
}

TEST(ApplyOverrideTest, IndexEqualToSizeAppends) {
  DaemonConfig c;
  c.add_allowed_uids(0);
  ASSERT_TRUE(ApplyOverride("allowed_uids.1=1000", &c).ok());
  EXPECT_THAT(c.allowed_uids(), ElementsAre(0u, 1000u));
  ASSERT_TRUE(ApplyOverride("allowed_uids.0=5", &c).ok());
  EXPECT_THAT(c.allowed_uids(), ElementsAre(5u, 1000u));

  DaemonConfig empty;
  ASSERT_TRUE(ApplyOverride("tiers.0.size=4GB", &empty).ok());
  ASSERT_EQ(empty.tiers_size(), 1);
  EXPECT_EQ(empty.tiers(0).size(), 4000000000u);
}

TEST(ApplyOverrideTest, IndexBeyondSizeIsAnError) {
  DaemonConfig c = OneTier();
  EXPECT_THAT(ApplyOverride("tiers.2.size=1", &c).ToString(),
              IsInvalid("index 2 of 'tiers' is out of range", "1 element"));
  EXPECT_THAT(OverrideError("allowed_uids.1=5"), IsInvalid("index 1 of 'allowed_uids'"));
  EXPECT_TRUE(Same(c, OneTier()));
}

TEST(ApplyOverrideTest, UnknownPathComponentIsNamed) {
  EXPECT_THAT(OverrideError("tiers.0.sise=1", OneTier()),
              IsInvalid("unknown key 'tiers[0].sise'", "name, path, size"));
  EXPECT_THAT(OverrideError("bogus=1"), IsInvalid("unknown key 'bogus'"));
  EXPECT_THAT(OverrideError("recovery.policy=drop"), IsInvalid("unknown key 'recovery.policy'"));
}

TEST(ApplyOverrideTest, MalformedKeysAreRejected) {
  EXPECT_THAT(OverrideError("log_level"), IsInvalid("KEY=VALUE"));
  EXPECT_THAT(OverrideError("=1"), IsInvalid("empty component"));
  EXPECT_THAT(OverrideError("tiers..size=1"), IsInvalid("empty component"));
  EXPECT_THAT(OverrideError("tiers.first.size=1", OneTier()),
              IsInvalid("'tiers' is a list", "found 'first'"));
  EXPECT_THAT(OverrideError("log_level.x=1"), IsInvalid("'log_level'", "not a message"));
  EXPECT_THAT(OverrideError("tiers.0.size.x=1", OneTier()), IsInvalid("'tiers[0].size'"));
}

TEST(ApplyOverrideTest, BadValueIsNamedWithThePathAndChangesNothing) {
  DaemonConfig c = OneTier();
  EXPECT_THAT(ApplyOverride("tiers.0.size=lots", &c).ToString(),
              IsInvalid("'tiers[0].size'", "invalid size 'lots'"));
  EXPECT_THAT(ApplyOverride("max_sessions=-1", &c).ToString(), IsInvalid("'max_sessions'"));
  EXPECT_THAT(ApplyOverride("log_level=loud", &c).ToString(),
              IsInvalid("'log_level'", "trace, debug, info"));
  // The failed append must not leave an empty tier behind.
  EXPECT_THAT(ApplyOverride("tiers.1.size=x", &c).ToString(), IsInvalid("'tiers[1].size'"));
  EXPECT_TRUE(Same(c, OneTier())) << c.DebugString();
}

TEST(ApplyOverrideTest, MessageAndWholeRepeatedValuesAreParsedAsYaml) {
  DaemonConfig c = OneTier();
  ASSERT_TRUE(ApplyOverride("tiers.1={name: ssd, size: 1GiB}", &c).ok());
  ASSERT_TRUE(ApplyOverride("allowed_uids=[0, 1000]", &c).ok());
  ASSERT_TRUE(ApplyOverride("recovery={on_corrupt_object: fail}", &c).ok());
  ASSERT_EQ(c.tiers_size(), 2);
  EXPECT_EQ(c.tiers(1).name(), "ssd");
  EXPECT_EQ(c.tiers(1).size(), kGiB);
  EXPECT_THAT(c.allowed_uids(), ElementsAre(0u, 1000u));
  EXPECT_EQ(c.recovery().on_corrupt_object(), config::CORRUPT_OBJECT_POLICY_FAIL);
  EXPECT_THAT(OverrideError("allowed_uids=5"), IsInvalid("'allowed_uids'", "sequence"));
  EXPECT_THAT(OverrideError("tiers=[{sise: 1}]"), IsInvalid("unknown key 'tiers[0].sise'"));
  EXPECT_THAT(OverrideError("recovery={on_corrupt_object: drop"), IsInvalid("not valid YAML"));
}

// ---- Regressions: issue 9 ----

// yaml-cpp 0.7 looped forever (LoadAll growing without bound) on a text with a
// flow ',' outside [...] or {...}, the class a fuzzer found 17 variants of.
TEST(YamlRegressionTest, FlowCommaOutsideACollectionIsASyntaxErrorWithLineAndColumn) {
  struct Case {
    std::string_view yaml;
    std::string_view where;
  };
  for (const Case& c : std::initializer_list<Case>{
           {",", "line 1, column 1"},
           {",*x", "line 1, column 1"},
           {", a", "line 1, column 1"},
           {",,", "line 1, column 1"},
           {",\n", "line 1, column 1"},
           {"  ,", "line 1, column 3"},
           {"[a],", "line 1, column 4"},
           {"{a: 1},", "line 1, column 7"},
           {"'a' ,", "line 1, column 5"},
           {"token: x\n---\n,", "line 3, column 1"},
           {"---\n,", "line 2, column 1"},
           {"&a ,", "line 1, column 4"},
           {"!!str ,", "line 1, column 7"},
           // Two the fuzzer found (tests/fuzz/corpus/config/regress-loop-*).
           {std::string_view(",\t\t'\0\t\t'\0&", 10), "line 1, column 1"},
           {std::string_view("\n,\0\0\0\0\r\0\0\0\x0b", 11), "line 2, column 1"},
       }) {
    EXPECT_THAT(LoadError(c.yaml),
                IsInvalid("YAML syntax error at " + std::string(c.where), "unexpected ','"))
        << c.yaml;
  }
}

// `--set allowed_uids=,1000` parsed its value as null and cleared the list (and
// `--set key=,*x` was null for any message or list key).
TEST(YamlRegressionTest, OverrideValueWithAFlowCommaIsASyntaxErrorAndChangesNothing) {
  DaemonConfig c = OneTier();
  c.add_allowed_uids(0);
  const DaemonConfig before = c;
  for (std::string_view o : {"allowed_uids=,1000", "tiers=,*x", "recovery=,", "tiers.0=,"}) {
    EXPECT_THAT(ApplyOverride(o, &c).ToString(), IsInvalid("not valid YAML", "unexpected ','"))
        << o;
    EXPECT_TRUE(Same(c, before)) << o << "\n" << c.DebugString();
  }
  // A string is still taken verbatim.
  ASSERT_TRUE(ApplyOverride("token=,*x", &c).ok());
  EXPECT_EQ(c.token(), ",*x");
}

// `token: "abc` followed by a line break was accepted as "abc " (yaml-cpp
// takes the end of the input for the closing quote).
TEST(YamlRegressionTest, QuotedStringWithoutItsClosingQuoteIsASyntaxError) {
  EXPECT_THAT(LoadError("token: \"abc\n"),
              IsInvalid("YAML syntax error at line 1, column 8", "no closing \""));
  EXPECT_THAT(LoadError("token: 'abc\n\n"),
              IsInvalid("YAML syntax error at line 1, column 8", "no closing '"));
  EXPECT_THAT(LoadError("token: 'it''s\n"), IsInvalid("no closing '"));
  EXPECT_THAT(LoadError("token: \"a\\\"\n"), IsInvalid("no closing \""));
  // Closed ones, over lines and with escaped quotes, still load.
  EXPECT_EQ(MustLoad("token: \"ab\n  cd\"\n").token(), "ab cd");
  EXPECT_EQ(MustLoad("token: \"a\\\"b\"\n").token(), "a\"b");
  EXPECT_EQ(MustLoad("token: 'it''s'\n").token(), "it's");
  EXPECT_EQ(MustLoad("token: \"\\\\\"\n").token(), "\\");
  EXPECT_EQ(MustLoad("allowed_uids: [\"1\", '2']\ntoken: |\n  x\n").token(), "x\n");
}

// A token that is not UTF-8 was accepted, although no client can send it and
// `config show --effective` printed U+FFFD for it.
TEST(YamlRegressionTest, TextThatIsNotUtf8IsRejectedWithLineAndColumn) {
  EXPECT_THAT(LoadError("log_level: info\ntoken: ab\xff\n"),
              IsInvalid("YAML syntax error at line 2, column 10", "byte 0xff is not UTF-8"));
  EXPECT_THAT(LoadError("token: \xc3\x28\n"), IsInvalid("line 1, column 8", "0xc3"));
  EXPECT_THAT(LoadError("token: \xed\xa0\x80\n"), IsInvalid("line 1, column 8"));  // a surrogate
  // --set takes a string verbatim, but it must be UTF-8 too.
  DaemonConfig c;
  c.set_token("keep");
  EXPECT_THAT(ApplyOverride("token=ab\xff", &c).ToString(),
              IsInvalid("'token'", "byte 2 of the value is not UTF-8"));
  EXPECT_EQ(c.token(), "keep");
  // UTF-8 is fine, U+FFFD itself included.
  EXPECT_EQ(MustLoad("token: \"h\xc3\xa9\xef\xbf\xbd\"\n").token(), "h\xc3\xa9\xef\xbf\xbd");
  ASSERT_TRUE(ApplyOverride("token=\xe2\x82\xac", &c).ok());
  EXPECT_EQ(c.token(), "\xe2\x82\xac");
}

// Nothing bounded what one text could make the loader build or walk: a large
// file, a device that never ends, or aliases used over and over.
TEST(YamlRegressionTest, TextsNodesAndAliasExpansionAreBounded) {
  EXPECT_THAT(LoadError(std::string(kMaxConfigYamlBytes + 1, '#')),
              IsInvalid("the YAML text is", "the limit is 1048576"));
  std::string uids = "allowed_uids: [";
  for (uint64_t i = 0; i <= kMaxConfigYamlNodes; ++i) uids += "1,";
  uids += "1]\n";
  EXPECT_THAT(LoadError(uids), IsInvalid("more than 100000 values"));
  // Ten levels of ten aliases each: 10^10 values once expanded.
  std::string yaml = "values:\n  - &l0 {number_value: 1}\n";
  for (int level = 1; level <= 10; ++level) {
    yaml += fmt::format("  - &l{} {{list_value: {{values: [", level);
    for (int i = 0; i < 10; ++i) yaml += fmt::format("{}*l{}", i ? ", " : "", level - 1);
    yaml += "]}}\n";
  }
  EXPECT_THAT(LoadErrorInto<google::protobuf::ListValue>(yaml),
              IsInvalid("more than 100000 values", "aliases"));
}

TEST_F(LoadYamlFileTest, FileThatNeverEndsIsRejectedAtTheLimit) {
  DaemonConfig c;
  EXPECT_THAT(LoadYamlFile("/dev/zero", &c).ToString(),
              IsInvalid("'/dev/zero' is larger than the limit of 1048576 bytes"));
}

}  // namespace
}  // namespace cistern

namespace cistern {
namespace {

TEST(ToYamlTest, RoundTripsThroughTheLoader) {
  config::DaemonConfig c;
  ASSERT_TRUE(LoadYamlString("socket_path: \"/tmp/a b.sock\"\ntoken: 'x: y'\nlog_level: debug\n"
                             "allowed_uids: [0, 1000]\ntiers:\n  - name: mem\n    size: 4GiB\n"
                             "    high_watermark: 0.9\nrecovery:\n  on_corrupt_object: drop\n",
                             &c)
                  .ok());
  std::string yaml = ToYaml(c);
  config::DaemonConfig back;
  ASSERT_TRUE(LoadYamlString(yaml, &back).ok()) << yaml;
  EXPECT_EQ(back.SerializeAsString(), c.SerializeAsString()) << yaml;
  EXPECT_NE(yaml.find("log_level: debug"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("low_watermark"), std::string::npos) << "unset optional emitted";
}

// Issue 10: the loader and ToYaml computed an enum's prefix two ways, which
// disagreed for an acronym: ToYaml wrote HTTPMode's HTTP_MODE_ON as
// "http_mode_on" (prefix H_T_T_P_MODE_), which the loader then took for the
// full name; the short name the loader offers is "on".
TEST(EnumValueNameTest, AnAcronymInTheEnumNameIsOnePrefixWord) {
  google::protobuf::FileDescriptorProto file;
  file.set_name("enum_name_test.proto");
  file.set_package("enum_name_test");
  file.set_syntax("proto3");
  auto* e = file.add_enum_type();
  e->set_name("HTTPMode");
  for (auto [name, number] :
       {std::pair{"HTTP_MODE_UNSPECIFIED", 0}, std::pair{"HTTP_MODE_ON", 1}}) {
    auto* v = e->add_value();
    v->set_name(name);
    v->set_number(number);
  }
  google::protobuf::DescriptorPool pool;
  const google::protobuf::FileDescriptor* fd = pool.BuildFile(file);
  ASSERT_NE(fd, nullptr);
  EXPECT_EQ(EnumValueName(fd->enum_type(0)->FindValueByName("HTTP_MODE_ON")), "on");
  // The daemon's own enums keep their names.
  EXPECT_EQ(EnumValueName(config::LogLevel_descriptor()->FindValueByName("LOG_LEVEL_INFO")),
            "info");
  EXPECT_EQ(EnumValueName(config::CorruptObjectPolicy_descriptor()->FindValueByName(
                "CORRUPT_OBJECT_POLICY_DROP")),
            "drop");
}

}  // namespace
}  // namespace cistern

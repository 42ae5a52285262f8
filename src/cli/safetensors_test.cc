#include "src/cli/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cistern::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file whose header is exactly `header` (no padding) and whose data area is
// `data_bytes` bytes.
std::string File(std::string_view header, uint64_t data_bytes = 0) {
  return Le64(header.size()) + std::string(header) + std::string(data_bytes, 'x');
}

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

absl::StatusOr<SafetensorsFile> Parse(const std::string& file) {
  return ParseSafetensorsHeader("t.safetensors", file, file.size());
}

TensorInfo Info(std::string name, DType dtype, std::vector<uint64_t> shape) {
  uint64_t n = DTypeSize(dtype);
  for (uint64_t d : shape) n *= d;
  return {std::move(name), dtype, std::move(shape), 0, n};
}

TEST(SafetensorsWriterTest, WritesTheReferenceImplementationsBytes) {
  auto h = MakeSafetensorsHeader({Info("a", DType::kFloat32, {2})});
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, Le64(56) + R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})" + "  ");

  auto m = MakeSafetensorsHeader({Info("a", DType::kFloat32, {2})}, {{"format", "pt"}});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, Le64(88) +
                    R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],)"
                    R"("data_offsets":[0,8]}})" +
                    "   ");
}

TEST(SafetensorsWriterTest, PadsTheHeaderWithSpacesToAMultipleOfEight) {
  for (int len = 1; len <= 16; ++len) {
    SCOPED_TRACE(len);
    auto h = MakeSafetensorsHeader({Info(std::string(len, 'n'), DType::kUInt8, {3})});
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(h->size() % 8, 0u);
    std::string json = h->substr(8);
    size_t end = json.rfind('}') + 1;
    EXPECT_EQ(json.substr(end), std::string(json.size() - end, ' '));
    EXPECT_LT(json.size() - end, 8u);
  }
}

TEST(SafetensorsWriterTest, WrittenHeaderParsesBackToTheSameTensorsAndMetadata) {
  std::vector<TensorInfo> in;
  for (uint8_t d = 1; d <= kMaxDType; ++d) {
    auto dtype = static_cast<DType>(d);
    in.push_back(Info(std::string(SafetensorsDTypeName(dtype)) + ".weight", dtype, {3, d}));
  }
  in.push_back(Info("scalar", DType::kFloat64, {}));
  in.push_back(Info("empty", DType::kInt32, {0, 5}));
  in.push_back(Info("名前 \"quoted\"\n", DType::kBool, {7}));
  SafetensorsMetadata metadata = {{"z", "last?"}, {"a", "no, first"}, {"format", "pt"}};
  auto h = MakeSafetensorsHeader(in, metadata);
  ASSERT_TRUE(h.ok()) << h.status();

  uint64_t data = 0;
  for (const TensorInfo& t : in) data += t.nbytes;
  std::string file = *h + std::string(data, '\0');
  auto parsed = Parse(file);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->data_start, h->size());
  EXPECT_EQ(parsed->data_bytes, data);
  EXPECT_EQ(parsed->metadata, metadata);
  ASSERT_EQ(parsed->tensors.size(), in.size());
  uint64_t at = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const SafetensorsTensor& t = parsed->tensors[i];
    EXPECT_EQ(t.name, in[i].name);
    EXPECT_EQ(t.dtype, in[i].dtype);
    EXPECT_EQ(t.shape, in[i].shape);
    EXPECT_EQ(t.begin, at);
    EXPECT_EQ(t.nbytes(), in[i].nbytes);
    at = t.end;
  }
}

TEST(SafetensorsWriterTest, RejectsTensorsItCannotWrite) {
  TensorInfo wrong_size = Info("a", DType::kFloat32, {3});
  wrong_size.nbytes = 8;
  auto size = MakeSafetensorsHeader({wrong_size});
  EXPECT_EQ(size.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(size.status()), HasSubstr("tensor 'a' has nbytes 8"));

  auto twice =
      MakeSafetensorsHeader({Info("a", DType::kUInt8, {1}), Info("a", DType::kUInt8, {1})});
  EXPECT_THAT(Msg(twice.status()), HasSubstr("'a' appears twice"));

  auto reserved = MakeSafetensorsHeader({Info("__metadata__", DType::kUInt8, {1})});
  EXPECT_THAT(Msg(reserved.status()), HasSubstr("reserves for metadata"));

  auto empty = MakeSafetensorsHeader({Info("", DType::kUInt8, {1})});
  EXPECT_THAT(Msg(empty.status()), HasSubstr("empty name"));

  auto not_utf8 = MakeSafetensorsHeader({Info("bad\xff", DType::kUInt8, {1})});
  EXPECT_THAT(not_utf8.status().message(), HasSubstr("not UTF-8"));

  auto dtype = MakeSafetensorsHeader({{"a", static_cast<DType>(0), {1}, 0, 1}});
  EXPECT_THAT(Msg(dtype.status()), HasSubstr("unknown dtype 0"));

  auto meta = MakeSafetensorsHeader({Info("a", DType::kUInt8, {1})}, {{"k", "1"}, {"k", "2"}});
  EXPECT_THAT(Msg(meta.status()), HasSubstr("metadata key 'k' appears twice"));
}

TEST(SafetensorsDTypeTest, EveryCisternDTypeHasASafetensorsName) {
  for (uint8_t d = 1; d <= kMaxDType; ++d) {
    auto dtype = static_cast<DType>(d);
    EXPECT_EQ(DTypeFromSafetensorsName(SafetensorsDTypeName(dtype)), dtype) << int(d);
  }
  EXPECT_EQ(DTypeFromSafetensorsName("BF16"), DType::kBFloat16);
  EXPECT_EQ(DTypeFromSafetensorsName("BOOL"), DType::kBool);
  EXPECT_EQ(DTypeFromSafetensorsName("F8_E4M3"), std::nullopt);
  EXPECT_EQ(DTypeFromSafetensorsName("f32"), std::nullopt);
}

TEST(SafetensorsParserTest, ReturnsTensorsInDataOrderNotHeaderOrder) {
  auto f = Parse(File(R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]},)"
                      R"("a":{"dtype":"I8","shape":[3],"data_offsets":[0,3]}})",
                      5));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->tensors.size(), 2u);
  EXPECT_EQ(f->tensors[0], (SafetensorsTensor{"a", DType::kInt8, {3}, 0, 3}));
  EXPECT_EQ(f->tensors[1], (SafetensorsTensor{"b", DType::kUInt8, {2}, 3, 5}));
}

TEST(SafetensorsParserTest, AcceptsTrailingSpacesAndNoPadding) {
  std::string json = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  for (std::string header : {json, json + "   ", json + "       "}) {
    auto f = Parse(File(header, 1));
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->data_start, 8 + header.size());
    EXPECT_EQ(f->tensors.size(), 1u);
  }
}

TEST(SafetensorsParserTest, AcceptsZeroSizeTensorsSharingAnOffset) {
  auto f = Parse(File(R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                      R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                      R"("z":{"dtype":"F16","shape":[4,0],"data_offsets":[2,2]}})",
                      2));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->tensors.size(), 3u);
  EXPECT_EQ(f->tensors[0].name, "a");
}

TEST(SafetensorsParserTest, AcceptsAnEmptyFileAndIgnoresUnknownEntryKeys) {
  auto empty = Parse(File("{}"));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->tensors.empty());
  EXPECT_TRUE(empty->metadata.empty());

  auto extra = Parse(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":[]}})", 1));
  ASSERT_TRUE(extra.ok()) << extra.status();
  EXPECT_EQ(extra->tensors.size(), 1u);
}

TEST(SafetensorsParserTest, NeedsTheWholeHeaderInTheGivenBytes) {
  std::string file = File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1);
  auto f =
      ParseSafetensorsHeader("t.safetensors", std::string_view(file).substr(0, 20), file.size());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(f.status()), HasSubstr("only 12 of the header's 53 bytes were given"));
}

TEST(SafetensorsParserTest, ReadsTheHeaderFromAFileDescriptor) {
  char path[] = "/tmp/safetensors-test-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  auto h = MakeSafetensorsHeader({Info("w", DType::kBFloat16, {5})}, {{"k", "v"}});
  ASSERT_TRUE(h.ok()) << h.status();
  std::string file = *h + std::string(10, '\1');
  ASSERT_EQ(::write(fd, file.data(), file.size()), static_cast<ssize_t>(file.size()));

  auto f = ReadSafetensorsHeader(fd, path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(f->tensors, ElementsAre(SafetensorsTensor{"w", DType::kBFloat16, {5}, 0, 10}));
  EXPECT_THAT(f->metadata, ElementsAre(std::pair<std::string, std::string>("k", "v")));

  ASSERT_EQ(::ftruncate(fd, file.size() - 1), 0);
  auto cut = ReadSafetensorsHeader(fd, path);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(cut.status()), HasSubstr("data area has only 9 bytes"));
  ::close(fd);
  ::unlink(path);
}

// One broken file per validation rule, and what the error must say.
struct BadFile {
  std::string name;
  std::string bytes;
  std::string want;
};

void PrintTo(const BadFile& b, std::ostream* os) { *os << b.name; }

class SafetensorsRejectTest : public ::testing::TestWithParam<BadFile> {};

TEST_P(SafetensorsRejectTest, RejectsTheFileNamingTheRuleBroken) {
  auto f = Parse(GetParam().bytes);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(f.status()), StartsWith("t.safetensors: "));
  EXPECT_THAT(Msg(f.status()), HasSubstr(GetParam().want));
}

// An entry for tensor `name`.
std::string E(std::string_view name, std::string_view dtype, std::string_view shape,
              std::string_view offsets) {
  return fmt::format(R"("{}":{{"dtype":{},"shape":{},"data_offsets":{}}})", name, dtype, shape,
                     offsets);
}

INSTANTIATE_TEST_SUITE_P(
    EveryRule, SafetensorsRejectTest,
    ::testing::Values(
        BadFile{"FileShorterThanTheLength", "abc", "begins with an 8-byte header length"},
        BadFile{"LengthPastTheEndOfTheFile", Le64(100) + "{}", "exceeds the 2 bytes that follow"},
        BadFile{"LengthOverTheLimit", Le64(200'000'000) + "{}", "exceeds the limit"},
        BadFile{"HeaderNotJson", File(R"({"a":)"), "header is not valid JSON"},
        BadFile{"HeaderNotUtf8", File("{\"\xff\":1}"), "header is not valid JSON"},
        BadFile{"HeaderPaddedWithNul", File(std::string("{}\0\0", 4)), "header is not valid JSON"},
        BadFile{"HeaderNotAnObject", File("[1,2]"), "header is [1,2], not a JSON object"},
        BadFile{"RepeatedName",
                File("{" + E("a", R"("U8")", "[1]", "[0,1]") + "," +
                         E("a", R"("U8")", "[1]", "[1,2]") + "}",
                     2),
                "'a' appears twice"},
        BadFile{"EmptyName", File("{" + E("", R"("U8")", "[1]", "[0,1]") + "}", 1),
                "a tensor has an empty name"},
        BadFile{"EntryNotAnObject", File(R"({"a":3})"), "tensor 'a' is 3, not an object"},
        BadFile{"NoDtype", File(R"({"a":{"shape":[1],"data_offsets":[0,1]}})", 1),
                "tensor 'a' has no \"dtype\""},
        BadFile{"DtypeNotAString", File("{" + E("a", "5", "[1]", "[0,1]") + "}", 1),
                "tensor 'a' has dtype 5, not a string"},
        BadFile{"UnknownDtype", File("{" + E("a", R"("F7")", "[1]", "[0,1]") + "}", 1),
                "tensor 'a' has dtype \"F7\", which Cistern does not store"},
        BadFile{"UnsupportedDtype", File("{" + E("a", R"("F8_E4M3")", "[1]", "[0,1]") + "}", 1),
                "dtype \"F8_E4M3\", which Cistern does not store"},
        BadFile{"NoShape", File(R"({"a":{"dtype":"U8","data_offsets":[0,1]}})", 1),
                "tensor 'a' has no \"shape\""},
        BadFile{"ShapeNotAnArray", File("{" + E("a", R"("U8")", "1", "[0,1]") + "}", 1),
                "has shape 1; it must be an array of non-negative integers"},
        BadFile{"NegativeDim", File("{" + E("a", R"("U8")", "[-1]", "[0,1]") + "}", 1),
                "has shape [-1]; it must be"},
        BadFile{"FractionalDim", File("{" + E("a", R"("U8")", "[1.5]", "[0,1]") + "}", 1),
                "has shape [1.5]; it must be"},
        BadFile{"NoDataOffsets", File(R"({"a":{"dtype":"U8","shape":[1]}})", 1),
                "tensor 'a' has no \"data_offsets\""},
        BadFile{"DataOffsetsNotAPair", File("{" + E("a", R"("U8")", "[1]", "[0]") + "}", 1),
                "has data_offsets [0]; they must be [begin, end]"},
        BadFile{"NegativeOffset", File("{" + E("a", R"("U8")", "[1]", "[-1,0]") + "}", 1),
                "has data_offsets [-1,0]; they must be"},
        BadFile{"OffsetsReversed", File("{" + E("a", R"("U8")", "[0]", "[1,0]") + "}", 1),
                "end is before begin"},
        BadFile{"DataPastTheEndOfTheFile", File("{" + E("a", R"("U8")", "[8]", "[0,8]") + "}", 4),
                "has data_offsets [0, 8] but the data area has only 4 bytes"},
        BadFile{"SizeDisagreesWithShape", File("{" + E("a", R"("F32")", "[3]", "[0,8]") + "}", 8),
                "has shape [3] and dtype F32, which make 12 bytes, but data_offsets [0, 8] hold 8"},
        BadFile{"ShapeOverflows",
                File("{" + E("a", R"("U64")", "[4294967296,4294967296]", "[0,0]") + "}"),
                "whose size overflows 64 bits"},
        BadFile{"OverlappingTensors",
                File("{" + E("a", R"("U8")", "[4]", "[0,4]") + "," +
                         E("b", R"("U8")", "[4]", "[2,6]") + "}",
                     6),
                "tensors 'a' [0, 4) and 'b' [2, 6) overlap"},
        BadFile{"GapBetweenTensors",
                File("{" + E("a", R"("U8")", "[4]", "[0,4]") + "," +
                         E("b", R"("U8")", "[2]", "[6,8]") + "}",
                     8),
                "bytes [4, 6) of the data area belong to no tensor (between 'a' and 'b')"},
        BadFile{"GapBeforeTheFirstTensor", File("{" + E("a", R"("U8")", "[4]", "[2,6]") + "}", 6),
                "bytes [0, 2) of the data area belong to no tensor (before 'a')"},
        BadFile{"BytesAfterTheLastTensor", File("{" + E("a", R"("U8")", "[4]", "[0,4]") + "}", 6),
                "the data area has 6 bytes but the tensors cover only the first 4"},
        BadFile{"MetadataNotAnObject", File(R"({"__metadata__":"x"})"),
                "__metadata__ is \"x\", not an object of strings"},
        BadFile{"MetadataValueNotAString", File(R"({"__metadata__":{"k":1}})"),
                "__metadata__ entry 'k' is 1, not a string"}),
    [](const ::testing::TestParamInfo<BadFile>& info) { return info.param.name; });

// ---- Regressions: issue 9 ----

// `cistern load` crashed (stack overflow) on a 200 KB header nesting 100,000
// '[': formatting the error dumped the nested value recursively.
TEST(SafetensorsRegressionTest, DeepNestingIsRejectedBeforeItIsParsedOrPrinted) {
  std::string deep(100'000, '[');
  for (const std::string& header :
       {"{\"a\":" + deep + std::string(100'000, ']') + "}", deep + std::string(100'000, ']'), deep,
        "{\"__metadata__\":{\"k\":" + std::string(100'000, '{')}) {
    auto f = Parse(File(header));
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Msg(f.status()), HasSubstr("nests arrays and objects more than 128 deep"));
    EXPECT_LT(Msg(f.status()).size(), 200u) << Msg(f.status());
  }
  // Brackets inside strings do not count; 128 levels parse (and fail as a tensor entry).
  auto in_string = Parse(File("{\"a\":\"" + deep + "\"}"));
  EXPECT_THAT(Msg(in_string.status()), HasSubstr("tensor 'a' is \"[[[["));
  auto limit = Parse(File("{\"a\":" + std::string(127, '[') + std::string(127, ']') + "}"));
  EXPECT_THAT(Msg(limit.status()), HasSubstr("tensor 'a' is [[[[[...]]]]], not an object"));
}

// Error messages quoted names and values whole, however long: a message could
// be as long as the header (100 MB).
TEST(SafetensorsRegressionTest, ErrorMessagesStayShortWhateverTheHeaderHolds) {
  std::string big(1 << 20, 'n');
  std::vector<std::string> headers = {
      "{\"" + big + "\":3}",                                  // entry not an object
      "{" + E("a", "\"" + big + "\"", "[1]", "[0,1]") + "}",  // unknown dtype
      "{" + E("a", R"("U8")", "[" + std::string(1 << 18, '1') + "]", "[0,1]") + "}",  // shape
      "{\"a\":[" + std::string(1 << 18, '1') + "," + big.substr(0, 1000) + "]}",
      "{\"__metadata__\":{\"" + big + "\":1}}",  // metadata key
      "{\"a\":\"" + big + "\x01\"}",             // JSON error quoting a token
      "{\"" + big + "\":1,\"" + big + "\":1}",   // repeated name
      "{" + E(big, R"("U8")", "[4]", "[0,4]") + "," + E(big + "b", R"("U8")", "[4]", "[2,6]") +
          "}",  // overlap
  };
  for (size_t i = 0; i < headers.size(); ++i) {
    auto f = Parse(File(headers[i], 6));
    ASSERT_FALSE(f.ok()) << i;
    EXPECT_LT(Msg(f.status()).size(), 400u) << i << ": " << Msg(f.status()).substr(0, 400);
  }
}

}  // namespace
}  // namespace cistern::cli

// `cistern load` and `cistern export` against a real cisternd, on safetensors
// files the tests write themselves.
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fmt/format.h"
#include "fmt/ranges.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using Result = CliResult;

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

struct Tensor {
  std::string name;
  std::string dtype;  // safetensors' name
  std::vector<uint64_t> shape;
  size_t item = 1;

  // Deterministic bytes, a function of the name (0 or 1 for BOOL).
  std::string Bytes() const {
    size_t n = item;
    for (uint64_t d : shape) n *= d;
    std::string b(n, '\0');
    FillForKey(name, reinterpret_cast<std::byte*>(b.data()), n);
    if (dtype == "BOOL") {
      for (char& c : b) c &= 1;
    }
    return b;
  }
};

std::string Le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file with `header` as its JSON, unpadded, then `data`.
std::string RawSafetensors(const std::string& header, const std::string& data) {
  return Le64(header.size()) + header + data;
}

// The file the reference writer makes for `tensors` in this order: compact
// JSON with "__metadata__" first, padded with spaces to a multiple of 8, the
// tensors' bytes contiguous. `metadata` is the JSON object, or empty.
std::string Safetensors(const std::vector<Tensor>& tensors, const std::string& metadata = "") {
  std::string header = "{", data;
  if (!metadata.empty()) header += "\"__metadata__\":" + metadata;
  for (const Tensor& t : tensors) {
    std::string bytes = t.Bytes();
    if (header.size() > 1) header += ",";
    header +=
        fmt::format(R"("{}":{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})", t.name, t.dtype,
                    fmt::join(t.shape, ","), data.size(), data.size() + bytes.size());
    data += bytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  return RawSafetensors(header, data);
}

// Several dtypes, odd sizes (so the 64-byte alignment in the object pads), a
// scalar and an empty tensor.
const std::vector<Tensor>& Model() {
  static const auto* t = new std::vector<Tensor>{
      {"embed.weight", "BF16", {7, 3}, 2},
      {"mask", "BOOL", {13}, 1},
      {"layer.0.bias", "F32", {5}, 4},
      {"positions", "I64", {3}, 8},
      {"scale", "F16", {}, 2},
      {"counts", "U16", {9}, 2},
      {"empty", "F64", {0, 4}, 8},
      {"ids", "I32", {1, 1, 3}, 4},
      {"last", "U8", {1}, 1},
  };
  return *t;
}

class CliLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    ASSERT_TRUE(daemon_.Start({}, &err)) << err;
    addr_ = "--address " + daemon_.socket_path() + " ";
    dir_ = daemon_.dir();
  }

  // Expects that the daemon stores no object at all.
  void ExpectNothingStored() {
    Result ls = RunCli(addr_ + "--json ls");
    EXPECT_EQ(ls.code, 0) << ls.out;
    auto listed = nlohmann::json::parse(ls.out, nullptr, false);
    ASSERT_TRUE(listed.is_object()) << ls.out;
    EXPECT_EQ(listed, nlohmann::json::parse(R"({"objects": []})"));
  }

  Daemon daemon_;
  std::string addr_, dir_;
};

TEST_F(CliLoadTest, LoadThenExportIsByteIdentical) {
  std::string in = dir_ + "/model.safetensors", out = dir_ + "/exported.safetensors";
  WriteFile(in, Safetensors(Model()));

  Result load = RunCli(addr_ + "load " + in + " --key model");
  ASSERT_EQ(load.code, 0) << load.out;
  EXPECT_THAT(load.out, HasSubstr("loaded model: generation 1, 9 tensors"));
  Result stat = RunCli(addr_ + "--json stat model");
  ASSERT_EQ(stat.code, 0) << stat.out;
  EXPECT_EQ(nlohmann::json::parse(stat.out, nullptr, false).value("tensors", -1), 9) << stat.out;

  // The object is a tensor dict with the files' tensors at aligned offsets.
  auto c = daemon_.Connect();
  ASSERT_TRUE(c.ok()) << c.status();
  auto view = (*c)->Get("model");
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_EQ(view->tensors().size(), Model().size());
  for (size_t i = 0; i < Model().size(); ++i) {
    const TensorInfo& t = view->tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, Model()[i].name);
    EXPECT_EQ(t.shape, Model()[i].shape);
    EXPECT_EQ(t.offset % 64, 0u);
    auto bytes = view->tensor(t.name);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size()),
              Model()[i].Bytes());
  }
  EXPECT_EQ(view->tensors()[0].dtype, DType::kBFloat16);
  EXPECT_EQ(view->tensors()[1].dtype, DType::kBool);
  ASSERT_TRUE(view->Release().ok());

  Result exp = RunCli(addr_ + "export model " + out);
  ASSERT_EQ(exp.code, 0) << exp.out;
  EXPECT_THAT(exp.out, HasSubstr("exported model (generation 1): 9 tensors"));
  EXPECT_EQ(ReadFile(out), ReadFile(in));
  EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
}

TEST_F(CliLoadTest, MetadataIsDroppedWithANote) {
  std::string in = dir_ + "/meta.safetensors", out = dir_ + "/out.safetensors";
  WriteFile(in, Safetensors(Model(), R"({"format":"pt","source":"test"})"));
  Result load = RunCli(addr_ + "load " + in + " --key m");
  ASSERT_EQ(load.code, 0) << load.out;
  EXPECT_THAT(load.out, HasSubstr("the __metadata__ of " + in + " (2 entries) was not stored"));
  ASSERT_EQ(RunCli(addr_ + "export m " + out).code, 0);
  EXPECT_EQ(ReadFile(out), Safetensors(Model()));
}

TEST_F(CliLoadTest, DirectoryOfShardsLoadsAsOneObject) {
  std::string shards = dir_ + "/shards", out = dir_ + "/joined.safetensors";
  std::filesystem::create_directory(shards);
  std::vector<Tensor> first(Model().begin(), Model().begin() + 4);
  std::vector<Tensor> second(Model().begin() + 4, Model().end());
  // Written second-first: the order comes from the names.
  WriteFile(shards + "/model-00002-of-00002.safetensors", Safetensors(second));
  WriteFile(shards + "/model-00001-of-00002.safetensors", Safetensors(first));
  WriteFile(shards + "/README.md", "not a shard");

  Result load = RunCli(addr_ + "load " + shards + " --key sharded");
  ASSERT_EQ(load.code, 0) << load.out;
  // Not a terminal: a plain line per shard, in order.
  size_t one = load.out.find("read 1/2 " + shards + "/model-00001-of-00002.safetensors: 4 tensors");
  size_t two = load.out.find("read 2/2 " + shards + "/model-00002-of-00002.safetensors: 5 tensors");
  EXPECT_NE(one, std::string::npos) << load.out;
  EXPECT_NE(two, std::string::npos) << load.out;
  EXPECT_LT(one, two);
  EXPECT_THAT(load.out, Not(HasSubstr("\r")));

  Result stat = RunCli(addr_ + "--json stat sharded");
  ASSERT_EQ(stat.code, 0) << stat.out;
  EXPECT_EQ(nlohmann::json::parse(stat.out, nullptr, false).value("tensors", -1), 9) << stat.out;
  ASSERT_EQ(RunCli(addr_ + "export sharded " + out).code, 0);
  EXPECT_EQ(ReadFile(out), Safetensors(Model()));
}

TEST_F(CliLoadTest, CorruptFilesAreRejectedWithExitTwoAndNothingIsStored) {
  std::string good = Safetensors(Model());
  std::string bad_dtype =
      RawSafetensors(R"({"a":{"dtype":"F7","shape":[2],"data_offsets":[0,2]}})", "xy");
  std::string overlap = RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                       R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                                       "abcdef");
  std::string truncated = good.substr(0, good.size() - 3);
  std::string cut_header = good.substr(0, 20);
  std::string repeated = Safetensors({Model()[0]});

  struct Case {
    std::string name;
    std::vector<std::pair<std::string, std::string>> files;  // under a directory if several
    std::string want;
  };
  std::vector<Case> cases = {
      {"bad_dtype", {{"f.safetensors", bad_dtype}}, "tensor 'a' has dtype \"F7\""},
      {"overlap", {{"f.safetensors", overlap}}, "tensors 'a' [0, 4) and 'b' [2, 6) overlap"},
      {"truncated", {{"f.safetensors", truncated}}, "(file truncated?)"},
      {"cut_header", {{"f.safetensors", cut_header}}, "exceeds the 12 bytes that follow it"},
      {"bad_second_shard", {{"1.safetensors", good}, {"2.safetensors", overlap}}, "overlap"},
      {"name_in_two_shards",
       {{"1.safetensors", good}, {"2.safetensors", repeated}},
       "tensor 'embed.weight' is in both"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::string path = dir_ + "/" + c.name;
    if (c.files.size() == 1) {
      path += ".safetensors";
      WriteFile(path, c.files[0].second);
    } else {
      std::filesystem::create_directory(path);
      for (const auto& [name, bytes] : c.files) WriteFile(path + "/" + name, bytes);
    }
    Result load = RunCli(addr_ + "load " + path + " --key " + c.name);
    EXPECT_EQ(load.code, 2) << load.out;
    EXPECT_THAT(load.out, HasSubstr(c.want));
  }
  Result missing = RunCli(addr_ + "load " + dir_ + "/no-such.safetensors --key k");
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_THAT(missing.out, HasSubstr("cannot open"));
  std::filesystem::create_directory(dir_ + "/empty");
  Result empty = RunCli(addr_ + "load " + dir_ + "/empty --key k");
  EXPECT_EQ(empty.code, 2) << empty.out;
  EXPECT_THAT(empty.out, HasSubstr("holds no *.safetensors files"));
  ExpectNothingStored();
}

TEST_F(CliLoadTest, ExportOfARawBytesObjectOrAMissingKeyFailsWithExitOne) {
  std::string raw = dir_ + "/raw.bin", out = dir_ + "/out.safetensors";
  WriteFile(raw, "just bytes");
  ASSERT_EQ(RunCli(addr_ + "put raw " + raw).code, 0);
  Result exp = RunCli(addr_ + "export raw " + out);
  EXPECT_EQ(exp.code, 1) << exp.out;
  EXPECT_THAT(exp.out, HasSubstr("'raw' is a raw-bytes object, not a tensor dict"));
  Result missing = RunCli(addr_ + "export nope " + out);
  EXPECT_EQ(missing.code, 1) << missing.out;
  EXPECT_THAT(missing.out, HasSubstr("'nope' not found"));
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
}

TEST_F(CliLoadTest, JsonOutputFlagsAndUsageErrors) {
  std::string in = dir_ + "/m.safetensors";
  WriteFile(in, Safetensors({Model()[0], Model()[1]}));
  Result load = RunCli(addr_ + "--json load " + in + " --key m --evictable --if-absent");
  ASSERT_EQ(load.code, 0) << load.out;
  EXPECT_EQ(nlohmann::json::parse(load.out, nullptr, false),
            nlohmann::json::parse(R"({"key": "m", "generation": 1, "tensors": 2, "bytes": 77,
                                      "files": 1})"))  // 42 bytes at 0, 13 at 64
      << load.out;
  Result stat = RunCli(addr_ + "--json stat m");
  EXPECT_EQ(nlohmann::json::parse(stat.out, nullptr, false).value("evictable", false), true)
      << stat.out;
  Result again = RunCli(addr_ + "load " + in + " --key m --if-absent");
  EXPECT_EQ(again.code, 1) << again.out;
  EXPECT_THAT(again.out, HasSubstr("exists"));

  std::string out = dir_ + "/out.safetensors";
  Result exp = RunCli(addr_ + "--json export m " + out);
  ASSERT_EQ(exp.code, 0) << exp.out;
  nlohmann::json exported = {{"key", "m"},
                             {"generation", 1},
                             {"tensors", 2},
                             {"bytes", ReadFile(in).size()},
                             {"output", out}};
  EXPECT_EQ(nlohmann::json::parse(exp.out, nullptr, false), exported) << exp.out;

  EXPECT_EQ(RunCli(addr_ + "load " + in).code, 2);  // no --key
  EXPECT_EQ(RunCli(addr_ + "export m").code, 2);    // no PATH
  Result down = RunCli("--address /tmp/no-such-cistern.sock load " + in + " --key k");
  EXPECT_EQ(down.code, 1);
  EXPECT_THAT(down.out, HasSubstr("is cisternd running?"));
}

TEST_F(CliLoadTest, OnATerminalProgressIsOneLineRedrawnInPlace) {
  std::string in = dir_ + "/m.safetensors";
  WriteFile(in, Safetensors(Model()));
  std::string cistern = BinaryPath("src/cli/cistern"), socket = daemon_.socket_path();
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl(cistern.c_str(), cistern.c_str(), "--address", socket.c_str(), "load", in.c_str(),
            "--key", "tty", nullptr);
    std::_Exit(127);
  }
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(master, buf, sizeof buf)) > 0;) out.append(buf, n);  // EIO at exit
  ::close(master);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_THAT(out, HasSubstr("\rloading [##############################] 100%"));
  EXPECT_THAT(out, HasSubstr("loaded tty: generation 1, 9 tensors"));
  EXPECT_THAT(out, Not(HasSubstr("read 1/1")));
}

}  // namespace
}  // namespace cistern::testing

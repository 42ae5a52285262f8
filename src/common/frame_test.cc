#include "src/common/frame.h"

#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"

namespace cistern {
namespace {

std::string Frame(std::string_view payload) {
  std::string out;
  AppendFrameHeader(&out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

// Copies `bytes` into the buffer as one read would.
void Feed(FrameBuffer* fb, std::string_view bytes) {
  char* tail = fb->WritableTail(bytes.size());
  std::memcpy(tail, bytes.data(), bytes.size());
  fb->Commit(bytes.size());
}

// Every whole frame now buffered, copied out; fails the test on an error.
std::vector<std::string> Drain(FrameBuffer* fb) {
  std::vector<std::string> frames;
  for (;;) {
    std::optional<std::string_view> frame;
    absl::Status s = fb->Next(&frame);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok() || !frame.has_value()) return frames;
    frames.emplace_back(*frame);
  }
}

TEST(FrameTest, HeaderIsFourBytesLittleEndian) {
  std::string out;
  AppendFrameHeader(&out, 0x01020304);
  EXPECT_EQ(out, std::string("\x04\x03\x02\x01", 4));
}

TEST(FrameTest, WholeFrameIsReturned) {
  FrameBuffer fb(1024);
  Feed(&fb, Frame("hello"));
  std::optional<std::string_view> frame;
  ASSERT_TRUE(fb.Next(&frame).ok());
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(*frame, "hello");
  EXPECT_EQ(fb.buffered(), 0u);
  ASSERT_TRUE(fb.Next(&frame).ok());
  EXPECT_FALSE(frame.has_value());
}

TEST(FrameTest, EmptyBufferHasNoFrame) {
  FrameBuffer fb(1024);
  std::optional<std::string_view> frame = "stale";
  ASSERT_TRUE(fb.Next(&frame).ok());
  EXPECT_FALSE(frame.has_value());
}

TEST(FrameTest, FrameSplitIntoOneByteCommitsAppearsOnlyWithItsLastByte) {
  FrameBuffer fb(1024);
  std::string bytes = Frame("split across many reads");
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::optional<std::string_view> frame;
    ASSERT_TRUE(fb.Next(&frame).ok());
    ASSERT_FALSE(frame.has_value()) << "frame complete after only " << i << " bytes";
    Feed(&fb, std::string_view(bytes).substr(i, 1));
  }
  EXPECT_EQ(Drain(&fb), std::vector<std::string>{"split across many reads"});
}

TEST(FrameTest, SeveralFramesInOneCommitComeOutInOrder) {
  FrameBuffer fb(1024);
  Feed(&fb, Frame("one") + Frame("") + Frame("three") + Frame(std::string(300, 'x')));
  EXPECT_EQ(Drain(&fb), (std::vector<std::string>{"one", "", "three", std::string(300, 'x')}));
  EXPECT_EQ(fb.buffered(), 0u);
}

TEST(FrameTest, TrailingPartialFrameStaysBufferedUntilCompleted) {
  FrameBuffer fb(1024);
  std::string second = Frame("second frame");
  Feed(&fb, Frame("first") + second.substr(0, 6));
  EXPECT_EQ(Drain(&fb), std::vector<std::string>{"first"});
  EXPECT_EQ(fb.buffered(), 6u);
  // Asking for more room than is left moves the partial frame to the front.
  Feed(&fb, second.substr(6) + std::string(4096, '\0'));
  std::optional<std::string_view> frame;
  ASSERT_TRUE(fb.Next(&frame).ok());
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(*frame, "second frame");
}

TEST(FrameTest, ZeroLengthFrameIsAnEmptyPayload) {
  FrameBuffer fb(1024);
  Feed(&fb, Frame(""));
  std::optional<std::string_view> frame;
  ASSERT_TRUE(fb.Next(&frame).ok());
  ASSERT_TRUE(frame.has_value());
  EXPECT_TRUE(frame->empty());
  EXPECT_EQ(fb.buffered(), 0u);
}

TEST(FrameTest, PartialHeaderIsNotAFrame) {
  FrameBuffer fb(1024);
  Feed(&fb, Frame("abc").substr(0, 3));
  std::optional<std::string_view> frame;
  ASSERT_TRUE(fb.Next(&frame).ok());
  EXPECT_FALSE(frame.has_value());
  EXPECT_EQ(fb.buffered(), 3u);
}

TEST(FrameTest, FrameOfExactlyTheMaximumIsAccepted) {
  FrameBuffer fb(16);
  Feed(&fb, Frame(std::string(16, 'm')));
  EXPECT_EQ(Drain(&fb), std::vector<std::string>{std::string(16, 'm')});
}

TEST(FrameTest, DeclaredLengthAboveTheMaximumIsAnErrorBeforeThePayloadArrives) {
  FrameBuffer fb(16);
  std::string header;
  AppendFrameHeader(&header, 17);
  Feed(&fb, header);
  std::optional<std::string_view> frame;
  absl::Status s = fb.Next(&frame);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("17"), absl::string_view::npos) << s;
  EXPECT_FALSE(frame.has_value());
}

TEST(FrameTest, HugeDeclaredLengthIsAnError) {
  FrameBuffer fb(1 << 20);
  std::string header;
  AppendFrameHeader(&header, 0xFFFFFFFF);
  Feed(&fb, header + "abc");
  std::optional<std::string_view> frame;
  EXPECT_EQ(fb.Next(&frame).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(frame.has_value());
}

TEST(FrameTest, OversizedFrameAfterAGoodOneIsReportedAfterTheGoodOne) {
  FrameBuffer fb(8);
  std::string bad;
  AppendFrameHeader(&bad, 9);
  Feed(&fb, Frame("good") + bad);
  std::optional<std::string_view> frame;
  ASSERT_TRUE(fb.Next(&frame).ok());
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(*frame, "good");
  EXPECT_FALSE(fb.Next(&frame).ok());
}

TEST(FrameTest, ManyFramesThroughASmallBufferKeepTheirContents) {
  FrameBuffer fb(64);
  std::vector<std::string> sent, received;
  std::string stream;
  for (int i = 0; i < 200; ++i) {
    sent.push_back(std::string(i % 50, static_cast<char>('a' + i % 26)));
    stream += Frame(sent.back());
  }
  // Feed in uneven chunks so frames straddle commits and the buffer compacts.
  for (size_t pos = 0, chunk = 1; pos < stream.size(); pos += chunk, chunk = chunk % 37 + 3) {
    Feed(&fb, std::string_view(stream).substr(pos, chunk));
    for (std::string& f : Drain(&fb)) received.push_back(std::move(f));
  }
  EXPECT_EQ(received, sent);
  EXPECT_EQ(fb.buffered(), 0u);
}

}  // namespace
}  // namespace cistern

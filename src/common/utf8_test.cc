#include "src/common/utf8.h"

#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace cistern {
namespace {

using namespace std::string_view_literals;

TEST(Utf8Test, EmptyStringIsValid) { EXPECT_TRUE(IsValidUtf8("")); }

TEST(Utf8Test, AsciiIsValid) {
  EXPECT_TRUE(IsValidUtf8("hello, world"));
  EXPECT_TRUE(IsValidUtf8("\x7F"));
}

TEST(Utf8Test, NulBytesAreWellFormed) { EXPECT_TRUE(IsValidUtf8("a\0b"sv)); }

TEST(Utf8Test, MultiByteSequencesOfEveryLengthAreValid) {
  EXPECT_TRUE(IsValidUtf8("\xC3\xA9"));          // U+00E9 é
  EXPECT_TRUE(IsValidUtf8("\xE2\x82\xAC"));      // U+20AC €
  EXPECT_TRUE(IsValidUtf8("\xF0\x9F\x98\x80"));  // U+1F600
  EXPECT_TRUE(
      IsValidUtf8("caf\xC3\xA9 \xE2\x82\xAC"
                  "5 \xF0\x9F\x98\x80!"));
}

TEST(Utf8Test, BoundaryCodePointsAreValid) {
  EXPECT_TRUE(IsValidUtf8("\xC2\x80"));          // U+0080, smallest 2-byte
  EXPECT_TRUE(IsValidUtf8("\xDF\xBF"));          // U+07FF, largest 2-byte
  EXPECT_TRUE(IsValidUtf8("\xE0\xA0\x80"));      // U+0800, smallest 3-byte
  EXPECT_TRUE(IsValidUtf8("\xED\x9F\xBF"));      // U+D7FF, just below surrogates
  EXPECT_TRUE(IsValidUtf8("\xEE\x80\x80"));      // U+E000, just above surrogates
  EXPECT_TRUE(IsValidUtf8("\xEF\xBF\xBF"));      // U+FFFF
  EXPECT_TRUE(IsValidUtf8("\xF0\x90\x80\x80"));  // U+10000, smallest 4-byte
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF, the last code point
}

TEST(Utf8Test, OverlongEncodingsAreRejected) {
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));          // NUL in two bytes
  EXPECT_FALSE(IsValidUtf8("\xC1\xBF"));          // U+007F in two bytes
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // '/' in three bytes
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // U+07FF in three bytes
  EXPECT_FALSE(IsValidUtf8("\xF0\x80\x80\xAF"));  // '/' in four bytes
  EXPECT_FALSE(IsValidUtf8("\xF0\x8F\xBF\xBF"));  // U+FFFF in four bytes
}

TEST(Utf8Test, SurrogatesAreRejected) {
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));              // U+D800
  EXPECT_FALSE(IsValidUtf8("\xED\xBF\xBF"));              // U+DFFF
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\xBD\xED\xB8\x80"));  // CESU-8 pair for U+1F600
}

TEST(Utf8Test, CodePointsAboveU10FFFFAreRejected) {
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(IsValidUtf8("\xF7\xBF\xBF\xBF"));  // U+1FFFFF
}

TEST(Utf8Test, BytesThatNeverStartASequenceAreRejected) {
  EXPECT_FALSE(IsValidUtf8("\xF8\x88\x80\x80\x80"));  // old 5-byte form
  EXPECT_FALSE(IsValidUtf8("\xFC\x84\x80\x80\x80\x80"));
  EXPECT_FALSE(IsValidUtf8("\xFE"));
  EXPECT_FALSE(IsValidUtf8("\xFF"));
}

TEST(Utf8Test, TruncatedSequencesAreRejected) {
  EXPECT_FALSE(IsValidUtf8("\xC3"));
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\x98"));
  EXPECT_FALSE(IsValidUtf8("abc\xF0\x9F"));
}

TEST(Utf8Test, SequenceInterruptedByAnotherCharacterIsRejected) {
  EXPECT_FALSE(IsValidUtf8("\xE2\x82x"));
  EXPECT_FALSE(IsValidUtf8("\xC3\xC3\xA9"));
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\x98\x00"sv));
}

TEST(Utf8Test, StrayContinuationBytesAreRejected) {
  EXPECT_FALSE(IsValidUtf8("\x80"));
  EXPECT_FALSE(IsValidUtf8("\xBF"));
  EXPECT_FALSE(IsValidUtf8("a\x80z"));
  EXPECT_FALSE(IsValidUtf8("\xC3\xA9\xA9"));  // one continuation too many
}

TEST(Utf8Test, ValidityDependsOnTheWholeString) {
  std::string s = "ok \xE2\x82\xAC";
  EXPECT_TRUE(IsValidUtf8(s));
  EXPECT_FALSE(IsValidUtf8(std::string_view(s).substr(0, s.size() - 1)));
}

}  // namespace
}  // namespace cistern

// Segments are independent, so both entry points split the segments among a
// few threads (the caller's plus helpers, only when the input is large enough
// to repay starting them) and combine the per-segment digests at the end.
// Within a segment, CopyAndChecksum hashes each small chunk of the source and
// then copies that chunk while it is still in L1/L2, so memory is read once.
// Copies above kStreamingBytes use non-temporal stores: the destination is not
// read back soon, and skipping the read-for-ownership of every destination line
// saves a third of the memory traffic, which is what bounds a large copy.
#include "src/store/checksum.h"

#include <emmintrin.h>
#include <endian.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

// The library's dispatching entry points pick the widest vector unit the CPU
// has (SSE2, AVX2, AVX-512) at run time; the hash values are the same.
#include <xxh_x86dispatch.h>

namespace cistern::store {
namespace {

constexpr size_t kChunk = 16 * 1024;
constexpr size_t kParallelBytes = 4 << 20;
constexpr size_t kStreamingBytes = 32 << 20;
constexpr unsigned kMaxThreads = 4;

void StreamCopy(char* d, const char* s, size_t n) {
  size_t head = std::min<size_t>(n, (16 - reinterpret_cast<uintptr_t>(d) % 16) % 16);
  std::memcpy(d, s, head);
  size_t i = head;
  for (; i + 64 <= n; i += 64) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
    __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
    __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
  }
  std::memcpy(d + i, s + i, n - i);
}

// XXH3 of one segment; copies it to `dst` on the way when dst is non-null.
uint64_t HashSegment(char* dst, const char* src, size_t n, bool streaming) {
  if (dst == nullptr) return XXH3_64bits_dispatch(src, n);
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  for (size_t done = 0; done < n; done += kChunk) {
    size_t len = std::min(kChunk, n - done);
    XXH3_64bits_update_dispatch(state, src + done, len);
    if (streaming) {
      StreamCopy(dst + done, src + done, len);
    } else {
      std::memcpy(dst + done, src + done, len);
    }
  }
  uint64_t digest = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return digest;
}

// Runs fn(index, offset, length) for every kChecksumSegment-sized segment of
// n bytes, on up to kMaxThreads threads when n is large enough to repay them.
// A segment written with streaming stores must be fenced (_mm_sfence) by the
// thread that wrote it, inside fn: a fence orders only its own core's stores.
template <typename Fn>
void ForEachSegment(size_t n, Fn fn) {
  size_t segments = (n + kChecksumSegment - 1) / kChecksumSegment;
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < segments;) {
      size_t off = i * kChecksumSegment;
      fn(i, off, std::min(kChecksumSegment, n - off));
    }
  };
  std::vector<std::thread> helpers;
  if (n >= kParallelBytes) {
    unsigned threads = std::min({std::max(1u, std::thread::hardware_concurrency()), kMaxThreads,
                                 static_cast<unsigned>(segments)});
    for (unsigned t = 1; t < threads; ++t) helpers.emplace_back(work);
  }
  work();
  for (auto& t : helpers) t.join();
}

uint64_t Segmented(char* dst, const char* src, size_t n) {
  if (n <= kChecksumSegment) return HashSegment(dst, src, n, false);
  bool streaming = dst != nullptr && n >= kStreamingBytes;
  std::vector<uint64_t> digests((n + kChecksumSegment - 1) / kChecksumSegment);
  ForEachSegment(n, [&](size_t i, size_t off, size_t len) {
    digests[i] = HashSegment(dst ? dst + off : nullptr, src + off, len, streaming);
    if (streaming) _mm_sfence();  // this thread's streaming stores, before the seal
  });
  for (uint64_t& d : digests) d = htole64(d);
  return XXH3_64bits_dispatch(digests.data(), digests.size() * sizeof(uint64_t));
}

}  // namespace

uint64_t Checksum(const void* data, size_t n) {
  return Segmented(nullptr, static_cast<const char*>(data), n);
}

uint64_t CopyAndChecksum(void* dst, const void* src, size_t n) {
  return Segmented(static_cast<char*>(dst), static_cast<const char*>(src), n);
}

ChecksumBuilder::ChecksumBuilder(size_t n)
    : n_(n), digests_(n > kChecksumSegment ? (n + kChecksumSegment - 1) / kChecksumSegment : 0) {}

bool ChecksumBuilder::Fits(size_t offset, size_t length) const {
  return offset % kChecksumSegment == 0 && offset <= n_ && length <= n_ - offset &&
         (length % kChecksumSegment == 0 || offset + length == n_);
}

void ChecksumBuilder::Add(const void* data, size_t offset, size_t length) {
  const char* p = static_cast<const char*>(data);
  if (n_ <= kChecksumSegment) {
    whole_ = XXH3_64bits_dispatch(p, n_);
    return;
  }
  for (size_t off = offset; off < offset + length; off += kChecksumSegment) {
    size_t len = std::min(kChecksumSegment, n_ - off);
    digests_[off / kChecksumSegment] = htole64(XXH3_64bits_dispatch(p + off, len));
  }
}

uint64_t ChecksumBuilder::Finish() const {
  if (n_ == 0) return XXH3_64bits_dispatch(nullptr, 0);
  if (n_ <= kChecksumSegment) return whole_;
  return XXH3_64bits_dispatch(digests_.data(), digests_.size() * sizeof(uint64_t));
}

void Copy(void* dst, const void* src, size_t n) {
  if (n == 0) return;  // an empty span may carry a null pointer: memcpy's is UB
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  if (n < kParallelBytes) {
    std::memcpy(d, s, n);
    return;
  }
  bool streaming = n >= kStreamingBytes;
  ForEachSegment(n, [&](size_t, size_t off, size_t len) {
    if (streaming) {
      StreamCopy(d + off, s + off, len);
      _mm_sfence();  // this thread's streaming stores
    } else {
      std::memcpy(d + off, s + off, len);
    }
  });
}

}  // namespace cistern::store

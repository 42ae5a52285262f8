// libFuzzer harness for the safetensors header parser (src/cli/safetensors.h).
// The input is a whole file (header and data area). Checks: errors are
// InvalidArgument and bounded in size; an accepted header's tensors cover the
// data area in order, and writing them back (MakeSafetensorsHeader) gives a
// header that parses to the same tensors. Run with -max_len of at least 256 KiB: a nesting
// 100,000 '[' deep once overflowed the stack while its error was formatted.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "src/cli/safetensors.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  uint64_t file_size = size;
  auto parsed = cistern::cli::ParseSafetensorsHeader("f", bytes, file_size);
  if (!parsed.ok()) {
    Check(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    Check(parsed.status().message().size() < 4096);
    return 0;
  }
  const cistern::cli::SafetensorsFile& f = *parsed;
  Check(f.data_start <= file_size);
  Check(f.data_start + f.data_bytes == file_size);
  uint64_t at = 0;
  std::vector<cistern::TensorInfo> infos;
  for (const auto& t : f.tensors) {
    Check(t.begin == at && t.end >= t.begin);
    at = t.end;
    infos.push_back({t.name, t.dtype, t.shape, 0, t.nbytes()});
  }
  Check(at == f.data_bytes);
  auto header = cistern::cli::MakeSafetensorsHeader(infos, f.metadata);
  if (!header.ok()) return 0;  // e.g. metadata the writer refuses
  auto back = cistern::cli::ParseSafetensorsHeader("g", *header, header->size() + f.data_bytes);
  Check(back.ok());
  Check(back->tensors == f.tensors);
  Check(back->metadata.size() == f.metadata.size());
  return 0;
}

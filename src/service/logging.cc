#include "src/service/logging.h"

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <utility>

#include "fmt/format.h"
#include "google/protobuf/stubs/logging.h"
#include "spdlog/sinks/rotating_file_sink.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace cistern::service {
namespace {

// libprotobuf's own messages (a string field that is not UTF-8 in a client's
// frame, say) go to the log instead of stderr, at most kProtobufLogsPerSecond
// a second: a client that sends bad frames cannot flood the log through them.
// The messages dropped are counted in the next line.
constexpr int kProtobufLogsPerSecond = 10;

void LogProtobufMessage(google::protobuf::LogLevel level, const char* file, int line,
                        const std::string& message) {
  static std::mutex mu;
  static int64_t window = -1;
  static int in_window = 0;
  static uint64_t dropped = 0;
  uint64_t dropped_before = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count();
    if (now != window) {
      window = now;
      in_window = 0;
    }
    if (level != google::protobuf::LOGLEVEL_FATAL && ++in_window > kProtobufLogsPerSecond) {
      ++dropped;
      return;
    }
    dropped_before = std::exchange(dropped, 0);
  }
  spdlog::level::level_enum l = level == google::protobuf::LOGLEVEL_INFO      ? spdlog::level::info
                                : level == google::protobuf::LOGLEVEL_WARNING ? spdlog::level::warn
                                : level == google::protobuf::LOGLEVEL_ERROR
                                    ? spdlog::level::err
                                    : spdlog::level::critical;
  if (dropped_before > 0) {
    spdlog::log(l, "protobuf: ({} earlier messages dropped, over {} a second)", dropped_before,
                kProtobufLogsPerSecond);
  }
  spdlog::log(l, "protobuf: {} ({}:{})", message, file, line);
}

spdlog::level::level_enum SpdLevel(config::LogLevel l) {
  switch (l) {
    case config::LOG_LEVEL_TRACE:
      return spdlog::level::trace;
    case config::LOG_LEVEL_DEBUG:
      return spdlog::level::debug;
    case config::LOG_LEVEL_WARN:
      return spdlog::level::warn;
    case config::LOG_LEVEL_ERROR:
      return spdlog::level::err;
    case config::LOG_LEVEL_OFF:
      return spdlog::level::off;
    default:
      return spdlog::level::info;
  }
}

}  // namespace

void StartConsoleLog(std::string_view name) {
  auto logger = spdlog::stdout_color_mt(std::string(name));
  spdlog::set_default_logger(logger);
  spdlog::set_pattern(fmt::format("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [{}] %v", name));
}

absl::Status ConfigureLog(std::string_view name, const std::string& log_file, uint64_t max_bytes,
                          uint32_t max_files, config::LogLevel level) {
  if (!log_file.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(log_file).parent_path(), ec);
    try {
      auto sink =
          std::make_shared<spdlog::sinks::rotating_file_sink_mt>(log_file, max_bytes, max_files);
      auto file_logger = std::make_shared<spdlog::logger>(std::string(name), std::move(sink));
      file_logger->flush_on(spdlog::level::trace);
      spdlog::set_default_logger(file_logger);
      spdlog::set_pattern(fmt::format("%Y-%m-%dT%H:%M:%S.%e %l [{}] %v", name));
    } catch (const spdlog::spdlog_ex& e) {
      return absl::InvalidArgumentError(fmt::format("log_file '{}': {}", log_file, e.what()));
    }
  }
  spdlog::set_level(SpdLevel(level));
  google::protobuf::SetLogHandler(&LogProtobufMessage);
  return absl::OkStatus();
}

}  // namespace cistern::service

// RETURN_IF_ERROR and ASSIGN_OR_RETURN, the two status macros of the house style.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CISTERN_CONCAT_INNER(a, b) a##b
#define CISTERN_CONCAT(a, b) CISTERN_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status _cistern_status = (expr);           \
    if (!_cistern_status.ok()) return _cistern_status; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  CISTERN_ASSIGN_OR_RETURN_IMPL(CISTERN_CONCAT(_cistern_or_, __LINE__), lhs, expr)

#define CISTERN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()

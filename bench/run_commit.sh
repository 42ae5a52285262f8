#!/usr/bin/env bash
# Builds cisternd and cistern_commit_bench in the Release tree of bench/run.sh
# (build/bench) and measures a get while sessions commit to a stream; see
# docs/benchmarks.md, "A get while a session commits".
#
#   bash bench/run_commit.sh                 # idle host, about 1 minute
#   bash bench/run_commit.sh --hogs "$(nproc)" # busy host: one spinning process per CPU
#
# Arguments go to cistern_commit_bench (--help lists them). Unless --json is
# given, the JSON goes to build/bench/commit_bench.json; the printed tables are
# also saved to build/bench/commit_bench.txt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${CISTERN_BENCH_BUILD_DIR:-$root/build/bench}"
jobs="${CISTERN_BENCH_JOBS:-2}"

nice cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
nice ninja -C "$build" -j "$jobs" cisternd cistern_commit_bench

args=("$@")
if [[ " $* " != *" --json "* ]]; then
  args+=(--json "$build/commit_bench.json")
fi
uptime
# Not niced: cisternd inherits the benchmark's priority.
"$build/bench/cistern_commit_bench" --cisternd "$build/src/daemon/cisternd" "${args[@]}" \
  | tee "$build/commit_bench.txt"

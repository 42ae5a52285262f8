#!/usr/bin/env bash
# Builds cisternd and cistern_store_bench in a Release tree (build/bench) and
# runs the benchmark; see docs/benchmarks.md.
#
#   bash bench/run.sh                 # full run, ~3-4 minutes on 2 cores
#   bash bench/run.sh --scale 0.1     # quick look (iteration counts x0.1)
#
# Arguments go to cistern_store_bench (--help lists them). Unless --json is
# given, the JSON goes to build/bench/store_bench.json; the printed tables are
# also saved to build/bench/store_bench.txt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${CISTERN_BENCH_BUILD_DIR:-$root/build/bench}"
jobs="${CISTERN_BENCH_JOBS:-2}"

nice cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
nice ninja -C "$build" -j "$jobs" cisternd cistern_store_bench

args=("$@")
if [[ " $* " != *" --json "* ]]; then
  args+=(--json "$build/store_bench.json")
fi
# Not niced: cisternd inherits the benchmark's priority.
"$build/bench/cistern_store_bench" --cisternd "$build/src/daemon/cisternd" "${args[@]}" \
  | tee "$build/store_bench.txt"

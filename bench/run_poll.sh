#!/usr/bin/env bash
# Builds cisternd and cistern_poll_bench in the Release tree of bench/run.sh
# (build/bench) and runs the busy-polling measurement; see docs/benchmarks.md,
# "Busy polling: CPU cost".
#
#   bash bench/run_poll.sh                   # idle host, about 6 minutes
#   bash bench/run_poll.sh --hogs "$(nproc)" # busy host: one spinning process per CPU
#
# Arguments go to cistern_poll_bench (--help lists them). Unless --json is
# given, the JSON goes to build/bench/poll_bench.json; the printed tables are
# also saved to build/bench/poll_bench.txt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${CISTERN_BENCH_BUILD_DIR:-$root/build/bench}"
jobs="${CISTERN_BENCH_JOBS:-2}"

nice cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
nice ninja -C "$build" -j "$jobs" cisternd cistern_poll_bench

args=("$@")
if [[ " $* " != *" --json "* ]]; then
  args+=(--json "$build/poll_bench.json")
fi
uptime
# Not niced: cisternd inherits the benchmark's priority.
"$build/bench/cistern_poll_bench" --cisternd "$build/src/daemon/cisternd" "${args[@]}" \
  | tee "$build/poll_bench.txt"

#!/usr/bin/env bash
# Builds the Python extension and cisternd in build/release (already
# configured) and runs the Python benchmarks; see docs/benchmarks.md, section
# "Python: weight sharing and feature hand-off".
#
#   bash bench/run_python.sh                      # full run, ~3-4 minutes on 2 cores
#   bash bench/run_python.sh --rounds 1 --ns 1,4  # quicker look
#
# Arguments go to bench/python_bench.py (--help lists them). Unless --json is
# given, the JSON goes to build/release/python_bench.json; the printed tables
# are also saved to build/release/python_bench.txt. Uses Debian's
# /usr/bin/python3 (numpy and torch); override with $CISTERN_BENCH_PYTHON.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${CISTERN_BENCH_BUILD_DIR:-$root/build/release}"
python="${CISTERN_BENCH_PYTHON:-/usr/bin/python3}"

nice cmake --build "$build" --target _cistern cisternd

args=("$@")
if [[ " $* " != *" --json "* ]]; then
  args+=(--json "$build/python_bench.json")
fi
cd "$root"
# Not niced: cisternd and the child processes inherit the benchmark's priority.
PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}" \
  "$python" bench/python_bench.py --build "$build" "${args[@]}" \
  | tee "$build/python_bench.txt"

#!/usr/bin/env bash
# Peer-to-peer benchmark between simulated hosts (docs/benchmarks.md, "Peer
# to peer"). Needs root (network namespaces) and a release build:
#
#   make release && sudo bash bench/cluster_bench.sh [--quick] [--busy]
#
# In one run, between the same two namespaces (h1 holds, h2 pulls, over the
# veths to the bridge): iperf3 (1 and 4 streams, h1 sending) and ucx_perftest
# (tag_bw, UCX_TLS=tcp) as the peers; Cistern pulls of 64 MiB and 1 GiB
# objects; get-to-view latency of remote 4 KiB, 1 MiB and 64 MiB objects
# against a local get; 64 concurrent 1 MiB pulls; then, with seven hosts,
# replicate of a 1 GiB object to six against one point-to-point pull.
# --busy runs two spinning loops on the cores throughout (real hosts are busy).
# Prints one JSON object per measurement, and a table at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CISTERN_BIN:-$root/build/release}
sim="$root/scripts/cluster-sim"
quick=0 busy=0
for a in "$@"; do
  case "$a" in --quick) quick=1 ;; --busy) busy=1 ;; *) echo "unknown option $a"; exit 2 ;; esac
done
dir=$(mktemp -d /tmp/cistern-cluster-bench-XXXXXX)
out="$dir/results.jsonl"
spinners=()
cleanup() {
  for p in "${spinners[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "$dir/two" "$dir/seven"; do CISTERN_BIN="$build" "$sim" down "$d" >/dev/null 2>&1 || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
[[ $(id -u) -eq 0 ]] || { echo "needs root (network namespaces)"; exit 1; }
if ((busy)); then
  for _ in 1 2; do (while :; do :; done) & spinners+=($!); done
fi
sim_dir=$dir/two
py() { PYTHONPATH="$build/python" /usr/bin/python3 "$root/bench/cluster_bench.py" "$sim_dir" "$@" | tee -a "$out"; }
wait_alive() {
  local n=$1 reg
  reg=(--registry "$(cat "$sim_dir/registry/registry.endpoint")" --cluster-id sim --token sim-token)
  for _ in $(seq 300); do
    [[ $("$build/src/cli/cistern" system query --json "${reg[@]}" 2>/dev/null |
         grep -o HOST_STATE_ALIVE | wc -l) -eq $n ]] && return 0
    sleep 0.1
  done
  echo "the hosts did not all join"; exit 1
}
secs=5; ((quick)) && secs=2
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), busy=$busy"

echo "== peers between h1 and h2 (${secs}s each)"
CISTERN_BIN="$build" CISTERN_SIM_ARENA=3GiB "$sim" up 2 "$sim_dir" >/dev/null
wait_alive 2
ip netns exec csh1 iperf3 -s -1 -D -B 198.18.1.11 >/dev/null
sleep 0.3
for streams in 1 4; do
  bps=$(ip netns exec csh2 iperf3 -c 198.18.1.11 -R -P "$streams" -t "$secs" -J |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
  echo "{\"what\": \"iperf3\", \"streams\": $streams, \"mib_s\": $(/usr/bin/python3 -c "print($bps/8/2**20)")}" | tee -a "$out"
  ip netns exec csh1 iperf3 -s -1 -D -B 198.18.1.11 >/dev/null
  sleep 0.3
done
pkill -f "iperf3 -s -1" 2>/dev/null || true
for size in 67108864 1073741824; do
  iters=$((size == 67108864 ? 60 : 6)); ((quick)) && iters=$((iters / 3))
  UCX_TLS=tcp ip netns exec csh1 ucx_perftest -t tag_bw -s "$size" -n "$iters" -w 2 >/dev/null 2>&1 &
  srv=$!
  sleep 1
  mbs=$(UCX_TLS=tcp ip netns exec csh2 ucx_perftest 198.18.1.11 -t tag_bw -s "$size" -n "$iters" -w 2 2>/dev/null |
        awk '/Final:/ {print $(NF-2)}')
  wait "$srv" 2>/dev/null || true
  echo "{\"what\": \"ucx_perftest\", \"size\": $size, \"mib_s\": ${mbs:-0}}" | tee -a "$out"
done

echo "== cistern pulls h1 -> h2"
reps64=10 reps1g=4; ((quick)) && reps64=4 reps1g=2
py pull 67108864 "$reps64"
py pull 1073741824 "$reps1g"
echo "== get-to-view of remote objects vs a local get"
lat4k=200 lat1m=100 lat64m=10; ((quick)) && lat4k=50 lat1m=30 lat64m=4
py latency 4096 "$lat4k"
py latency 1048576 "$lat1m"
py latency 67108864 "$lat64m"
echo "== 64 concurrent 1 MiB pulls"
py concurrent 64 1048576
CISTERN_BIN="$build" "$sim" down "$sim_dir" >/dev/null

echo "== fan-out of 1 GiB to 6 hosts (7 hosts)"
sim_dir=$dir/seven
CISTERN_BIN="$build" CISTERN_SIM_ARENA=2GiB "$sim" up 7 "$sim_dir" >/dev/null
wait_alive 7
py fanout 1073741824 7

echo "== summary"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
peer = [r["mib_s"] for r in rows if r["what"] in ("iperf3", "ucx_perftest")]
best = max(peer) if peer else 0
for r in rows:
    w = r["what"]
    if w == "iperf3":
        print(f"iperf3 {r['streams']} stream(s): {r['mib_s']:.0f} MiB/s")
    elif w == "ucx_perftest":
        print(f"ucx_perftest tag_bw {r['size'] >> 20} MiB: {r['mib_s']:.0f} MiB/s")
    elif w == "pull":
        print(f"pull {r['size'] >> 20} MiB: first {r['first_mib_s']:.0f} MiB/s, warm best "
              f"{r['warm_best_mib_s']:.0f} (median {r['warm_median_mib_s']:.0f}) = "
              f"{r['warm_best_mib_s'] / best:.2f}x the best peer ({best:.0f})")
    elif w == "latency":
        print(f"get-to-view {r['size']} B: remote p50 {r['remote_p50_us']:.0f} us p99 "
              f"{r['remote_p99_us']:.0f} us; local p50 {r['local_p50_us']:.0f} us p99 {r['local_p99_us']:.0f} us")
    elif w == "concurrent":
        print(f"{r['n']} concurrent {r['size'] >> 20} MiB pulls: {r['aggregate_mib_s']:.0f} MiB/s "
              f"aggregate, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms")
    elif w == "fanout":
        print(f"fan-out {r['size'] >> 20} MiB to {r['targets']} hosts: {r['total_s']:.2f} s = "
              f"{r['ratio_to_p2p']:.2f}x one pull ({r['p2p_pull_s']:.2f} s); origin sent "
              f"{r['origin_sent_over_size']:.2f}x the size")
PY

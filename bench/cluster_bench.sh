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
secs=3 rounds=5; ((quick)) && rounds=2
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), busy=$busy"
CISTERN_BIN="$build" CISTERN_SIM_ARENA=3GiB "$sim" up 2 "$sim_dir" >/dev/null
wait_alive 2

# The CPU every core spent over the last command (busy ticks, /proc/stat).
ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
iperf() {  # ROUND STREAMS
  local b0 t0 b1 t1 out
  ip netns exec csh1 iperf3 -s -1 -D -B 198.18.1.11 >/dev/null
  sleep 0.3
  read -r b0 t0 < <(ticks)
  out=$(ip netns exec csh2 iperf3 -c 198.18.1.11 -R -P "$2" -t "$secs" -J |
        /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bits_per_second"], e["bytes"])')
  read -r b1 t1 < <(ticks)
  /usr/bin/python3 -c "bps, n = $(echo "$out" | tr ' ' ,); hz = $(getconf CLK_TCK)
import json; print(json.dumps({'what': 'iperf3', 'round': $1, 'streams': $2, 'mib_s': bps / 8 / 2**20,
  'cpu_s_per_gib': ($b1 - $b0) / hz / (n / 2**30), 'cores_busy': ($b1 - $b0) / max(1, $t1 - $t0)}))" |
    tee -a "$out_file"
}
perftest() {  # ROUND SIZE
  local iters=$(($2 == 67108864 ? 30 : 4)) srv mbs
  UCX_TLS=tcp ip netns exec csh1 ucx_perftest -t tag_bw -s "$2" -n "$iters" -w 1 >/dev/null 2>&1 &
  srv=$!
  sleep 1
  mbs=$(UCX_TLS=tcp ip netns exec csh2 ucx_perftest 198.18.1.11 -t tag_bw -s "$2" -n "$iters" -w 1 2>/dev/null |
        awk '/Final:/ {print $(NF-2)}')
  wait "$srv" 2>/dev/null || true
  echo "{\"what\": \"ucx_perftest\", \"round\": $1, \"size\": $2, \"mib_s\": ${mbs:-0}}" | tee -a "$out_file"
}
out_file=$out
# Rounds: each runs every peer and Cistern's pulls back to back, so a ratio
# compares runs minutes apart at most (the link's speed here drifts by 1.5x
# over minutes; docs/benchmarks.md).
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds: peers, then Cistern pulls h1 -> h2"
  iperf "$round" 1
  iperf "$round" 4
  perftest "$round" 67108864
  perftest "$round" 1073741824
  py pull 67108864 5 "$round"
  py pull 1073741824 3 "$round"
done
pkill -f "iperf3 -s -1" 2>/dev/null || true

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
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
peers = [r for r in rows if r["what"] in ("iperf3", "ucx_perftest")]
pulls = [r for r in rows if r["what"] == "pull"]
def name(r):
    return (f"iperf3 {r['streams']} stream(s)" if r["what"] == "iperf3"
            else f"ucx_perftest {r['size'] >> 20} MiB")
ratios = {}
for rnd in sorted({r["round"] for r in peers}):
    ps = [r for r in peers if r["round"] == rnd]
    best = max(ps, key=lambda r: r["mib_s"])
    line = ", ".join(f"{name(r)} {r['mib_s']:.0f}" for r in ps)
    print(f"round {rnd}: {line}")
    for r in (r for r in pulls if r["round"] == rnd):
        q = r["warm_best_mib_s"] / best["mib_s"]
        ratios.setdefault(r["size"], []).append(q)
        print(f"  pull {r['size'] >> 20} MiB: first {r['first_mib_s']:.0f}, warm best "
              f"{r['warm_best_mib_s']:.0f} (median {r['warm_median_mib_s']:.0f}) = {q:.2f}x this "
              f"round's best peer ({name(best)}); {r['cpu_s_per_gib']:.2f} cpu-s/GiB, "
              f"{100 * r['cores_busy']:.0f}% of the cores")
    for r in (r for r in ps if r["what"] == "iperf3"):
        print(f"  {name(r)}: {r['cpu_s_per_gib']:.2f} cpu-s/GiB, {100 * r['cores_busy']:.0f}% of the cores")
best_peer = max(r["mib_s"] for r in peers)
for size, qs in sorted(ratios.items()):
    best_pull = max(r["warm_best_mib_s"] for r in pulls if r["size"] == size)
    print(f"pull {size >> 20} MiB / the round's best peer: median {statistics.median(qs):.2f}x "
          f"(rounds: {', '.join(f'{q:.2f}' for q in qs)}); best pull of the run / best peer of "
          f"the run: {best_pull:.0f} / {best_peer:.0f} = {best_pull / best_peer:.2f}x")
for r in rows:
    w = r["what"]
    if w == "latency":
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

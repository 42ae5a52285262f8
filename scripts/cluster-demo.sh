#!/usr/bin/env bash
# make cluster-demo: a registry and three simulated hosts (network namespaces,
# scripts/cluster-sim), a safetensors model loaded on h1, attached zero-copy by
# processes on h2 and h3 (their daemons pull it across the veths), replicated
# to every host, the origin killed, the object still served; then everything
# is cleaned up. Needs root (namespaces). Usage: cluster-demo.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build/release}" && pwd)
cli="$build/src/cli/cistern"
sim="$root/scripts/cluster-sim"
dir=$(mktemp -d /tmp/cistern-cluster-demo-XXXXXX)
py() { PYTHONPATH="$build/python" /usr/bin/python3 "$root/examples/cluster_demo.py" "$@"; }
on() { local i=$1; shift; CISTERN_HOME="$dir/h$i" CISTERN_SOCKET="$dir/h$i/cisternd.sock" "$@"; }
cleanup() {
  CISTERN_BIN="$build" "$sim" down "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
[[ $(id -u) -eq 0 ]] || { echo "cluster-demo needs root (network namespaces)"; exit 1; }

echo "== 1. a registry and three simulated hosts h1..h3 (namespaces, veths to a bridge, 198.18.1.0/24)"
CISTERN_BIN="$build" CISTERN_SIM_ARENA=1GiB "$sim" up 3 "$dir" | sed 's/^/  /'
reg=(--registry "$(cat "$dir/registry/registry.endpoint")" --cluster-id sim --token sim-token)
for _ in $(seq 300); do
  [[ $("$cli" system query --json "${reg[@]}" 2>/dev/null | grep -o HOST_STATE_ALIVE | wc -l) -eq 3 ]] && break
  sleep 0.1
done
"$cli" system query "${reg[@]}" | sed 's/^/  /'

echo "== 2. load a safetensors file on h1"
py write "$dir/model.safetensors"
on 1 "$cli" load "$dir/model.safetensors" --key demo/model | sed 's/^/  /'
for _ in $(seq 100); do "$cli" locate demo/model "${reg[@]}" >/dev/null 2>&1 && break; sleep 0.1; done
"$cli" locate demo/model "${reg[@]}" | sed 's/^/  /'

echo "== 3. two processes on h2 and one on h3 attach it (h2 and h3 pull it from h1 first)"
pids=()
for i in 2 2 3; do py attach "h$i" "$dir/h$i/cisternd.sock" demo/model & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
"$cli" locate demo/model "${reg[@]}" | sed 's/^/  /'
for i in 2 3; do on "$i" "$cli" rm demo/model | sed "s/^/  h$i: /"; done
echo "  (removed from h2 and h3, so that replicate has work to do)"

echo "== 4. replicate it to every host: the hosts pull in a chain, the origin sends each byte once"
on 1 "$cli" replicate demo/model --all | sed 's/^/  /'

echo "== 5. kill -9 the origin's daemon (h1)"
kill -9 "$(cat "$dir/h1/cisternd.pid")"
echo "  killed h1 (pid $(cat "$dir/h1/cisternd.pid"))"
for _ in $(seq 100); do  # until the registry sees h1 stop answering
  "$cli" locate demo/model "${reg[@]}" 2>/dev/null | grep -qE " h1 +alive" || break
  sleep 0.1
done
"$cli" locate demo/model "${reg[@]}" | sed 's/^/  /'

echo "== 6. new processes on h2 and h3 still attach it"
pids=()
for i in 2 3; do py attach "h$i" "$dir/h$i/cisternd.sock" demo/model & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done

echo "== 7. clean up (daemons, registry, namespaces, arenas)"
cleanup
trap - EXIT
left=$(ip netns list | grep -c '^csh' || true)
echo "  namespaces left: $left"
[[ "$left" -eq 0 ]]
echo "cluster demo complete"

#!/usr/bin/env bash
# make demo: start cisternd in a temporary directory, put a synthetic 1 GiB
# tensor dict, attach it zero-copy from 4 processes, kill -9 and restart the
# daemon, show the object survived, do the same from Python (a torch state
# dict shared by 4 processes, features handed from a producer to a consumer),
# stop the daemon. Usage: demo.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:-build/release}" && pwd)
cisternd="$build/src/daemon/cisternd"
demo="$build/examples/cistern_demo"
dir=$(mktemp -d /tmp/cistern-demo-XXXXXX)
arena="/dev/shm/cistern-demo-$$.arena"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$dir" "$arena" "${arena%.arena}".leases*
}
trap cleanup EXIT

cat > "$dir/cisternd.yaml" <<YAML
runtime_dir: $dir
socket_path: $dir/cisternd.sock
tiers:
  - name: mem
    path: $arena
    size: 2GiB
metrics_port: 0
YAML

starts=0
start() {
  starts=$((starts + 1))
  log="$dir/cisternd.$starts.log"
  "$cisternd" --config "$dir/cisternd.yaml" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 400); do
    grep -q "ready on" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.05
  done
  echo "cisternd did not become ready"; cat "$log"; exit 1
}

echo "== 1. start cisternd (state in $dir, 2 GiB arena $arena)"
start
echo "  cisternd pid $pid ready"
echo "== 2. put a synthetic 1 GiB tensor dict"
"$demo" put "$dir/cisternd.sock" llama/weights $((1 << 30))
echo "== 3. attach it from 4 processes at once"
attachers=()
for i in 1 2 3 4; do "$demo" attach "$dir/cisternd.sock" llama/weights & attachers+=($!); done
for a in "${attachers[@]}"; do wait "$a"; done
echo "== 4. kill -9 the daemon and restart it"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "  killed pid $pid"
start
grep "recovery:" "$log" | sed 's/^.*recovery:/  recovery:/'
"$demo" check "$dir/cisternd.sock" llama/weights
echo "== 5. from Python: a torch state dict shared by 4 processes, features from a producer to a consumer"
PYTHONPATH="$build/python" /usr/bin/python3 "$(dirname "$0")/../examples/demo_python.py" "$dir/cisternd.sock"
echo "== 6. stop the daemon (SIGTERM drains and exits 0)"
kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?
pid=""
echo "  cisternd exited with status $rc"
[ "$rc" -eq 0 ]
echo "demo complete"

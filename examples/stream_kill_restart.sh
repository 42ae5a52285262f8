#!/usr/bin/env bash
# A trainer killed with SIGKILL mid-run loses nothing and retrains nothing a
# durable checkpoint holds. Starts cisternd with the `cistern` CLI (temporary
# CISTERN_HOME, metrics_port 0), runs stream_producer.py into stream "demo"
# while stream_trainer.py trains on it, kills the trainer (kill -9) once it is
# past a few checkpoints, restarts it (run 2 kills itself between saving a
# checkpoint and acking it durably), restarts it again, waits for all, and
# prints the trainer's ledger summary: committed, trained, durably acked,
# retrained-after-crash (allowed only for samples no durable ack covered),
# lost and duplicated-after-durable. Exits 1 unless both are 0, the final
# checkpoint's model saw every sample exactly once and the stream is drained.
#
# Usage: stream_kill_restart.sh [BUILD_DIR]   (default build/release; the
# build needs the targets cistern, cisternd and _cistern). Takes ~5 s.
set -euo pipefail
build=$(cd "${1:-build/release}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cli="$build/src/cli/cistern"
py=/usr/bin/python3
samples=${SAMPLES:-400}
kill_after=${KILL_AFTER:-160}  # trained samples before the kill -9

export CISTERN_HOME
CISTERN_HOME=$(mktemp -d /tmp/cistern-streamdemo-XXXXXX)
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"
arena="/dev/shm/cistern-streamdemo-$$.arena"
ledger="$CISTERN_HOME/trainer.ledger"
ckpt="$CISTERN_HOME/trainer.ckpt.json"
producer="" trainer=""
cleanup() {
  for p in $trainer $producer; do kill -9 "$p" 2>/dev/null || true; done
  "$cli" daemon stop --grace 5 >/dev/null 2>&1 || true
  rm -rf "$CISTERN_HOME" "$arena" "${arena%.arena}".leases*
}
trap cleanup EXIT

cat > "$CISTERN_HOME/cisternd.yaml" <<YAML
runtime_dir: $CISTERN_HOME/run
tiers:
  - name: mem
    path: $arena
    size: 256MiB
metrics_port: 0
YAML

echo "== start cisternd (CISTERN_HOME=$CISTERN_HOME)"
"$cli" daemon start --config "$CISTERN_HOME/cisternd.yaml" --json > "$CISTERN_HOME/start.json"
export CISTERN_ADDRESS
CISTERN_ADDRESS=$($py -c 'import json, sys; print(json.load(open(sys.argv[1]))["socket"])' \
                  "$CISTERN_HOME/start.json")
echo "  socket $CISTERN_ADDRESS"

trained() { local n; n=$(grep -c '^train ' "$ledger" 2>/dev/null) || true; echo "${n:-0}"; }
ckpt_step() { $py -c 'import json, sys; print(json.load(open(sys.argv[1]))["global_step"])' "$ckpt"; }
trainer_args=(--expect "$samples" --ledger "$ledger" --checkpoint "$ckpt")

echo "== producer puts $samples samples into stream 'demo'; trainer run 1 trains on them"
$py "$here/stream_producer.py" --samples "$samples" &
producer=$!
$py "$here/stream_trainer.py" "${trainer_args[@]}" &
trainer=$!
for _ in $(seq 600); do
  [ "$(trained)" -ge "$kill_after" ] && break
  kill -0 "$trainer" 2>/dev/null || { echo "trainer run 1 ended before the kill"; exit 1; }
  sleep 0.05
done
kill -9 "$trainer"
wait "$trainer" 2>/dev/null || true
trainer=""
echo "== killed trainer run 1 (SIGKILL) after $(trained) trained samples; checkpoint step $(ckpt_step)"

die_at=$(( ($(ckpt_step) / 6 + 3) * 6 ))
echo "== trainer run 2 (restart); it kills itself between saving checkpoint $die_at and acking it"
$py "$here/stream_trainer.py" "${trainer_args[@]}" --die-after-checkpoint "$die_at" &
wait $! 2>/dev/null || true  # no "Killed" line: the trainer says why it died

echo "== trainer run 3 (restart)"
$py "$here/stream_trainer.py" "${trainer_args[@]}"
wait "$producer"
producer=""

echo "== ledger"
rc=0
$py "$here/stream_trainer.py" --summary "${trainer_args[@]}" || rc=$?
[ "$rc" -eq 0 ] && echo "no lost and no duplicated-after-durable sample" \
                || echo "FAILED: lost, duplicated or wrongly trained samples (see above)"
exit "$rc"

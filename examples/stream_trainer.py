"""A toy trainer over a stream (default "demo", filled by stream_producer.py)
that survives kill -9: it trains on batches from cistern.StreamLoader,
checkpoints every K steps, and acks a checkpointed step as optimizer-durable,
so a restart retrains only what its checkpoint does not hold.

    stream_trainer.py --expect 400 --checkpoint ckpt.json --ledger ledger.txt
    stream_trainer.py --summary --expect 400 --checkpoint ckpt.json --ledger ledger.txt

A step "trains" by checking every tensor against its sample id and adding
the labels to the model (a sum and a count). Every --checkpoint-every steps
the model and the step go to the checkpoint file (written to a temporary file,
fsynced, renamed), then the batch is acked with optimizer_durable=True: the
stream frees every sample acked at or below that step. Other batches are
acked as they finish, not durably: their bytes stay in the stream.

On start the trainer reads its checkpoint, acks durably what that checkpoint
holds but the stream does not yet know (a crash between saving and acking),
calls stream.reconcile() (leased and not-durably-acked samples go back to
the queue) and resumes at the checkpoint's step.

The ledger gets one line per trained sample (`train RUN STEP SAMPLE
DELIVERIES`) and one per durable ack (`durable RUN STEP`; `recovered RUN STEP`
for the durable step a restart finds for the run before it). --summary
resolves it (one line per training, with whether a durable ack later covered
it, in LEDGER.resolved) and prints the totals; it exits 1 if a committed
sample was lost, a sample was trained again after a durable ack covered it,
or the model in the checkpoint did not see every sample exactly once.
"""

import argparse
import collections
import json
import os
import signal
import sys
import time

import numpy as np

import cistern
from cistern import StreamLoader


class Ledger:
    def __init__(self, path: str):
        self.path = path

    def lines(self):
        try:
            with open(self.path) as f:
                return [line.split() for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def append(self, text: str) -> None:
        """One write(2) per call: a kill -9 leaves whole lines."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def load_checkpoint(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"global_step": 0, "label_sum": 0, "samples": 0, "last_batch": []}


def save_checkpoint(path: str, state: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def check_sample(ref, t, dim: int) -> int:
    i = int(ref.sample_id[1:])
    if (t["x"].shape != (dim,) or not np.array_equal(t["x"], np.arange(dim, dtype=np.float32) + i)
            or t["label"].tolist() != [i]):
        raise SystemExit(f"trainer: sample {ref.sample_id} has wrong tensors "
                         f"(x[:4]={t['x'][:4].tolist()}, label={t['label'].tolist()})")
    return i


def train(args) -> int:
    client = cistern.connect(args.address, name="stream_trainer")
    stream = cistern.Stream(client, args.stream, lease_timeout=args.lease_timeout)
    ledger = Ledger(args.ledger)
    run = sum(1 for line in ledger.lines() if line[0] == "start") + 1
    model = load_checkpoint(args.checkpoint)
    step = model["global_step"]

    # What the checkpoint holds, the stream must not deliver again: if we died
    # between saving it and its durable ack, ack its last batch now.
    durable = stream.stat()["durable_step"]
    if step > 0 and (durable is None or durable < step):
        refs = [cistern.SampleRef(sid, "", gen, 0, (), {}, lease)
                for sid, gen, lease in model["last_batch"]]
        try:
            stream.ack(refs, global_step=step, optimizer_durable=True)
            print(f"trainer run {run}: acked checkpoint step {step} as durable", flush=True)
        except (cistern.FailedPreconditionError, KeyError) as e:
            print(f"trainer run {run}: checkpoint step {step} cannot be acked ({e}); "
                  "its last batch will be trained again", flush=True)
    durable = stream.stat()["durable_step"]
    if run > 1 and durable is not None:
        ledger.append(f"recovered {run - 1} {durable}\n")
    rec = stream.reconcile()
    ledger.append(f"start {run} {step}\n")
    print(f"trainer run {run}: resuming at step {step} (durable step {durable}); reconcile "
          f"requeued {rec.requeued}, released {rec.released}, lost {rec.lost}; depth {rec.pending}",
          flush=True)

    deadline = time.monotonic() + args.deadline
    batch_size = args.batch
    while True:
        with StreamLoader(stream, batch_size, timeout=args.wait, start_step=step,
                          as_="numpy") as loader:
            for batch in loader:
                step = batch.step
                for ref, t in zip(batch.refs, batch.samples):
                    model["label_sum"] += check_sample(ref, t, args.dim)
                model["samples"] += len(batch)
                time.sleep(args.step_time)  # the "optimizer step"
                ledger.append("".join(f"train {run} {step} {r.sample_id} {r.deliveries}\n"
                                      for r in batch.refs))
                if step % args.checkpoint_every == 0:
                    model["global_step"] = step
                    model["last_batch"] = [[r.sample_id, r.generation, r.lease_id]
                                           for r in batch.refs]
                    save_checkpoint(args.checkpoint, model)
                    if step == args.die_after_checkpoint:
                        print(f"trainer run {run}: checkpoint step {step} saved; dying (SIGKILL) "
                              "before its durable ack", flush=True)
                        os.kill(os.getpid(), signal.SIGKILL)
                    batch.done(optimizer_durable=True, now=True)
                    ledger.append(f"durable {run} {step}\n")
                if step % 10 == 0:
                    print(f"trainer run {run}: step {step}, {model['samples']} samples in the "
                          "model", flush=True)
        # No full batch within --wait: checkpoint what we have (this also frees
        # the stream's bytes for a producer waiting on backpressure).
        if step > model["global_step"]:
            model["global_step"] = step
            model["last_batch"] = []
            save_checkpoint(args.checkpoint, model)
            stream.ack([], global_step=step, optimizer_durable=True)
            ledger.append(f"durable {run} {step}\n")
        info = stream.stat()
        if info["committed"] >= args.expect and info["depth"] == 0 and info["in_flight"] == 0:
            break
        if info["committed"] >= args.expect and 0 < info["depth"] < batch_size:
            batch_size = info["depth"]  # the tail
        if time.monotonic() > deadline:
            print(f"trainer run {run}: gave up after {args.deadline} s: {info}", file=sys.stderr)
            return 1
    ledger.append(f"done {run} {step}\n")
    print(f"trainer run {run}: finished at step {step}; {model['samples']} samples in the model",
          flush=True)
    return 0


def summary(args) -> int:
    lines = Ledger(args.ledger).lines()
    covered_to = collections.defaultdict(lambda: -1)  # run -> highest durable step
    resumed_at = {}  # run -> the checkpoint step it started from
    for f in lines:
        if f[0] in ("durable", "recovered"):
            covered_to[int(f[1])] = max(covered_to[int(f[1])], int(f[2]))
        elif f[0] == "start":
            resumed_at[int(f[1])] = int(f[2])
    final_step = load_checkpoint(args.checkpoint)["global_step"]
    # A training is in the final model if the next run resumed from a
    # checkpoint at or after its step (the last run: the final checkpoint).
    kept_to = {r: resumed_at.get(r + 1, final_step) for r in resumed_at}
    trainings = collections.defaultdict(list)  # sample -> [(run, step, durable, kept)]
    resolved = []
    for f in lines:
        if f[0] != "train":
            continue
        run, step, sid = int(f[1]), int(f[2]), f[3]
        durable, kept = step <= covered_to[run], step <= kept_to.get(run, -1)
        trainings[sid].append((run, step, durable, kept))
        resolved.append(f"{sid} run={run} step={step} durable={'yes' if durable else 'no'} "
                        f"in_final_model={'yes' if kept else 'no'}\n")
    with open(args.ledger + ".resolved", "w") as out:
        out.writelines(resolved)

    expected = [f"s{i:05d}" for i in range(args.expect)]
    durably = {s for s, t in trainings.items() if any(x[2] for x in t)}
    retrained = {s for s, t in trainings.items() if len(t) > 1 and not any(x[2] for x in t[:-1])}
    # Trained again after a durable ack covered an earlier training of it.
    dup_after_durable = {s for s, t in trainings.items() if any(x[2] for x in t[:-1])}
    # Committed, but no training of it is in the final model.
    lost = [s for s in expected if not any(x[3] for x in trainings.get(s, ()))]
    runs = len(resumed_at)

    client = cistern.connect(args.address, name="stream_trainer_summary")
    info = cistern.Stream(client, args.stream).stat()
    model = load_checkpoint(args.checkpoint)
    want_sum = sum(range(args.expect))
    model_ok = model["label_sum"] == want_sum and model["samples"] == args.expect
    stream_ok = (info["committed"] == args.expect and info["acked"] == args.expect
                 and info["depth"] == info["in_flight"] == info["awaiting_durable"] == 0
                 and info["lost"] == 0)

    print(f"ledger summary ({runs} trainer runs, {sum(len(t) for t in trainings.values())} "
          f"trainings; per training: {args.ledger}.resolved)")
    print(f"  committed                 {info['committed']:6d}")
    print(f"  trained                   {len(trainings):6d}")
    print(f"  durably acked             {len(durably):6d}")
    print(f"  retrained after crash     {len(retrained):6d}   (allowed: not durable before)")
    print(f"  lost                      {len(lost):6d}   (no training of it in the final model)")
    print(f"  duplicated after durable  {len(dup_after_durable):6d}")
    print(f"  model                     {model['samples']} samples, label sum {model['label_sum']} "
          f"(exactly once: {args.expect}, {want_sum}) {'ok' if model_ok else 'WRONG'}")
    print(f"  stream                    depth {info['depth']}, in flight {info['in_flight']}, "
          f"awaiting durable {info['awaiting_durable']}, acked {info['acked']}, lost "
          f"{info['lost']}, requeued {info['requeued']}, producer waits {info['producer_waits']}"
          f" {'ok' if stream_ok else 'WRONG'}")
    shown = sorted(retrained)[:3]
    if shown:
        print("  e.g. (from the resolved ledger):")
        for line in resolved:
            if line.split()[0] in shown:
                print(f"    {line}", end="")
    if lost:
        print(f"  lost samples: {' '.join(lost[:20])}{' ...' if len(lost) > 20 else ''}")
    if dup_after_durable:
        print(f"  duplicated after durable: {' '.join(sorted(dup_after_durable)[:20])}")
    return 0 if not lost and not dup_after_durable and model_ok and stream_ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default=None)
    p.add_argument("--stream", default="demo")
    p.add_argument("--expect", type=int, default=400, help="samples the producer puts")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--checkpoint-every", type=int, default=6)
    p.add_argument("--checkpoint", default="stream_trainer.ckpt.json")
    p.add_argument("--ledger", default="stream_trainer.ledger")
    p.add_argument("--step-time", type=float, default=0.03, help="seconds one step takes")
    p.add_argument("--wait", type=float, default=1.0, help="seconds to wait for a full batch")
    p.add_argument("--lease-timeout", type=float, default=60.0)
    p.add_argument("--deadline", type=float, default=120.0)
    p.add_argument("--die-after-checkpoint", type=int, default=None, metavar="STEP",
                   help="kill -9 itself right after saving the checkpoint of STEP, before its "
                        "durable ack (the narrowest crash window)")
    p.add_argument("--summary", action="store_true", help="resolve the ledger and print totals")
    args = p.parse_args()
    return summary(args) if args.summary else train(args)


if __name__ == "__main__":
    sys.exit(main())

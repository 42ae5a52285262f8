#!/usr/bin/env python3
"""Python benchmarks of the `cistern` package (see docs/benchmarks.md, section
"Python: weight sharing and feature hand-off").

1. Weight sharing. N = 1, 4, 8 fresh processes, started together, obtain a
   state dict of 16 float32 tensors (2 GiB, and 256 MiB to show the size
   dependence) in three ways:
     cistern     cistern.connect(socket).get(key, as_="torch") of a dict put once
     torch_load  torch.load of a file written once with torch.save in /dev/shm
     memmap      numpy.memmap of a safetensors-format file in /dev/shm, the dict
                 built as torch tensors over it (header offsets), no copy
   Each child imports numpy and torch (timed), reports, and waits for "go" on
   stdin; the parent sends "go" to all N at once. The child times its load call
   (wall and CPU) and reports RssAnon / RssFile / RssShmem after it. When all N
   are ready, the parent sends "touch": each child checks the values, then
   touches one element per 4 KiB page of every tensor (timed; all N at once)
   and reports the memory again. Wall = last child's ready time - go.
2. Per-tensor cost of a warm get in Python (in this process): objects of 1, 16,
   256 tensors, stage by stage.
3. Feature hand-off. One producer process, one consumer process (spawned):
     cistern     producer FeatureStore.put, SampleRef fields over a Pipe; the
                 consumer FeatureStore.get, reads, FeatureStore.release
     shared_dir  producer torch.save to a temp name in /dev/shm + os.rename; the
                 consumer polls for the file, torch.load, reads, os.unlink
     stream      producer Stream.put per sample (object put + commit, one SQLite
                 transaction each); the consumer a StreamLoader, batches of 8,
                 as_="torch", durable acks (each frees its 8 samples), reads
     stream_b8   the same object puts, the refs committed 8 per Stream.commit;
                 the same consumer
     cistern_w   as cistern, but the producer writes each sample in place:
                 FeatureStore.writer, then copy_ of its two tensors into the
                 writer's (the same bytes read and written once, as put does)
     stream_w8   as stream_b8, but each sample written in place with
                 Stream.writer (copy_ as in cistern_w); 8 refs per commit
   samples {"hidden": float32 [3/4 of the bytes], "logits": float16 [1/4]}.
   Each stream job uses a fresh stream and must end with it empty (depth,
   in_flight, awaiting_durable, resident_bytes 0) and the daemon's object
   count as before, or the run stops. The serial table times each side alone,
   the stream stage by stage (object put, commit, lease, get+read, ack).

Everything this run creates (daemon, arena, files, processes) is removed at
the end, also on an exception, SIGINT or SIGTERM.

    PYTHONPATH=build/release/python /usr/bin/python3 bench/python_bench.py \
        --json build/release/python_bench.json
"""

import argparse
import gc
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GiB = 1 << 30
MiB = 1 << 20
NTENSORS = 16

# ----------------------------------------------------------------------------
# The weight-sharing child: one fresh interpreter per process.

CHILD = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])

def mem():
    out = {}
    with open('/proc/self/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in ('RssAnon', 'RssFile', 'RssShmem'):
                out[k] = int(v.split()[0]) * 1024
    return out

def say(obj):
    sys.stdout.write('@@' + json.dumps(obj) + '\n')
    sys.stdout.flush()

r = {'started': time.monotonic()}
t = time.perf_counter(); import numpy; r['import_numpy_s'] = time.perf_counter() - t
t = time.perf_counter(); import torch; r['import_torch_s'] = time.perf_counter() - t
t = time.perf_counter(); import cistern; r['import_cistern_s'] = time.perf_counter() - t
import warnings
r['mem_before'] = mem()
say({'imported': True})
if sys.stdin.readline().strip() != 'go':
    sys.exit(3)
r['go_seen'] = time.monotonic()
variant = args['variant']
c0 = time.process_time(); t0 = time.perf_counter()
if variant == 'cistern':
    client = cistern.connect(args['socket'])
    t1 = time.perf_counter()
    sd = client.get(args['key'], as_='torch')
    t2 = time.perf_counter()
    r['connect_s'] = t1 - t0
    r['get_s'] = t2 - t1
elif variant == 'torch_load':
    sd = torch.load(args['path'])
elif variant == 'memmap':
    with open(args['path'], 'rb') as f:
        n = int.from_bytes(f.read(8), 'little')
        header = json.loads(f.read(n))
    base = 8 + n
    mm = numpy.memmap(args['path'], dtype=numpy.uint8, mode='r')
    dtypes = {'F32': numpy.float32, 'F16': numpy.float16}
    sd = {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "The given NumPy array is not writable"
        for name, e in header.items():
            if name == '__metadata__':
                continue
            a = numpy.ndarray(tuple(e['shape']), dtypes[e['dtype']], buffer=mm,
                              offset=base + e['data_offsets'][0])
            sd[name] = torch.from_numpy(a)
else:
    sys.exit(4)
r['call_s'] = time.perf_counter() - t0
r['call_cpu_s'] = time.process_time() - c0
r['ready'] = time.monotonic()
r['mem_after'] = mem()
say(r)
# Wait until every process is ready, so that no process checks or touches its
# pages while another is still obtaining its dict.
if sys.stdin.readline().strip() != 'touch':
    sys.exit(3)
r = {}
# Untimed check: the right tensors, values at both ends.
names = ['layer%02d' % i for i in range(args['tensors'])]
r['ok'] = (sorted(sd) == names and
           all(float(sd[n].view(-1)[0]) == i and float(sd[n].view(-1)[-1]) == i
               for i, n in enumerate(names)) and
           sum(x.numel() * x.element_size() for x in sd.values()) == args['nbytes'])
r['touch_start'] = time.monotonic()
# Touch all: one float32 per 4 KiB page of every tensor.
t0 = time.perf_counter()
s = sum(float(sd[n].view(-1)[::1024].sum()) for n in names)
r['touch_s'] = time.perf_counter() - t0
expect = sum(i * ((sd[n].numel() + 1023) // 1024) for i, n in enumerate(names))
r['ok'] = r['ok'] and s == expect
r['touch_end'] = time.monotonic()
r['mem_touched'] = mem()
say(r)
"""


# ----------------------------------------------------------------------------
# Helpers

_live = []  # processes to kill on the way out


def log(*a):
    print(*a, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024
    import numpy
    import torch
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "mem_total": total, "python": sys.version.split()[0], "executable": sys.executable,
            "torch": torch.__version__, "numpy": numpy.__version__,
            "torch_threads": torch.get_num_threads()}


class Daemon:
    """A cisternd like python/tests/conftest.py starts: temp config, unique arena."""

    def __init__(self, build, tier_bytes, tag, extra_yaml=""):
        self.dir = tempfile.mkdtemp(prefix="cistern-pybench-")
        self.socket = os.path.join(self.dir, "cisternd.sock")
        self.arena = f"/dev/shm/cistern-pybench-{os.getpid()}-{tag}.arena"
        self.config = os.path.join(self.dir, "cisternd.yaml")
        self.proc = None
        with open(self.config, "w") as f:
            f.write(f"runtime_dir: {self.dir}\nsocket_path: {self.socket}\nmetrics_port: 0\n"
                    f"tiers:\n  - name: mem\n    path: {self.arena}\n    size: {tier_bytes}\n"
                    + extra_yaml)
        self.log = open(os.path.join(self.dir, "cisternd.log"), "w")
        self.proc = subprocess.Popen([os.path.join(build, "src/daemon/cisternd"), "--config",
                                      self.config], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("cisternd did not start:\n" + open(self.log.name).read())
            time.sleep(0.02)
        import cistern
        while True:  # the socket exists; wait until a connect succeeds
            try:
                cistern.connect(self.socket)
                break
            except ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        table = self.arena[: -len(".arena")] + ".leases"
        for path in (self.arena, table, table + ".index", table + ".fast"):
            if os.path.exists(path):
                os.unlink(path)


def make_state_dict(nbytes):
    import torch
    per = nbytes // NTENSORS // 4
    cols = 4096 if per % 4096 == 0 else 1024
    return {"layer%02d" % i: torch.full((per // cols, cols), float(i)) for i in range(NTENSORS)}


def write_safetensors(path, sd):
    """The safetensors layout: u64 header length, JSON header, data."""
    header, off = {}, 0
    for name, t in sd.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": {"float32": "F32", "float16": "F16"}[str(t.dtype)[6:]],
                        "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 64)  # data starts 64-byte aligned
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for t in sd.values():
            f.write(memoryview(t.numpy()).cast("B"))


# ----------------------------------------------------------------------------
# 1. Weight sharing

def run_group(variant, n, args_child, env):
    """Starts n children together, sends go when all have imported; returns
    (wall go->last ready, wall spawn->last ready, child records)."""
    cmd = [sys.executable, "-c", CHILD, json.dumps(args_child)]
    t_spawn = time.monotonic()
    procs = []
    try:
        for _ in range(n):
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=env)
            procs.append(p)
            _live.append(p)

        def read_msg(p):
            while True:
                line = p.stdout.readline()
                if not line:
                    p.wait()
                    raise RuntimeError(f"{variant} child exited with {p.returncode}")
                if line.startswith("@@"):
                    return json.loads(line[2:])

        for p in procs:
            read_msg(p)
        t_go = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        recs = [read_msg(p) for p in procs]
        for p in procs:
            p.stdin.write("touch\n")
            p.stdin.flush()
        for p, r in zip(procs, recs):
            r.update(read_msg(p))
        for p in procs:
            p.stdin.close()
            if p.wait(60) != 0:
                raise RuntimeError(f"{variant} child exited with {p.returncode}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p in _live:
                _live.remove(p)
    last = max(r["ready"] for r in recs)
    if not all(r["ok"] for r in recs):
        raise RuntimeError(f"{variant}: a child read wrong values")
    touch_wall = max(r["touch_end"] for r in recs) - min(r["touch_start"] for r in recs)
    return last - t_go, last - t_spawn, touch_wall, recs


def summarize_group(variant, label, n, runs):
    recs = [r for run in runs for r in run["children"]]

    def med(f):
        return median([f(r) for r in recs])

    s = {
        "variant": variant, "size": label, "n": n, "rounds": len(runs),
        "wall_go_s": median([run["wall_go_s"] for run in runs]),
        "wall_go_min_s": min(run["wall_go_s"] for run in runs),
        "wall_go_max_s": max(run["wall_go_s"] for run in runs),
        "wall_spawn_s": median([run["wall_spawn_s"] for run in runs]),
        "call_s": med(lambda r: r["call_s"]),
        "call_min_s": min(r["call_s"] for r in recs),
        "call_max_s": max(r["call_s"] for r in recs),
        "call_cpu_s": med(lambda r: r["call_cpu_s"]),
        "import_torch_s": med(lambda r: r["import_torch_s"]),
        "import_numpy_s": med(lambda r: r["import_numpy_s"]),
        "import_cistern_s": med(lambda r: r["import_cistern_s"]),
        "touch_s": med(lambda r: r["touch_s"]),
        "touch_wall_s": median([run["touch_wall_s"] for run in runs]),
    }
    for when in ("mem_before", "mem_after", "mem_touched"):
        for k in ("RssAnon", "RssFile", "RssShmem"):
            s[f"{when}_{k}"] = med(lambda r: r[when][k])
    s["anon_growth"] = med(lambda r: r["mem_after"]["RssAnon"] - r["mem_before"]["RssAnon"])
    if variant == "cistern":
        s["connect_s"] = med(lambda r: r["connect_s"])
        s["get_s"] = med(lambda r: r["get_s"])
    return s


def weights_phase(variants, sizes, ns, rounds, specs, env, results, skipped):
    for r in range(rounds):
        for label, nbytes in sizes:
            for n in ns:
                order = variants if r % 2 == 0 else list(reversed(variants))
                for v in order:
                    need = n * (nbytes + 200 * MiB) if v == "torch_load" else n * 200 * MiB
                    avail = mem_available()
                    if need > avail - GiB // 2:
                        skipped.append(f"{v} {label} N={n} round {r + 1}: needs ~{need / GiB:.1f} "
                                       f"GiB, MemAvailable {avail / GiB:.1f} GiB")
                        log("   skipped:", skipped[-1])
                        continue
                    wall_go, wall_spawn, touch_wall, recs = run_group(v, n, specs[(v, label)], env)
                    results.setdefault((v, label, n), []).append(
                        {"round": r + 1, "wall_go_s": wall_go, "wall_spawn_s": wall_spawn,
                         "touch_wall_s": touch_wall, "children": recs})
                    log(f"   round {r + 1} {label:>7} N={n} {v:<10} wall {wall_go * 1e3:9.2f} ms, "
                        f"call median {median([x['call_s'] for x in recs]) * 1e3:9.2f} ms")


# ----------------------------------------------------------------------------
# 2. Per-tensor cost of a warm get

def per_tensor_phase(client, iters):
    import torch
    rows = []
    for k in (1, 16, 256):
        key = f"pertensor/{k}"
        client.put(key, {"t%03d" % i: torch.full((1024,), float(i)) for i in range(k)})
        stages = {
            "native get (view)": lambda: client._c.get(key, 0),
            "native get + manifest": lambda: (lambda v: (v, v.tensors))(client._c.get(key, 0)),
            "get as_=memoryview": lambda: client.get(key, as_="memoryview"),
            "get as_=numpy": lambda: client.get(key, as_="numpy"),
            "get as_=torch": lambda: client.get(key, as_="torch"),
        }
        for name, fn in stages.items():
            for _ in range(max(10, iters // 10)):
                fn()
            ts = []
            for _ in range(iters):
                t0 = time.perf_counter()
                x = fn()
                ts.append(time.perf_counter() - t0)
                del x  # the release is not timed
            rows.append({"tensors": k, "stage": name, "median_us": median(ts) * 1e6,
                         "min_us": min(ts) * 1e6})
        client.remove(key)
    return rows


# ----------------------------------------------------------------------------
# 3. Feature hand-off (multiprocessing, spawn)

def _sample_shapes(nbytes):
    hidden = nbytes * 3 // 4 // 4  # float32
    logits = nbytes // 4 // 2  # float16
    return (hidden // 1024, 1024), (logits // 1024, 1024)


def _read(tensors, i):
    """What the consumer does with a sample: a few elements, and a check."""
    h, l = tensors["hidden"], tensors["logits"]
    v = float(h[0, :8].sum()) + float(l[0, :8].float().sum())
    return v, float(h[0, 0]) == float(i)


STREAM_BATCH = 8  # stream_b8: refs per Stream.commit; both stream variants: samples per lease/ack
STREAM_WAIT_S = 60.0  # put/commit/lease waits of the stream variants (never reached in a run)


def _stream_name(tag):
    """A stream name (1..128 of [A-Za-z0-9._-]) for a job tag like 'r0-stream-1 MiB'."""
    return "handoff-" + re.sub(r"[^A-Za-z0-9._-]", "", tag)


def _producer(ctl, out, socket, shm_dir):
    import torch
    import cistern
    from cistern import FeatureSpec, SampleRef
    client = cistern.connect(socket)
    fs = cistern.FeatureStore(client, namespace="handoff")
    ctl.send("imported")
    while True:
        job = ctl.recv()
        if job is None:
            return
        variant, nbytes, count, tag = job
        hs, ls = _sample_shapes(nbytes)
        hidden = torch.randn(hs)
        logits = torch.randn(ls).half()
        spec = {"hidden": ("float32", tuple(hs)), "logits": ("float16", tuple(ls))}
        if variant in ("stream", "stream_b8", "stream_w8"):
            stream = cistern.Stream(client, _stream_name(tag))
            features = (FeatureSpec("hidden", "float32", tuple(hs)),
                        FeatureSpec("logits", "float16", tuple(ls)))
            pending = []
        ctl.send("ready")
        ctl.recv()  # go
        for i in range(count):
            hidden[0, 0] = float(i)
            sample = {"hidden": hidden, "logits": logits}
            if variant == "cistern":
                ref = fs.put(f"{tag}-{i}", sample)
                out.send(tuple(ref))
            elif variant == "cistern_w":
                with fs.writer(f"{tag}-{i}", spec) as w:
                    w.tensors["hidden"].copy_(hidden)
                    w.tensors["logits"].copy_(logits)
                out.send(tuple(w.ref))
            elif variant == "stream_w8":
                with stream.writer(f"{i:08d}", spec, timeout=STREAM_WAIT_S) as w:
                    w.tensors["hidden"].copy_(hidden)
                    w.tensors["logits"].copy_(logits)
                pending.append(w.ref)
                if len(pending) == STREAM_BATCH or i == count - 1:
                    stream.commit(pending, timeout=STREAM_WAIT_S)
                    pending = []
            elif variant == "stream":
                # Stream.put: one object <stream>/<id> (put_tensors, evictable) + commit of
                # its ref (one SQLite transaction): two round trips, one fsync per sample.
                stream.put(f"{i:08d}", sample, timeout=STREAM_WAIT_S)
            elif variant == "stream_b8":
                # The same object as Stream.put writes; refs committed STREAM_BATCH at a time.
                sid = f"{i:08d}"
                key = f"{stream.name}/{sid}"
                o = client.put(key, sample, evictable=True, if_absent=True,
                               timeout=STREAM_WAIT_S)
                pending.append(SampleRef(sid, key, o.generation, o.nbytes, features, {}))
                if len(pending) == STREAM_BATCH or i == count - 1:
                    stream.commit(pending, timeout=STREAM_WAIT_S)
                    pending = []
            else:
                tmp = os.path.join(shm_dir, f".tmp-{tag}-{i}.pt")
                torch.save(sample, tmp)
                os.rename(tmp, os.path.join(shm_dir, f"{tag}-{i}.pt"))
        ctl.send(time.monotonic())


def _consume_stream(client, stream, count, as_):
    """The stream variants' consumer: a StreamLoader (batches of STREAM_BATCH,
    durable step-numbered acks, so every ack frees its samples at once) for
    the full batches, then lease/get/ack for a short tail. Returns (bad, acc)."""
    import cistern
    bad, acc = 0, 0.0
    full = count - count % STREAM_BATCH
    loader = cistern.StreamLoader(stream, STREAM_BATCH, timeout=STREAM_WAIT_S, as_=as_,
                                  optimizer_durable=True)
    got = 0
    while got < full:
        batch = next(loader)  # acks the previous batch first
        for ref, tensors in zip(batch.refs, batch.samples):
            v, ok = _read(tensors, int(ref.sample_id))
            acc += v
            bad += not ok
        got += len(batch)
        del tensors, batch
    loader.close()  # acks the last batch
    if count > full:
        refs = stream.lease(count - full, timeout=STREAM_WAIT_S, min_refs=count - full)
        for ref in refs:
            tensors = client.get(ref.key, generation=ref.generation, as_=as_)
            v, ok = _read(tensors, int(ref.sample_id))
            acc += v
            bad += not ok
            del tensors
        stream.ack(refs, global_step=(loader.step or 0) + 1, optimizer_durable=True)
    return bad, acc


def _consumer(ctl, inp, socket, shm_dir, poll_s):
    import torch
    import cistern
    from cistern import SampleRef
    client = cistern.connect(socket)
    fs = cistern.FeatureStore(client, namespace="handoff")
    ctl.send("imported")
    while True:
        job = ctl.recv()
        if job is None:
            return
        variant, nbytes, count, tag = job
        if variant in ("stream", "stream_b8", "stream_w8"):
            stream = cistern.Stream(client, _stream_name(tag))  # create-or-open
        ctl.send("ready")
        ctl.recv()  # go
        bad = empty_polls = 0
        acc = 0.0
        if variant in ("stream", "stream_b8", "stream_w8"):
            bad, acc = _consume_stream(client, stream, count, "torch")
            count = 0  # done
        for i in range(count):
            if variant in ("cistern", "cistern_w"):
                ref = SampleRef(*inp.recv())
                while True:
                    try:
                        tensors, lease = fs.get(ref)
                        break
                    except KeyError:
                        empty_polls += 1
                        time.sleep(poll_s)
                v, ok = _read(tensors, i)
                del tensors
                fs.release(lease)
            else:
                path = os.path.join(shm_dir, f"{tag}-{i}.pt")
                while True:
                    try:
                        tensors = torch.load(path)
                        break
                    except FileNotFoundError:
                        empty_polls += 1
                        time.sleep(poll_s)
                v, ok = _read(tensors, i)
                del tensors
                os.unlink(path)
            acc += v
            bad += not ok
        ctl.send({"end": time.monotonic(), "bad": bad, "empty_polls": empty_polls, "acc": acc})


def serial_costs(client, shm_dir, sizes, iters):
    """Each side's per-sample work, timed alone in this process (no second
    process, no pipe): where the time of a hand-off goes."""
    import torch
    import cistern
    fs = cistern.FeatureStore(client, namespace="serial")
    rows = []
    for label, nbytes, _ in sizes:
        hs, ls = _sample_shapes(nbytes)
        sample = {"hidden": torch.randn(hs), "logits": torch.randn(ls).half()}
        n = iters if nbytes <= MiB else max(20, iters // 8)
        put, get, save, load = [], [], [], []
        stream = cistern.Stream(client, _stream_name(f"serial-{label}"))
        feats = tuple(cistern.FeatureSpec(k, str(t.dtype)[6:], tuple(t.shape))
                      for k, t in sample.items())
        sstages = {k: [] for k in ("object put", "commit", "lease", "get+read", "ack")}
        for i in range(n + 5):
            sample["hidden"][0, 0] = float(i)
            t0 = time.perf_counter()
            ref = fs.put(f"s{i}", sample)
            t1 = time.perf_counter()
            tensors, lease = fs.get(ref)
            _, ok1 = _read(tensors, i)
            del tensors
            fs.release(lease)
            t2 = time.perf_counter()
            tmp, path = os.path.join(shm_dir, f".tmp-s{i}.pt"), os.path.join(shm_dir, f"s{i}.pt")
            torch.save(sample, tmp)
            os.rename(tmp, path)
            t3 = time.perf_counter()
            tensors = torch.load(path)
            _, ok2 = _read(tensors, i)
            del tensors
            os.unlink(path)
            t4 = time.perf_counter()
            # The stream, one sample at a time, stage by stage: Stream.put is object put +
            # commit; the consumer leases 1, gets and reads, acks durably (which frees it).
            sid = f"{i:08d}"
            key = f"{stream.name}/{sid}"
            ts = [time.perf_counter()]
            o = client.put(key, sample, evictable=True, if_absent=True)
            ts.append(time.perf_counter())
            stream.commit([cistern.SampleRef(sid, key, o.generation, o.nbytes, feats, {})])
            ts.append(time.perf_counter())
            (lref,) = stream.lease(1)
            ts.append(time.perf_counter())
            tensors = client.get(lref.key, generation=lref.generation, as_="torch")
            _, ok3 = _read(tensors, int(lref.sample_id))
            del tensors
            ts.append(time.perf_counter())
            stream.ack([lref], global_step=i + 1, optimizer_durable=True)
            ts.append(time.perf_counter())
            if not (ok1 and ok2 and ok3):
                raise RuntimeError("serial: wrong values read")
            if i >= 5:
                put.append(t1 - t0)
                get.append(t2 - t1)
                save.append(t3 - t2)
                load.append(t4 - t3)
                for k, a, b in zip(sstages, ts, ts[1:]):
                    sstages[k].append(b - a)
        info = stream.stat()
        if any(info[k] for k in STREAM_EMPTY):
            raise RuntimeError(f"serial: stream {stream.name} not empty: {info}")
        rows.append({"size": label, "iters": n, "cistern_put_us": median(put) * 1e6,
                     "cistern_get_read_release_us": median(get) * 1e6,
                     "torch_save_rename_us": median(save) * 1e6,
                     "torch_load_read_unlink_us": median(load) * 1e6,
                     "stream_us": {k: median(v) * 1e6 for k, v in sstages.items()},
                     "stream_total_us": median([sum(x) for x in zip(*sstages.values())]) * 1e6})
    return rows


STREAM_EMPTY = ("depth", "in_flight", "awaiting_durable", "resident_bytes")


def _check_stream_job(client, variant, tag, count, objects_before):
    """After a stream job: the stream is empty (every sample acked durably and
    released) and the daemon holds exactly the objects it held before. Returns
    the stream's stat; RuntimeError otherwise."""
    import cistern
    info = cistern.Stream(client, _stream_name(tag)).stat()
    bad = {k: info[k] for k in STREAM_EMPTY if info[k] != 0}
    if bad or info["committed"] != count or info["acked"] != count:
        raise RuntimeError(f"{variant} {tag}: stream not empty after the job: {bad}, committed "
                           f"{info['committed']}, acked {info['acked']} of {count}")
    deadline = time.monotonic() + 5
    while client.stats()["objects"] != objects_before:  # frees deferred by a late view
        if time.monotonic() > deadline:
            raise RuntimeError(f"{variant} {tag}: the daemon holds {client.stats()['objects']} "
                               f"objects after the job, {objects_before} before")
        time.sleep(0.01)
    return info


def handoff_phase(socket, shm_dir, sizes, rounds, warmup, poll_s, variants):
    import cistern
    client = cistern.connect(socket)
    ctx = multiprocessing.get_context("spawn")
    p_ctl, p_ctl_child = ctx.Pipe()
    c_ctl, c_ctl_child = ctx.Pipe()
    data_recv, data_send = ctx.Pipe(duplex=False)
    prod = ctx.Process(target=_producer, args=(p_ctl_child, data_send, socket, shm_dir))
    cons = ctx.Process(target=_consumer, args=(c_ctl_child, data_recv, socket, shm_dir, poll_s))
    runs = []
    try:
        for p in (prod, cons):
            p.start()
            _live.append(p)
        for ctl in (p_ctl, c_ctl):
            if not ctl.poll(120):
                raise RuntimeError("hand-off process did not start")
            ctl.recv()

        def job(variant, nbytes, count, tag):
            for ctl in (p_ctl, c_ctl):
                ctl.send((variant, nbytes, count, tag))
            for ctl in (p_ctl, c_ctl):
                if not ctl.poll(120):
                    raise RuntimeError("hand-off process died")
                ctl.recv()
            objects_before = client.stats()["objects"]
            t0 = time.monotonic()
            c_ctl.send("go")
            p_ctl.send("go")
            for ctl in (p_ctl, c_ctl):
                if not ctl.poll(300):
                    raise RuntimeError("hand-off job did not finish")
            prod_end = p_ctl.recv()
            res = c_ctl.recv()
            if res["bad"]:
                raise RuntimeError(f"{variant}: consumer read {res['bad']} wrong samples")
            out = {"elapsed_s": res["end"] - t0, "producer_s": prod_end - t0,
                   "empty_polls": res["empty_polls"]}
            if variant in ("stream", "stream_b8", "stream_w8"):
                info = _check_stream_job(client, variant, tag, count, objects_before)
                out["stream"] = {k: info[k] for k in (
                    "committed", "acked", "producer_waits", "producer_rejections",
                    "consumer_starved", "consumer_empty", "expired_leases", "requeued")}
            return out

        for label, nbytes, count in sizes:
            for v in variants:  # warm-up, not recorded
                job(v, nbytes, warmup, f"warm-{v}-{label}")
        for r in range(rounds):
            for label, nbytes, count in sizes:
                for v in (variants if r % 2 == 0 else list(reversed(variants))):
                    res = job(v, nbytes, count, f"r{r}-{v}-{label}")
                    res.update(variant=v, size=label, nbytes=nbytes, count=count, round=r + 1)
                    res["samples_per_s"] = count / res["elapsed_s"]
                    res["gb_per_s"] = count * nbytes / res["elapsed_s"] / 1e9
                    runs.append(res)
                    log(f"   round {r + 1} {label:>6} {v:<10} {count} samples in "
                        f"{res['elapsed_s']:.3f} s: {res['samples_per_s']:9.1f} samples/s")
        for ctl in (p_ctl, c_ctl):
            ctl.send(None)
        for p in (prod, cons):
            p.join(30)
    finally:
        for p in (prod, cons):
            if p.is_alive():
                p.kill()
                p.join()
            if p in _live:
                _live.remove(p)
    return runs


# ----------------------------------------------------------------------------

def fmt_mib(b):
    return f"{b / MiB:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build/release"),
                    help="build tree with src/daemon/cisternd (default build/release)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--rounds", type=int, default=3, help="weight-sharing rounds (default 3)")
    ap.add_argument("--ns", default="1,4,8", help="process counts (default 1,4,8)")
    ap.add_argument("--big-mib", type=int, default=2048, help="big state dict, MiB (2048)")
    ap.add_argument("--small-mib", type=int, default=256, help="small state dict, MiB (256)")
    ap.add_argument("--tier-gib", type=int, default=6, help="cisternd tier size (6 GiB)")
    ap.add_argument("--handoff-rounds", type=int, default=3, help="hand-off rounds (3)")
    ap.add_argument("--samples-1m", type=int, default=1000, help="1 MiB samples per round")
    ap.add_argument("--samples-16m", type=int, default=120, help="16 MiB samples per round")
    ap.add_argument("--poll-us", type=float, default=100, help="consumer poll sleep (100 us)")
    ap.add_argument("--handoff-variants",
                    default="cistern,shared_dir,stream,stream_b8,cistern_w,stream_w8",
                    help="hand-off variants, interleaved (default cistern,shared_dir,stream,"
                         "stream_b8,cistern_w,stream_w8; shared_dir is the baseline of the "
                         "ratios)")
    ap.add_argument("--pertensor-iters", type=int, default=2000)
    ap.add_argument("--variants", default="cistern,memmap,torch_load",
                    help="weight-sharing variants to run (default all three)")
    ap.add_argument("--phases", default="w,p,h",
                    help="w = weight sharing, p = per-tensor get cost, h = hand-off (default all)")
    ap.add_argument("--daemon-yaml", default=os.environ.get("CISTERN_BENCH_DAEMON_YAML", ""),
                    help="appended to the cisternd config (default $CISTERN_BENCH_DAEMON_YAML), "
                         "e.g. $'busy_poll_us: 0\\n'")
    opts = ap.parse_args()

    t_start = time.monotonic()
    start_load = loadavg()
    mach = machine()
    log(f"python_bench: {mach['cpus']} CPUs ({mach['cpu_model']}), kernel {mach['kernel']}, "
        f"Python {mach['python']} ({mach['executable']}), torch {mach['torch']}, "
        f"numpy {mach['numpy']}, load average {start_load}")

    import torch
    import cistern

    ns = [int(x) for x in opts.ns.split(",")]
    sizes = [(f"{opts.big_mib} MiB" if opts.big_mib % 1024 else f"{opts.big_mib // 1024} GiB",
              opts.big_mib * MiB),
             (f"{opts.small_mib} MiB", opts.small_mib * MiB)]
    workdir = tempfile.mkdtemp(prefix=f"cistern-pybench-{os.getpid()}-", dir="/dev/shm")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [p for p in [os.path.join(opts.build, "python"), os.environ.get("PYTHONPATH")] if p]))
    daemon = None
    out = {"machine": mach, "load_start": start_load, "options": vars(opts),
           "mem_available_start": mem_available()}
    phases = set(opts.phases.split(","))
    wvariants = opts.variants.split(",")
    skipped = []

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon = Daemon(opts.build, opts.tier_gib * GiB, "main", opts.daemon_yaml)
        client = cistern.connect(daemon.socket)
        log(f"cisternd pid {daemon.proc.pid}, tier of {opts.tier_gib} GiB at {daemon.arena}; "
            f"files in {workdir}; MemAvailable {out['mem_available_start'] / GiB:.1f} GiB"
            + (f"; appended to its config: {opts.daemon_yaml!r}" if opts.daemon_yaml else ""))
        groups, specs, pt, hruns, serial = {}, {}, [], [], []
        hsizes = [("1 MiB", 1 * MiB, opts.samples_1m), ("16 MiB", 16 * MiB, opts.samples_16m)]

        # -- 1. weight sharing (Cistern and memmap) ---------------------------------
        if "w" in phases:
            log(f"\n== 1. Weight sharing: N processes obtain a state dict of {NTENSORS} float32 "
                f"tensors ==")
            prep = {}
            for label, nbytes in sizes:
                sd = make_state_dict(nbytes)
                key = f"weights/{label.replace(' ', '')}"
                t0 = time.perf_counter()
                client.put(key, sd)
                t1 = time.perf_counter()
                tpath = os.path.join(workdir, f"weights-{nbytes}.pt")
                torch.save(sd, tpath)
                t2 = time.perf_counter()
                spath = os.path.join(workdir, f"weights-{nbytes}.safetensors")
                write_safetensors(spath, sd)
                t3 = time.perf_counter()
                del sd
                prep[label] = {"cistern_put_s": t1 - t0, "torch_save_s": t2 - t1,
                               "safetensors_write_s": t3 - t2,
                               "torch_file_bytes": os.path.getsize(tpath),
                               "safetensors_file_bytes": os.path.getsize(spath)}
                log(f"   {label}: put {t1 - t0:.3f} s, torch.save {t2 - t1:.3f} s, safetensors "
                    f"write {t3 - t2:.3f} s (files of {os.path.getsize(tpath)} and "
                    f"{os.path.getsize(spath)} bytes)")
                common = {"tensors": NTENSORS, "nbytes": nbytes}
                specs[("cistern", label)] = dict(common, variant="cistern", socket=daemon.socket,
                                                 key=key)
                specs[("torch_load", label)] = dict(common, variant="torch_load", path=tpath)
                specs[("memmap", label)] = dict(common, variant="memmap", path=spath)
            out["weights_prep"] = prep
            log("   (the children import numpy + torch, then wait for go; times are from go)")
            # Cistern and memmap first, interleaved; torch.load comes last, once the
            # arena and the safetensors files are gone (N x 2 GiB of private copies).
            weights_phase([v for v in ("cistern", "memmap") if v in wvariants], sizes, ns,
                          opts.rounds, specs, env, groups, skipped)
            for label, nbytes in sizes:
                client.remove(f"weights/{label.replace(' ', '')}")
                os.unlink(specs[("memmap", label)]["path"])

        # -- 2. per-tensor cost (warm, in this process) ------------------------------
        if "p" in phases:
            log("\n== 2. Warm get in Python, by tensor count (this process, 1024-float tensors) ==")
            pt = per_tensor_phase(client, opts.pertensor_iters)
            out["per_tensor"] = pt

        # -- 3. feature hand-off ------------------------------------------------------
        if "h" in phases:
            log("\n== 3. Feature hand-off: producer process -> consumer process ==")
            hdir = os.path.join(workdir, "handoff")
            os.mkdir(hdir)
            hruns = handoff_phase(daemon.socket, hdir, hsizes, opts.handoff_rounds, 10,
                                  opts.poll_us / 1e6, opts.handoff_variants.split(","))
            out["handoff_runs"] = hruns
            serial = serial_costs(client, hdir, hsizes, 400)
            out["handoff_serial"] = serial
            stats = client.stats()
            out["daemon_stats_after_handoff"] = {k: stats.get(k) for k in ("objects", "leases")}

        # This process maps the arena too: unmap it (drop the client) so that
        # stopping the daemon and unlinking the arena frees its shared memory.
        del client
        gc.collect()
        daemon.stop()
        daemon = None

        # -- 1, continued: torch.load ---------------------------------------------
        if "w" in phases and "torch_load" in wvariants:
            log(f"\n   (cisternd stopped, arena and safetensors files removed; MemAvailable "
                f"{mem_available() / GiB:.1f} GiB; now torch.load)")
            weights_phase(["torch_load"], sizes, ns, opts.rounds, specs, env, groups, skipped)
        if "w" in phases:
            for label, nbytes in sizes:
                os.unlink(specs[("torch_load", label)]["path"])
        out["skipped"] = skipped

        # -- report ------------------------------------------------------------------
        summ = {k: summarize_group(*k, v) for k, v in groups.items()}
        out["weights_groups"] = [{"variant": k[0], "size": k[1], "n": k[2], "runs": v}
                                 for k, v in groups.items()]
        out["weights_summary"] = list(summ.values())
        report(opts, sizes, ns, summ, pt, hruns, hsizes, serial, out)
    finally:
        for p in list(_live):
            try:
                if isinstance(p, subprocess.Popen):
                    if p.poll() is None:
                        p.kill()
                        p.wait()
                elif p.is_alive():
                    p.kill()
                    p.join()
            except Exception:
                pass
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    out["total_s"] = time.monotonic() - t_start
    out["load_end"] = loadavg()
    log(f"\nTotal run {out['total_s']:.1f} s; load average {start_load} at start, "
        f"{out['load_end']} at end")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(out, f, indent=1)
        log(f"wrote {opts.json}")


def verdict(measured, threshold, at_least):
    ok = measured >= threshold if at_least else measured <= threshold
    if ok:
        margin = (measured - threshold) / threshold if at_least else (threshold - measured) / threshold
        return True, f"met (margin {margin * 100:.1f}%)"
    short = (threshold - measured) / threshold if at_least else (measured - threshold) / threshold
    return False, f"MISSED by {short * 100:.1f}%"


def report(opts, sizes, ns, summ, pt, hruns, hsizes, serial, out):
    variants = ["cistern", "memmap", "torch_load"]
    big, small = sizes[0][0], sizes[1][0]
    rounds = opts.rounds
    if summ:
        log("\n== Results: weight sharing, time (wall = go -> last of the N processes ready, median of "
            f"{rounds} rounds;\n   call = the load/attach call in each process, median over the N x "
            f"{rounds} processes; spawn->ready includes interpreter start and imports) ==")
        log("      size  N variant      wall ms (min-max)            call ms (min-max)             "
            "call CPU ms  spawn->ready s  import torch s")
        for label, _ in sizes:
            for n in ns:
                for v in variants:
                    x = summ.get((v, label, n))
                    if x is None:
                        log(f"   {label:>7} {n:2} {v:<10}  skipped")
                        continue
                    log(f"   {label:>7} {n:2} {v:<10} "
                        + f"{x['wall_go_s'] * 1e3:9.3f} ({x['wall_go_min_s'] * 1e3:.3f}-"
                          f"{x['wall_go_max_s'] * 1e3:.3f})".ljust(32)
                        + f"{x['call_s'] * 1e3:9.3f} ({x['call_min_s'] * 1e3:.3f}-"
                          f"{x['call_max_s'] * 1e3:.3f})".ljust(32)
                        + f"{x['call_cpu_s'] * 1e3:9.3f} {x['wall_spawn_s']:15.2f} "
                          f"{x['import_torch_s']:15.3f}")
        cs = [x for k, x in summ.items() if k[0] == "cistern"]
        if cs:
            log("   cistern call = connect + get; medians (ms):")
            for x in cs:
                log(f"   {x['size']:>7} {x['n']:2} connect {x['connect_s'] * 1e3:7.3f}  "
                    f"get {x['get_s'] * 1e3:7.3f}")

        log("\n== Results: weight sharing, memory per process (median, MiB) and touching every page ==")
        log("      size  N variant     RssAnon+ after call  RssShmem  RssFile   touch ms  touch wall ms  "
            "after touch: RssAnon+  RssShmem")
        for label, _ in sizes:
            for n in ns:
                for v in variants:
                    x = summ.get((v, label, n))
                    if x is None:
                        continue
                    log(f"   {label:>7} {n:2} {v:<10} {fmt_mib(x['anon_growth']):>20} "
                        f"{fmt_mib(x['mem_after_RssShmem']):>9} {fmt_mib(x['mem_after_RssFile']):>8} "
                        f"{x['touch_s'] * 1e3:10.1f} {x['touch_wall_s'] * 1e3:14.1f} "
                        f"{fmt_mib(x['mem_touched_RssAnon'] - x['mem_before_RssAnon']):>22} "
                        f"{fmt_mib(x['mem_touched_RssShmem']):>9}")
        log("   RssAnon+ = RssAnon minus RssAnon before the call (after the imports, median "
            + ", ".join(sorted({fmt_mib(x['mem_before_RssAnon']) for x in summ.values()})[:3])
            + " MiB); touch = one float per 4 KiB page of every tensor, all N processes at once")

        log("\n   torch.load / variant (higher = variant faster):")
        log("      size  N   call: cistern    memmap     wall: cistern    memmap")
        for label, _ in sizes:
            for n in ns:
                tl, c, m = (summ.get((v, label, n)) for v in ("torch_load", "cistern", "memmap"))
                if not (tl and c and m):
                    continue
                log(f"   {label:>7} {n:2} {tl['call_s'] / c['call_s']:14.1f}x {tl['call_s'] / m['call_s']:8.1f}x"
                    f" {tl['wall_go_s'] / c['wall_go_s']:15.1f}x {tl['wall_go_s'] / m['wall_go_s']:8.1f}x")
        log(f"\n   size dependence: {big} / {small} (8x the bytes, 16 tensors each)")
        log("    N variant     call     wall  call CPU")
        for n in ns:
            for v in variants:
                a, b = summ.get((v, big, n)), summ.get((v, small, n))
                if a and b:
                    log(f"   {n:2} {v:<10} {a['call_s'] / b['call_s']:6.2f}x {a['wall_go_s'] / b['wall_go_s']:7.2f}x"
                        f" {a['call_cpu_s'] / b['call_cpu_s']:8.2f}x")

    if pt:
        log("\n== Results: warm get in Python by tensor count (median us over "
            f"{opts.pertensor_iters} calls; the release is not timed) ==")
        stages = list(dict.fromkeys(r["stage"] for r in pt))
        counts = sorted({r["tensors"] for r in pt})
        log("   stage                   " + "".join(f"{str(c) + ' tensors':>12}" for c in counts)
            + "   us per extra tensor")
        for st in stages:
            vals = {r["tensors"]: r["median_us"] for r in pt if r["stage"] == st}
            slope = (vals[counts[-1]] - vals[counts[0]]) / (counts[-1] - counts[0])
            log(f"   {st:<24}" + "".join(f"{vals[c]:12.2f}" for c in counts) + f"   {slope:10.2f}")

    hsum = {}
    if hruns:
        log("\n== Results: feature hand-off, producer -> consumer (median of "
            f"{opts.handoff_rounds} rounds, min-max) ==")
        log("     size  samples variant     samples/s (min-max)          GB/s  producer done s  "
            "consumer done s  empty polls  ratio")
        hvars = list(dict.fromkeys(r["variant"] for r in hruns))
        for label, nbytes, count in hsizes:
            for v in hvars:
                rs = [r for r in hruns if r["size"] == label and r["variant"] == v]
                hsum[(label, v)] = {
                    "samples_per_s": median([r["samples_per_s"] for r in rs]),
                    "min": min(r["samples_per_s"] for r in rs),
                    "max": max(r["samples_per_s"] for r in rs),
                    "gb_per_s": median([r["gb_per_s"] for r in rs]),
                    "producer_s": median([r["producer_s"] for r in rs]),
                    "elapsed_s": median([r["elapsed_s"] for r in rs]),
                    "empty_polls": median([r["empty_polls"] for r in rs]), "count": count}
                if "stream" in rs[0]:
                    hsum[(label, v)]["producer_waits"] = sum(r["stream"]["producer_waits"]
                                                             for r in rs)
            base = hsum.get((label, "shared_dir"))
            for v in hvars:
                h = hsum[(label, v)]
                ratio = f"{h['samples_per_s'] / base['samples_per_s']:6.2f}x" if base else "     -"
                log(f"   {label:>6} {count:8} {v:<10} "
                    + f"{h['samples_per_s']:9.1f} ({h['min']:.1f}-{h['max']:.1f})".ljust(30)
                    + f"{h['gb_per_s']:6.2f} {h['producer_s']:16.3f} {h['elapsed_s']:16.3f} "
                      f"{h['empty_polls']:12.0f} {ratio}")
        log("   GB/s = 1e9 bytes/s; done = seconds from go until the producer has handed off, and "
            "until the consumer has released, the last sample")
        if any(v.startswith("stream") for v in hvars):
            log(f"   stream = Stream.put per sample (object put + commit); stream_b8 = the same "
                f"object puts, refs committed {STREAM_BATCH} per Stream.commit; consumer of both: "
                f"StreamLoader batch {STREAM_BATCH}, durable acks; every stream job ended empty "
                "(depth, in_flight, awaiting_durable, resident_bytes 0; daemon objects as before); "
                "producer waits (backpressure) over all rounds: "
                + ", ".join(f"{k[1]} {k[0]} {h['producer_waits']}" for k, h in hsum.items()
                            if "producer_waits" in h))
        out["handoff_summary"] = [dict(size=k[0], variant=k[1], **v) for k, v in hsum.items()]
    if serial:
        log("\n   each side's work per sample, alone in one process (median us; no pipe, no polling):")
        log("     size  cistern: put  get+read+release   shared dir: save+rename  load+read+unlink"
            "   serial ratio")
        for r in serial:
            c = r["cistern_put_us"] + r["cistern_get_read_release_us"]
            b = r["torch_save_rename_us"] + r["torch_load_read_unlink_us"]
            log(f"   {r['size']:>6} {r['cistern_put_us']:13.1f} {r['cistern_get_read_release_us']:17.1f} "
                f"{r['torch_save_rename_us']:24.1f} {r['torch_load_read_unlink_us']:17.1f} {b / c:13.2f}x")
        log("   the stream, one sample at a time in the same loop (median us; acks durable, "
            "one SQLite transaction per commit and per ack):")
        log("     size  object put   commit    lease  get+read      ack    total   "
            "shared dir / stream")
        for r in serial:
            st = r["stream_us"]
            b = r["torch_save_rename_us"] + r["torch_load_read_unlink_us"]
            log(f"   {r['size']:>6} {st['object put']:11.1f} {st['commit']:8.1f} {st['lease']:8.1f} "
                f"{st['get+read']:9.1f} {st['ack']:8.1f} {r['stream_total_us']:8.1f} "
                f"{b / r['stream_total_us']:20.2f}x")

    # -- targets -------------------------------------------------------------------
    targets = []

    def add(name, measured, threshold, at_least):
        ok, text = verdict(measured, threshold, at_least)
        targets.append({"target": name, "measured": measured, "threshold": threshold,
                        "at_least": at_least, "met": ok, "verdict": text})

    for n in ns:
        a, b = summ.get(("cistern", big, n)), summ.get(("cistern", small, n))
        if a and b:
            add(f"1. attach {big} / attach {small} (call), N={n}", a["call_s"] / b["call_s"], 2.0,
                False)
    for what, field in (("call", "call_s"), ("wall", "wall_go_s")):
        for n in ns:
            tl, c = summ.get(("torch_load", big, n)), summ.get(("cistern", big, n))
            if tl and c:
                add(f"1. torch.load / attach at {big} ({what}), N={n}", tl[field] / c[field], 50.0,
                    True)
    for label, _, _ in hsizes:
        for v in ("cistern", "cistern_w"):
            if (label, v) in hsum and (label, "shared_dir") in hsum:
                add(f"2. hand-off {label}: {v} / shared dir (samples/s)",
                    hsum[(label, v)]["samples_per_s"]
                    / hsum[(label, "shared_dir")]["samples_per_s"], 5.0, True)
    for v in ("stream", "stream_b8", "stream_w8"):
        for label, _, _ in hsizes:
            if (label, v) in hsum and (label, "shared_dir") in hsum:
                add(f"2. hand-off via {v} {label}: {v} / shared dir (samples/s)",
                    hsum[(label, v)]["samples_per_s"]
                    / hsum[(label, "shared_dir")]["samples_per_s"], 5.0, True)
    out["targets"] = targets
    log("\n== Targets ==")
    width = max([55] + [len(t["target"]) for t in targets])
    log("   " + "target".ljust(width) + "   measured  threshold  verdict")
    for t in targets:
        log(f"   {t['target']:<{width}} {t['measured']:10.2f}  {'>=' if t['at_least'] else '<='} "
            f"{t['threshold']:6.1f}  {t['verdict']}")
    log(f"   {sum(t['met'] for t in targets)} of {len(targets)} met")
    if out.get("skipped"):
        log("   skipped: " + "; ".join(out["skipped"]))


if __name__ == "__main__":
    main()

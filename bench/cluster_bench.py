"""The client half of bench/cluster_bench.sh (docs/benchmarks.md, "Peer to
peer"): runs as a client of the simulated hosts' daemons, puts on h1 and
gets (pulls) on h2, and prints one JSON object per measurement.

  cluster_bench.py DIR pull SIZE REPS [ROUND] a first pull, then REPS warm pulls of one SIZE object
  cluster_bench.py DIR latency SIZE REPS     get-to-view of remote SIZE objects vs local get
  cluster_bench.py DIR concurrent N SIZE     N concurrent pulls of N distinct SIZE objects
  cluster_bench.py DIR fanout SIZE HOSTS     replicate to every host vs one pull

Every pulled object is checked (its first and last 4 KiB, and the size)."""

import json
import os
import sys
import threading
import time

import numpy as np

import cistern


def client(dir_: str, host: int):
    return cistern.connect(os.path.join(dir_, f"h{host}", "cisternd.sock"), name="cluster-bench")


def pattern(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=size, dtype=np.uint8)


def check(view, want: np.ndarray) -> None:
    a = np.asarray(view)
    if a.nbytes != want.nbytes:
        sys.exit(f"pulled {a.nbytes} bytes, expected {want.nbytes}")
    edge = min(4096, want.nbytes)
    if not (np.array_equal(a[:edge], want[:edge]) and np.array_equal(a[-edge:], want[-edge:])):
        sys.exit("pulled bytes differ")


def put(c, key: str, value: np.ndarray):
    return c.put(key, value, wait_published=30)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def emit(**kw):
    kw["loadavg"] = open("/proc/loadavg").read().split()[0]
    print(json.dumps(kw), flush=True)


def cpu_ticks():
    """(busy, total) clock ticks of every core so far (/proc/stat)."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


def timed_pull(c, key, value) -> float:
    """Seconds for a get on `c` of a key it lacks (a pull), bytes checked."""
    t0 = time.perf_counter()
    v = c.get(key, timeout=600)
    took = time.perf_counter() - t0
    check(v, value)
    return took


def pull(dir_, size, reps, round_=0):
    a, b = client(dir_, 1), client(dir_, 2)
    value = pattern(size, 1)
    put(a, "bench/pull", value)
    # The first pull may write pages of h2's arena never touched before (page
    # faults); the warm ones reuse them. The CPU every core spent (daemons,
    # kernel, this client) is counted over the warm pulls only.
    first = timed_pull(b, "bench/pull", value)
    b.remove("bench/pull")
    warm = []
    busy0, total0 = cpu_ticks()
    for _ in range(reps):
        warm.append(timed_pull(b, "bench/pull", value))
        b.remove("bench/pull")
    busy1, total1 = cpu_ticks()
    a.remove("bench/pull")
    hz = os.sysconf("SC_CLK_TCK")
    emit(what="pull", round=round_, size=size, reps=reps, first_mib_s=size / first / 2**20,
         warm_best_mib_s=size / min(warm) / 2**20, warm_median_mib_s=size / pct(warm, 50) / 2**20,
         cpu_s_per_gib=(busy1 - busy0) / hz / (reps * size / 2**30),
         cores_busy=(busy1 - busy0) / max(1, total1 - total0))


def latency(dir_, size, reps):
    a, b = client(dir_, 1), client(dir_, 2)
    value = pattern(size, 2)
    put(a, "bench/lat", value)
    remote, local = [], []
    for _ in range(reps):
        remote.append(timed_pull(b, "bench/lat", value))
        t0 = time.perf_counter()
        v = b.get("bench/lat")
        local.append(time.perf_counter() - t0)
        del v
        b.remove("bench/lat")
    a.remove("bench/lat")
    us = lambda xs, p: pct(xs, p) * 1e6
    emit(what="latency", size=size, reps=reps, remote_p50_us=us(remote, 50),
         remote_p99_us=us(remote, 99), local_p50_us=us(local, 50), local_p99_us=us(local, 99))


def concurrent(dir_, n, size):
    a = client(dir_, 1)
    values = [pattern(size, 100 + i) for i in range(n)]
    for i, v in enumerate(values):
        put(a, f"bench/c{i}", v)
    lat = [0.0] * n
    errors = []

    def one(i):
        c = client(dir_, 2)
        t0 = time.perf_counter()
        try:
            v = c.get(f"bench/c{i}", timeout=600)
            lat[i] = time.perf_counter() - t0
            check(v, values[i])
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        sys.exit(f"{len(errors)} pulls failed: {errors[0]}")
    b = client(dir_, 2)
    for i in range(n):
        b.remove(f"bench/c{i}")
        a.remove(f"bench/c{i}")
    emit(what="concurrent", n=n, size=size, aggregate_mib_s=n * size / wall / 2**20,
         p50_ms=pct(lat, 50) * 1e3, p99_ms=pct(lat, 99) * 1e3, wall_s=wall)


def fanout(dir_, size, hosts):
    a = client(dir_, 1)
    value = pattern(size, 3)
    put(a, "bench/fan", value)
    # One point-to-point pull of the same object first (h2), then removed.
    b = client(dir_, 2)
    p2p = timed_pull(b, "bench/fan", value)
    b.remove("bench/fan")
    time.sleep(1)  # the removal reaches the registry
    t0 = time.perf_counter()
    r = a.replicate("bench/fan", all=True, timeout=600)
    total = time.perf_counter() - t0
    bad = [t for t in r["targets"] if not t["ok"]]
    if bad:
        sys.exit(f"replicate failed: {bad}")
    for h in range(2, hosts + 1):
        v = client(dir_, h).get("bench/fan", local_only=True)
        check(v, value)
        del v
    emit(what="fanout", size=size, targets=hosts - 1, total_s=total, p2p_pull_s=p2p,
         ratio_to_p2p=total / p2p, origin_sent=r["bytes_sent"].get("h1", 0),
         origin_sent_over_size=r["bytes_sent"].get("h1", 0) / size, bytes_sent=r["bytes_sent"])


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    d, what, args = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]]
    {"pull": pull, "latency": latency, "concurrent": concurrent, "fanout": fanout}[what](d, *args)

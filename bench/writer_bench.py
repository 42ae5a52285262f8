"""What a Writer's own mapping costs (issue 9, item 3): each Client.writer
fills its object through a fresh mapping of the object's pages, which at the
seal becomes a private copy so a stray write can never reach shared memory.

Side by side, in one run, for objects of SIZE bytes written again and again:
  writer      Client.writer: create, fill the buffer with numpy, seal
  put         Client.put of the same numpy array (copies through the
              connection's long-lived mapping)
  shm_warm    the peer: memcpy into a long-lived mmap of a /dev/shm file
  shm_fresh   the peer: mmap a /dev/shm file range, memcpy, munmap, per object
Prints median microseconds per object and the ratios writer/shm_fresh and
writer/shm_warm, as a table and (with --json FILE) as JSON.

    PYTHONPATH=build/release/python CISTERN_BUILD_DIR=build/release \\
      /usr/bin/python3 bench/writer_bench.py [--sizes 65536,1048576,16777216] [--iters N]
"""

import argparse
import json
import mmap
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../python/tests"))

import numpy as np  # noqa: E402

import cistern  # noqa: E402
from conftest import Daemon  # noqa: E402


def median_us(f, iters):
    times = []
    for i in range(iters):
        t = time.perf_counter()
        f(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="65536,1048576,16777216")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    daemon = Daemon(tier_bytes=max(sizes) * 8 + (64 << 20))
    rows = []
    try:
        c = cistern.connect(daemon.socket)
        fd, path = tempfile.mkstemp(dir="/dev/shm", prefix="cistern-writer-bench-")
        try:
            for n in sizes:
                src = np.random.default_rng(1).integers(0, 255, n, dtype=np.uint8)
                os.ftruncate(fd, n * 3)
                warm = mmap.mmap(fd, n * 3)

                def writer(i):
                    with c.writer(f"w{i % 3}", n) as w:
                        np.frombuffer(w.buffer, dtype=np.uint8)[:] = src

                def put(i):
                    c.put(f"p{i % 3}", src)

                def shm_warm(i):
                    at = (i % 3) * n
                    warm[at:at + n] = src.data

                def shm_fresh(i):
                    m = mmap.mmap(fd, n, offset=(i % 3) * n)
                    m[:] = src.data
                    m.close()

                for f in (writer, put, shm_warm, shm_fresh):  # warm up caches and blocks
                    for i in range(3):
                        f(i)
                row = {"bytes": n}
                for name, f in (("writer", writer), ("put", put), ("shm_warm", shm_warm),
                                ("shm_fresh", shm_fresh)):
                    row[name + "_us"] = median_us(f, args.iters)
                row["writer_vs_shm_fresh"] = row["writer_us"] / row["shm_fresh_us"]
                row["writer_vs_shm_warm"] = row["writer_us"] / row["shm_warm_us"]
                rows.append(row)
                warm.close()
        finally:
            os.close(fd)
            os.unlink(path)
    finally:
        daemon.stop()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print(f"{'bytes':>10} {'writer us':>10} {'put us':>10} {'shm warm':>10} {'shm fresh':>10} "
          f"{'w/fresh':>8} {'w/warm':>8}")
    for r in rows:
        print(f"{r['bytes']:>10} {r['writer_us']:>10.0f} {r['put_us']:>10.0f} "
              f"{r['shm_warm_us']:>10.0f} {r['shm_fresh_us']:>10.0f} "
              f"{r['writer_vs_shm_fresh']:>8.2f} {r['writer_vs_shm_warm']:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_average": os.getloadavg()[0], "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

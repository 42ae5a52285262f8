"""What copy-on-write torch views cost (issue 13 item 4), side by side with
the read-only views they replace, in one run.

torch has no read-only tensors, so `get(key, as_="torch")` builds its tensors
over `View.make_private()`: a private copy below 64 KiB, a MAP_PRIVATE mapping
of the same pages from 64 KiB. The peer is the previous behaviour, tensors over
the shared read-only mapping (`_from_view(..., private=False)`, where an
in-place write is a SIGSEGV), and numpy over the same view. For each size:

  get          p50/p99 of get alone (the tensors built, nothing read)
  get+read     get, then a sum over every element (touches every page: a new
               private mapping faults its pages in on the first read)

Every get is of the same object, so the read-only mapping's pages stay mapped
between gets: the best case for the peer, the worst for a private mapping.

    PYTHONPATH=build/release/python /usr/bin/python3 bench/torch_cow_bench.py \
        --build build/release [--rounds 2]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_bench import Daemon, machine  # noqa: E402

SIZES = [("4 KiB", 4 << 10), ("64 KiB", 64 << 10), ("512 KiB", 512 << 10), ("1 MiB", 1 << 20),
         ("64 MiB", 64 << 20)]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return pct(out, 0.5) * 1e6, pct(out, 0.99) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--rounds", type=int, default=2)
    opts = ap.parse_args()
    import numpy as np
    import cistern
    from cistern import _from_view
    print(f"torch_cow_bench: {machine()}, load average {os.getloadavg()}")
    d = Daemon(opts.build, 1 << 30, "cow")
    try:
        c = cistern.connect(d.socket)
        variants = {
            "numpy (read-only)": lambda k: c.get(k),
            "torch read-only (before)": lambda k: _from_view(c._c.get(k, 0), "torch", private=False),
            "torch copy-on-write (now)": lambda k: c.get(k, as_="torch"),
        }
        print(f"{'size':>7} {'variant':<27} {'get p50':>9} {'get p99':>9} {'get+read p50':>13}"
              f" {'get+read p99':>13}   (us; {opts.rounds} rounds, each row: the round's median)")
        for label, nbytes in SIZES:
            key = f"cow-{label}"
            c.put(key, np.ones(nbytes // 4, dtype=np.float32))
            n = 100 if nbytes >= (64 << 20) else 2000
            for r in range(opts.rounds):
                for name, get in variants.items():
                    g = timed(lambda: get(key), n)
                    rd = timed(lambda: float(get(key).sum()), max(20, n // 4))
                    print(f"{label:>7} {name:<27} {g[0]:9.1f} {g[1]:9.1f} {rd[0]:13.1f} {rd[1]:13.1f}"
                          f"   round {r + 1}")
            c.remove(key)
    finally:
        d.stop()
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

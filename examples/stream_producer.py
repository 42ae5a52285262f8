"""Puts N samples with deterministic tensors into a stream (default "demo"):
sample s<i:05d> holds x = arange(dim) + i (float32) and label = [i] (int64),
so a trainer can check every tensor against the sample id. Each put writes
one object and commits its ref, waiting out the stream's backpressure.
Re-running it is harmless: commit is idempotent on the sample id.

    stream_producer.py --samples 400 [--address SOCKET] [--stream demo]

Connects to $CISTERN_ADDRESS, else the current `cistern daemon start` session.
"""

import argparse
import sys
import time

import numpy as np

import cistern


def tensors(i: int, dim: int):
    return {"x": np.arange(dim, dtype=np.float32) + i, "label": np.array([i], dtype=np.int64)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default=None)
    p.add_argument("--stream", default="demo")
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--start", type=int, default=0, help="first sample index")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--high-watermark", type=int, default=512 << 10,
                   help="bytes the stream may hold before producers wait")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds one put may wait for backpressure to clear")
    args = p.parse_args()

    client = cistern.connect(args.address, name="stream_producer")
    stream = cistern.Stream(client, args.stream, high_watermark_bytes=args.high_watermark,
                            low_watermark_bytes=args.high_watermark // 2)
    t0 = time.monotonic()
    for i in range(args.start, args.start + args.samples):
        stream.put(f"s{i:05d}", tensors(i, args.dim), metadata={"producer": "stream_producer"},
                   timeout=args.timeout)
        done = i - args.start + 1
        if done % 100 == 0 or done == args.samples:
            info = stream.stat()
            print(f"producer: {done}/{args.samples} put; stream depth {info['depth']}, "
                  f"resident {info['resident_bytes'] >> 10} KiB, producer waits "
                  f"{info['producer_waits']}", flush=True)
    info = stream.stat()
    print(f"producer: done in {time.monotonic() - t0:.1f} s; stream committed {info['committed']}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

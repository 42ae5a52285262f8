"""The Python parts of `make cluster-demo` (scripts/cluster-demo.sh).

  cluster_demo.py write PATH        a ~256 MiB safetensors file (float32 layers,
                                    each filled with a pattern from its index)
  cluster_demo.py attach HOST SOCKET KEY
                                    a process on HOST that attaches KEY zero-copy
                                    from the daemon at SOCKET (which pulls it from
                                    another host when it lacks it) and checks every
                                    tensor's bytes
"""

import json
import os
import struct
import sys
import time

import numpy as np

LAYERS, ROWS, COLS = 16, 2048, 2048  # 16 MiB each, 256 MiB in all


def expected(i: int) -> np.ndarray:
    # Distinct per layer and per element, cheap to recompute in every process.
    return (np.arange(ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS) * 1e-6 + i)


def write(path: str) -> None:
    header, offset = {}, 0
    for i in range(LAYERS):
        n = ROWS * COLS * 4
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [ROWS, COLS],
                                        "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for i in range(LAYERS):
            f.write(expected(i).tobytes())
    print(f"  wrote {path}: {LAYERS} tensors, {offset >> 20} MiB")


def attach(host: str, socket: str, key: str) -> None:
    import cistern
    c = cistern.connect(socket, name="cluster-demo")
    t0 = time.perf_counter()
    d = c.get(key, as_="numpy", timeout=120)
    took = time.perf_counter() - t0
    for i in range(LAYERS):
        a = d[f"layers.{i}.weight"]
        if a.flags.writeable or not np.array_equal(a, expected(i)):
            sys.exit(f"pid {os.getpid()}: layers.{i}.weight is wrong")
    w = d["layers.0.weight"]
    print(f"  {host} pid {os.getpid()}: "
          f"attached {len(d)} tensors in {took * 1e3:.0f} ms, all bytes verified, "
          f"read-only view at {w.__array_interface__['data'][0]:#x}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "attach":
        attach(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)

"""The Python part of `make demo`: a state dict shared by 4 processes, and a
producer handing feature dicts to a consumer. Usage: demo_python.py SOCKET"""

import os
import subprocess
import sys
import time

import torch

import cistern

ATTACH = r"""
import cistern, sys, time, torch
t0 = time.perf_counter()
c = cistern.connect(sys.argv[1])
t1 = time.perf_counter()
sd = c.get('llama/python', as_='torch')
t2 = time.perf_counter()
rss = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('RssAnon:'))
w = sd['layers.0.weight']
print(f"  pid {__import__('os').getpid()}: attached {len(sd)} tensors, "
      f"{sum(t.numel() * t.element_size() for t in sd.values()) / 2**20:.0f} MiB in "
      f"{(t2 - t1) * 1e6:.0f} us (connect {(t1 - t0) * 1e3:.1f} ms); "
      f"w[0,0]={float(w[0, 0]):.3f}, data_ptr {w.data_ptr():#x}", flush=True)
"""

FEATURES, SAMPLE_SHAPE = 200, (256, 1024)  # 1 MiB float32 per sample


def main(socket: str) -> None:
    c = cistern.connect(socket, name="demo-python")
    sd = {f"layers.{i}.weight": torch.randn(2048, 2048) for i in range(16)}  # 256 MiB
    t0 = time.perf_counter()
    ref = c.put("llama/python", sd)
    print(f"  put a torch state dict: {len(sd)} tensors, {ref.nbytes / 2**20:.0f} MiB, "
          f"generation {ref.generation}, in {time.perf_counter() - t0:.2f} s")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    print("  4 processes attach it:", flush=True)
    procs = [subprocess.Popen([sys.executable, "-c", ATTACH, socket], env=env) for _ in range(4)]
    for p in procs:
        if p.wait() != 0:
            sys.exit("an attaching process failed")
    print(f"  (each process saw w[0,0]={float(sd['layers.0.weight'][0, 0]):.3f})")

    # Features: a producer process puts samples, this process consumes them
    # (get, use, remove: consume-once).
    producer = subprocess.Popen([sys.executable, "-c", f"""
import cistern, sys, torch
c = cistern.connect(sys.argv[1])
for i in range({FEATURES}):
    c.put(f"features/{{i}}", {{"hidden": torch.full({SAMPLE_SHAPE}, float(i)), "id": torch.tensor(i)}},
          timeout=30)
""", socket], env=env)
    t0 = time.perf_counter()
    consumed, checksum = 0, 0.0
    while consumed < FEATURES:
        try:
            f = c.get(f"features/{consumed}", as_="torch")
        except KeyError:
            continue  # not produced yet
        assert int(f["id"]) == consumed
        checksum += float(f["hidden"][0, 0])
        del f
        c.remove(f"features/{consumed}")
        consumed += 1
    producer.wait()
    dt = time.perf_counter() - t0
    print(f"  producer -> consumer: {consumed} samples of 1 MiB in {dt:.2f} s "
          f"({consumed / dt:.0f} samples/s), checksum {checksum:.0f} "
          f"(expected {sum(range(FEATURES))}); {len(c.list('features/'))} samples left behind")
    c.remove("llama/python")


if __name__ == "__main__":
    main(sys.argv[1])

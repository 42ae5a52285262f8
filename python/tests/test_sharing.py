"""Eight processes attach one 1 GiB state dict: each sees the bytes the
producer stored, at a view inside the shared arena, without a private copy."""

import os
import subprocess
import sys

import pytest
import torch

import cistern
from conftest import Daemon

ATTACH = r"""
import cistern, resource, sys, torch
def rss_anon_kib():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'):
            return int(line.split()[1])
before = rss_anon_kib()
c = cistern.connect(sys.argv[1])
sd = c.get('model', as_='torch')
total = sum(t.numel() * t.element_size() for t in sd.values())
ok = all(float(sd[f'layer{i}'][0, 0]) == float(i) for i in range(8))
grew = rss_anon_kib() - before
print(total, int(ok), grew)
"""


@pytest.fixture
def big_daemon():
    d = Daemon(tier_bytes=2 << 30)
    yield d
    d.stop()


def test_eight_processes_attach_one_gib_state_dict(big_daemon):
    c = cistern.connect(big_daemon.socket)
    # 8 layers x 128 MiB = 1 GiB in one object.
    names = [f"layer{i}" for i in range(8)]
    rows, cols = 8192, 4096  # float32: 128 MiB per layer
    ref = c.put("model", {n: torch.full((rows, cols), float(i)) for i, n in enumerate(names)})
    assert ref.nbytes >= 1 << 30
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", ATTACH, big_daemon.socket],
                              stdout=subprocess.PIPE, env=env, text=True) for _ in range(8)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        total, ok, grew_kib = (int(x) for x in out.split())
        assert total == 8 * rows * cols * 4
        assert ok == 1
        # A copy would add 1 GiB of private memory; attaching adds only the
        # Python objects (and the pages of the 8 elements read are shared).
        assert grew_kib < 64 * 1024, f"private memory grew by {grew_kib} KiB"
    stats = c.stats()
    assert stats["leases"] == 0 and stats["objects"] == 1

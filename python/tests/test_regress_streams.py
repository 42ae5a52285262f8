"""Regression tests for stream defects found by a hostile test (issue 9, item 1).
Each test opens with the bug it pins down."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest

import cistern
from cistern import Stream

# A producer process: waits for "go" on stdin, then Stream.put of samples
# 0..N-1 of stream NAME in a seeded order with seeded pauses, printing "done".
PRODUCER = r"""
import random, sys, time
import numpy as np
import cistern
sock, name, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = cistern.connect(sock)
s = cistern.Stream(c, name)
rng = random.Random(seed)
order = list(range(n))
if seed % 2:
    rng.shuffle(order)
sys.stdin.readline()
for i in order:
    s.put(f"sample-{i}", {"x": np.full(64, i, dtype=np.int32)}, timeout=30)
    if rng.random() < 0.05:
        time.sleep(rng.random() / 1000)
print("done", flush=True)
"""


def test_two_producers_of_the_same_ids_lose_no_sample(daemon, client):
    """Two producers putting the same 2,000 sample ids at once lost committed
    samples: one overwrote the other's uncommitted generation on a guess
    (stat showed no leases), the other's commit then pinned a generation that
    the first removed as a duplicate, and ~1% of leased refs were NotFound."""
    seed = int(os.environ.get("CISTERN_FAULT_SEED", random.randrange(1 << 30)))
    n = 2000
    name = "dup"
    Stream(client, name, high_watermark_bytes=0)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", PRODUCER, daemon.socket, name, str(n),
                               str(seed + k)], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for k in range(2)]
    try:
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0 and out.strip() == "done", f"seed {seed}: producer failed"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    s = Stream(client, name)
    info = s.stat()
    assert (info["committed"], info["depth"]) == (n, n), f"seed {seed}: {info}"
    refs = s.lease(n)
    assert len(refs) == n
    missing = []
    for r in refs:
        try:
            got = client.get(r.key, generation=r.generation)
        except KeyError:
            missing.append(r.sample_id)
            continue
        i = int(r.sample_id.split("-")[1])
        assert np.array_equal(got["x"], np.full(64, i, dtype=np.int32)), f"seed {seed}"
    assert missing == [], f"seed {seed}: {len(missing)} leased refs name no object"
    # Nothing orphaned: exactly one object per sample.
    assert len(client.list(prefix=f"{name}/")) == n, f"seed {seed}"


def test_an_object_a_stream_holds_cannot_be_removed_or_replaced(client):
    """`cistern rm KEY` of an object a stream held succeeded; the consumer's
    loader then retried that sample forever while the stream's depth stayed 1."""
    s = Stream(client, "held")
    ref = s.put("a", {"x": np.arange(8, dtype=np.float32)})
    with pytest.raises(cistern.FailedPreconditionError, match="stream 'held'"):
        client.remove(ref.key)
    with pytest.raises(cistern.FailedPreconditionError, match="stream 'held'"):
        client.put(ref.key, {"x": np.zeros(8, dtype=np.float32)})
    assert client.stat(ref.key)["generation"] == ref.generation
    (leased,) = s.lease(1)
    assert np.array_equal(client.get(leased.key, generation=leased.generation)["x"],
                          np.arange(8, dtype=np.float32))


@pytest.mark.parametrize("timeout", [1e10, float("inf")])
def test_a_huge_lease_timeout_waits(daemon, client, timeout):
    """Stream.lease(1, timeout=1e10) or float('inf') answered at once instead
    of waiting (the wait overflowed on its way to the daemon; issue 9,
    item 5). Waits are clamped to seven days, not wrapped."""
    import threading
    s = Stream(client, "huge-wait")
    got = []
    t = threading.Thread(target=lambda: got.append(s.lease(1, timeout=timeout)))
    t.start()
    t.join(0.5)
    assert t.is_alive(), f"lease(timeout={timeout}) returned {got} at once"
    # Another connection: this one is busy with the lease.
    Stream(cistern.connect(daemon.socket), "huge-wait").put(
        "s1", {"x": np.zeros(4, dtype=np.int32)})
    t.join(10)
    assert not t.is_alive()
    assert [r.sample_id for r in got[0]] == ["s1"]


@pytest.mark.parametrize("timeout", [-1, float("nan"), "1", True])
def test_a_bad_timeout_is_a_value_error(client, timeout):
    """Negative, NaN and non-number timeouts name the argument and change
    nothing."""
    s = Stream(client, "bad-wait")
    with pytest.raises(ValueError, match="timeout"):
        s.lease(1, timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        s.put("s1", {"x": np.zeros(4, dtype=np.int32)}, timeout=timeout)
    assert s.depth() == 0

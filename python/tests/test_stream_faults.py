"""Producers killed (SIGKILL) before they write, after they write but before
they commit, and at seeded points of a run; a new producer retries every
sample. The contract (shared/design/dataflow-contract.md): each sample ends
committed once, no bytes are left orphaned, and every sample's bytes are the
ones put. Seeded kill points print their seed on failure; set
CISTERN_FAULT_SEED / CISTERN_FAULT_SEEDS to rerun one or run more."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cistern
from cistern import Stream, StreamLoader

# A producer process: Stream.put of samples FIRST..LAST-1 of stream NAME, one
# line "<i>" on stdout after each put returned (the commit is confirmed).
# MODE "die-before-write" dies after opening the stream, "die-after-write"
# writes sample FIRST's object as Stream.put would and dies before its commit.
PRODUCER = r"""
import os, signal, sys
import numpy as np
import cistern
sock, name, first, last, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
c = cistern.connect(sock)
s = cistern.Stream(c, name)
def sample(i):
    return {"x": np.full(1024 + 97 * (i % 13), i, dtype=np.float32), "i": np.array([i], np.int64)}
if mode == "die-before-write":
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "die-after-write":
    c.put(f"{name}/s{first:04d}", sample(first), evictable=True, if_absent=True)
    os.kill(os.getpid(), signal.SIGKILL)
for i in range(first, last):
    s.put(f"s{i:04d}", sample(i), timeout=30)
    print(i, flush=True)
"""


def expected(i: int) -> np.ndarray:
    return np.full(1024 + 97 * (i % 13), i, dtype=np.float32)


def producer(daemon, name: str, first: int, last: int, mode: str = "run") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-c", PRODUCER, daemon.socket, name, str(first),
                             str(last), mode], env=env, stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> int:
    try:
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def drain_and_check(client, s: Stream, n: int):
    """Consumes the stream with durable acks; every sample once, with its own
    bytes; then nothing of the stream is left in the store."""
    got = []
    with StreamLoader(s, 1, timeout=2.0, as_="numpy", optimizer_durable=True) as loader:
        for batch in loader:
            ref, tensors = batch.refs[0], batch.samples[0]
            i = int(ref.sample_id[1:])
            assert np.array_equal(tensors["x"], expected(i)), ref.sample_id
            assert int(tensors["i"][0]) == i
            got.append(ref.sample_id)
            del tensors
            if len(got) == n:
                break
    assert sorted(got) == [f"s{i:04d}" for i in range(n)]
    info = s.stat()
    assert (info["depth"], info["in_flight"], info["awaiting_durable"]) == (0, 0, 0)
    assert info["committed"] == n and info["acked"] == n
    assert client.list(s.name + "/") == [], "orphaned objects"


def test_producer_killed_before_and_after_write_leaves_one_sample_and_no_orphans(daemon, client):
    s = Stream(client, "p")
    assert finish(producer(daemon, "p", 0, 3, "die-before-write")) == -signal.SIGKILL
    assert s.stat()["committed"] == 0 and client.list("p/") == []
    assert finish(producer(daemon, "p", 0, 3, "die-after-write")) == -signal.SIGKILL
    left = client.list("p/")
    assert [o["key"] for o in left] == ["p/s0000"]  # written, never committed
    assert s.stat()["committed"] == 0
    # The retry commits the very object the dead producer left (a whole sealed
    # object of the same sample: never written over on a guess) and each
    # sample once.
    assert finish(producer(daemon, "p", 0, 3)) == 0
    objs = client.list("p/")
    assert [o["key"] for o in objs] == ["p/s0000", "p/s0001", "p/s0002"]
    assert objs[0]["generation"] == left[0]["generation"]
    info = s.stat()
    assert info["committed"] == 3 and info["depth"] == 3
    # Once more, as a producer that does not know it finished: nothing new.
    assert finish(producer(daemon, "p", 0, 3)) == 0
    info = s.stat()
    assert info["committed"] == 3 and info["depth"] == 3
    assert [(o["key"], o["generation"]) for o in client.list("p/")] == [
        (o["key"], o["generation"]) for o in objs]
    drain_and_check(client, s, 3)


def seeds():
    first = int(os.environ.get("CISTERN_FAULT_SEED", "1"))
    return range(first, first + int(os.environ.get("CISTERN_FAULT_SEEDS", "4")))


@pytest.mark.parametrize("seed", seeds())
def test_producer_killed_at_seeded_points_commits_each_sample_once(daemon, client, seed):
    """Each seed kills producers after a seeded number of confirmed puts plus
    a seeded pause (so kills land inside puts and commits too); the next
    producer starts again from sample 0, as one that lost its progress does."""
    rng = random.Random(seed)
    n = 40
    name = f"k{seed}"
    s = Stream(client, name)
    kills = []
    for _ in range(3):
        proc = producer(daemon, name, 0, n)
        confirmed = rng.randrange(1, n)
        pause = rng.random() * 0.004
        kills.append(f"after {confirmed} puts + {pause * 1e3:.1f} ms")
        for _ in range(confirmed):
            if not proc.stdout.readline():
                break
        time.sleep(pause)
        proc.send_signal(signal.SIGKILL)
        finish(proc)
    where = f"seed {seed} (rerun: CISTERN_FAULT_SEED={seed} CISTERN_FAULT_SEEDS=1), kills {kills}"
    assert finish(producer(daemon, name, 0, n)) == 0, where
    info = s.stat()
    assert info["committed"] == n, where
    # One object per sample: the committed generation, nothing else.
    objs = client.list(name + "/")
    assert [o["key"] for o in objs] == [f"{name}/s{i:04d}" for i in range(n)], where
    try:
        drain_and_check(client, s, n)
    except AssertionError as e:
        raise AssertionError(f"{where}: {e}") from None

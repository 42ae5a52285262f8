"""Remote get from Python: two daemons and a registry on this machine; a get
on one host of an array another host holds pulls it (docs/cluster.md,
"Remote get")."""

import os
import random
import socket
import subprocess
import tempfile
import time
import shutil

import numpy as np
import pytest

from conftest import BUILD, Daemon


def _free_port() -> int:
    # Below the ephemeral range, so that no outgoing connection takes it first.
    rng = random.Random(os.getpid() * 7919 + time.monotonic_ns())
    for _ in range(1000):
        port = rng.randrange(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free TCP port")


@pytest.fixture
def cluster():
    state = tempfile.mkdtemp(prefix="cistern-py-registry-")
    log = open(os.path.join(state, "registry.log"), "w")
    reg = subprocess.Popen([os.path.join(BUILD, "src/registryd/cistern-registry"),
                            "--set", "cluster_id=py", "--set", "token=py-token",
                            "--set", "port=0", "--set", "metrics_port=0",
                            "--set", f"state_dir={state}"],
                           stdout=log, stderr=subprocess.STDOUT)
    endpoint_file = os.path.join(state, "registry.endpoint")
    deadline = time.time() + 20
    while not (os.path.exists(endpoint_file) and open(endpoint_file).read().strip()):
        if reg.poll() is not None or time.time() > deadline:
            raise RuntimeError("cistern-registry did not start:\n" + open(log.name).read())
        time.sleep(0.02)
    endpoint = open(endpoint_file).read().strip()
    daemons = []
    try:
        for host in ("py-a", "py-b"):
            daemons.append(Daemon(extra_yaml=(
                f"host_id: {host}\ncluster:\n  registry: {endpoint}\n  cluster_id: py\n"
                f"  token: py-token\n  advertise: 127.0.0.1:{_free_port()}\n")))
        yield daemons
    finally:
        for d in daemons:
            d.stop()
        reg.kill()
        reg.wait()
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def test_a_get_on_another_host_pulls_the_array(cluster):
    import cistern
    a = cistern.connect(cluster[0].socket)
    b = cistern.connect(cluster[1].socket)
    weights = np.arange(1 << 18, dtype=np.float32).reshape(512, 512)
    ref = a.put("w", {"layer": weights}, wait_published=10)
    with pytest.raises(KeyError):
        b.get("w", local_only=True)
    got = b.get("w", timeout=30)
    np.testing.assert_array_equal(got["layer"], weights)
    assert b.stat("w")["generation"] == ref.generation
    with pytest.raises(KeyError, match="nowhere"):
        b.get("nowhere", timeout=5)


def test_prefetch_starts_pulls_without_waiting(cluster):
    import cistern
    a = cistern.connect(cluster[0].socket)
    b = cistern.connect(cluster[1].socket)
    a.put("p1", np.ones(1000, dtype=np.int64), wait_published=10)
    a.put("p2", b"two", wait_published=10)
    b.put("mine", b"here")
    assert b.prefetch(["p1", "p2", "mine"]) == 2
    np.testing.assert_array_equal(b.get("p1", timeout=30), np.ones(1000, dtype=np.int64))
    assert bytes(b.get("p2", as_="memoryview", timeout=30)) == b"two"
    with pytest.raises(TypeError):
        b.prefetch("p1")


def test_replicate_copies_to_the_other_host_and_reports_bytes_sent(cluster):
    import cistern
    a = cistern.connect(cluster[0].socket)
    b = cistern.connect(cluster[1].socket)
    w = np.arange(1 << 20, dtype=np.float32)
    a.put("rep/w", w, wait_published=10)
    r = a.replicate("rep/w", ["py-b"], timeout=60)
    assert r["key"] == "rep/w"
    [t] = r["targets"]
    assert t["host_id"] == "py-b" and t["ok"], t
    assert t["upstream"] == "py-a"
    assert sum(t["received"].values()) == r["bytes_sent"]["py-a"] >= w.nbytes
    np.testing.assert_array_equal(b.get("rep/w", local_only=True), w)
    again = a.replicate("rep/w", all=True)
    assert all(t["already_held"] for t in again["targets"])
    with pytest.raises(ValueError, match="py-nowhere"):
        a.replicate("rep/w", ["py-nowhere"])
    with pytest.raises(ValueError, match="not both"):
        a.replicate("rep/w")
    with pytest.raises(TypeError):
        a.replicate("rep/w", "py-b")


def test_get_options_are_checked(cluster):
    import cistern
    b = cistern.connect(cluster[1].socket)
    with pytest.raises(ValueError, match="timeout"):
        b.get("x", timeout=-1)
    with pytest.raises(TypeError, match="prefer_host"):
        b.get("x", prefer_host=3)

"""The Python client against a real cisternd: round trips, zero copy, leases,
read-only views, and the error mapping."""

import subprocess
import sys
import os

import numpy as np
import pytest
import torch

import cistern
from conftest import Daemon

NUMPY_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8",
                "bool", "uint16", "uint32", "uint64"]
TORCH_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
                torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]


def used(client):
    # Bytes held by objects: less the write space the session keeps reserved
    # for its next put over 64 KiB (docs/operations.md, "Reserved write space").
    s = client.stats()
    return s["tiers"][0]["used_bytes"] - s.get("reserved_bytes", 0)


def test_bytes_round_trip(client):
    ref = client.put("blob", b"hello world")
    assert ref == cistern.ObjectRef("blob", ref.generation, 11)
    assert bytes(client.get("blob")) == b"hello world"
    assert bytes(client.get("blob", as_="memoryview")) == b"hello world"


def test_local_only_is_recorded_and_wait_published_returns_at_once_alone(client):
    ref = client.put("hostbound", b"x", local_only=True, wait_published=5.0)
    assert client.stat("hostbound")["local_only"] is True
    assert client.stat("hostbound")["generation"] == ref.generation
    client.put("shared", np.arange(4), wait_published=5.0)  # a daemon alone: nothing to wait for
    assert client.stat("shared")["local_only"] is False
    with pytest.raises(ValueError):
        client.put("bad", b"x", wait_published=-1)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_numpy_round_trip_every_dtype(client, dtype):
    rng = np.random.default_rng(7)
    a = (rng.integers(0, 100, size=(3, 5)) % (2 if dtype == "bool" else 100)).astype(dtype)
    client.put("a", a)
    got = client.get("a")
    assert got.dtype == a.dtype and got.shape == a.shape
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_torch_round_trip_every_dtype(client, dtype):
    t = (torch.arange(24).reshape(2, 3, 4) % (2 if dtype == torch.bool else 50)).to(dtype)
    client.put("t", {"t": t, "scalar": torch.tensor(3, dtype=dtype)})
    got = client.get("t", as_="torch")
    assert got["t"].dtype == dtype and tuple(got["t"].shape) == (2, 3, 4)
    assert torch.equal(got["t"], t)
    assert got["scalar"].shape == () and torch.equal(got["scalar"], torch.tensor(3, dtype=dtype))


def test_state_dict_is_one_object_with_aligned_tensors(client):
    sd = {f"layers.{i}.weight": torch.randn(7, 3) for i in range(4)}
    sd["empty"] = torch.zeros(0, 5)
    client.put("sd", sd)
    assert client.stat("sd")["tensors"] == 5
    got = client.get("sd", as_="torch")
    assert list(got) == list(sd)
    for k in sd:
        assert torch.equal(got[k], sd[k])
    assert all(t.data_ptr() % 64 == 0 for t in got.values() if t.numel())


def test_nested_state_dict_round_trips(client):
    sd = {"encoder": {"layers.0.weight": torch.randn(2, 3), "norm": {"bias": torch.zeros(3)}},
          "head": torch.arange(4, dtype=torch.int64)}
    client.put("nested", sd)
    got = client.get("nested", as_="torch")
    assert set(got) == {"encoder", "head"} and set(got["encoder"]) == {"layers.0.weight", "norm"}
    assert torch.equal(got["encoder"]["layers.0.weight"], sd["encoder"]["layers.0.weight"])
    assert torch.equal(got["encoder"]["norm"]["bias"], sd["encoder"]["norm"]["bias"])
    assert torch.equal(got["head"], sd["head"])
    with pytest.raises(ValueError, match="contain no '/'"):
        client.put("bad", {"a/b": torch.zeros(1)})
    with pytest.raises(ValueError, match="is empty"):
        client.put("bad", {"a": {}})


def test_get_is_zero_copy_into_the_arena(client):
    client.put("a", np.arange(1000, dtype=np.int64))
    view = client._c.get("a", 0)
    first = client.get("a")
    start = view.address
    assert first.__array_interface__["data"][0] == start  # no copy: it is the arena
    # Another process sees the same physical pages: it reads what we stored.
    code = ("import cistern,sys; c=cistern.connect(sys.argv[1]); "
            "a=c.get('a'); sys.exit(0 if int(a.sum())==499500 else 1)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    assert subprocess.run([sys.executable, "-c", code, client.address], env=env).returncode == 0


def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.parametrize("n", [4, 1 << 20])  # 16 B: a private copy; 4 MiB: a private mapping
def test_numpy_views_are_read_only_and_torch_writes_stay_in_this_process(client, n):
    client.put("a", {"x": np.ones(n, dtype=np.float32), "y": np.arange(n, dtype=np.int64)})
    arr = client.get("a")["x"]
    with pytest.raises(ValueError):
        arr[0] = 5
    # torch has no read-only tensors: in-place writes land in this process's
    # private version, never in the shared bytes.
    sd = client.get("a", as_="torch")
    sd["x"].add_(1)
    sd["y"][0] = -7
    assert float(sd["x"].sum()) == 2.0 * n and int(sd["y"][0]) == -7
    assert float(arr.sum()) == n  # the numpy view of the shared bytes
    again = client.get("a", as_="torch")
    assert float(again["x"].sum()) == n and int(again["y"][0]) == 0
    with client.lease("a", as_="torch") as leased:
        leased["x"].mul_(3)
        assert float(leased["x"].sum()) == 3.0 * n
    code = ("import cistern,sys; c=cistern.connect(sys.argv[1]); t=c.get('a', as_='torch'); "
            "t['x'].sub_(1); sys.exit(0 if float(c.get('a')['x'].sum())==float(sys.argv[2]) else 1)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    assert subprocess.run([sys.executable, "-c", code, client.address, str(n)],
                          env=env).returncode == 0
    assert float(client.get("a")["x"].sum()) == n
    # A raw-bytes object: the same.
    client.put("raw", b"\x01" * (3 * n + 5))
    t = client.get("raw", as_="torch")
    t.zero_()
    assert int(client.get("raw", as_="torch").sum()) == 3 * n + 5


def test_a_large_torch_tensor_is_copied_only_where_it_is_written(client):
    n = 8 << 20  # 32 MiB of float32
    client.put("big", {"w": torch.ones(n)})
    before = rss_anon()
    w = client.get("big", as_="torch")["w"]
    assert float(w.sum()) == n  # reads every page
    read = rss_anon() - before
    w[:1024].fill_(2)  # one 4 KiB page
    one_page = rss_anon() - before - read
    w.fill_(3)
    all_pages = rss_anon() - before - read - one_page
    assert read < 4 << 20, f"reading grew anonymous memory by {read} bytes: a copy?"
    assert one_page < 1 << 20, f"a one-page write grew anonymous memory by {one_page} bytes"
    assert all_pages >= (n * 4) * 9 // 10, f"writing every page grew it by only {all_pages}"
    assert float(client.get("big")["w"].sum()) == n


def test_a_view_keeps_bytes_alive_after_remove_until_it_dies(client):
    baseline = used(client)
    client.put("k", np.full(100000, 7, dtype=np.int32))
    arr = client.get("k")
    client.remove("k")
    with pytest.raises(KeyError):
        client.get("k")
    assert int(arr.sum()) == 700000  # still readable, unchanged
    assert used(client) > baseline
    del arr
    assert client.stats()["leases"] == 0
    assert used(client) == baseline


def test_lease_ends_at_release_or_block_exit(client):
    baseline = used(client)
    client.put("k", np.arange(100000, dtype=np.int64))
    with client.lease("k") as arr:
        assert int(arr[-1]) == 99999
        assert client.stats()["leases"] == 1
    assert client.stats()["leases"] == 0
    client.remove("k")
    assert used(client) == baseline  # freed though `arr` is still referenced
    client.put("k", b"v")
    held = client.lease("k", as_="memoryview")
    assert bytes(held.value) == b"v"
    held.release()
    held.release()  # idempotent
    assert held.value is None and client.stats()["leases"] == 0


def test_generation_reads_exactly_that_generation(client):
    g1 = client.put("k", b"one").generation
    g2 = client.put("k", b"two").generation
    assert g2 > g1
    assert bytes(client.get("k", generation=g2)) == b"two"
    with pytest.raises(KeyError):
        client.get("k", generation=g1)


def test_non_contiguous_input_is_stored_contiguously(client):
    base = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    client.put("t", {"t": base.t()})
    assert torch.equal(client.get("t", as_="torch")["t"], base.t().contiguous())


def test_error_mapping(client):
    with pytest.raises(KeyError):
        client.get("missing")
    with pytest.raises(ValueError, match="key is empty"):
        client.put("", b"x")
    with pytest.raises(ValueError, match="does not fit"):
        client.put("huge", np.zeros(1 << 30, dtype=np.uint8))
    client.put("once", b"x", if_absent=True)
    with pytest.raises(FileExistsError):
        client.put("once", b"y", if_absent=True)
    with pytest.raises(ValueError, match="meta"):
        client.put("gpu", torch.empty(3, device="meta"))
    with pytest.raises(TypeError):
        client.put("obj", {"x": [1, 2, 3]})
    with pytest.raises(ValueError, match="empty"):
        client.put("nothing", {})
    try:
        client.get("missing")
    except cistern.Error as e:
        assert e.code == "NOT_FOUND"


def test_full_tier_is_memory_error(client):
    chunk = np.zeros(60 << 20, dtype=np.uint8)
    with pytest.raises(MemoryError, match="no room"):
        for i in range(10):
            client.put(f"fill{i}", chunk)


def test_no_daemon_is_connection_error():
    with pytest.raises(ConnectionError, match="/tmp/no-such-cistern.sock"):
        cistern.connect("/tmp/no-such-cistern.sock")


def test_token_is_checked():
    d = Daemon('token: "s3cret"\n')
    try:
        with pytest.raises(PermissionError):
            cistern.connect(d.socket)
        with pytest.raises(PermissionError):
            cistern.connect(d.socket, token="guess")
        cistern.connect(d.socket, token="s3cret").put("k", b"v")
    finally:
        d.stop()


def test_writer_fills_in_place_and_seals_on_exit(client):
    with client.writer("w", 16) as w:
        w.buffer[:] = bytes(range(16))
    assert w.ref.nbytes == 16 and w.ref.generation > 0
    assert bytes(client.get("w")) == bytes(range(16))
    assert client.stat("w")["checksum"] is not None


def test_writer_aborts_on_exception_and_leaves_nothing(client):
    baseline = used(client)
    with pytest.raises(RuntimeError, match="boom"):
        with client.writer("w", 1 << 20) as w:
            w.buffer[:10] = b"x" * 10
            raise RuntimeError("boom")
    with pytest.raises(KeyError):
        client.get("w")
    assert used(client) == baseline
    assert client.stats()["pending_writes"] == 0


@pytest.mark.parametrize("as_", ["torch", "numpy"])
def test_tensor_writer_fills_a_dict_in_place_that_reads_like_a_put(client, as_):
    src = {"enc": {"w": torch.randn(5, 7)}, "idx": torch.arange(9, dtype=torch.int64)}
    spec = {"enc": {"w": ("float32", (5, 7))}, "idx": (np.int64, [9])}
    with client.tensor_writer("tw", spec, as_=as_) as w:
        assert set(w.tensors) == {"enc", "idx"}
        if as_ == "torch":
            w.tensors["enc"]["w"].copy_(src["enc"]["w"])
            torch.add(src["idx"], 0, out=w.tensors["idx"])
        else:
            w.tensors["enc"]["w"][...] = src["enc"]["w"].numpy()
            w.tensors["idx"][...] = src["idx"].numpy()
    kept = w.tensors["idx"]
    kept[0] = 99  # after the seal: this process's copy only
    client.put("p", src)
    got, put = client._c.get("tw", 0), client._c.get("p", 0)
    assert bytes(memoryview(got)) == bytes(memoryview(put))
    assert got.tensors == put.tensors
    assert client.stat("tw")["checksum"] is not None
    again = client.get("tw", as_="torch")
    assert torch.equal(again["enc"]["w"], src["enc"]["w"]) and int(again["idx"][0]) == 0


def test_tensor_writer_rejects_bad_specs_before_reserving_anything(client):
    for spec, err in [({"x": ("complex64", (2,))}, ValueError), ({"x": ("float32", (-1,))}, ValueError),
                      ({"x": ("float32", 3)}, TypeError), ({"x": 5}, TypeError), ({}, ValueError),
                      ([("x", "float32", (2,))], TypeError), ({"x": ("float32", (True,))}, ValueError),
                      ({"a/b": ("float32", (2,))}, ValueError)]:
        with pytest.raises(err):
            client.tensor_writer("bad", spec)
    with pytest.raises(ValueError, match="numpy lacks"):
        client.tensor_writer("bad", {"x": ("bfloat16", (2,))}, as_="numpy")
    with pytest.raises(ValueError, match="too large"):
        client.tensor_writer("bad", {"x": ("float64", (1 << 40, 1 << 30))})
    assert client.stats()["pending_writes"] == 0
    with pytest.raises(KeyError):
        client.get("bad")
    with pytest.raises(RuntimeError, match="boom"):
        with client.tensor_writer("bad", {"x": ("float32", (4,))}):
            raise RuntimeError("boom")
    with pytest.raises(KeyError):
        client.get("bad")
    assert client.stats()["pending_writes"] == 0


def test_put_many_and_get_many(client):
    items = {f"k{i}": bytes([i]) * 4096 for i in range(64)}
    items["arr"] = np.arange(10)
    refs = client.put_many(items)
    assert [r.key for r in refs] == list(items)
    got = client.get_many(list(items))
    for (k, v), g in zip(items.items(), got):
        if isinstance(v, bytes):
            assert bytes(g) == v
        else:
            np.testing.assert_array_equal(g, v)
    with pytest.raises(KeyError, match="'nope' not found"):
        client.get_many(["k1", "nope"])
    del got, g
    assert client.stats()["leases"] == 0


def test_get_into_fills_caller_owned_tensors(client):
    sd = {"w": torch.randn(3, 4), "b": torch.arange(4, dtype=torch.int64)}
    client.put("sd", sd)
    out = {"w": torch.empty(3, 4), "b": torch.empty(4, dtype=torch.int64)}
    client.get_into("sd", out)
    assert torch.equal(out["w"], sd["w"]) and torch.equal(out["b"], sd["b"])
    arr = np.empty((3, 4), dtype=np.float32)
    client.put("a", sd["w"].numpy())
    client.get_into("a", arr)
    np.testing.assert_array_equal(arr, sd["w"].numpy())
    with pytest.raises(ValueError, match="'w' is stored as"):
        client.get_into("sd", {"w": torch.empty(2, 2), "b": torch.empty(4, dtype=torch.int64)})

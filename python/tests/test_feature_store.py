"""The feature store against the contract of shared/design/dataflow-contract.md,
including the cross-process guarantees."""

import os
import subprocess
import sys
import time

import pytest
import torch

import cistern
from cistern import FeatureStore


def sample(i: int, n: int = 1024):
    return {"hidden": torch.full((n,), float(i)), "logits": torch.arange(8, dtype=torch.float16)}


def other_process(code: str, address: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", "import cistern, sys, torch\n"
                           "from cistern import FeatureStore\n"
                           "c = cistern.connect(sys.argv[1])\n" + code, address], env=env).returncode


def test_put_get_release_consumes_once(client):
    fs = FeatureStore(client)
    ref = fs.put("s1", sample(1), metadata={"step": "7"})
    assert ref.sample_id == "s1" and ref.metadata == {"step": "7"}
    assert [f.name for f in ref.features] == ["hidden", "logits"]
    tensors, lease = fs.get(ref)
    assert torch.equal(tensors["hidden"], sample(1)["hidden"])
    fs.release(lease)
    with pytest.raises(KeyError):
        fs.get(ref)
    assert float(tensors["hidden"][0]) == 1.0  # the bytes we hold are untouched
    fs.release(lease)  # idempotent


def test_retain_on_release_keeps_the_sample(client):
    fs = FeatureStore(client, retain_on_release=True)
    ref = fs.put("s", sample(2))
    for _ in range(3):  # re-iterable epochs
        tensors, lease = fs.get(ref)
        fs.release(lease)
    assert fs.health()["resident_samples"] == 1


def test_reput_makes_a_higher_generation_and_old_refs_fail(client):
    fs = FeatureStore(client)
    old = fs.put("s", sample(1))
    new = fs.put("s", sample(2))
    assert new.generation > old.generation
    with pytest.raises(KeyError):
        fs.get(old)
    tensors, _ = fs.get(new)
    assert float(tensors["hidden"][0]) == 2.0


def test_stale_lease_never_frees_a_newer_generation(client):
    fs = FeatureStore(client)
    old = fs.put("s", sample(1))
    _, stale = fs.get(old)
    new = fs.put("s", sample(2))
    fs.release(stale)
    tensors, _ = fs.get(new)  # still there
    assert float(tensors["hidden"][0]) == 2.0


def test_abort_is_idempotent_and_get_raises(client):
    fs = FeatureStore(client)
    ref = fs.put("s", sample(1))
    fs.abort("s")
    fs.abort("s")
    with pytest.raises(KeyError):
        fs.get(ref)


def test_empty_input_and_tensors_in_metadata_are_rejected(client):
    fs = FeatureStore(client)
    with pytest.raises(ValueError, match="non-empty"):
        fs.put("s", {})
    with pytest.raises(TypeError, match="metadata"):
        fs.put("s", sample(1), metadata={"bad": torch.zeros(2)})
    with pytest.raises(ValueError, match="sample_id"):
        fs.put("", sample(1))
    assert fs.health()["resident_samples"] == 0


def test_over_budget_put_is_atomic(client):
    fs = FeatureStore(client, max_resident_bytes=3 * 4096 + 100)
    fs.put("a", sample(0))
    fs.put("b", sample(1))
    with pytest.raises(MemoryError, match="max_resident_bytes"):
        fs.put("c", {"hidden": torch.zeros(4096)})
    assert [o["key"] for o in client.list("features/")] == ["features/a", "features/b"]


def test_gc_frees_old_unleased_samples_only(client):
    fs = FeatureStore(client, max_hold=60)
    held_ref = fs.put("held", sample(1))
    fs.put("idle", sample(2))
    tensors, lease = fs.get(held_ref)
    assert fs.gc(now=time.time()) == 0  # nothing is old yet
    assert fs.gc(now=time.time() + 120) == 1  # only the unleased one
    assert float(tensors["hidden"][0]) == 1.0
    h = fs.health()
    assert h["resident_samples"] == 1 and h["force_freed"] == 1 and h["active_leases"] == 1
    del tensors
    assert fs.gc(now=time.time() + 120) == 1


def test_release_in_one_process_frees_the_sample_for_all(client):
    fs = FeatureStore(client)
    ref = fs.put("shared", sample(3))
    code = ("fs = FeatureStore(c)\n"
            f"ref = cistern.SampleRef('shared', 'features/shared', {ref.generation}, 0, (), {{}})\n"
            "t, lease = fs.get(ref)\n"
            "assert float(t['hidden'][0]) == 3.0\n"
            "fs.release(lease)\n")
    assert other_process(code, client.address) == 0
    with pytest.raises(KeyError):
        fs.get(ref)
    assert client.stats()["leases"] == 0


def test_dead_process_lease_cannot_free_a_newer_generation(client):
    fs = FeatureStore(client)
    old = fs.put("s", sample(1))
    # Another process takes a lease on the old generation and dies holding it.
    code = ("import os\nfs = FeatureStore(c)\n"
            f"t, lease = fs.get(cistern.SampleRef('s', 'features/s', {old.generation}, 0, (), {{}}))\n"
            "os._exit(0)\n")
    assert other_process(code, client.address) == 0
    new = fs.put("s", sample(2))
    fs.release(cistern.Lease("s", old.generation, 0))  # a stale handle
    tensors, _ = fs.get(new)
    assert float(tensors["hidden"][0]) == 2.0
    assert client.stats()["leases"] == 1  # ours; the dead process's lease is gone


def test_writer_fills_a_sample_in_place_and_reads_back_through_get(client):
    fs = FeatureStore(client)
    want = sample(3)
    with fs.writer("w1", {"hidden": want["hidden"], "logits": ("float16", (8,))},
                   metadata={"step": "2"}) as w:
        w.tensors["hidden"].fill_(3.0)
        w.tensors["logits"].copy_(want["logits"])
    ref = w.ref
    assert ref.sample_id == "w1" and ref.metadata == {"step": "2"}
    assert [(f.name, f.dtype, f.shape) for f in ref.features] == [
        ("hidden", "float32", (1024,)), ("logits", "float16", (8,))]
    tensors, lease = fs.get(ref)
    assert torch.equal(tensors["hidden"], want["hidden"])
    assert torch.equal(tensors["logits"], want["logits"])
    fs.release(lease)
    with pytest.raises(KeyError):
        fs.get(ref)
    capped = FeatureStore(client, namespace="capped", max_resident_bytes=1000)
    with pytest.raises(MemoryError):
        capped.writer("big", {"x": ("float32", (1000,))})
    assert client.stats()["pending_writes"] == 0
    with pytest.raises(KeyError):
        client.get("capped/big")

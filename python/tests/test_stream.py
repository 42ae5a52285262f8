"""cistern.Stream and cistern.StreamLoader against a real cisternd: the
stream contract of shared/design/dataflow-contract.md through Python,
including a daemon kill and a consumer killed while it holds leases."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import cistern
from cistern import SampleRef, Stream, StreamLoader


def sample(i: int, n: int = 16):
    return {"x": np.full(n, i, dtype=np.float32), "idx": np.array([i, -i], dtype=np.int64)}


def put_n(s: Stream, n: int, start: int = 0):
    return [s.put(f"s{i:03d}", sample(i)) for i in range(start, start + n)]


def ids(refs):
    return [r.sample_id for r in refs]


def wait_for(predicate, what: str, limit: float = 15.0):
    """Polls `predicate` until it holds; fails after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def stream(client):
    return Stream(client, "t")


def test_commit_is_idempotent_on_sample_id(client, stream):
    objs = [client.put(f"obj{i}", {"x": np.zeros(4, np.float32)}) for i in range(3)]
    refs = [SampleRef(f"id{i}", o.key, o.generation, 0, (), {}) for i, o in enumerate(objs)]
    assert stream.commit(refs[:2]) == (2, 0)
    assert stream.commit(refs[:2]) == (0, 2)  # a producer retrying after a crash
    assert stream.commit([refs[2], refs[2]]) == (1, 1)
    info = stream.stat()
    assert info["committed"] == 3 and info["depth"] == 3
    assert [r.nbytes for r in stream.lease(3)] == [o.nbytes for o in objs]  # the daemon fills it


def test_a_ref_to_a_missing_generation_rejects_the_whole_commit(client, stream):
    good = client.put("good", {"x": np.zeros(4, np.float32)})
    other = client.put("other", {"x": np.zeros(4, np.float32)})
    refs = [SampleRef("a", "good", good.generation, 0, (), {}),
            SampleRef("b", "other", other.generation + 100, 0, (), {})]
    with pytest.raises(KeyError, match="b"):
        stream.commit(refs)
    assert stream.depth() == 0
    assert stream.stat()["committed"] == 0
    assert client.stat("good")["leases"] == 0  # the pin taken for 'a' was given back


def test_two_samples_naming_one_object_are_refused(client, stream):
    obj = client.put("shared", {"x": np.zeros(4, np.float32)})
    refs = [SampleRef("a", "shared", obj.generation, 0, (), {}),
            SampleRef("b", "shared", obj.generation, 0, (), {})]
    with pytest.raises(ValueError, match="its own object"):
        stream.commit(refs)
    assert stream.stat()["committed"] == 0


def test_lease_hands_out_refs_in_commit_order(stream):
    put_n(stream, 10)
    first = stream.lease(4)
    assert ids(first) == ["s000", "s001", "s002", "s003"]
    assert all(r.deliveries == 1 and r.lease_id for r in first)
    assert len({r.lease_id for r in first}) == 4
    assert ids(stream.lease(100)) == [f"s{i:03d}" for i in range(4, 10)]
    assert stream.lease(1) == []
    assert stream.in_flight() == 10 and stream.depth() == 0


def test_partitions_are_stable_disjoint_and_match_partition_of(stream):
    refs = put_n(stream, 60)
    shards = [stream.lease(100, partition=(i, 3)) for i in range(3)]
    for i, shard in enumerate(shards):
        assert shard, "60 ids leave no shard of 3 empty"
        assert all(cistern.partition_of(r.sample_id, 3) == i for r in shard)
        assert ids(shard) == sorted(ids(shard))  # commit order within the shard
    assert sorted(sum((ids(s) for s in shards), [])) == ids(refs)  # disjoint and complete
    for shard in shards:
        stream.fail(shard, retryable=True)
    again = [stream.lease(100, partition=(i, 3)) for i in range(3)]
    assert [ids(s) for s in again] == [ids(s) for s in shards]  # stable
    assert Stream.partition_of("s000", 3) == cistern.partition_of("s000", 3)


def test_resplit_from_two_to_three_consumers_consumes_each_sample_once(daemon, stream):
    refs = put_n(stream, 60)
    consumers = [Stream(cistern.connect(daemon.socket), "t") for _ in range(3)]
    consumed = []
    # Two consumers, each on its half, ack some batches and hold one more.
    held = []
    for i in range(2):
        for _ in range(2):
            batch = consumers[i].lease(5, partition=(i, 2))
            consumers[i].ack(batch, global_step=1)
            consumed += ids(batch)
        held.append(consumers[i].lease(5, partition=(i, 2)))
    # Re-split to three: the in-flight refs go back, then three shards drain the rest.
    for i in range(2):
        consumers[i].fail(held[i], retryable=True)
    for i in range(3):
        while True:
            batch = consumers[i].lease(4, partition=(i, 3))
            if not batch:
                break
            assert all(cistern.partition_of(r.sample_id, 3) == i for r in batch)
            consumers[i].ack(batch, global_step=2)
            consumed += ids(batch)
    stream.ack([], global_step=2, optimizer_durable=True)
    assert sorted(consumed) == ids(refs)  # each exactly once
    info = stream.stat()
    assert info["acked"] == 60 and info["depth"] == 0 and info["in_flight"] == 0


def test_ack_is_idempotent(stream):
    put_n(stream, 3)
    refs = stream.lease(3)
    assert stream.ack(refs, global_step=1) == (3, 0, 0)
    assert stream.ack(refs, global_step=1) == (0, 3, 0)
    assert stream.ack(refs, global_step=1, optimizer_durable=True) == (0, 3, 3)
    assert stream.ack(refs, global_step=1, optimizer_durable=True) == (0, 3, 0)  # released: fine
    assert stream.stat()["acked"] == 3


def test_non_durable_acks_keep_bytes_until_a_durable_step_covers_them(client, stream):
    put_n(stream, 4)
    step1 = stream.lease(2)
    stream.ack(step1, global_step=1)
    step2 = stream.lease(2)
    stream.ack(step2, global_step=2)
    info = stream.stat()
    assert info["awaiting_durable"] == 4 and info["acked"] == 0
    assert info["global_step"] == 2 and info["durable_step"] is None
    assert all(client.stat(r.key)["generation"] == r.generation for r in step1 + step2)

    assert stream.ack([], global_step=1, optimizer_durable=True).released == 2
    info = stream.stat()
    assert info["awaiting_durable"] == 2 and info["acked"] == 2 and info["durable_step"] == 1
    for r in step1:
        with pytest.raises(KeyError):
            client.stat(r.key)  # released: the object is gone
    assert all(client.stat(r.key) for r in step2)  # step 2 is not covered by step 1

    assert stream.ack([], global_step=2, optimizer_durable=True).released == 2
    info = stream.stat()
    assert info["awaiting_durable"] == 0 and info["acked"] == 4 and info["resident_bytes"] == 0


def test_a_stepless_durable_ack_covers_earlier_stepless_acks(stream):
    put_n(stream, 2)
    a = stream.lease(1)
    assert stream.ack(a).released == 0
    assert stream.stat()["awaiting_durable"] == 1
    b = stream.lease(1)
    assert stream.ack(b, optimizer_durable=True).released == 2
    assert stream.stat()["awaiting_durable"] == 0


def test_fail_requeues_retryable_refs_at_the_tail_and_drops_the_rest(client, stream):
    put_n(stream, 4)
    s0, s1 = stream.lease(2)
    assert stream.fail([s0], retryable=True) == (1, 0)
    assert stream.fail([s1], retryable=False) == (0, 1)
    rest = stream.lease(10)
    assert ids(rest) == ["s002", "s003", "s000"]
    assert rest[2].deliveries == 2
    info = stream.stat()
    assert info["dropped"] == 1 and info["requeued"] == 1
    with pytest.raises(KeyError):
        client.stat(s1.key)  # dropped: freed
    with pytest.raises(cistern.FailedPreconditionError, match="dropped"):
        stream.fail([s1])


def test_an_expired_lease_goes_back_and_its_ack_is_refused(client):
    s = Stream(client, "short", lease_timeout=0.2)
    s.put("a", sample(1))
    old = s.lease(1)
    wait_for(lambda: s.stat()["expired_leases"] == 1, "the lease to expire")
    new = s.lease(1)
    assert ids(new) == ["a"] and new[0].deliveries == 2 and new[0].lease_id != old[0].lease_id
    with pytest.raises(cistern.FailedPreconditionError, match="not current") as e:
        s.ack(old)
    assert isinstance(e.value, cistern.Error) and e.value.code == "FAILED_PRECONDITION"
    assert s.ack(new).acked == 1


def test_reconcile_requeues_leased_and_not_durably_acked_samples(stream):
    put_n(stream, 6)
    durable = stream.lease(2)
    stream.ack(durable, global_step=1, optimizer_durable=True)
    acked = stream.lease(2)
    stream.ack(acked, global_step=2)
    leased = stream.lease(1)
    result = stream.reconcile()
    assert result == (0, 3, 0, 4)  # released, requeued, lost, pending
    info = stream.stat()
    assert info["depth"] == 4 and info["in_flight"] == 0 and info["awaiting_durable"] == 0
    assert stream.reconcile() == (0, 0, 0, 4)  # idempotent
    again = stream.lease(10)
    assert sorted(ids(again)) == sorted(ids(acked + leased) + ["s005"])
    assert not set(ids(durable)) & set(ids(again))


def test_a_daemon_kill_keeps_committed_refs_and_never_redelivers_durable_acks(daemon, client):
    s = Stream(client, "t")
    refs = put_n(s, 6)
    durable = s.lease(2)
    s.ack(durable, global_step=1, optimizer_durable=True)
    s.ack(s.lease(2), global_step=2)  # not durable
    s.lease(1)  # leased when the daemon dies
    daemon.kill()
    daemon.start()
    c = cistern.connect(daemon.socket)
    s = Stream(c, "t")
    info = s.stat()
    assert info["committed"] == 6 and info["acked"] == 2 and info["lost"] == 0
    assert info["depth"] == 4 and info["in_flight"] == 0 and info["durable_step"] == 1
    again = s.lease(10)
    assert ids(again) == ids(refs[2:])  # commit order; the durable ones never again
    for r in again:
        got = c.get(r.key, generation=r.generation)
        i = int(r.sample_id[1:])
        assert np.array_equal(got["x"], sample(i)["x"])
        assert np.array_equal(got["idx"], sample(i)["idx"])
    for r in durable:
        with pytest.raises(KeyError):
            c.stat(r.key)


def test_loader_yields_the_samples_tensors_copy_on_write(client, stream):
    refs = put_n(stream, 4)
    seen = []
    with StreamLoader(stream, 2, timeout=0.2) as loader:
        for batch in loader:
            assert len(batch) == 2 and batch.step == len(seen) // 2 + 1
            for ref, tensors in zip(batch.refs, batch.samples):
                i = int(ref.sample_id[1:])
                assert torch.equal(tensors["x"], torch.from_numpy(sample(i)["x"]))
                assert torch.equal(tensors["idx"], torch.from_numpy(sample(i)["idx"]))
                # torch tensors are copy-on-write: a write stays in this process.
                tensors["x"].add_(100)
                direct = client.get(ref.key, generation=ref.generation)
                assert np.array_equal(direct["x"], sample(i)["x"])
                seen.append(ref.sample_id)
            stacked = batch.stack("x")
            assert stacked.shape == (2, 16)
            assert stacked.data_ptr() != batch.samples[0]["x"].data_ptr()  # stack copies
    assert seen == ids(refs)
    info = stream.stat()
    assert info["awaiting_durable"] == 4 and info["global_step"] == 2 and info["in_flight"] == 0


def test_numpy_loader_views_share_memory_with_the_object(client, stream):
    ref = put_n(stream, 1)[0]
    loader = StreamLoader(stream, 1, timeout=0.2, as_="numpy")
    batch = next(loader)
    direct = client.get(ref.key, generation=ref.generation)
    assert np.shares_memory(batch.samples[0]["x"], direct["x"])
    assert not batch.samples[0]["x"].flags.writeable
    kept = batch.samples[0]["x"]  # keeps the loader's view object alive
    loader.close()
    assert batch.samples is None
    # The loader ended its view's lease before the ack: what is left is the
    # stream's pin and `direct`.
    assert client.stat(ref.key)["leases"] == 2 and kept is not None


def test_loader_acks_with_the_step_and_durability_set_by_done(stream):
    put_n(stream, 6)
    loader = StreamLoader(stream, 2, timeout=0.2, start_step=10)
    steps = []
    for batch in loader:
        steps.append(batch.step)
        if batch.step == 12:
            batch.done(optimizer_durable=True)  # the checkpoint of step 12 is saved
    assert steps == [11, 12, 13]
    info = stream.stat()
    assert info["durable_step"] == 12 and info["acked"] == 4 and info["awaiting_durable"] == 2
    assert info["global_step"] == 13


def test_loader_acks_the_current_batch_when_the_loop_is_left(stream):
    put_n(stream, 6)
    loader = StreamLoader(stream, 2, timeout=0.2)
    for batch in loader:
        break
    info = stream.stat()
    assert info["awaiting_durable"] == 2 and info["in_flight"] == 0 and info["depth"] == 4
    for batch in loader:
        batch.fail()  # the step could not use it
        break
    info = stream.stat()
    assert info["awaiting_durable"] == 2 and info["in_flight"] == 0 and info["depth"] == 4


def test_loader_fails_a_short_trailing_batch_as_retryable(stream):
    put_n(stream, 5)
    loader = StreamLoader(stream, 2, timeout=0.2)
    batches = [b.sample_ids for b in loader]
    assert batches == [["s000", "s001"], ["s002", "s003"]]
    assert loader.short_batches == 1
    info = stream.stat()
    assert info["depth"] == 1 and info["in_flight"] == 0 and info["awaiting_durable"] == 4
    tail = stream.lease(1)
    assert ids(tail) == ["s004"] and tail[0].deliveries == 2


@pytest.mark.parametrize("other,what", [
    ({"x": np.zeros(16, np.float32), "idy": np.zeros(2, np.int64)}, "idy"),
    ({"x": np.zeros(16, np.float64), "idx": np.zeros(2, np.int64)}, "float64"),
    ({"x": np.zeros((4, 4), np.float32), "idx": np.zeros(2, np.int64)}, "rank 2"),
], ids=["names", "dtype", "rank"])
def test_loader_rejects_a_mixed_schema_batch(client, stream, other, what):
    stream.put("good", sample(0))
    stream.put("odd", other)
    loader = StreamLoader(stream, 2, timeout=0.2)
    with pytest.raises(ValueError, match=f"'odd'.*{what}") as error:
        next(loader)
    info = stream.stat()
    assert info["depth"] == 2 and info["in_flight"] == 0 and info["requeued"] == 2
    # Only the stream's pin, though the traceback (kept alive here) holds the views.
    assert client.stat("t/odd")["leases"] == 1 and error.traceback


def test_tensors_in_metadata_are_rejected_before_anything_is_sent(client, stream):
    for bad in (np.zeros(2), torch.zeros(2), b"\x00\x01", bytearray(b"xy"), 7):
        with pytest.raises(TypeError, match="metadata"):
            stream.put("s", sample(0), metadata={"m": bad})
    obj = client.put("obj", {"x": np.zeros(2, np.float32)})
    with pytest.raises(TypeError, match="metadata"):
        stream.commit([SampleRef("s", "obj", obj.generation, 0, (), {"h": np.zeros(4)})])
    with pytest.raises(TypeError):
        stream.commit([np.zeros(3)])
    assert stream.stat()["committed"] == 0
    assert client.list("t/") == []  # put checked before writing the object


def test_backpressure_times_out_with_memory_error_and_resumes_after_acks(daemon, client):
    probe = Stream(client, "bp").put("s000", sample(0))
    s = Stream(client, "bp", high_watermark_bytes=3 * probe.nbytes,
               low_watermark_bytes=probe.nbytes)
    put_n(s, 2, start=1)
    assert s.stat()["paused"]
    with pytest.raises(MemoryError, match="high_watermark_bytes") as e:
        s.put("s003", sample(3), timeout=0.2)
    assert isinstance(e.value, cistern.Error)
    assert [o["key"] for o in client.list("bp/")] == ["bp/s000", "bp/s001", "bp/s002"]  # no orphan
    info = s.stat()
    assert info["producer_rejections"] >= 1 and info["depth"] == 3

    result = {}

    def produce():
        try:
            result["ref"] = s.put("s003", sample(3), timeout=30)
        except BaseException as exc:  # reported below
            result["error"] = exc

    producer = threading.Thread(target=produce)
    producer.start()
    consumer = Stream(cistern.connect(daemon.socket), "bp")
    wait_for(lambda: consumer.stat()["producer_waits"] >= 2, "the producer to wait")
    assert producer.is_alive()  # parked while the stream is paused
    consumer.ack(consumer.lease(3), global_step=1, optimizer_durable=True)
    producer.join(30)
    assert not producer.is_alive() and "error" not in result, result.get("error")
    assert result["ref"].sample_id == "s003"
    info = consumer.stat()
    assert info["committed"] == 4 and info["depth"] == 1 and not info["paused"]


CONSUMER = """
import sys, time, cistern
s = cistern.Stream(cistern.connect(sys.argv[1]), "t")
refs = s.lease(3)
print(len(refs), flush=True)
time.sleep(600)
"""


def test_leases_of_a_killed_consumer_return_after_the_lease_timeout(daemon, client):
    s = Stream(client, "t", lease_timeout=0.5)
    put_n(s, 4)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", CONSUMER, daemon.socket], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "3"
        assert s.stat()["in_flight"] == 3
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: s.stat()["depth"] == 4, "the dead consumer's leases to expire")
    back = s.lease(10)
    assert s.stat()["expired_leases"] == 3
    assert sorted((r.sample_id, r.deliveries) for r in back) == [
        ("s000", 2), ("s001", 2), ("s002", 2), ("s003", 1)]


def test_options_update_the_stream_and_unknown_ones_are_type_errors(client):
    with pytest.raises(TypeError, match="lease_timout"):
        Stream(client, "o", lease_timout=3)
    with pytest.raises(TypeError, match="not both"):
        Stream(client, "o", lease_timeout=1, lease_timeout_ms=1000)
    s = Stream(client, "o", lease_timeout=1.5, max_lease_refs=7, max_in_flight_per_producer=10)
    opts = Stream(client, "o").stat()["options"]  # reopening keeps them
    assert opts["lease_timeout_ms"] == 1500 and opts["max_lease_refs"] == 7
    assert opts["max_in_flight_per_producer"] == 10
    with pytest.raises(ValueError, match="low_watermark"):
        Stream(client, "o", high_watermark_bytes=10, low_watermark_bytes=20)
    with pytest.raises(ValueError):
        Stream(client, "bad/name")
    put_n(s, 10)
    with pytest.raises(MemoryError, match="max_in_flight_per_producer"):
        s.put("one-more", sample(0))
    assert len(s.lease(100)) == 7  # max_lease_refs caps a lease
    assert [i["name"] for i in Stream.list(client)] == ["o"]


def test_a_reput_of_a_held_sample_keeps_the_committed_object(client, stream):
    first = stream.put("s", sample(1))
    again = stream.put("s", sample(2))  # a producer retrying: nothing new
    assert again.generation == first.generation
    assert stream.stat()["committed"] == 1
    got = StreamLoader(stream, 1, timeout=0.2, as_="numpy")
    batch = next(got)
    assert batch.samples[0]["x"][0] == 1.0  # the committed ref still reads its object
    batch.fail(retryable=False)
    # Uncommitted (the sample was dropped): a re-put writes but commits nothing.
    stream.put("s", sample(3))
    assert stream.stat()["committed"] == 1 and client.list("t/") == []


def test_writers_fill_samples_in_place_and_commit_in_one_batch(client, stream):
    refs = []
    for i in range(4):
        with stream.writer(f"w{i}", {"x": ("float32", (16,)), "idx": ("int64", (1,))},
                           metadata={"i": str(i)}) as w:
            w.tensors["x"].fill_(float(i))
            w.tensors["idx"][0] = i
        refs.append(w.ref)
    assert stream.depth() == 0  # written, not committed
    assert stream.commit(refs).committed == 4
    got = stream.lease(4)
    assert [r.sample_id for r in got] == ["w0", "w1", "w2", "w3"]
    assert [r.metadata for r in got] == [{"i": str(i)} for i in range(4)]
    for r in got:
        t = client.get(r.key, generation=r.generation, as_="torch")
        i = int(r.sample_id[1:])
        assert torch.equal(t["x"], torch.full((16,), float(i))) and int(t["idx"][0]) == i
    stream.ack(got)
    with pytest.raises(FileExistsError):
        stream.writer("w0", {"x": ("float32", (16,))})
    assert client.stats()["pending_writes"] == 0

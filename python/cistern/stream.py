"""Streams: durable queues of sample refs from producers to trainers, served
by cisternd (the contract: shared/design/dataflow-contract.md).

    s = cistern.Stream(client, "rollouts", lease_timeout=30)
    s.put("s00001", {"hidden": h, "logits": l})           # a producer
    with cistern.StreamLoader(s, 32) as loader:           # a trainer
        for batch in loader:
            loss = train_step(batch.stack("hidden"))
            if step % 100 == 0:
                save_checkpoint(step)
                batch.done(global_step=step, optimizer_durable=True)

A ref (``SampleRef``) is metadata only: the tensors are one sealed object
(``key``, ``generation``) that the stream keeps (no eviction, no free) until
the sample is released. ``commit`` is idempotent on ``sample_id``; ``lease``
hands refs out in commit order (optionally one stable partition of them);
``ack`` is durable when it returns; ``fail`` requeues or drops.

An acked sample's bytes stay (``stat()["awaiting_durable"]``) until a *durable*
ack covers it: an ack with ``optimizer_durable=True`` and a ``global_step`` at
or above the one the sample was acked with (or, for acks without a step, a
later step-less durable ack). Only then is the object freed and the sample
never delivered again. Until then ``reconcile()`` (run it when a trainer
restarts from its checkpoint) puts it back in the queue, together with every
leased sample, so a crash loses nothing and retrains only what the checkpoint
does not hold.

Errors are the package's: ``KeyError`` (no such stream, sample or object
generation), ``ValueError`` (bad name, ref or option), ``MemoryError``
(backpressure outlasted the wait; the registry disk is full),
``cistern.FailedPreconditionError`` (a lease that is no longer current: it
expired and the sample went back to the queue; a sample already dropped),
``ConnectionError`` (the daemon is gone or the registry cannot be written),
``TypeError`` (a ref or metadata of the wrong type, e.g. tensor bytes in
metadata: checked before anything is sent).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import (Client, FailedPreconditionError, _cistern, _flatten, _seconds, _tensor_entry,
               _tensors, _translate)
from .feature_store import FeatureSpec, SampleRef, SampleWriter

_INT_OPTIONS = ("lease_timeout_ms", "high_watermark_bytes", "low_watermark_bytes",
                "max_in_flight_per_producer", "max_lease_refs")
_OPTIONS = ("lease_timeout",) + _INT_OPTIONS


class CommitResult(NamedTuple):
    committed: int   # newly committed by this call
    duplicates: int  # sample ids committed before: skipped


class AckResult(NamedTuple):
    acked: int     # newly acked by this call
    already: int   # acked before
    released: int  # samples whose bytes this call freed (a durable ack covered them)


class FailResult(NamedTuple):
    requeued: int
    dropped: int


class ReconcileResult(NamedTuple):
    released: int  # acked and durable: objects freed now
    requeued: int  # leased, or acked but not durable: back in the queue
    lost: int      # committed, but the object was gone
    pending: int   # the queue's depth afterwards


@_translate
def partition_of(sample_id: str, count: int) -> int:
    """The stable partition of ``sample_id`` among ``count`` (XXH64 of the id,
    seed 0, modulo count): what ``lease(partition=(index, count))`` uses."""
    if not isinstance(count, int) or count <= 0:
        raise ValueError(f"count must be a positive int, not {count!r}")
    return _cistern.partition_of(sample_id, count)


def _parse_options(options: Dict[str, Any]) -> Dict[str, int]:
    for k in options:
        if k not in _OPTIONS:
            raise TypeError(f"Stream got an unknown option {k!r}; options are "
                            f"{', '.join(_OPTIONS)}")
    if "lease_timeout" in options and "lease_timeout_ms" in options:
        raise TypeError("give lease_timeout (seconds) or lease_timeout_ms, not both")
    out = {}
    if "lease_timeout" in options:
        v = options["lease_timeout"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"lease_timeout must be positive seconds, not {v!r}")
        out["lease_timeout_ms"] = max(1, round(min(v * 1000, 1e18)))  # inf: the daemon names the range
    for k in _INT_OPTIONS:
        if k not in options:
            continue
        v = options[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{k} must be a non-negative int, not {v!r}")
        out[k] = v
    return out


def _has_tensor_bytes(v) -> bool:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return True
    if hasattr(v, "__array_interface__") or hasattr(v, "data_ptr"):
        return True
    try:
        memoryview(v)
        return True
    except TypeError:
        return False


def _check_metadata(sample_id, metadata) -> Dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata of sample {sample_id!r} must be a dict of str to str, "
                        f"not {type(metadata).__name__}")
    for k, v in metadata.items():
        if _has_tensor_bytes(k) or _has_tensor_bytes(v):
            raise TypeError(f"metadata of sample {sample_id!r} carries tensor bytes "
                            f"({k!r}: {type(v).__name__}); tensors belong in the sample's object, "
                            "metadata is str to str")
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata of sample {sample_id!r} must map str to str, got "
                            f"{k!r}: {type(v).__name__}")
    return dict(metadata)


def _dtype_name(dtype) -> str:
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", None) or str(dtype)
    return name.replace("torch.", "")


def _to_native(ref) -> tuple:
    """A SampleRef as the tuple the native module takes; TypeError for anything
    else (checked before a call sends anything)."""
    if not isinstance(ref, SampleRef):
        if isinstance(ref, tuple) and 6 <= len(ref) <= 8:
            ref = SampleRef(*ref)
        else:
            raise TypeError(f"expected a cistern.SampleRef, got {type(ref).__name__}")
    sid, key, gen = ref.sample_id, ref.key, ref.generation
    if not isinstance(sid, str) or not isinstance(key, str):
        raise TypeError(f"sample_id and key must be str, got {sid!r}, {key!r}")
    for name, v in (("generation", gen), ("nbytes", ref.nbytes), ("lease_id", ref.lease_id),
                    ("deliveries", ref.deliveries)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise TypeError(f"{name} of sample {sid!r} must be a non-negative int, not {v!r}")
    features = []
    for f in ref.features or ():
        if _has_tensor_bytes(f):
            raise TypeError(f"features of sample {sid!r} carry tensor bytes; a feature is "
                            "(name, dtype, shape)")
        name, dtype, shape = f
        if not isinstance(name, str):
            raise TypeError(f"a feature name of sample {sid!r} must be str, not {name!r}")
        if _has_tensor_bytes(shape) and not isinstance(shape, (tuple, list)):
            raise TypeError(f"feature {name!r} of sample {sid!r}: shape must be a tuple of ints")
        features.append((name, _dtype_name(dtype), tuple(int(d) for d in shape)))
    metadata = _check_metadata(sid, ref.metadata)
    return (sid, key, gen, ref.nbytes, features, metadata, ref.lease_id, ref.deliveries)


def _from_native(t) -> SampleRef:
    sid, key, gen, nbytes, features, metadata, lease_id, deliveries = t
    specs = tuple(FeatureSpec(n, d, tuple(s)) for n, d, s in features)
    return SampleRef(sid, key, gen, nbytes, specs, dict(metadata), lease_id, deliveries)


def _refs(refs) -> List[tuple]:
    if isinstance(refs, SampleRef):
        refs = [refs]
    return [_to_native(r) for r in refs]


class Stream:
    """A named durable queue of sample refs in cisternd. Opening creates it if
    it does not exist; given options update it. Options: ``lease_timeout``
    (seconds) or ``lease_timeout_ms``, ``high_watermark_bytes``,
    ``low_watermark_bytes``, ``max_in_flight_per_producer``,
    ``max_lease_refs``; unset ones keep the stream's value (or the daemon's
    default). A call that waits (``lease`` or ``commit`` with a timeout) holds
    up other calls on the same Client: give producers and consumers in one
    process their own Client."""

    @_translate
    def __init__(self, client: Client, name: str, **options):
        if not isinstance(client, Client):
            raise TypeError(f"client must be a cistern.Client, not {type(client).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"stream name must be str, not {type(name).__name__}")
        self._client = client
        self._s = _cistern.Stream(client._c, name, **_parse_options(options))

    @property
    def name(self) -> str:
        return self._s.name

    @property
    def client(self) -> Client:
        return self._client

    def __repr__(self) -> str:
        return f"cistern.Stream({self.name!r})"

    @staticmethod
    @_translate
    def list(client: Client) -> List[Dict[str, Any]]:
        """``stat()`` of every stream of the daemon."""
        return _cistern.list_streams(client._c)

    partition_of = staticmethod(partition_of)

    @_translate
    def commit(self, refs: Sequence[SampleRef], timeout: Optional[float] = None,
               producer: str = "") -> CommitResult:
        """Commits refs in one transaction; a sample_id committed before is
        skipped (counted in ``duplicates``). Every ref must name a sealed
        object generation (else KeyError, and nothing is committed). While the
        stream applies backpressure, waits up to ``timeout`` seconds (None: not
        at all), then raises MemoryError. ``producer`` names the producer for
        ``max_in_flight_per_producer`` (default: the client's name)."""
        native = _refs(refs)
        return CommitResult(*self._s.commit(native, _seconds(timeout, "timeout"), producer))

    @_translate
    def lease(self, max_refs: int, timeout: Optional[float] = None,
              partition: Optional[Tuple[int, int]] = None, min_refs: int = 1) -> List[SampleRef]:
        """Up to ``max_refs`` pending refs in commit order, each with its
        ``lease_id`` and ``deliveries``. Returns once ``min_refs`` are
        available, or after ``timeout`` seconds with what there is (maybe
        none); ``timeout=None`` does not wait. ``partition=(index, count)``
        takes only refs with ``partition_of(sample_id, count) == index``. A
        lease not acked or failed within the stream's lease timeout goes back
        to the queue."""
        if isinstance(max_refs, bool) or not isinstance(max_refs, int) or max_refs < 1:
            raise ValueError(f"max_refs must be a positive int, not {max_refs!r}")
        if isinstance(min_refs, bool) or not isinstance(min_refs, int) or min_refs < 1:
            raise ValueError(f"min_refs must be a positive int, not {min_refs!r}")
        if partition is not None:
            index, count = partition
            if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
                raise ValueError(f"partition must be (index, count) with 0 <= index < count, "
                                 f"not {partition!r}")
            partition = (index, count)
        got = self._s.lease(max_refs, min_refs, _seconds(timeout, "timeout"), partition)
        return [_from_native(t) for t in got]

    @_translate
    def ack(self, refs: Sequence[SampleRef], global_step: Optional[int] = None,
            optimizer_durable: bool = False) -> AckResult:
        """Acks leased refs; durable when it returns, idempotent. The bytes
        stay until a durable ack covers the samples (see the module doc):
        pass ``optimizer_durable=True`` once the optimizer state of
        ``global_step`` is saved. FailedPreconditionError if a lease is no
        longer current; any bad ref rejects the whole ack."""
        if global_step is not None and (isinstance(global_step, bool) or
                                        not isinstance(global_step, int) or global_step < 0):
            raise ValueError(f"global_step must be a non-negative int or None, not {global_step!r}")
        native = _refs(refs)
        return AckResult(*self._s.ack(native, global_step, bool(optimizer_durable)))

    @_translate
    def fail(self, refs: Sequence[SampleRef], retryable: bool = True) -> FailResult:
        """Retryable refs go to the tail of the queue; others are dropped
        (durably) and their objects freed."""
        native = _refs(refs)
        return FailResult(*self._s.fail(native, bool(retryable)))

    @_translate
    def stat(self) -> Dict[str, Any]:
        """depth, in_flight, awaiting_durable, resident_bytes, paused, the
        totals (committed, acked, dropped, lost), the marker (global_step,
        durable_step, optimizer_durable), the counters and the options."""
        return self._s.stat()

    def depth(self) -> int:
        """Pending refs: committed, waiting for a lease."""
        return self.stat()["depth"]

    def in_flight(self) -> int:
        """Leased refs, neither acked nor failed."""
        return self.stat()["in_flight"]

    @_translate
    def reconcile(self) -> ReconcileResult:
        """After a consumer restart: every leased and every acked-but-not-
        durable sample goes back to the queue. Idempotent."""
        return ReconcileResult(*self._s.reconcile())

    @_translate
    def put(self, sample_id: str, tensors: Dict[str, Any],
            metadata: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
            producer: str = "") -> SampleRef:
        """Writes ``tensors`` (a dict of arrays/tensors) as one evictable object
        ``<stream>/<sample_id>`` and commits its ref (features taken from the
        tensors). ``timeout`` (seconds) bounds the wait for space and for
        backpressure together; then MemoryError, and the object just written
        is removed.

        Safe to retry and to race: the object is written only if its key has
        none, and otherwise the daemon commits whichever generation is visible
        at that moment, in one step, so a put never replaces a generation that
        another producer (or an earlier try) wrote. A re-put of a sample the
        stream holds writes nothing and returns a ref to the held generation;
        one of a sample the stream released or dropped commits nothing,
        removes what it wrote and returns a ref of generation 0 (no object)."""
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError(f"sample_id must be a non-empty str, not {sample_id!r}")
        if not isinstance(tensors, dict) or not tensors:
            raise ValueError(f"put of sample {sample_id!r}: tensors must be a non-empty dict")
        metadata = _check_metadata(sample_id, metadata)
        seconds = _seconds(timeout, "timeout")
        key = f"{self.name}/{sample_id}"
        entries = [_tensor_entry(name, v) for name, v in _flatten(key, tensors, "")]
        return _from_native(self._s.put(sample_id, entries, metadata, seconds, producer))

    def writer(self, sample_id: str, spec: Dict[str, Any],
               metadata: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
               as_: str = "torch") -> SampleWriter:
        """Writes sample ``sample_id`` in place, as the object ``put`` would
        write (``<stream>/<sample_id>``, evictable), but does not commit it:
        commit the writers' refs in batches, one transaction (one fsync) per
        batch::

            refs = []
            for sid, x in batch:
                with stream.writer(sid, {"x": ("float32", (1024,))}) as w:
                    w.tensors["x"].copy_(x)
                refs.append(w.ref)
            stream.commit(refs)

        Commit soon: until committed the object may be evicted under memory
        pressure, and its commit then raises KeyError. FileExistsError if
        the sample's key already has an object (``put`` commits that one).
        ``timeout`` (seconds) waits for space; ``spec`` as in
        ``Client.tensor_writer``."""
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError(f"sample_id must be a non-empty str, not {sample_id!r}")
        metadata = _check_metadata(sample_id, metadata)
        key = f"{self.name}/{sample_id}"
        w = self.client.tensor_writer(key, spec, as_=as_, evictable=True, if_absent=True,
                                      timeout=timeout)
        return SampleWriter(w, sample_id, metadata)


_UNSET = object()


class Batch:
    """One leased batch from a StreamLoader.

    ``refs``: the leased SampleRefs; ``samples``: one dict per sample, tensor
    name to a tensor (or numpy array) viewing the shared memory, no copy;
    ``step``: the global_step the ack will carry. The views are valid until
    the batch is acked (when the next batch is requested, or the loop or
    ``with`` block ends): ``stack`` copies, and so should anything kept."""

    def __init__(self, loader: "StreamLoader", refs, views, samples, step, durable):
        self._loader = loader
        self.refs: List[SampleRef] = refs
        self._views = views
        self.samples: Optional[List[Dict[str, Any]]] = samples
        self.step: Optional[int] = step
        self.optimizer_durable: bool = durable
        self._finished = False

    def __len__(self) -> int:
        return len(self.refs)

    def __repr__(self) -> str:
        state = ", finished" if self._finished else ""
        return (f"cistern.Batch({len(self.refs)} samples, step={self.step}, "
                f"optimizer_durable={self.optimizer_durable}{state})")

    @property
    def sample_ids(self) -> List[str]:
        return [r.sample_id for r in self.refs]

    def stack(self, name: str):
        """The tensor ``name`` of every sample stacked into one new tensor
        (a copy, which outlives the batch)."""
        if self.samples is None:
            raise ValueError("the batch was acked or failed; its views are released")
        parts = [s[name] for s in self.samples]
        if self._loader._as == "torch":
            import torch
            return torch.stack(parts)
        import numpy
        return numpy.stack(parts)

    def done(self, *, global_step=_UNSET, optimizer_durable: Optional[bool] = None,
             now: bool = False) -> Optional[AckResult]:
        """Sets what the batch's ack carries: ``global_step`` (an int, or None
        for a step-less ack) and ``optimizer_durable`` (True once the
        optimizer state of that step is saved). The loader acks when the next
        batch is requested; ``now=True`` acks at once (views released first)
        and returns the AckResult."""
        if self._finished:
            raise ValueError("the batch was already acked or failed")
        if global_step is not _UNSET:
            self.step = global_step
        if optimizer_durable is not None:
            self.optimizer_durable = bool(optimizer_durable)
        if now:
            return self._loader._ack(self)
        return None

    def fail(self, retryable: bool = True) -> FailResult:
        """Fails the batch now (the step could not use it): retryable refs go
        back to the queue, others are dropped; nothing is acked."""
        if self._finished:
            raise ValueError("the batch was already acked or failed")
        self._release()
        return self._loader.stream.fail(self.refs, retryable=retryable)

    def _release(self) -> None:
        self._finished = True
        self.samples = None
        views, self._views = self._views, []
        for v in views:
            v.release()


class StreamLoader:
    """Iterates over a stream in batches: leases ``batch_size`` refs (waiting
    up to ``timeout`` seconds for a full batch), fetches every sample's
    tensors (numpy: read-only views of the shared bytes; torch:
    copy-on-write, see the ``cistern`` module's docstring), yields a Batch,
    and acks it when the next batch is
    requested, or when the ``for`` loop, ``with`` block or ``close()`` ends
    it. A short batch (fewer than ``batch_size`` refs at the timeout) is
    failed as retryable and the iteration stops; iterating again goes on
    leasing. A batch whose samples differ in schema (tensor names, dtypes or
    ranks) is failed as retryable and raises ValueError naming the sample.

    Steps and durability: by default (``global_step="auto"``) the loader
    numbers batches itself, from ``start_step`` + 1 (default: the stream's
    highest acked step, so new acks never fall under an old durable step),
    and acks with ``optimizer_durable=False``. Such acks keep the samples'
    bytes in the stream until a durable ack covers them; after a crash,
    ``reconcile()`` requeues them. A trainer that checkpoints passes its own
    step (``start_step=`` the checkpoint's step on restart) and, on the batch
    whose step it saved, calls ``batch.done(optimizer_durable=True)``: that
    ack releases every sample acked at or below the step.
    ``global_step=None`` acks without steps (a step-less durable ack covers
    every earlier ack).

    A step that raises should ``batch.fail()`` the batch if the process goes
    on; leaving the loop any other way acks it."""

    def __init__(self, stream: Stream, batch_size: int, *, timeout: float = 10.0,
                 partition: Optional[Tuple[int, int]] = None, as_: str = "torch",
                 global_step="auto", start_step: Optional[int] = None,
                 optimizer_durable: bool = False):
        if not isinstance(stream, Stream):
            raise TypeError(f"stream must be a cistern.Stream, not {type(stream).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
        if as_ not in ("torch", "numpy"):
            raise ValueError(f"as_ must be 'torch' or 'numpy', not {as_!r}")
        if global_step not in ("auto", None):
            raise ValueError(f"global_step must be 'auto' or None, not {global_step!r}")
        if start_step is not None and (isinstance(start_step, bool) or
                                       not isinstance(start_step, int) or start_step < 0):
            raise ValueError(f"start_step must be a non-negative int, not {start_step!r}")
        self.stream = stream
        self.batch_size = batch_size
        self.timeout = _seconds(timeout, "timeout")
        self.partition = partition
        self._as = as_
        self._auto = global_step == "auto"
        self._step = start_step
        self._durable = bool(optimizer_durable)
        self._current: Optional[Batch] = None
        self._closed = False
        self.last_ack: Optional[AckResult] = None
        self.short_batches = 0  # short trailing batches failed as retryable

    @property
    def step(self) -> Optional[int]:
        """The step of the latest batch (auto-numbered or set by done())."""
        return self._step

    def __iter__(self):
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                yield batch
        finally:
            self._finish()

    def __next__(self) -> Batch:
        batch = self._next_batch()
        if batch is None:
            raise StopIteration
        return batch

    def close(self) -> None:
        """Acks the current batch; no more batches follow. Idempotent."""
        try:
            self._finish()
        finally:
            self._closed = True

    def __enter__(self) -> "StreamLoader":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    # ---- internals ----

    def _finish(self) -> None:
        batch, self._current = self._current, None
        if batch is not None and not batch._finished:
            self._ack(batch)

    def _ack(self, batch: Batch) -> AckResult:
        batch._release()  # the views' leases end before the ack may free the objects
        if batch.step is not None:
            self._step = batch.step if self._step is None else max(self._step, batch.step)
        try:
            result = self.stream.ack(batch.refs, global_step=batch.step,
                                     optimizer_durable=batch.optimizer_durable)
        except FailedPreconditionError:
            # Some leases expired (the step outlasted the stream's lease timeout):
            # ack the others; the expired ones will be delivered again.
            acked = already = released = stale = 0
            for r in batch.refs:
                try:
                    a = self.stream.ack([r], global_step=batch.step,
                                        optimizer_durable=batch.optimizer_durable)
                except FailedPreconditionError:
                    stale += 1
                    continue
                acked += a.acked
                already += a.already
                released += a.released
            warnings.warn(f"stream '{self.stream.name}': {stale} of {len(batch.refs)} leases of "
                          f"the batch at step {batch.step} expired before the ack; those samples "
                          "will be delivered again (raise the stream's lease_timeout)",
                          RuntimeWarning, stacklevel=3)
            result = AckResult(acked, already, released)
        self.last_ack = result
        return result

    def _next_step(self) -> Optional[int]:
        if not self._auto:
            return None
        if self._step is None:
            info = self.stream.stat()
            self._step = max(info["global_step"] or 0, info["durable_step"] or 0)
        return self._step + 1

    def _next_batch(self) -> Optional[Batch]:
        self._finish()
        if self._closed:
            return None
        refs = self.stream.lease(self.batch_size, timeout=self.timeout, partition=self.partition,
                                 min_refs=self.batch_size)
        if len(refs) < self.batch_size:
            if refs:
                self.stream.fail(refs, retryable=True)
                self.short_batches += 1
            return None
        views = []
        try:
            samples, schemas = [], []
            for r in refs:
                views.append(_fetch(self.stream.client, r))
                meta = views[-1].tensors
                samples.append(_tensors(views[-1], self._as, meta))
                schemas.append({t["name"]: (t["dtype"], len(t["shape"])) for t in meta})
            _check_schema(self.stream.name, refs, schemas)
        except BaseException:
            for v in views:
                v.release()
            try:
                self.stream.fail(refs, retryable=True)
            except Exception:
                pass  # the leases expire anyway
            raise
        step = self._next_step()
        if step is not None:
            self._step = step
        self._current = Batch(self, refs, views, samples, step, self._durable)
        return self._current


@_translate
def _fetch(client: Client, ref: SampleRef):
    return client._c.get(ref.key, ref.generation)


def _check_schema(stream: str, refs, schemas) -> None:
    """ValueError unless every sample has the first one's tensor names, dtypes
    and ranks; ``schemas``: per sample, name -> (dtype, rank)."""
    first = schemas[0]
    if not first:
        raise ValueError(f"sample {refs[0].sample_id!r} ({refs[0].key!r}) of stream '{stream}' is "
                         "not a tensor dict")
    for r, s in zip(refs[1:], schemas[1:]):
        if s == first:
            continue
        if set(s) != set(first):
            what = f"tensors {sorted(s)} where sample {refs[0].sample_id!r} has {sorted(first)}"
        else:
            name = next(n for n in sorted(s) if s[n] != first[n])
            what = (f"tensor {name!r} as {s[name][0]} of rank {s[name][1]} where sample "
                    f"{refs[0].sample_id!r} has {first[name][0]} of rank {first[name][1]}")
        raise ValueError(f"mixed schema in a batch of stream '{stream}': sample {r.sample_id!r} "
                         f"has {what}; the batch was failed as retryable")

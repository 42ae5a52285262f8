"""The feature store: per-sample feature tensors handed from producers to
consumers through Cistern objects, with the contract of
shared/design/dataflow-contract.md.

Each sample is one tensor-dict object ``<namespace>/<sample_id>``. Generations
and leases live in the daemon, so the guarantees hold across processes:

* put is atomic (the object becomes visible only when sealed) and a re-put of
  a sample makes a strictly higher generation;
* get(ref) reads exactly ref's generation or raises KeyError, and holds a
  daemon lease on it for as long as the returned tensors live;
* release(lease) is idempotent; by default it consumes the sample (the object
  is removed if, and only if, its current generation is the lease's, so a
  stale lease from a dead process can never free a newer generation); with
  ``retain_on_release`` only the lease ends;
* after release/abort/gc, a get of the ref raises at once, while bytes that
  some process still holds stay intact until its tensors die (the daemon frees
  them at the last lease): no use after free;
* gc force-frees samples older than ``max_hold`` that nobody holds.

``max_resident_bytes`` is a per-instance backstop: a put that would take this
store's resident samples above it raises MemoryError before anything is
visible. The daemon's tier budget is the hard limit behind it.
"""

from __future__ import annotations

import time
from typing import Any, Dict, NamedTuple, Optional, Tuple

from . import Client, NotFoundError, TensorWriter, _spec_entries, connect


class FeatureSpec(NamedTuple):
    name: str
    dtype: str
    shape: Tuple[int, ...]


class SampleRef(NamedTuple):
    """Metadata only: never tensor bytes. The same type serves the feature
    store and streams; ``lease_id`` and ``deliveries`` are set only on refs
    that ``Stream.lease`` returned (``deliveries`` counts this one)."""

    sample_id: str
    key: str
    generation: int
    nbytes: int
    features: Tuple[FeatureSpec, ...]
    metadata: Dict[str, str]
    lease_id: int = 0
    deliveries: int = 0


class Lease(NamedTuple):
    sample_id: str
    generation: int
    lease_id: int


class SampleWriter:
    """One sample filled in place (``FeatureStore.writer``, ``Stream.writer``):
    ``tensors`` are the sample's tensors over shared memory, nested as the
    spec, uninitialised until written; ``ref`` is its SampleRef once the
    ``with`` block ended without an exception (which aborts the write)."""

    def __init__(self, writer: TensorWriter, sample_id: str, metadata: Dict[str, str]):
        self._writer = writer
        self._sample_id = sample_id
        self._metadata = metadata
        self.tensors = writer.tensors
        self.ref: Optional[SampleRef] = None

    def __enter__(self) -> "SampleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._writer.__exit__(exc_type, exc, tb)
        if exc_type is None:
            r = self._writer.ref
            features = tuple(FeatureSpec(t["name"], t["dtype"], tuple(t["shape"]))
                             for t in self._writer._w.tensors)
            self.ref = SampleRef(self._sample_id, r.key, r.generation, r.nbytes, features,
                                 self._metadata)
        return False


def _spec_nbytes(entries) -> int:
    import numpy as np
    total = 0
    for _, dtype, shape in entries:
        n = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        for d in shape:
            n *= d
        total += n
    return total


class FeatureStore:
    def __init__(self, client: Optional[Client] = None, *, namespace: str = "features",
                 retain_on_release: bool = False, max_resident_bytes: Optional[int] = None,
                 max_hold: Optional[float] = None, token: Optional[str] = None,
                 as_: str = "torch"):
        if not namespace or "/" in namespace:
            raise ValueError(f"namespace {namespace!r} must be non-empty and contain no '/'")
        if max_resident_bytes is not None and max_resident_bytes <= 0:
            raise ValueError(f"max_resident_bytes must be positive, not {max_resident_bytes}")
        if max_hold is not None and max_hold <= 0:
            raise ValueError(f"max_hold must be positive seconds, not {max_hold}")
        self._c = client if client is not None else connect(token=token)
        self._prefix = namespace + "/"
        self._retain = retain_on_release
        self._max_resident = max_resident_bytes
        self._max_hold = max_hold
        self._as = as_
        self._next_lease = 1
        self._leases: Dict[int, Tuple[str, int]] = {}  # lease id -> (sample_id, generation)
        self._force_freed = 0
        self._force_freed_bytes = 0

    def _key(self, sample_id: str) -> str:
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError(f"sample_id must be a non-empty str, not {sample_id!r}")
        return self._prefix + sample_id

    def _resident(self):
        return self._c.list(self._prefix)

    def _metadata(self, sample_id: str, metadata) -> Dict[str, str]:
        metadata = dict(metadata or {})
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"put of sample {sample_id!r}: metadata must map str to str "
                                f"(tensors belong in `tensors`), got {k!r}: {type(v).__name__}")
        return metadata

    def _check_room(self, sample_id: str, key: str, nbytes: int) -> None:
        if self._max_resident is not None:
            resident = sum(o["size"] for o in self._resident() if o["key"] != key)
            if resident + nbytes > self._max_resident:
                raise MemoryError(
                    f"put of sample {sample_id!r} ({nbytes} bytes) would exceed "
                    f"max_resident_bytes={self._max_resident} ({resident} bytes resident)")

    def put(self, sample_id: str, tensors: Dict[str, Any],
            metadata: Optional[Dict[str, str]] = None) -> SampleRef:
        key = self._key(sample_id)
        if not isinstance(tensors, dict) or not tensors:
            raise ValueError(f"put of sample {sample_id!r}: tensors must be a non-empty dict")
        metadata = self._metadata(sample_id, metadata)
        if self._max_resident is not None:
            self._check_room(sample_id, key, sum(_nbytes(t) for t in tensors.values()))
        ref = self._c.put(key, tensors)
        features = tuple(FeatureSpec(name, _dtype(t), tuple(t.shape)) for name, t in tensors.items())
        return SampleRef(sample_id, key, ref.generation, ref.nbytes, features, metadata)

    def writer(self, sample_id: str, spec: Dict[str, Any],
               metadata: Optional[Dict[str, str]] = None) -> SampleWriter:
        """Like ``put``, but the producer writes the features in place, with
        no copy through this process::

            with fs.writer("s17", {"hidden": ("float32", (192, 1024))}) as w:
                torch.matmul(x, proj, out=w.tensors["hidden"])
            ref = w.ref

        ``spec``: name to (dtype, shape), or to an array/tensor to take both
        from. Tensors are torch unless the store was made with as_="numpy"."""
        key = self._key(sample_id)
        metadata = self._metadata(sample_id, metadata)
        as_ = "numpy" if self._as == "numpy" else "torch"
        if self._max_resident is not None:
            self._check_room(sample_id, key, _spec_nbytes(_spec_entries(key, spec, as_)))
        return SampleWriter(self._c.tensor_writer(key, spec, as_=as_), sample_id, metadata)

    def get(self, ref: SampleRef):
        """(tensors, lease) for exactly ref's generation; KeyError if it is gone."""
        tensors = self._c.get(ref.key, generation=ref.generation, as_=self._as)
        if not isinstance(tensors, dict):
            raise NotFoundError(f"{ref.key!r} is not a feature sample")
        lease_id = self._next_lease
        self._next_lease += 1
        self._leases[lease_id] = (ref.sample_id, ref.generation)
        return tensors, Lease(ref.sample_id, ref.generation, lease_id)

    def release(self, lease: Lease) -> None:
        """Idempotent. Consumes the sample unless retain_on_release."""
        if self._leases.pop(lease.lease_id, None) is None:
            return
        if self._retain:
            return
        try:
            self._c.remove(self._key(lease.sample_id), generation=lease.generation)
        except KeyError:
            pass  # already consumed, aborted, or superseded: a stale lease frees nothing

    def abort(self, sample_id: str) -> None:
        """Drops the sample now. Idempotent."""
        try:
            self._c.remove(self._key(sample_id))
        except KeyError:
            pass

    def gc(self, now: Optional[float] = None) -> int:
        """Force-frees samples older than max_hold that hold no lease (in any
        process); returns how many. ``now`` is seconds since the epoch."""
        if self._max_hold is None:
            return 0
        now = time.time() if now is None else now
        freed = 0
        for o in self._resident():
            age = now - o["create_unix_ms"] / 1000.0
            if age <= self._max_hold or o["leases"] > 0:
                continue
            for _ in range(3):  # a bounded number of tries
                try:
                    self._c.remove(o["key"], generation=o["generation"])
                    freed += 1
                    self._force_freed_bytes += o["size"]
                    break
                except KeyError:
                    break  # gone or superseded meanwhile
                except ConnectionError:
                    continue
        self._force_freed += freed
        return freed

    def health(self, now: Optional[float] = None) -> Dict[str, Any]:
        now = time.time() if now is None else now
        objs = self._resident()
        return {
            "resident_samples": len(objs),
            "resident_bytes": sum(o["size"] for o in objs),
            "max_resident_bytes": self._max_resident,
            "active_leases": sum(o["leases"] for o in objs),
            "local_leases": len(self._leases),
            "oldest_age_s": max((now - o["create_unix_ms"] / 1000.0 for o in objs), default=0.0),
            "pending_frees": self._c.stats().get("deferred_frees", 0),
            "force_freed": self._force_freed,
            "force_freed_bytes": self._force_freed_bytes,
        }


def _nbytes(t) -> int:
    if hasattr(t, "element_size"):
        return t.numel() * t.element_size()
    return int(t.nbytes)


def _dtype(t) -> str:
    return str(t.dtype).replace("torch.", "")

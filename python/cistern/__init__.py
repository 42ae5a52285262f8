"""Cistern: zero-copy shared-memory tensors for every process on a host.

    import cistern
    c = cistern.connect()                        # address=, token=
    ref = c.put("llama/layer0", state_dict)      # bytes, numpy array, torch tensor, or dict of them
    sd = c.get("llama/layer0", as_="torch")      # dict of copy-on-write tensors over shared memory
    arr = c.get("blob", as_="numpy")
    c.remove("llama/layer0"); c.stat(key); c.list(prefix)

Values returned by ``get`` view the daemon's shared memory directly: no copy is
made, and the object's bytes stay in place (a lease) for as long as any array or
tensor built over them is alive, even if the key is removed or overwritten.
The shared bytes never change: numpy arrays are read-only (writing raises
ValueError). torch has no read-only tensors, so torch tensors are
copy-on-write: they view this process's private mapping of the shared pages
(objects of 1 MiB or more; still no copy until a write, but each get's first
read of a page faults it in) or a private copy (smaller ones, where a copy
costs less than a mapping). An in-place write
(``t.add_(1)``, ``t[0] = 5``) changes that tensor in this process only: other
processes, later gets, and the stored object keep the sealed bytes. Each page
written costs one page of this process's memory.

Streams (durable queues of sample refs between producers and trainers) are
``cistern.Stream`` and ``cistern.StreamLoader``; see cistern/stream.py.

Errors: ``KeyError`` (not found), ``MemoryError`` (the tier is full, or a
stream's backpressure outlasted the wait), ``PermissionError`` (token or uid
refused), ``ValueError`` (bad key, value or option), ``ConnectionError`` (the
daemon is not running), ``FileExistsError`` (``if_absent`` and the key
exists), ``cistern.FailedPreconditionError`` (a stream lease that is no longer
current, a sample already dropped); all are also ``cistern.Error``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Dict, NamedTuple, Optional

from . import _cistern

__all__ = ["connect", "discover_socket", "Client", "ObjectRef", "Error", "FailedPreconditionError",
           "Writer", "TensorWriter",
           "FeatureStore", "FeatureSpec", "SampleRef", "Lease", "Stream", "StreamLoader", "Batch", "partition_of"]

BARE = "."  # the manifest name of a bare (non-dict) array or tensor


class Error(Exception):
    """Base of every error Cistern raises; ``code`` is the status code name."""

    code = "UNKNOWN"


def _error_type(name: str, builtin: type, code: str) -> type:
    return type(name, (Error, builtin), {"code": code, "__str__": lambda self: str(self.args[0])})


NotFoundError = _error_type("NotFoundError", KeyError, "NOT_FOUND")
ExhaustedError = _error_type("ExhaustedError", MemoryError, "RESOURCE_EXHAUSTED")
PermissionDeniedError = _error_type("PermissionDeniedError", PermissionError, "PERMISSION_DENIED")
InvalidArgumentError = _error_type("InvalidArgumentError", ValueError, "INVALID_ARGUMENT")
UnavailableError = _error_type("UnavailableError", ConnectionError, "UNAVAILABLE")
AlreadyExistsError = _error_type("AlreadyExistsError", FileExistsError, "ALREADY_EXISTS")
DeadlineExceededError = _error_type("DeadlineExceededError", TimeoutError, "DEADLINE_EXCEEDED")
# No builtin means "the state does not allow this now"; RuntimeError is the nearest.
FailedPreconditionError = _error_type("FailedPreconditionError", RuntimeError,
                                      "FAILED_PRECONDITION")

# absl::StatusCode values.
_BY_CODE = {
    3: InvalidArgumentError,
    4: DeadlineExceededError,
    5: NotFoundError,
    6: AlreadyExistsError,
    7: PermissionDeniedError,
    8: ExhaustedError,
    9: FailedPreconditionError,
    14: UnavailableError,
}


def _raise(code: int, message: str):
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = type("Error", (Error,), {"code": str(code)})
    raise cls(message) from None


def _seconds(timeout: Optional[float], what: str) -> float:
    """A caller's wait in seconds: None is 0 (do not wait); negative, NaN and
    non-numbers are a ValueError. Any length is accepted, float('inf')
    included: the native layer and the daemon clamp waits to seven days."""
    if timeout is None:
        return 0.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"{what} must be non-negative seconds or None, not {timeout!r}")
    return float(timeout)


def _translate(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _cistern.Error as e:
            _raise(*e.args)

    return wrapper


class ObjectRef(NamedTuple):
    key: str
    generation: int
    nbytes: int


@_translate
def connect(address: Optional[str] = None, token: Optional[str] = None,
            name: str = "python") -> "Client":
    """Connects to the host's cisternd: ``address``, else ``$CISTERN_ADDRESS``,
    else the current ``cistern daemon start`` session, else the default socket
    (the C++ client's discovery, ``discover_socket()``). ``token`` defaults to
    ``$CISTERN_TOKEN``."""
    return Client(_cistern.Client(address or "", token or "", name))


def discover_socket(address: Optional[str] = None) -> str:
    """The socket ``connect(address)`` would use, found the way the C++ client
    and the ``cistern`` CLI find it."""
    return _cistern.discover_socket(address or "")


# --- conversions -------------------------------------------------------------

def _numpy():
    import numpy
    return numpy


def _torch():
    import torch
    return torch


_NUMPY_DTYPES = {
    "float64": "float64", "float32": "float32", "float16": "float16", "int64": "int64",
    "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
}


def _torch_dtypes():
    torch = _torch()
    return {
        "float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
        "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
        "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
    }


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "data_ptr")


def _tensor_entry(name: str, value):
    """(name, dtype name, shape, contiguous buffer) for one array or tensor."""
    if _is_torch(value):
        if value.device.type != "cpu":
            raise ValueError(f"tensor '{name}' is on {value.device}; Cistern holds CPU tensors "
                             "only (move it with .cpu())")
        dtype = str(value.dtype).replace("torch.", "")
        if dtype not in _torch_dtypes():
            raise ValueError(f"tensor '{name}' has unsupported dtype {value.dtype}")
        shape = list(value.shape)
        flat = value.detach().contiguous().reshape(-1)  # one copy if not contiguous
        return name, dtype, shape, flat.view(_torch().uint8).numpy()
    np = _numpy()
    if isinstance(value, np.ndarray):
        dtype = value.dtype.name
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"array '{name}' has unsupported dtype {value.dtype}")
        return name, dtype, list(value.shape), np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    raise TypeError(f"'{name}': expected a numpy array or torch tensor, got {type(value).__name__}")


def _flatten(key: str, d: dict, prefix: str):
    """(path, leaf) pairs of a possibly nested dict; nesting becomes '/' in the
    stored tensor names, so '/' may not appear inside a key."""
    if not d:
        raise ValueError(f"put of '{key}': {'the dict' if not prefix else repr(prefix[:-1])} is empty")
    out = []
    for name, v in d.items():
        if not isinstance(name, str):
            raise TypeError(f"put of '{key}': dict keys must be str, got {name!r}")
        if not name or "/" in name:
            raise ValueError(f"put of '{key}': dict key {name!r} must be non-empty and contain "
                             "no '/' (it separates nested dicts)")
        if isinstance(v, dict):
            out.extend(_flatten(key, v, prefix + name + "/"))
        else:
            out.append((prefix + name, v))
    return out


def _nest(flat: dict) -> dict:
    """Rebuilds nested dicts from '/'-separated names."""
    if not any("/" in k for k in flat):
        return flat
    out: dict = {}
    for path, v in flat.items():
        *parents, leaf = path.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _tensors(view, as_: str, tensors=None, private: bool = True) -> dict:
    """The tensors of a tensor-dict view by stored (flat, '/'-joined) name, as
    numpy arrays (read-only, over the view's buffer) or torch tensors (over
    the view's private copy-on-write version; over the read-only view itself
    when ``private`` is False, for callers that only read them).
    ``tensors``: ``view.tensors`` if the caller has it already."""
    tensors = view.tensors if tensors is None else tensors
    buf = view.make_private() if as_ == "torch" and private and tensors else view
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch over the view: "the given buffer is not writable"
        return _arrays(buf, tensors, as_)


def _arrays(buf, tensors, as_: str) -> dict:
    """numpy arrays or torch tensors over ``buf`` (no copy), by flat name, as
    the manifest ``tensors`` lays them out; writable if ``buf`` is."""
    out = {}
    torch = _torch() if as_ == "torch" else None
    dtypes = _torch_dtypes() if torch is not None else _NUMPY_DTYPES
    np = _numpy()
    # One buffer export for all the tensors: a memoryview exports in C, where
    # asking the native view for its buffer once per tensor costs microseconds.
    # The memoryview keeps ``buf`` alive, and read-only if it is.
    buf = memoryview(buf)
    for t in tensors:
        count = 1
        for d in t["shape"]:
            count *= d
        dt = dtypes.get(t["dtype"])
        if dt is None:
            lib = "torch" if torch is not None else "numpy"
            hint = "" if torch is not None else "; use as_='torch'"
            raise ValueError(f"tensor '{t['name']}' has dtype {t['dtype']}, which {lib} "
                             f"lacks{hint}")
        if torch is not None:
            if count == 0:
                arr = torch.empty(t["shape"], dtype=dt)
            else:
                arr = torch.frombuffer(buf, dtype=dt, count=count,
                                       offset=t["offset"]).reshape(t["shape"])
        else:
            arr = np.frombuffer(buf, dtype=dt, count=count,
                                offset=t["offset"]).reshape(t["shape"])
        out[t["name"]] = arr
    return out


def _from_view(view, as_: str, private: bool = True):
    if as_ == "memoryview":
        return memoryview(view)
    tensors = view.tensors
    if not tensors:
        if as_ == "torch":
            torch = _torch()
            if private:
                return torch.frombuffer(view.make_private(), dtype=torch.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.frombuffer(view, dtype=torch.uint8)
        return _numpy().frombuffer(view, dtype=_numpy().uint8)
    out = _tensors(view, as_, tensors, private)
    if list(out) == [BARE]:
        return out[BARE]
    return _nest(out)


class Writer:
    """A reserved, invisible object filled in place through ``buffer`` (a
    writable memoryview of the shared memory). Sealed when the ``with`` block
    ends, aborted if it raises; ``ref`` is the sealed ObjectRef.

    At the seal the buffer's pages become this process's private copy: an
    array made from ``buffer`` and written after the block changes only that
    copy, never the sealed object other processes read."""

    def __init__(self, pending):
        self._w = pending
        self.buffer = memoryview(pending).cast("B")
        self.ref: Optional[ObjectRef] = None

    def __enter__(self) -> "Writer":
        return self

    @_translate
    def __exit__(self, exc_type, exc, tb):
        self.buffer.release()
        if exc_type is not None:
            self._w.abort()
            return False
        self.ref = ObjectRef(*self._w.seal())
        return False


class TensorWriter(Writer):
    """A reserved, invisible tensor-dict object filled in place (from
    ``Client.tensor_writer``): ``tensors`` holds a torch tensor or numpy
    array over the shared memory for each name of the spec, nested as given.
    Compute or copy into them (``torch.matmul(a, b, out=w.tensors["h"])``,
    ``w.tensors["h"].copy_(x)``); they start uninitialised, like
    ``torch.empty``, so write every element. Sealed when the ``with`` block
    ends, aborted if it raises; ``ref`` is the sealed ObjectRef. A write
    after the seal lands in this process's private copy only."""

    def __init__(self, pending, as_: str):
        super().__init__(pending)
        self.tensors = _nest(_arrays(pending, pending.tensors, as_))

    def __enter__(self) -> "TensorWriter":
        return self


def _dtype_name_of(name: str, dtype) -> str:
    """The stored dtype name of a spec's dtype: a name ("float32"), a numpy
    dtype or a torch dtype."""
    if isinstance(dtype, str):
        out = dtype
    elif type(dtype).__module__ == "torch":
        out = str(dtype).replace("torch.", "")
    else:
        try:
            out = _numpy().dtype(dtype).name
        except TypeError:
            out = None
    if out not in _NUMPY_DTYPES and out != "bfloat16":
        raise ValueError(f"tensor '{name}': unsupported dtype {dtype!r}")
    return out


def _spec_entries(key: str, spec, as_: str) -> list:
    """(name, dtype name, shape) per leaf of a writer's spec: a dict (maybe
    nested) of name to (dtype, shape), or to an array/tensor whose dtype and
    shape are taken (not its bytes)."""
    if not isinstance(spec, dict):
        raise TypeError(f"spec of '{key}' must be a dict of name to (dtype, shape), "
                        f"not {type(spec).__name__}")
    out = []
    for name, v in _flatten(key, spec, ""):
        if isinstance(v, tuple) and len(v) == 2:
            dtype, shape = v
        elif hasattr(v, "dtype") and hasattr(v, "shape"):
            dtype, shape = v.dtype, v.shape
        else:
            raise TypeError(f"spec of '{key}': '{name}' must be (dtype, shape) or an array, "
                            f"not {v!r}")
        dtype = _dtype_name_of(name, dtype)
        if as_ == "numpy" and dtype not in _NUMPY_DTYPES:
            raise ValueError(f"tensor '{name}' has dtype {dtype}, which numpy lacks; use as_='torch'")
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError(f"spec of '{key}': the shape of '{name}' must be a sequence of ints, "
                            f"not {shape!r}") from None
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            raise ValueError(f"spec of '{key}': the shape of '{name}' must hold non-negative "
                             f"ints, not {shape!r}")
        out.append((name, dtype, list(shape)))
    return out


class Leased:
    """A value from ``Client.lease``: ``value`` views the shared memory until
    ``release()`` or the end of the ``with`` block, which end the lease at
    once instead of when the arrays are garbage-collected. Do not use
    ``value`` afterwards: its memory may be reused for other objects."""

    def __init__(self, view, value):
        self._view = view
        self.value = value
        self.key = view.key
        self.generation = view.generation

    @_translate
    def release(self) -> None:
        """Ends the lease now. Idempotent."""
        self.value = None
        self._view.release()

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        self.release()
        return False


class Client:
    """A session with cisternd. Thread-safe; calls release the GIL."""

    def __init__(self, native):
        self._c = native

    @property
    def address(self) -> str:
        return self._c.socket

    @_translate
    def put(self, key: str, value: Any, *, evictable: bool = False, if_absent: bool = False,
            timeout: Optional[float] = None, checksum: bool = True, local_only: bool = False,
            wait_published: Optional[float] = None) -> ObjectRef:
        """Stores ``value`` as a new generation of ``key``: bytes-like, a numpy
        array, a torch tensor, or a dict of str to arrays/tensors, possibly
        nested (one object, one allocation; nesting is kept in the tensor names
        as '/', so keys may not contain '/'). ``timeout`` (seconds) waits for space instead of
        raising MemoryError at once. In a cluster (docs/cluster.md), ``local_only`` keeps
        the object off the registry, and ``wait_published`` (seconds) returns only once
        the registry has acknowledged its publication (TimeoutError past it; the object
        is stored on this host all the same)."""
        opts = dict(evictable=evictable, if_absent=if_absent, timeout=_seconds(timeout, "timeout"),
                    checksum=checksum, local_only=local_only,
                    wait_published=_seconds(wait_published, "wait_published"))
        if isinstance(value, (bytes, bytearray, memoryview)):
            return ObjectRef(*self._c.put_bytes(key, memoryview(value).cast("B"), **opts))
        if isinstance(value, dict):
            entries = [_tensor_entry(name, v) for name, v in _flatten(key, value, "")]
            return ObjectRef(*self._c.put_tensors(key, entries, **opts))
        return ObjectRef(*self._c.put_tensors(key, [_tensor_entry(BARE, value)], **opts))

    @_translate
    def get(self, key: str, *, generation: int = 0, as_: str = "numpy",
            local_only: bool = False, timeout: Optional[float] = None,
            prefer_host: str = ""):
        """The current generation of ``key`` (or exactly ``generation``),
        zero-copy: a numpy array / torch tensor for a stored array or bytes, a
        dict of them for a stored dict. ``as_``: "numpy", "torch" or
        "memoryview".

        In a cluster, a key this host lacks is pulled from a host that holds
        it (docs/cluster.md, "Remote get"): ``timeout`` seconds at most
        (None: the daemon's cluster.pull_timeout_ms), from ``prefer_host``
        when it has a replica; ``local_only=True`` never pulls."""
        if as_ not in ("numpy", "torch", "memoryview"):
            raise ValueError(f"as_ must be 'numpy', 'torch' or 'memoryview', not {as_!r}")
        if not isinstance(prefer_host, str):
            raise TypeError(f"prefer_host must be a str, not {type(prefer_host).__name__}")
        view = self._c.get(key, generation, local_only=bool(local_only),
                           timeout=_seconds(timeout, "timeout"), prefer_host=prefer_host)
        return _from_view(view, as_)

    @_translate
    def prefetch(self, keys) -> int:
        """In a cluster, starts pulling the keys this host lacks from hosts
        that hold them and returns at once with how many pulls were started;
        a later ``get`` of one waits for its pull."""
        if isinstance(keys, (str, bytes)):
            raise TypeError("prefetch takes a list of keys, not one key")
        return self._c.prefetch([str(k) for k in keys])

    @_translate
    def replicate(self, key: str, to=None, *, all: bool = False, generation: int = 0,
                  fanout: int = 1, timeout: Optional[float] = None) -> dict:
        """In a cluster, copies ``key`` to the hosts ``to`` (host ids), or with
        ``all=True`` to every live host that lacks it, and waits until each
        holds it. Hosts pull in a chain (``fanout`` children per host), each
        from one still receiving it, so the origin sends each byte about once.
        Returns ``{"key", "generation", "targets": [{"host_id", "ok", "code",
        "message", "already_held", "upstream", "received": {host: bytes}}],
        "bytes_sent": {host: bytes}}``; a failed host is reported there, not
        raised. Raises ValueError for an unknown host or a bad option."""
        if isinstance(to, (str, bytes)):
            raise TypeError("replicate's `to` takes a list of host ids, not one")
        hosts = [str(h) for h in (to or [])]
        if bool(hosts) == bool(all):
            raise ValueError("replicate: give hosts in `to`, or all=True (not both)")
        if not isinstance(fanout, int) or not 1 <= fanout <= 64:
            raise ValueError(f"replicate: fanout {fanout!r} is outside 1..64")
        return self._c.replicate(key, hosts, all=bool(all), generation=int(generation),
                                 fanout=fanout, timeout=_seconds(timeout, "timeout"))

    @_translate
    def writer(self, key: str, nbytes: int, *, evictable: bool = False, if_absent: bool = False,
               timeout: Optional[float] = None, checksum: bool = True) -> Writer:
        """``with c.writer(key, n) as w: w.buffer[:] = ...`` fills a new
        generation of ``key`` in place: no copy through this process."""
        return Writer(self._c.create(key, nbytes, evictable=evictable, if_absent=if_absent,
                                     timeout=_seconds(timeout, "timeout"), checksum=checksum))

    @_translate
    def tensor_writer(self, key: str, spec: Dict[str, Any], *, as_: str = "torch",
                      evictable: bool = False, if_absent: bool = False,
                      timeout: Optional[float] = None, checksum: bool = True) -> TensorWriter:
        """``with c.tensor_writer(key, {"h": ("float32", (192, 1024))}) as w:
        w.tensors["h"].copy_(x)`` fills a new tensor-dict generation of
        ``key`` in place, laid out as ``put`` of the same dict would be (a
        reader cannot tell the two apart). ``spec``: a dict (maybe nested) of
        name to (dtype, shape), or to an array/tensor to take both from;
        ``as_``: "torch" or "numpy" for ``w.tensors``. See TensorWriter."""
        if as_ not in ("numpy", "torch"):
            raise ValueError(f"as_ must be 'numpy' or 'torch', not {as_!r}")
        entries = _spec_entries(key, spec, as_)
        pending = self._c.create_tensors(key, entries, evictable=evictable, if_absent=if_absent,
                                         timeout=_seconds(timeout, "timeout"), checksum=checksum)
        return TensorWriter(pending, as_)

    @_translate
    def put_many(self, items: Dict[str, Any], *, evictable: bool = False,
                 if_absent: bool = False) -> list:
        """Stores many values; bytes-like values travel in one batch (one round
        trip), others are put one by one. Raises the first failure after trying
        them all; returns ObjectRefs in the order of ``items``."""
        keys = list(items)
        raw = [(k, memoryview(v).cast("B")) for k, v in items.items()
               if isinstance(v, (bytes, bytearray, memoryview))]
        refs = {}
        errors = []
        for (k, _), r in zip(raw, self._c.put_many(raw, evictable=evictable,
                                                   if_absent=if_absent) if raw else []):
            if isinstance(r[1], int):
                refs[k] = ObjectRef(*r)
            else:
                errors.append(r)
        batched = {k for k, _ in raw}
        for k in keys:
            if k not in batched:
                refs[k] = self.put(k, items[k], evictable=evictable, if_absent=if_absent)
        if errors:
            _raise(*errors[0])
        return [refs[k] for k in keys]

    @_translate
    def get_many(self, keys, *, as_: str = "numpy") -> list:
        """Values of many keys in one round trip, in order; KeyError (naming
        the first missing key) if any is missing."""
        results = self._c.get_many(list(keys))
        failed = next((r for r in results if isinstance(r, tuple)), None)
        if failed is not None:
            for r in results:  # end the leases now, not when the traceback dies
                if not isinstance(r, tuple):
                    r.release()
            _raise(*failed)
        return [_from_view(v, as_) for v in results]

    @_translate
    def get_into(self, key: str, out, *, generation: int = 0):
        """Copies ``key`` into caller-owned ``out``: an array/tensor, or a dict
        of them with the same names, dtypes and shapes as the stored object."""
        torch_out = _is_torch(next(iter(out.values())) if isinstance(out, dict) else out)
        # Only read here: torch tensors over the read-only view, no private copy.
        got = _from_view(self._c.get(key, generation), "torch" if torch_out else "numpy",
                         private=False)
        pairs = [(k, out[k], got.get(k)) for k in out] if isinstance(out, dict) else [(key, out, got)]
        if isinstance(out, dict) and isinstance(got, dict) and set(out) != set(got):
            raise ValueError(f"get_into '{key}': names differ: stored {sorted(got)}, "
                             f"given {sorted(out)}")
        for name, dst, src in pairs:
            if src is None or tuple(dst.shape) != tuple(src.shape) or dst.dtype != src.dtype:
                raise ValueError(f"get_into '{key}': '{name}' is stored as "
                                 f"{getattr(src, 'dtype', None)} {tuple(getattr(src, 'shape', ()))}, "
                                 f"given {dst.dtype} {tuple(dst.shape)}")
        for name, dst, src in pairs:
            if torch_out:
                dst.copy_(src)
            else:
                dst[...] = src
        return out

    @_translate
    def lease(self, key: str, *, generation: int = 0, as_: str = "numpy") -> Leased:
        """Like ``get``, but the lease ends at ``release()`` or when the
        ``with`` block exits: ``with c.lease(key) as sd: ...``."""
        if as_ not in ("numpy", "torch", "memoryview"):
            raise ValueError(f"as_ must be 'numpy', 'torch' or 'memoryview', not {as_!r}")
        view = self._c.get(key, generation)
        return Leased(view, _from_view(view, as_))

    @_translate
    def remove(self, key: str, *, generation: int = 0) -> int:
        return self._c.remove(key, generation)

    @_translate
    def stat(self, key: str) -> Dict[str, Any]:
        return self._c.stat(key)

    @_translate
    def list(self, prefix: str = ""):
        return self._c.list(prefix)

    @_translate
    def stats(self) -> Dict[str, Any]:
        return self._c.stats()


from .feature_store import FeatureSpec, FeatureStore, Lease, SampleRef  # noqa: E402
from .stream import Batch, Stream, StreamLoader, partition_of  # noqa: E402

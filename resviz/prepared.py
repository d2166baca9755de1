"""Results prepared before class: ``python -m resviz.prepare`` computes the lessons' default results once and keeps
them in the disk cache every server process reads, so a student's first visit to a page finds its figure there.

A lesson function that a page calls for a heavy result is wrapped in ``kept_on_disk(key)``: it returns the prepared
result when there is one, else computes as before. Only ``writing()`` (the prepare command) stores results: a server
never writes here, so a test that replaces a lesson's internals, or a constant not in the key, cannot leave a wrong
result behind for the class. The key is the page's own result key plus a fingerprint of this version of resviz
(every .py file under resviz/) and of torch: after an update the old results are never read, only recomputed.

Results are stored as a tree of plain values and tensors (``torch.load(weights_only=True)`` reads it; no code runs
on load); only dataclasses and enums defined in resviz are rebuilt from it.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import enum
import functools
import hashlib
import importlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from resviz import disk_cache

_WRITING = contextvars.ContextVar("resviz_prepared_writing", default=False)
_PACKAGE = Path(__file__).resolve().parent
_COMPUTE_NO_RESULT = ("tools", "bench")  # load tests, benchmarks, browser and server helpers: a change to them keeps
# the prepared results (each commit to them voided every prepared lesson)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A fingerprint of resviz's code (but ``_COMPUTE_NO_RESULT``) and torch's version: prepared results are valid
    for exactly these."""
    h = hashlib.sha1(torch.__version__.encode())
    for path in sorted(p for p in _PACKAGE.rglob("*.py") if p.relative_to(_PACKAGE).parts[0] not in _COMPUTE_NO_RESULT):
        h.update(str(path.relative_to(_PACKAGE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def disk_key(key: tuple) -> str:
    """The disk-cache key of a page's result key (a tuple of plain values, as ``repr`` writes them)."""
    return f"prepared-{key[0]}-{hashlib.sha1(repr((key, code_version())).encode()).hexdigest()[:20]}"


@contextlib.contextmanager
def writing():
    """Within it, the wrapped lesson functions store what they compute (the prepare command)."""
    token = _WRITING.set(True)
    try:
        yield
    finally:
        _WRITING.reset(token)


def kept_on_disk(key: Callable[..., tuple]):
    """Wrap a lesson function: its prepared result (under ``key(*args, **kwargs)``) if there is one, else computed
    (and stored within ``writing()``)."""
    def wrap(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            k = disk_key(key(*args, **kwargs))
            found = read(k)
            if found is not None:
                return found
            result = fn(*args, **kwargs)
            if _WRITING.get():
                disk_cache.save(k, {"result": encode(result)})
            return result

        wrapped.disk_key = lambda *args, **kwargs: disk_key(key(*args, **kwargs))  # for the prepare command
        return wrapped
    return wrap


def read(k: str) -> Any:
    """The result stored under disk key ``k``, or None (also for an entry this code cannot rebuild)."""
    stored = disk_cache.load(k)
    if stored is None:
        return None
    try:
        return decode(stored["result"])
    except (KeyError, TypeError, ValueError, AttributeError, ImportError):
        return None


def encode(obj: Any) -> Any:
    """``obj`` as nested dicts, lists, strings, numbers and tensors (what ``torch.load(weights_only=True)`` reads)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, enum.Enum):
        return {"__enum__": _name_of(type(obj)), "value": encode(obj.value)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__dataclass__": _name_of(type(obj)),
                "fields": {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biuf" and obj.dtype != np.uint16 and obj.dtype != np.uint32:
            return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj).copy())}
        return {"__ndarray_list__": encode(obj.tolist()), "dtype": str(obj.dtype)}
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": obj.detach().cpu().clone()}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v) for v in obj]}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in obj.items()]}
    raise TypeError(f"cannot keep a {type(obj).__name__} on disk")


def decode(obj: Any) -> Any:
    """The inverse of ``encode``; only resviz's own dataclasses and enums are rebuilt."""
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__ndarray__" in obj:
        return obj["__ndarray__"].numpy()
    if "__ndarray_list__" in obj:
        return np.array(decode(obj["__ndarray_list__"]), dtype=obj["dtype"])
    if "__tensor__" in obj:
        return obj["__tensor__"]
    if "__tuple__" in obj:
        return tuple(decode(v) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {decode(k): decode(v) for k, v in obj["__dict__"]}
    if "__enum__" in obj:
        return _resviz_class(obj["__enum__"], enum.Enum)(decode(obj["value"]))
    if "__dataclass__" in obj:
        cls = _resviz_class(obj["__dataclass__"], None)
        inst = object.__new__(cls)
        for name, value in obj["fields"].items():
            object.__setattr__(inst, name, decode(value))  # frozen dataclasses too, without running __init__
        return inst
    raise ValueError("not a prepared result")


def _name_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resviz_class(name: str, base: type | None) -> type:
    """A dataclass or enum defined in resviz, by ``module:qualname``; ValueError for anything else."""
    module, _, qualname = name.partition(":")
    if not (module == "resviz" or module.startswith("resviz.")):
        raise ValueError(f"{name}: not a resviz class")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    ok = issubclass(cls, base) if base is not None else dataclasses.is_dataclass(cls) and isinstance(cls, type)
    if not ok:
        raise ValueError(f"{name}: not a resviz {'enum' if base else 'dataclass'}")
    return cls

"""The on-disk cache of results the app computed (trained pairs, fine loss grids): one ``diskcache.Cache``
shared by every student and every server process on the teacher's machine, kept across restarts.

Folder: ``$RESVIZ_CACHE`` or ``~/.cache/resviz``. At most ``$RESVIZ_CACHE_MB`` (default 200 MB); the least
recently used entries go first. Values are stored as ``torch.save`` bytes and read back with
``torch.load(weights_only=True)``, so no code runs on load (diskcache's own format is pickle).
"""
from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path

import diskcache
import numpy as np
import torch

log = logging.getLogger("resviz")
DEFAULT_CAP_MB = 200  # room for a few dozen small trained pairs and grids
_caches: dict[tuple[str, int], diskcache.Cache] = {}
_lock = threading.Lock()


def cache() -> diskcache.Cache:
    """This process's handle on the shared cache folder (diskcache keeps processes consistent through SQLite)."""
    folder = str(Path(os.environ.get("RESVIZ_CACHE") or Path.home() / ".cache" / "resviz"))
    limit = int(float(os.environ.get("RESVIZ_CACHE_MB", DEFAULT_CAP_MB)) * 2**20)
    with _lock:
        if (folder, limit) not in _caches:
            _caches[folder, limit] = diskcache.Cache(folder, size_limit=limit,
                                                     eviction_policy="least-recently-used")
        return _caches[folder, limit]


def save(key: str, obj: dict) -> None:
    """Store a dict of tensors, numpy arrays, numbers, strings (and nested dicts and tuples of those)."""
    numpy_keys = [k for k, v in obj.items() if isinstance(v, np.ndarray)]
    data = {k: torch.from_numpy(np.ascontiguousarray(v)) if k in numpy_keys else v for k, v in obj.items()}
    buf = io.BytesIO()
    torch.save({"numpy": numpy_keys, "data": data}, buf)
    cache().set(key, buf.getvalue())


def load(key: str) -> dict | None:
    """The stored dict, or None when absent or unreadable (an unreadable entry is removed)."""
    raw = cache().get(key)
    if raw is None:
        return None
    try:
        blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        data = blob["data"]
        for k in blob["numpy"]:
            data[k] = data[k].numpy()
        return data
    except Exception:  # noqa: BLE001 - a broken entry is a miss, not an error page
        log.warning("removing unreadable cache entry %s", key)
        cache().delete(key)
        return None


def exists(key: str) -> bool:
    return key in cache()

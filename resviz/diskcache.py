"""A small on-disk cache for results the app computed (trained pairs, fine loss grids), shared by every
student on the teacher's machine and kept across server restarts.

Folder: ``$RESVIZ_CACHE`` or ``~/.cache/resviz``. Files are written atomically (temp file + rename), read
with ``torch.load(weights_only=True)`` (no code runs on load), and the oldest are removed once the folder
grows past ``$RESVIZ_CACHE_MB`` (default 200 MB).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("resviz")
DEFAULT_CAP_MB = 200  # room for a few dozen small trained pairs and grids


def cache_dir() -> Path:
    path = Path(os.environ.get("RESVIZ_CACHE") or Path.home() / ".cache" / "resviz")
    path.mkdir(parents=True, exist_ok=True)
    return path


def path_for(key: str) -> Path:
    """A safe file name for any key: readable prefix + hash."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:60]
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache_dir() / f"{stem}-{digest}.pt"


def exists(key: str) -> bool:
    return path_for(key).is_file()


def save(key: str, obj: dict) -> Path:
    """Store a dict of tensors, numpy arrays, numbers, strings (and nested dicts of those)."""
    numpy_keys = [k for k, v in obj.items() if isinstance(v, np.ndarray)]
    data = {k: torch.from_numpy(np.ascontiguousarray(v)) if k in numpy_keys else v for k, v in obj.items()}
    target = path_for(key)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"numpy": numpy_keys, "data": data}, f)
        os.replace(tmp, target)  # atomic: readers see the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    enforce_cap()
    return target


def load(key: str) -> dict | None:
    """The stored dict, or None when absent or unreadable (a corrupt file is removed)."""
    path = path_for(key)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        data = blob["data"]
        for k in blob["numpy"]:
            data[k] = data[k].numpy()
        os.utime(path)  # recently used: removed last
        return data
    except Exception:  # noqa: BLE001 - a broken cache file is a miss, not an error page
        log.warning("removing unreadable cache file %s", path)
        path.unlink(missing_ok=True)
        return None


def enforce_cap(cap_mb: float | None = None) -> None:
    """Delete least recently used files until the folder is under the cap."""
    cap = float(cap_mb if cap_mb is not None else os.environ.get("RESVIZ_CACHE_MB", DEFAULT_CAP_MB)) * 2**20
    files = []
    for p in cache_dir().glob("*.pt"):
        try:
            st = p.stat()
        except FileNotFoundError:  # removed meanwhile by another session
            continue
        files.append((st.st_mtime, st.st_size, p))
    files.sort()
    total = sum(size for _, size, _ in files)
    for _, size, p in files:
        if total <= cap:
            break
        total -= size
        p.unlink(missing_ok=True)

"""Safe weight loading: uploaded state dicts and torchvision's ImageNet checkpoints, mismatches in plain words.

Nothing here ever runs code from a file: ``torch.load(..., weights_only=True)`` refuses any pickle that asks
for more than tensors and plain containers. Before it reads anything, the archive's directory is checked
(entries, compression, unpacked size). The pickle itself is parsed in a sandbox child process
(``resviz.inputs.sandbox``: memory, CPU-time, recursion and wall-clock limits), so a file that crashes the parser
(a dict key nested a million deep overflows the C stack) kills only that child; the server makes the tensors
from the file's bytes as the child describes them. Every tensor must be dense, real, on the CPU and backed by
storage that really holds its values. Weights always go into a deep copy, never into a shared model. Whatever goes
wrong is a ``WeightsError`` in plain words.
"""
from __future__ import annotations

import copy
import io
import logging
import math
import mmap
import os
import re
import reprlib
import struct
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from resviz.inputs import budget, limits, sandbox
from resviz import models

log = logging.getLogger("resviz")
# Tensors made over an upload's bytes are read only by us (load_state_dict copies them): torch's warning that
# bytes are not writable says nothing to a teacher.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)

MAX_BYTES = limits.mb(limits.WEIGHTS_MB)  # the uploader's cap: every preset's checkpoint fits (Wide ResNet-50-2: 263 MB)
INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)  # counters, masks
DTYPES = {str(d).removeprefix("torch."): d for d in vars(torch).values()  # the dtypes a weight may have
          if isinstance(d, torch.dtype) and (d.is_floating_point or d in INTEGER_DTYPES)}
READ_LIMITS = sandbox.Limits(  # the sandbox child that parses a checkpoint
    memory_mb=512,  # beyond the file's own map: torch.load(mmap=True) allocates little more than the pickle
    cpu_s=5,  # ResNet-50's 98 MB parse in 0.08 s (measured); a pickle that loops is stopped here
    wall_s=30,  # on a busy 2-core server, with other children running
)
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # uploads are staged in memory where possible
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")  # what training scripts wrap weights in
PREFIXES = ("module.", "_orig_mod.", "model.")  # DataParallel, torch.compile, Lightning-style wrappers
TORCHVISION_WEIGHTS = {  # preset -> torchvision weights enum (class names and checkpoint URL live there)
    "resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights", "resnet152": "ResNet152_Weights",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights", "wide_resnet50_2": "Wide_ResNet50_2_Weights",
}


class WeightsError(ValueError):
    """Weights that cannot be used; the message says why and what to do, in plain words."""


@dataclass
class WeightsReport:
    """What was loaded: the model copy holding the weights, and notes on what was adjusted."""

    model: nn.Module  # a deep copy of the model passed in, now with the file's weights
    n_tensors: int  # tensors loaded
    n_values: int  # numbers loaded (parameters + buffers)
    notes: list[str] = field(default_factory=list)  # plain-words notes ("removed the 'module.' prefix")


def _mb(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def _declared_entries(data: bytes) -> int:
    """How many entries the zip's end record declares (zip64's too), read before its directory is parsed."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))  # the end record, after at most a 64 kB comment
    if end < 0:
        return 0
    count = struct.unpack_from("<H", data, end + 10)[0]
    locator = end - 20
    if count == 0xFFFF and data[locator:locator + 4] == b"PK\x06\x07":  # zip64: the count is in its own record
        record = struct.unpack_from("<Q", data, locator + 8)[0]
        if data[record:record + 4] == b"PK\x06\x06":
            count = struct.unpack_from("<Q", data, record + 32)[0]
    return count


def _too_many_entries(n: int) -> WeightsError:
    return WeightsError(f"The weights file holds {n:,} entries; at most {limits.CHECKPOINT_ENTRIES:,} are "
                        "accepted (ResNet-152's state dict has 938). It is not a state dict of these models.")


def check_archive(data: bytes | mmap.mmap, max_bytes: float = MAX_BYTES) -> None:
    """Refuse, from the zip directory alone, a checkpoint that would unpack to too much or too many tensors."""
    declared = _declared_entries(data)
    if declared > limits.CHECKPOINT_ENTRIES:  # refused before 100,000 directory records are parsed
        raise _too_many_entries(declared)
    with zipfile.ZipFile(_as_file(data)) as zf:
        infos = zf.infolist()
    if len(infos) > limits.CHECKPOINT_ENTRIES:
        raise _too_many_entries(len(infos))
    unpacked, packed = sum(i.file_size for i in infos), sum(i.compress_size for i in infos)
    if unpacked > max_bytes:
        raise WeightsError(f"The weights file unpacks to {_mb(unpacked)}; the limit is {_mb(max_bytes)}.")
    if unpacked > limits.CHECKPOINT_RATIO * max(packed, 1) + 2**20:
        raise WeightsError(f"The weights file is compressed {unpacked / max(packed, 1):,.0f} to 1 (torch.save "
                           "does not compress); refusing what looks like a zip bomb. Save it again with torch.save.")
    pickles = [i for i in infos if i.filename.endswith(".pkl")]
    if any(i.file_size > limits.mb(limits.CHECKPOINT_PICKLE_MB) for i in pickles):
        raise WeightsError("The weights file's table of contents is too large for a state dict of these models.")
    if any(i.flag_bits & 0x1 for i in infos):
        raise WeightsError("The weights file is encrypted; save it again with torch.save.")


def read_checkpoint(data: bytes | Path, max_bytes: float = MAX_BYTES) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An untrusted checkpoint (bytes, or a file) as (name -> dense CPU tensor, notes); every failure is a
    WeightsError in plain words.

    Here: the size and the zip directory are checked. In a sandbox child: ``torch.load(weights_only=True,
    mmap=True)``, unwrapping and the tensor checks, on a copy of the archive without the tensors' bytes (a
    sparse temp file: only the pickle and the directory are written); it answers with each tensor's dtype,
    shape, strides and where its bytes lie in the file. Here again: the tensors are made over the file's own
    bytes, not copied (from ``data``: treat them as read-only, as ``load_state_dict`` does; from a file: a
    private map), and checked once more, so nothing the child says can reach past the file.
    """
    try:
        return _read_checkpoint(data, max_bytes)
    except WeightsError:
        raise
    except OSError as e:  # the server's side: no room for the temp copy, a file that vanished
        log.warning("weights: reading a checkpoint failed on the server: %s", e)
        raise WeightsError("The server could not read this file just now (it has no room for it); try again "
                           "in a minute.") from None
    except Exception as e:  # noqa: BLE001 - a student's file must never reach the page as an exception box
        log.warning("weights: reading a checkpoint failed: %s: %s", type(e).__name__, e)
        raise WeightsError(f"{sandbox.PREFIX}it is not a plain state dict ({type(e).__name__}).") from None


def _read_checkpoint(data: bytes | Path, max_bytes: float) -> tuple[dict[str, torch.Tensor], list[str]]:
    size = len(data) if isinstance(data, (bytes, bytearray)) else Path(data).stat().st_size
    if not size:
        raise WeightsError("The weights file is empty (0 bytes).")
    if size > max_bytes:
        raise WeightsError(f"The weights file is {_mb(size)}; the limit is {_mb(max_bytes)}.")
    with _opened(data) as view:
        stored = _checked_zip(view, max_bytes)  # None for torch.save's own archives (every entry stored as is)
    source = stored or data
    with _staged(source) as path:
        size = path.stat().st_size
        job = {"path": str(path), "max_bytes": None if math.isinf(max_bytes) else max_bytes}
        limits = replace(READ_LIMITS, memory_mb=READ_LIMITS.memory_mb + math.ceil(size / 2**20))  # + the map
        try:
            layout = sandbox.run_isolated(read_in_child, job, limits)
        except sandbox.SandboxError as e:
            raise WeightsError(str(e)) from None
    sd, notes = _tensors_from(source, size, layout)
    check_tensors(sd, max_bytes)
    return sd, notes


@contextmanager
def _opened(data: bytes | Path):
    """The file's bytes to check: ``data`` itself, or a read-only map of the file."""
    if isinstance(data, (bytes, bytearray)):
        yield data
        return
    with open(data, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        yield view


@contextmanager
def _staged(data: bytes | Path):
    """A path the child can map: a file as it is; bytes as a private temp file (in memory where possible)
    holding all but the tensors' bytes, whose places are left as holes; removed after."""
    if not isinstance(data, (bytes, bytearray)):
        yield Path(data)
        return
    fd, temp = tempfile.mkstemp(prefix=f"resviz-weights-{os.getpid()}-", suffix=".pt", dir=SCRATCH)
    try:
        with os.fdopen(fd, "wb") as f:
            view, pos = memoryview(data), 0
            for start, end in _payloads(data):
                f.write(view[pos:start])
                f.seek(end)
                pos = end
            f.write(view[pos:])
        yield Path(temp)
    finally:
        os.unlink(temp)


def _payloads(data: bytes) -> list[tuple[int, int]]:
    """Where the tensor records' bytes (``<archive>/data/<key>``) lie: (start, end), in order, not overlapping;
    none if the archive's entries overlap (then the whole file is written: slower, just as safe)."""
    spans = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                at = info.header_offset
                if "/data/" in info.filename and info.compress_type == zipfile.ZIP_STORED:
                    if data[at:at + 4] != b"PK\x03\x04":
                        return []
                    name_len, extra_len = struct.unpack_from("<HH", data, at + 26)  # from the local header
                    start = at + 30 + name_len + extra_len
                    spans.append((start, start + info.compress_size))
    except (zipfile.BadZipFile, struct.error, ValueError, EOFError):
        return []
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])) or (spans and spans[-1][1] > len(data)):
        return []
    return spans


def _stored_copy(view) -> bytes | None:
    """The archive again with every entry stored, if some are compressed (torch's mapped load reads entries as
    they lie); None if all are stored already. Sizes were checked from the directory before this unpacks."""
    with zipfile.ZipFile(_as_file(view)) as zf:
        infos = zf.infolist()
        if all(i.compress_type == zipfile.ZIP_STORED for i in infos):
            return None
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
            for info in infos:
                out.writestr(info.filename, zf.read(info))
    return buf.getvalue()


def _as_file(data):
    return data if hasattr(data, "seek") else io.BytesIO(data)  # a map is a file already; bytes are wrapped


def _checked_zip(view, max_bytes: float) -> bytes | None:
    """Refuse what is not a sound torch.save archive within the limits; the archive with every entry stored if
    some are compressed, else None."""
    if view[:4] != b"PK\x03\x04":
        raise WeightsError("This is not a PyTorch weights file: torch.save writes a zip archive and this file "
                           "is not one (an old-format or other file). Save it again with "
                           "torch.save(model.state_dict(), 'weights.pt').")
    try:
        check_archive(view, max_bytes)
        return _stored_copy(view)
    except WeightsError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error):
        raise WeightsError("The weights file is damaged or cut short (its zip directory is missing). "
                           "Upload the complete file again.") from None


def read_in_child(job: dict) -> dict:
    """In the sandbox: the plain layout of the file's state dict ({"notes", "tensors"}), or {"refused": why}.

    Each tensor is [name, dtype, shape, strides, storage offset, where its storage starts in the file, its
    bytes]. ``mmap=True`` maps the whole file once; its storages are slices of that map, so a storage's place
    in the file is its address minus the map's (the map is caught as torch makes it: this process is thrown
    away after).
    """
    maps = []
    make_map = torch.UntypedStorage.from_file
    torch.UntypedStorage.from_file = lambda *a, **k: maps.append(make_map(*a, **k)) or maps[-1]
    try:
        sd, notes = unwrap_state_dict(_torch_load(job["path"]))
        check_tensors(sd, job["max_bytes"] or math.inf)
        return {"notes": notes, "tensors": _layout(sd, maps)}
    except WeightsError as e:
        return {"refused": str(e)}


def _torch_load(path: str) -> object:
    """``torch.load(weights_only=True)``, its errors in plain words."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types; each one is a bad file here
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text:
            culprit = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" (it asks for {culprit.group(1)})" if culprit else ""
            raise WeightsError("For safety this file was not loaded: besides numbers it contains Python objects "
                               f"that would run code when opened{what}. Upload a plain state dict, saved with "
                               "torch.save(model.state_dict(), 'weights.pt').") from None
        if "data.pkl" in text or "archive" in text or "zip" in text.lower():
            raise WeightsError("This zip file is not a PyTorch weights file, or it is damaged.") from None
        raise WeightsError(f"The weights file could not be read: {text.splitlines()[0] if text else type(e).__name__}.") from None


def _layout(sd: dict[str, torch.Tensor], maps: list) -> list[list]:
    if len(maps) != 1:
        raise RuntimeError(f"expected torch.load to map the file once, saw {len(maps)} maps")  # torch changed
    start, size = maps[0].data_ptr(), maps[0].nbytes()
    rows = []
    for name, t in sd.items():
        s = t.untyped_storage()
        at = s.data_ptr() - start if s.nbytes() else 0
        if not 0 <= at <= size - s.nbytes():
            raise WeightsError(f"The tensor {name[:80]!r} is not stored in the file; it is not a plain weight.")
        rows.append([name, str(t.dtype).removeprefix("torch."), list(t.shape), list(t.stride()), t.storage_offset(),
                     at, s.nbytes()])
    return rows


def _tensors_from(source: bytes | Path, size: int, layout) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The child's layout made into tensors over the file's bytes: views of ``source`` (bytes), or slices of a
    private map of it (a file: writes never reach it)."""
    if isinstance(layout, dict) and isinstance(layout.get("refused"), str):
        raise WeightsError(layout["refused"][:2000])
    try:
        whole = None if isinstance(source, (bytes, bytearray)) else torch.UntypedStorage.from_file(
            str(source), False, size)
        storages, sd = {}, {}
        for name, dtype, shape, stride, offset, at, nbytes in layout["tensors"]:
            if not (isinstance(name, str) and 0 <= at <= at + nbytes <= size):
                raise ValueError(f"storage of {name!r} outside the file")
            storage = storages.get((at, nbytes)) or _storage(source, whole, at, nbytes)
            storages[at, nbytes] = storage
            sd[name] = torch.empty(0, dtype=DTYPES[dtype]).set_(storage, offset, shape, stride)
        return sd, [str(n) for n in layout["notes"]]
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a child that answered nonsense
        log.warning("weights: the sandbox's answer did not fit the file: %s", e)
        raise WeightsError(sandbox.PREFIX + "what it holds does not match its bytes.") from None


def _storage(data: bytes, whole, at: int, nbytes: int) -> torch.UntypedStorage:
    if whole is not None:
        return whole[at:at + nbytes]
    if not nbytes:
        return torch.UntypedStorage(0)
    return torch.frombuffer(data, dtype=torch.uint8, count=nbytes, offset=at).untyped_storage()


def unwrap_state_dict(obj: object) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The name -> tensor mapping inside ``obj`` (bare, or under "state_dict"/"model"), prefixes stripped."""
    notes = []
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj, notes = obj[key], [f"took the weights from the file's {key!r} entry"]
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError("The file does not hold a state dict (a mapping from layer names to tensors).")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:  # reprlib: a bounded picture of any key, however deep or self-repeating (str() could recurse or explode)
        shown = bad[0] if isinstance(bad[0], str) else reprlib.repr(bad[0])
        raise WeightsError(f"The file holds things other than tensors (for example {shown[:60]!r}); "
                           "it is not a plain state dict.")
    odd = [k for k in obj if not k.isprintable()]  # control characters, lone surrogates (no page can send those)
    if odd:
        raise WeightsError(f"The file names a tensor {odd[0][:60]!r}, which is not plain text; it is not a state "
                           "dict saved by torch.save(model.state_dict(), ...).")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
            notes.append(f"removed the {prefix!r} prefix from every name")
    return dict(obj), notes


def _tensor_problem(t: torch.Tensor) -> str | None:
    """Why a loaded tensor cannot be a weight, in plain words, or None if it is a dense real CPU tensor whose
    storage really holds its values (a 4-byte storage can pose, through stride 0, as 1.6e9 values)."""
    if t.layout != torch.strided:
        return f"it is stored as a {str(t.layout).removeprefix('torch.').replace('_', ' ')} tensor, not a dense one"
    if t.is_meta or t.device.type != "cpu":
        return "it holds no values (a 'meta' tensor: a shape without numbers)"
    if t.is_complex() or t.is_quantized or not (t.is_floating_point() or t.dtype in INTEGER_DTYPES):
        return f"its numbers are of type {str(t.dtype).removeprefix('torch.')}, not real numbers"
    if t.numel() == 0:
        return None
    reach = t.storage_offset() + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    stored = t.untyped_storage().nbytes() // t.element_size()
    if reach >= stored or t.numel() > stored:
        return (f"it claims {t.numel():,} values but its file holds {stored:,} (a view that repeats or "
                "overruns its storage)")
    return None


def check_tensors(sd: dict[str, torch.Tensor], max_bytes: float = MAX_BYTES) -> None:
    """Refuse tensors that are not plain weights (sparse, meta, complex, quantized, or posing as more values than
    their file holds), and state dicts whose values add up to more than ``max_bytes``."""
    for name, t in sd.items():
        problem = _tensor_problem(t)
        if problem:
            raise WeightsError(f"The tensor {name[:80]!r} cannot be a weight: {problem}. Upload a plain state dict, "
                               "saved with torch.save(model.state_dict(), 'weights.pt').")
    total = sum(t.numel() * t.element_size() for t in sd.values())
    if total > max_bytes:
        raise WeightsError(f"The tensors hold {_mb(total)} of values in all; the limit is {_mb(max_bytes)}.")


def check_finite(sd: dict[str, torch.Tensor]) -> None:
    """Refuse weights containing NaN or infinity (a diverged training run)."""
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{len(bad)} tensor(s) contain NaN or infinite values (first: {bad[0]}); the training "
                           "that produced this file probably diverged. Use an earlier checkpoint.")


def describe_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Architecture facts readable from names and shapes: block type, blocks per stage, classes."""
    stages: dict[int, set[int]] = {}
    for k in sd:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            stages.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    fc = sd.get("fc.weight")
    return {"block": "bottleneck" if any(".conv3." in k for k in sd) else "basic",
            "layers": tuple(len(stages[i]) for i in sorted(stages)),
            "classes": int(fc.shape[0]) if fc is not None and fc.ndim == 2 else None}


def _arch_words(d: dict) -> str:
    layers = "-".join(map(str, d["layers"])) or "no"
    return f"{d['block']} blocks, {layers} blocks per stage"


def explain_mismatch(sd: dict[str, torch.Tensor], model: nn.Module) -> str | None:
    """None if ``sd`` fits ``model`` exactly, else what differs, in plain words."""
    target = model.state_dict()
    missing = [k for k in target if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in target]
    wrong = [k for k in sd if k in target and sd[k].shape != target[k].shape]
    if not (missing or unexpected or wrong):
        return None
    have, want = describe_state_dict(sd), describe_state_dict(target)
    lines = []
    if have["classes"] and want["classes"] and have["classes"] != want["classes"]:
        lines.append(f"This file has {have['classes']} output classes; the chosen model has {want['classes']}.")
    if (have["block"], have["layers"]) != (want["block"], want["layers"]):
        lines.append(f"The file is a network with {_arch_words(have)}; the chosen model has {_arch_words(want)}.")
    shapes = [k for k in wrong if k not in ("fc.weight", "fc.bias")]
    if shapes:
        k = shapes[0]
        fmt = lambda s: " x ".join(map(str, s))  # noqa: E731
        lines.append(f"{len(shapes)} layer(s) have other sizes, e.g. {k}: the file has {fmt(sd[k].shape)}, "
                     f"the model needs {fmt(target[k].shape)} (different channel widths).")
    if missing and not lines:
        lines.append(f"The file lacks {len(missing)} tensor(s) the model needs, e.g. {missing[0]}.")
    if unexpected and not lines:
        lines.append(f"The file has {len(unexpected)} tensor(s) the model does not know, e.g. {unexpected[0]}.")
    guess = guess_preset(have)
    hint = f" It looks like {guess}: pick that in the sidebar." if guess else ""
    return " ".join(lines) + hint + " The weights were not loaded."


def guess_preset(d: dict) -> str | None:
    """The first preset with the same block type, stage depths and class count (None if none)."""
    for name, cfg in models.PRESETS.items():
        if (cfg.block, cfg.layers, cfg.num_classes) == (d["block"], d["layers"], d["classes"]):
            return name
    return None


def load_state_dict_safely(data: bytes | Path, model: nn.Module, max_bytes: float = MAX_BYTES) -> WeightsReport:
    """Load untrusted weights (bytes or a file) into a deep copy of ``model``; WeightsError in plain words if unfit."""
    sd, notes = read_checkpoint(data, max_bytes)
    return load_into_copy(sd, model, notes)


def load_into_copy(sd: dict[str, torch.Tensor], model: nn.Module, notes: list[str] | None = None) -> WeightsReport:
    """Checked ``load_state_dict`` into ``copy.deepcopy(model)``; the model passed in never changes.

    Anything unexpected on the way (a dtype torch cannot copy, an allocation that fails) is a WeightsError too.
    """
    try:
        return _load_into_copy(sd, model, notes)
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - a student's file must never reach the page as an exception box
        log.warning("loading weights failed: %s: %s", type(e).__name__, e)
        if budget.is_out_of_memory(e):
            raise WeightsError("The server ran out of memory while loading these weights; try again when fewer "
                               "students are running big models, or pick a smaller model.") from None
        raise WeightsError("The weights could not be loaded into the chosen model "
                           f"({_first_line(e)[:200]}).") from None


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _load_into_copy(sd: dict[str, torch.Tensor], model: nn.Module, notes: list[str] | None) -> WeightsReport:
    notes = list(notes or [])
    check_tensors(sd, math.inf)
    check_finite(sd)
    target_keys = model.state_dict().keys()
    if not getattr(getattr(model, "cfg", None), "residual", True):
        dropped = [k for k in sd if ".downsample." in k and k not in target_keys]
        if dropped:  # residual weights into the plain twin: projection shortcuts have no place there
            sd = {k: v for k, v in sd.items() if k not in dropped}
            notes.append(f"left out {len(dropped)} projection-shortcut tensor(s): the plain twin has no shortcuts")
    problem = explain_mismatch(sd, model)
    if problem:
        raise WeightsError(problem)
    twin = copy.deepcopy(model)
    try:
        twin.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # dtype or anything explain_mismatch did not foresee
        if budget.is_out_of_memory(e):
            raise
        raise WeightsError(f"The weights do not fit the chosen model: {str(e).splitlines()[0]}") from None
    n_values = sum(v.numel() for v in sd.values())
    return WeightsReport(model=twin, n_tensors=len(sd), n_values=n_values, notes=notes)


# --- torchvision's ImageNet weights -------------------------------------------------------------------------


def pretrained_weights(cfg: models.ResNetConfig):
    """torchvision's DEFAULT weights enum member for an ImageNet preset (residual or plain twin), else None."""
    name = TORCHVISION_WEIGHTS.get(cfg.name)
    if name is None or replace(cfg, residual=True) != models.PRESETS[cfg.name]:
        return None
    import torchvision.models as tvm

    return getattr(tvm, name).DEFAULT


def checkpoint_path(weights) -> Path:
    """Where torch.hub keeps (or would keep) this checkpoint: $TORCH_HOME/hub/checkpoints/<file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def is_cached(weights) -> bool:
    return checkpoint_path(weights).is_file()


def class_names(weights) -> list[str]:
    """The 1000 ImageNet class names, shipped inside torchvision (no download)."""
    return list(weights.meta["categories"])


def load_pretrained(model: nn.Module, weights, download: bool = False) -> WeightsReport:
    """torchvision's checkpoint from the local torch hub cache (or, if asked, downloaded) in a copy of ``model``."""
    path = checkpoint_path(weights)
    if not path.is_file():
        if not download:
            raise WeightsError(f"The ImageNet weights are not on this computer (looked for {path}). "
                               "Ask to download them, or use random or your own weights.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            match = torch.hub.HASH_REGEX.search(path.name)
            torch.hub.download_url_to_file(weights.url, str(path), match.group(1) if match else None, progress=False)
        except Exception as e:  # noqa: BLE001 - no network, proxy, disk full, bad hash: all mean "not now"
            raise WeightsError(f"Could not download the ImageNet weights ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else 'no details'}). This server may be "
                               "offline; using random weights instead.") from None
    report = load_state_dict_safely(path, model, max_bytes=math.inf)
    report.notes.insert(0, f"torchvision {weights} from {path}")
    return report

"""Resource limits on every input (issue 14): each class of hostile input, with the project's own cases, is
refused in plain words, in bounded time and memory, and the session and the server keep working after.

Library level: each class runs in a child process (``python tests/test_limits.py <class>``) that puts every
case under an address-space limit, so a regression fails here instead of taking the machine's memory; each
case's peak resident memory is the kernel's high-water mark, reset just before the case. Page level: the same
inputs through the pages a student uses; AppTest runs the page in this process, so its high-water mark is the
server's, and its resident memory must come back to the warm level after each case.
"""
from __future__ import annotations

import collections
import functools
import gc
import io
import json
import os
import pickle
import re
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from streamlit.testing.v1 import AppTest  # imported first: it makes its own temp folder at import

import helpers
from helpers import saved, zipped

ROOT = Path(__file__).resolve().parent.parent
LIMIT_MB = 1024  # address space a case may add: enough for any bounded case, far below what the bad inputs asked
PEAK_MB = 150  # resident memory one case may add in the library (the inputs are built before it is measured)
PAGE_PEAK_MB = 400  # ... and through a page, which also draws the page and its figures
RETURN_MB = 120  # resident memory the server may keep after a case, over its warm level
HANG_S = 300  # a class whose cases have not all answered by then has hung: a guard, not a speed test


# --- the project's own cases ------------------------------------------------------------------------------
def png(w: int, h: int, mode: str = "L") -> bytes:
    """A grey (or ``mode``) w x h PNG: a 1 x 20000 one is a few hundred bytes."""
    return helpers.png((w, h), 120, mode)


def folder_zip(**odd: bytes) -> bytes:
    """An ImageFolder zip (cats, dogs: three small pictures each) plus the ``odd`` entries."""
    return zipped({f"{c}/{i}.png": png(20, 12, "RGB") for c in ("cats", "dogs") for i in range(3)} | odd)


def encrypted(data: bytes, name: str) -> bytes:
    """``data`` with the 'encrypted' bit of entry ``name`` set (zipfile cannot write encrypted entries)."""
    out, key = bytearray(data), name.encode()
    out[out.find(key) - 30 + 6] |= 1  # local header: general purpose flags
    cd = out.find(b"PK\x01\x02")
    while out[cd + 46:cd + 46 + len(key)] != key:
        cd = out.find(b"PK\x01\x02", cd + 1)
    out[cd + 8] |= 1  # central directory record: the same flags
    return bytes(out)


def many_scans(n: int, size: tuple[int, int]) -> bytes:
    from test_images import many_scans

    return many_scans(n, size)


def corrupt_exif_jpeg() -> bytes:
    from test_images import corrupt_exif_jpeg

    return corrupt_exif_jpeg()


def nested_zip() -> bytes:
    from test_data import nested_zip

    return nested_zip()


def tiny_config():
    from resviz import models

    return models.ResNetConfig(block="basic", layers=(1, 1), widths=(4, 8), stem="cifar", stem_width=4,
                               input_size=8, num_classes=10, shortcut="B", name="tiny")


def tiny_state(**replace: torch.Tensor) -> bytes:
    from resviz import models

    return saved(models.build_model(tiny_config(), seed=0).state_dict() | replace)


class _Storage:
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _Tensor:
    """Unpickles as ``torch._utils._rebuild_tensor_v2(storage, 0, size, stride)``: what torch.save writes."""

    def __init__(self, storage: _Storage, size: tuple, stride: tuple):
        self.args = (storage, 0, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel) if isinstance(obj, _Storage) else None


def checkpoint(tensors: dict[str, tuple[str, tuple, tuple]], storages: dict[str, bytes | int],
               method: int = zipfile.ZIP_STORED) -> bytes:
    """A torch.save archive written by hand, without holding its tensors: ``tensors`` name -> (storage key,
    size, stride); ``storages`` key -> bytes, or a byte count of zeros streamed into the archive."""
    numel = {k: (v if isinstance(v, int) else len(v)) // 4 for k, v in storages.items()}
    pkl = io.BytesIO()
    _Pickler(pkl, protocol=2).dump({n: _Tensor(_Storage(k, numel[k]), size, stride)
                                    for n, (k, size, stride) in tensors.items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method, compresslevel=1 if method else None) as z:
        z.writestr("archive/data.pkl", pkl.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, payload in storages.items():
            if isinstance(payload, bytes):
                z.writestr(f"archive/data/{key}", payload)
                continue
            with z.open(f"archive/data/{key}", "w", force_zip64=True) as out:
                zeros = bytes(2**20)
                for _ in range(payload // 2**20):
                    out.write(zeros)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def refused(call: Callable, *args, **kw) -> str:
    """``ErrorName: message`` of the resviz error ``call`` raises, or what it reports when it accepts."""
    try:
        out = call(*args, **kw)
    except ValueError as e:
        if not type(e).__module__.startswith("resviz"):
            raise
        return f"{type(e).__name__}: {e}"
    return f"accepted: {out}"


def _feature_maps_image(data: bytes) -> str:
    from resviz.inputs import images

    def preprocess():
        images.preprocess_steps(images.load_image(data), images.preprocess_for(224))

    return refused(preprocess)


def _folder(data: bytes) -> str:
    from resviz.inputs import data as D

    report = []
    return refused(lambda: D.load_image_folder(data, 32, report=report) and " ".join(report))


def _teacher_folder(files: dict[str, bytes]) -> str:
    import shutil

    root = Path(tempfile.mkdtemp(prefix="test-limits-"))
    try:
        for name, payload in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(payload)
        return _folder(root)
    finally:
        shutil.rmtree(root)


def _weights(data: bytes) -> str:
    from resviz import models
    from resviz.inputs import weights

    return refused(weights.load_state_dict_safely, data, models.build_model(tiny_config(), seed=0))


def _model(cfg_kw: dict, batch: int, nets: int) -> Callable[[None], str]:
    def check(_):
        from resviz import models
        from resviz.inputs import budget

        return refused(budget.check_model, models.ResNetConfig(**cfg_kw), batch=batch, what="Signal flow", nets=nets)
    return check


WIDE = dict(block="basic", layers=(2, 2, 2), widths=(512, 1024, 2048), stem="cifar", stem_width=512,
            input_size=1024, num_classes=10)  # the sidebar's custom model at width 512, input 1024
DEEP = dict(block="basic", layers=(300, 300, 300), widths=(16, 32, 64), stem="cifar", stem_width=16,
            input_size=32, num_classes=10)  # 300 blocks per stage
TOO_DEEP = dict(DEEP, layers=(3000, 3000, 3000))
STAGES_26 = dict(DEEP, layers=(2,) * 26, widths=tuple(16 * 2**i for i in range(26)))  # torch's storage overflowed
TEXT_300_KB = dict(DEEP, layers=(2,) * 100_000, widths=(16,) * 100_000)  # "2, " x 100,000 typed as blocks per stage


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], object]  # the input, built before memory is measured
    check: Callable[[object], str]  # -> "ErrorName: message" (or "accepted: ..." with the report)
    words: tuple[str, ...]  # what the message must say (case-insensitive)
    error: str  # the error class a student's message comes from ("accepted" when the report says it)


CLASSES: dict[str, list[Case]] = {
    "aspect": [
        Case("1x20000 PNG (Feature maps)", lambda: png(1, 20000), _feature_maps_image,
             ("1 x 20000 pixels", "20,000 times", "10:1"), "ImageError"),
        Case("20000x1 PNG (Signal flow)", lambda: png(20000, 1), _feature_maps_image, ("20000 x 1 pixels",), "ImageError"),
        Case("slivers in an image-folder zip", lambda: folder_zip(**{"cats/long.png": png(1, 20000)}), _folder,
             ("skipped 1 file", r"cats/long\.png (1 x 20000 pixels"), "accepted"),
        Case("a zip of nothing but slivers", lambda: zipped({f"{c}/{i}.png": png(20000, 1) for c in "ab" for i in "12"}),
             _folder, ("two class folders", "skipped 4", "20000 x 1"), "DatasetError"),
        Case("a sliver in a teacher folder", lambda: {f"{c}/{i}.png": png(20, 12) for c in "ab" for i in "12"}
             | {"a/long.png": png(1, 20000)}, _teacher_folder, (r"a/long\.png (1 x 20000",), "accepted"),
    ],
    "scans and exif": [
        Case("a 400-scan progressive JPEG, 36 MP (Feature maps)", lambda: many_scans(400, (6000, 6000)),
             _feature_maps_image, ("400 scans", "at most 64"), "ImageError"),
        Case("the same JPEG in an image-folder zip",
             lambda: folder_zip(**{"cats/scans.jpg": many_scans(400, (6000, 6000))}), _folder,
             ("skipped 1 file", r"cats/scans\.jpg (400 JPEG scans)"), "accepted"),
        Case("a corrupt EXIF tag in an image-folder zip", lambda: folder_zip(**{"dogs/exif.jpg": corrupt_exif_jpeg()}),
             _folder, ("skipped 1 file", r"dogs/exif\.jpg (corrupt EXIF)"), "accepted"),
    ],
    "nesting": [
        Case("269 kB: two entries 32,000 folders deep", nested_zip, _folder,
             ("nested more than 16 folders deep",), "DatasetError"),
        Case("60,000 empty entries (5 MB)", lambda: zipped({f"{i:x}": b"" for i in range(60_000)}), _folder,
             ("60,000 entries", "at most 50,000"), "DatasetError"),
    ],
    "tensors": [
        Case("meta tensor", lambda: tiny_state(**{"fc.weight": torch.empty(10, 8, device="meta")}), _weights,
             ("'fc.weight'", "holds no values"), "WeightsError"),
        Case("sparse 40000x40000", lambda: tiny_state(**{"fc.weight": torch.sparse_coo_tensor(
            torch.tensor([[0], [0]]), torch.tensor([1.0]), (40000, 40000))}), _weights, ("sparse",), "WeightsError"),
        Case("complex with NaN", lambda: tiny_state(**{"fc.weight": torch.full((10, 8), complex(float("nan"), 1))}),
             _weights, ("complex64", "not real numbers"), "WeightsError"),
        Case("stride 0: 4 bytes posing as 1.6e9 values", lambda: tiny_state(**{
            "fc.weight": torch.zeros(1).expand(40000, 40000)}), _weights, ("1,600,000,000 values", "holds 1"),
            "WeightsError"),
    ],
    "archives": [
        Case("1 GiB of zeros in a few MB", lambda: checkpoint({"fc.weight": ("0", (2**28,), (1,))}, {"0": 2**30},
                                                            zipfile.ZIP_DEFLATED), _weights,
             ("unpacks to 1024.0 mb", "the limit is 300.0 mb"), "WeightsError"),
        Case("100,000 tiny tensors", lambda: checkpoint({f"t{i}": (str(i), (1,), (1,)) for i in range(100_000)},
                                                       {str(i): bytes(4) for i in range(100_000)}), _weights,
             ("100,003 entries", "at most 5,000"), "WeightsError"),
    ],
    "clashes": [
        Case("a file and a folder of the same name", lambda: folder_zip(cats=b"a file called cats"), _folder,
             ("a file and a folder both called 'cats'",), "DatasetError"),
        Case("a 300-character name", lambda: folder_zip(**{"cats/" + "n" * 300 + ".png": png(5, 5)}), _folder,
             ("'cats/nnnn", "longer than 255 bytes"), "DatasetError"),
        Case("an encrypted entry", lambda: encrypted(folder_zip(**{"dogs/secret.png": png(5, 5)}), "dogs/secret.png"),
             _folder, ("'dogs/secret.png' is encrypted",), "DatasetError"),
    ],
    "uploads": [
        Case("a 60 MB zip (cap 50 MB)", lambda: folder_zip(**{"cats/padding.bin": os.urandom(60 * 2**20)}), _folder,
             ("the zip is 60.0 mb", "the limit is 50 mb"), "DatasetError"),
        Case("an 11 MB image (cap 10 MB)", lambda: png(20, 12) + bytes(11 * 2**20), _feature_maps_image,
             ("11.0 mb", "the limit is 10.0 mb"), "ImageError"),
        Case("a 301 MB state dict (cap 300 MB)", lambda: b"PK\x03\x04" + bytes(301 * 2**20), _weights,
             ("301.0 mb", "the limit is 300.0 mb"), "WeightsError"),
    ],
    "models": [
        Case("width 512 at input 1024 (sidebar, one image)", lambda: None, _model(WIDE, 1, 2),
             ("needs about 62.0 gb", "58.0 gb of layer outputs per image", "this server allows 4.0 gb"), "BudgetError"),
        Case("width 512 at input 1024, batch 8 (Signal flow's 16 GiB)", lambda: None, _model(WIDE, 8, 2),
             ("needs about", "batch of 8, 2 networks"), "BudgetError"),
        Case("300 blocks per stage, batch 32 (Signal flow)", lambda: None, _model(DEEP, 32, 2),
             ("needs about 7.8 gb", "29.1m parameters", "batch of 32, 2 networks"), "BudgetError"),
        Case("9,000 blocks", lambda: None, _model(TOO_DEEP, 1, 1), ("9,000 blocks", "allows 1,000"), "BudgetError"),
        Case("26 stages (sidebar: 2, 2, ... base width 16)", lambda: None, _model(STAGES_26, 1, 2),
             ("26 stages", "at most 8"), "ConfigError"),
        Case("100,000 stages (a 300 kB blocks-per-stage text)", lambda: None, _model(TEXT_300_KB, 1, 2),
             ("100,000 stages", "at most 8"), "ConfigError"),
    ],
}


# --- the model budget ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg_kw", [dict(name="resnet50"), dict(name="resnext50_32x4d"), dict(name="resnet110"),
                                    dict(block="basic", layers=(5, 1, 3), widths=(8, 16, 32), stem="cifar", stem_width=8,
                                         input_size=33, num_classes=7, shortcut="C", residual=False)])
def test_the_estimate_is_the_full_trace_from_two_blocks_a_stage(cfg_kw):
    import math

    from resviz import models, trace
    from resviz.inputs import budget

    cfg = models.get_config(cfg_kw["name"]) if len(cfg_kw) == 1 else models.ResNetConfig(**cfg_kw)
    t, est = trace.trace_shapes(cfg), budget.estimate(cfg)
    assert (est.params, est.macs) == (t.total_params, t.total_macs)
    assert est.activations == sum(math.prod(r["out_shape"]) for r in t.rows)
    assert est.largest == max(math.prod(r["out_shape"]) for r in t.rows)


def test_every_preset_fits_every_page_and_the_memory_sums_weights_and_one_nets_activations():
    from resviz import models
    from resviz.inputs import budget

    for name in models.PRESETS:
        cfg = models.get_config(name)
        est = budget.check_model(cfg, batch=8 if cfg.input_size > 64 else 32, what=name, nets=2)  # Signal flow's most
        assert est.memory(4, nets=2) == (2 * 3 * est.params + 4 * est.activations) * 4  # weights, grads, momentum
        assert est.step_macs(4, nets=2) == 2 * 4 * 3 * est.macs
        assert est.memory(4, train=False) == (est.params + 2 * 4 * est.largest) * 4
    r50 = budget.estimate(models.get_config("resnet50"))
    assert (r50.params, round(r50.macs / 1e9, 2)) == (25_557_032, 4.09)  # torchvision's ResNet-50


def test_the_teacher_sets_the_budget_with_environment_variables(monkeypatch, caplog):
    from resviz import models
    from resviz.inputs import budget

    monkeypatch.setenv("RESVIZ_BUDGET_MB", "100")
    monkeypatch.setenv("RESVIZ_BUDGET_GMACS", "lots")
    assert budget.session_budget() == budget.Budget(memory_mb=100.0)
    assert "RESVIZ_BUDGET_GMACS='lots' is not a number" in caplog.text
    # (25,557,032 weights x 3 + 37,559,784 layer outputs) x 4 bytes = 435.8 MiB; 4.09 G MACs x 3 = 12 G a step
    with pytest.raises(budget.BudgetError, match=r"ResNet-50 needs about 436 MB .*143 MB of layer outputs per image; "
                                                 r"batch of 1\) and 12 G .*allows 100 MB and 1,000 G"):
        budget.check_model(models.get_config("resnet50"), what="ResNet-50")
    monkeypatch.setenv("RESVIZ_BUDGET_BLOCKS", "50")
    with pytest.raises(budget.BudgetError, match="54 blocks; this server allows 50"):
        budget.check_model(models.get_config("resnet110"))


@pytest.mark.parametrize("error, oom", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 17179869184 bytes. Error code 12 (Cannot allocate memory)"), True),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB"), True),
    (MemoryError(), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x64 and 32x10)"), False),
    (ValueError("out of memory"), False),
])
def test_cpu_allocation_failures_count_as_out_of_memory(error, oom):
    from resviz.inputs import budget

    assert budget.is_out_of_memory(error) is oom


# --- the child: one class, each case measured under an address-space limit ------------------------------
def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(v) // 1024 for k, v in re.findall(r"(VmHWM|VmRSS|VmSize):\s+(\d+) kB", text)}


def _temp_names() -> set[str]:
    """What is in the temp folder (the test's own: nobody else writes there), but torch's per-process cache."""
    return {n for n in os.listdir(tempfile.gettempdir()) if not n.startswith("torchinductor_")}


def measure(call: Callable[[], str], limit_mb: float | None = None) -> dict:
    """Run ``call`` with the resident high-water mark reset (and the address space capped at ``limit_mb`` more
    than now): its message, seconds, peak resident memory it added, and temp files it left."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    temp = _temp_names()
    if limit_mb is not None:
        cap = (_status()["VmSize"] + limit_mb) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    Path("/proc/self/clear_refs").write_text("5")  # the kernel's peak-RSS counter starts again from now
    base, t0 = _status()["VmRSS"], time.perf_counter()
    try:
        message = call()
    except BaseException as e:  # noqa: BLE001 - a crash (MemoryError under the cap included) is a result here
        message = f"crashed: {type(e).__name__}: {str(e)[:300]}"
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    seconds, peak = time.perf_counter() - t0, _status()["VmHWM"] - base
    return {"message": message, "seconds": round(seconds, 3), "peak_mb": peak, "temp_left": sorted(_temp_names() - temp)}


def run_class(name: str) -> None:
    torch.set_num_threads(1)
    from resviz.inputs import budget, data, images, weights  # noqa: F401 - imported before measuring

    for case in CLASSES[name]:
        result = measure(functools.partial(case.check, case.make()), LIMIT_MB)  # the input is built first
        print(json.dumps({"case": case.name} | result), flush=True)


def child_results(name: str, tmp: Path) -> list[dict]:
    proc = subprocess.run([sys.executable, __file__, name], capture_output=True, text=True, timeout=HANG_S,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def assert_plain_message(text: str, words: tuple[str, ...]) -> None:
    """What a student reads: the words it must say, no exception name, no server path."""
    message = text
    assert not re.search(r"\b\w+(Error|Exception): ", text), message
    assert "/tmp" not in text and str(ROOT) not in text and "Errno" not in text, message
    for w in words:
        assert w.lower() in text.lower(), (w, message)


@pytest.mark.parametrize("name", CLASSES)
def test_each_case_is_refused_in_plain_words_in_bounded_memory(name, tmp_path):
    results = child_results(name, tmp_path)
    assert [r["case"] for r in results] == [c.name for c in CLASSES[name]]
    for case, r in zip(CLASSES[name], results):
        print(f"{name} | {case.name} | {r['seconds']:.2f} s | peak +{r['peak_mb']} MB | {r['message'][:100]}")
        assert r["message"].startswith(case.error + ": "), (case.name, r["message"])
        assert_plain_message(r["message"].removeprefix(case.error + ": "), case.words)
        assert r["peak_mb"] <= PEAK_MB, (case.name, r)
        assert r["temp_left"] == [], (case.name, r)


def test_the_child_fails_a_case_that_takes_too_much_memory():
    """The measurement can fail: an allocation over the cap crashes the case, one under it shows its size."""
    big = measure(lambda: str(len(bytearray(2 * LIMIT_MB * 2**20))), LIMIT_MB)
    assert big["message"].startswith("crashed: MemoryError"), big
    small = measure(lambda: str(bytearray(300 * 2**20)[-1]))
    assert 280 <= small["peak_mb"] <= 400 and small["message"] == "0", small


# --- through the pages: a message, no exception box, bounded memory, and the server comes back -----------
PAGE_LIMIT_MB = 2048  # address space a page case may add (AppTest's threads reserve some of their own)


def shown_errors(at) -> str:
    return re.sub(r"\\(.)", r"\1", " ".join(str(e.value) for e in at.error))  # as read: markdown escapes undone


class Student:
    """One session on one page, fed the class's cases one by one; the server is this process."""

    def __init__(self, page: str, good: Callable, sidebar: dict | None = None):
        self.at, self.good, self.results = helpers.new_app(page, timeout=300, sidebar=sidebar), good, []
        self.recover()
        self.warm = self.rss()

    @staticmethod
    def rss() -> int:
        gc.collect()
        return _status()["VmRSS"]

    def recover(self) -> None:
        """The good input again: the page works, with no message and no exception."""
        self.good(self.at)
        assert not self.at.exception, [e.message for e in self.at.exception]
        assert not self.at.error, shown_errors(self.at)

    def case(self, name: str, act: Callable, *words: str) -> None:
        """``act(at)`` feeds the bad input; the page must explain it in ``words``, within bounded memory, and
        the server must come back to its warm resident memory once the good input is back."""
        def run() -> str:
            act(self.at)
            return shown_errors(self.at)

        r = {"case": name} | measure(run, PAGE_LIMIT_MB)
        assert not r["message"].startswith("crashed"), r
        assert not self.at.exception, [e.message for e in self.at.exception]
        assert_plain_message(r["message"], words)
        assert r["peak_mb"] <= PAGE_PEAK_MB and r["temp_left"] == [], r
        self.recover()
        r["after_mb"] = self.rss() - self.warm
        print(f"page | {name} | {r['seconds']:.2f} s | peak +{r['peak_mb']} MB | after +{r['after_mb']} MB")
        assert r["after_mb"] <= RETURN_MB, r
        self.results.append(r)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The server's temp folder, private to this test: whatever a case leaves there is this case's."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _upload(key: str, name: str, data: bytes) -> Callable:
    return lambda at: at.file_uploader(key=key).set_value((name, data, "application/octet-stream")).run()


def _start_with_zip(data: bytes) -> Callable:
    def act(at):
        from resviz.lessons.training import DataSource

        at.selectbox(key="tr_data").set_value(DataSource.ZIP).run()
        at.file_uploader(key="tr_zip").set_value(("class.zip", data, "application/zip")).run()
        at.button(key="tr_start").click().run()
    return act


def _builtin_data(at) -> None:
    from resviz.lessons.training import DataSource

    at.selectbox(key="tr_data").set_value(DataSource.BUILTIN).run()


def _weights_page() -> Student:
    from resviz import models
    from resviz.lessons.feature_maps import WeightsSource

    good = saved(models.build_model("resnet20", seed=3).state_dict())

    def upload_good(at):
        at.radio(key="fm_source").set_value(WeightsSource.UPLOAD).run()
        _upload("fm_weights_file", "good.pt", good)(at)
    return Student("feature_maps", upload_good)


def test_slivers_through_the_feature_maps_signal_flow_and_training_pages(private_tmp):
    fm = Student("feature_maps", _upload("fm_upload", "ok.png", png(40, 30, "RGB")))
    fm.case("1x20000 PNG on Feature maps", _upload("fm_upload", "sliver.png", png(1, 20000)), "1 x 20000 pixels", "10:1")

    def upload_on_signal_flow(data):
        def act(at):
            from resviz.lessons.signal_flow import Input

            at.radio(key="sf_input").set_value(Input.IMAGE.value).run()
            _upload("sf_upload", "x.png", data)(at)
        return act
    sf = Student("signal_flow", upload_on_signal_flow(png(40, 30, "RGB")))
    sf.case("20000x1 PNG on Signal flow", upload_on_signal_flow(png(20000, 1)), "20000 x 1 pixels")
    tr = Student("training", _builtin_data)
    slivers = zipped({f"{c}/{i}.png": png(20000, 1) for c in ("cats", "dogs") for i in range(2)})
    tr.case("a zip of slivers on Training", _start_with_zip(slivers), "two class folders", "20000 x 1")


def built(name: str) -> list[tuple[Case, object]]:
    """The class's cases with their inputs, built before the server's warm memory is taken."""
    return [(case, case.make()) for case in CLASSES[name]]


def test_unusual_tensors_through_the_weights_upload(private_tmp):
    cases, fm = built("tensors"), _weights_page()
    for case, payload in cases:
        fm.case(case.name, _upload("fm_weights_file", "w.pt", payload), *case.words, "random weights")


def test_expanding_archives_through_the_weights_upload(private_tmp):
    cases, fm = built("archives"), _weights_page()
    for case, payload in cases:
        fm.case(case.name, _upload("fm_weights_file", "w.pt", payload), *case.words)


def test_clashing_zip_entries_through_the_training_page(private_tmp):
    cases, tr = built("clashes"), Student("training", _builtin_data)
    for case, payload in cases:
        tr.case(case.name, _start_with_zip(payload), *case.words)


def test_nested_zips_many_scans_and_corrupt_exif_through_the_training_and_feature_maps_pages(private_tmp):
    nesting, (scans, _, _) = built("nesting"), built("scans and exif")
    tr = Student("training", _builtin_data)
    for case, payload in nesting:
        tr.case(case.name, _start_with_zip(payload), *case.words)
    fm = Student("feature_maps", _upload("fm_upload", "ok.png", png(40, 30, "RGB")))
    fm.case("a 400-scan JPEG on Feature maps", _upload("fm_upload", "scans.jpg", scans[1]), *scans[0].words)
    fm.case("a corrupt EXIF tag on Feature maps", _upload("fm_upload", "exif.jpg", corrupt_exif_jpeg()),
            "exif data", "is damaged")


def test_oversized_uploads_are_refused_by_the_server_not_only_the_browser(private_tmp):
    zip60, image11 = (case.make() for case in CLASSES["uploads"][:2])  # the 301 MB state dict: library test only
    tr = Student("training", _builtin_data)
    tr.case("60 MB zip", _start_with_zip(zip60), "the zip is 60.0 mb", "the limit is 50 mb")
    fm = Student("feature_maps", _upload("fm_upload", "ok.png", png(40, 30, "RGB")))
    fm.case("11 MB image", _upload("fm_upload", "big.png", image11), "the limit is 10.0 mb")


CUSTOM = {"sel_family": "Custom", "sel_block": "basic", "sel_stem": "cifar", "sel_in_ch": 3, "sel_classes": 10}


@pytest.mark.parametrize("sidebar, words", [
    ({"sel_width": 512, "sel_layers": "2, 2, 2", "sel_size": 1024}, ("this model needs about 62.0 gb",)),
    ({"sel_width": 16, "sel_layers": "3000, 3000, 3000", "sel_size": 32}, ("9,000 blocks",)),
])
def test_models_too_big_for_the_machine_are_refused_in_the_sidebar_with_numbers(sidebar, words, private_tmp):
    small = {"sel_width": 16, "sel_layers": "2, 2, 2", "sel_size": 32}

    def choose(settings):
        def act(at):
            for key, value in (CUSTOM | settings).items():
                at.session_state[key] = value
            at.run()
        return act
    sf = Student("signal_flow", choose(small))
    sf.case("sidebar: " + sidebar["sel_layers"], choose(sidebar), *words, "keeping the previous model")
    assert "custom-14" in " ".join(c.value for c in sf.at.sidebar.caption)  # the small model is back


def test_cpu_allocation_failure_is_shown_like_out_of_memory():
    def page():
        from resviz import ui  # AppTest runs this function's source alone: it imports what it needs

        with ui.friendly_errors("Measuring the signal flow"):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 17179869184 bytes. Error code 12")

    at = AppTest.from_function(page).run()
    assert not at.exception
    assert at.error[0].value == ("Measuring the signal flow: the device ran out of memory. Try a smaller batch, "
                                 "a smaller input, or the CPU.")


if __name__ == "__main__":
    run_class(sys.argv[1])

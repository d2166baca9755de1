"""Weight loading: good files load into a copy; every bad file is refused in plain words and runs nothing."""
import io
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
import zipfile

import pytest
import torch
import torchvision

from resviz.inputs import weights
from resviz import models
from resviz.inputs.weights import WeightsError, load_state_dict_safely


def tiny(num_classes=10, layers=(1, 1), **kw):
    cfg = models.ResNetConfig(block="basic", layers=layers, widths=(4, 8), stem="cifar", stem_width=4,
                              input_size=8, num_classes=num_classes, shortcut="B", **kw)
    return models.build_model(cfg, seed=0).eval()


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_bare_state_dict_loads_into_a_copy_and_leaves_the_original_alone():
    src, dst = tiny(), tiny()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    report = load_state_dict_safely(saved(src.state_dict()), dst)
    assert report.model is not dst
    for k, v in src.state_dict().items():
        torch.testing.assert_close(report.model.state_dict()[k], v)
        torch.testing.assert_close(dst.state_dict()[k], before[k])  # the shared model is untouched
    assert report.n_tensors == len(src.state_dict())
    assert report.n_values == sum(v.numel() for v in src.state_dict().values())


@pytest.mark.parametrize("wrap", ["state_dict", "model"])
def test_wrapped_and_module_prefixed_dicts_load(wrap):
    src = tiny()
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    report = load_state_dict_safely(saved({wrap: sd, "epoch": 3}), tiny())
    torch.testing.assert_close(report.model.fc.weight, src.fc.weight)
    assert any(wrap in n for n in report.notes) and any("module." in n for n in report.notes)


def test_torchvision_state_dict_loads_and_gives_torchvision_output():
    tv = torchvision.models.resnet18(num_classes=7).eval()
    ours = models.build_model("resnet18", num_classes=7).eval()
    report = load_state_dict_safely(saved(tv.state_dict()), ours)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(report.model(x), tv(x))


def test_residual_weights_load_into_the_plain_twin_with_a_note():
    src = tiny()
    plain = models.build_model(models.plain_config(src.cfg), seed=1)
    report = load_state_dict_safely(saved(src.state_dict()), plain)
    assert any("plain twin has no shortcuts" in n for n in report.notes)
    torch.testing.assert_close(report.model.layer2[0].conv1.weight, src.layer2[0].conv1.weight)


def test_class_count_mismatch_is_explained():
    with pytest.raises(WeightsError, match="this file has 1000 output classes; the chosen model has 10".capitalize()):
        load_state_dict_safely(saved(tiny(num_classes=1000).state_dict()), tiny(num_classes=10))


def test_other_architecture_is_explained_with_a_guess():
    r18 = models.build_model("resnet18").state_dict()
    with pytest.raises(WeightsError) as e:
        load_state_dict_safely(saved(r18), models.build_model("resnet20"))
    msg = str(e.value)
    assert "1000 output classes; the chosen model has 10" in msg
    assert "basic blocks, 2-2-2-2 blocks per stage" in msg and "3-3-3" in msg
    assert "resnet18" in msg and "not loaded" in msg


def test_width_mismatch_names_a_layer_and_both_shapes():
    a = tiny()
    b = models.build_model(models.replace(a.cfg, widths=(6, 8)), seed=0)
    with pytest.raises(WeightsError, match=r"layer1\.0\.conv1\.weight: the file has 4 x 4 x 3 x 3, the model needs 6 x 4 x 3 x 3"):
        load_state_dict_safely(saved(a.state_dict()), b)


def test_nan_weights_are_refused():
    sd = tiny().state_dict()
    sd["fc.bias"][0] = float("nan")
    with pytest.raises(WeightsError, match="NaN or infinite.*fc.bias"):
        load_state_dict_safely(saved(sd), tiny())
    sd["fc.bias"][0] = float("inf")
    with pytest.raises(WeightsError, match="diverged"):
        load_state_dict_safely(saved(sd), tiny())


class WritesAFile:
    """A real malicious pickle: unpickling it calls open(path, 'w').write(...)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


def test_malicious_pickle_runs_nothing_and_says_so(tmp_path):
    target = tmp_path / "pwned.txt"
    data = saved({"fc.weight": torch.zeros(2, 2), "payload": WritesAFile(target)})
    with pytest.raises(WeightsError, match=r"would run code when opened \(it asks for (builtins\.)?exec\)"):
        load_state_dict_safely(data, tiny())
    assert not target.exists()
    torch.load(io.BytesIO(data), weights_only=False)  # the unsafe way: proves the payload is real
    assert target.read_text() == "pwned"


def test_plain_pickle_file_is_not_even_unpickled(tmp_path):
    target = tmp_path / "pwned.txt"
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        load_state_dict_safely(pickle.dumps(WritesAFile(target)), tiny())
    assert not target.exists()


def test_whole_module_pickle_is_refused():
    with pytest.raises(WeightsError, match="would run code|Python objects"):
        load_state_dict_safely(saved(tiny()), tiny())


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"GIF89a not weights at all", "not a PyTorch weights file"),
    (None, "damaged or cut short"),  # truncated, filled in below
    ("zip", "not a PyTorch weights file"),
])
def test_bad_files_get_plain_messages(data, words):
    if data is None:
        full = saved(tiny().state_dict())
        data = full[: len(full) // 2]
    elif data == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("hello.txt", "a zip, but not from torch.save")
        data = buf.getvalue()
    with pytest.raises(WeightsError, match=words):
        load_state_dict_safely(data, tiny())


def test_oversize_file_is_refused_before_reading():
    data = saved(tiny().state_dict())
    with pytest.raises(WeightsError, match="the limit is"):
        load_state_dict_safely(data, tiny(), max_bytes=len(data) - 1)


def test_non_tensor_entries_are_refused():
    with pytest.raises(WeightsError, match="other than tensors"):
        load_state_dict_safely(saved({"fc.weight": torch.zeros(1), "lr": 0.1}), tiny())


# --- torchvision's ImageNet weights: the cached path, tested with a tiny fake checkpoint ---------------------


def test_pretrained_weights_enum_only_for_imagenet_presets():
    assert weights.pretrained_weights(models.get_config("resnet50")).url.endswith(".pth")
    assert weights.pretrained_weights(models.plain_config(models.get_config("resnet18"))) is not None
    assert weights.pretrained_weights(models.get_config("resnet20")) is None
    assert weights.pretrained_weights(models.get_config("resnet18", num_classes=10)) is None
    names = weights.class_names(weights.pretrained_weights(models.get_config("resnet18")))
    assert len(names) == 1000 and names[0] == "tench"


def test_cached_checkpoint_is_found_in_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    enum = torchvision.models.ResNet18_Weights.DEFAULT
    assert not weights.is_cached(enum)
    with pytest.raises(WeightsError, match="not on this computer"):
        weights.load_pretrained(tiny(), enum)
    src = tiny()
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"  # torchvision's file name
    path.parent.mkdir(parents=True)
    torch.save(src.state_dict(), path)
    assert weights.checkpoint_path(enum) == path and weights.is_cached(enum)
    report = weights.load_pretrained(tiny(), enum)
    torch.testing.assert_close(report.model.fc.weight, src.fc.weight)
    assert "ResNet18_Weights" in report.notes[0]


def test_failed_download_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="Could not download.*Network is unreachable.*random weights"):
        weights.load_pretrained(tiny(), torchvision.models.ResNet18_Weights.DEFAULT, download=True)


# --- tensors that are not plain weights, archives that expand ---------------------------------------------


def with_fc(t: torch.Tensor) -> bytes:
    sd = tiny().state_dict()
    sd["fc.weight"] = t
    return saved(sd)


@pytest.mark.parametrize("make, words", [
    (lambda: torch.empty(10, 8, device="meta"), "holds no values"),
    (lambda: torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.tensor([1.0]), (40000, 40000)),
     "sparse coo tensor, not a dense one"),
    (lambda: torch.full((10, 8), complex(float("nan"), 1.0)), "complex64, not real numbers"),
    (lambda: torch.quantize_per_tensor(torch.zeros(10, 8), 0.1, 0, torch.qint8), "qint8"),
    (lambda: torch.zeros(1).expand(40000, 40000), "claims 1,600,000,000 values but its file holds 1"),
    (lambda: torch.zeros(80).as_strided((10, 8), (1, 1)), None),  # overlapping rows, but every value is stored
])
def test_only_dense_real_tensors_backed_by_their_storage_are_weights(make, words):
    data = with_fc(make())
    if words is None:
        assert load_state_dict_safely(data, tiny()).n_tensors == len(tiny().state_dict())
        return
    with pytest.raises(WeightsError, match=rf"The tensor 'fc.weight' cannot be a weight: .*{re.escape(words)}"):
        load_state_dict_safely(data, tiny())


def test_tensors_sharing_one_storage_cannot_add_up_past_the_cap():
    big = torch.zeros(1000)
    sd = tiny().state_dict() | {f"alias{i}": big for i in range(10)}  # 10 names, one 4 kB storage
    with pytest.raises(WeightsError, match="hold 0.0 MB of values in all; the limit is 0.0 MB"):
        load_state_dict_safely(saved(sd), tiny(), max_bytes=30_000)


def rezipped(data: bytes, method=zipfile.ZIP_DEFLATED) -> bytes:
    """A torch.save archive written again with compression (torch.save itself stores entries as they are)."""
    src, buf = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info))
    return buf.getvalue()


def test_archive_is_checked_from_its_directory_before_torch_load(monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("torch.load was reached")

    sd = tiny().state_dict() | {"zeros": torch.zeros(2**20)}  # 4 MiB of zeros deflate to a few kB
    bomb = rezipped(saved(sd))
    assert len(bomb) < 100_000
    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(WeightsError, match=r"compressed \d+ to 1 .*zip bomb"):
        weights.read_checkpoint(bomb)
    with pytest.raises(WeightsError, match=r"unpacks to 4\.\d MB; the limit is 1\.0 MB"):
        weights.read_checkpoint(bomb, max_bytes=2**20)
    monkeypatch.setattr(weights.limits, "CHECKPOINT_ENTRIES", 5)
    with pytest.raises(WeightsError, match=r"holds \d\d entries; at most 5 "):
        weights.read_checkpoint(saved(tiny().state_dict()))
    monkeypatch.setattr(weights.limits, "CHECKPOINT_ENTRIES", 5000)
    monkeypatch.setattr(weights.limits, "CHECKPOINT_PICKLE_MB", 0)
    with pytest.raises(WeightsError, match="table of contents is too large"):
        weights.read_checkpoint(saved(tiny().state_dict()))


def test_a_compressed_but_honest_checkpoint_still_loads():
    data = rezipped(saved(tiny().state_dict()))  # random weights barely compress
    assert load_state_dict_safely(data, tiny()).n_tensors == len(tiny().state_dict())


@pytest.mark.parametrize("error, words", [
    (TypeError("something torch did not foresee"), r"could not be loaded into the chosen model \(something torch"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"), "ran out of memory"),
    (MemoryError(), "ran out of memory"),
])
def test_anything_unexpected_while_loading_is_a_weights_error(monkeypatch, error, words):
    def broken(self, *a, **k):
        raise error

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", broken)
    with pytest.raises(WeightsError, match=words):
        load_state_dict_safely(saved(tiny().state_dict()), tiny())


# --- hostile pickles: parsed in the sandbox child, so a crash, a loop or a blow-up is a message ----------------
# Each file is made here, never shipped: a torch.save archive whose data.pkl is replaced by a crafted pickle.

PROTO, STOP, EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE = b"\x80\x02", b".", b"}", b"]", b")"
TUPLE1, TUPLE2, SETITEM, APPEND = b"\x85", b"\x86", b"s", b"a"


def binput(i: int) -> bytes:
    return b"r" + i.to_bytes(4, "little")  # LONG_BINPUT


def binget(i: int) -> bytes:
    return b"j" + i.to_bytes(4, "little")  # LONG_BINGET


def unicode(s: str) -> bytes:
    raw = s.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw  # BINUNICODE


def with_pickle(pkl: bytes) -> bytes:
    """A torch.save archive (of a tiny state dict) whose pickle is ``pkl``."""
    src, buf = zipfile.ZipFile(io.BytesIO(saved(tiny().state_dict()))), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, pkl if info.filename.endswith("/data.pkl") else src.read(info))
    return buf.getvalue()


def deep_tuple_key(depth: int) -> bytes:
    """{((((),),),): []}: hashing the key recurses in C once per level (the crash of issue 20)."""
    return with_pickle(PROTO + EMPTY_DICT + EMPTY_TUPLE + TUPLE1 * depth + EMPTY_LIST + SETITEM + STOP)


def self_repeating_tuple_key(levels: int) -> bytes:
    """A key t_n = (t_n-1, t_n-1) with t_0 = (): a few hundred bytes, 2**levels leaves to hash (runs forever)."""
    body = EMPTY_TUPLE + binput(0)
    for i in range(1, levels + 1):
        body += binget(i - 1) + TUPLE2 + binput(i)
    return with_pickle(PROTO + EMPTY_DICT + body + EMPTY_LIST + SETITEM + STOP)


def deep_list_value(depth: int) -> bytes:
    """{"fc.weight": [[[...]]]} nested ``depth`` deep."""
    return with_pickle(PROTO + EMPTY_DICT + unicode("fc.weight") + EMPTY_LIST * (depth + 1) + APPEND * depth
                       + SETITEM + STOP)


def deep_dict_value(depth: int) -> bytes:
    """{"state_dict": {"state_dict": {...}}} nested ``depth`` deep (the key memoised: 6 bytes a level)."""
    body = EMPTY_DICT + unicode("state_dict") + binput(0) + EMPTY_DICT
    body += (binget(0) + EMPTY_DICT) * depth + SETITEM * (depth + 1)
    return with_pickle(PROTO + body + STOP)


def assert_server_side_alive():
    """After a hostile file this process still loads a good one, with the same values as before."""
    src = tiny()
    report = load_state_dict_safely(saved(src.state_dict()), tiny(num_classes=10))
    for k, v in src.state_dict().items():
        torch.testing.assert_close(report.model.state_dict()[k], v)


def scratch_files() -> set:
    folder = weights.SCRATCH or tempfile.gettempdir()
    return {p for p in os.listdir(folder) if p.startswith(f"resviz-weights-{os.getpid()}-")}  # this process's


QUICK = weights.sandbox.Limits(memory_mb=512, cpu_s=2, wall_s=60)


@pytest.mark.parametrize("make, words", [
    (lambda: deep_tuple_key(1_000_000), r"the reader crashed on it \(segmentation fault\)"),
    (lambda: self_repeating_tuple_key(80), r"computing time"),
    (lambda: deep_list_value(1_000_000), r"things other than tensors \(for example 'fc.weight'\)"),
    (lambda: deep_dict_value(500_000), r"things other than tensors \(for example 'state_dict'\)"),
    (lambda: deep_tuple_key(5_000), r"things other than tensors \(for example '\(+\.\.\.\)(,\))+'\)"),
], ids=["tuple key 1M deep", "self-repeating key", "list 1M deep", "dict 500k deep", "tuple key 5k deep"])
def test_hostile_pickles_are_plain_messages_and_the_server_lives(monkeypatch, make, words):
    monkeypatch.setattr(weights, "READ_LIMITS", QUICK)
    data, before = make(), scratch_files()
    assert len(data) < 4 * 2**20  # small files: the archive's own limits let them through
    with pytest.raises(WeightsError, match=words):
        load_state_dict_safely(data, tiny())
    assert scratch_files() <= before  # the staged copy is gone
    assert_server_side_alive()


def test_several_students_upload_at_once_good_and_hostile_files(monkeypatch):
    monkeypatch.setattr(weights, "READ_LIMITS", QUICK)
    src, before = tiny(), scratch_files()
    good, hostile = saved(src.state_dict()), deep_tuple_key(1_000_000)
    outcomes = {}

    def upload(i):
        try:
            outcomes[i] = load_state_dict_safely(hostile if i % 3 == 0 else good, tiny()).model
        except WeightsError as e:
            outcomes[i] = str(e)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, out in outcomes.items():
        if i % 3 == 0:
            assert "segmentation fault" in out, out
        else:
            torch.testing.assert_close(out.fc.weight, src.fc.weight)
    assert len(outcomes) == 6 and scratch_files() <= before


def test_the_deep_tuple_key_really_crashes_a_process_that_parses_it_in_place(tmp_path):
    """The oracle: what the sandbox saves the server from (the old in-process torch.load)."""
    path = tmp_path / "deep.pt"
    path.write_bytes(deep_tuple_key(1_000_000))
    code = f"import torch; torch.load({str(path)!r}, weights_only=True)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGSEGV, done.stderr[-2000:]


def test_the_sandbox_answer_is_checked_against_the_file():
    data = saved(tiny().state_dict())
    layout = {"notes": [], "tensors": [["fc.weight", "float32", [10, 8], [8, 1], 0, len(data) - 8, 320]]}
    with pytest.raises(WeightsError, match="could not be read safely: what it holds does not match its bytes"):
        weights._tensors_from(data, len(data), layout)  # a storage said to reach past the end of the file
    layout["tensors"][0][1] = "complex64"
    with pytest.raises(WeightsError, match="does not match its bytes"):
        weights._tensors_from(data, len(data), layout)


def test_a_big_checkpoint_from_a_file_loads_in_the_sandbox_with_torchvisions_values(tmp_path):
    tv = torchvision.models.resnet18(num_classes=7).eval()
    path = tmp_path / "r18.pth"
    torch.save(tv.state_dict(), path)
    sd, notes = weights.read_checkpoint(path, max_bytes=math.inf)
    assert notes == [] and sd.keys() == tv.state_dict().keys()
    for k, v in tv.state_dict().items():
        torch.testing.assert_close(sd[k], v, rtol=0, atol=0)


def test_odd_names_are_refused_in_plain_words():
    with pytest.raises(WeightsError, match="not plain text"):
        load_state_dict_safely(saved({"fc.weight\n<b>": torch.zeros(1)}), tiny())


@pytest.mark.browser
def test_on_a_real_server_a_crashing_upload_fails_alone_while_another_student_works(page, tmp_path):
    """One student uploads the 1M-deep tuple key on Feature maps (in Chromium); another keeps working over the
    websocket meanwhile; the upload is a plain message and the server process is still alive afterwards."""
    from resviz.lessons.feature_maps import SOURCE_LABELS, WeightsSource
    from resviz.tools.browser import open_page, page_exceptions
    from resviz.tools.server import HEALTH_PATH, start_server, stop_server
    from resviz.tools.session import Session

    hostile = tmp_path / "deep.pth"
    hostile.write_bytes(deep_tuple_key(1_000_000))
    proc, url = start_server(log_path=tmp_path / "server.log", env={"RESVIZ_WARM_UP": "0"})
    try:
        with Session(url, timeout=180) as other:
            assert other.run("feature_maps").ok
            open_page(page, url, "feature_maps")
            page.get_by_text(SOURCE_LABELS[WeightsSource.UPLOAD]).first.click()
            uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="State dict saved with")
            uploader.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(hostile))
            meanwhile = other.run("feature_maps")  # while the server reads the hostile file
            page.get_by_text("could not be read safely").first.wait_for(timeout=180_000)
            assert "segmentation fault" in page.inner_text("body") and page_exceptions(page) == []
            after = other.run("feature_maps")
        for res in (meanwhile, after):
            assert res.ok and any("Inside block" in t for t in res.texts), (res.status, res.exceptions, res.texts[:5])
        assert proc.poll() is None  # the server process lives
        urllib.request.urlopen(url + HEALTH_PATH, timeout=30)
    finally:
        stop_server(proc)

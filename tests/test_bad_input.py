"""Every input the app takes, fed something bad, through the pages a student uses.

For each case: a clear message on the page, no traceback, no code run, nothing written outside a temporary
folder, and the same session keeps working afterwards (the server keeps serving).
"""
import io
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, new_app, no_exceptions
from resviz import models
from resviz.lessons.training import DataSource


def png(size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(w=100_000, h=100_000) -> bytes:
    """A 1x1 PNG whose header claims w x h pixels: what a decompression bomb looks like before decoding."""
    data = bytearray(png((1, 1), "L"))
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Evil:
    """Unpickling this would create the file named by ``target``."""

    target = ""

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buf.getvalue()


def tree_snapshot() -> set[str]:
    """Files under the repository (where a careless extraction or save would land)."""
    return {str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts
            and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts}


@pytest.fixture
def guarded(tmp_path):
    """Fails if a case writes into the repository or home, or runs the malicious pickle."""
    Evil.target = str(tmp_path / "pwned")
    before = tree_snapshot()
    yield tmp_path
    assert not (tmp_path / "pwned").exists(), "the malicious pickle ran"
    assert tree_snapshot() == before, tree_snapshot() ^ before
    assert not Path(os.path.expanduser("~/pwned")).exists()


def assert_message(at, *words):
    no_exceptions(at)
    shown = " ".join(e.value for e in at.error).lower()
    assert shown, "no message shown"
    assert not re.search(r"\b\w+error: ", shown), f"a Python exception name leaked: {shown}"
    for w in words:
        assert w.lower() in shown, (w, shown)


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[:300]


BAD_IMAGES = {
    "zero bytes": (b"", "empty"),
    "not an image": (b"%PDF-1.4 this is a PDF, not a picture" * 20, "not an image"),
    "truncated": (truncated_jpeg(), "truncated"),
    "decompression bomb": (bomb_png(), "bomb"),
    "extension lies (text named .png)": (b"GIF? no: plain text pretending" * 10, "not an image"),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_image_on_feature_maps_page(case, guarded):
    data, words = BAD_IMAGES[case]
    at = new_app("feature_maps", timeout=120)
    at.file_uploader(key="fm_upload").set_value(("photo.png", data, "image/png")).run()
    assert_message(at, words)
    at.file_uploader(key="fm_upload").set_value(("ok.png", png(), "image/png")).run()  # still serving
    no_exceptions(at)
    assert not at.error


@pytest.mark.parametrize("case", ["zero bytes", "decompression bomb"])
def test_bad_image_on_signal_flow_page(case, guarded):
    data, words = BAD_IMAGES[case]
    at = new_app("signal_flow", timeout=120)
    at.radio(key="sf_input").set_value(at.radio(key="sf_input").options[1]).run()
    at.file_uploader(key="sf_upload").set_value(("x.png", data, "image/png")).run()
    assert_message(at, words)


@pytest.mark.parametrize("mode", ["I;16", "CMYK", "P", "RGBA", "LA", "1"])
def test_odd_image_modes_just_work(mode, guarded):
    buf = io.BytesIO()
    Image.new(mode, (50, 40)).save(buf, "JPEG" if mode == "CMYK" else "PNG")
    at = new_app("feature_maps", timeout=120)
    at.file_uploader(key="fm_upload").set_value(("odd.png", buf.getvalue(), "image/png")).run()
    no_exceptions(at)
    assert not at.error


def bad_weights():
    good = models.build_model("resnet20", seed=1).state_dict()
    nan = {k: v.clone() for k, v in good.items()}
    nan["fc.weight"][0, 0] = float("nan")
    return {
        "malicious pickle": (saved({"conv1.weight": Evil()}), "would run code"),
        "truncated zip": (saved(good)[:5000], "cut short"),
        "not a torch file": (b"just some bytes, no zip, no pickle" * 50, "not"),
        "another architecture": (saved(models.build_model("resnet18").state_dict()), "1000 output classes"),
        "NaN values": (saved(nan), "nan"),
    }


@pytest.mark.parametrize("case", list(bad_weights()))
def test_bad_weights_on_feature_maps_page(case, guarded):
    data, words = bad_weights()[case]
    at = new_app("feature_maps", timeout=120)
    at.radio(key="fm_source").set_value("upload").run()
    at.file_uploader(key="fm_weights_file").set_value(("w.pt", data, "application/octet-stream")).run()
    assert_message(at, words)
    assert "random weights" in " ".join(c.value for c in at.caption)  # fell back, page still works


def test_oversize_weights_are_refused_before_unpickling(guarded, monkeypatch):
    from resviz.inputs import weights

    monkeypatch.setattr(weights, "MAX_BYTES", 1000)  # a small cap stands in for a 300 MB file
    with pytest.raises(weights.WeightsError, match="MB"):
        weights.read_checkpoint(saved({"conv1.weight": Evil()}) + b"\0" * 2000, max_bytes=1000)


BAD_ZIPS = {
    "zip bomb": (zipped({f"cls{i}/img{j}.png": b"\0" * (2 * 2**20) for i in range(2) for j in range(80)}), "refusing"),
    "path with ..": (zipped({"../../escape/evil.png": png(), "a/ok.png": png()}), ".."),
    "not a zip": (b"PK\x03\x04 but not really a zip" * 10, "zip"),
    "no class folders": (zipped({"readme.txt": b"hello"}), "folder"),
}


@pytest.mark.parametrize("case", BAD_ZIPS)
def test_bad_zip_on_training_page(case, guarded):
    data, words = BAD_ZIPS[case]
    at = new_app("training", timeout=120)
    at.selectbox(key="tr_data").set_value(DataSource.ZIP).run()
    at.file_uploader(key="tr_zip").set_value(("class.zip", data, "application/zip")).run()
    at.button(key="tr_start").click().run()
    assert_message(at, words)
    assert not (ROOT.parent / "escape").exists()


def test_divergent_training_is_stopped_with_a_message(guarded):
    at = new_app("training", timeout=300)
    at.select_slider(key="tr_lr").set_value(100.0)
    at.number_input(key="tr_steps").set_value(8)
    at.button(key="tr_start").click().run()
    no_exceptions(at)
    shown = " ".join(e.value for e in [*at.error, *at.warning]).lower()
    assert "diverge" in shown or "nan" in shown, shown


@pytest.mark.parametrize("sidebar, words", [
    ({"sel_family": "Custom", "sel_layers": "2, 0, 2"}, "at least one block"),
    ({"sel_family": "Custom", "sel_layers": "a, b"}, "whole numbers"),
    ({"sel_family": "Custom", "sel_block": "basic", "sel_shortcut": "A", "sel_width": 64, "sel_layers": "1"}, ""),
])
def test_impossible_model_settings_are_explained_in_the_sidebar(sidebar, words, guarded):
    at = new_app("architecture", sidebar=sidebar)
    no_exceptions(at)
    if words:
        assert any(words in e.value for e in at.sidebar.error)


@pytest.mark.parametrize("page", ["architecture", "shortcut_lab", "signal_flow", "training", "feature_maps",
                                  "paths", "shattered"])
def test_input_too_small_for_the_depth_is_a_message_on_every_page(page, guarded):
    at = new_app(page, timeout=180, sidebar={"sel_family": "Custom", "sel_layers": "1, 1, 1, 1, 1, 1", "sel_size": 4,
                                             "sel_stem": "imagenet"})
    no_exceptions(at)

"""Every input the app takes, fed something bad, through the pages a student uses.

For each case: a clear message on the page, no traceback, no code run, nothing written where a careless
extraction or save would put it, and the same session keeps working afterwards (the server keeps serving).
Resource limits (slivers, odd tensors, expanding archives, clashing zips, oversized uploads and models) have
their own measured suite in test_limits.py.
"""
import io
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import streamlit.testing.v1  # noqa: F401 - imported first: AppTest makes its own temp folder at import

from helpers import ROOT, bomb_png, new_app, no_exceptions, png, saved, texts, zipped
from resviz import models
from resviz.lessons.feature_maps import WeightsSource
from resviz.lessons.signal_flow import Input
from resviz.lessons.training import DataSource

CACHE = Path(os.environ.get("RESVIZ_CACHE") or Path.home() / ".cache" / "resviz")  # resviz's disk cache
PROCESS_CACHES = ("torchinductor_",)  # torch's compile cache: made once per process in the temp folder, kept


class Evil:
    """Unpickling this would create the file named by ``target``."""

    target = ""

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


class WriteWatch:
    """Where a write could land: the server's temp folder (private to the test), and each watched name written
    below the places a careless extraction or save would use (the temp folder, the repository and its app
    folders, home, resviz's cache), directly or one folder down. A few stat calls, no walk of the repository."""

    BASES = (ROOT, ROOT / "pages", ROOT / "resviz", ROOT / "assets", Path.home(), CACHE)

    def __init__(self, temp: Path):
        self.temp, self.spots, self.existed = temp, set(), set()

    def watch(self, *names: str) -> None:
        bases = (self.temp, Path(tempfile.gettempdir()), *self.BASES)
        spots = {Path(os.path.normpath(b / sub / n)) for b in bases for sub in ("", "x") for n in names}
        self.existed |= {p for p in spots if p.exists()}
        self.spots |= spots

    def landed(self) -> list[str]:
        new = [p for p in self.spots - self.existed if p.exists()]
        left = [self.temp / n for n in os.listdir(self.temp) if not n.startswith(PROCESS_CACHES)]
        return sorted(map(str, new + left))


@pytest.fixture
def guarded(tmp_path, monkeypatch):
    """Fails if a case runs the malicious pickle, leaves a temp file, or writes a name it was fed anywhere a write
    could land. Tests ``watch`` the names they upload (file names, zip members)."""
    temp = tmp_path / "server-tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    Evil.target = str(tmp_path / "pwned")
    watch = WriteWatch(temp)
    watch.watch("pwned")
    yield watch
    assert not (tmp_path / "pwned").exists(), "the malicious pickle ran"
    assert watch.landed() == []


def test_the_write_watch_catches_a_careless_extraction_and_a_left_temp_file(tmp_path):
    temp = tmp_path / "server-tmp"
    temp.mkdir()
    watch = WriteWatch(temp)
    watch.watch("../../escape/evil.png", "upload.zip")
    assert watch.landed() == []
    careless = Path(os.path.normpath(temp / "x" / "../../escape/evil.png"))  # extracted into temp/x, unchecked
    careless.parent.mkdir(parents=True)
    careless.write_bytes(b"")
    (temp / "tmpabc.zip").write_bytes(b"")
    assert watch.landed() == sorted([str(careless), str(temp / "tmpabc.zip")])


def assert_message(at, *words):
    no_exceptions(at)
    shown = re.sub(r"\\(.)", r"\1", " ".join(e.value for e in at.error).lower())  # as read: markdown escapes undone
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
    "truncated": (truncated_jpeg(), "cut short"),
    "decompression bomb": (bomb_png(), "bomb"),
    "extension lies (text named .png)": (b"GIF? no: plain text pretending" * 10, "not an image"),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_image_on_feature_maps_page(case, guarded):
    data, words = BAD_IMAGES[case]
    guarded.watch("photo.png")
    at = new_app("feature_maps", timeout=120)
    at.file_uploader(key="fm_upload").set_value(("photo.png", data, "image/png")).run()
    assert_message(at, words)
    at.file_uploader(key="fm_upload").set_value(("ok.png", png(), "image/png")).run()  # still serving
    no_exceptions(at)
    assert not at.error and "Inside block" in texts(at)


@pytest.mark.parametrize("case", ["zero bytes", "decompression bomb"])
def test_bad_image_on_signal_flow_page(case, guarded):
    data, words = BAD_IMAGES[case]
    guarded.watch("x.png")
    at = new_app("signal_flow", timeout=120)
    at.radio(key="sf_input").set_value(Input.IMAGE.value).run()
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
    assert any("original 50x40" in c.proto.spec for c in at.get("plotly_chart"))  # the preprocessing shows it
    assert "Inside block" in texts(at)


def bad_weights():
    good = models.build_model("resnet20", seed=1).state_dict()
    nan = {k: v.clone() for k, v in good.items()}
    nan["fc.weight"][0, 0] = float("nan")
    return {
        "malicious pickle": (saved({"conv1.weight": Evil()}), "would run code"),
        "truncated zip": (saved(good)[:5000], "cut short"),
        "not a torch file": (b"just some bytes, no zip, no pickle" * 50, "not a pytorch weights file"),
        "another architecture": (saved(models.build_model("resnet18").state_dict()), "1000 output classes"),
        "NaN values": (saved(nan), "nan"),
    }


@pytest.mark.parametrize("case", list(bad_weights()))
def test_bad_weights_on_feature_maps_page(case, guarded):
    data, words = bad_weights()[case]
    guarded.watch("w.pt")
    at = new_app("feature_maps", timeout=120)
    at.radio(key="fm_source").set_value(WeightsSource.UPLOAD).run()
    at.file_uploader(key="fm_weights_file").set_value(("w.pt", data, "application/octet-stream")).run()
    assert_message(at, words, "random weights")  # fell back
    assert "Inside block" in texts(at)  # and the page still works


def test_oversize_weights_are_refused_before_unpickling(guarded):
    from resviz.inputs import weights

    with pytest.raises(weights.WeightsError, match="the limit is 0.0 MB"):
        weights.read_checkpoint(saved({"conv1.weight": Evil()}) + b"\0" * 2000, max_bytes=1000)
    # the fixture checks that Evil's payload did not run


BAD_ZIPS = {
    "zip bomb": ({f"cls{i}/img{j}.png": b"\0" * (2 * 2**20) for i in range(2) for j in range(80)}, "refusing"),
    "path with ..": ({"../../escape/evil.png": png(), "a/ok.png": png()}, ".."),
    "not a zip": (b"PK\x03\x04 but not really a zip" * 10, "zip"),
    "no class folders": ({"readme.txt": b"hello"}, "folder"),
}


@pytest.mark.parametrize("case", BAD_ZIPS)
def test_bad_zip_on_training_page(case, guarded):
    members, words = BAD_ZIPS[case]
    guarded.watch("class.zip", *(members if isinstance(members, dict) else ()))
    at = new_app("training", timeout=120)
    at.selectbox(key="tr_data").set_value(DataSource.ZIP).run()
    data = zipped(members) if isinstance(members, dict) else members
    at.file_uploader(key="tr_zip").set_value(("class.zip", data, "application/zip")).run()
    at.button(key="tr_start").click().run()
    assert_message(at, words)


def test_divergent_training_is_stopped_with_a_message(guarded):
    at = new_app("training", timeout=300)
    at.select_slider(key="tr_lr").set_value(100.0)
    at.number_input(key="tr_steps").set_value(8)
    at.button(key="tr_start").click().run()
    no_exceptions(at)
    at.session_state["tr_watch"].wait(240)  # the race is a shared run: wait (bounded) for it, then draw it
    at.run()
    no_exceptions(at)
    shown = " ".join(e.value for e in [*at.error, *at.warning]).lower()
    assert "diverge" in shown or "nan" in shown, shown


@pytest.mark.parametrize("sidebar, words", [
    ({"sel_family": "Custom", "sel_layers": "2, 0, 2"}, "at least one block"),
    ({"sel_family": "Custom", "sel_layers": "a, b"}, "whole numbers"),
])
def test_impossible_model_settings_are_explained_in_the_sidebar(sidebar, words, guarded):
    at = new_app("architecture", sidebar=sidebar)
    no_exceptions(at)
    shown = [e.value for e in at.sidebar.error]
    assert any(words in e and "Keeping the previous model" in e for e in shown), shown


def test_a_possible_custom_model_is_taken_without_a_message(guarded):
    at = new_app("architecture", sidebar={"sel_family": "Custom", "sel_block": "basic", "sel_shortcut": "A",
                                          "sel_width": 64, "sel_layers": "1"})
    no_exceptions(at)
    assert not at.sidebar.error
    assert "custom-4" in " ".join(c.value for c in at.sidebar.caption)  # stem conv + 2 convs + fc


@pytest.mark.parametrize("page", ["architecture", "shortcut_lab", "signal_flow", "training", "feature_maps",
                                  "paths", "shattered"])
def test_input_too_small_for_the_depth_runs_on_every_page_and_the_architecture_page_says_why(page, guarded):
    at = new_app(page, timeout=180, sidebar={"sel_family": "Custom", "sel_layers": "1, 1, 1, 1, 1, 1", "sel_size": 4,
                                             "sel_stem": "imagenet"})
    no_exceptions(at)
    assert at.title, "the page drew nothing"
    if page == "architecture":  # PyTorch runs a stride on a 1x1 map; the page says the stride does nothing
        assert "already 1x1 when it reaches `layer2.0.conv1`" in texts(at)

"""The classroom server's settings: every one asserted, and every uploader capped."""
import re
import tomllib

from helpers import PAGES, ROOT
from resviz import models
from resviz.inputs import limits

CONFIG = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


def test_security_settings():
    assert CONFIG["server"]["enableXsrfProtection"] is True
    assert CONFIG["client"]["showErrorDetails"] == "none"
    assert CONFIG["client"]["toolbarMode"] == "viewer"
    assert CONFIG["browser"]["gatherUsageStats"] is False
    assert CONFIG["server"]["fileWatcherType"] == "none" and CONFIG["server"]["runOnSave"] is False


def test_no_full_garbage_collection_after_every_rerun():
    assert CONFIG["runner"]["postScriptGC"] is False


def test_server_upload_cap_is_the_largest_uploader_and_fits_the_largest_state_dict():
    assert CONFIG["server"]["maxUploadSize"] == limits.SERVER_MB == limits.WEIGHTS_MB
    import torch

    with torch.device("meta"):
        largest = max(models.count_params(models.build_model(n)) for n in models.IMAGENET_PRESETS)
    assert largest * 4 < limits.mb(limits.WEIGHTS_MB)  # float32 values, plus a little pickle overhead
    assert limits.IMAGE_MB <= 10 and limits.ZIP_MB <= 50


def test_every_uploader_has_its_own_size_cap():
    calls = []
    files = [ROOT / "app.py", *PAGES.glob("*.py"), *(ROOT / "resviz").rglob("*.py")]
    for path in files:
        src = path.read_text()
        for m in re.finditer(r"file_uploader\(", src):
            calls.append((path.name, "max_upload_size=" in src[m.start():m.start() + 600]))
    assert calls and all(ok for _, ok in calls), [name for name, ok in calls if not ok]


def test_pinned_versions_have_no_known_advisories():
    reqs = dict(re.findall(r"^([\w-]+)==([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M))

    def ver(name):
        return tuple(int(x) for x in reqs[name].split("."))

    assert ver("streamlit") >= (1, 54) and ver("torch") >= (2, 6) and ver("pillow") >= (12, 2)


def test_a_browser_message_is_capped_and_every_text_cut_below_it():
    assert CONFIG["server"]["maxWidgetStateSize"] == 1  # MB: a message over it closes that tab's connection
    assert limits.LAYERS_CHARS < limits.WIDGET_TEXT_CHARS < 2**20


def test_a_session_may_hold_one_upload_of_each_kind_at_once():
    assert limits.SESSION_UPLOAD_MB >= limits.WEIGHTS_MB + limits.IMAGE_MB + limits.ZIP_MB
    assert limits.SESSION_UPLOAD_FILES >= 4  # weights + photo on Feature maps, a photo on Signal flow, a zip

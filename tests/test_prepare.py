"""python -m resviz.prepare: downloads checked end to end against a loopback HTTP server serving files the test makes
(a good file, a bad hash, a truncated download, a server that stops answering), and nothing partial left behind."""
import hashlib
import http.server
import io
import tarfile
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from resviz import prepare
from resviz.inputs import weights

PAYLOAD = b"resviz test checkpoint " * 4096  # 94 KB: several reads, nothing like a real download


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    release = threading.Event()

    def do_GET(self):  # noqa: N802 - http.server's name
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("silent"):
            self.release.wait(30)  # never answers while the client waits
            return
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if name.startswith("cut") else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Handler.release.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/files/"
    _Handler.release.set()
    server.shutdown()
    server.server_close()


def _item(mirror: str, name: str, body: bytes, digest: str | None = None) -> prepare.Download:
    _Handler.files[name] = body
    return prepare.Download(mirror + name, name, "sha256", digest or hashlib.sha256(body).hexdigest())


def test_a_good_file_arrives_checked(mirror, tmp_path):
    seen = []
    dest = prepare.fetch(_item(mirror, "good.pth", PAYLOAD), tmp_path / "good.pth",
                         progress=lambda got, total: seen.append((got, total)))
    assert dest.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [p.name for p in tmp_path.iterdir()] == ["good.pth"]


@pytest.mark.parametrize("name, digest, said", [
    ("bad.pth", "0" * 64, "not the published file"),
    ("cut.pth", None, "stopped after 47,104 of 94,208 bytes"),
    ("silent.pth", None, "could not download it"),
    ("missing.pth", None, "could not download it (HTTPError"),
])
def test_a_failed_download_says_why_and_leaves_nothing(mirror, tmp_path, name, digest, said):
    item = _item(mirror, name, PAYLOAD, digest) if name != "missing.pth" else prepare.Download(
        mirror + name, name, "sha256", "00")
    with pytest.raises(prepare.PrepareError, match="^" + name.replace(".", r"\.")) as e:
        prepare.fetch(item, tmp_path / name, timeout=0.5)
    assert said in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary file
    assert str(tmp_path) not in str(e.value)


def test_weights_through_a_mirror_land_in_torch_hubs_cache(mirror, tmp_path, monkeypatch):
    """End to end: the checkpoint's name carries its hash prefix, as torchvision's do; the page then finds it."""
    name = f"tiny-{hashlib.sha256(PAYLOAD).hexdigest()[:8]}.pth"
    _Handler.files[name] = PAYLOAD
    fake = SimpleNamespace(url=f"https://download.pytorch.org/models/{name}")
    monkeypatch.setattr(weights, "pretrained_weights", lambda cfg: fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert not weights.is_cached(fake)
    said = prepare.prepare_weights("resnet18", mirror=mirror, progress=lambda *a: None)
    assert said.startswith("resnet18: downloaded and checked")
    assert weights.is_cached(fake) and weights.checkpoint_path(fake).read_bytes() == PAYLOAD
    assert prepare.prepare_weights("resnet18", mirror=mirror) == "resnet18: already here"


def test_a_mirrored_file_with_another_hash_is_refused(mirror, tmp_path, monkeypatch):
    name = "tiny-deadbeef.pth"  # the name promises a hash the bytes do not have
    _Handler.files[name] = PAYLOAD
    fake = SimpleNamespace(url=f"https://download.pytorch.org/models/{name}")
    monkeypatch.setattr(weights, "pretrained_weights", lambda cfg: fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(prepare.PrepareError, match="not the published file"):
        prepare.prepare_weights("resnet18", mirror=mirror, progress=lambda *a: None)
    assert not weights.is_cached(fake)


def test_cifar10_archive_is_checked_and_unpacked(mirror, tmp_path, monkeypatch):
    from torchvision import datasets

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        member = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        member.size = 5
        tar.addfile(member, io.BytesIO(b"hello"))
    archive = buf.getvalue()
    _Handler.files[datasets.CIFAR10.filename] = archive
    monkeypatch.setattr(datasets.CIFAR10, "tgz_md5", hashlib.md5(archive).hexdigest())
    said = prepare.prepare_dataset("CIFAR10", tmp_path, mirror=mirror, progress=lambda *a: None)
    assert said == "CIFAR10: downloaded, checked and unpacked"
    assert (tmp_path / "cifar-10-batches-py" / "batches.meta").read_bytes() == b"hello"
    assert not (tmp_path / datasets.CIFAR10.filename).exists()  # the archive is not kept


def test_the_command_offline_says_what_is_not_ready(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("RESVIZ_MIRROR", "http://127.0.0.1:9/")  # the discard port: refused at once
    assert prepare.main(["--weights", "resnet18", "--datasets", "--no-pairs", "--no-races", "--no-lessons", "--timeout",
                         "2"]) == 1
    out = capsys.readouterr().out
    assert "weights resnet18" in out and "NOT READY: resnet18-f37072fd.pth: could not download it" in out
    assert "1 item(s) not ready" in out and str(tmp_path) not in out


def test_naming_one_download_fetches_that_alone(monkeypatch, capsys):
    """Feature maps tells the teacher `python -m resviz.prepare --weights resnet18`: that checkpoint, not CIFAR-10,
    the pairs, the races and an hour of lessons."""
    fetched = []
    monkeypatch.setattr(prepare, "prepare_weights", lambda p, *a, **k: fetched.append(p) or f"{p} ready")

    def never(*a, **k):
        raise AssertionError("not asked for")

    for name in ("prepare_dataset", "prepare_pairs", "race_steps", "lesson_steps"):
        monkeypatch.setattr(prepare, name, never)
    assert prepare.main(["--weights", "resnet18"]) == 0
    assert fetched == ["resnet18"] and "Everything is ready." in capsys.readouterr().out
    assert prepare.named_downloads(["--datasets=cifar10"]) and not prepare.named_downloads(["--weights", "--no-pairs"])


def test_pairs_are_trained_only_when_missing(monkeypatch):
    from resviz import builtin_pair

    on_disk, trained = {"resnet20"}, []
    monkeypatch.setattr(builtin_pair, "load", lambda r: object() if r.cfg.name in on_disk else None)
    monkeypatch.setattr(builtin_pair, "train", lambda r, device: trained.append((r.cfg.name, device)))
    said = prepare.prepare_pairs(("resnet20", "resnet56"))
    assert trained == [("resnet56", "cpu")]
    assert said[0].endswith("already here") and said[1].endswith("trained")


# --- the lessons' default results, prepared into the disk cache (resviz.prepared) ---------------------------------
FIRST_VISIT = r'''
import json, sys
sys.path.insert(0, "tests")
from helpers import new_app
from resviz import pair, prepare
from resviz.lessons import landscape as ls, lesion, paths, shattered as sh, signal_flow as sf

# smaller than the pages' settings (the same for the prepare command and the pages in this process)
ls.FINE, ls.COARSE, ls.DIRECTIONS, paths.EXACT_PATHS, sh.AVERAGED, pair.EVAL_IMAGES = 5, 3, 2, 8, 1, 100
for what, step in prepare.lesson_steps("cpu"):
    if what in sys.argv[1:]:
        step()
calls = []
for module, names in ((lesion, ["lesion_study"]), (sf, ["compare_signal_flow"]),
                      (paths, ["exact_path_norms", "path_gradient"]), (sh, ["_sweep"]),
                      (ls, ["pair_grids", "pair_grid_records"])):
    for name in names:  # every computation of a page's result goes through one of these
        real = getattr(module, name)
        setattr(module, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
shipped = {"le_pair_choice": "resnet20", "ls_pair_choice": "resnet20", "pa_pair_choice": "resnet20"}
out = {}
for page in ("signal_flow", "lesion", "paths", "shattered", "landscape"):
    before = len(calls)
    at = new_app(page, timeout=300, sidebar=shipped)
    out[page] = {"computed": calls[before:], "charts": len(at.get("plotly_chart")),
                 "exceptions": [e.message for e in at.exception]}
print("RESULT " + json.dumps(out))
'''


def first_visits(tmp_path, prepared_steps: tuple[str, ...]) -> dict:
    """Each lesson page opened once in a fresh process (a server just started), after preparing ``prepared_steps``
    into an empty disk cache: what each page computed, the charts it shows, its exceptions."""
    import json
    import os
    import subprocess
    import sys

    from helpers import ROOT

    env = {**os.environ, "RESVIZ_CACHE": str(tmp_path / "cache"), "RESVIZ_WARM_UP": "0"}
    done = subprocess.run([sys.executable, "-c", FIRST_VISIT, *prepared_steps], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_after_prepare_a_first_visit_to_each_page_shows_its_figure_without_computing(tmp_path):
    visits = first_visits(tmp_path, ("signal flow", "lesion", "paths", "shattered", "loss landscape"))
    for page, seen in visits.items():
        assert not seen["exceptions"], (page, seen["exceptions"])
        assert seen["charts"] >= 1, page
        assert seen["computed"] == [], (page, seen["computed"])


def test_a_lesson_result_is_stored_only_by_the_prepare_command(tmp_path, monkeypatch):
    from resviz import disk_cache, prepared
    from resviz.lessons import shattered as sh

    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path / "cache"))
    computed = []
    real = sh._sweep
    monkeypatch.setattr(sh, "_sweep", lambda *a: computed.append(a) or real(*a))
    cfg = sh.SweepConfig(depth=4, width=16, n_points=32, seed=3)
    first = sh.shattered_sweep(cfg)  # a server's call: computed, not stored
    assert len(computed) == 1 and not disk_cache.exists(sh.shattered_sweep.disk_key(cfg))
    assert prepare._kept(sh.shattered_sweep, cfg) == "computed" and len(computed) == 2
    assert prepare._kept(sh.shattered_sweep, cfg) == "already here" and len(computed) == 2
    again = sh.shattered_sweep(cfg)  # read back: nothing computed, the same numbers and types
    assert len(computed) == 2 and isinstance(again, sh.Sweep)
    for a, b in zip((first.x, first.grad, first.autocorr), (again.x, again.grad, again.autocorr)):
        np.testing.assert_array_equal(a, b)
    assert again.lag1 == first.lag1
    monkeypatch.setattr(prepared, "code_version", lambda: "another version of resviz")
    sh.shattered_sweep(cfg)  # results prepared by other code are never read
    assert len(computed) == 3
    with prepared.writing():
        assert sh.shattered_sweep(sh.SweepConfig(depth=2, width=8, n_points=8)) is not None
    assert len(computed) == 4


def test_every_kind_of_lesson_result_survives_the_disk():
    from resviz import prepared
    from resviz.lessons import lesion, paths, signal_flow as sf

    from helpers import tiny_config, tiny_model

    model = tiny_model()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    results = [lesion.lesion_study(model, x, y), paths.gradient_by_path_length(model, x, y, 2),
               sf.measure(sf.Settings(tiny_config(), batch=2))]
    for result in results:
        back = prepared.decode(torch.load(_saved(prepared.encode(result)), weights_only=True))
        assert type(back) is type(result)
        assert _plain(back) == _plain(result)
    flow = prepared.decode(torch.load(_saved(prepared.encode(results[2])), weights_only=True))
    assert sf.explain_signal_flow(flow) == sf.explain_signal_flow(results[2])  # enums and nested dataclasses too


def test_only_resviz_dataclasses_and_enums_are_rebuilt(tmp_path, monkeypatch):
    from resviz import disk_cache, prepared

    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path / "cache"))
    for name in ("subprocess:Popen", "os:system", "resviz.pair:fingerprint", "resviz.pair:PairError"):
        with pytest.raises(ValueError):
            prepared.decode({"__dataclass__": name, "fields": {}})
    with pytest.raises(ValueError):
        prepared.decode({"__enum__": "resviz.pair:TrainedPair", "value": 1})
    disk_cache.save("prepared-x", {"result": {"__dataclass__": "subprocess:Popen", "fields": {"args": "true"}}})
    assert prepared.read("prepared-x") is None  # a miss, computed as before


def _saved(tree) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(tree, buf)
    buf.seek(0)
    return buf


def _plain(obj):
    """A comparable form of a result: arrays as lists (NaN as a string), dataclasses and dicts by their fields."""
    import dataclasses
    import math

    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, np.ndarray):
        return [obj.dtype.str, _plain(obj.tolist())]
    if isinstance(obj, torch.Tensor):
        return _plain(obj.numpy())
    if isinstance(obj, dict):
        return {repr(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [type(obj).__name__, *(_plain(v) for v in obj)]
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj


# --- the Training race page's default races, prepared and kept for replay with their weights ------------------------
@pytest.fixture
def tiny_races(tmp_path, monkeypatch):
    """The page's default races cut down to 3 steps of 16 images (the page and the prepare command in this process
    read the same recipes), in a disk cache of this test's own."""
    from resviz.lessons.training import RaceConfig, recipes, replay

    tiny = RaceConfig(lr=0.01, batch_size=16, steps=3, eval_every=3, eval_size=64, bn_refresh=32)
    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path / "cache"))
    for preset in ("resnet20", "resnet56"):
        monkeypatch.setitem(recipes.RECIPES, preset, tiny)
    replay.forget_reads()
    yield
    replay.forget_reads()


def test_prepare_keeps_the_default_races_and_a_first_visit_replays_them_without_a_run(tiny_races, monkeypatch,
                                                                                      capsys):
    from helpers import new_app, no_exceptions
    from resviz import models, runs
    from resviz.lessons import training
    from resviz.lessons.training import replay

    device = str(models.pick_device("auto"))
    assert prepare.main(["--weights", "--datasets", "--no-pairs", "--no-lessons"]) == 0
    out = capsys.readouterr().out
    for race in replay.PAGE_RACES:
        said = [line for line in out.splitlines() if line.startswith(f"race {race.label}")]
        assert len(said) == 1 and " s  " in said[0] and "trained 3 steps and kept for replay with its weights" in \
            said[0], out
        kept = replay.load(race.key(device))
        assert kept.history.step == 3 and kept.pair_key and len(kept.history.runs) == (3 if race.shallow else 2)
    monkeypatch.setattr(training.jobs, "race_job", lambda *a, **k: pytest.fail("a kept race is not run again"))
    assert prepare.main(["--weights", "--datasets", "--no-pairs", "--no-lessons"]) == 0
    assert capsys.readouterr().out.count("already here (trained on") == len(replay.PAGE_RACES)
    assert prepare.main(["--weights", "--datasets", "--no-pairs", "--no-lessons", "--no-races"]) == 0
    assert "race " not in capsys.readouterr().out  # the flag skips them

    reg = runs.Registry()
    monkeypatch.setattr(runs, "_REGISTRY", reg)
    monkeypatch.setattr(training.jobs, "new_race", lambda *a, **k: pytest.fail("a replay trains nothing"))
    try:
        at = new_app("training")  # a student's first visit, with the page's defaults
        no_exceptions(at)
        for pair_ in (training.RacePair.SIDEBAR, training.RacePair.DEEP):  # the deeper pair: the trio, replayed
            if pair_ is training.RacePair.DEEP:
                at.radio(key="tr_pair").set_value(pair_).run()
                no_exceptions(at)
            replayed = [i.value for i in at.info if i.value.startswith("**Replayed**")]
            assert replayed and "3 steps" in replayed[0] and at.get("plotly_chart"), pair_
        assert "tr_watch" not in at.session_state and reg.overview() == []  # no run started, nothing queued
    finally:
        reg.shutdown()


def test_a_replay_hands_on_the_pair_it_trained_and_the_pair_pages_offer_it(tiny_races, monkeypatch):
    from helpers import new_app, no_exceptions, texts
    from resviz import disk_cache, pair
    from resviz.lessons import feature_maps as fm
    from resviz.lessons.training import jobs, replay

    race = replay.PAGE_RACES[0]
    cfg, req, used = race.settings("cpu")
    gen = jobs.race_job(cfg, req, req.load(), used, race.shallow).make()
    with pytest.raises(StopIteration) as over:
        while True:
            next(gen)
    trained = over.value.value  # the pair the finished race hands the other pages
    loads = []
    real = replay.W.load_state_dict_safely
    monkeypatch.setattr(replay.W, "load_state_dict_safely", lambda *a, **k: loads.append(1) or real(*a, **k))
    kept = replay.load(race.key("cpu"))
    back = replay.replayed_pair(kept)
    assert len(loads) == 2  # the ResNet and its twin, each read by the uploads' safe loader
    assert (back.cfg, back.class_names, back.steps) == (trained.cfg, trained.class_names, 3)
    assert back.label == f"{trained.label}, replayed race of {kept.trained_on}"
    x, _ = pair.probe_batch(trained.cfg, 16)
    for net, net_back in zip(pair.build_pair(trained), pair.build_pair(back)):
        torch.testing.assert_close(net_back(x), net(x), atol=3e-2, rtol=1e-2)  # half precision on disk
    values = sum(v.numel() for sd in (trained.state_dict, trained.plain_state_dict) for v in sd.values())
    kept_bytes = len(disk_cache.cache().get(replay.weights_key(race.key("cpu"))))
    assert 2 * values < kept_bytes < 2.3 * values  # two bytes a value, and little else
    assert replay.replayed_pair(kept) is back and len(loads) == 2  # read once per process

    at = new_app("lesion", timeout=120, sidebar={"le_pair_choice": ui_choice(race.preset)})
    no_exceptions(at)
    studying = [c.value for c in at.caption if c.value.startswith("Studying")]
    assert studying and "replayed race of" in studying[0], studying  # (its label as markdown text)
    assert at.get("plotly_chart")  # the lesion chart of the replayed pair
    at = new_app("feature_maps", timeout=120)  # Feature maps' trained source: offered last, not the default
    no_exceptions(at)
    radio = at.radio(key="fm_source")
    assert radio.value == fm.WeightsSource.SHIPPED and radio.options[-1] == fm.SOURCE_LABELS[fm.WeightsSource.TRAINED]
    at = radio.set_value(fm.WeightsSource.TRAINED).run()
    no_exceptions(at)
    assert "replayed race of" in texts(at) and "random weights" not in texts(at), texts(at)
    disk_cache.save(replay.weights_key(race.key("cpu")), {"version": 1, "resnet": torch.zeros(3)})  # damaged
    replay.forget_reads()
    at = new_app("lesion", sidebar={"le_pair_choice": ui_choice(race.preset)})
    assert any("could not be read back" in e.value for e in at.error) and not at.exception


def ui_choice(preset: str) -> str:
    """The pair picker's choice for the replayed race of ``preset`` (the value a link names)."""
    from resviz import ui

    return ui.REPLAYED + preset


def test_the_code_fingerprint_changes_with_lesson_code_not_with_tools(tmp_path, monkeypatch):
    from resviz import prepared

    for rel in ("lessons/race.py", "tools/load_class.py", "bench/race.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    monkeypatch.setattr(prepared, "_PACKAGE", tmp_path)

    def version():
        prepared.code_version.cache_clear()
        return prepared.code_version()

    first = version()
    (tmp_path / "tools/load_class.py").write_text("x = 2\n")  # a load test changed: prepared lessons still hold
    (tmp_path / "bench/race.py").write_text("x = 2\n")
    assert version() == first
    (tmp_path / "lessons/race.py").write_text("x = 2\n")  # a lesson's maths changed: they are computed again
    assert version() != first
    monkeypatch.undo()
    prepared.code_version.cache_clear()

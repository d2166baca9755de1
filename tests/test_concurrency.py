"""Ten students at once on one server process: training, feature maps and tracing mixed in threads.

Each session must see only its own upload and run, the shared cached models must come out unchanged and
without hooks, and two sessions with different seeds must each reproduce their single-session curves.
"""
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import encode, figure, new_app, no_exceptions
from resviz import runs as resviz_runs
from resviz import models, ui
from resviz.pair import fingerprint

pytestmark = pytest.mark.filterwarnings("ignore")


def png(colour) -> bytes:
    """A 48x48 picture, different for each student: a coloured square on a gradient."""
    arr = np.tile(np.linspace(0, 255, 48, dtype=np.uint8)[:, None, None], (1, 48, 3))
    arr[12:36, 12:36] = colour
    return encode(Image.fromarray(arr))


OPEN = threading.Lock()


def open_app(page):
    """Open a session on a page. Opening is serialised (AppTest's set-up is not thread-safe); every run after
    that, the real work, runs in parallel with the other students'."""
    with OPEN:
        return new_app(page, timeout=300)


def train(seed: int) -> list[float]:
    at = open_app("training")
    at.number_input(key="tr_steps").set_value(6)
    at.select_slider(key="tr_batch").set_value(16)
    at.number_input(key="tr_seed").set_value(seed)
    at.button(key="tr_start").click().run()
    no_exceptions(at)
    assert at.session_state["tr_watch"].wait(240).status.state is resviz_runs.State.FINISHED  # bounded wait
    at.run()  # AppTest does not poll fragments: one rerun draws the finished race
    no_exceptions(at)
    runs = at.session_state["tr_view"].history.runs
    return [round(v, 5) for r in runs.values() for v in r.loss]


def look(colour) -> list:
    at = open_app("feature_maps")
    at.file_uploader(key="fm_upload").set_value(("student.png", png(colour), "image/png")).run()
    no_exceptions(at)
    return figure(at, "fm_top")["data"][0]["x"]


def trace(preset) -> str:
    at = open_app("architecture")
    at.radio(key="sel_family").set_value("ImageNet").run()
    at.selectbox(key="sel_imagenet").set_value(preset).run()
    no_exceptions(at)
    return next(m.value for m in at.metric if m.label == "Parameters")


def shared_models():
    """The cached, shared models every session reads (built once here, before the class arrives)."""
    return [ui.load_model(models.get_config("resnet20"), "cpu")]


def hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


@pytest.fixture
def serial_compile(monkeypatch):
    """A real server compiles each page once, under its script cache's lock; every AppTest has its own cache,
    and CPython 3.11's compiler is not safe to run in several threads at once, so share one lock here."""
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    lock, original = threading.Lock(), ScriptCache.get_bytecode

    def get_bytecode(self, script_path):
        with lock:
            return original(self, script_path)

    monkeypatch.setattr(ScriptCache, "get_bytecode", get_bytecode)


@pytest.fixture
def one_runtime(monkeypatch):
    """A real server has one runtime and one set of options for every session; AppTest installs its own around
    each run and removes them after, in process-wide globals. With runs in threads, one run ending removed the
    runtime another was starting with ("Runtime hasn't been created!": the page drew nothing, and the test failed
    with ``KeyError: 'fm_upload'``), and restored the options under another run (its widgets' formatters went
    unrecorded). Here the runtime a run installs stays until the next one replaces it, and the test-mode option
    is set once for the whole test."""
    from streamlit.runtime import Runtime
    from streamlit.testing.v1 import app_test
    from streamlit.testing.v1.util import patch_config_options

    installed = []

    def instance(cls):
        if cls._instance is not None:
            installed[:] = [cls._instance]
        if not installed:
            raise RuntimeError("Runtime hasn't been created!")
        return installed[0]

    monkeypatch.setattr(Runtime, "instance", classmethod(instance))
    monkeypatch.setattr(Runtime, "exists", classmethod(lambda cls: cls._instance is not None or bool(installed)))
    monkeypatch.setattr(app_test, "patch_config_options", lambda overrides: contextlib.nullcontext())
    with patch_config_options({"global.appTest": True}):
        yield


def test_ten_sessions_at_once_stay_isolated_and_leave_shared_models_untouched(serial_compile, one_runtime):
    shared = shared_models()
    before = [fingerprint(m.state_dict()) for m in shared]
    # Single-session references, one student at a time.
    alone = {seed: train(seed) for seed in (1, 2)}
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    looks_alone = [look(c) for c in colours]

    jobs = [(train, 1), (train, 2), (train, 1), (train, 2),
            (look, colours[0]), (look, colours[1]), (look, colours[2]),
            (trace, "resnet18"), (trace, "resnet50"), (trace, "resnet152")]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: job[0](job[1]), jobs))

    assert results[0] == results[2] == alone[1]
    assert results[1] == results[3] == alone[2]
    assert alone[1] != alone[2]
    assert results[4:7] == looks_alone
    assert results[7:] == ["11,689,512", "25,557,032", "60,192,808"]
    assert [fingerprint(m.state_dict()) for m in shared] == before
    assert all(hooks(m) == 0 for m in shared)
    assert all(not p.requires_grad for m in shared for p in m.parameters())
    assert torch.is_grad_enabled()


def test_a_run_ending_in_another_session_leaves_this_ones_runtime_alone(one_runtime):
    """What made the test above flaky, made to happen all the time: other sessions' runs end (AppTest removes the
    runtime after each) while this session draws its page."""
    from streamlit.runtime import Runtime
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string('import streamlit as st\nst.file_uploader("Upload", key="up")', default_timeout=60)
    at.run()
    stop = threading.Event()

    def other_runs_ending():
        while not stop.is_set():
            Runtime._instance = None

    other = threading.Thread(target=other_runs_ending)
    other.start()
    try:
        for _ in range(10):
            at.run()
            assert at.file_uploader(key="up").label == "Upload"
    finally:
        stop.set()
        other.join()


def test_background_results_are_computed_a_few_at_once_the_others_wait():
    """Thirty students on thirty settings do not start thirty computations: background results are runs of the one
    engine, at most RESVIZ_MAX_RUNS of them at once (races and results alike); the others wait in its queue."""
    reg = resviz_runs.Registry.from_env({"RESVIZ_MAX_RUNS": "2"})
    release, started = threading.Event(), threading.Semaphore(0)

    def compute(progress):
        started.release()
        assert release.wait(60)
        progress(1.0)
        return "done"

    try:
        watches = [reg.attach_compute(("slots test", i), compute) for i in range(3)]
        race = reg.attach(("race", "slots test"), lambda: iter([{"step": 1, "steps": 1}]))
        assert started.acquire(timeout=60) and started.acquire(timeout=60)  # two compute
        assert [w.status.state for w in watches] == [resviz_runs.State.RUNNING] * 2 + [resviz_runs.State.QUEUED]
        assert (watches[2].status.position, race.status.position) == (1, 2)  # one queue for results and races
        release.set()
        assert all(w.wait(60).result == "done" for w in watches) and race.wait(60).status.state.done
    finally:
        release.set()
        reg.shutdown(60)

"""The one resviz module that imports streamlit: cached loaders, sidebar selection, session state.

Shared objects (``load_model``) are cached once per server and read by every student:
never mutate them. Anything a student changes lives in ``st.session_state``.
"""
from __future__ import annotations

import contextlib
import enum
import functools
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable

import cachetools

import pandas  # noqa: F401  plotly imports it lazily, which races when two sessions draw their first chart at once
import streamlit as st
import torch

from resviz.inputs import budget, limits, text
from resviz import models, runs

log = logging.getLogger("resviz")

DEFAULT_PRESET = "resnet20"  # the paper's CIFAR net: small enough to train live on a laptop CPU


class Family(str, enum.Enum):
    """Where the sidebar's model comes from; the value is the label the radio shows."""
    CIFAR = "CIFAR (paper §4.2)"
    IMAGENET = "ImageNet"
    CUSTOM = "Custom"


SIDEBAR_DEFAULTS = {  # widget key -> default; widgets take their value from here, never from value=
    "sel_family": Family.CIFAR.value, "sel_cifar": DEFAULT_PRESET, "sel_imagenet": "resnet50", "sel_block": "basic",
    "sel_layers": "2, 2, 2", "sel_width": 16, "sel_stem": "cifar", "sel_size": 32, "sel_in_ch": 3,
    "sel_classes": 10, "sel_norm": True, "sel_shortcut": "B", "sel_plain": False, "sel_device": "auto",
    "sel_stride_in_1x1": False,
}


@dataclass(frozen=True)
class Selection:
    """The sidebar's choice: a residual config, whether the student looks at its plain twin, and the device."""
    cfg: models.ResNetConfig  # always residual=True: pages that compare both start from it
    plain: bool = False  # the student asked for the plain twin
    device: str = "cpu"

    @property
    def chosen(self) -> models.ResNetConfig:
        """The network the student chose: the residual config, or its plain twin."""
        return models.with_shortcuts(self.cfg, residual=not self.plain)


def init_state() -> None:
    """Set each per-session default once; safe to call from every page."""
    ss = st.session_state
    for key, value in SIDEBAR_DEFAULTS.items():
        if key not in ss:
            ss[key] = value
        elif not _drawn_this_run(key):
            ss[key] = ss[key]  # keeps a sidebar choice when the widget is drawn from another page's script
    ss.setdefault("selection", Selection(models.get_config(DEFAULT_PRESET)))


@st.cache_resource(max_entries=8, show_spinner="Building the model…")
def load_model(cfg: models.ResNetConfig, device: str = "cpu", seed: int = 0) -> torch.nn.Module:
    """A shared, read-only model in eval mode (random weights from ``seed``). Copy before changing it."""
    model = models.build_model(cfg, seed=seed).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # shared: nobody may train it in place
    return model


def _drawn_this_run(widget_key: str) -> bool:
    """Whether the widget with this key was already drawn in the current script run."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    try:
        return ctx is not None and widget_key in ctx.shared.widget_user_keys_this_run
    except AttributeError:  # another Streamlit version: assume the frame (app.py) drew it
        return True


def current_selection() -> Selection:
    """The app-wide selection made in the sidebar for this session.

    app.py draws the sidebar before every page. When Streamlit runs a page file on its own (AppTest's
    ``switch_page``, or a direct link to a freshly started server), the page draws it here instead.
    """
    init_state()
    if not _drawn_this_run("sel_family"):
        guard_server()
        _leave_legacy_pages_mode()
        st.set_page_config(page_title="resviz", layout="wide")
        return model_sidebar_ui()
    return st.session_state["selection"]


def _leave_legacy_pages_mode() -> None:
    """On a fresh server Streamlit runs ``pages/<name>.py`` alone, with a menu made from the file names, until some
    session has called ``st.navigation``. Call it (the public switch out of that mode) and rerun: app.py then
    draws the app's own navigation for the same URL."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not st.session_state.get("_left_legacy_pages"):
        st.session_state["_left_legacy_pages"] = True  # at most once per session, whatever Streamlit does
        from resviz.lessons import LESSONS

        st.navigation([st.Page("pages/home.py", default=True), *(st.Page(item.page) for item in LESSONS)],
                      position="hidden")
        # reruns through app.py, which finds this page in its own navigation, with the link's settings
        st.switch_page(_running_page_file(), query_params=unbound_query(st.query_params.to_dict()))


def unbound_query(query: dict[str, str]) -> dict[str, str]:
    """``query`` without the keys bound to a widget this session has drawn: ``st.switch_page`` must not set those
    (Streamlit raises), the widgets keep them in the URL themselves."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    params = ctx.session_state._state.query_params if ctx is not None else None  # Streamlit 1.67's bindings
    return {k: v for k, v in query.items() if params is None or not params.is_bound(k)}


def _running_page_file() -> str:
    """The page file this script run executes, relative to app.py's folder (``pages/training.py``)."""
    import inspect
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for frame in inspect.stack():
        path = Path(frame.filename).resolve()
        if path.parent == root / "pages":
            return f"pages/{path.name}"
    return "pages/home.py"


def _custom_config_ui() -> models.ResNetConfig:
    sb = st.sidebar
    block = sb.selectbox("Block", models.BLOCKS, key="sel_block", bind="query-params",
                         help="basic: two 3x3 convs. bottleneck: 1x1 reduce, 3x3, 1x1 expand 4x.")
    layers_txt = sb.text_input("Blocks per stage", key="sel_layers", bind="query-params",
                               help="Comma-separated, one number per stage.")
    base = sb.number_input("Base width", 1, 512, key="sel_width", bind="query-params",
                           help="Channels of the first stage; each later stage doubles them.")
    stem = sb.selectbox("Stem", ("cifar", "imagenet"), key="sel_stem", bind="query-params",
                        help="cifar: one 3x3 conv. imagenet: 7x7 stride-2 conv + max-pool (4x smaller maps).")
    size = sb.number_input("Input size (pixels)", 1, 1024, key="sel_size", bind="query-params")
    in_ch = sb.number_input("Input channels", 1, 16, key="sel_in_ch", bind="query-params")
    classes = sb.number_input("Classes", 1, 10000, key="sel_classes", bind="query-params")
    norm = sb.checkbox("Batch norm", key="sel_norm", bind="query-params")
    shortcut = sb.radio("Shortcut option", models.SHORTCUTS, key="sel_shortcut", bind="query-params",
                        horizontal=True,
                        help="A: zero-pad identity (no parameters). B: 1x1 projection only where the shape "
                             "changes. C: projection on every block.")
    layers = parse_layers(layers_txt)
    widths = tuple(int(base) * 2**i for i in range(len(layers)))
    return models.ResNetConfig(block=block, layers=layers, widths=widths, stem=stem, stem_width=int(base),
                               in_channels=int(in_ch), input_size=int(size), num_classes=int(classes),
                               norm=norm, shortcut=shortcut)


def parse_layers(typed: str) -> tuple[int, ...]:
    """The sidebar's "Blocks per stage" text as whole numbers, checked before anything is computed from it: at most
    ``limits.LAYERS_CHARS`` characters, ``CONFIG_STAGES`` numbers of at most four digits (``LAYERS_BLOCKS``)."""
    if len(typed) > limits.LAYERS_CHARS:
        raise models.ConfigError(f"Blocks per stage takes at most {limits.LAYERS_CHARS} characters: one number per "
                                 "stage, like 2, 2, 2.")
    tokens = [t.strip() for t in typed.split(",") if t.strip()]
    if not all(re.fullmatch(r"[0-9]+", t) for t in tokens):
        raise models.ConfigError("Blocks per stage must be whole numbers separated by commas, like 2, 2, 2.")
    if len(tokens) > limits.CONFIG_STAGES:
        raise models.ConfigError(f"At most {limits.CONFIG_STAGES} stages (the paper's networks have 3 or 4); "
                                 f"this has {len(tokens)}.")
    if any(int(t) > limits.LAYERS_BLOCKS for t in tokens):  # short numbers: the text is short
        raise models.ConfigError(f"At most {limits.LAYERS_BLOCKS:,} blocks in one stage.")
    return tuple(int(t) for t in tokens)


def _config_ui(family: Family) -> models.ResNetConfig:
    if family is Family.CIFAR:
        return models.get_config(st.sidebar.selectbox("Preset", models.CIFAR_PRESETS, key="sel_cifar",
                                                      bind="query-params"))
    if family is Family.IMAGENET:
        name = st.sidebar.selectbox("Preset", models.IMAGENET_PRESETS, key="sel_imagenet", bind="query-params")
        return models.get_config(name, stride_in_1x1=_stride_in_1x1_ui(name))
    return _custom_config_ui()


STRIDE_ELSEWHERE = {  # bottleneck presets that are not He et al.'s ResNets: the toggle names that paper
    "resnext50_32x4d": "ResNeXt (Xie et al. 2017, §4) strides the 3x3 of each stage's first block, as torchvision does.",
    "wide_resnet50_2": "torchvision's Wide ResNet-50-2 is its ResNet-50 with twice the bottleneck channels: the stride "
                       "is on the 3x3.",
}


def _stride_in_1x1_ui(name: str) -> bool:
    """He et al.'s stride placement for their bottleneck ResNets (a toggle); ResNeXt and Wide ResNet keep theirs."""
    if models.PRESETS[name].block != "bottleneck":
        return False
    if name in STRIDE_ELSEWHERE:
        st.sidebar.caption(STRIDE_ELSEWHERE[name])
        return False
    return st.sidebar.toggle(
        "Stride on the first 1x1 (He et al. 2016)", key="sel_stride_in_1x1", bind="query-params",
        help="He et al. 2016 put a downsampling bottleneck's stride on its first 1x1; torchvision (v1.5) on the 3x3.")


def model_sidebar_ui() -> Selection:
    """The app-wide model picker (rendered by app.py on every page); returns the session's Selection."""
    init_state()
    sb = st.sidebar
    sb.header("Model")
    family = Family(sb.radio("Family", [f.value for f in Family], key="sel_family", bind="query-params"))
    try:
        cfg = models.with_shortcuts(_config_ui(family))
        models.check_config(cfg)
        budget.check_model(cfg, what="This model", nets=2)  # one image through it and its plain twin must fit
    except models.ConfigError as e:  # BudgetError too: the numbers, before anything is built
        sb.error(f"{e} Keeping the previous model.")
        cfg = st.session_state["selection"].cfg
    plain = sb.toggle("Plain twin (shortcuts removed)", key="sel_plain", bind="query-params")
    device = sb.selectbox("Device", ["auto", *models.available_devices()], key="sel_device", bind="query-params",
                          help="auto picks cuda, then mps, then cpu.")
    sel = Selection(cfg, plain, str(models.pick_device(device)))
    sb.caption(f"**{sel.chosen.label}** · {cfg.depth} weighted layers · on `{sel.device}`")
    st.session_state["selection"] = sel
    return sel


# --- results computed for the class: runs of the one engine (resviz.runs), shown here -----------------------
def shared_result(key: tuple, compute: Callable, label: str, cost: float = 1.0) -> Any:
    """A result computed once for the whole class, the page waiting for it: a run of ``resviz.runs`` (kept in its
    LRU by count and memory; numpy/dicts, never live tensors), computed in this script's thread unless the class
    already has it queued or running.

    ``compute(progress)`` gets a callback taking a fraction in [0, 1]; the page shows it as a progress bar.
    ``cost`` scales the queue's estimates against other runs of the same kind (the key's first element).
    """
    bar = None

    def show(fraction: float) -> None:
        nonlocal bar
        bar = bar or st.progress(0.0, text=label)
        bar.progress(min(1.0, max(0.0, fraction)), text=f"{label} {fraction:.0%}")

    try:
        return runs.registry().call(key, compute, show, cost)
    finally:
        if bar is not None:
            bar.empty()


def background_result(key: tuple, compute: Callable, label: str, cost: float = 1.0) -> Any:
    """``shared_result`` that never keeps the page waiting: None until the result is ready.

    The first student to ask starts the run of ``key`` (``runs.attach_compute``: once for the class, in the one
    queue, with the runs' thread budget; later askers join it); meanwhile this spot shows its place in the queue,
    then its progress, and the page draws its first screen and stops (``if result is None: ui.stop_page()``), so nothing
    computed for earlier settings stays on screen. Showing it keeps the run wanted; a page that stops asking (other
    settings, a closed tab) lets it go after the lease, and it stops at its next progress call. The progress reruns
    the page when the result is ready; an error is raised on that rerun, once. Under AppTest it simply waits.
    """
    if waits_for_results():
        return shared_result(key, compute, label, cost)
    snap = _watch(key, compute, cost).snapshot()
    if snap.status.state is not runs.State.FINISHED and snap.status.state.done:  # failed, or let go: ask afresh
        _watches().pop(key, None)
        if snap.status.state is runs.State.FAILED:  # the error is ours to show, once; the next ask tries again
            raise runs.raisable(snap.exception)
        snap = _watch(key, compute, cost).snapshot()
    if snap.status.state is runs.State.FINISHED:
        _watches().pop(key, None)  # the result lives in the engine's LRU, not in this session
        return snap.result
    st.session_state.setdefault(PROGRESS_DRAWN, set()).add(key)
    _progress_ui(key, label)
    return None


PROGRESS_DRAWN = "_progress_drawn"  # the background results whose progress this session's latest full run drew


class PageStopped(BaseException):
    """Raised by ``stop_page``; ``run_page`` catches it (a BaseException, like Streamlit's own
    StopException, so that no ``except Exception`` of a page swallows it)."""


def stop_page() -> None:
    """End this page's run here, its first screen drawn (a result still computing, no pair picked yet).

    Not ``st.stop()``: that asks the script runner to stop, which throws away a rerun the browser asked for while the
    page ran. A button pressed in a fragment during a page's run (the sidebar's "Rejoin the class", a vote) waits
    for the run to end, and ``st.stop()`` dropped it: the student's click did nothing. ``st.stop()`` also skipped
    Streamlit's end-of-run forgetting of the fragments the run did not draw, so an earlier run's timed progress
    fragment could still draw into a container the new run had left empty, and the browser blanked the page ("Bad
    delta path"). Here the run ends normally (``run_page``), app.py carries on (``ui_classroom.run_ended``), and
    Streamlit runs the waiting click next."""
    raise PageStopped


def run_page(page) -> None:
    """``page.run()`` (app.py), ended early and quietly by ``stop_page``."""
    try:
        page.run()
    except PageStopped:
        pass


def run_started() -> None:
    """At the top of every full run (app.py): no progress drawn yet. A timed progress fragment of an earlier run
    that the browser still reruns then draws nothing: its container may be gone from the new run's page (a follower
    moved to other settings and the new run stopped before that container got a child), and a fragment drawing into
    it left the browser's page blank ("Bad delta path")."""
    st.session_state[PROGRESS_DRAWN] = set()


def waits_for_results() -> bool:
    """Whether pages wait for their results instead of drawing the first screen first: under AppTest, whose runs
    read a page once (a server's page reruns itself when a background result is ready)."""
    from streamlit import config  # its get_option, which AppTest patches (st.get_option is bound at import)

    return bool(config.get_option("global.appTest"))


def _watches() -> dict:
    """This session's watches on background results, by key: holding them is what keeps their runs wanted."""
    return st.session_state.setdefault("_result_watches", {})


def _watch(key: tuple, compute: Callable, cost: float):
    """This session's watch on the run of ``key`` (started, or joined); watches left untouched past the lease
    (settings the student has left) are dropped."""
    reg, watches = runs.registry(), _watches()
    for old, w in list(watches.items()):
        if reg.clock() - w.seen > reg.lease_s:
            del watches[old]
    if key not in watches:
        watches[key] = reg.attach_compute(key, compute, cost)
    return watches[key]


def progress_words(label: str, status) -> str:
    """The progress line of a run: its place in the one queue and when it should start, then how far it is."""
    if status.state is runs.State.QUEUED:
        start = f", starts in about {status.wait_s:.0f} s" if status.wait_s is not None else ""
        return f"{label} waiting: {ordinal(status.position)} in line{start}"
    left = f", about {status.remaining_s:.0f} s left" if status.remaining_s is not None else ""
    return f"{label} {status.progress or 0.0:.0%}{left}"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def timed_fragment(run_every: float) -> Callable[[Callable], Callable]:
    """``st.fragment(run_every=...)``, each call drawn inside a container of the calling run's own.

    Streamlit 1.67 drops the unsent messages of a fragment when that fragment's rerun starts. A full run that drew a
    timed fragment, followed at once by the fragment's waiting timed rerun (a loaded server sends both in one batch),
    reached the browser as the full run without the fragment's container, then the fragment's reruns in their own
    order: the sidebar's vote panel (13th child) came before the follow panel (12th) into a sidebar of 11, and the
    browser blanked the page ("Bad delta path index 12 (should be between [0, 11])"). The container made here is the
    full run's own message, never dropped, so the fragment always redraws inside a block that exists."""
    def timed(func: Callable) -> Callable:
        fragment = st.fragment(run_every=run_every)(func)

        @functools.wraps(func)
        def in_own_container(*args, **kwargs):
            with st.container():
                return fragment(*args, **kwargs)
        return in_own_container
    return timed


@timed_fragment(run_every=0.5)
def _progress_ui(key: tuple, label: str) -> None:
    """The progress of a background result (polling it keeps its run wanted); reruns the page once it is done."""
    if key not in st.session_state.get(PROGRESS_DRAWN, {key}):
        return  # an earlier run's progress: the latest full run did not draw it
    watch = _watches().get(key)
    status = None if watch is None else watch.snapshot().status
    if status is None or status.state.done:
        st.rerun()
    st.progress(status.progress or 0.0, text=progress_words(label, status))


def asked_result(button: str, widget_key: str, key: tuple, compute: Callable, label: str,
                 primary: bool = False, cost: float = 1.0) -> Any:
    """``background_result(key, compute, label)`` once the student has pressed ``button`` for this very ``key``,
    else None: a result computed for other settings (another picture, class or step count) is never shown for
    these. A failed computation is asked again only by another press."""
    asked = st.session_state.setdefault("_asked_results", set())
    if st.button(button, key=widget_key, type="primary" if primary else "secondary"):
        asked.add(key)
    if key not in asked:
        return None
    try:
        return background_result(key, compute, label, cost)
    except Exception:
        asked.discard(key)  # the error shows once; the button starts it again
        raise


def shared_tensors(key: Hashable, make: Callable[[], Any]) -> Any:
    """Large read-only tensors (a dataset) made once for the whole class, at most 4 kept. Never mutate them.

    ``key`` is a small hashable (a tuple of plain values) that says what ``make()`` returns.
    """
    return _shared_tensors(key, make)


@st.cache_resource(max_entries=4, show_spinner="Loading the data…")
def _shared_tensors(key: Hashable, _make: Callable[[], Any]) -> Any:
    return _make()


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def shared_model(key: Hashable, _make: Callable[[], Any]) -> Any:
    """A read-only model made once by ``_make()`` for the whole class (``key``: small hashables saying which).

    Exceptions are not kept: a failed load is tried again on the next rerun. Never mutate what it returns.
    """
    return _make()


PROJECTOR_TEXT_PX = 20  # the page's text on a projector: Streamlit's 16 px x1.25 (charts get x1.4: plots.projector)


def chart(fig):
    """``fig`` as this student's screen shows it: text and lines scaled up when the sidebar's Projector toggle is on."""
    from resviz.plots.projector import for_projector

    return for_projector(fig) if st.session_state.get("projector") else fig


FIGURE_SHELVES = {"pages": 256, "live": 64}  # figures kept per shelf: a live race's frames never push out pages'


def figure(key: Hashable, make: Callable[[], Any], shelf: str = "pages") -> Any:
    """The figure (or list of figures) ``make()`` builds, as ``chart`` shows it, built once for the whole class.

    Building a plotly figure costs more than most results, and every rerun drew them again. ``key`` must say
    everything the figure shows (the key of the result it draws, and the settings it is drawn with); kept in a
    bounded LRU per ``shelf`` ("live": a live race's frames, which come and go fast, in a shelf of their own so that
    they never push the pages' figures out). Never mutate what it returns (``st.plotly_chart`` copies it).
    """
    _, build = _figure_store(shelf)
    return build((key, bool(st.session_state.get("projector"))), lambda: _as_shown(make()))


def _as_shown(made):
    return [chart(f) for f in made] if isinstance(made, (list, tuple)) else chart(made)


@st.cache_resource
def _figure_store(shelf: str) -> tuple[cachetools.LRUCache, Callable]:
    """The shelf's figures, and its builder: one build per key, the class's other sessions waiting for it (thirty
    followers rerun at once on the teacher's change: each built the same figure, a tenth of the server's time)."""
    store = cachetools.LRUCache(maxsize=FIGURE_SHELVES[shelf])
    build = cachetools.cached(store, key=lambda key, make: key, condition=threading.Condition())(
        lambda key, make: make())
    return store, build


def warm_up(pages: Iterable[str]) -> None:
    """Once per server, in a background thread: open each page (URL path) with its defaults, as a first student.

    The shared results, models and figures of every page's first screen, and torch's lazy imports, are then ready
    when the class arrives instead of being computed while thirty students wait. Called by app.py on every run;
    starts at the first session's first run (a teacher opening the app before class warms it). Off under AppTest
    and with RESVIZ_WARM_UP=0.
    """
    from streamlit import config  # its get_option, which AppTest patches (st.get_option is bound at import)

    global _warm_thread
    if os.environ.get("RESVIZ_WARM_UP", "1") == "0" or config.get_option("global.appTest"):
        return
    with _warm_lock:
        if _warm_thread is not None:
            return
        address = config.get_option("server.address") or "127.0.0.1"
        address = "127.0.0.1" if address in ("0.0.0.0", "::") else address
        base = config.get_option("server.baseUrlPath").strip("/")
        url = f"http://{address}:{config.get_option('server.port')}/{base}"
        _warm_thread = threading.Thread(target=_visit, args=(url, list(pages)), name="resviz-warm-up", daemon=True)
        _warm_thread.start()


_warm_lock, _warm_thread = threading.Lock(), None


def _visit(url: str, pages: list[str]) -> None:
    """Open ``pages`` one after the other in one websocket session, as a browser tab would; log what happened."""
    from resviz.tools.session import Session

    try:
        with Session(url, timeout=600) as session:
            for page in pages * 2:  # again: results computed in the background are drawn, their figures built
                r = session.run(page)
                log.info("warm-up: /%s %s in %.1f s", page, r.status, r.seconds)
    except Exception:  # noqa: BLE001 - warming is an optimisation: the class is served without it
        log.warning("warm-up stopped", exc_info=True)


# --- the server's door: what a browser sends, checked before any session's script sees it ---
def guard_server() -> None:
    """Once per server process (app.py calls it on every run; a no-op under AppTest, which has no server): every
    widget value and link a browser sends passes ``clean_widget_states`` and ``clean_query_string`` before its session
    sees it, and Streamlit's uploaded-file manager holds at most ``limits.SESSION_UPLOAD_MB`` for one session
    (``UploadQuota``). The first message of the server's first session arrives before the door is in place."""
    from streamlit.runtime import Runtime

    global _guarded
    with _guard_lock:
        if _guarded or not Runtime.exists():
            return
        runtime = Runtime.instance()
        quota = UploadQuota(runtime.uploaded_file_mgr)
        handle_backmsg = runtime.handle_backmsg  # the one entry of every browser message (the websocket's)

        def checked_backmsg(session_id: str, msg, **kw) -> None:
            if msg.WhichOneof("type") == "rerun_script":
                states = msg.rerun_script.widget_states
                if dropped := clean_widget_states(states):
                    log.warning("session %s sent %d widget values no widget takes; dropped", session_id, dropped)
                msg.rerun_script.query_string = clean_query_string(msg.rerun_script.query_string)
                if not msg.rerun_script.fragment_id:  # a whole page's rerun names every upload its widgets hold
                    quota.named(session_id, uploads_named(states))
            handle_backmsg(session_id, msg, **kw)

        runtime.handle_backmsg = checked_backmsg
        _fragment_reruns_wait_for_the_last_run()
        _guarded = True


_guard_lock, _guarded = threading.Lock(), False
FRAGMENT_WAIT_S, FRAGMENT_WAIT_TRIES = 0.01, 500  # how often, and how long at most, a fragment's rerun waits


def _fragment_reruns_wait_for_the_last_run() -> None:
    """A fragment's rerun that arrives after the session's last run ended, but before the server has sent that run's
    messages, waits until they are sent. Streamlit 1.67 starts a new script runner for it at once and drops every
    message the finished runner had not sent: on a loaded server the page's end and its timers never reached the
    browser, which then never asked for anything again (a follower left on the teacher's old view)."""
    from streamlit.runtime.app_session import AppSession

    if getattr(AppSession.request_rerun, "waits_for_the_last_run", False):
        return
    request_rerun = AppSession.request_rerun

    def waiting_request_rerun(session, client_state=None, tries: int = 0) -> None:
        if client_state is not None and client_state.fragment_id and tries < FRAGMENT_WAIT_TRIES and \
                last_run_unsent(session):
            session._event_loop.call_later(FRAGMENT_WAIT_S, waiting_request_rerun, session, client_state, tries + 1)
            return
        request_rerun(session, client_state)

    waiting_request_rerun.waits_for_the_last_run = True
    AppSession.request_rerun = waiting_request_rerun


def last_run_unsent(session) -> bool:
    """Whether ``session``'s script runner has ended its run but the server has not yet handled its last messages
    (their end is the runner's SHUTDOWN, which releases it). Streamlit 1.67's internals: pinned in requirements.txt."""
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

    runner = session._scriptrunner
    return runner is not None and runner._requests._state is ScriptRequestType.STOP


def clean_widget_states(states) -> int:
    """Make the widget values of one browser message (a ``WidgetStates`` proto) safe for every widget, in place:
    drop a non-finite number (Streamlit turns a number input's NaN into an int before the page runs, and the
    session shows an exception box on every rerun after), cut every text to ``limits.WIDGET_TEXT_CHARS``. A dropped
    widget keeps its previous value. Returns how many values were dropped."""
    cap = limits.WIDGET_TEXT_CHARS
    kept = []
    for w in states.widgets:
        kind = w.WhichOneof("value")
        if (kind == "double_value" and not math.isfinite(w.double_value)) or (
                kind == "double_array_value" and not all(math.isfinite(v) for v in w.double_array_value.data)):
            continue
        if kind == "string_value" and len(w.string_value) > cap:
            w.string_value = w.string_value[:cap]
        elif kind == "string_array_value":
            w.string_array_value.data[:] = [v[:cap] for v in w.string_array_value.data]
        kept.append(w)
    dropped = len(states.widgets) - len(kept)
    if dropped:
        del states.widgets[:]
        states.widgets.extend(kept)
    return dropped


def clean_query_string(query: str) -> str:
    """A page link's settings (``?key=value``, read by widgets bound to the URL) without the values no widget takes:
    a non-finite number (``?tr_seed=inf``: Streamlit's int() of it raised on the page) is left out, every value cut
    to ``limits.WIDGET_TEXT_CHARS``. An unchanged query is returned as it came."""
    from urllib.parse import parse_qsl, urlencode

    pairs = parse_qsl(query, keep_blank_values=True)
    kept = [(k[:limits.WIDGET_TEXT_CHARS], v[:limits.WIDGET_TEXT_CHARS]) for k, v in pairs if _finite_or_text(v)]
    return query if kept == pairs else urlencode(kept)


def _finite_or_text(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return True  # not a number: a text, an option's label


def uploads_named(states) -> set[str]:
    """The uploaded files' ids that the file uploaders of one browser message hold."""
    return {f.file_id for w in states.widgets if w.WhichOneof("value") == "file_uploader_state_value"
            for f in w.file_uploader_state_value.uploaded_file_info}


class UploadQuota:
    """Bounds what each session holds in Streamlit's uploaded-file manager (wrapped once, in place: its upload route
    calls the same object). At most ``limits.SESSION_UPLOAD_MB`` (env ``RESVIZ_SESSION_UPLOAD_MB``) and
    ``SESSION_UPLOAD_FILES`` files per session; a file that the session's latest message does not name is freed
    once it is ``UPLOAD_GRACE_S`` old (a browser names a new upload in the rerun that follows it)."""

    def __init__(self, manager, clock: Callable[[], float] = time.monotonic):
        from resviz import runs

        self.cap = limits.mb(runs.env_int(os.environ, "RESVIZ_SESSION_UPLOAD_MB", limits.SESSION_UPLOAD_MB))
        self.clock, self.lock = clock, threading.Lock()
        self.held: dict[str, dict[str, tuple[int, float]]] = {}  # session -> file id -> (bytes, arrived at)
        self.last_named: dict[str, set[str]] = {}  # session -> the uploads its latest message names
        self._add, self._remove, self._remove_session = (manager.add_file, manager.remove_file,
                                                          manager.remove_session_files)
        manager.add_file, manager.remove_file = self.add_file, self.remove_file
        manager.remove_session_files = self.remove_session_files

    def add_file(self, session_id: str, file) -> None:
        self._free_unnamed(session_id)
        with self.lock:
            files = self.held.setdefault(session_id, {})
            others = {f: n for f, (n, _) in files.items() if f != file.file_id}  # the same id again replaces it
            held = sum(others.values())
            if held + len(file.data) > self.cap or len(others) + 1 > limits.SESSION_UPLOAD_FILES:
                from starlette.exceptions import HTTPException  # the upload route answers with it

                log.warning("session %s: an upload of %d bytes refused (holds %d bytes in %d files)", session_id,
                            len(file.data), held, len(others))
                raise HTTPException(413, f"This session already holds the uploads it may ({self.cap // 2**20} MB, "
                                         f"{limits.SESSION_UPLOAD_FILES} files).")
            files[file.file_id] = (len(file.data), self.clock())
        self._add(session_id, file)

    def named(self, session_id: str, file_ids: set[str]) -> None:
        """The uploads the session's latest message names; its others are freed once past the grace."""
        with self.lock:
            self.last_named[session_id] = file_ids
        self._free_unnamed(session_id)

    def _free_unnamed(self, session_id: str) -> None:
        with self.lock:
            files, named = self.held.get(session_id, {}), self.last_named.get(session_id, set())
            now = self.clock()
            stale = [f for f, (_, at) in files.items() if f not in named and now - at > limits.UPLOAD_GRACE_S]
            for f in stale:
                del files[f]
        for f in stale:
            self._remove(session_id, f)

    def remove_file(self, session_id: str, file_id: str) -> None:
        with self.lock:
            self.held.get(session_id, {}).pop(file_id, None)
        self._remove(session_id, file_id)

    def remove_session_files(self, session_id: str) -> None:
        with self.lock:
            self.held.pop(session_id, None)
            self.last_named.pop(session_id, None)
        self._remove_session(session_id)

    def bytes_held(self, session_id: str) -> int:
        with self.lock:
            return sum(n for n, _ in self.held.get(session_id, {}).values())


def session_owned(name: str, key: Hashable, make: Callable[[], Any]) -> Any:
    """An object this student owns (uploaded or trained weights), made again only when ``key`` changes."""
    held = st.session_state.get(f"_owned_{name}")
    if held is None or held[0] != key:
        held = st.session_state[f"_owned_{name}"] = (key, make())
    return held[1]


def held(owned: bool, name: str, key: Hashable, make: Callable[[], Any]) -> Any:
    """``make()`` kept as the student's own (``session_owned``) when ``owned``, else shared by the class
    (``shared_model``): what comes from a student's upload or training never reaches another student."""
    return session_owned(name, key, make) if owned else shared_model((name, key), make)


@contextlib.contextmanager
def friendly_errors(what: str):
    """Show a clear message instead of a traceback; log the details for the teacher."""
    try:
        yield
    except ValueError as e:
        if type(e).__module__.startswith("resviz"):  # our own errors (config, data, image, weights) speak plain words
            st.error(f"{what}: {_plain(e)}")
        else:
            log.exception("failed while %s", what)
            st.error(f"{what} failed: {type(e).__name__}: {_plain(_first_line(e))}")
    except Exception as e:  # noqa: BLE001 - the page must survive anything a student does
        if budget.is_out_of_memory(e):  # CUDA's OutOfMemoryError, MemoryError, the CPU allocator's RuntimeError
            log.exception("out of memory while %s", what)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            st.error(f"{what}: the device ran out of memory. Try a smaller batch, a smaller input, or the CPU.")
            return
        log.exception("failed while %s", what)
        st.error(f"{what} failed: {type(e).__name__}: {_plain(_first_line(e))}")


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else ""


MESSAGE_CHARS = 400  # an error message shown in full up to here; a student's 10,000-character name does not fill it


def _plain(message: object) -> str:
    """An error message as plain text in markdown: it can carry what a student named (zip entries, state-dict keys,
    file names), and nothing a student names is rendered as markup."""
    return text.md(message, limit=MESSAGE_CHARS)


# --- the trained pair (lesion study, paths, loss landscape) ---
def pair_picker_ui(prefix: str):
    """The trained pair a page studies, as a ``resviz.pair.LoadedPair`` (or None until one is trained).

    Widgets only: the training page's pair when this student has one (a toggle), else a built-in pair chosen
    by preset and length, trained for the class on a button press; ``resviz.pair`` and ``resviz.builtin_pair``
    decide the rest.
    """
    with friendly_errors("Getting the trained pair"):
        return _pair_picker_ui(prefix)
    return None


def _pair_picker_ui(prefix: str):
    from resviz import builtin_pair, pair
    from resviz.lessons.training import replay

    device = current_selection().device
    trained = st.session_state.get("trained")
    source = pair.PairSource.SESSION
    if not (isinstance(trained, pair.TrainedPair) and st.toggle(
            "Use the pair from the training page", True, key=f"{prefix}_pair_session", bind="query-params",
            help="Off: a ResNet and its plain twin trained here on the built-in images, kept for the whole class.")):
        source = pair.PairSource.BUILTIN
        replays = replay.page_replays(device)  # the Training race's default races, replayed with their weights
        choice = st.selectbox("Pair", [*builtin_pair.shipped_presets(), *(REPLAYED + r for r in replays), TRAIN_HERE],
                              format_func=lambda c: _pair_choice_words(c, replays), key=f"{prefix}_pair_choice",
                              bind="query-params",
                              help="Shipped: trained once with resviz, the same for every student, ready at once.")
        if choice.startswith(REPLAYED):  # read by the uploads' safe loader; None if it cannot be read back
            trained = replay.replayed_pair(replays[choice[len(REPLAYED):]])
            if trained is None:
                st.error("The replayed race's weights could not be read back: pick another pair.")
                return None
            return _loaded_pair_ui(prefix, trained, source, device)
        if choice != TRAIN_HERE:
            trained = _shipped_pair(choice)  # a changed or unreadable file: a WeightsError, said by friendly_errors
            return _loaded_pair_ui(prefix, trained, source, device)
        c1, c2 = st.columns(2)
        recipe = builtin_pair.recipe(
            c1.selectbox("Model to train", builtin_pair.PRESETS, key=f"{prefix}_pair_model", bind="query-params",
                         help="The ResNet and its plain twin train together: same initial weights, same batches."),
            c2.select_slider("Training steps", builtin_pair.STEPS, value=builtin_pair.BuiltinRecipe.steps,
                             key=f"{prefix}_pair_steps", bind="query-params", help=(
                                 f"SGD at learning rate {builtin_pair.BuiltinRecipe.lr:g}, batch "
                                 f"{builtin_pair.BuiltinRecipe.batch_size}, on the built-in images: longer than the "
                                 "race's recipe, which stops too early for a net worth studying.")))
        trained = builtin_pair.load(recipe) or _builtin_pair_ui(prefix, recipe, device)
        if trained is None:
            return None
    return _loaded_pair_ui(prefix, trained, source, device)


def _loaded_pair_ui(prefix: str, trained, source, device: str):
    from resviz import pair

    loaded = held(source is pair.PairSource.SESSION, "pair", (trained.key, device),
                  lambda: pair.load_pair(trained, source, device))
    _pair_caption_ui(prefix, loaded)
    return loaded


TRAIN_HERE = "train"  # the pair picker's last choice: a built-in pair of a chosen model and length, trained here
REPLAYED = "race-"  # + a preset: the pair the Training race's default race of that preset trained (replayed)


@st.cache_resource(max_entries=4, show_spinner="Loading the shipped pair…")
def _shipped_pair(preset: str):
    """A pair shipped in assets/pairs (hash-checked, read by the uploads' safe loader), shared read-only."""
    from resviz import builtin_pair

    return builtin_pair.shipped(preset)


def _pair_choice_words(choice: str, replays: dict | None = None) -> str:
    from resviz import builtin_pair

    if choice == TRAIN_HERE:
        return "Train a pair here (pick the model and steps)"
    if choice.startswith(REPLAYED) and (kept := (replays or {}).get(choice[len(REPLAYED):])) is not None:
        return (f"The Training race's {choice[len(REPLAYED):].replace('resnet', 'ResNet-')} pair, "
                f"{kept.history.step} steps (its replayed default race)")  # no date: links name the choice
    i = builtin_pair.shipped_info(choice)
    return (f"Shipped {i.preset} pair, {i.steps} steps: ResNet {i.resnet_accuracy:.0%}, plain twin "
            f"{i.plain_accuracy:.0%} of {i.images:,} fresh images")


def _builtin_pair_ui(prefix: str, recipe, device: str):
    """The built-in pair of ``recipe``, trained once for the whole class in the background: the first press starts
    it, every later press (and every page showing this recipe meanwhile) watches the same training. None until it
    is ready; then it is on disk, where ``builtin_pair.load`` finds it for everyone."""
    from resviz import builtin_pair

    ready = [f"{r.cfg.label}, {r.steps} steps" for r in builtin_pair.ready(
        builtin_pair.recipe(m, n) for m in builtin_pair.PRESETS for n in builtin_pair.STEPS)]
    st.info("This page needs a trained ResNet and its trained plain twin. Train them on the Training race "
            "page, or train a pair here on the built-in images (kept on this machine for everyone)."
            + (f" Already trained here: {'; '.join(ready)}." if ready else ""))
    key = ("builtin pair", recipe.key)  # one training per recipe, on the device of whoever asked first
    label = f"Training {recipe.cfg.label} and its plain twin for the class ({recipe.steps} steps):"

    def train(progress):
        return builtin_pair.train(recipe, device, on_step=lambda r: progress(r["step"] / r["steps"]))

    cost = recipe.steps * recipe.cfg.depth  # the queue's estimates scale with steps x layers
    if _in_flight(key):  # someone in the class started it: watch it too, and see the pair when it is ready
        return background_result(key, train, label, cost)
    trained = asked_result("Train this pair now", f"{prefix}_pair_train", key, train, label, primary=True, cost=cost)
    if trained is None and not _in_flight(key):
        _class_pair_watch_ui(key, recipe)
    return trained


@timed_fragment(run_every=2.0)
def _class_pair_watch_ui(key: tuple, recipe) -> None:
    """While this student has not pressed: rerun the page once somebody starts (or has trained) this pair."""
    from resviz import builtin_pair

    if _in_flight(key) or builtin_pair.ready([recipe]):
        st.rerun()


def _in_flight(key: tuple) -> bool:
    """Whether the class's run of ``key`` is queued or running for somebody right now."""
    status = runs.registry().peek(key)
    return status is not None and not status.state.done


def _pair_caption_ui(prefix: str, p) -> None:
    """What the pair is and how well it does; a warning, and the way out, when a network only guesses."""
    from resviz import pair

    st.caption(f"Studying **{text.md(p.label, limit=MESSAGE_CHARS)}**. On {p.eval_images} fresh built-in images the ResNet gets "
               f"{p.resnet_accuracy:.0%} right and the plain twin {p.plain_accuracy:.0%} (guessing: {p.chance:.0%}).")
    guessing = [name for name, flag in (("ResNet", p.resnet_at_chance), ("plain twin", p.plain_at_chance)) if flag]
    if not guessing:
        return
    st.warning(f"The {' and the '.join(guessing)} of this pair {'is' if len(guessing) == 1 else 'are'} no better "
               "than guessing: what this page shows is about a network that has not learned the images.")
    if p.source is pair.PairSource.SESSION:
        st.button("Use the built-in trained pair instead", key=f"{prefix}_pair_builtin",
                  on_click=lambda: st.session_state.update({f"{prefix}_pair_session": False}))
    else:
        st.caption("Pick more training steps above for a pair that has learned more.")


def _run_pages_in_the_app_frame() -> None:
    """Until some session of a fresh server has run app.py's ``st.navigation``, Streamlit treats ``pages/`` as an
    old-style pages folder (``PagesManager.uses_pages_directory``): the first session to open a lesson's link ran
    that page bare, without app.py (no model sidebar, no class, no door on its messages). Every page imports this
    module, so its first import in a server turns that off and starts the run again, through app.py."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        if get_script_run_ctx(suppress_warning=True) is not None:
            st.rerun()


_run_pages_in_the_app_frame()

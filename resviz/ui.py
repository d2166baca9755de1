"""The one resviz module that imports streamlit: cached loaders, sidebar selection, session state.

Shared objects (``load_model``) are cached once per server and read by every student:
never mutate them. Anything a student changes lives in ``st.session_state``.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

import streamlit as st
import torch

from resviz import models

log = logging.getLogger("resviz")

DEFAULT_PRESET = "resnet20"  # the paper's CIFAR net: small enough to train live on a laptop CPU
FAMILIES = ("CIFAR (paper §4.2)", "ImageNet", "Custom")


SIDEBAR_DEFAULTS = {  # widget key -> default; widgets take their value from here, never from value=
    "sel_family": FAMILIES[0], "sel_cifar": DEFAULT_PRESET, "sel_imagenet": "resnet50", "sel_block": "basic",
    "sel_layers": "2, 2, 2", "sel_width": 16, "sel_stem": "cifar", "sel_size": 32, "sel_in_ch": 3,
    "sel_classes": 10, "sel_norm": True, "sel_shortcut": "B", "sel_plain": False, "sel_device": "auto",
}


def init_state() -> None:
    """Set each per-session default once; safe to call from every page."""
    ss = st.session_state
    for key, value in SIDEBAR_DEFAULTS.items():
        ss.setdefault(key, value)
    ss.setdefault("selection", (models.get_config(DEFAULT_PRESET), "cpu"))
    ss.setdefault("trained", None)  # {"cfg": ResNetConfig, "state_dict": ..., "label": str} from the training page


@st.cache_resource(max_entries=8, show_spinner="Building the model…")
def load_model(cfg: models.ResNetConfig, device: str = "cpu", seed: int = 0) -> torch.nn.Module:
    """A shared, read-only model in eval mode (random weights from ``seed``). Copy before changing it."""
    model = models.build_model(cfg, seed=seed).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # shared: nobody may train it in place
    return model


def current_selection() -> tuple[models.ResNetConfig, str]:
    """The app-wide (config, device) chosen in the sidebar for this session."""
    init_state()
    return st.session_state["selection"]


def _custom_config_ui() -> models.ResNetConfig:
    sb = st.sidebar
    block = sb.selectbox("Block", models.BLOCKS, key="sel_block",
                         help="basic: two 3x3 convs. bottleneck: 1x1 reduce, 3x3, 1x1 expand 4x.")
    layers_txt = sb.text_input("Blocks per stage", key="sel_layers",
                               help="Comma-separated, one number per stage.")
    base = sb.number_input("Base width", 1, 512, key="sel_width",
                           help="Channels of the first stage; each later stage doubles them.")
    stem = sb.selectbox("Stem", ("cifar", "imagenet"), key="sel_stem",
                        help="cifar: one 3x3 conv. imagenet: 7x7 stride-2 conv + max-pool (4x smaller maps).")
    size = sb.number_input("Input size (pixels)", 1, 1024, key="sel_size")
    in_ch = sb.number_input("Input channels", 1, 16, key="sel_in_ch")
    classes = sb.number_input("Classes", 1, 10000, key="sel_classes")
    norm = sb.checkbox("Batch norm", key="sel_norm")
    shortcut = sb.radio("Shortcut option", models.SHORTCUTS, key="sel_shortcut", horizontal=True,
                        help="A: zero-pad identity (no parameters). B: 1x1 projection only where the shape "
                             "changes. C: projection on every block.")
    try:
        layers = tuple(int(t) for t in layers_txt.replace(" ", "").split(",") if t)
    except ValueError:
        raise models.ConfigError("Blocks per stage must be whole numbers separated by commas, like 2, 2, 2.")
    widths = tuple(int(base) * 2**i for i in range(len(layers)))
    return models.ResNetConfig(block=block, layers=layers, widths=widths, stem=stem, stem_width=int(base),
                               in_channels=int(in_ch), input_size=int(size), num_classes=int(classes),
                               norm=norm, shortcut=shortcut)


def model_sidebar_ui() -> tuple[models.ResNetConfig, str]:
    """The app-wide model picker (rendered by app.py on every page); returns (config, device)."""
    init_state()
    sb = st.sidebar
    sb.header("Model")
    family = sb.radio("Family", FAMILIES, key="sel_family")
    try:
        if family == FAMILIES[0]:
            name = sb.selectbox("Preset", models.CIFAR_PRESETS, key="sel_cifar")
            cfg = models.get_config(name)
        elif family == FAMILIES[1]:
            name = sb.selectbox("Preset", models.IMAGENET_PRESETS, key="sel_imagenet")
            cfg = models.get_config(name)
        else:
            cfg = _custom_config_ui()
        models.check_config(cfg)
    except models.ConfigError as e:
        sb.error(f"{e} Keeping the previous model.")
        cfg = st.session_state["selection"][0]
    if sb.toggle("Plain twin (shortcuts removed)", key="sel_plain"):
        cfg = models.plain_config(cfg)
    device = sb.selectbox("Device", ["auto", *models.available_devices()], key="sel_device",
                          help="auto picks cuda, then mps, then cpu.")
    device = str(models.pick_device(device))
    sb.caption(f"**{cfg.label}** · {cfg.depth} weighted layers · on `{device}`")
    st.session_state["selection"] = (cfg, device)
    return cfg, device


def residual_config(cfg: models.ResNetConfig) -> models.ResNetConfig:
    """The residual version of a selection (pages that compare both start from it)."""
    return replace(cfg, residual=True)


@contextlib.contextmanager
def friendly_errors(what: str):
    """Show a clear message instead of a traceback; log the details for the teacher."""
    try:
        yield
    except models.ConfigError as e:
        st.error(f"{what}: {e}")
    except torch.OutOfMemoryError:
        log.exception("out of memory while %s", what)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        st.error(f"{what}: the device ran out of memory. Try a smaller batch, a smaller input, or the CPU.")
    except Exception as e:  # noqa: BLE001 - the page must survive anything a student does
        log.exception("failed while %s", what)
        st.error(f"{what} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


# --- architecture page ---
@st.cache_data(max_entries=64, show_spinner=False)
def cached_trace(cfg: models.ResNetConfig):
    """The shape trace of ``cfg`` (computed once per configuration for the whole class)."""
    from resviz.trace import trace_shapes

    return trace_shapes(cfg)

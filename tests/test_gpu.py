"""The library and the app on a CUDA GPU: the same numbers as on the CPU, and a real out-of-memory error shown as
a message. ``scripts/device_check.sh`` runs these (``pytest -m gpu``) on a machine with CUDA; elsewhere they are
skipped, with the reason.

Each test computes the same thing from the same weights and inputs on the CPU and on ``cuda`` and compares. TF32
is turned off for the comparisons (cuDNN convolutions use it by default on Ampere and later: about 3 significant
digits), so a difference beyond float32 rounding is a bug in how our code moves tensors, not the GPU's precision.
The largest difference seen is recorded as a test property (``max_abs_diff ...``) for the script's table.

``RESVIZ_TEST_DEVICE=cpu pytest -m gpu tests/test_gpu.py`` runs the same code against the CPU on a machine without
a GPU: every comparison then holds trivially; it only checks that the tests themselves run (names, shapes).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import resviz
from resviz.hooks import Hooks
from resviz.inputs import data
from resviz.lessons import LESSONS, feature_maps, training

DEVICE = os.environ.get("RESVIZ_TEST_DEVICE", "cuda")  # cpu: a dry run of these tests (see above)
CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE == "cuda" and not CUDA,
                                 reason="needs a CUDA GPU: scripts/device_check.sh runs these on one")]
needs_cuda = pytest.mark.skipif(not CUDA, reason="allocates more than a real CUDA GPU has")
RTOL, ATOL = 1e-4, 1e-4  # float32 with TF32 off: sums in another order differ in the last digits only
CIFAR = "resnet20"


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off while comparing; restored afterwards (the app runs with PyTorch's defaults)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def close(record_property, name: str, cpu, gpu, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Assert that ``gpu`` equals ``cpu`` within tolerance (arrays, tensors or floats); record the largest gap."""
    a = np.asarray(cpu.detach().cpu() if torch.is_tensor(cpu) else cpu, dtype=np.float64)
    b = np.asarray(gpu.detach().cpu() if torch.is_tensor(gpu) else gpu, dtype=np.float64)
    gap = float(np.nanmax(np.abs(a - b))) if a.size else 0.0
    record_property(f"max_abs_diff {name}", f"{gap:.2g}")
    np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)


def batch(cfg, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return resviz.sample_batch(cfg, batch=n, seed=seed)


def test_cuda_is_the_default_device():
    assert resviz.pick_device().type == DEVICE
    assert resviz.pick_device(DEVICE).type == DEVICE


@pytest.mark.parametrize("name, size", [(CIFAR, 32), ("resnet18", 64), ("resnet50", 64)])
def test_model_forward_matches_cpu(record_property, name, size):
    cfg = resviz.get_config(name, input_size=size) if size != 32 else resviz.get_config(name)
    model = resviz.build_model(cfg, seed=0).eval()
    x, _ = batch(cfg, 4)
    with torch.no_grad():
        cpu = model(x)
        gpu = model.to(DEVICE)(x.to(DEVICE))
    assert gpu.device.type == DEVICE
    close(record_property, name, cpu, gpu, atol=1e-3)  # 50 layers of sums: a little more room in absolute terms


def test_trace_shapes_are_what_the_cuda_model_produces():
    cfg = resviz.get_config("resnet50")
    model = resviz.build_model(cfg, device=DEVICE).eval()
    seen = {}

    def shape_of(name):
        def hook(module, inputs, output):
            seen[name] = tuple(output.shape[1:])
        return hook

    with Hooks() as hooks, torch.no_grad():
        for name, block in zip(model.block_names(), model.blocks()):
            hooks.forward(block, shape_of(name))
        model(torch.zeros(1, 3, 224, 224, device=DEVICE))
    assert {b.name: tuple(b.out_shape) for b in resviz.trace_shapes(cfg).blocks} == seen


def test_statistics_match_cpu(record_property):
    cfg = resviz.get_config(CIFAR)
    model = resviz.build_model(cfg, seed=0).train()
    x, y = batch(cfg, 16)
    cpu = resviz.collect_stats(model, x, y)
    gpu = resviz.collect_stats(resviz.build_model(cfg, seed=0, device=DEVICE).train(), x.to(DEVICE), y.to(DEVICE))
    for field in ("act_rms", "act_std", "grad_rms", "weight_grad_rms", "resp_std"):
        close(record_property, field, getattr(cpu, field), getattr(gpu, field), rtol=1e-3)
    close(record_property, "loss", cpu.loss, gpu.loss)


def test_signal_flow_after_training_steps_matches_cpu(record_property):
    cfg = resviz.get_config(CIFAR)
    x, y = batch(cfg, 16)
    cpu = resviz.compare_signal_flow(cfg, x, y, device="cpu", steps=3)
    gpu = resviz.compare_signal_flow(cfg, x, y, device=DEVICE, steps=3)
    for net, run in cpu.runs.items():
        close(record_property, f"{net} act_rms", run.stats.act_rms, gpu.runs[net].stats.act_rms, rtol=1e-3)


def race_records(device: str, steps: int = 6) -> list[dict]:
    cfg = resviz.get_config(CIFAR)
    train, test, _ = data.builtin_dataset(num_classes=cfg.num_classes, n_train=256, n_test=64,
                                          size=cfg.input_size, channels=cfg.in_channels, seed=0)
    race_cfg = training.RaceConfig(steps=steps, eval_every=3, eval_size=64, device=device)
    return list(training.race(training.make_race_models(cfg, seed=0), train, test, race_cfg))


def test_race_matches_cpu(record_property):
    cpu, gpu = race_records("cpu"), race_records(DEVICE)
    assert len(gpu) == len(cpu) == 6
    for name in cpu[0]["runs"]:
        loss = [[r["runs"][name]["loss"] for r in recs] for recs in (cpu, gpu)]
        close(record_property, f"{name} loss per step", *loss, rtol=1e-3)  # 6 SGD steps amplify rounding
        norms = [recs[-1]["runs"][name]["grad_norms"] for recs in (cpu, gpu)]
        close(record_property, f"{name} grad norms at the last step", *norms, rtol=1e-2)
        acc = [[r["runs"][name]["test_acc"] for r in recs if r["runs"][name]["test_acc"] is not None]
               for recs in (cpu, gpu)]
        close(record_property, f"{name} test accuracy", *acc, atol=2 / 64)  # one image may flip at the margin


def test_feature_maps_match_cpu(record_property):
    cfg = resviz.get_config("resnet18", input_size=64)
    model = resviz.build_model(cfg, seed=0).eval()
    x, _ = batch(cfg, 1)
    cpu = feature_maps.capture(model, x, block=2, cam_block=-1)
    gpu = feature_maps.capture(model.to(DEVICE), x.to(DEVICE), block=2, cam_block=-1)
    assert (cpu.block, cpu.target) == (gpu.block, gpu.target)
    for field in ("fx", "out", "x", "probs", "cam"):
        close(record_property, field, getattr(cpu, field), getattr(gpu, field), atol=1e-3)


def test_attributions_match_cpu(record_property):
    cfg = resviz.get_config(CIFAR)
    model = resviz.build_model(cfg, seed=0).eval()
    x, _ = batch(cfg, 1)
    runs: dict[str, tuple] = {}
    for device in ("cpu", DEVICE):
        m, xd = model.to(device), x.to(device)
        runs[device] = (feature_maps.grad_cam(m, xd, block=-1, target=3),
                        feature_maps.integrated_gradients(m, xd, target=3, steps=16).attr,
                        feature_maps.occlusion(m, xd, target=3))
    for what, cpu, gpu in zip(("Grad-CAM", "Integrated Gradients", "Occlusion"), runs["cpu"], runs[DEVICE]):
        close(record_property, what, cpu, gpu, atol=1e-3)


@pytest.mark.parametrize("lesson", [lesson.name for lesson in LESSONS])
def test_every_page_renders_on_the_gpu(lesson):
    from helpers import new_app, no_exceptions

    at = new_app(lesson, timeout=180, sidebar={"sel_device": DEVICE})
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]


def _allocate_more_than_the_gpu_has():
    """An AppTest script: a real allocation larger than the card, inside the app's error helper."""
    import streamlit as st
    import torch

    from resviz import ui

    with ui.friendly_errors("Allocating a tensor larger than the GPU"):
        too_big = torch.cuda.get_device_properties(0).total_memory + 2**30
        torch.empty(too_big, dtype=torch.uint8, device="cuda")
    st.write("the page goes on")


@needs_cuda
def test_out_of_memory_shows_a_message_and_the_gpu_recovers():
    from streamlit.testing.v1 import AppTest

    too_big = torch.cuda.get_device_properties(0).total_memory + 2**30
    with pytest.raises(torch.OutOfMemoryError):  # the real error, from a real allocation
        torch.empty(too_big, dtype=torch.uint8, device="cuda")
    at = AppTest.from_function(_allocate_more_than_the_gpu_has, default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Allocating a tensor larger than the GPU: the device ran out of memory. "
                                           "Try a smaller batch, a smaller input, or the CPU."]
    assert "the page goes on" in [m.value for m in at.markdown]
    after = torch.empty(2**30, dtype=torch.uint8, device="cuda")  # 1 GiB still fits: nothing was left held
    assert after.numel() == 2**30

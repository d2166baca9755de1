"""Upload -> feature maps + Grad-CAM for ResNet-50 at 224x224 on CPU, against one forward+backward pass.

The page's path: decode a 640x480 JPEG, preprocess, copy the shared model, ONE forward with hooks, one
partial backward for Grad-CAM. Target: at most about 2x one forward+backward of the same model and input.
Also reported: the same work with captum's LayerGradCam running its own forward and backward.
"""
from __future__ import annotations

import io
import time

import torch

from resviz.inputs import images, sandbox, weights
from resviz import models
from resviz.lessons import feature_maps as fm

SIZE = 224


def _jpeg() -> bytes:
    img = images.load_image(images.sample_bytes("cat")).resize((640, 480))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _page_path(model, data: bytes, block: int) -> fm.Capture:
    img = images.load_image(data)
    x = images.to_tensor(images.preprocess_steps(img, images.preprocess_for(SIZE)))
    return fm.capture(model, x, block=block, cam_block=-1)


def interleaved_best(fns: dict, rounds: int) -> dict:
    """Fastest time of each function, taking turns round by round so a busy shared CPU hurts all alike."""
    best = {k: float("inf") for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def run(preset: str = "resnet50", repeat: int = 3) -> list[dict]:
    torch.manual_seed(0)
    shared = models.build_model(preset, seed=0).eval()
    for p in shared.parameters():
        p.requires_grad_(False)
    trainable = fm.working_copy(shared)
    x = torch.randn(1, 3, SIZE, SIZE)
    data = _jpeg()

    def forward_backward():
        trainable.zero_grad(set_to_none=True)
        trainable(x)[0].max().backward()  # one forward + a full backward (all parameter gradients)

    def with_captum():
        r = _page_path(shared, data, -1)  # (its own Grad-CAM is wasted here: an upper bound)
        fm.grad_cam(shared, x, block=-1, target=r.target)

    t = interleaved_best({"base": forward_backward, "last": lambda: _page_path(shared, data, -1),
                          "first": lambda: _page_path(shared, data, 0), "captum": with_captum}, repeat)
    base, last, first, captum_path = t["base"], t["last"], t["first"], t["captum"]
    row = dict(baseline=f"one forward+backward of {preset} at {SIZE}x{SIZE}, CPU ({base * 1000:.0f} ms)",
               unit="x", target="<= 2x")
    return weights_rows(preset, repeat) + [
        dict(row, figure=f"upload -> feature maps (last block) + Grad-CAM, {preset} ({last * 1000:.0f} ms)",
             value=last / base, ok=last / base <= 2.0),
        dict(row, figure=f"upload -> feature maps (first block) + Grad-CAM, {preset} ({first * 1000:.0f} ms)",
             value=first / base, ok=first / base <= 2.0),
        dict(row, figure=f"same, plus captum LayerGradCam's own forward+backward ({captum_path * 1000:.0f} ms)",
             value=captum_path / base, target="report", ok=None),
    ]


def weights_rows(preset: str = "resnet50", repeat: int = 5) -> list[dict]:
    """An uploaded state dict read in the sandbox (weights.read_checkpoint) against torch.load in this process."""
    buf = io.BytesIO()
    torch.save(models.build_model(preset, seed=0).state_dict(), buf)
    data = buf.getvalue()
    t = time.perf_counter()
    weights.read_checkpoint(data)  # the first read starts the sandbox's zygote (it imports torch), unless running
    first = time.perf_counter() - t
    t = interleaved_best({"base": lambda: torch.load(io.BytesIO(data), weights_only=True, map_location="cpu"),
                          "sandbox": lambda: weights.read_checkpoint(data)}, repeat)
    base = t["base"]
    row = dict(baseline=f"torch.load(weights_only=True) of {preset}'s state dict ({len(data) / 2**20:.0f} MB) in "
                        f"this process ({base * 1000:.0f} ms)", unit="x")
    return [
        dict(row, figure=f"upload -> state dict, parsed in the sandbox child ({t['sandbox'] * 1000:.0f} ms)",
             value=t["sandbox"] / base, target="<= 1.5x", ok=t["sandbox"] / base <= 1.5),
        dict(row, figure=f"the same, first upload after start ({first * 1000:.0f} ms; starts the sandbox's zygote "
                         f"unless already running: {sandbox.MAX_CHILDREN} children at most)",
             value=first / base, target="report", ok=None),
    ]


if __name__ == "__main__":
    for r in run():
        print(f"{r['figure']}: {r['value']:.2f}{r['unit']} (baseline {r['baseline']}, target {r['target']})")

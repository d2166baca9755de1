"""Feature maps per block (F(x), the shortcut x, relu(F(x) + x)) and Grad-CAM, from ONE forward pass.

Forward hooks on each block's ``add`` module see F(x) and the shortcut as its two inputs; a hook on
``relu_out`` sees the block's output. The same forward keeps the Grad-CAM block's output in the autograd
graph, so Grad-CAM costs one partial backward and no second forward. The plain twin never calls ``add``:
there F(x) is the input of ``relu_out``. Hooks live on a deep copy and are always removed.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from captum.attr import LayerAttribution
from torch import nn

MAX_CHANNELS = 32  # channels kept per view, most active first; the page shows up to this many


def working_copy(model: nn.Module) -> nn.Module:
    """A private copy in eval mode with gradients on: hooks and autograd never touch the shared model."""
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


def block_names(model: nn.Module) -> list[str]:
    """``layer1.0``, ``layer1.1``, ... in depth order."""
    return [f"{stage}.{j}" for stage in model.stage_names for j in range(len(getattr(model, stage)))]


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().float().pow(2).mean().sqrt())


def _numpy(t: torch.Tensor, channels: np.ndarray) -> np.ndarray:
    return t.detach()[0, torch.as_tensor(channels, device=t.device)].float().cpu().numpy()  # (k, H, W) for the chosen channels


def grad_cam_from(act: torch.Tensor, score: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (Selvaraju et al. 2017): relu(sum_c mean_hw(d score / d A_c) * A_c), then upsampled to ``size``."""
    grads = torch.autograd.grad(score, act)[0]  # backward only as far as the chosen block
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1): how much each channel matters
    cam = torch.relu((weights * act).sum(dim=1, keepdim=True)).detach()  # (1, 1, h, w)
    up = LayerAttribution.interpolate(cam, size, interpolate_mode="bilinear")  # captum's upsampling
    return cam[0, 0].cpu().numpy(), up[0, 0].cpu().numpy()


def capture(model: nn.Module, x: torch.Tensor, block: int = -1, cam_block: int | None = -1,
            target: int | None = None, max_channels: int = MAX_CHANNELS, copy_model: bool = True) -> dict:
    """One forward (+ one partial backward for Grad-CAM) -> numpy feature maps, block norms, prediction, CAM.

    ``block`` picks the block whose three views are returned; ``cam_block`` the Grad-CAM block (None: skip it);
    ``target`` the class explained (None: the predicted one). The model passed in is never changed.
    """
    net = working_copy(model) if copy_model else model
    blocks = net.blocks()
    block, cam_at = block % len(blocks), (None if cam_block is None else cam_block % len(blocks))
    seen: dict = {"norms": [dict() for _ in blocks]}

    def on_add(i):
        def hook(module, inputs, output):
            fx, shortcut = inputs
            seen["norms"][i].update(fx=_rms(fx), x=_rms(shortcut))
            if i == block:
                seen["fx"], seen["x"] = fx, shortcut
        return hook

    def on_out(i):
        def hook(module, inputs, output):
            seen["norms"][i].setdefault("fx", _rms(inputs[0]))  # plain twin: the input of relu_out is F(x)
            seen["norms"][i]["out"] = _rms(output)
            if i == block:
                seen.setdefault("fx", inputs[0])
                seen["out"] = output
            if i == cam_at:
                seen["cam_act"] = output  # stays in the graph: Grad-CAM needs its gradient
        return hook

    handles = []
    try:
        for i, b in enumerate(blocks):
            handles.append(b.add.register_forward_hook(on_add(i)))
            handles.append(b.relu_out.register_forward_hook(on_out(i)))
        with torch.set_grad_enabled(cam_at is not None):
            logits = net(x)  # (1, num_classes): the one forward
    finally:
        for h in handles:
            h.remove()
    probs = torch.softmax(logits.detach().float(), dim=1)[0].cpu().numpy()
    target = int(probs.argmax()) if target is None else int(target)
    out = seen["out"]
    order = out.detach()[0].float().mean(dim=(1, 2)).argsort(descending=True)[:max_channels].cpu().numpy()
    names = block_names(net)
    result = {"block": names[block], "channels": order, "n_channels": int(out.shape[1]),
              "fx": _numpy(seen["fx"], order), "out": _numpy(out, order),
              "x": _numpy(seen["x"], order) if "x" in seen else None,
              "norms": [dict(name=n, **d) for n, d in zip(names, seen["norms"])],
              "logits": logits.detach()[0].float().cpu().numpy(), "probs": probs, "target": target,
              "residual": bool(getattr(net.cfg, "residual", True))}
    if cam_at is not None:
        score = logits[0, target]
        result["cam_block"] = names[cam_at]
        result["cam_lowres"], result["cam"] = grad_cam_from(seen["cam_act"], score, tuple(x.shape[-2:]))
    return result


def top_k(probs: np.ndarray, names: list[str] | None, k: int = 5) -> list[dict]:
    """The k most probable classes as ``{"index", "name", "prob"}``, most probable first."""
    idx = np.argsort(-probs)[:k]
    return [{"index": int(i), "name": names[i] if names and i < len(names) else f"class {i}",
             "prob": float(probs[i])} for i in idx]

"""The Architecture lesson's reading of a trace: which blocks need a reshaping shortcut, and the words for it."""
from __future__ import annotations

from resviz.trace import Block, ShortcutKind


def shortcut_label(block: Block) -> str:
    """'1x1 projection, stride 2', 'zero-pad, stride 2', 'identity', 'none (plain twin)'; option C says so."""
    if block.shortcut is ShortcutKind.NONE:
        return "none (plain twin)"
    if block.shortcut is ShortcutKind.IDENTITY:
        return "identity"
    label = f"{block.shortcut.value}, stride {block.stride}"
    return f"{label} (option C: a projection on every block)" if block.option == "C" else label


def mismatch_text(block: Block) -> str:
    """Why x and F(x) differ, in plain words: 'channels differ (256→512) and spatial size differs (56→28)'."""
    (c0, h0, _), (c1, h1, _) = block.in_shape, block.out_shape
    parts = ([f"channels differ ({c0}→{c1})"] if block.channels_differ else []) + (
        [f"spatial size differs ({h0}→{h1})"] if block.size_differs else [])
    return " and ".join(parts) or "shapes already match"

"""The Architecture lesson's reading of a trace: what the bottlenecks do to the channels, which blocks need a
reshaping shortcut, the receptive field, and the multiply-accumulates for either stride placement.

Results are typed; the words for them are made at the edge (``shortcut_label``, ``mismatch_text`` and the page).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from resviz.models import IMAGENET_PRESETS, PRESETS, ResNetConfig
from resviz.trace import Block, ShortcutKind, Trace, trace_shapes
from resviz.trace import fmt_shape as fmt

# He et al. 2016, Table 1: "FLOPs" (multiply-adds, x10^9) at 224x224; the bottlenecks stride their first 1x1.
PAPER_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}


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


class Change(enum.Enum):
    """What a 1x1 conv does to the channel count."""

    SQUEEZES = "squeezes"
    KEEPS = "keeps"
    EXPANDS = "expands"


def change(before: int, after: int) -> Change:
    return Change.SQUEEZES if after < before else Change.EXPANDS if after > before else Change.KEEPS


@dataclass(frozen=True)
class OneByOnes:
    """A bottleneck's channels: the first 1x1 takes C_in to ``width``, the 3x3 works there, the last 1x1 gives C_out."""

    block: str
    c_in: int
    width: int
    c_out: int
    groups: int  # of the 3x3

    @property
    def first(self) -> Change:
        return change(self.c_in, self.width)

    @property
    def last(self) -> Change:
        return change(self.width, self.c_out)


@dataclass(frozen=True)
class Bottlenecks:
    """The network's first bottleneck (fed by the stem) and the first whose first 1x1 really squeezes."""

    first: OneByOnes
    squeeze: OneByOnes | None  # None: no block of this network squeezes (a very wide custom net)


def bottlenecks(trace: Trace) -> Bottlenecks | None:
    """What the 1x1 convs of ``trace``'s bottlenecks do; None if it has none."""
    found = [OneByOnes(b.name, b.channels[0], b.channels[1], b.channels[-1], b.groups)
             for b in trace.blocks if b.type == "Bottleneck"]
    if not found:
        return None
    return Bottlenecks(found[0], next((o for o in found if o.first is Change.SQUEEZES), None))


def reshaping_blocks(trace: Trace) -> list[Block]:
    """Blocks where x cannot be added as it is: shapes differ, and a shortcut reshapes x (none in a plain twin)."""
    return [b for b in trace.blocks if b.shapes_differ and b.shortcut is not ShortcutKind.NONE]


def needless_projections(trace: Trace) -> list[Block]:
    """Option C's projections on blocks whose shapes already match (an identity would do)."""
    return [b for b in trace.blocks if not b.shapes_differ and b.shortcut is ShortcutKind.PROJECTION]


@dataclass(frozen=True)
class ReceptiveField:
    """The theoretical receptive field of one output of the last conv layer (before global pooling)."""

    px: int  # input pixels along each axis that can influence it (padding included)
    layer: str
    input_px: int

    @property
    def exceeds_input(self) -> bool:
        return self.px > self.input_px


def receptive_field(trace: Trace) -> ReceptiveField | None:
    """The receptive field of the last conv layer before global pooling; None if nothing was traced."""
    rows = [r for r in trace.rows if r["op"] not in ("avgpool", "fc")]
    if not rows:
        return None
    px = max(r["receptive_field"] for r in rows)
    widest = [r for r in rows if r["receptive_field"] == px]
    # the last conv that sees that far: a bottleneck's conv3 (it sees what its 3x3 saw), not an option-C projection
    last = next((r for r in reversed(widest) if r["op"] == "conv"), widest[-1])
    return ReceptiveField(px, last["name"], trace.cfg.input_size)


@dataclass(frozen=True)
class StridePlacement:
    """Multiply-accumulates of a bottleneck net with the downsampling stride on the first 1x1 or on the 3x3."""

    in_1x1: int  # He et al.'s placement
    in_3x3: int  # torchvision's "v1.5"
    chosen_in_1x1: bool  # which one ``cfg`` uses
    paper_gmacs: float | None  # Table 1's figure, for an unchanged preset


def stride_placement(cfg: ResNetConfig) -> StridePlacement | None:
    """MACs for both stride placements of a bottleneck net with a downsampling stage; None otherwise."""
    if cfg.block != "bottleneck" or len(cfg.layers) < 2:
        return None
    macs = {where: trace_shapes(replace(cfg, stride_in_1x1=where)).total_macs for where in (True, False)}
    return StridePlacement(macs[True], macs[False], cfg.stride_in_1x1, paper_gmacs(cfg))


def paper_gmacs(cfg: ResNetConfig) -> float | None:
    """He et al.'s Table 1 figure for ``cfg`` if it is one of the paper's nets, unchanged (either stride placement)."""
    preset = PRESETS.get(cfg.name)
    same = preset is not None and replace(cfg, stride_in_1x1=preset.stride_in_1x1, residual=True) == preset
    return PAPER_GMACS.get(cfg.name) if same else None


# --- the words, made from the types above ---
def bottleneck_text(bn: Bottlenecks) -> str:
    """The bottleneck callout for the network shown: the first block that squeezes, and what the first one does."""
    sq, first = bn.squeeze, bn.first
    if sq is None:
        text = "**Bottleneck:** no block of this network squeezes its channels: every first 1x1 keeps or expands them."
    else:
        grouped = f" in {sq.groups} groups of {sq.width // sq.groups} channels" if sq.groups > 1 else ""
        back = " back" if sq.c_out == sq.c_in else ""
        last = f"keeps them at {sq.c_out}" if sq.last is Change.KEEPS else f"{sq.last.value} them{back} to {sq.c_out}"
        text = (f"**Bottleneck:** in `{sq.block}` the first 1x1 conv squeezes {sq.c_in} channels to {sq.width} "
                f"({sq.c_in / sq.width:g}x fewer), the 3x3 conv works on those {sq.width}{grouped}, and the last "
                f"1x1 {last}: the expensive 3x3 runs on few channels.")
    if sq is None or first.block != sq.block:
        did = {Change.KEEPS: f"squeezes nothing ({first.c_in} → {first.width})",
               Change.EXPANDS: f"expands them ({first.c_in} → {first.width})",
               Change.SQUEEZES: f"squeezes them ({first.c_in} → {first.width})"}[first.first]
        last = f"keeps {first.c_out}" if first.last is Change.KEEPS else f"{first.last.value} them to {first.c_out}"
        text += f" `{first.block}` gets {first.c_in} channels from the stem: its first 1x1 {did}, and its last 1x1 {last}."
    return text


def reshaping_text(trace: Trace) -> str | None:
    """The list of blocks whose x must be reshaped, with why and how; None if there are none."""
    blocks, extra = reshaping_blocks(trace), needless_projections(trace)
    if not blocks and not extra:
        return None
    lines = [f"- `{b.name}`: {fmt(b.in_shape)} → {fmt(b.out_shape)} because {mismatch_text(b)}; the shortcut is a "
             f"**{shortcut_label(b)}**." for b in blocks]
    if extra:
        lines.append(f"- Option C also projects x on the {len(extra)} blocks whose shapes already match "
                     f"(`{extra[0].name}`{', …' if len(extra) > 1 else ''}), where an identity would do.")
    return "**Where x cannot be added as it is:**\n" + "\n".join(lines)


def receptive_field_text(rf: ReceptiveField) -> str:
    """What the receptive-field metric means, and that it can exceed the image."""
    text = (f"Receptive field (theoretical): how many input pixels along each side can influence one output of "
            f"`{rf.layer}`, the last conv layer before global pooling.")
    if rf.exceeds_input:
        text += f" It can exceed the image: {rf.px} px on this {rf.input_px} px input; the rest falls on zero padding."
    return text


def macs_text(cfg: ResNetConfig, total_macs: int, placement: StridePlacement | None,
              resnet: StridePlacement | None = None) -> str | None:
    """Where the published multiply-add counts come from, for either stride placement; None if nothing to say.

    For a plain twin (``cfg.residual`` False) ``placement`` counts the twin and ``resnet`` its ResNet: every figure
    says which of the two networks it is for (the twin has no projection shortcuts, so fewer MACs).
    """
    paper = paper_gmacs(cfg)
    twin = not cfg.residual
    if placement is None:
        if not paper:
            return None
        twin_said = " for its plain twin, shown (no projection shortcuts)." if twin else "."
        return (f"He et al. (2016, Table 1) give {paper} G multiply-adds for {cfg.name}; measured here: "
                f"{total_macs / 1e9:.2f} G{twin_said}")
    g1, g3 = placement.in_1x1 / 1e9, placement.in_3x3 / 1e9
    shown = f"Shown: the stride on {'the first 1x1' if placement.chosen_in_1x1 else 'the 3x3'}" + (
        " (the sidebar's \"Stride on the first 1x1 (paper)\" switches it)." if cfg.name in IMAGENET_PRESETS else ".")
    if twin and resnet is not None:
        r1, r3 = resnet.in_1x1 / 1e9, resnet.in_3x3 / 1e9
        about = (f"He et al. (2016, Table 1) give **{paper} G** multiply-adds for the ResNet {cfg.name}, with the "
                 f"stride of each downsampling bottleneck on its first 1x1 (measured here: {r1:.2f} G); torchvision's "
                 f"{cfg.name} (\"v1.5\", the stride on the 3x3) has **{r3:.2f} G**." if paper else
                 f"The ResNet {cfg.name}: {r1:.2f} G multiply-accumulates with the stride of the downsampling "
                 f"bottlenecks on the first 1x1, {r3:.2f} G on the 3x3 (torchvision's \"v1.5\").")
        return (f"{about} Its plain twin, shown, has no projection shortcuts: {g1:.2f} G with the stride on the "
                f"first 1x1, {g3:.2f} G on the 3x3. {shown}")
    if paper and not twin:
        return (f"He et al. (2016, Table 1) give **{paper} G** multiply-adds for {cfg.name}, with the stride of each "
                f"downsampling bottleneck on its first 1x1 (measured here: {g1:.2f} G). torchvision's **{g3:.2f} G** "
                f"is for its \"v1.5\", which moves the stride to the 3x3 so that it reads every pixel. {shown}")
    whose = "the plain twin shown (no projection shortcuts)" if twin else "this network"
    return (f"For {whose}, with the stride of the downsampling bottlenecks on the first 1x1: {g1:.2f} G "
            f"multiply-accumulates; on the 3x3 (torchvision's \"v1.5\"): {g3:.2f} G. {shown}")


def idle_stride_text(trace: Trace) -> str | None:
    """A warning when strided layers meet a 1x1 map (PyTorch runs them; the map stays 1x1); None otherwise."""
    if not trace.idle_strides:
        return None
    names = ", ".join(f"`{n}`" for n in trace.idle_strides[:4]) + (" …" if len(trace.idle_strides) > 4 else "")
    return (f"With a {trace.cfg.input_size} px input the feature map is already 1x1 when it reaches "
            f"`{trace.idle_strides[0]}`. PyTorch still runs the strided layers from there on ({names}), but the map "
            "stays 1x1: their stride does nothing. A larger input, or fewer stages, gives every stride a map to halve.")

"""The Feature maps lesson: which weights are shown, what one block does to a picture, and why the net decided.

Weights: ``WeightsSource`` says where they come from; ``imagenet``, ``trained``, ``shipped``, ``uploaded`` and
``random`` each return a ``LoadedWeights`` (a read-only model in eval mode, its config, class names, how to
preprocess). ``notices`` says first, each in its ``Box``, why asked-for weights are missing (``Unavailable``: random
ones stand in), that random weights are untrained, or whether trained ones do better than guessing; and what differs
from the sidebar's model.

Feature maps, from ONE forward pass: hooks on each block's ``add`` module see F(x) and the shortcut as its two
inputs; a hook on ``relu_out`` sees the block's output. The same forward keeps the Grad-CAM block's output in the
autograd graph, so Grad-CAM costs one partial backward and no second forward. The plain twin never calls ``add``:
there F(x) is the input of ``relu_out``. Hooks live on a deep copy (``working_copy``) and are always removed. The
same forward is watched for NaN and inf (``NonFiniteWatch``): ``finite`` turns weights that make them into an error that
names the first layer and why (a negative batch-norm variance, an overflow), never into charts of NaN.

Attributions: thin captum wrappers (Grad-CAM, Integrated Gradients, Occlusion) -> numpy heat maps of the input.
"""
from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from resviz import models
from resviz import pair as pairs
from resviz.hooks import Hooks, NonFiniteWatch
from resviz.inputs import budget, images, text, weights
from resviz.pair import TrainedPair, fingerprint

MAX_CHANNELS = 32  # channels kept per view, most active first; the page shows up to this many
RANDOM_SEED = 0  # the seed of the random weights (ui.load_model's default)
IG_CHUNK = 4  # path points per Integrated Gradients pass: the largest batch the page runs
PREDICTED = -1  # the class to explain: the predicted one (a number, not None: a select box reads None as empty)
SHIPPED_PRESET = "resnet20"  # the shipped pair the page offers (the one the pair picker offers first)


# --- which weights ------------------------------------------------------------------------------------------


class WeightsSource(str, enum.Enum):
    """Where the weights come from; the value is the page's widget value."""
    PRETRAINED = "pretrained"  # torchvision's ImageNet weights (ImageNet presets only)
    TRAINED = "trained"  # the pair trained on the Training race page in this session
    SHIPPED = "shipped"  # the ResNet-20 pair shipped in assets/pairs (builtin_pair.shipped): trained, ready at once
    RANDOM = "random"  # torchvision's initialisation from a fixed seed: an untrained network
    UPLOAD = "upload"  # a state dict the student uploaded


class ImageNetMissing(weights.WeightsError):
    """torchvision's ImageNet weights are not on this server yet (nothing failed: they were never fetched)."""


@dataclass(frozen=True)
class Unavailable:
    """Why the weights a student asked for are not shown (random weights stand in for them)."""
    asked: WeightsSource
    reason: str  # plain text; it may hold a student's names (file names, state-dict keys): escaped where shown
    missing: bool = False  # ImageNet weights not fetched yet: a state to fix, not a failure

    @classmethod
    def of(cls, asked: WeightsSource, e: weights.WeightsError) -> "Unavailable":
        return cls(asked, str(e), isinstance(e, ImageNetMissing))


@dataclass(frozen=True, eq=False)
class LoadedWeights:
    """A model ready to look inside: read-only, eval mode, gradients off."""
    source: WeightsSource
    model: nn.Module
    cfg: models.ResNetConfig  # the config the model was built from (may differ from the sidebar's: a pair's)
    key: str  # a content key: results are cached for the class, equal weights share them
    label: str  # what the page says the weights are (markdown: a student's file or data name in it is escaped)
    class_names: tuple[str, ...] = ()  # empty: the classes have numbers only
    imagenet_normalised: bool = True  # ImageNet mean/std; False: the Training race's (x - 0.5) / 0.5
    resize: int | None = None  # shorter side before the centre crop (None: images.preprocess_for's rule)
    plain_state_dict: dict | None = None  # the plain twin's own trained weights (a pair's), else None
    unavailable: Unavailable | None = None  # RANDOM standing in for weights that could not be had: why
    accuracy: float | None = None  # a pair trained on the built-in images: top-1 on pair.EVAL_IMAGES fresh ones

    @property
    def untrained(self) -> bool:
        """The weights were never trained: predictions and attributions explain an untrained network."""
        return self.source is WeightsSource.RANDOM

    @property
    def owned(self) -> bool:
        """A student's own weights (trained in their race, or uploaded): kept in their session, never shared."""
        return self.source in OWNED

    def preprocess(self) -> images.Preprocess:
        """How a picture becomes this model's input (the recipe its weights were trained with)."""
        return images.preprocess_for(self.cfg.input_size, imagenet=self.imagenet_normalised, resize=self.resize)

    def class_name(self, index: int) -> str:
        return self.class_names[index] if index < len(self.class_names) else f"class {index}"

    @property
    def targets(self) -> list[int]:
        """The classes Grad-CAM and the attributions can explain: ``PREDICTED``, then every class."""
        return [PREDICTED, *range(self.cfg.num_classes)]

    def target_label(self, target: int) -> str:
        """The class a student asks Grad-CAM and the attributions to explain."""
        return "the predicted one" if target == PREDICTED else f"{target}: {self.class_name(target)}"

    @property
    def caption(self) -> str:
        """Which model and weights the page shows, and (for weights that learnt something) that its classes have no
        names; the untrained warning already says random weights mean nothing."""
        named = self.class_names or self.untrained
        unnamed = "" if named else " These weights come without class names: the classes are numbered."
        return f"Model: **{self.cfg.label}** with {self.label}.{unnamed}"


OWNED = (WeightsSource.TRAINED, WeightsSource.UPLOAD)
SOURCE_LABELS = {WeightsSource.PRETRAINED: "ImageNet weights (torchvision)",
                 WeightsSource.TRAINED: "Trained on the Training race",
                 WeightsSource.SHIPPED: "ResNet-20 trained by resviz",
                 WeightsSource.RANDOM: "Random (untrained)", WeightsSource.UPLOAD: "Upload a state dict (.pt/.pth)"}

PLAIN_TWIN_NOTES = {  # what the plain twin's weights are, for each source (tests check each against plain_model)
    WeightsSource.PRETRAINED: "It keeps these ImageNet weights but has no shortcuts (projection shortcuts dropped); "
                              "the weights were trained with the shortcuts, so without them the layers no longer "
                              "fit together.",
    WeightsSource.TRAINED: "It is the plain twin trained in the same race, on the same batches, with its own weights.",
    WeightsSource.SHIPPED: "It is the plain twin shipped with it, trained with it on the same batches, with its own "
                           "weights.",
    WeightsSource.RANDOM: "It has the same random weights but no shortcuts (projection shortcuts dropped). Neither "
                          "network was trained: the two differ only by the shortcuts, and neither prediction means "
                          "anything yet.",
    WeightsSource.UPLOAD: "It keeps the uploaded weights but has no shortcuts (projection shortcuts dropped); if they "
                          "were trained with shortcuts, the layers no longer fit together without them.",
}


def sources(cfg: models.ResNetConfig, pair: TrainedPair | None) -> list[WeightsSource]:
    """The sources that exist for ``cfg``, the page's default first: ImageNet weights only for ImageNet presets,
    TRAINED only after a race, SHIPPED while the shipped pair is in assets/pairs."""
    from resviz import builtin_pair

    have = {WeightsSource.PRETRAINED: weights.pretrained_weights(cfg) is not None,
            WeightsSource.TRAINED: pair is not None,
            WeightsSource.SHIPPED: builtin_pair.shipped_info(SHIPPED_PRESET) is not None}
    return [s for s in WeightsSource if have.get(s, True)]


def _frozen(model: nn.Module, device: str) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)  # read-only: shared by reruns (and, for public weights, by the class)
    return model.to(device).eval()


def imagenet_downloaded(cfg: models.ResNetConfig) -> bool:
    """Whether torchvision's checkpoint for ``cfg`` is in the local torch hub cache."""
    enum_member = weights.pretrained_weights(cfg)
    return enum_member is not None and weights.is_cached(enum_member)


def download_imagenet(cfg: models.ResNetConfig) -> None:
    """Fetch torchvision's checkpoint for ``cfg`` into the torch hub cache (WeightsError when offline), saying what
    failed and never where the server keeps its files."""
    try:
        weights.load_pretrained(models.build_model(cfg), weights.pretrained_weights(cfg), download=True)
    except weights.WeightsError:
        raise weights.WeightsError(f"This server could not download torchvision's ImageNet weights for {cfg.name} "
                                   "(it may be offline).") from None


def teacher_command(cfg: models.ResNetConfig) -> str:
    """The one command that puts ``cfg``'s ImageNet weights on the server (run by the teacher, online)."""
    from resviz.prepare import COMMAND

    return f"{COMMAND} --weights {cfg.name}"


def imagenet(cfg: models.ResNetConfig, device: str = "cpu") -> LoadedWeights:
    """torchvision's ImageNet weights for an ImageNet preset (or its plain twin), from the local cache."""
    member = weights.pretrained_weights(cfg)
    if member is None:
        raise weights.WeightsError(f"torchvision has no ImageNet weights for {cfg.label}; pick an ImageNet preset.")
    if not weights.is_cached(member):
        raise ImageNetMissing(f"torchvision's ImageNet weights for {cfg.name} are not on this server yet.")
    model = weights.load_pretrained(models.build_model(cfg), member).model
    return LoadedWeights(WeightsSource.PRETRAINED, _frozen(model, device), cfg, key=f"imagenet|{cfg}",
                         label=f"torchvision {member}", class_names=tuple(weights.class_names(member)),
                         resize=member.transforms().resize_size[0])


def trained(pair: TrainedPair, device: str = "cpu", plain: bool = False,
            source: WeightsSource = WeightsSource.TRAINED) -> LoadedWeights:
    """The Training race's ResNet (or, with ``plain``, its plain twin) with the classes it learnt, and how well it
    does on fresh built-in images when it learnt those (``builtin_accuracy``); ``source``: where the pair is from."""
    cfg = models.with_shortcuts(pair.cfg, residual=not plain)
    sd = pair.plain_state_dict if plain else pair.state_dict
    model = _frozen(weights.load_into_copy(sd, models.build_model(cfg)).model, device)
    return LoadedWeights(source, model, cfg, key=f"trained|{plain}|{pair.key}",
                         label=f"{'the plain twin of ' if plain else ''}{text.md(pair.label, 200)}",
                         class_names=tuple(pair.class_names), imagenet_normalised=False,
                         plain_state_dict=None if plain else pair.plain_state_dict,
                         accuracy=builtin_accuracy(model, pair))


def shipped(device: str = "cpu", plain: bool = False) -> LoadedWeights:
    """The shipped ResNet-20 pair's ResNet (or its plain twin), as ``trained`` gives a race's (WeightsError when
    its files are missing or changed)."""
    from resviz import builtin_pair

    pair = builtin_pair.shipped(SHIPPED_PRESET)
    if pair is None:
        raise weights.WeightsError("The shipped ResNet-20 pair is not in assets/pairs on this server.")
    w = trained(pair, device, plain, WeightsSource.SHIPPED)
    whose = "the plain twin's weights" if plain else "the weights"
    return replace(w, label=f"{whose} shipped with resviz ({pair.steps} SGD steps on the built-in images)")


def builtin_accuracy(model: nn.Module, pair: TrainedPair) -> float | None:
    """Top-1 accuracy on ``pairs.EVAL_IMAGES`` fresh built-in images (the Lesion page's measure), or None when the
    pair learnt other images (nothing here to test it on) or its outputs are NaN or inf."""
    try:
        pairs.check_testable(pair)
    except pairs.PairError:
        return None
    x, y = pairs.eval_data(pair.cfg)
    with torch.no_grad():
        if not bool(torch.isfinite(model(x[:8].to(next(model.parameters()).device))).all()):
            return None  # NaN outputs: an accuracy would count argmax(NaN) = 0 as a guess (the page says why: finite)
    return pairs.accuracy(model, x, y)


def uploaded(data: bytes, filename: str, cfg: models.ResNetConfig, device: str = "cpu") -> LoadedWeights:
    """A student's state dict in a model of ``cfg`` (checked: weights_only, sizes, names; WeightsError if unfit)."""
    model = weights.load_state_dict_safely(data, models.build_model(cfg)).model
    return LoadedWeights(WeightsSource.UPLOAD, _frozen(model, device), cfg, key=f"upload|{cfg}|{fingerprint(data)}",
                         label=f"uploaded {text.md(filename)}", imagenet_normalised=cfg.stem == "imagenet")


def random(cfg: models.ResNetConfig, model: nn.Module, unavailable: Unavailable | None = None) -> LoadedWeights:
    """``model``, built from ``cfg`` with seed ``RANDOM_SEED`` and never trained (the app's shared model); with
    ``unavailable``, in place of the weights asked for."""
    return LoadedWeights(WeightsSource.RANDOM, model, cfg, key=f"random|{RANDOM_SEED}|{cfg}",
                         label=f"random weights (seed {RANDOM_SEED})", imagenet_normalised=cfg.stem == "imagenet",
                         unavailable=unavailable)


@dataclass(frozen=True, eq=False)
class WeightsRequest:
    """The weights a student asked for, from the page's widgets: ``load`` turns it into ``LoadedWeights``."""
    source: WeightsSource
    cfg: models.ResNetConfig  # the sidebar's chosen model (TRAINED and SHIPPED bring their own)
    device: str = "cpu"
    pair: TrainedPair | None = None  # TRAINED: the Training race's pair
    plain: bool = False  # TRAINED, SHIPPED: the pair's plain twin instead of its ResNet
    upload: tuple[str, bytes] | None = None  # UPLOAD: (file name, content); None until a file is chosen

    @property
    def owned(self) -> bool:
        return self.source in OWNED

    @property
    def ready(self) -> bool:
        """Everything ``load`` needs is there (an upload waits for its file; RANDOM is the page's shared model)."""
        return self.source is not WeightsSource.RANDOM and (self.source is not WeightsSource.UPLOAD or bool(
            self.upload)) and (self.source is not WeightsSource.TRAINED or self.pair is not None)

    @property
    def needs_download(self) -> bool:
        """ImageNet weights asked for, torchvision has them, and they are not in the local torch hub cache yet."""
        return (self.source is WeightsSource.PRETRAINED and weights.pretrained_weights(self.cfg) is not None
                and not imagenet_downloaded(self.cfg))

    @property
    def key(self) -> tuple:
        """Which weights, by content: equal keys load equal weights."""
        if self.source is WeightsSource.TRAINED:
            return self.source, self.pair.key, self.plain, self.device
        if self.source is WeightsSource.SHIPPED:
            return self.source, SHIPPED_PRESET, self.plain, self.device
        if self.source is WeightsSource.UPLOAD:
            return self.source, fingerprint(self.upload[1]), self.upload[0], self.cfg, self.device
        return self.source, self.cfg, self.device


def load(req: WeightsRequest) -> LoadedWeights:
    """The weights ``req`` asks for (WeightsError when they cannot be had: offline, unfit or unsafe file)."""
    if req.source is WeightsSource.PRETRAINED:
        return imagenet(req.cfg, req.device)
    if req.source is WeightsSource.TRAINED:
        return trained(req.pair, req.device, req.plain)
    if req.source is WeightsSource.SHIPPED:
        return shipped(req.device, req.plain)
    if req.source is WeightsSource.UPLOAD:
        return uploaded(req.upload[1], req.upload[0], req.cfg, req.device)
    raise ValueError(f"{req.source} weights are the app's shared model: use random(cfg, model)")


class Box(str, enum.Enum):
    """Which box a notice is shown in (the value is Streamlit's function name)."""
    SUCCESS = "success"  # a verdict the numbers support
    INFO = "info"  # a fact worth knowing first
    WARNING = "warning"  # what is shown does not mean what it would for trained weights
    ERROR = "error"  # the weights asked for could not be had


BOX_ICONS = {Box.SUCCESS: ":material/check_circle:", Box.INFO: ":material/info:", Box.WARNING: ":material/warning:",
             Box.ERROR: ":material/error:"}


@dataclass(frozen=True)
class Notice:
    """A sentence the page shows above everything, in its box."""
    text: str
    box: Box = Box.INFO

    @property
    def icon(self) -> str:
        return BOX_ICONS[self.box]


UNTRAINED = ("Its top-5 classes, Grad-CAM, Integrated Gradients and Occlusion below explain an untrained network, not "
             "what a ResNet learns.")


def notices(w: LoadedWeights, chosen: models.ResNetConfig) -> list[Notice]:
    """What to say first, one box each: why the weights asked for are not shown, or that the network is untrained,
    or how well trained weights do; then that the weights bring another model than the sidebar's."""
    first = (unavailable_note(w.unavailable, chosen) if w.unavailable else
             Notice(untrained_note(chosen), Box.WARNING) if w.untrained else accuracy_note(w))
    other = other_model_note(w, chosen)
    return [n for n in (first, other and Notice(other)) if n]


def _ways(cfg: models.ResNetConfig, failed: WeightsSource | None = None) -> str:
    """Where weights that learnt something come from, leaving out the choice that just failed."""
    offered = sources(cfg, None)
    ways = [f"choose **{SOURCE_LABELS[WeightsSource.SHIPPED]}** above"] if (
        WeightsSource.SHIPPED in offered and failed is not WeightsSource.SHIPPED) else []
    ways.append("train one on the **Training race** page")
    if failed is not WeightsSource.PRETRAINED:
        ways.append("choose **ImageNet weights** above" if WeightsSource.PRETRAINED in offered else
                    "pick an ImageNet preset in the sidebar and its ImageNet weights")
    said = " or ".join(ways) if len(ways) < 3 else f"{', '.join(ways[:-1])}, or {ways[-1]}"
    return f"{said[0].upper()}{said[1:]}."


def untrained_note(cfg: models.ResNetConfig) -> str:
    """The warning over an untrained network, with the way to weights that learnt something."""
    return f"**These weights are random: the network is untrained.** {UNTRAINED} {_ways(cfg)}"


def unavailable_note(u: Unavailable, cfg: models.ResNetConfig) -> Notice:
    """Why the weights asked for are not shown, how to get them, and that random weights stand in: said once."""
    how = ""
    if u.asked is WeightsSource.PRETRAINED:
        press = "press **Download the ImageNet weights** (the server must be online), or " if u.missing else ""
        how = f" To get them, {press}ask the teacher to run `{teacher_command(cfg)}` on the server while it is online."
    return Notice(f"{text.md(u.reason, 600)}{how} Until then this page shows **random weights**: the network is "
                  f"untrained. {UNTRAINED} {_ways(cfg, u.asked)}", Box.WARNING if u.missing else Box.ERROR)


def accuracy_note(w: LoadedWeights) -> Notice | None:
    """Trained weights: whether they learnt more than guessing, on fresh built-in images, by the Lesion page's rule
    (``pair.is_guessing``: guessing while the accuracy's 95% interval reaches it)."""
    if w.accuracy is None:
        return None
    chance, net = 1 / w.cfg.num_classes, "ResNet" if w.cfg.residual else "plain twin"
    measured = (f"On fresh built-in images this {net} gets {pairs.interval_words(w.accuracy, pairs.EVAL_IMAGES)} "
                f"right; guessing gets {chance:.0%}.")
    if pairs.is_guessing(w.accuracy, pairs.EVAL_IMAGES, chance):
        return Notice(f"**These weights are no better than guessing.** {measured} Its top-5 classes, Grad-CAM, "
                      "Integrated Gradients and Occlusion below explain a network that has not learned the images. "
                      "Train longer on the **Training race** page.", Box.WARNING)
    return Notice(f"**These weights learned something: more than guessing.** {measured} Its 95% interval stays above "
                  "guessing, so the top-5 classes and the maps below show what this network learned to use. "
                  f"{known_classes(w)}", Box.SUCCESS)


def known_classes(w: LoadedWeights) -> str:
    """A network trained on the built-in images names every picture by one of their classes: say so."""
    names = ", ".join(text.md(n, 40) for n in w.class_names[:3])
    return (f"It knows only the built-in images' {w.cfg.num_classes} classes ({names}, …): any photo is called one "
            "of them.")


CONFIG_WORDS = {  # how the fields that can differ between a race's model and the sidebar's are said
    "input_size": ("input", lambda v: f"{v}x{v} pixels"), "num_classes": ("classes", str),
    "in_channels": ("input channels", str), "layers": ("blocks per stage", str), "widths": ("widths", str),
    "stem_width": ("stem width", str), "norm": ("batch norm", lambda v: "on" if v else "off"),
    "residual": ("shortcuts", lambda v: "on" if v else "off")}


def config_differences(a: models.ResNetConfig, b: models.ResNetConfig) -> list[str]:
    """Each field that differs, in words: "input 16x16 pixels instead of 32x32 pixels"."""
    out = []
    for f in (f for f in a.__dataclass_fields__ if f != "name" and getattr(a, f) != getattr(b, f)):
        what, say = CONFIG_WORDS.get(f, (f, str))
        out.append(f"{what} {say(getattr(a, f))} instead of {say(getattr(b, f))}")
    return out


def other_model_note(w: LoadedWeights, chosen: models.ResNetConfig) -> str | None:
    """What to say when the weights bring another model than the sidebar's (the Training race's): what differs."""
    if w.cfg == chosen:
        return None
    diffs = "; ".join(config_differences(w.cfg, chosen))
    which = (f"the sidebar's model, but with {diffs}" if w.cfg.label == chosen.label
             else f"not the sidebar's **{chosen.label}**: {diffs}")
    origin = f"trained on the Training race ({w.label})" if w.source is WeightsSource.TRAINED else f"with {w.label}"
    return (f"This page shows **{w.cfg.label}** {origin}, {which}. "
            "Choose other weights to see the sidebar's model.")


def plain_model(w: LoadedWeights, device: str = "cpu") -> nn.Module:
    """The plain twin of ``w``: its own trained weights after a race, else ``w``'s weights minus the shortcuts."""
    if w.plain_state_dict is not None:
        plain = weights.load_into_copy(w.plain_state_dict, models.build_model(models.plain_config(w.cfg))).model
    else:
        plain = models.plain_twin(w.model)
    return _frozen(plain, device)


# --- the picture --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Picture:
    """A picture made ready for one model: every preprocessing step (the page shows them) and the input batch."""
    steps: dict  # images.preprocess_steps: original (thumbnail), resized, cropped, normalized, pre, original_size
    x: torch.Tensor  # (1, C, H, W) on the device; read-only
    key: str  # the picture's content and its preprocessing: results of equal pictures are shared

    @property
    def cropped(self) -> np.ndarray:
        """What the network sees, as colours (H, W, 3): the heat maps are laid over it."""
        return self.steps["cropped"]


def picture(data: bytes, pre: images.Preprocess, channels: int = 3, device: str = "cpu") -> Picture:
    """Decode untrusted bytes (ImageError with the reason) and preprocess them as ``pre`` says."""
    steps = images.preprocess_steps(images.load_image(data), pre)
    return Picture(steps, images.to_tensor(steps, device, channels), fingerprint(data, pre, channels))


# --- inside one block ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockNorms:
    """RMS (root mean square over every element) of a block's parts, for one picture."""
    name: str  # "layer2.0"
    fx: float  # main path F(x)
    out: float  # block output relu(F(x) + x)
    x: float | None = None  # the shortcut; None in the plain twin


@dataclass(frozen=True)
class NonFinite:
    """Where a forward pass first made NaN or inf, and why, in words."""
    where: str  # the module's name: "layer2.0.bn1"
    why: str


FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # about 3.4e38: past it a float32 is inf


def why_non_finite(module: nn.Module, inputs: tuple) -> str:
    """Why ``module`` turned finite ``inputs`` into NaN or inf (the first module that did, ``NonFiniteWatch``)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None and (
            bad := (module.running_var + module.eps < 0).nonzero().flatten()).numel():
        c = int(bad[0])
        return (f"its running variance is negative ({float(module.running_var[c]):.3g} in channel {c}; "
                f"{bad.numel()} of {module.running_var.numel()} channels): batch norm divides by its square root, and "
                "the square root of a negative number is NaN")
    tensors = [t for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)) if t.is_floating_point()]
    if any(not bool(torch.isfinite(t).all()) for t in tensors):
        return "its own weights hold NaN or inf"
    given = [t for t in inputs if isinstance(t, torch.Tensor)]
    if any(not bool(torch.isfinite(t).all()) for t in given):
        return "its input already held NaN or inf (made outside any layer)"
    big_in = max((float(t.detach().abs().max()) for t in given if t.numel()), default=0.0)
    big_w = max((float(t.detach().abs().max()) for t in tensors if t.numel()), default=0.0)
    return (f"its inputs reach {big_in:.3g} and its weights {big_w:.3g}: their sums of products pass the largest "
            f"float32 ({FLOAT32_MAX:.3g}), which gives inf, and inf - inf gives NaN")


class NonFiniteError(ValueError):
    """Weights that make NaN or inf: where first, and why, in plain words (plain text: no markdown)."""


def non_finite_note(n: NonFinite) -> str:
    """The error shown instead of charts of NaN (plain text, under ``ui.MESSAGE_CHARS``)."""
    return (f"These weights make NaN or inf on this picture: first at {n.where}, where {n.why}. Every number after it "
            "is NaN or inf too, so no chart is drawn. Check how these weights were made, or choose others.")


def finite(c: Capture | None) -> Capture | None:
    """``c`` (None too: not computed yet), unless its forward made NaN or inf: then NonFiniteError, saying where."""
    if c is not None and c.non_finite:
        raise NonFiniteError(non_finite_note(c.non_finite))
    return c


@dataclass(frozen=True, eq=False)
class Capture:
    """What one forward (and one partial backward) showed: a block's views, every block's size, prediction, CAM."""
    block: str  # the block whose views are kept
    channels: np.ndarray  # the kept channels of the output, most active (mean over H, W) first
    n_channels: int  # channels of the block's output
    fx: np.ndarray  # (k, H, W) main path F(x)
    out: np.ndarray  # (k, H, W) output relu(F(x) + x)
    x: np.ndarray | None  # (k, H, W) the shortcut; None in the plain twin
    norms: list[BlockNorms]
    probs: np.ndarray  # (num_classes,) softmax of the logits
    target: int  # the class Grad-CAM explains
    residual: bool
    cam_block: str | None = None  # where Grad-CAM looked (None: not computed)
    cam: np.ndarray | None = None  # (H, W) Grad-CAM upsampled to the input
    cam_lowres: np.ndarray | None = None  # (h, w) at the block's own resolution
    non_finite: NonFinite | None = None  # where the forward first made NaN or inf: then nothing above means anything


def working_copy(model: nn.Module) -> nn.Module:
    """A private copy in eval mode with gradients on: hooks and autograd never touch the shared model."""
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().float().pow(2).mean().sqrt())


def _numpy(t: torch.Tensor, channels: np.ndarray) -> np.ndarray:
    return t.detach()[0, torch.as_tensor(channels, device=t.device)].float().cpu().numpy()  # (k, H, W)


def grad_cam_from(act: torch.Tensor, score: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (Selvaraju et al. 2017): relu(sum_c mean_hw(d score / d A_c) * A_c), then upsampled to ``size``."""
    grads = torch.autograd.grad(score, act)[0]  # backward only as far as the chosen block
    channel_weights = grads.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1): how much each channel matters
    cam = torch.relu((channel_weights * act).sum(dim=1, keepdim=True)).detach()  # (1, 1, h, w)
    from captum.attr import LayerAttribution  # captum is imported where it is used: ~0.5 s off a first screen

    up = LayerAttribution.interpolate(cam, size, interpolate_mode="bilinear")  # captum's upsampling
    return cam[0, 0].cpu().numpy(), up[0, 0].cpu().numpy()


def _watch_blocks(hooks: Hooks, blocks: list[nn.Module], keep: int, cam_at: int | None, seen: dict) -> None:
    """Hooks that record each block's RMS sizes, the kept block's tensors and the Grad-CAM block's output."""
    def on_add(i):
        def hook(module, inputs, output):
            fx, shortcut = inputs
            seen["norms"][i].update(fx=_rms(fx), x=_rms(shortcut))
            if i == keep:
                seen["fx"], seen["x"] = fx, shortcut
        return hook

    def on_out(i):
        def hook(module, inputs, output):
            seen["norms"][i].setdefault("fx", _rms(inputs[0]))  # plain twin: the input of relu_out is F(x)
            seen["norms"][i]["out"] = _rms(output)
            if i == keep:
                seen.setdefault("fx", inputs[0])
                seen["out"] = output
            if i == cam_at:
                seen["cam_act"] = output  # stays in the graph: Grad-CAM needs its gradient
        return hook

    for i, b in enumerate(blocks):
        hooks.forward(b.add, on_add(i))
        hooks.forward(b.relu_out, on_out(i))


def capture(model: models.ResNet, x: torch.Tensor, block: int = -1, cam_block: int | None = -1,
            target: int | None = None, max_channels: int = MAX_CHANNELS, copy_model: bool = True) -> Capture:
    """One forward (+ one partial backward for Grad-CAM) -> feature maps, block sizes, prediction, Grad-CAM.

    ``block`` picks the block whose three views are kept; ``cam_block`` the Grad-CAM block (None: skip it);
    ``target`` the class explained (None: the predicted one). The model passed in is never changed.
    """
    net = working_copy(model) if copy_model else model
    blocks, names = net.blocks(), net.block_names()
    block, cam_at = block % len(blocks), (None if cam_block is None else cam_block % len(blocks))
    seen: dict = {"norms": [dict() for _ in blocks]}
    with Hooks() as hooks, NonFiniteWatch(net) as watch:
        _watch_blocks(hooks, blocks, block, cam_at, seen)
        with torch.set_grad_enabled(cam_at is not None):
            logits = net(x)  # (1, num_classes): the one forward
    bad = watch.first and NonFinite(watch.first, why_non_finite(watch.module, watch.inputs))
    probs = torch.softmax(logits.detach().float(), dim=1)[0].cpu().numpy()
    target = int(probs.argmax()) if target is None else int(target)
    out = seen["out"]
    order = out.detach()[0].float().mean(dim=(1, 2)).argsort(descending=True)[:max_channels].cpu().numpy()
    cam = dict(cam_block=None)
    if cam_at is not None and not bad:
        lowres, up = grad_cam_from(seen["cam_act"], logits[0, target], tuple(x.shape[-2:]))
        cam = dict(cam_block=names[cam_at], cam=up, cam_lowres=lowres)
    return Capture(block=names[block], channels=order, n_channels=int(out.shape[1]), fx=_numpy(seen["fx"], order),
                   out=_numpy(out, order), x=_numpy(seen["x"], order) if "x" in seen else None,
                   norms=[BlockNorms(name=n, **d) for n, d in zip(names, seen["norms"])], probs=probs,
                   target=target, residual=bool(getattr(net.cfg, "residual", True)), non_finite=bad or None, **cam)


def check_budget(cfg: models.ResNetConfig) -> None:
    """Refuse, with the numbers (BudgetError), a model too big for this server: batches of ``IG_CHUNK`` pictures
    through two networks (the plain twin beside it)."""
    budget.check_model(cfg, IG_CHUNK, "Feature maps", nets=2)


@dataclass(frozen=True, eq=False)
class Look:
    """One look inside: these weights, this picture, the block whose views are kept and the Grad-CAM block. Its keys
    name each result by content, so equal looks share results across the class."""
    w: LoadedWeights
    pic: Picture
    block: int = -1
    cam_block: int = -1

    def capture_key(self, model: nn.Module, target: int) -> tuple:
        return "fm", self.w.key, bool(model.cfg.residual), self.pic.key, self.block, self.cam_block, target

    def capture(self, model: nn.Module, target: int) -> Capture:
        """``capture`` of the picture by ``model`` (the weights' own or their plain twin, ``plain_model``), explaining
        ``target`` (``PREDICTED``: the class it predicts)."""
        return capture(model, self.pic.x, self.block, self.cam_block, None if target == PREDICTED else target)

    def attribution_key(self, kind: Attribution, target: int, steps: int) -> tuple:
        """Integrated Gradients depends on its step count; Occlusion does not."""
        return "fm_attr", kind, self.w.key, self.pic.key, target, steps if kind is Attribution.IG else None

    def attribute(self, kind: Attribution, target: int, steps: int,
                  progress: Callable[[float], None] | None = None) -> Heat:
        return attribute(kind, self.w.model, self.pic.x, target, steps, progress)


VIEWS_NOTE = ("Each block computes a correction F(x) and adds its input x: out = relu(F(x) + x). Red = positive, "
              "blue = negative; each channel has one colour scale shared by its three views (hover for values).")
NORMS_NOTE = "Where F(x) is much smaller than x, the block only nudges its input: the shortcut carries it."


def preprocessing_note(pre: images.Preprocess) -> str:
    return (f"Shorter side resized to {pre.resize} px, center {pre.crop}x{pre.crop} crop, then each channel scaled to "
            f"[0, 1] and normalized as (x - mean) / std with mean {pre.mean} and std {pre.std}.")


def views_heading(r: Capture, k: int) -> str:
    return f"Inside block {r.block}: {r.n_channels} channels, the {min(k, len(r.channels))} most active"


def plain_twin_caption(p: Capture, w: LoadedWeights) -> str:
    """The plain twin's prediction and what its weights are."""
    best = top_k(p.probs, w.class_names, 1)[0]
    return f"Plain twin's top class: {text.md(best['name'])} ({best['prob']:.1%}). {PLAIN_TWIN_NOTES[w.source]}"


def top_k(probs: np.ndarray, names: tuple[str, ...] | list[str] | None, k: int = 5) -> list[dict]:
    """The k most probable classes as ``{"index", "name", "prob"}``, most probable first."""
    idx = np.argsort(-probs)[:k]
    return [{"index": int(i), "name": names[i] if names and i < len(names) else f"class {i}",
             "prob": float(probs[i])} for i in idx]


# --- attributions (captum) ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class IGResult:
    """Integrated Gradients of one picture for one class."""
    attr: np.ndarray  # (C, H, W) per input value
    heat: np.ndarray  # (H, W) summed over channels
    delta: float  # completeness error: sum(attr) - (score - baseline_score)
    score: float  # the class score of the picture
    baseline_score: float  # the class score of the baseline (all zeros after normalisation: the colour it subtracts)


class Attribution(str, enum.Enum):
    """The attributions a student runs on demand (the value is the page's name for each)."""
    IG = "Integrated Gradients"
    OCC = "Occlusion"


CAPTURE_LABEL = "Running the picture through the network…"
ATTRIBUTION_LABELS = {Attribution.IG: "Integrated Gradients along the path from the baseline…",
                      Attribution.OCC: "Hiding one square at a time (49 forward passes)…"}


@dataclass(frozen=True, eq=False)
class Heat:
    """An attribution of the input as a signed heat map (H, W), its chart title and what its numbers say."""
    heat: np.ndarray
    title: str
    note: str = ""


def attribute(kind: Attribution, model: nn.Module, x: torch.Tensor, target: int, steps: int = 16,
              progress: Callable[[float], None] | None = None) -> Heat:
    """Integrated Gradients (``steps`` points on the path, ``IG_CHUNK`` at a time) or Occlusion of ``x`` for class
    ``target``."""
    if kind is Attribution.OCC:
        window, stride = occlusion_window(x.shape[-1])
        heat = occlusion(model, x, target, window, stride)
        return Heat(heat, "Occlusion: score drop", occlusion_caption(heat, window, stride))
    ig = integrated_gradients(model, x, target, steps=steps, chunk=IG_CHUNK,
                              on_progress=progress and (lambda done, total: progress(done / total)))
    return Heat(ig.heat, "Integrated Gradients", ig_caption(ig))


def ig_caption(ig: IGResult) -> str:
    """Completeness, in numbers: the attributions add up to the score's rise from the baseline."""
    return (f"Attributions sum to {ig.score - ig.baseline_score + ig.delta:.3f}; the score rose by "
            f"{ig.score - ig.baseline_score:.3f} from a baseline picture of all zeros after normalisation (the colour "
            "the normalisation subtracts: ImageNet's mean colour, or mid-grey).")


def occlusion_caption(heat: np.ndarray, window: int, stride: int) -> str:
    """What the occlusion map's numbers are: a drop of the class score, per pixel, over the squares hiding it."""
    return (f"A {window}x{window} square, moved {stride} px at a time, hides every channel (set to 0 after "
            "normalisation); each pixel shows how much the class score dropped, averaged over the squares that "
            f"hid it. Largest drop {heat.max():.3f}, largest rise {max(0.0, -heat.min()):.3f}.")


def grad_cam(model: nn.Module, x: torch.Tensor, block: int, target: int) -> np.ndarray:
    """captum's LayerGradCam at block ``block`` (output after the block's ReLU), upsampled to the image (H, W)."""
    from captum.attr import LayerAttribution, LayerGradCam

    net = working_copy(model)
    cam = LayerGradCam(net, net.blocks()[block]).attribute(x, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up[0, 0].detach().cpu().numpy()


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, steps: int = 32, chunk: int = 8,
                         baseline: torch.Tensor | None = None, method: str = "gausslegendre",
                         on_progress: Callable[[int, int], None] | None = None) -> IGResult:
    """Integrated Gradients (Sundararajan et al. 2017) with captum's quadrature, ``chunk`` path points at a time;
    ``on_progress(done, total)`` is called after each chunk."""
    net = working_copy(model)
    baseline = torch.zeros_like(x) if baseline is None else baseline
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes_fn, alphas_fn = approximation_parameters(method)
    step_weights, alphas = step_sizes_fn(steps), alphas_fn(steps)
    total = torch.zeros_like(x)
    for start in range(0, steps, chunk):
        a = torch.tensor(alphas[start:start + chunk], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        w = torch.tensor(step_weights[start:start + chunk], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        path = (baseline + a * (x - baseline)).requires_grad_(True)  # (chunk, C, H, W) points on the line
        grads = torch.autograd.grad(net(path)[:, target].sum(), path)[0]
        total += (w * grads).sum(dim=0, keepdim=True)
        if on_progress:
            on_progress(min(start + chunk, steps), steps)
    attr = ((x - baseline) * total).detach()
    with torch.no_grad():
        score, base_score = (float(net(t)[0, target]) for t in (x, baseline))
    delta = float(attr.sum()) - (score - base_score)  # completeness: attributions sum to the score change
    return IGResult(attr=attr[0].cpu().numpy(), heat=attr[0].sum(0).cpu().numpy(), delta=delta, score=score,
                    baseline_score=base_score)


def occlusion_window(size: int) -> tuple[int, int]:
    """The occluding square's side and stride for a ``size`` px picture: 7 x 7 positions, 49 forwards."""
    window = max(1, size // 4)
    return window, max(1, window // 2)


def occlusion(model: nn.Module, x: torch.Tensor, target: int, window: int | None = None,
              stride: int | None = None, per_eval: int = 8) -> np.ndarray:
    """captum's Occlusion: how much the target score drops when a grey square (every channel) hides each region
    (H, W); where squares overlap, a pixel gets the mean drop of the squares that hide it."""
    from captum.attr import Occlusion

    default_window, default_stride = occlusion_window(x.shape[-1])
    window, stride = window or default_window, stride or default_stride
    net = working_copy(model)
    with torch.no_grad():
        attr = Occlusion(net).attribute(x, sliding_window_shapes=(x.shape[1], window, window),
                                        strides=(x.shape[1], stride, stride), target=target, baselines=0.0,
                                        perturbations_per_eval=per_eval)
    return attr[0, 0].cpu().numpy()  # the window spans every channel: captum gives each the same drop, not a third

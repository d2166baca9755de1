"""The lessons: one list that the navigation, the home page, the tests, the screenshots and the benchmark read.

A lesson has one name in every layer: ``pages/<name>.py`` (widgets and layout), ``resviz/lessons/<name>.py``
(its maths) and ``resviz/plots/<name>.py`` (its figures).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    name: str  # the file name in pages/, resviz/lessons/ and resviz/plots/, and the page's URL path
    title: str  # shown in the navigation
    icon: str  # a Material icon name, served with the app (no font server)
    teaches: str  # one line on the home page
    heading: str  # a text the page always shows (tests and screenshots look for it)

    @property
    def page(self) -> str:
        return f"pages/{self.name}.py"


LESSONS = (  # the order a class meets them: the block and its shapes, the degradation race, the signals, the
    # pictures, then beyond the paper (issue 21: Previous / Next follow it)
    Lesson("architecture", "Architecture", ":material/account_tree:", "the network as a graph, tensor shapes "
           "through every block and shortcut, parameters and multiply-accumulates per layer", "Layer table"),
    Lesson("shortcut_lab", "Shortcut lab", ":material/alt_route:", "why x + F(x) needs equal shapes, and how "
           "zero-padding or a 1x1 convolution fixes a mismatch (with the bottleneck's costs)", "Shortcut lab"),
    Lesson("training", "Training race", ":material/sprint:", "press Start and watch a ResNet and its plain twin "
           "learn side by side on the same batches: loss, accuracy and gradient norms, live", "Training race"),
    Lesson("signal_flow", "Signal flow", ":material/monitoring:", "per-element RMS of activations and gradients layer by layer, "
           "a ResNet against its plain twin, with and without batch norm", "Signal flow"),
    Lesson("feature_maps", "Feature maps", ":material/image:", "upload a picture and see F(x), the shortcut x and "
           "their sum inside each block; top-5 classes, Grad-CAM, Integrated Gradients and Occlusion", "Feature maps"),
    Lesson("lesion", "Lesion study", ":material/content_cut:", "delete one block of a trained ResNet and of its "
           "plain twin and measure what is left (Veit et al. 2016)", "Lesion study"),
    Lesson("paths", "Paths", ":material/route:", "a ResNet as 2^n paths of different lengths, and which lengths "
           "carry the gradient (Veit et al. 2016)", "Paths"),
    Lesson("shattered", "Shattered gradients", ":material/grain:", "the input gradient of a deep plain net against "
           "a ResNet's, at initialisation (Balduzzi et al. 2017)", "Shattered gradients"),
    Lesson("landscape", "Loss landscape", ":material/landscape:", "1-D and 2-D slices of the loss around a trained "
           "ResNet and its plain twin (Li et al. 2018)", "Loss landscape"),
)
HOME_HEADING = "What each page teaches"  # the home page's own text, for tests and screenshots


def lesson(name: str) -> Lesson:
    """The lesson called ``name``."""
    return next(item for item in LESSONS if item.name == name)


def page_texts() -> dict[str, str]:
    """Every page of the app, URL path -> a text it always shows (home is ``""``): what tests and tools visit."""
    return {"": HOME_HEADING, **{item.name: item.heading for item in LESSONS}}

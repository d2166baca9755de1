"""Home: what a residual block is (as a picture), why He et al. built it, and what each page teaches."""
from pathlib import Path

import streamlit as st

from resviz.lessons import HOME_HEADING, LESSONS

BLOCK_PICTURE = Path(__file__).resolve().parent.parent / "assets" / "residual_block.svg"

st.title("How residual networks work")  # one line on a projector
st.image(str(BLOCK_PICTURE), width="stretch",  # the column's width: whole on a projector too
         caption="A residual block: the basic block of He et al. (2016), Fig. 5 (left): two 3x3 convolutions, each "
                 "followed by batch norm before its ReLU (§3.4).")
st.markdown(
    r"""
A plain network asks a stack of layers to learn a mapping $H(x)$ directly. A **residual block** asks the layers
only for the *residual* $F(x) = H(x) - x$ and adds the input back through a **shortcut**: $H(x) = F(x) + x$.

**Why.** In He et al.'s experiments a deeper plain network reached a *higher training error* than a shallower one
(the degradation problem, §1 and Fig. 1), although copying its input through the extra layers would have done no
worse. Their **hypothesis** (§1, §3.1): a stack of nonlinear layers has difficulty learning the identity, while
pushing $F(x)$ towards zero is easy. The Training race below puts it to the test on the same batches.

The addition needs $F(x)$ and $x$ to have the same shape; where a block changes the number of channels or the image
size, the shortcut reshapes $x$ (zero-padding, or a 1x1 convolution). He, Zhang, Ren and Sun, *Deep Residual
Learning for Image Recognition*, CVPR 2016.
"""
)
st.subheader(HOME_HEADING)
for lesson in LESSONS:
    st.page_link(lesson.page, label=f"{lesson.title}: {lesson.teaches}", icon=lesson.icon)
st.info("Pick the model in the sidebar: it is shared by every page, and only for you (each student has their own).")

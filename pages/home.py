"""Home: what a residual block is, and what each page teaches."""
import streamlit as st

from resviz.lessons import HOME_HEADING, LESSONS

st.title("resviz: how residual networks work")
st.markdown(
    r"""
A plain network asks a stack of layers to learn a mapping $H(x)$ directly.
A **residual block** asks it to learn only the *residual* $F(x) = H(x) - x$ and adds the input back
through a **shortcut**:

$$H(x) = F(x) + x$$

If the best thing a block can do is nothing, it only has to push $F(x)$ to zero, which is easy; a plain
stack would have to learn the identity, which is hard. The addition needs $F(x)$ and $x$ to have the same
shape; where a block changes the number of channels or the image size, the shortcut reshapes $x$
(zero-padding, or a 1x1 convolution). He et al., *Deep Residual Learning for Image Recognition*, CVPR 2016.
"""
)
st.subheader(HOME_HEADING)
for lesson in LESSONS:
    st.page_link(lesson.page, label=f"{lesson.title}: {lesson.teaches}", icon=lesson.icon)
st.info("Pick the model in the sidebar: it is shared by every page, and only for you (each student has their own).")

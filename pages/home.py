"""Home: what a residual block is, and what each page teaches."""
import streamlit as st

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
st.subheader("What each page teaches")
st.page_link("pages/architecture.py", label="Architecture: the network as a graph, tensor shapes through every "
             "block and shortcut, parameters and multiply-accumulates per layer", icon=":material/account_tree:")
st.page_link("pages/shortcut_lab.py", label="Shortcut lab: why x + F(x) needs equal shapes, and how zero-padding or a "
             "1x1 convolution fixes a mismatch (with the bottleneck's costs)", icon=":material/alt_route:")
st.page_link("pages/signal_flow.py", label="Signal flow: activation and gradient norms layer by layer, a ResNet "
             "against its plain twin, with and without batch norm", icon=":material/monitoring:")
st.page_link("pages/feature_maps.py", label="Feature maps: upload a picture and see F(x), the shortcut x and their sum "
             "inside each block; top-5 classes, Grad-CAM, Integrated Gradients and Occlusion", icon=":material/image:")
st.page_link("pages/training.py", label="Training race: press Start and watch a ResNet and its plain twin learn "
             "side by side on the same batches: loss, accuracy and gradient norms, live", icon=":material/sprint:")
st.page_link("pages/lesion.py", label="Lesion study: delete one block of a trained ResNet and of its plain twin; "
             "the ResNet survives, the plain net collapses (Veit et al. 2016)", icon=":material/content_cut:")
st.page_link("pages/paths.py", label="Paths: a ResNet as 2^n paths of different lengths, and which lengths carry the "
             "gradient (Veit et al. 2016)", icon=":material/route:")
st.page_link("pages/shattered.py", label="Shattered gradients: the input gradient of a deep plain net is noise, a "
             "ResNet's stays smooth (Balduzzi et al. 2017)", icon=":material/grain:")
st.page_link("pages/landscape.py", label="Loss landscape: 1-D and 2-D slices of the loss around a trained ResNet and "
             "its plain twin (Li et al. 2018)", icon=":material/landscape:")
st.info("Pick the model in the sidebar: it is shared by every page, and only for you (each student has their own).")

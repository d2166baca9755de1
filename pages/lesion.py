"""Lesion study: delete one block at a time from a trained ResNet and its plain twin (Veit et al. 2016)."""
import streamlit as st

from resviz import pair, ui
from resviz.lessons import lesion
from resviz.plots.lesion import plot_lesion

st.title("Lesion study: delete one block")
# The first screen is the verdict and the chart; the pair, the images and the paper's setup are one click away
# (open by itself when a link names the pair, a bound widget's changed choice, or a pair is to be trained here:
# its button is in there)
training_here = "le_pair_choice" in st.query_params or st.session_state.get("le_pair_choice") == ui.TRAIN_HERE
with st.expander("The pair, the test images, and what the paper did", expanded=training_here, key="le_settings"):
    p = ui.pair_picker_ui("le")
    n = st.select_slider("Test images", (100, 250, 500, 1000), value=pair.EVAL_IMAGES, key="le_n",
                         bind="query-params",
                         help=f"Fresh built-in images the pair never saw in training ({pair.EVAL_IMAGES}: the images "
                              "of the accuracies above). More images, narrower 95% intervals.")
    st.markdown(
        "Delete one block of a trained ResNet and of its trained plain twin, **at test time**, and measure what is "
        "left. Veit, Wilber & Belongie (2016), Section 4.1 and Fig. 3: a trained 110-layer ResNet barely notices "
        "(except at downsampling blocks), while a plain VGG net left without any one layer is reduced to guessing.")
    st.markdown(
        "In a ResNet, deleting a block removes its residual branch $F$, so the block outputs only its shortcut: "
        "`relu(shortcut(x))`; at a downsampling block the shortcut is the zero-padded subsample (option A) or the "
        "1×1 projection (B/C). In the plain net a block whose input and output shapes match becomes the identity; "
        "a block that changes the shape cannot be deleted (marked ✕). Veit, Wilber & Belongie (2016), *Residual "
        "Networks Behave Like Ensembles of Relatively Shallow Networks*, NeurIPS.")
if p is None:
    ui.stop_page()
both = None
with ui.friendly_errors("Running the lesion study"):
    both = ui.background_result(("lesion", p.key, n), lambda cb: lesion.study_pair(p, n, cb),
                                "Deleting blocks of both networks…")
if both is None:
    ui.stop_page()
res, plain = both
c = lesion.LesionComparison(res, plain, p.chance)
k = int(c.comparable.sum())
v = lesion.verdict(c, p.guessing)  # one box: green as in the paper, yellow against it, blue no verdict
getattr(st, v.tone.value)(v.text)
st.plotly_chart(ui.figure(("lesion", p.key, n), lambda: plot_lesion(c)), key="le_chart")
m1, m2, m3 = st.columns(3)
# Labels short enough to stay whole in a third of the page on a projector; the help says the rest
m1.metric("ResNet: share lost", c.share(res).words(),
          help="Share of its learned accuracy lost by one deletion; what it learned is its accuracy above "
               f"guessing; ± is a 95% interval on {n} images. {c.mean_drop(res):.1%} accuracy points on average "
               f"over the {k} blocks that keep the shape (both nets can lose those), from {res.intact:.1%} intact; "
               f"guessing gets {c.chance:.0%}.")
m2.metric("plain twin: share lost", c.share(plain).words(),
          help=f"Share of its learned accuracy lost by one deletion. {c.mean_drop(plain):.1%} accuracy points on "
               f"average over the same {k} blocks, from {plain.intact:.1%} intact: a net that learned little has "
               "little to lose, hence the share.")
m3.metric("ResNet: downsampling", f"{c.resnet_downsampling_drop:.1%}",
          help="Accuracy the ResNet loses at a downsampling block. The plain twin cannot lose these blocks: its "
               "shapes would no longer fit.")
st.dataframe({"block": res.names, "downsampling": res.downsampling,
              "ResNet accuracy": [f"{a:.1%}" for a in res.accuracy],
              "plain accuracy": [f"{a:.1%}" if ok else "cannot delete" for a, ok in zip(plain.accuracy,
                                                                                        plain.possible)]},
             key="le_table", hide_index=True)
st.caption(f"Bars and bands: 95% intervals on {n} images. 'cannot delete': that plain block changes the shape, so "
           f"nothing could replace it. This pair trained for {p.trained.steps or 'a few hundred'} steps; He et al. "
           "(2016, Section 4.2) trained their CIFAR-10 ResNets for 64,000 steps of 128 images, and Veit et al. "
           "lesion such fully trained nets: what you see is what this pair does.")

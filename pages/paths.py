"""Paths: a ResNet as 2^n paths of different lengths, and which lengths carry the gradient (Veit et al. 2016)."""
from dataclasses import replace

import streamlit as st

from resviz import pair, paths, ui
from resviz.plots.beyond import plot_path_gradients

st.title("Paths: a ResNet is many networks of different depths")
st.markdown(
    "Unroll $n$ residual blocks $y = x + F(x)$ and you get $2^n$ paths from input to output: at each block a "
    "path either goes through the residual branch $F$ or skips it. A path through $k$ branches has length $k$ "
    "and there are $\\binom{n}{k}$ of them, so path lengths follow a binomial distribution (a). "
    "Veit, Wilber & Belongie (2016), *Residual Networks Behave Like Ensembles of Relatively Shallow Networks*, "
    "NeurIPS, section 6, measured how much gradient each length carries: in the backward pass, let the "
    "gradient flow through $k$ randomly chosen residual branches and through the shortcuts of all other "
    "blocks; the gradient reaching the first block's input then travelled one path of length $k$ (b). "
    "Times the number of such paths it gives the total for length $k$ (c). In the paper's trained 110-layer "
    "ResNet (54 blocks) nearly all the gradient came from paths of only 5 to 17 blocks: the effective "
    "paths are short. Compare with what the model measured here shows, at initialisation and trained."
)
source = st.radio("Measure on", ("the sidebar's ResNet (random weights)", "a trained ResNet"), key="pa_source",
                  horizontal=True)
samples = st.slider("Random paths per length", 1, 8, 2, key="pa_samples",
                    help="The paper averages over many random choices of the k branches; more is slower.")
found = ui.beyond_pair_ui("pa") if source == "a trained ResNet" else None
with ui.friendly_errors("Measuring the gradient per path length"):
    if source == "a trained ResNet":
        if found is None:
            st.stop()
        cfg, model, key = found["cfg"], found["resnet"], found["key"]
    else:
        sel = ui.current_selection()
        cfg, device = sel.cfg, sel.device
        model, key = ui.load_model(cfg, device), f"init-{cfg}-{device}"
    x, y = pair.probe_batch(cfg, 8)
    x = x.to(next(model.parameters()).device)
    y = y.to(x.device) if y is not None else None
    result = ui.beyond_result(("paths", key, samples),
                              lambda cb: paths.gradient_by_path_length(model, x, y, samples, on_progress=cb),
                              "Sending gradients down random paths…")
    n = result["n_blocks"]
    st.plotly_chart(plot_path_gradients(result), key="pa_chart")
    k = result["k"]
    cum = result["share"].cumsum()
    k90 = int(k[(cum >= 0.9).argmax()])
    c1, c2, c3 = st.columns(3)
    c1.metric("blocks n", n, help=f"{cfg.label}: 2^{n} = {2**n:,} paths")
    modes = k[result["count"] == result["count"].max()]
    c2.metric("most common path length", " and ".join(str(int(m)) for m in modes),
              help="The mode of Binomial(n, 1/2): n/2, or the two lengths beside it when n is odd.")
    c3.metric("90% of the gradient: paths up to length", k90,
              help="Read off chart (c): the running sum of the shares reaches 90% at this length.")
    if y is None:
        st.caption("This model does not fit the built-in images, so it is probed with random images and "
                   "the loss is taken against its own predictions.")

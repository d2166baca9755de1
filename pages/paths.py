"""Paths: a ResNet as 2^n paths of different lengths, and which lengths carry the gradient (Veit et al. 2016)."""
import streamlit as st

from resviz import pair, ui
from resviz.lessons import paths
from resviz.plots.paths import plot_path_gradients

SOURCES = {"init": "the sidebar's ResNet, random weights", "trained": "a trained ResNet"}

st.title("Paths through a ResNet")
c1, c2 = st.columns(2)  # the exact toggle's label whole on a projector
source = c1.radio("Measure on", list(SOURCES), format_func=SOURCES.get, key="pa_source",
                  bind="query-params", horizontal=True)
if source == "trained":
    p = ui.pair_picker_ui("pa")
    if p is None:
        ui.stop_page()
    cfg, model, key, guessing = p.cfg, p.resnet, ("trained", p.key), p.guessing
else:
    sel = ui.current_selection()
    cfg, model, key, guessing = sel.cfg, ui.load_model(sel.cfg, sel.device), ("init", sel.cfg, sel.device), ()
    st.caption(f"**{cfg.label} with random weights** (seed 0), untrained: the paper measured a trained net.")
n = len(model.blocks())
exact = paths.can_be_exact(n) and c2.toggle(f"Every path (all 2^{n} = {2**n:,}: exact)", True, key="pa_exact",
                                            bind="query-params",
                                            help="Off: a few random paths per length, as the paper does for 54 blocks.")
samples = 0 if exact else c2.slider("Random paths per length", 1, 8, 2, key="pa_samples", bind="query-params",
                                    help="The paper averages over many random choices of the k branches; more is "
                                         "slower.")
g, gkey = None, ("paths", *key, "exact" if exact else samples)
with ui.friendly_errors("Measuring the gradient per path length"):
    x, y = pair.probe_batch(cfg, 8)
    x = x.to(next(model.parameters()).device)
    y = y.to(x.device) if y is not None else None
    g = ui.background_result(gkey, lambda cb: paths.gradient_by_path_length(model, x, y, samples, on_progress=cb,
                                                                            exact=exact),
                             f"Sending gradients down {'every path' if exact else 'random paths'}…")
if g is None:
    ui.stop_page()
tone, text = paths.verdict(g, guessing)
getattr(st, tone.value)(text)
st.plotly_chart(ui.figure(gkey, lambda: plot_path_gradients(g)), key="pa_chart")
m1, m2 = st.columns(2)  # two a row: each label whole on a projector
m3, m4 = st.columns(2)
m1.metric("blocks n", g.n_blocks, help=f"{cfg.label}: 2^{g.n_blocks} = {2**g.n_blocks:,} paths")
m2.metric("most common path length", " and ".join(str(int(m)) for m in g.typical_lengths),
          help="The mode of Binomial(n, 1/2): n/2, or the two lengths beside it when n is odd (exact: it counts "
               "paths).")
m3.metric("mean path length of the gradient", f"{g.mean_length:.1f}" + ("" if g.exact else " (estimate)"),
          help="Path lengths weighted by their share of the gradient in chart (c).")
m4.metric("90% of the gradient within length", f"{g.length_reaching(0.9)}" + ("" if g.exact else " (estimate)"),
          help="Read off chart (c): the running sum of the shares reaches 90% at this length.")
if y is None:
    st.caption("This model does not fit the built-in images, so it is probed with random images and "
               "the loss is taken against its own predictions.")
# What the paper did, under the first screen's verdict and chart
st.markdown(
    "Unroll $n$ residual blocks $y = x + F(x)$: each block is either passed through its branch $F$ or skipped, "
    "so there are $2^n$ paths and $\\binom{n}{k}$ of them have length $k$ (a). Veit, Wilber & Belongie (2016), "
    "Section 5.2 and Fig. 6: in a trained 110-layer ResNet (54 blocks) almost all the gradient came from paths "
    "only **5 to 17 blocks** long, although most paths are 27 blocks long."
)
with st.expander("How the gradient of one path is measured", key="pa_how"):
    st.markdown(
        "In the backward pass, let the gradient flow through $k$ randomly chosen residual branches and through the "
        "shortcuts of all other blocks; the gradient reaching the first block's input then travelled one path of "
        "length $k$ (b). Times the number of such paths it gives the total for length $k$ (c). Up to 512 paths "
        "(ResNet-20's 9 blocks) every path is measured instead, so (b) is exact for these images. Veit, Wilber & "
        "Belongie (2016), *Residual Networks Behave Like Ensembles of Relatively Shallow Networks*, NeurIPS.")

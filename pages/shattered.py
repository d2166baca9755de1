"""Shattered gradients: at initialisation a deep plain net's input gradient is noise; a ResNet's decorrelates slowly."""
import streamlit as st

from resviz import ui
from resviz.lessons import shattered
from resviz.plots.shattered import plot_depth_curve, plot_shattered

st.title("Shattered gradients")
c1, c2 = st.columns(2)
depth = c1.slider("Depth (hidden layers)", 2, 100, 24, step=2, key="sh_depth", bind="query-params",
                  help="The ResNet has depth/2 blocks of two layers each: the same number of layers.")
seed = int(c2.number_input("Initialisation seed", 0, 999, 0, key="sh_seed", bind="query-params"))
# The first screen: the verdict and the curve it reads (over several initialisations); one initialisation's sweep
# below it. The sweep is quick and is computed first, so it shows while the curve is still being computed.
curve_part, sweep_part = st.container(), st.container()

sweeps = curve = None
with sweep_part, ui.friendly_errors("Computing the gradients"):
    sweeps = ui.background_result(("shattered", depth, seed), lambda cb: tuple(
        shattered.shattered_sweep(shattered.SweepConfig(depth=depth, residual=r, seed=seed)) for r in (False, True)),
        "Sweeping the input through both networks…")
if sweeps is None:
    ui.stop_page()
plain, res = sweeps
with sweep_part:
    st.subheader(f"Seed {seed} alone: the gradient along the input")
    m1, m2 = st.columns(2)  # labels short enough to stay whole on a projector; the help says the rest
    lag1 = ("Correlation of the gradients at neighbouring points of the sweep (lag 1): 1 = perfectly smooth, "
            "0 = white noise.")
    m1.metric("plain net: lag-1 correlation", f"{plain.lag1:.2f}", help=lag1)
    m2.metric("ResNet: lag-1 correlation", f"{res.lag1:.2f}", help=lag1)
    st.plotly_chart(ui.figure(("shattered", depth, seed), lambda: plot_shattered(plain, res, depth)), key="sh_chart")
    st.markdown(
        "The gradient $\\partial\\,\\text{output} / \\partial x$ of a freshly initialised network, along a 1-D input "
        "swept from −2 to 2. Balduzzi et al. (2017) show that the correlation between gradients at nearby inputs "
        "decays exponentially with depth in a feedforward net, until the gradient looks like **white noise**, and "
        "only **sublinearly** in a ResNet: its gradients decorrelate too, but slowly."
    )
    with st.expander("The setup, and the paper", key="sh_setup"):
        st.markdown(
            "The paper's own setup: fully connected ReLU nets of width 200 with batch norm, the ResNet built from "
            "two-layer blocks $y = x + F(x)$, 256 inputs from −2 to 2. When neighbouring gradients are uncorrelated, "
            "a gradient step tells you nothing about nearby inputs. Balduzzi, Frean, Leary, Lewis, Ma & McWilliams "
            "(2017), *The Shattered Gradients Problem: If resnets are the answer, then what is the question?*, ICML.")
seeds = shattered.curve_seeds(seed)
with curve_part:
    st.subheader(f"Correlation against depth, over {len(seeds)} initialisations")
    with ui.friendly_errors("Computing the gradients"):
        curve = ui.background_result(("shattered-depth", seeds), lambda cb: shattered.depth_curve(
            shattered.SweepConfig(), on_progress=cb, seeds=seeds),
            f"Sweeping nets of every depth, {len(seeds)} times…")
if curve is None:
    ui.stop_page()
with curve_part:
    tone, text = shattered.depth_verdict(curve)
    getattr(st, tone.value)(text)
    st.plotly_chart(ui.figure(("shattered-depth", seeds, depth), lambda: plot_depth_curve(curve, depth)),
                    key="sh_depth_chart")
    st.caption(f"Lag-1 correlation for nets of {', '.join(map(str, curve.depths))} layers, seeds {seeds[0]}–"
               f"{seeds[-1]}: 1 = perfectly smooth, 0 = white noise. One initialisation's curve jumps from depth to "
               f"depth, so the lines are the mean of the {len(seeds)} and the bands span the lowest to the highest. "
               f"The sweep below is seed {seed} alone. Batch norm takes its statistics from the sweep itself, then is "
               "frozen, so the gradient at each point depends only on that point. Random weights, untrained: the "
               "paper's analysis is about initialisation.")

"""Shattered gradients: at initialisation a deep plain net's input gradient is noise, a ResNet's is not."""
import streamlit as st

from resviz import shattered, ui
from resviz.plots.beyond import plot_shattered

st.title("Shattered gradients: noise in a deep plain net, smooth in a ResNet")
st.markdown(
    "Feed a 1-D input $x$ swept from −2 to 2 through a freshly initialised network and plot the gradient "
    "$\\partial\\,\\text{output} / \\partial x$ at each point, with its autocorrelation along the sweep. "
    "This is the paper's own setup: fully connected ReLU nets of width 200 with batch norm, the ResNet built from "
    "two-layer blocks $y = x + F(x)$. As depth grows, the plain net's gradient looks like white noise "
    "(autocorrelation near 0 after lag 0, so a gradient step tells you nothing about nearby inputs) while the "
    "ResNet's stays correlated. Balduzzi, Frean, Leary, Lewis, Ma & McWilliams (2017), *The Shattered Gradients "
    "Problem: If resnets are the answer, then what is the question?*, ICML."
)
c1, c2 = st.columns(2)
depth = c1.slider("Depth (hidden layers)", 2, 100, 24, step=2, key="sh_depth",
                  help="The ResNet has depth/2 blocks of two layers each: the same number of layers.")
seed = c2.number_input("Initialisation seed", 0, 999, 0, key="sh_seed")


@st.cache_data(max_entries=64, show_spinner="Sweeping the input through both networks…")
def sweep(depth: int, residual: bool, seed: int) -> dict:
    return shattered.shattered_sweep(shattered.SweepConfig(depth=depth, residual=residual, seed=seed))


with ui.friendly_errors("Computing the gradients"):
    plain, res = sweep(depth, False, int(seed)), sweep(depth, True, int(seed))
    st.plotly_chart(plot_shattered(plain, res, depth), key="sh_chart")
    m1, m2 = st.columns(2)
    m1.metric("plain: correlation of neighbouring gradients (lag 1)", f"{plain['lag1']:.2f}")
    m2.metric("ResNet: correlation of neighbouring gradients (lag 1)", f"{res['lag1']:.2f}")
    st.caption("Both nets use batch norm with statistics taken from the sweep itself, then frozen, so the gradient "
               "at each point depends only on that point. 1 = perfectly smooth; 0 = white noise.")

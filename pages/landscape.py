"""Loss landscape: 1-D and 2-D slices of the loss around a trained ResNet and its plain twin (Li et al. 2018)."""
import streamlit as st

from resviz import diskcache, landscape, pair, ui
from resviz.plots.beyond import plot_landscape_1d, plot_landscape_contours, plot_landscape_surfaces

COARSE, FINE, BATCH, FINE_BATCH = 7, 21, 32, 256  # live grid small; the background one finer and on more images

st.title("Loss landscape: why a ResNet is easier to train")
st.markdown(
    "Around the trained weights $w$ we evaluate the loss at $w + \\alpha d_1 + \\beta d_2$ for two random "
    "directions. Each direction is *filter-normalised*: every filter is rescaled to the norm of the matching "
    "filter of $w$ (biases and batch-norm parameters stay put), so the picture does not depend on the scale of "
    "the weights. Li, Xu, Taylor, Studer & Goldstein (2018), *Visualizing the Loss Landscape of Neural Nets*, "
    "NeurIPS, found that shortcuts keep the landscape smooth and nearly convex around the minimum, while a deep "
    "plain net's is chaotic. The star marks the trained weights."
)
found = ui.beyond_pair_ui("ls")
if not found:
    st.stop()
c1, c2 = st.columns(2)
span = c1.select_slider("How far to step (span)", (0.25, 0.5, 1.0), value=1.0, key="ls_span",
                        help="α and β run from −span to +span; 1 = one filter norm away from the trained weights.")
seed = c2.number_input("Direction seed", 0, 99, 0, key="ls_seed")
with ui.friendly_errors("Computing the loss landscape"):
    pair.check_pair_config(found["cfg"])
    x, y = pair.eval_data(found["cfg"], FINE_BATCH)
    dev = next(found["resnet"].parameters()).device
    x, y = x.to(dev), y.to(dev)
    args = (found["resnet"], found["plain"], x[:BATCH], y[:BATCH])
    one = ui.beyond_result(("ls1", found["key"], span, seed), lambda cb: landscape.pair_grids(
        *args, 2 * COARSE - 1, span, 1, int(seed), cb), "1-D slice…")
    st.subheader(f"1-D slice ({2 * COARSE - 1} points on {BATCH} images, computed live)")
    st.plotly_chart(plot_landscape_1d(*landscape.split_pair(one)), key="ls_1d")
    fine_key = f"landscape-{found['key']}-span{span}-seed{seed}-{FINE}x{FINE}-n{FINE_BATCH}"
    fine = diskcache.load(fine_key)
    if fine is not None:
        grids, what = fine, f"{FINE}×{FINE} grid on {FINE_BATCH} images, computed in the background earlier"
    else:
        grids = ui.beyond_result(("ls2", found["key"], span, seed), lambda cb: landscape.pair_grids(
            *args, COARSE, span, 2, int(seed), cb), "2-D slice (coarse grid)…")
        what = f"coarse {COARSE}×{COARSE} grid on {BATCH} images, computed live"
        state = landscape.start_background(fine_key, lambda: landscape.pair_grids(
            found["resnet"], found["plain"], x, y, FINE, span, 2, int(seed)))
        st.info({"running": f"A finer {FINE}×{FINE} grid is being computed in the background; it will show "
                            "here on a later visit (reload the page in a few minutes).",
                 "busy": "The server is already computing other fine grids; this one will start on a later visit.",
                 "done": "The finer grid is ready: reload the page."}[state])
    res, plain = landscape.split_pair(grids)
    st.subheader(f"2-D slice ({what})")
    st.plotly_chart(plot_landscape_contours(res, plain), key="ls_contour")
    st.plotly_chart(plot_landscape_surfaces(res, plain), key="ls_surface")
    st.caption(f"Loss at the trained weights: ResNet {res['loss'][len(res['betas']) // 2, len(res['alphas']) // 2]:.3f}, "
               f"plain twin {plain['loss'][len(plain['betas']) // 2, len(plain['alphas']) // 2]:.3f} "
               "(cross-entropy, batch norm in eval mode). A pair trained for a few hundred steps is far from the "
               "paper's fully trained 56- and 110-layer nets: what you see is what this pair does.")

"""Loss landscape: 1-D and 2-D slices of the loss around a trained ResNet and its plain twin (Li et al. 2018)."""
import streamlit as st

from resviz import runs, ui
from resviz.lessons import landscape as ls
from resviz.plots.landscape import plot_landscape_1d, plot_landscape_contours, plot_landscape_surfaces

st.title("Loss landscape: why a ResNet is easier to train")
st.markdown(
    "The loss around the trained weights $w$, at $w + \\alpha d_1 + \\beta d_2$ for two random directions. "
    "Li, Xu, Taylor, Studer & Goldstein (2018), Section 6 and Fig. 5: with shortcuts the landscape stays smooth "
    "and nearly convex around the minimum; without them it is still smooth at 20 layers but turns chaotic at 56 "
    "and 110. The star marks the trained weights."
)
with st.expander("How the directions are chosen"):
    st.markdown(
        "Each direction is *filter-normalised*: every filter is rescaled to the norm of the matching filter of $w$ "
        "(biases and batch-norm parameters stay put), so the picture does not depend on the scale of the weights. "
        "Li et al. (2018), *Visualizing the Loss Landscape of Neural Nets*, NeurIPS, Section 4.")
p = ui.pair_picker_ui("ls")
if p is None:
    st.stop()
c1, c2 = st.columns(2)
span = c1.select_slider("How far to step (span)", (0.25, 0.5, 1.0), value=1.0, key="ls_span",
                        help="α and β run from −span to +span; 1 = one filter norm away from the trained weights.")
seed = int(c2.number_input("Direction seed", 0, 99, 0, key="ls_seed"))


POLL_S = 2.0  # while the finer grid computes, the page looks again this often (and so keeps it wanted)


@st.fragment(run_every=POLL_S)
def wait_for_the_finer_grid(watch):
    """Tells how far the finer grid is; when it is ready the whole page redraws with it."""
    status = watch.snapshot().status  # looking keeps the run going; a closed page stops looking, and the run stops
    if status.state is runs.State.FINISHED:
        st.rerun()
    if status.state is runs.State.QUEUED:
        st.info(f"A finer {ls.FINE}×{ls.FINE} grid on {ls.FINE_BATCH} images waits for the server "
                f"(number {status.position} in line); it replaces this one here by itself while the page stays open.")
    elif status.state is runs.State.RUNNING:
        st.info(f"A finer {ls.FINE}×{ls.FINE} grid on {ls.FINE_BATCH} images is being computed "
                f"({status.progress or 0:.0%} done); it replaces this one here by itself while the page stays open.")
    else:
        st.warning(f"The finer grid stopped ({status.error or status.state.value}); reload the page to try again.")


one = grids = finer = None
with ui.friendly_errors("Computing the loss landscape"):
    one = ui.background_result(("landscape-1d", p.key, span, seed), lambda cb: ls.line(p, span, seed, cb),
                               "1-D slice…")
if one is None:
    st.stop()
st.subheader(f"1-D slice ({2 * ls.COARSE - 1} points on {ls.BATCH} images, computed live)")
st.plotly_chart(ui.figure(("landscape-1d", p.key, span, seed), lambda: plot_landscape_1d(one)), key="ls_1d")
with ui.friendly_errors("Computing the loss landscape"):
    grids = ls.stored_fine_grid(p, span, seed)  # computed before, by anyone?
    if grids is None:
        grids = ui.background_result(("landscape-2d", p.key, span, seed), lambda cb: ls.coarse_grids(
            p, span, seed, cb), "2-D slice (coarse grid)…")
        if grids is not None:  # its shared run, joined or started only now: the page watches it at once
            finer = ls.finer_grid(p, span, seed)
            grids = finer.grids or grids
if grids is None:
    st.stop()
fine = finer is None or finer.grids is not None  # stored before, or the finer run has finished
if fine:
    st.subheader(f"2-D slice ({ls.FINE}×{ls.FINE} grid on {ls.FINE_BATCH} images)")
else:
    st.subheader(f"2-D slice (coarse {ls.COARSE}×{ls.COARSE} grid on {ls.BATCH} images, computed live)")
    wait_for_the_finer_grid(finer.watch)  # the fragment holds the watch and looks at it every POLL_S
rough_res, rough_plain = grids.resnet.roughness(), grids.plain.roughness()
m1, m2 = st.columns(2)
m1.metric("ResNet: roughness", f"{rough_res:.3f}")
m2.metric("plain twin: roughness", f"{rough_plain:.3f}")
depth = f"{p.cfg.depth} layers"
if rough_plain > rough_res:
    st.markdown(f"Here ({depth}) the plain twin's slice is **rougher** than the ResNet's.")
elif ls.rougher_twin_expected(p.cfg):
    st.markdown(f"Here ({depth}) the plain twin's slice is **not** rougher than the ResNet's: not what Li et al. "
                "found for nets this deep.")
else:
    st.markdown(f"Here ({depth}) the plain twin's slice is not rougher than the ResNet's: at 20 layers Li et al. "
                "also found the two alike. They saw the plain twin's turn chaotic at 56 layers: try the resnet56 "
                "pair.")
st.plotly_chart(ui.figure(("ls_contour", p.key, span, seed, fine), lambda: plot_landscape_contours(grids)),
                key="ls_contour")
st.plotly_chart(ui.figure(("ls_surface", p.key, span, seed, fine), lambda: plot_landscape_surfaces(grids)),
                key="ls_surface")
st.caption("Roughness: how far log10 loss strays from the best-fitting smooth bowl over the grid "
           "(root-mean-square; 0 = a perfect bowl). Both surfaces share one height and colour scale. "
           f"Loss at the trained weights: ResNet {grids.resnet.centre_loss:.3f}, plain twin "
           f"{grids.plain.centre_loss:.3f} (cross-entropy, batch norm in eval mode). Li et al. studied "
           "fully trained 20- to 110-layer nets: what you see is what this pair does.")

"""Loss landscape: 1-D and 2-D slices of the loss around a trained ResNet and its plain twin (Li et al. 2018)."""
import streamlit as st

from resviz import runs, ui
from resviz.lessons import landscape as ls
from resviz.plots.landscape import (plot_landscape_1d, plot_landscape_contours, plot_landscape_surfaces,
                                   plot_negative_curvature)

st.title("Loss landscape")
# The first screen is the verdict and the 2-D slice; the pair, the slice's settings and the paper's setup are one
# click away (open by itself when a link names the pair, a bound widget's changed choice, or a pair is to be
# trained here: its button is in there)
training_here = "ls_pair_choice" in st.query_params or st.session_state.get("ls_pair_choice") == ui.TRAIN_HERE
with st.expander("The pair, the slice, and what the paper did", expanded=training_here, key="ls_settings"):
    p = ui.pair_picker_ui("ls")
    c1, c2 = st.columns(2)
    span = c1.select_slider("How far to step (span)", (0.25, 0.5, 1.0), value=1.0, key="ls_span",
                            bind="query-params", help="α and β run from −span to +span; 1 = one filter norm away "
                                                      "from the trained weights.")
    seed = int(c2.number_input("Direction seed", 0, 99, 0, key="ls_seed", bind="query-params"))
    st.markdown(
        "The loss around the trained weights $w$, at $w + \\alpha d_1 + \\beta d_2$ for two random directions. "
        "Li, Xu, Taylor, Studer & Goldstein (2018), Section 6 and Fig. 5: with shortcuts the landscape stays smooth "
        "and nearly convex around the minimum; without them it is still smooth at 20 layers but turns chaotic at 56 "
        "and 110. The star marks the trained weights.")
    st.markdown(
        "Each direction is *filter-normalised*: every filter is rescaled to the norm of the matching filter of $w$ "
        "(biases and batch-norm parameters stay put), so the picture does not depend on the scale of the weights. "
        "Li et al. (2018), *Visualizing the Loss Landscape of Neural Nets*, NeurIPS, Section 4.")
if p is None:
    ui.stop_page()

POLL_S = 2.0  # while the finer grid computes, the page looks again this often (and so keeps it wanted)


@ui.timed_fragment(run_every=POLL_S)
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


# On the page: the verdict, the 2-D slice (the main figure), then the 1-D slice, computed first because it is quick
verdict_part, slice_part, line_part = st.container(), st.container(), st.container()
one = grids = finer = None
with line_part, ui.friendly_errors("Computing the loss landscape"):
    one = ui.background_result(("landscape-1d", p.key, span, seed), lambda cb: ls.line(p, span, seed, cb),
                               "1-D slice…")
if one is None:
    ui.stop_page()
with line_part:
    st.subheader(f"1-D slice ({2 * ls.COARSE - 1} points on {ls.BATCH} images, computed live)")
    st.plotly_chart(ui.figure(("landscape-1d", p.key, span, seed), lambda: plot_landscape_1d(one)), key="ls_1d")
with slice_part, ui.friendly_errors("Computing the loss landscape"):
    grids = ls.stored_fine_grid(p, span, seed)  # computed before, by anyone?
    if grids is None:
        grids = ui.background_result(("landscape-2d", p.key, span, seed), lambda cb: ls.coarse_grids(
            p, span, seed, cb), "2-D slice (coarse grid)…")
        if grids is not None:  # its shared run, joined or started only now: the page watches it at once
            finer = ls.finer_grid(p, span, seed)
            grids = finer.grids or grids
if grids is None:
    ui.stop_page()
fine = finer is None or finer.grids is not None  # stored before, or the finer run has finished
with slice_part:
    if fine:
        st.subheader(f"2-D slice: {ls.FINE}×{ls.FINE} grid on {ls.FINE_BATCH} images")
    else:
        st.subheader(f"2-D slice: coarse {ls.COARSE}×{ls.COARSE} grid on {ls.BATCH} images")
    st.plotly_chart(ui.figure(("ls_contour", p.key, span, seed, fine), lambda: plot_landscape_contours(grids)),
                    key="ls_contour")
    if not fine:
        wait_for_the_finer_grid(finer.watch)  # the fragment holds the watch and looks at it every POLL_S
guessing = ls.guessing(p)
study = None  # a pair that guesses gets no verdict, and no slices are computed for one
with verdict_part:
    if not guessing:
        with ui.friendly_errors("Comparing the slices"):
            study = ui.background_result(("landscape-study", p.key, span, seed), lambda cb: ls.study_directions(
                p, span, seed, cb), f"Comparing the two nets on {ls.DIRECTIONS} random slices…")
    if guessing or study is not None:
        tone, text = ls.verdict(study, p.cfg.depth, guessing)  # green as in the paper, yellow against it, blue none
        getattr(st, tone.value)(text)
st.plotly_chart(ui.figure(("ls_surface", p.key, span, seed, fine), lambda: plot_landscape_surfaces(grids)),
                key="ls_surface")
st.plotly_chart(ui.figure(("ls_bends", p.key, span, seed, fine), lambda: plot_negative_curvature(grids)),
                key="ls_bends")
if study is not None:
    st.dataframe(study.table(), hide_index=True, key="ls_study", column_config={
        c: st.column_config.NumberColumn(format="%.2f") for c in ("ResNet", "plain twin", "plain − ResNet")})
    st.caption(ls.MEASURED)
st.caption("The map of downward bends: at each inner point of the 2-D slice, how much it curves down against up "
           "(|λmin/λmax| of its 2-D Hessian), as Li et al. map it for the full Hessian (Fig. 7). Both surfaces share "
           "one height and colour scale. Loss at the "
           f"trained weights: ResNet {grids.resnet.centre_loss:.3f}, plain twin {grids.plain.centre_loss:.3f} "
           "(cross-entropy, batch norm in eval mode). Li et al. studied fully trained 20- to 110-layer nets: what you "
           "see is what this pair does.")

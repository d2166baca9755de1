"""Training race: a ResNet and its plain twin learn side by side on the same batches, live; Stop any time."""
import streamlit as st

from resviz import runs, ui, ui_classroom
from resviz.inputs import data, limits
from resviz.lessons import training
from resviz.lessons.training import LEARNING_RATES, DataRequest, DataSource, RacePair
from resviz.pair import TrainedPair
from resviz.plots.shared import shared
from resviz.plots.training import plot_race_charts

DATA_LABELS = {DataSource.BUILTIN: "Built-in shapes (no download)", DataSource.CIFAR10: "CIFAR10",
               DataSource.MNIST: "MNIST", DataSource.FASHION_MNIST: "FashionMNIST",
               DataSource.ZIP: "My image folder (zip upload)", DataSource.TEACHER: "The teacher's image folders"}

st.title("Training race")
st.markdown("A ResNet and its plain twin: **same weights, same batches, same recipe**, only the shortcuts differ. A "
            "deeper plain net trains *worse* than a shallower one (He et al. 2016, Fig. 1); shortcuts remove that "
            "(Fig. 6).")
sel = ui.current_selection()
pair_labels = {RacePair.SIDEBAR: f"{sel.cfg.label} (sidebar)", RacePair.DEEP: "Deeper: resnet56"}
ss = st.session_state
# the minimal controls on one row; the rest folded below
networks, steps_col, start_col, stop_col = st.columns([2.8, 1, 0.75, 0.75], vertical_alignment="bottom")
pair = networks.radio("Networks", list(RacePair), format_func=pair_labels.get, key="tr_pair", bind="query-params",
                      horizontal=True,
                      help="The deeper pair shows the paper's result most clearly, at about a third of the speed.")
recipe = training.recipe_for(pair.config(sel.cfg))
if ss.get("tr_recipe") != recipe:  # another pair or sidebar model: start from its recommended settings
    ss.update(tr_recipe=recipe, tr_lr=recipe.config.lr, tr_batch=recipe.config.batch_size,
              tr_steps=recipe.config.steps, tr_wd=recipe.config.weight_decay, tr_shallow=pair is RacePair.DEEP)
steps = steps_col.number_input("Steps", 1, 5000, step=25, key="tr_steps", bind="query-params")
started = start_col.button("Start", type="primary", key="tr_start", width="stretch")
stopped = stop_col.button("Stop", key="tr_stop", width="stretch")
with st.expander("Data, a shallower plain net, the recipe (the same for every network)", key="tr_recipe_open"):
    c0, c1, c2 = st.columns(3)
    shallow = c0.checkbox("Add a shallower plain net", key="tr_shallow",
                          bind="query-params", help="A third of the blocks per stage.")
    folders = data.teacher_folders()  # offered only when the teacher started the server with RESVIZ_IMAGE_FOLDERS
    source = c0.selectbox("Data", training.offered_sources(bool(folders)), format_func=DATA_LABELS.get,
                          key="tr_data", bind="query-params")
    folder = c0.selectbox("Folder", list(folders), key="tr_folder",
                          bind="query-params") if source is DataSource.TEACHER else ""
    download = c0.checkbox("Download the dataset if missing", key="tr_dl",
                           bind="query-params") if source.torchvision else False
    lr = c1.select_slider("Learning rate", LEARNING_RATES, key="tr_lr",
                          bind="query-params", help="Very large rates make runs diverge.")
    batch = c1.select_slider("Batch size", (8, 16, 32, 64, 128, 256), key="tr_batch", bind="query-params")
    wd = c2.select_slider("Weight decay", (0.0, 1e-5, 1e-4, 5e-4, 1e-3), key="tr_wd", bind="query-params")
    seed = c2.number_input("Seed", 0, 10_000, 0, key="tr_seed",
                           bind="query-params", help="Initial weights and batch order.")
    upload = st.file_uploader("ImageFolder zip: one folder per class", type="zip", key="tr_zip",
                              max_upload_size=limits.ZIP_MB) if source is DataSource.ZIP else None
    st.caption(f"**Recommended**: {recipe.describe()}. {training.WHY_THE_RATE}.")
    in_use = st.empty()
used = recipe.with_settings(lr, batch, steps, wd, seed, sel.device)
in_use.caption(recipe.in_use(used))
if recipe.changed(used):  # on the first screen only when it is not the recommended recipe
    st.caption(recipe.in_use(used))
cfg = pair.config(sel.cfg)
if started:
    with ui.friendly_errors("Preparing the race"):
        req, notes = DataRequest.for_race(cfg, source, download, folder, upload.getvalue() if upload else None), []
        loaded = ui.shared_tensors(req.key, req.load) if source.shared else req.load(notes)
        if source.shared and getattr(loaded, "skipped", ()):  # a teacher's folder: its unusable files, named
            notes.append(data.skipped_note(loaded.skipped))
        job = training.race_job(cfg, req, loaded, used, shallow, notes)
        watch = training.watch_race(job, ss.get("tr_watch"), teacher=ui_classroom.is_teacher())
        ss.update(tr_watch=watch, tr_view=None, tr_stopped=None)
        ui_classroom.lock_votes()  # predict, then reveal: the teacher's Start closes the vote
if stopped and (w := ss.pop("tr_watch", None)) is not None:
    ss["tr_stopped"], ss["trained"] = training.stop_watching(w, ss.get("trained"))


@ui.timed_fragment(run_every=1.0)  # each poll also renews this student's lease on the shared run
def race_ui():
    w = ss.get("tr_watch")
    snap = w.snapshot() if w else ss.get("tr_stopped")
    if snap is None and (kept := training.replay_for(cfg, source, used, shallow)) is not None:
        st.info(kept.caption)  # where the eye is: above the chart
        return draw(training.replay_view(kept), running=False, status=None)
    if message := training.waiting_message(snap, runs.registry().max_running):
        tone, text = message
        return getattr(st, tone.value)(text)
    running = snap.status.state is runs.State.RUNNING and w is not None
    view = ss["tr_view"] = training.fold(ss.get("tr_view"), training.framed(snap.records, running))
    finished = snap.status.state is runs.State.FINISHED
    draw(view, running, snap.status, finished=finished)
    if w is None and not finished:
        st.caption(f"Stopped by you at step {view.history.step}.")
    if finished:
        ss["trained"] = snap.result  # a resviz.pair.TrainedPair: Feature maps, Lesion, Paths, Landscape read it
    if not running and isinstance(ss.get("trained"), TrainedPair):
        st.download_button("Download the trained ResNet (state dict)", lambda: training.state_dict_bytes(
            ss["trained"].state_dict), file_name=view.header.file_name, key="tr_save")
        st.caption("The trained ResNet and its twin are now available on the Feature maps page (source: trained). "
                   "Load the file with `model.load_state_dict(torch.load(path, weights_only=True))`.")


def draw(view, running, status, finished=False):
    """The race's first screen: what to watch for, the loss chart with the verdicts beside it; then the accuracy,
    the notes and the gradient heatmaps. ``status`` is the shared run's (None for a replay: no live numbers)."""
    h = view.history
    if running:
        st.markdown(f"**{training.watch_for(h)}**")
    if status is not None:  # a replay says its steps in its own line
        st.progress(h.step / h.steps, text=f"step {h.step} of {h.steps}")
        watched = ""
        if status.watchers > 1:  # others watch too: how many students (the teacher is not counted)
            watched = f" · watched by {status.students} student{'s' if status.students != 1 else ''}"
        st.markdown(training.status_line(h, running) + watched)
    figs = ui.figure(view.figure_key, lambda: plot_race_charts(h, view.header.chance), "live")
    loss, acc, *heatmaps = map(shared, figs)  # each sent from one plain tree made for the class, not per student
    chart, verdicts = st.columns([3, 2])
    chart.plotly_chart(loss, key="tr_loss")
    with verdicts:
        for tone, text in view.messages(live=running):  # what the race showed, beside its curves
            getattr(st, tone.value)(text)
        if finished:  # predict, then reveal: the class's prediction beside what was measured
            ui_classroom.prediction_beside(training.measured_sentence(h))
    chart, notes = st.columns([3, 2])
    chart.plotly_chart(acc, key="tr_acc")
    notes.caption(view.header.accuracy_note)
    for note in view.header.notes:
        notes.caption(note)
    for i, (col, fig) in enumerate(zip(st.columns(len(heatmaps)), heatmaps)):
        col.plotly_chart(fig, key=f"tr_h{i}")


race_ui()

"""Training race: a ResNet and its plain twin learn side by side on the same batches, live; Stop any time."""
import streamlit as st

from resviz import runs, ui
from resviz.inputs import data, limits
from resviz.lessons import training
from resviz.lessons.training import LEARNING_RATES, DataRequest, DataSource, RacePair
from resviz.pair import TrainedPair
from resviz.plots.training import plot_race_charts

DATA_LABELS = {DataSource.BUILTIN: "Built-in shapes (no download)", DataSource.CIFAR10: "CIFAR10",
               DataSource.MNIST: "MNIST", DataSource.FASHION_MNIST: "FashionMNIST",
               DataSource.ZIP: "My image folder (zip upload)", DataSource.TEACHER: "The teacher's image folders"}

st.title("Training race: ResNet against its plain twin")
st.markdown("Both networks start from **the same weights** (the plain twin just never adds the shortcut), see "
            "**the same batches** with **the same recipe**: only the shortcuts differ. He et al. (2016) found that "
            "a deeper plain net trains *worse* than a shallower one (the degradation problem, Fig. 1) and that "
            "shortcuts remove it (Fig. 6): race ResNet-56 with the shallower plain net to see both.")
sel = ui.current_selection()
pair_labels = {RacePair.SIDEBAR: f"{sel.cfg.label} (sidebar model)", RacePair.DEEP: "Deeper: resnet56 vs plain-56"}
left, mid, right = st.columns([1.2, 1, 1])
pair = left.radio("Networks", list(RacePair), format_func=pair_labels.get, key="tr_pair", bind="query-params",
                  help="The deeper pair shows the paper's result most clearly, at about a third of the speed.")
recipe = training.recipe_for(pair.config(sel.cfg))
ss = st.session_state
if ss.get("tr_recipe") != recipe:  # another pair or sidebar model: start from its recommended settings
    ss.update(tr_recipe=recipe, tr_lr=recipe.config.lr, tr_batch=recipe.config.batch_size,
              tr_steps=recipe.config.steps, tr_wd=recipe.config.weight_decay, tr_shallow=pair is RacePair.DEEP)
shallow = left.checkbox("Add a shallower plain net", key="tr_shallow",
                        bind="query-params", help="A third of the blocks per stage.")
folders = data.teacher_folders()  # offered only when the teacher started the server with RESVIZ_IMAGE_FOLDERS
source = mid.selectbox("Data", training.offered_sources(bool(folders)), format_func=DATA_LABELS.get, key="tr_data",
                       bind="query-params")
folder = mid.selectbox("Folder", list(folders), key="tr_folder",
                       bind="query-params") if source is DataSource.TEACHER else ""
steps = mid.number_input("Steps", 1, 5000, step=25, key="tr_steps", bind="query-params")
download = mid.checkbox("Download the dataset if missing", key="tr_dl",
                        bind="query-params") if source.torchvision else False
started = right.button("Start", type="primary", key="tr_start", width="stretch")
stopped = right.button("Stop", key="tr_stop", width="stretch")
upload = st.file_uploader("ImageFolder zip: one folder per class", type="zip", key="tr_zip",
                          max_upload_size=limits.ZIP_MB) if source is DataSource.ZIP else None
in_use = right.empty()
with st.expander("Recipe, the same for every network: learning rate, batch size, weight decay, seed",
                 key="tr_recipe_open"):
    c1, c2 = st.columns(2)
    lr = c1.select_slider("Learning rate", LEARNING_RATES, key="tr_lr",
                          bind="query-params", help="Very large rates make runs diverge.")
    batch = c1.select_slider("Batch size", (8, 16, 32, 64, 128, 256), key="tr_batch", bind="query-params")
    wd = c2.select_slider("Weight decay", (0.0, 1e-5, 1e-4, 5e-4, 1e-3), key="tr_wd", bind="query-params")
    seed = c2.number_input("Seed", 0, 10_000, 0, key="tr_seed",
                           bind="query-params", help="Initial weights and batch order.")
    st.caption(f"**Recommended**: {recipe.describe()}. {training.WHY_THE_RATE}.")
used = recipe.with_settings(lr, batch, steps, wd, seed, sel.device)
in_use.caption(recipe.in_use(used))
if started:
    with ui.friendly_errors("Preparing the race"):
        cfg = pair.config(sel.cfg)
        req, notes = DataRequest.for_race(cfg, source, download, folder, upload.getvalue() if upload else None), []
        loaded = ui.shared_tensors(req.key, req.load) if source.shared else req.load(notes)
        if source.shared and getattr(loaded, "skipped", ()):  # a teacher's folder: its unusable files, named
            notes.append(data.skipped_note(loaded.skipped))
        job = training.race_job(cfg, req, loaded, used, shallow, notes)
        ss.update(tr_watch=training.watch_race(job, ss.get("tr_watch")), tr_view=None, tr_stopped=None)
if stopped and (w := ss.pop("tr_watch", None)) is not None:
    ss["tr_stopped"], ss["trained"] = training.stop_watching(w, ss.get("trained"))


@st.fragment(run_every=1.0)  # each poll also renews this student's lease on the shared run
def race_ui():
    w = ss.get("tr_watch")
    snap = w.snapshot() if w else ss.get("tr_stopped")
    if message := training.waiting_message(snap, runs.registry().max_running):
        tone, text = message
        return getattr(st, tone.value)(text)
    running = snap.status.state is runs.State.RUNNING and w is not None
    view = ss["tr_view"] = training.fold(ss.get("tr_view"), training.framed(snap.records, running))
    draw(view, running, snap.status.watchers)
    if w is None and snap.status.state is not runs.State.FINISHED:
        st.caption(f"Stopped by you at step {view.history.step}.")
    if snap.status.state is runs.State.FINISHED:
        ss["trained"] = snap.result  # a resviz.pair.TrainedPair: Feature maps, Lesion, Paths, Landscape read it
    if not running and isinstance(ss.get("trained"), TrainedPair):
        st.download_button("Download the trained ResNet (state dict)", lambda: training.state_dict_bytes(
            ss["trained"].state_dict), file_name=view.header.file_name, key="tr_save")
        st.caption("The trained ResNet and its twin are now available on the Feature maps page (source: trained). "
                   "Load the file with `model.load_state_dict(torch.load(path, weights_only=True))`.")


def draw(view, running, watchers):
    h = view.history
    for note in view.header.notes:
        st.caption(note)
    st.progress(h.step / h.steps, text=f"step {h.step} of {h.steps}")
    st.markdown(training.status_line(h, running) + (f" · watched by {watchers} students" if watchers > 1 else ""))
    loss, acc, *heatmaps = ui.figure(view.figure_key, lambda: plot_race_charts(h, view.header.chance), "live")
    c1, c2 = st.columns(2)
    c1.plotly_chart(loss, key="tr_loss")
    c2.plotly_chart(acc, key="tr_acc")
    for tone, text in view.messages(live=running):  # what the race showed, right under its curves
        getattr(st, tone.value)(text)
    st.caption(view.header.accuracy_note)
    for i, (col, fig) in enumerate(zip(st.columns(len(heatmaps)), heatmaps)):
        col.plotly_chart(fig, key=f"tr_h{i}")


race_ui()

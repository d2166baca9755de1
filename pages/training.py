"""Training race: a ResNet and its plain twin learn side by side on the same batches, live; Stop any time."""
import time
from dataclasses import replace

import streamlit as st

from resviz import ui
from resviz.inputs import data, limits
from resviz.lessons import training
from resviz.lessons.training import DataRequest, DataSource, RacePair
from resviz.plots.training import grad_range, plot_grad_heatmap, plot_race_accuracy, plot_race_loss

DATA_LABELS = {DataSource.BUILTIN: "Built-in shapes (no download)", DataSource.CIFAR10: "CIFAR10",
               DataSource.MNIST: "MNIST", DataSource.FASHION_MNIST: "FashionMNIST",
               DataSource.ZIP: "My image folder (zip upload)", DataSource.TEACHER: "The teacher's image folders"}
LRS = (0.001, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)

st.title("Training race: ResNet against its plain twin")
st.markdown("Both networks start from **the same weights** (the plain twin just never adds the shortcut), see "
            "**the same batches** with **the same recipe**: only the shortcuts differ. He et al. (2016) found that "
            "a deeper plain net trains *worse* than a shallower one (the degradation problem, Fig. 1) and that "
            "shortcuts remove it (Fig. 6): race ResNet-56 and tick the shallower plain net to see both.")
sel = ui.current_selection()
pair_labels = {RacePair.SIDEBAR: f"{sel.cfg.label} (sidebar model)", RacePair.DEEP: "Deeper: resnet56 vs plain-56"}
left, mid, right = st.columns(3)
pair = left.radio("Networks", list(RacePair), format_func=pair_labels.get, key="tr_pair",
                  help="The deeper pair shows the paper's result most clearly, at about a third of the speed.")
recipe = training.recipe_for(pair.config(sel.cfg))
ss = st.session_state
if ss.get("tr_recipe") != recipe:  # another pair or sidebar model: start from its recommended settings
    ss.update(tr_recipe=recipe, tr_lr=recipe.config.lr, tr_batch=recipe.config.batch_size,
              tr_steps=recipe.config.steps, tr_wd=recipe.config.weight_decay)
shallow = left.checkbox("Add a shallower plain net", key="tr_shallow", help="A third of the blocks per stage.")
folders = data.teacher_folders()  # offered only when the teacher started the server with RESVIZ_IMAGE_FOLDERS
sources = [s for s in DataSource if folders or s is not DataSource.TEACHER]
source = left.selectbox("Data", sources, format_func=DATA_LABELS.get, key="tr_data")
folder = left.selectbox("Folder", list(folders), key="tr_folder") if source is DataSource.TEACHER else ""
lr = mid.select_slider("Learning rate", LRS, key="tr_lr", help="Very large rates make runs diverge.")
batch = mid.select_slider("Batch size", (8, 16, 32, 64, 128, 256), key="tr_batch")
steps = mid.number_input("Steps", 1, 5000, step=25, key="tr_steps")
wd = right.select_slider("Weight decay", (0.0, 1e-5, 1e-4, 5e-4, 1e-3), key="tr_wd")
seed = right.number_input("Seed", 0, 10_000, 0, key="tr_seed", help="Initial weights and batch order.")
download = right.checkbox("Download the dataset if missing", key="tr_dl") if source.torchvision else False
upload = st.file_uploader("ImageFolder zip: one folder per class", type="zip", key="tr_zip",
                          max_upload_size=limits.ZIP_MB) if source is DataSource.ZIP else None
st.caption(f"**Recommended recipe**, the same for every network: {recipe.describe()}. {training.WHY_THE_RATE}.")
start, stop = st.columns(2)[0].columns(2)
started = start.button("Start", type="primary", key="tr_start", width="stretch")
stopped = stop.button("Stop", key="tr_stop", width="stretch")

if started:
    with ui.friendly_errors("Preparing the race"):
        cfg = pair.config(sel.cfg)
        size, channels = training.data_shape_for(cfg, source)
        req, notes = DataRequest(source, size, channels, download, folder, upload and upload.getvalue()), []
        train, test, names = ui.shared_tensors(req.key, req.load) if source.shared else req.load(notes)
        used = replace(recipe.config, lr=lr, batch_size=batch, steps=int(steps), weight_decay=wd, seed=int(seed),
                       device=sel.device)
        ss["tr_run"] = training.new_race(cfg, train, test, names, used, shallow, notes, source.value, source)
run = ss.get("tr_run")
if run and stopped:
    run.stop()
if not run:
    st.info("Choose the networks and settings, then press **Start**. Charts update live; **Stop** keeps what "
            "was learned so far.")
    st.stop()

for note in run.notes:
    st.caption(note)
progress, status = st.progress(0.0), st.empty()
loss_ph, acc_ph = (c.empty() for c in st.columns(2))
verdicts = st.container()  # what the race showed, right under its curves
st.caption(run.accuracy_note())
heat_phs = [c.empty() for c in st.columns(len(run.history.runs))]
draws = ss.setdefault("tr_draws", [0])


def draw(h):
    progress.progress(h.step / h.steps, text=f"step {h.step} of {h.steps}")
    status.markdown(training.status_line(h, run.running))
    draws[0] += 1
    loss_ph.plotly_chart(plot_race_loss(h), key=f"tr_loss_{draws[0]}")
    acc_ph.plotly_chart(plot_race_accuracy(h, run.chance), key=f"tr_acc_{draws[0]}")
    zr = grad_range(h)
    for i, (ph, r) in enumerate(zip(heat_phs, h.runs.values())):
        ph.plotly_chart(plot_grad_heatmap(r.name, r.layers, r.step, r.grad_norms, zr), key=f"tr_h{i}_{draws[0]}")


if run.running:
    last = 0.0
    with ui.friendly_errors("Training"):  # a Stop click interrupts this loop; the rerun keeps what it made
        for h in run.advance():
            if time.monotonic() - last > 1.5:
                draw(h)
                last = time.monotonic()
    run.running = False
h = run.history
draw(h)
for tone, text in run.messages():
    getattr(verdicts, tone.value)(text)
if h.step and not run.running:
    ss["trained"] = run.trained_pair()  # a resviz.pair.TrainedPair: Feature maps, Lesion, Paths, Landscape read it
    st.download_button("Download the trained ResNet (state dict)", lambda: training.state_dict_bytes(
        run.trained_pair().state_dict), file_name=f"{next(iter(h.runs)).lower()}_trained.pt", key="tr_save")
    st.caption("The trained ResNet and its twin are now available on the Feature maps page (source: trained). "
               "Load the file with `model.load_state_dict(torch.load(path, weights_only=True))`.")

"""Feature maps: upload a picture and watch each block of the ResNet work on it; Grad-CAM, IG, Occlusion."""
import streamlit as st

from resviz import ui
from resviz.inputs import images, limits, weights
from resviz.lessons import feature_maps as fm
from resviz.pair import TrainedPair, fingerprint
from resviz.plots import feature_maps as plots

Source = fm.WeightsSource
SOURCE_LABELS = {Source.PRETRAINED: "ImageNet-pretrained (torchvision)", Source.TRAINED: "Trained on the training page",
                 Source.RANDOM: "Random initialization", Source.UPLOAD: "Uploaded state dict (.pt/.pth)"}
OWNED = (Source.TRAINED, Source.UPLOAD)  # a student's own weights live in their session; the others are shared


def trained_pair() -> TrainedPair | None:
    t = st.session_state.get("trained")
    if isinstance(t, dict):  # the Training race page still hands a dict; it is switching to TrainedPair
        t = TrainedPair(t["cfg"], t["state_dict"], t["plain_state_dict"], t["label"])
    return t


def weights_ui(sel: ui.Selection) -> fm.LoadedWeights:
    """Weights picker (radio, download button, uploader); any problem is a message and random weights."""
    cfg, device, pair = sel.chosen, sel.device, trained_pair()
    source = st.radio("Weights", fm.sources(cfg, pair), format_func=lambda s: SOURCE_LABELS[Source(s)],
                      key="fm_source", horizontal=True,
                      help="ImageNet weights exist only for the ImageNet presets in the sidebar.")
    try:
        if source is Source.PRETRAINED:
            if not fm.imagenet_downloaded(cfg) and st.button("Try to download the ImageNet weights", key="fm_download"):
                with st.spinner("Downloading torchvision's ImageNet weights…"):
                    fm.download_imagenet(cfg)
            return ui.shared_model(("fm-imagenet", cfg, device), lambda: fm.imagenet(cfg, device))
        if source is Source.TRAINED:
            return ui.session_owned("fm_weights", (pair.key, sel.plain, device), lambda: fm.trained(pair, device, sel.plain))
        up = st.file_uploader("State dict saved with torch.save(model.state_dict(), …)", type=["pt", "pth"],
                              key="fm_weights_file", max_upload_size=limits.WEIGHTS_MB) if source is Source.UPLOAD else None
        if up is not None:
            data = up.getvalue()
            return ui.session_owned("fm_weights", (fingerprint(data), up.name, cfg, device),
                                    lambda: fm.uploaded(data, up.name, cfg, device))
    except weights.WeightsError as e:
        st.error(f"{e} Using random weights instead.")
    return fm.random(cfg, ui.load_model(cfg, device))


def held(w: fm.LoadedWeights, name: str, make):
    """A model derived from ``w``: the student's own when ``w`` is, else shared by the class."""
    return ui.session_owned(name, w.key, make) if w.source in OWNED else ui.shared_model((name, w.key), make)


def capture(w: fm.LoadedWeights, model, x, image_key: str, block: int, cam_block: int, target: int | None):
    return ui.shared_result(("fm", w.key, model.cfg.residual, image_key, block, cam_block, target),
                            lambda progress: fm.capture(model, x, block, cam_block, target),
                            "Running the image through the network…")


sel = ui.current_selection()
st.title("Feature maps: watch a picture flow through the network")
st.caption("Each residual block computes a correction F(x) and adds it to its input x: out = relu(F(x) + x). "
           "Here you see both parts and their sum for a picture of your choice.")

up_col, sample_col = st.columns(2)
upload = up_col.file_uploader("Upload a photo (JPEG, PNG, WebP, BMP)", type=images.UPLOAD_TYPES, key="fm_upload",
                              max_upload_size=limits.IMAGE_MB)
sample = sample_col.selectbox("…or use a sample picture", images.sample_names(), key="fm_sample",
                              help="Synthetic drawings made by resviz (assets/samples/make_samples.py), free to use.")
sample_col.caption("The samples are synthetic drawings, not photos.")
data = upload.getvalue() if upload is not None else images.sample_bytes(sample)
try:
    img = images.load_image(data)
except images.ImageError as e:
    st.error(f"{e}")
    st.stop()

w = weights_ui(sel)
cfg, device = w.cfg, sel.device
pre = w.preprocess()
steps = images.preprocess_steps(img, pre)
st.caption(f"Model: **{cfg.label}** with {w.label}.")
with st.expander("Preprocessing: what the network really sees", expanded=True):
    st.plotly_chart(plots.plot_preprocessing(steps), key="fm_pre_fig")
    st.caption(f"Shorter side resized to {pre.resize} px, center {pre.crop}x{pre.crop} crop, then each channel "
               f"scaled to [0, 1] and normalized as (x - mean) / std with mean {pre.mean} and std {pre.std}.")

x = images.to_tensor(steps, device, cfg.in_channels)
image_key = fingerprint(data, pre)
names = w.model.block_names()
c1, c2, c3, c4 = st.columns(4)
block = c1.selectbox("Block to look inside", range(len(names)), format_func=names.__getitem__, key="fm_block")
k = c2.slider("Channels shown", 1, fm.MAX_CHANNELS, 9, key="fm_k",
              help="The most active channels of the block's output, most active first.")
cam_block = c3.selectbox("Grad-CAM block", range(len(names)), index=len(names) - 1,
                         format_func=names.__getitem__, key="fm_cam_block")
choice = c4.selectbox("Explain which class", ["predicted"] + list(range(cfg.num_classes)), key="fm_target",
                      format_func=lambda c: "the predicted class" if c == "predicted" else f"{c}: {w.class_name(c)}")
target = None if choice == "predicted" else int(choice)

with ui.friendly_errors("Computing the feature maps"):
    r = capture(w, w.model, x, image_key, block, cam_block, target)
    st.subheader(f"Inside block {r.block}: {r.n_channels} channels, showing the {min(k, len(r.channels))} most active")
    for col, fig in zip(st.columns(3), plots.plot_block_views(r, k)):
        col.plotly_chart(fig, key=f"fm_view_{fig.layout.title.text}")
    st.caption("Red = positive, blue = negative; each channel has one color scale shared by its views. "
               "Hover a map for the channel index and its value range.")
    st.plotly_chart(plots.plot_block_norms(r.norms, r.block), key="fm_norms")
    st.caption("Where F(x) is much smaller than x, the block only nudges its input: the shortcut carries the signal.")

    top = fm.top_k(r.probs, w.class_names)
    left, right = st.columns(2)
    left.plotly_chart(plots.plot_top_k(top, "Top-5 classes" + ("" if w.class_names else " (class numbers)")), key="fm_top")
    if not w.class_names:
        left.caption("Class names exist for ImageNet weights; random or uploaded weights give numbered classes.")
    right.plotly_chart(plots.plot_overlay(steps["cropped"], r.cam, f"Grad-CAM at {r.cam_block} for "
                                          f"'{w.class_name(r.target)}'"), key="fm_cam")

    if cfg.residual and st.toggle("Compare with the plain twin (same layers, shortcuts removed)", key="fm_plain"):
        p = capture(w, held(w, "fm_plain", lambda: fm.plain_model(w, device)), x, image_key, block, cam_block,
                    r.target)
        a, b = st.columns(2)
        a.plotly_chart(plots.plot_block_views(p, k)[-1], key="fm_plain_view")
        b.plotly_chart(plots.plot_overlay(steps["cropped"], p.cam, f"Plain twin: Grad-CAM at {p.cam_block}"),
                       key="fm_plain_cam")
        st.caption(f"Plain twin's top class: {fm.top_k(p.probs, w.class_names, 1)[0]['name']}. Without the "
                   "shortcuts, weights trained with them no longer fit together.")

    st.subheader("Other attributions (captum)")
    store = st.session_state.setdefault("fm_attr", {})  # the latest result of each kind, with what it explains
    key = (w.key, image_key, r.target)
    ig_col, occ_col = st.columns(2)
    steps_ig = ig_col.slider("Integrated Gradients steps", 8, 64, 16, 8, key="fm_ig_steps")
    if ig_col.button("Run Integrated Gradients", key="fm_ig_run"):
        bar = ig_col.progress(0.0, text="Integrated Gradients…")
        store["ig"] = key, fm.integrated_gradients(
            w.model, x, r.target, steps=steps_ig, chunk=4,
            on_progress=lambda d, n: bar.progress(d / n, text=f"{d}/{n} steps along the path"))
    if store.get("ig", (None,))[0] == key:
        ig = store["ig"][1]
        ig_col.plotly_chart(plots.plot_overlay(steps["cropped"], ig.heat, "Integrated Gradients", signed=True),
                            key="fm_ig_fig")
        ig_col.caption(f"Attributions sum to {ig.score - ig.baseline_score + ig.delta:.3f}; the score rose "
                       f"by {ig.score - ig.baseline_score:.3f} from a baseline image of all-mean (grey) pixels.")
    if occ_col.button("Run Occlusion", key="fm_occ_run"):
        with occ_col.spinner("Hiding one square at a time (49 forward passes)…"):
            store["occ"] = key, fm.occlusion(w.model, x, r.target)
    if store.get("occ", (None,))[0] == key:
        occ_col.plotly_chart(plots.plot_overlay(steps["cropped"], store["occ"][1], "Occlusion: score drop",
                                                signed=True), key="fm_occ_fig")

"""Feature maps: a picture flows through the network; F(x), the shortcut x and their sum inside any block; why it
decided (top-5, Grad-CAM, Integrated Gradients, Occlusion), and the plain twin beside it."""
import streamlit as st

from resviz import ui
from resviz.inputs import images, limits, weights
from resviz.lessons import feature_maps as fm
from resviz.pair import TrainedPair, fingerprint
from resviz.plots import feature_maps as plots
from resviz.plots.style import COLORS

Source = fm.WeightsSource
SOURCE_LABELS = {Source.PRETRAINED: "ImageNet weights (torchvision)", Source.TRAINED: "Trained on the Training race",
                 Source.RANDOM: "Random (untrained)", Source.UPLOAD: "Upload a state dict (.pt/.pth)"}
OWNED = (Source.TRAINED, Source.UPLOAD)  # a student's own weights live in their session; the others are shared


def weights_ui(sel: ui.Selection) -> fm.LoadedWeights:
    """Weights picker (radio, download button, uploader); any problem is a message and random weights."""
    cfg, device = sel.chosen, sel.device
    pair: TrainedPair | None = st.session_state.get("trained")  # written by the Training race
    source = st.radio("Weights", fm.sources(cfg, pair), format_func=lambda s: SOURCE_LABELS[Source(s)],
                      key="fm_source", help="ImageNet weights exist only for the ImageNet presets in the sidebar.")
    try:
        if source is Source.PRETRAINED:
            if not fm.imagenet_downloaded(cfg) and st.button("Download the ImageNet weights", key="fm_download"):
                with st.spinner("Downloading torchvision's ImageNet weights…"):
                    fm.download_imagenet(cfg)
            return ui.shared_model(("fm-imagenet", cfg, device), lambda: fm.imagenet(cfg, device))
        if source is Source.TRAINED:
            return ui.session_owned("fm_weights", (pair.key, sel.plain, device),
                                    lambda: fm.trained(pair, device, sel.plain))
        up = source is Source.UPLOAD and st.file_uploader(
            "State dict saved with torch.save(model.state_dict(), …)", type=["pt", "pth"], key="fm_weights_file",
            max_upload_size=limits.WEIGHTS_MB)
        if up:
            data = up.getvalue()
            return ui.session_owned("fm_weights", (fingerprint(data), up.name, cfg, device),
                                    lambda: fm.uploaded(data, up.name, cfg, device))
    except weights.WeightsError as e:
        st.error(f"{e} Using random weights instead.")
    return fm.random(cfg, ui.load_model(cfg, device))


def held(w: fm.LoadedWeights, name: str, device: str, make):
    """A model derived from ``w`` on ``device``: the student's own when ``w`` is, else shared by the class."""
    key = (name, w.key, device)
    return ui.session_owned(name, key, make) if w.source in OWNED else ui.shared_model(key, make)


def capture(w: fm.LoadedWeights, model, x, image_key: str, block: int, cam_block: int, target: int | None):
    return ui.shared_result(("fm", w.key, model.cfg.residual, image_key, block, cam_block, target),
                            lambda progress: fm.capture(model, x, block, cam_block, target),
                            "Running the picture through the network…")


def notice(w: fm.LoadedWeights, sel: ui.Selection) -> None:
    """Say plainly, at the top, what the weights are and which model the page shows."""
    if w.untrained:
        imagenet = ("choose **ImageNet weights** above" if Source.PRETRAINED in fm.sources(sel.chosen, None)
                    else "pick an ImageNet preset in the sidebar and its ImageNet weights")
        st.warning("**These weights are random: the network is untrained.** Its top-5 classes, Grad-CAM, Integrated "
                   "Gradients and Occlusion below explain an untrained network, not what a ResNet learns. Train one on "
                   f"the **Training race** page, or {imagenet}.", icon=":material/warning:")
    if w.cfg != sel.chosen:
        st.info(f"This page shows **{w.cfg.label}** trained on the Training race ({w.label}), not the sidebar's "
                f"**{sel.chosen.label}**. Choose other weights to see the sidebar's model.", icon=":material/info:")


sel = ui.current_selection()
st.title("Feature maps: a picture inside the network")
top_notice = st.container()
pic_col, up_col, w_col, block_col = st.columns([3, 3, 3, 3])
upload = up_col.file_uploader("…or upload a photo", type=images.UPLOAD_TYPES, key="fm_upload",
                              max_upload_size=limits.IMAGE_MB)
samples = images.sample_names()
sample = pic_col.selectbox("Picture", samples, samples.index("cat") if "cat" in samples else 0, key="fm_sample",
                           disabled=upload is not None, help="Photos: public domain or CC0, sources in "
                           "assets/samples/ATTRIBUTION.md. Patterns: drawn by resviz. Remove an upload to use them.")
try:
    img = images.load_image(upload.getvalue() if upload is not None else images.sample_bytes(sample))
except images.ImageError as e:
    st.error(f"{e}")
    st.stop()
with w_col:
    w = weights_ui(sel)
    st.caption(f"Model: **{w.cfg.label}** with {w.label}.")
with top_notice:
    notice(w, sel)
cfg, device, pre = w.cfg, sel.device, w.preprocess()
steps = images.preprocess_steps(img, pre)
x = images.to_tensor(steps, device, cfg.in_channels)
image_key = fingerprint(steps["normalized"].tobytes())
names = w.model.block_names()
block = block_col.selectbox("Block to look inside", range(len(names)), format_func=names.__getitem__,
                            key="fm_block")
k = block_col.slider("Channels shown", 1, fm.MAX_CHANNELS, 9, key="fm_k",
                     help="The most active channels of the block's output, most active first.")

views, (top_col, cam_col, norm_col) = st.container(), st.columns(3)
cam_block = cam_col.selectbox("Grad-CAM block", range(len(names)), index=len(names) - 1, format_func=names.__getitem__,
                              key="fm_cam_block")
choice = cam_col.selectbox("Explain which class", ["predicted", *range(cfg.num_classes)], key="fm_target",
                           format_func=lambda c: "the predicted one" if c == "predicted" else f"{c}: {w.class_name(c)}")
with ui.friendly_errors("Computing the feature maps"):
    r = capture(w, w.model, x, image_key, block, cam_block, None if choice == "predicted" else int(choice))
    views.subheader(f"Inside block {r.block}: {r.n_channels} channels, the {min(k, len(r.channels))} most active")
    for col, fig in zip(views.columns(3), plots.plot_block_views(r, k, height=330)):
        col.plotly_chart(ui.chart(fig), key=f"fm_view_{fig.layout.title.text}")
    views.caption("Each block computes a correction F(x) and adds its input x: out = relu(F(x) + x). Red = positive, "
                  "blue = negative; each channel has one colour scale shared by its three views (hover for values).")
    color = COLORS["resnet" if cfg.residual else "plain"]
    top_col.plotly_chart(ui.chart(plots.plot_top_k(fm.top_k(r.probs, w.class_names), "Top-5 classes" + (
        " of an untrained network" if w.untrained else ""), color)), key="fm_top")
    if not w.class_names:
        top_col.caption("These weights come without class names: the classes are numbered.")
    cam_col.plotly_chart(ui.chart(plots.plot_overlay(steps["cropped"], r.cam, f"Grad-CAM at {r.cam_block}: "
                                                     f"'{w.class_name(r.target)}'")), key="fm_cam")
    norm_col.plotly_chart(ui.chart(plots.plot_block_norms(r.norms, r.block)), key="fm_norms")
    norm_col.caption("Where F(x) is much smaller than x, the block only nudges its input: the shortcut carries it.")
    with st.expander("Preprocessing: what the network really sees"):
        st.plotly_chart(ui.chart(plots.plot_preprocessing(steps)), key="fm_pre_fig")
        st.caption(f"Shorter side resized to {pre.resize} px, center {pre.crop}x{pre.crop} crop, then each channel "
                   f"scaled to [0, 1] and normalized as (x - mean) / std with mean {pre.mean} and std {pre.std}.")

    if cfg.residual and st.toggle("Compare with the plain twin (same layers, shortcuts removed)", key="fm_plain"):
        p = capture(w, held(w, "fm_plain", device, lambda: fm.plain_model(w, device)), x, image_key, block, cam_block,
                    r.target)
        a, b = st.columns(2)
        a.plotly_chart(ui.chart(plots.plot_block_views(p, k, height=330)[-1]), key="fm_plain_view")
        b.plotly_chart(ui.chart(plots.plot_overlay(steps["cropped"], p.cam, f"Plain twin: Grad-CAM at {p.cam_block}")),
                       key="fm_plain_cam")
        best = fm.top_k(p.probs, w.class_names, 1)[0]
        st.caption(f"Plain twin's top class: {best['name']} ({best['prob']:.1%}). {fm.PLAIN_TWIN_NOTES[w.source]}")

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
        ig_col.plotly_chart(ui.chart(plots.plot_overlay(steps["cropped"], ig.heat, "Integrated Gradients",
                                                        signed=True)), key="fm_ig_fig")
        ig_col.caption(f"Attributions sum to {ig.score - ig.baseline_score + ig.delta:.3f}; the score rose by "
                       f"{ig.score - ig.baseline_score:.3f} from a baseline picture of the mean colour (all zeros "
                       "after normalisation).")
    if occ_col.button("Run Occlusion", key="fm_occ_run"):
        with occ_col.spinner("Hiding one square at a time (49 forward passes)…"):
            store["occ"] = key, fm.occlusion(w.model, x, r.target)
    if store.get("occ", (None,))[0] == key:
        occ_col.plotly_chart(ui.chart(plots.plot_overlay(steps["cropped"], store["occ"][1], "Occlusion: score drop",
                                                         signed=True)), key="fm_occ_fig")

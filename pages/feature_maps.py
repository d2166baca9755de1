"""Feature maps: a picture inside the network (F(x), the shortcut x, their sum), why it decided, and the plain twin."""
from functools import partial

import streamlit as st

from resviz import ui
from resviz.inputs import images, limits, weights
from resviz.lessons import feature_maps as fm
from resviz.lessons.training import replay
from resviz.pair import fingerprint
from resviz.plots import feature_maps as plots


def weights_ui(sel: ui.Selection) -> fm.LoadedWeights:
    """Weights picker (radio, download button, uploader); weights that cannot be had: random ones, saying why.
    The Training race's pair: this student's race, else (offered last) the replayed default race's."""
    own = st.session_state.get("trained")
    kept = None if own else next(iter(replay.page_replays(sel.device).values()), None)
    offered = fm.sources(sel.chosen, own or kept)
    source = fm.WeightsSource(st.radio(
        "Weights", offered if own else sorted(offered, key=lambda s: s is fm.WeightsSource.TRAINED), key="fm_source",
        bind="query-params", format_func=fm.SOURCE_LABELS.get, horizontal=True,
        help="ImageNet weights: ImageNet presets only. The shipped ResNet-20 learnt the built-in images (16x16 "
             "shapes and patterns)."))
    pair = own or (replay.replayed_pair(kept) if kept and source is fm.WeightsSource.TRAINED else None)
    up = source is fm.WeightsSource.UPLOAD and st.file_uploader(
        "State dict saved with torch.save(model.state_dict(), …)", type=["pt", "pth"], key="fm_weights_file",
        max_upload_size=limits.WEIGHTS_MB)
    req = fm.WeightsRequest(source, sel.chosen, sel.device, pair, sel.plain, (up.name, up.getvalue()) if up else None)
    try:
        if req.needs_download and st.button("Download the ImageNet weights", key="fm_download"):
            with st.spinner("Downloading torchvision's ImageNet weights…"):
                fm.download_imagenet(req.cfg)
        if req.ready:
            return ui.held(req.owned, "fm_weights", req.key, lambda: fm.load(req))
    except weights.WeightsError as e:
        return fm.random(sel.chosen, ui.load_model(sel.chosen, sel.device), fm.Unavailable.of(source, e))
    return fm.random(sel.chosen, ui.load_model(sel.chosen, sel.device))


sel = ui.current_selection()
st.title("Feature maps: inside a block")
pic_col, block_col, k_col, photo_col = st.columns(4)  # the first screen: the controls, the verdict, the views
w_col, top_notice, views = st.container(), st.container(), st.container()
photo_box = photo_col.expander("Your photo", key="fm_photo_box", on_change="rerun")  # stays open once opened
upload = photo_box.file_uploader("Upload a photo", type=images.UPLOAD_TYPES, key="fm_upload",
                                 max_upload_size=limits.IMAGE_MB)
samples = images.sample_names()
sample = pic_col.selectbox("Picture", samples, samples.index("cat") if "cat" in samples else 0, key="fm_sample",
                           bind="query-params",
                           disabled=upload is not None, help="Photos: public domain or CC0, sources in "
                           "assets/samples/ATTRIBUTION.md. Patterns: drawn by resviz. Remove an upload to use them.")
with w_col:
    w = weights_ui(sel)
verdict, *facts = fm.notices(w, sel.chosen) or [None]  # an error, a warning or a verdict; then a fact
if verdict:  # above the views, where the eye is: random weights are said there
    getattr(top_notice, verdict.box.value)(verdict.text, icon=verdict.icon)
cfg, device, pre, names = w.cfg, sel.device, w.preprocess(), w.model.block_names()
block = block_col.selectbox("Block to look inside", range(len(names)), format_func=names.__getitem__, key="fm_block",
                            bind="query-params")
k = k_col.slider("Channels shown", 1, fm.MAX_CHANNELS, 9, key="fm_k",
                 bind="query-params", help="By mean activation, largest first.")
top_col, cam_col, norm_col = st.columns(3)
cam_chart = cam_col.container()  # its chart first, its two choosers under it: the row's three charts start together
cam_block = cam_col.selectbox("Grad-CAM block", range(len(names)), index=len(names) - 1, format_func=names.__getitem__,
                              key="fm_cam_block")
target = cam_col.selectbox("Explain which class", w.targets, format_func=w.target_label, key="fm_target",
                           bind="query-params")

with ui.friendly_errors("Feature maps"):  # a picture we cannot read, a model too big: a message, and no more
    data = upload.getvalue() if upload is not None else images.sample_bytes(sample)
    pic = ui.shared_result(("fm_picture", fingerprint(data), pre, cfg.in_channels, device),
                           lambda _: fm.picture(data, pre, cfg.in_channels, device), "Reading the picture…")
    with st.expander("Preprocessing: what the network really sees", key="fm_pre", on_change="rerun"):  # stays open
        st.plotly_chart(ui.figure(pic.key, lambda: plots.plot_preprocessing(pic.steps)), key="fm_pre_fig")
        st.caption(fm.preprocessing_note(pre))
    fm.check_budget(cfg)
    look, r = fm.Look(w, pic, block, cam_block), None  # r: the maps; None until ready, or when there are none
    with views, ui.friendly_errors("Feature maps"):  # their progress, or why there are none (fm.finite: NaN or inf)
        r = fm.finite(ui.background_result(rk := look.capture_key(w.model, target),
                                           lambda _: look.capture(w.model, target), fm.CAPTURE_LABEL))
    if r is None:
        ui.stop_page()  # the first screen is drawn; the page reruns when the maps are ready
    views.markdown(f"**{fm.views_heading(r, k)}**")  # one line, over the three views
    figs = ui.figure((rk, k), lambda: plots.plot_block_views(r, k, 330))
    for i, (col, fig) in enumerate(zip(views.columns(3), figs)):
        col.plotly_chart(fig, key=f"fm_view_{i}")
    views.caption(f"{fm.VIEWS_NOTE} {w.caption}")
    for note in facts:
        getattr(views, note.box.value)(note.text, icon=note.icon)
    top_col.plotly_chart(ui.figure((rk, "top"), lambda: plots.plot_prediction(r, w)), key="fm_top")
    cam_chart.plotly_chart(ui.figure((rk, "cam"), lambda: plots.plot_grad_cam(pic.cropped, r, w)), key="fm_cam")
    norm_col.plotly_chart(ui.figure((rk, "norms"), lambda: plots.plot_block_norms(r.norms, r.block)), key="fm_norms")
    norm_col.caption(fm.NORMS_NOTE)

    if cfg.residual and st.toggle("Compare with the plain twin (same layers, shortcuts removed)", key="fm_plain",
                                  bind="query-params"):
        plain = ui.held(w.owned, "fm_plain", (w.key, device), lambda: fm.plain_model(w, device))
        pk, twin = look.capture_key(plain, r.target), lambda _: look.capture(plain, r.target)
        with ui.friendly_errors("The plain twin"):  # its NaN is said, and the attributions below still run
            if (p := fm.finite(ui.background_result(pk, twin, fm.CAPTURE_LABEL))) is not None:
                a, b = st.columns(2)
                a.plotly_chart(ui.figure((pk, k), lambda: plots.plot_block_views(p, k, 330)[-1]), key="fm_plain_view")
                b.plotly_chart(ui.figure((pk, "cam"), lambda: plots.plot_grad_cam(pic.cropped, p, w)),
                               key="fm_plain_cam")
                st.caption(fm.plain_twin_caption(p, w))

    st.subheader("Other attributions (captum)")
    cols = st.columns(2)
    steps = cols[0].slider("Integrated Gradients steps", 8, 64, 16, 8, key="fm_ig_steps", bind="query-params")
    for col, kind in zip(cols, fm.Attribution):  # a map is shown only for the settings it was computed with
        key, what = look.attribution_key(kind, r.target, steps), kind.name.lower()
        with col:  # partial, not a lambda: the background thread must not see the loop's next kind
            a = ui.asked_result(f"Run {kind.value}", f"fm_{what}_run", key,
                                partial(look.attribute, kind, r.target, steps), fm.ATTRIBUTION_LABELS[kind])
            if a is not None:
                st.plotly_chart(ui.figure(key, partial(plots.plot_attribution, pic.cropped, a)), key=f"fm_{what}_fig")
                st.caption(a.note)

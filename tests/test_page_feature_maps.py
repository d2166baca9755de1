"""The feature-maps page: AppTest with uploads (images and weights) and widgets set by key, which box says what for
each kind of weights; one browser test."""
import os
import re
from dataclasses import replace
from urllib.parse import urlencode

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import (checked_app, figure, new_app, no_exceptions, open_page, page_exceptions, png, saved,
                     screenshot, texts, wait_idle)
from resviz import models
from resviz.inputs.data import SHAPES
from resviz.lessons import feature_maps as fm
from resviz.pair import TrainedPair


def title(spec: dict) -> str:
    t = spec["layout"].get("title", {})
    return (t.get("text", "") if isinstance(t, dict) else str(t)).replace("<br>", " ")  # long titles wrap


def top5_labels(at) -> list[str]:
    return list(figure(at, "fm_top")["data"][0]["y"])


def read(markdown: str) -> str:
    """Markdown as a reader sees it: text.md's backslash escapes gone."""
    return re.sub(r"\\(.)", r"\1", markdown)


BOXES = ("success", "info", "warning", "error")
RANDOM = {"fm_source": fm.WeightsSource.RANDOM}  # the page starts from the shipped pair; these tests pick random


def boxes(at) -> dict[str, list[str]]:
    """Each kind of box the page shows, with the texts (as read) of its boxes."""
    return {kind: [read(e.value) for e in getattr(at, kind)] for kind in BOXES if getattr(at, kind)}


@pytest.fixture(scope="module")
def app():
    return checked_app("feature_maps", timeout=120, sidebar=RANDOM)


def test_the_page_starts_from_the_shipped_resnet20_trained_and_says_what_it_knows():
    at = checked_app("feature_maps", timeout=120)
    assert at.radio(key="fm_source").value is fm.WeightsSource.SHIPPED  # trained weights first, not random ones
    assert list(boxes(at)) == ["success", "info"] and not at.warning
    verdict = boxes(at)["success"][0]
    assert verdict.startswith("**These weights learned something: more than guessing.** On fresh built-in images "
                              "this ResNet gets 97% (95% interval") and "any photo is called one of them" in verdict
    assert "with the weights shipped with resviz (1200 SGD steps on the built-in images)" in read(texts(at))
    assert "input 16x16 pixels instead of 32x32 pixels" in boxes(at)["info"][0]
    assert len(set(SHAPES) & {label.split(" (")[0] for label in top5_labels(at)}) == 5  # it names shapes
    at.toggle(key="fm_plain").set_value(True).run()
    no_exceptions(at)
    assert "the plain twin shipped with it, trained with it on the same batches" in texts(at)


def test_smoke_shows_a_photo_in_the_first_block_and_says_the_weights_are_random(app):
    assert not app.error
    assert app.selectbox(key="fm_sample").value == "cat"  # a real photo by default
    assert "Inside block layer1.0: 16 channels, the 9 most active" in texts(app)
    assert list(boxes(app)) == ["warning"] and len(app.warning) == 1  # random weights: one warning, nothing else
    assert app.warning[0].value.startswith("**These weights are random: the network is untrained.**")
    assert "Training race" in app.warning[0].value and "pick an ImageNet preset in the sidebar" in app.warning[0].value
    assert "Choose **ResNet-20 trained by resviz** above" in app.warning[0].value
    assert title(figure(app, "fm_top")) == "Top-5 classes of an untrained network"
    assert len(app.get("plotly_chart")) >= 6  # three views, top-5, Grad-CAM, sizes, preprocessing


def test_block_and_channel_widgets(app):
    app.selectbox(key="fm_block").set_value(4).run()  # resnet20: layer1.0-2, layer2.0-2, ...
    app.slider(key="fm_k").set_value(4).run()
    no_exceptions(app)
    assert "Inside block layer2.1: 32 channels, the 4 most active" in texts(app)


def test_plain_twin_of_random_weights_says_what_is_true_of_random_weights(app):
    app.toggle(key="fm_plain").set_value(True).run()
    no_exceptions(app)
    caption = next(c.value for c in app.caption if c.value.startswith("Plain twin's top class"))
    assert "same random weights" in caption and "Neither network was trained" in caption
    assert "no longer fit together" not in caption
    app.toggle(key="fm_plain").set_value(False).run()


def test_uploaded_photo_is_used_and_bad_uploads_are_explained(app):
    app.file_uploader(key="fm_upload").set_value(("red.png", png(color=(200, 30, 30)), "image/png")).run()
    no_exceptions(app)
    assert not app.error and "Inside block" in texts(app)
    assert app.selectbox(key="fm_sample").disabled  # the upload is shown, not the sample
    app.file_uploader(key="fm_upload").set_value(("fake.png", b"not a picture at all", "image/png")).run()
    no_exceptions(app)
    assert "not an image we can read" in app.error[0].value
    app.file_uploader(key="fm_upload").set_value(("empty.png", b"", "image/png")).run()
    assert "empty (0 bytes)" in read(app.error[0].value)
    app.file_uploader(key="fm_upload").set_value(None).run()
    assert not app.error and not app.selectbox(key="fm_sample").disabled


def test_weights_upload_good_bad_and_malicious(tmp_path):
    at = new_app("feature_maps", timeout=120)
    at.radio(key="fm_source").set_value("upload").run()
    good = models.build_model("resnet20", seed=7).state_dict()
    at.file_uploader(key="fm_weights_file").set_value(("mine.pt", saved(good), "application/octet-stream")).run()
    no_exceptions(at)
    assert not at.error and "with uploaded mine.pt" in read(texts(at))
    assert not at.warning  # uploaded weights are not called random
    r18 = saved(models.build_model("resnet18").state_dict())
    at.file_uploader(key="fm_weights_file").set_value(("r18.pth", r18, "application/octet-stream")).run()
    assert list(boxes(at)) == ["error"] and len(at.error) == 1  # said once, in one box
    refused = boxes(at)["error"][0]
    assert "This file has 1000 output classes; the chosen model has 10" in refused
    assert refused.count("random weights") == 1 and "choose **ImageNet weights**" not in refused  # no such weights
    assert "random weights (seed 0)" in read(texts(at))  # fell back, page still works
    target = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(target)!r}, 'w').write('x')",))

    evil = saved({"a": Evil()})
    at.file_uploader(key="fm_weights_file").set_value(("evil.pt", evil, "application/octet-stream")).run()
    no_exceptions(at)
    assert "would run code" in at.error[0].value and not target.exists()


def bad_bn_weights(sd: dict | None = None) -> dict:
    sd = {k: v.clone() for k, v in (sd or models.build_model("resnet20", seed=7).state_dict()).items()}
    sd["layer2.0.bn1.running_var"][5] = -3.0  # a checkpoint no training makes: a negative variance
    return sd


def drawn(at) -> set[str]:
    return {c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")}


def test_weights_that_make_nan_are_an_error_that_says_where_and_no_chart_is_drawn():
    at = new_app("feature_maps", timeout=120)
    at.radio(key="fm_source").set_value("upload").run()
    at.file_uploader(key="fm_weights_file").set_value(("bn.pt", saved(bad_bn_weights()), "application/x")).run()
    no_exceptions(at)
    assert list(boxes(at)) == ["error"] and len(at.error) == 1
    said = boxes(at)["error"][0]
    assert "These weights make NaN or inf on this picture: first at layer2.0.bn1" in said and "…" not in said
    assert "running variance is negative (-3 in channel 5; 1 of 32 channels)" in said
    assert drawn(at) == {"fm_pre_fig"}  # the preprocessing only: no chart of NaN
    huge = models.build_model("resnet20", seed=7).state_dict()
    for name in ("layer1.0.conv1.weight", "layer1.0.conv2.weight"):
        huge[name] *= 1e20
    at.file_uploader(key="fm_weights_file").set_value(("huge.pt", saved(huge), "application/x")).run()
    no_exceptions(at)
    said = boxes(at)["error"][0]
    assert "first at layer1.0.conv2" in said and "pass the largest float32 (3.4e+38)" in said and "…" not in said
    assert drawn(at) == {"fm_pre_fig"}
    pair = trained_pair()  # made again with the bad variance: its key (a fingerprint of the weights) is its own
    pair = TrainedPair(pair.cfg, bad_bn_weights(pair.state_dict), pair.plain_state_dict, pair.label, pair.class_names)
    at = new_app("feature_maps", timeout=120)
    at.session_state["trained"] = pair
    at.run()
    at.radio(key="fm_source").set_value("trained").run()
    no_exceptions(at)
    assert list(boxes(at)) == ["error"] and "first at layer2.0.bn1" in boxes(at)["error"][0]  # no guessing verdict


def trained_pair(name="resnet20", **changes):
    resnet = models.build_model(replace(models.get_config(name), **changes), seed=3)
    plain = models.build_model(models.plain_config(resnet.cfg), seed=4)
    return TrainedPair(resnet.cfg, resnet.state_dict(), plain.state_dict(),
                       f"{name} trained 300 steps on Built-in shapes", class_names=SHAPES,
                       data_name="Built-in shapes", steps=300)


def test_trained_model_keeps_its_class_names_and_matches_the_sidebar():
    at = new_app("feature_maps", timeout=120)
    at.session_state["trained"] = trained_pair()
    at.run()
    at.radio(key="fm_source").set_value("trained").run()
    no_exceptions(at)
    assert "with resnet20 trained 300 steps on Built-in shapes" in read(texts(at))
    assert not at.info  # the sidebar's own model (ResNet-20): nothing to say about it
    named = {f"{name} ({i})" for i, name in enumerate(SHAPES)}
    assert len(named & set(top5_labels(at))) == 5  # names of the shapes it learnt, with their indices
    assert "0: disc" in at.selectbox(key="fm_target").options
    assert "Shorter side resized to 32 px, center 32x32 crop" in texts(at)  # the race's preprocessing
    at.toggle(key="fm_plain").set_value(True).run()
    no_exceptions(at)
    assert "trained in the same race, on the same batches, with its own weights" in texts(at)


def test_trained_weights_at_guessing_get_a_warning_and_learned_ones_a_success(monkeypatch):
    from resviz import pair

    for accuracy, box, said in ((None, "warning", "These weights are no better than guessing."),  # as measured
                                (0.12, "warning", "These weights are no better than guessing."),  # 9-15%
                                (0.14, "success", "These weights learned something: more than guessing."),  # 11-17%
                                (0.9, "success", "These weights learned something: more than guessing.")):
        if accuracy is not None:  # the accuracy itself is tested against pair.accuracy in test_feature_maps
            monkeypatch.setattr(pair, "accuracy", lambda *a, acc=accuracy, **k: acc)
        at = new_app("feature_maps", timeout=120)
        at.session_state["trained"] = trained_pair()  # seeded, never trained: it guesses
        at.run()
        at.radio(key="fm_source").set_value("trained").run()
        no_exceptions(at)
        assert list(boxes(at)) == [box] and len(getattr(at, box)) == 1, (accuracy, boxes(at))
        assert boxes(at)[box][0].startswith(f"**{said}**") and "(95% interval" in boxes(at)[box][0]


def test_trained_model_that_is_not_the_sidebars_says_what_differs():
    at = new_app("feature_maps", timeout=120, sidebar={"sel_cifar": "resnet32"})
    at.session_state["trained"] = trained_pair("resnet20")
    at.run()
    at.radio(key="fm_source").set_value("trained").run()
    no_exceptions(at)
    assert len(at.info) == 1 and "This page shows **resnet20** trained on the Training race" in at.info[0].value
    assert "not the sidebar's **resnet32**: blocks per stage (3, 3, 3) instead of (5, 5, 5)" in at.info[0].value
    assert "Inside block layer1.0: 16 channels" in texts(at) and len(at.selectbox(key="fm_block").options) == 9
    small = trained_pair("resnet20", input_size=16)  # the race's ResNet-20 on 16 px built-in images
    at = new_app("feature_maps", timeout=120)
    at.session_state["trained"] = small
    at.run()
    at.radio(key="fm_source").set_value("trained").run()
    no_exceptions(at)
    said = read(at.info[0].value)
    assert "not the sidebar's" not in said  # both are resnet20
    assert "the sidebar's model, but with input 16x16 pixels instead of 32x32 pixels" in said


def server_paths(tmp_path) -> list[str]:
    return [str(tmp_path), torch.hub.get_dir(), os.path.expanduser("~"), "checkpoints", ".pth"]


def test_imagenet_weights_offline_say_what_is_missing_and_how_to_get_them_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file",  # the error names the server's path, as OSErrors do
                        lambda url, dst, *a, **k: (_ for _ in ()).throw(OSError(f"Network is unreachable: {dst}")))
    at = new_app("feature_maps", timeout=180, sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet18"})
    no_exceptions(at)
    assert list(boxes(at)) == ["warning"] and len(at.warning) == 1  # not fetched yet: a warning, said once
    said = boxes(at)["warning"][0]
    assert said.startswith("torchvision's ImageNet weights for resnet18 are not on this server yet.")
    assert ("press **Download the ImageNet weights** (the server must be online), or ask the teacher to run "
            "`python -m resviz.prepare --weights resnet18` on the server while it is online") in said
    assert said.count("random weights") == 1 and "choose **ImageNet weights**" not in said
    assert "random weights (seed 0)" in texts(at)
    shown = [texts(at)]
    at.button(key="fm_download").click().run()
    no_exceptions(at)
    assert list(boxes(at)) == ["error"] and len(at.error) == 1  # the download failed: an error, said once
    said = boxes(at)["error"][0]
    assert said.startswith("This server could not download torchvision's ImageNet weights for resnet18")
    assert "ask the teacher to run `python -m resviz.prepare --weights resnet18`" in said and "press" not in said
    assert said.count("random weights") == 1 and "ImageNet weights** above" not in said  # not the choice that failed
    assert "Inside block layer1.0: 64 channels" in texts(at)  # ResNet-18 at 224 still runs on random weights
    shown.append(texts(at))
    assert [p for p in server_paths(tmp_path) for t in shown if p in t] == []


def test_cached_imagenet_weights_give_named_top5_and_a_plain_twin_that_no_longer_fits(tmp_path, monkeypatch):
    import torchvision

    from resviz import ui

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fake = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"  # torchvision's file name, our weights
    fake.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), fake)
    ui.shared_model.clear()
    try:
        at = new_app("feature_maps", timeout=180, sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet18"})
        no_exceptions(at)
        assert not at.error and not at.warning and "with torchvision ResNet18_Weights.IMAGENET1K_V1" in texts(at)
        assert "Shorter side resized to 256 px, center 224x224 crop" in texts(at)
        names = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
        shown = set(top5_labels(at)) & {f"{n} ({i})" for i, n in enumerate(names)}
        assert len(shown) == 5 and title(figure(at, "fm_top")) == "Top-5 classes"  # five ImageNet names, indices
        at.toggle(key="fm_plain").set_value(True).run()
        no_exceptions(at)
        assert "trained with the shortcuts, so without them the layers no longer fit together" in texts(at)
    finally:
        ui.shared_model.clear()


def test_integrated_gradients_and_occlusion_buttons_draw_their_maps(app):
    app.selectbox(key="fm_target").set_value(3).run()
    app.slider(key="fm_ig_steps").set_value(8).run()
    app.button(key="fm_ig_run").click().run()
    no_exceptions(app)
    assert "Attributions sum to" in texts(app)
    app.button(key="fm_occ_run").click().run()
    no_exceptions(app)
    assert title(figure(app, "fm_ig_fig")) == "Integrated Gradients"
    assert title(figure(app, "fm_occ_fig")) == "Occlusion: score drop"
    assert "hides every channel" in texts(app) and "Largest drop" in texts(app)  # what its numbers are
    assert title(figure(app, "fm_cam")).endswith(": 'class 3'")  # every map explains the chosen class


def test_an_attribution_is_shown_only_for_the_settings_it_was_computed_with():
    at = checked_app("feature_maps", timeout=120)

    def drawn() -> set[str]:
        return {c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")}

    at.slider(key="fm_ig_steps").set_value(8).run()
    at.button(key="fm_ig_run").click().run()
    assert "fm_ig_fig" in drawn() and "fm_occ_fig" not in drawn()  # only what was asked for
    at.slider(key="fm_ig_steps").set_value(24).run()
    assert "fm_ig_fig" not in drawn()  # the 8-step map is not shown as the 24-step one
    at.slider(key="fm_ig_steps").set_value(8).run()
    assert "fm_ig_fig" in drawn()  # asked for before: shown again
    at.selectbox(key="fm_target").set_value(2).run()
    no_exceptions(at)
    assert "fm_ig_fig" not in drawn()  # another class: not explained until asked


@pytest.mark.browser
def test_browser_first_screen_shows_the_lesson_and_a_real_upload_runs(app_server, page, tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), np.uint8)).save(photo, format="JPEG")
    page.set_viewport_size({"width": 1400, "height": 900})  # a classroom projector's first screen
    random_link = urlencode({"fm_source": fm.SOURCE_LABELS[fm.WeightsSource.RANDOM]})  # a link says the label
    open_page(page, app_server, f"feature_maps?{random_link}")
    page.get_by_text("Inside block layer1.0").first.wait_for(timeout=90_000)
    wait_idle(page)
    warning = page.get_by_text("These weights are random").first.bounding_box()
    assert warning and warning["y"] + warning["height"] <= 900
    charts = page.locator('[data-testid="stPlotlyChart"]')
    for i in range(3):  # F(x), the shortcut x and relu(F(x) + x): whole, above the fold
        box = charts.nth(i).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 900, (i, box)
    page.get_by_text("Your photo", exact=True).first.click()  # open the expander
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(photo))
    page.get_by_text("photo.jpg").first.wait_for(timeout=30_000)
    page.get_by_text("Preprocessing: what the network really sees").first.click()  # open the expander
    page.get_by_text("160x120", exact=True).first.wait_for(timeout=90_000)  # "original" over it
    wait_idle(page)
    screenshot(page, "feature_maps")
    assert page_exceptions(page) == []
    assert page.get_by_text("Grad-CAM at layer3.2").count() >= 1


def test_feature_maps_over_the_teachers_budget_are_refused_with_numbers(monkeypatch):
    monkeypatch.setenv("RESVIZ_BUDGET_MB", "1")
    at = new_app("feature_maps")
    no_exceptions(at)
    shown = " ".join(e.value for e in at.error)
    assert "Feature maps needs about" in shown and "this server allows" in shown, shown

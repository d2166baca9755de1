"""The feature-maps page: AppTest with uploads (images and weights) and widgets set by key; one browser test."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import new_app, no_exceptions, open_page, page_exceptions, screenshot, wait_idle
from resviz import models


def png(size=(40, 30), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def texts(at) -> str:
    return " ".join([c.value for c in at.caption] + [s.value for s in at.subheader] + [e.value for e in at.error])


@pytest.fixture(scope="module")
def app():
    at = new_app("feature_maps", timeout=120)
    no_exceptions(at)
    return at


def test_smoke_shows_the_three_views_of_the_first_block(app):
    assert not app.error
    assert "Inside block layer1.0: 16 channels, showing the 9 most active" in texts(app)
    assert "synthetic drawings" in texts(app)
    assert len(app.get("plotly_chart")) >= 6  # preprocessing, three views, norms, top-5, Grad-CAM


def test_block_and_channel_widgets(app):
    app.selectbox(key="fm_block").set_value(4).run()  # resnet20: layer1.0-2, layer2.0-2, ...
    app.slider(key="fm_k").set_value(4).run()
    no_exceptions(app)
    assert "Inside block layer2.1: 32 channels, showing the 4 most active" in texts(app)


def test_uploaded_photo_is_used_and_bad_uploads_are_explained(app):
    app.file_uploader(key="fm_upload").set_value(("red.png", png(), "image/png")).run()
    no_exceptions(app)
    assert not app.error and "Inside block" in texts(app)
    app.file_uploader(key="fm_upload").set_value(("fake.png", b"not a picture at all", "image/png")).run()
    no_exceptions(app)
    assert "not an image we can read" in app.error[0].value
    app.file_uploader(key="fm_upload").set_value(("empty.png", b"", "image/png")).run()
    assert "empty (0 bytes)" in app.error[0].value
    app.file_uploader(key="fm_upload").set_value(None).run()
    assert not app.error


def test_weights_upload_good_bad_and_malicious(tmp_path):
    at = new_app("feature_maps", timeout=120)
    at.radio(key="fm_source").set_value("upload").run()
    good = models.build_model("resnet20", seed=7).state_dict()
    at.file_uploader(key="fm_weights_file").set_value(("mine.pt", saved(good), "application/octet-stream")).run()
    no_exceptions(at)
    assert not at.error and "with uploaded mine.pt" in texts(at)
    r18 = saved(models.build_model("resnet18").state_dict())
    at.file_uploader(key="fm_weights_file").set_value(("r18.pth", r18, "application/octet-stream")).run()
    assert "This file has 1000 output classes; the chosen model has 10" in at.error[0].value
    assert "random weights (seed 0)" in texts(at)  # fell back, page still works
    target = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(target)!r}, 'w').write('x')",))

    at.file_uploader(key="fm_weights_file").set_value(("evil.pt", saved({"a": Evil()}), "application/octet-stream")).run()
    no_exceptions(at)
    assert "would run code" in at.error[0].value and not target.exists()


def test_trained_model_from_the_training_page_is_offered():
    at = new_app("feature_maps", timeout=120)
    trained = models.build_model("resnet20", seed=3)
    at.session_state["trained"] = {"cfg": trained.cfg, "state_dict": trained.state_dict(),
                                   "plain_state_dict": models.build_model(models.plain_config(trained.cfg), seed=4).state_dict(),
                                   "label": "resnet20, 2 epochs"}
    at.run()
    at.radio(key="fm_source").set_value("trained").run()
    no_exceptions(at)
    assert "with resnet20, 2 epochs" in texts(at)
    at.toggle(key="fm_plain").set_value(True).run()
    no_exceptions(at)
    assert "Plain twin's top class" in texts(at)


def test_imagenet_weights_missing_gives_a_message_and_download_failure_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("Network is unreachable")))
    at = new_app("feature_maps", timeout=180, sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet18"})
    no_exceptions(at)
    assert "not on this computer" in at.error[0].value and "random weights (seed 0)" in texts(at)
    at.button(key="fm_download").click().run()
    no_exceptions(at)
    assert "Could not download" in at.error[0].value and "Network is unreachable" in at.error[0].value
    assert "Inside block layer1.0: 64 channels" in texts(at)  # ResNet-18 at 224 still runs on random weights


def test_cached_imagenet_weights_give_named_top5(tmp_path, monkeypatch):
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
        assert not at.error and "with torchvision ResNet18_Weights.IMAGENET1K_V1" in texts(at)
        assert "Shorter side resized to 256 px, center 224x224 crop" in texts(at)
        top5 = [c.proto.spec for c in at.get("plotly_chart") if "Top-5" in c.proto.spec][0]
        names = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
        shown = [i for i, n in enumerate(names) if f'"{n} ({i})"' in top5]
        assert len(shown) == 5 and "class numbers" not in top5  # five ImageNet class names with their indices
    finally:
        ui.shared_model.clear()


def test_integrated_gradients_and_occlusion_buttons(app):
    app.selectbox(key="fm_target").set_value(3).run()
    app.slider(key="fm_ig_steps").set_value(8).run()
    app.button(key="fm_ig_run").click().run()
    no_exceptions(app)
    assert "Attributions sum to" in texts(app)
    app.button(key="fm_occ_run").click().run()
    no_exceptions(app)
    titles = [c.proto.spec for c in app.get("plotly_chart")]
    assert any("Occlusion" in t for t in titles) and any("Integrated Gradients" in t for t in titles)
    assert any("for '3: class 3'" in t or "class 3" in t for t in titles)


@pytest.mark.browser
def test_browser_upload_a_real_file(app_server, page, tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), np.uint8)).save(photo, format="JPEG")
    open_page(page, app_server, "feature_maps")
    page.get_by_text("Inside block layer1.0").first.wait_for(timeout=90_000)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(photo))
    page.get_by_text("photo.jpg").first.wait_for(timeout=30_000)
    page.get_by_text("original 160x120").first.wait_for(timeout=90_000)
    wait_idle(page)
    page.set_viewport_size({"width": 1400, "height": 3600})  # the app scrolls inside; show all of it
    wait_idle(page)
    screenshot(page, "feature_maps")
    assert page_exceptions(page) == []
    assert page.get_by_text("Grad-CAM at layer3.2").count() >= 1

"""Pages: lesion study, paths, shattered gradients, loss landscape (AppTest + one browser test each)."""
import pytest
import torch

from conftest import new_app, no_exceptions, open_page, page_exceptions, screenshot
from resviz import diskcache, landscape, pair
from resviz.models import ResNetConfig, build_model, plain_twin

TINY = ResNetConfig(block="basic", layers=(1, 1), widths=(4, 8), stem="cifar", stem_width=4, input_size=8,
                    num_classes=4, shortcut="A", name="tiny")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path / "cache"))


def tiny_trained():
    model = build_model(TINY, seed=0)
    return {"cfg": TINY, "state_dict": model.state_dict(), "plain_state_dict": plain_twin(model).state_dict(),
            "label": "tiny test pair"}


def with_pair(page):
    at = new_app(page)
    at.session_state["trained"] = tiny_trained()
    return at.run()


def texts(at):
    return " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)


# --- shattered ------------------------------------------------------------------------------------
def test_shattered_smoke_and_depth():
    at = new_app("shattered")
    no_exceptions(at)
    assert "Balduzzi" in texts(at)
    at.slider(key="sh_depth").set_value(60).run()
    no_exceptions(at)
    plain, res = (float(m.value) for m in at.metric)
    assert plain < 0.3 < res  # deep plain: noise; ResNet: still correlated
    at.slider(key="sh_depth").set_value(2).run()
    assert float(at.metric[0].value) > 0.8  # shallow plain: smooth


# --- lesion ---------------------------------------------------------------------------------------
def test_lesion_without_pair_offers_training():
    at = new_app("lesion")
    no_exceptions(at)
    assert at.button(key="le_pair_train").label == "train a small pair now"
    assert not at.get("plotly_chart")
    assert "Veit" in texts(at)


def test_lesion_with_session_pair():
    at = with_pair("lesion")
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert "tiny test pair" in texts(at)
    table = at.dataframe[0].value
    assert list(table["block"]) == ["layer1.0", "layer2.0"]
    assert table["plain accuracy"].isna().tolist() == [False, True]  # shape-changing plain block: impossible
    assert len(at.metric) == 2 and at.metric[0].value.endswith("%")
    at.toggle(key="le_pair_session").set_value(False).run()  # prefer a small pair trained here
    no_exceptions(at)
    assert at.button(key="le_pair_train") and not at.dataframe


def test_lesion_train_button_trains_and_caches(monkeypatch):
    calls = []

    def fake_train(cfg, seed, steps, device, on_step=None):  # the real one takes minutes: weights only here
        calls.append((cfg.name, steps))
        model = build_model(cfg, seed=0)
        on_step({"step": 1, "steps": 1})
        diskcache.save(pair.pair_key(cfg, seed, steps), {"state_dict": model.state_dict(),
                       "plain_state_dict": plain_twin(model).state_dict(), "label": "fake pair"})

    monkeypatch.setattr(pair, "train_pair", fake_train)
    at = new_app("lesion")
    assert at.select_slider(key="le_pair_steps").value == 300  # the default: long enough to learn the shapes
    at.button(key="le_pair_train").click().run()
    no_exceptions(at)
    at.select_slider(key="le_n").set_value(100).run()
    assert calls == [("resnet20", 300)]
    assert "fake pair" in texts(at) and at.dataframe
    at = new_app("lesion")  # a later visit finds it on disk: no button, no training
    assert not at.button and calls == [("resnet20", 300)] and "fake pair" in texts(at)
    at.select_slider(key="le_pair_steps").set_value(600).run()  # another length: not trained yet
    assert at.button(key="le_pair_train") and "Already trained here: resnet20 (300 steps)" in at.info[0].value


# --- paths ----------------------------------------------------------------------------------------
def test_paths_on_sidebar_model():
    at = new_app("paths")
    no_exceptions(at)
    assert "Veit" in texts(at)
    n, mode, k90 = (m.value for m in at.metric)
    assert (int(n), mode) == (9, "4 and 5")  # resnet20: 9 blocks, Binomial(9, 1/2) has modes 4 and 5
    assert 0 <= int(k90) <= 9


def test_paths_on_trained_pair():
    at = with_pair("paths")
    at.radio(key="pa_source").set_value("a trained ResNet")
    at.slider(key="pa_samples").set_value(1).run()
    no_exceptions(at)
    assert int(at.metric[0].value) == 2


# --- landscape ------------------------------------------------------------------------------------
def test_landscape_coarse_live_then_fine_from_disk(monkeypatch):
    real = landscape.pair_grids

    def smaller_fine_grid(resnet, plain, x, y, steps, *rest, **kw):  # 21x21 takes minutes on a busy CPU
        return real(resnet, plain, x, y, 5 if steps == 21 else steps, *rest, **kw)

    monkeypatch.setattr(landscape, "pair_grids", smaller_fine_grid)
    at = with_pair("landscape")
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert "Li, Xu" in texts(at)
    assert any("coarse 7×7" in s.value for s in at.subheader)
    assert len(at.get("plotly_chart")) == 3
    for t in list(landscape._jobs.values()):
        t.join(120)
    at.run()
    no_exceptions(at)
    assert any("21×21" in s.value and "background" in s.value for s in at.subheader)


# --- browser --------------------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.parametrize("path,expected", [("shattered", "Balduzzi"), ("lesion", "Veit"),
                                           ("paths", "most common path length"), ("landscape", "Li, Xu")])
def test_beyond_pages_in_browser(app_server, page, path, expected):
    open_page(page, app_server, path)
    assert page_exceptions(page) == []
    assert expected in page.inner_text("body")
    screenshot(page, f"beyond_{path}")


def test_mismatched_session_pair_is_a_message_not_a_traceback():
    at = new_app("lesion")
    bad = tiny_trained()
    bad["state_dict"] = build_model("resnet20", seed=0).state_dict()  # weights of another network
    at.session_state["trained"] = bad
    at.run()
    no_exceptions(at)
    assert at.error and "trained pair" in at.error[0].value

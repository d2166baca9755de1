"""Lesion study page (AppTest + browser); the trained-pair picker it shares with Paths and Loss landscape."""
import dataclasses

import numpy as np
import pytest
import torch

from helpers import new_app, no_exceptions, texts, tiny_config, tiny_model, visit
from resviz import builtin_pair, disk_cache, pair
from resviz.inputs import data
from resviz.lessons import lesion
from resviz.models import build_model, plain_twin

TINY = tiny_config()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path / "cache"))


def tiny_trained(label="tiny test pair", **kw) -> pair.TrainedPair:
    """A pair as the training page hands it over (random weights: it guesses)."""
    model = tiny_model()
    return pair.TrainedPair(TINY, model.state_dict(), plain_twin(model).state_dict(), label,
                            **{"class_names": tuple(data.SHAPES[:4]), **kw})


def with_pair(page, trained=None):
    at = new_app(page)
    at.session_state["trained"] = trained or tiny_trained()
    return at.run()


def test_lesion_without_pair_offers_training():
    at = new_app("lesion")
    no_exceptions(at)
    assert at.button(key="le_pair_train").label == "Train this pair now"
    assert not at.get("plotly_chart")
    assert "Veit" in texts(at) and "Section 4.1" in texts(at)
    recipe = builtin_pair.BuiltinRecipe()  # the steps' help names the recipe the pair really trains with
    assert f"learning rate {recipe.lr:g}, batch {recipe.batch_size}" in at.select_slider(key="le_pair_steps").help


def test_lesion_with_session_pair_averages_comparable_blocks():
    at = with_pair("lesion")
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert "tiny test pair" in texts(at)
    table = at.dataframe[0].value
    assert list(table["block"]) == ["layer1.0", "layer2.0"]
    assert table["plain accuracy"][1] == "cannot delete"  # shape-changing plain block: impossible
    assert table["plain accuracy"][0].endswith("%")
    res, plain, down = (m.value for m in at.metric)
    # one comparable block (layer1.0): both means are that block's drop, the downsampling one is apart
    intact_res = pair.accuracy(tiny_model(), *pair.eval_data(TINY, pair.EVAL_IMAGES))  # the page's default
    lesioned = [float(a.rstrip("%")) / 100 for a in table["ResNet accuracy"]]
    learned = intact_res - 0.25  # above guessing (4 classes); a random pair may have learned nothing: no share
    share = min(1.0, max(0.0, (intact_res - lesioned[0]) / learned)) if learned > 0 else None
    assert res == "—" if share is None else res.startswith(f"{share:.0%} ± ")
    assert down == f"{intact_res - lesioned[1]:.1%}"
    assert "64,000 steps" in texts(at) and "Section 4.2" in texts(at)  # where the schedule comes from


def test_pair_at_chance_warns_and_offers_the_builtin_pair():
    at = with_pair("lesion")  # random weights: no better than guessing
    assert any("no better than guessing" in w.value for w in at.warning)
    at.button(key="le_pair_builtin").click().run()
    no_exceptions(at)
    assert at.toggle(key="le_pair_session").value is False
    assert at.button(key="le_pair_train") and not at.dataframe  # the built-in pair is not trained yet


# The page's one verdict box, from hand-made studies of the tiny pair's two blocks (layer1.0 keeps the shape, layer2.0
# downsamples: the twin cannot lose it), 4 classes (guessing 25%): (ResNet with each block deleted, intact; plain
# twin the same), the box, how its text starts.
VERDICTS = {
    "at chance": ((0.26, 0.25), 0.27, (0.25, np.nan), 0.26, "info", "**No verdict:** the ResNet gets 27% (95% "),
    "inside the noise": ((0.33, 0.3), 0.36, (0.3, np.nan), 0.35, "info", "**No verdict:** one deletion costs"),
    "as in the paper": ((0.93, 0.6), 0.95, (0.4, np.nan), 0.9, "success", "**As in the paper:** one deletion"),
    "a block matters": ((0.705, 0.6), 0.95, (0.25, np.nan), 0.9, "warning", "**Partly as in the paper.** On avera"),
    "not the paper": ((0.5, 0.4), 0.95, (0.7, np.nan), 0.9, "warning", "**Not the paper's picture:** one deleti"),
}


@pytest.mark.parametrize("case", VERDICTS)
def test_each_verdict_shows_in_its_own_box(case, monkeypatch):
    res_acc, res_intact, plain_acc, plain_intact, box, start = VERDICTS[case]
    real_load = pair.load_pair

    def load_pair(trained, source, device="cpu"):  # the pair's own check reads the same accuracies as the study
        return dataclasses.replace(real_load(trained, source, device), resnet_accuracy=res_intact,
                                   plain_accuracy=plain_intact)

    def study_pair(p, n, on_progress=None):
        names, down = ("layer1.0", "layer2.0"), np.array([False, True])
        return (lesion.LesionResult(names, np.array(res_acc), np.array([True, True]), down, res_intact, n),
                lesion.LesionResult(names, np.array(plain_acc), np.array([True, False]), down, plain_intact, n))

    monkeypatch.setattr(pair, "load_pair", load_pair)
    monkeypatch.setattr(lesion, "study_pair", study_pair)
    at = with_pair("lesion", tiny_trained(label=f"tiny pair, {case}"))  # its own key: its own cached study
    no_exceptions(at)
    verdicts = {kind: [e.value for e in getattr(at, kind) if e.value.startswith("**")]
                for kind in ("success", "warning", "info")}
    assert verdicts == {**{kind: [] for kind in verdicts}, box: verdicts[box]} and len(verdicts[box]) == 1, verdicts
    assert verdicts[box][0].startswith(start), verdicts[box][0]
    guessing = any("no better than guessing" in w.value for w in at.warning)  # the picker's own warning
    assert guessing == (case == "at chance")
    if case == "a block matters":
        assert "deleting layer1.0 drops the ResNet from 95% to 70% (35% ± " in verdicts[box][0]


def test_session_pair_from_other_data_is_a_message_not_a_traceback():
    at = with_pair("lesion", tiny_trained(class_names=("cat", "dog", "car", "bird"), data_name="a teacher's folder"))
    no_exceptions(at)
    assert at.error and "a teacher's folder" in at.error[0].value


def test_mismatched_session_pair_is_a_message_not_a_traceback():
    bad = tiny_trained()
    bad = pair.TrainedPair(TINY, build_model("resnet20", seed=0).state_dict(), bad.plain_state_dict, bad.label)
    at = with_pair("lesion", bad)
    no_exceptions(at)
    assert at.error and "trained pair" in at.error[0].value


def test_lesion_train_button_trains_and_caches(monkeypatch):
    calls = []

    def fake_train(recipe, device="cpu", on_step=None, store=True):  # the real one takes minutes: weights only
        calls.append((recipe.cfg.name, recipe.steps))
        model = build_model(recipe.cfg, seed=0)
        on_step({"step": 1, "steps": 1})
        disk_cache.save(recipe.key, {"state_dict": model.state_dict(), "plain_state_dict": plain_twin(
            model).state_dict(), "label": "fake pair", "class_names": tuple(data.SHAPES[:10])})
        return builtin_pair.load(recipe)

    monkeypatch.setattr(builtin_pair, "train", fake_train)
    at = new_app("lesion")
    assert at.select_slider(key="le_pair_steps").value == builtin_pair.BuiltinRecipe.steps
    at.button(key="le_pair_train").click().run()
    no_exceptions(at)
    at.select_slider(key="le_n").set_value(100).run()
    assert calls == [("resnet20", 600)]
    assert "fake pair" in texts(at) and at.dataframe
    at = new_app("lesion")  # a later visit finds it on disk: no button, no training
    assert "le_pair_train" not in [b.key for b in at.button]
    assert calls == [("resnet20", 600)] and "fake pair" in texts(at)
    at.select_slider(key="le_pair_steps").set_value(1200).run()  # another length: not trained yet
    assert at.button(key="le_pair_train") and "Already trained here: resnet20, 600 steps" in at.info[0].value


@pytest.mark.browser
def test_lesion_in_browser(app_server, page):
    visit(page, app_server, "lesion", "64,000 steps")  # the caption under the chart (the paper is folded above)

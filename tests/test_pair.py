"""The trained pair the lesion, paths and landscape pages study: disk cache, built-in recipe, accuracy, chance."""
import threading

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from helpers import no_exceptions, texts, tiny_config, tiny_model
from resviz import builtin_pair, disk_cache, pair, runs, ui
from resviz.inputs import data
from resviz.models import build_model, plain_twin

TINY = tiny_config()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path / "cache"))


def tiny_pair(label="tiny test pair", **kw):
    model = tiny_model()
    return pair.TrainedPair(TINY, model.state_dict(), plain_twin(model).state_dict(), label, **kw)


def test_disk_cache_roundtrip_corrupt_and_size_limit(monkeypatch):
    sd = {"w": torch.arange(3.0)}
    disk_cache.save("pair/resnet20 seed=0", {"state_dict": sd, "acc": np.array([0.5]), "label": "x"})
    back = disk_cache.load("pair/resnet20 seed=0")
    torch.testing.assert_close(back["state_dict"]["w"], sd["w"])
    assert back["acc"].tolist() == [0.5] and back["label"] == "x"
    disk_cache.cache().set("bad", b"not a torch file")
    assert disk_cache.load("bad") is None and not disk_cache.exists("bad")  # a broken entry is a miss, removed
    monkeypatch.setenv("RESVIZ_CACHE_MB", "1")
    for i in range(4):
        disk_cache.save(f"big{i}", {"x": torch.zeros(100_000)})  # ~0.4 MB each
    assert disk_cache.cache().volume() <= 1.5 * 2**20  # diskcache culls the least recently used past the limit
    assert disk_cache.exists("big3")


def test_disk_cache_runs_no_code_on_load():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    import pickle

    disk_cache.cache().set("evil", pickle.dumps({"numpy": [], "data": {"x": Evil()}}, protocol=2))
    assert disk_cache.load("evil") is None  # weights_only refuses it


def test_loaded_pair_measures_accuracy_and_flags_guessing():
    p = pair.load_pair(tiny_pair(), pair.PairSource.SESSION)
    x, y = pair.eval_data(TINY)
    with torch.no_grad():
        assert p.resnet_accuracy == (p.resnet(x).argmax(1) == y).sum().item() / len(y)
    assert p.chance == 0.25 and p.eval_images == pair.EVAL_IMAGES
    assert p.resnet.training is False and not any(q.requires_grad for q in p.plain.parameters())
    # Within noise of guessing: the 95% interval on 500 images reaches 25%. 28% +- 1.96 sqrt(.28 .72 / 500) = 28 +- 3.9
    # reaches it; 30% +- 4.0 does not.
    at = pair.LoadedPair(p.trained, p.source, p.resnet, p.plain, resnet_accuracy=0.28, plain_accuracy=0.30)
    assert at.resnet_at_chance and not at.plain_at_chance and at.is_at_chance and at.guessing == ("ResNet",)
    few = pair.LoadedPair(p.trained, p.source, p.resnet, p.plain, 0.30, 0.30, eval_images=100)
    assert few.guessing == ("ResNet", "plain twin")  # the same 30% on 100 images is within noise (+- 9.0)
    ok = pair.LoadedPair(p.trained, p.source, p.resnet, p.plain, resnet_accuracy=0.9, plain_accuracy=0.8)
    assert not ok.is_at_chance


def test_pair_trained_on_other_data_is_refused_in_words():
    cifar = tiny_pair(class_names=("airplane", "automobile", "bird", "cat"), data_name="CIFAR10")
    with pytest.raises(pair.PairError, match="CIFAR10.*built-in"):
        pair.load_pair(cifar, pair.PairSource.SESSION)
    builtin = tiny_pair(class_names=("disc", "square", "triangle", "cross"))
    pair.check_testable(builtin)  # the built-in classes: fine


def test_builtin_recipe_key_follows_what_the_pair_is():
    r = builtin_pair.recipe("resnet20", 300)
    assert r.key == builtin_pair.recipe("resnet20", 300).key
    assert len({r.key, builtin_pair.recipe("resnet20", 600).key, builtin_pair.recipe("resnet32", 300).key,
                builtin_pair.recipe("resnet20", 300, seed=1).key}) == 4
    c = r.race_config()
    assert (c.steps, c.eval_every, c.lr, c.batch_size) == (300, 0, 0.05, 32)  # both nets, one recipe
    assert r.cfg.input_size == 16 and "16x16" in r.label and "lr 0.05" in r.label  # the race's built-in images


def test_builtin_pair_trains_stores_and_loads():
    r = builtin_pair.BuiltinRecipe(TINY, steps=2)
    assert builtin_pair.load(r) is None and builtin_pair.ready([r]) == []
    steps = []
    trained = builtin_pair.train(r, on_step=lambda rec: steps.append(rec["step"]))
    assert steps == [1, 2] and trained.class_names == ("disc", "square", "triangle", "cross")
    back = builtin_pair.load(r)
    assert builtin_pair.ready([r]) == [r] and back.key == trained.key  # same weights, same label
    loaded = pair.load_pair(back, pair.PairSource.BUILTIN)
    torch.testing.assert_close(loaded.resnet.fc.weight, trained.state_dict["fc.weight"])


# --- the built-in pair, trained once for the whole class ---------------------------------------------------
PICKER = """
import streamlit as st
from resviz import ui
p = ui.pair_picker_ui("t")
if p is not None:
    st.write(f"Studying {p.label}")
"""


@pytest.fixture
def as_on_a_server(monkeypatch):
    """A fresh engine of its own (no result kept from another test), and pages that draw first and compute in the
    background, as on a real server (under AppTest they wait for their results)."""
    reg = runs.Registry(max_running=2, threads_per_run=None)
    monkeypatch.setattr(runs, "_REGISTRY", reg)
    monkeypatch.setattr(ui, "waits_for_results", lambda: False)
    yield reg
    reg.shutdown(60)  # a run a failed test left going ends before the next test


def open_picker() -> AppTest:
    at = AppTest.from_string(PICKER, default_timeout=60)
    at.session_state["t_pair_choice"] = ui.TRAIN_HERE  # the built-in pair trained here, not the shipped one
    return at.run()


def progress_texts(at) -> str:
    return "\n".join(p.proto.text for p in at.get("progress"))


def test_the_class_asking_for_one_builtin_pair_trains_it_once_and_all_watch_it(as_on_a_server, monkeypatch):
    calls, started, release, saved = [], threading.Event(), threading.Event(), threading.Event()

    def slow_train(recipe, device="cpu", on_step=None, store=True):  # the real one takes a minute: weights only
        calls.append((recipe.cfg.name, recipe.steps))
        on_step({"step": 1, "steps": 4})
        started.set()
        assert release.wait(60)
        model = build_model(recipe.cfg, seed=0)
        disk_cache.save(recipe.key, {"state_dict": model.state_dict(), "plain_state_dict": plain_twin(
            model).state_dict(), "label": "fake pair", "class_names": tuple(data.SHAPES[:10])})
        saved.set()
        return builtin_pair.load(recipe)

    monkeypatch.setattr(builtin_pair, "train", slow_train)
    first, second = open_picker(), open_picker()  # two students on the page, both offered the button
    assert first.button(key="t_pair_train") and second.button(key="t_pair_train")
    first.button(key="t_pair_train").click().run()  # returns while the pair trains: the page is not blocked
    assert started.wait(60)
    second.button(key="t_pair_train").click().run()  # joins the training under way
    third = open_picker()  # never pressed: sees the class's training too
    other = open_picker()
    other.select_slider(key="t_pair_steps").set_value(1200).run()  # another recipe: not this training
    for at in (first, second, third, other):
        no_exceptions(at)
        assert "Studying" not in texts(at, ("markdown",))
    for at in (second, third):  # the same training's progress, a quarter done
        assert "Training resnet20 and its plain twin for the class (600 steps): 25%" in progress_texts(at)
    assert "t_pair_train" not in [b.key for b in third.button] and other.button(key="t_pair_train")
    assert not progress_texts(other)
    release.set()
    assert saved.wait(60)
    for at in (first, second, third):  # each page reruns when the pair is ready (here by hand: AppTest
        at.run()  # does not poll fragments); it is on disk, where builtin_pair.load finds it
        no_exceptions(at)
        assert "Studying fake pair" in texts(at, ("markdown",))
    assert calls == [("resnet20", 600)]


def test_a_failed_class_training_is_a_message_and_can_be_tried_again(as_on_a_server, monkeypatch):
    started, release, calls = threading.Event(), threading.Event(), []

    def broken_train(recipe, device="cpu", on_step=None, store=True):
        calls.append(recipe)
        started.set()
        assert release.wait(60)  # fails only after the press's run has drawn its progress (no race with it)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(builtin_pair, "train", broken_train)
    at = open_picker()
    at.button(key="t_pair_train").click().run()
    assert started.wait(60)
    no_exceptions(at)
    assert not at.error
    release.set()
    assert as_on_a_server.idle(60)  # the training has failed
    at.run()
    no_exceptions(at)
    assert at.error and "the disk is full" in at.error[0].value
    assert at.button(key="t_pair_train")  # offered again
    at.run()  # any other rerun: the error was said once, and only a press tries again
    no_exceptions(at)
    assert not at.error and len(calls) == 1
    assert at.button(key="t_pair_train").proto.type == "primary"

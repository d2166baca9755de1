"""The trained pair the lesion, paths and landscape pages study: disk cache, built-in recipe, accuracy, chance."""
import numpy as np
import pytest
import torch

from helpers import tiny_config, tiny_model
from resviz import builtin_pair, disk_cache, pair
from resviz.models import plain_twin

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
    at = pair.LoadedPair(p.trained, p.source, p.resnet, p.plain, resnet_accuracy=0.29, plain_accuracy=0.31)
    assert at.resnet_at_chance and not at.plain_at_chance and at.is_at_chance  # 0.29 <= 0.25 + 0.05 < 0.31
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

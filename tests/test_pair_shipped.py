"""The trained pairs shipped in assets/pairs/ (scripts/train_pairs.py): files match their manifests, a changed file
is refused in plain words, the loaded pairs score what their manifests say on fresh images, well above guessing,
and the repository stays light."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
from dataclasses import replace

import pytest
import torch

from resviz import builtin_pair, pair
from resviz.inputs import weights

from helpers import ROOT

SHIPPED = builtin_pair.shipped_presets()
MAX_MB = 6  # four half-precision state dicts: ResNet-56's two are 1.7 MB each, ResNet-20's 0.6 MB


def manifest(preset: str, folder=builtin_pair.SHIPPED_DIR) -> dict:
    return json.loads(builtin_pair.manifest_path(preset, folder).read_text())


def test_the_resnet20_and_resnet56_pairs_are_shipped():
    assert SHIPPED == ["resnet20", "resnet56"]
    m = manifest("resnet56")  # the recipe that trains plain-56 here (builtin_pair.SHIPPED's comment)
    assert (m["recipe"]["optimizer"], m["recipe"]["bn_bias"]) == ("Adam", 1.0)
    assert builtin_pair.recipe_from_manifest(m).key == builtin_pair.script_recipe("resnet56", m["seed"]).key
    for role in ("resnet", "plain"):  # both clearly above guessing on the manifest's 2000 fresh images
        assert m["accuracies"][role]["accuracy"] > 0.3 + m["accuracies"]["chance"]


@pytest.mark.parametrize("preset", SHIPPED)
def test_files_match_their_manifest(preset):
    for f in manifest(preset)["files"]:
        blob = (builtin_pair.SHIPPED_DIR / f["name"]).read_bytes()
        assert (builtin_pair.sha256(blob), len(blob)) == (f["sha256"], f["bytes"])


def test_the_repository_stays_light():
    total = sum(p.stat().st_size for p in builtin_pair.SHIPPED_DIR.iterdir())
    assert total < MAX_MB * 2**20, f"assets/pairs holds {total / 2**20:.1f} MB"


def copy_of_shipped(tmp_path, preset: str):
    folder = tmp_path / "pairs"
    shutil.copytree(builtin_pair.SHIPPED_DIR, folder)
    return folder, manifest(preset, folder)


@pytest.mark.parametrize("preset", SHIPPED)
def test_a_changed_file_is_refused_in_plain_words(tmp_path, preset):
    folder, m = copy_of_shipped(tmp_path, preset)
    path = folder / m["files"][1]["name"]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(blob))
    with pytest.raises(weights.WeightsError, match=f"{m['files'][1]['name']} do not match their manifest"):
        builtin_pair.shipped(preset, folder)


def test_a_missing_file_is_said_and_a_missing_manifest_is_none(tmp_path):
    folder, m = copy_of_shipped(tmp_path, "resnet20")
    (folder / m["files"][0]["name"]).unlink()
    with pytest.raises(weights.WeightsError, match="are missing"):
        builtin_pair.shipped("resnet20", folder)
    assert builtin_pair.shipped("resnet44", folder) is None
    assert builtin_pair.shipped_info("resnet44", folder) is None


def test_files_go_through_the_uploads_safe_loader(tmp_path):
    """A file whose hash is in the manifest is still only read as plain tensors (weights_only)."""
    folder, m = copy_of_shipped(tmp_path, "resnet20")
    path = folder / m["files"][0]["name"]
    torch.save({"fc.weight": torch.zeros(2), "extra": weights.WeightsReport}, path)  # a class: code, not numbers
    m["files"][0]["sha256"] = builtin_pair.sha256(path.read_bytes())
    builtin_pair.manifest_path("resnet20", folder).write_text(json.dumps(m))
    with pytest.raises(weights.WeightsError, match="For safety this file was not loaded"):
        builtin_pair.shipped("resnet20", folder)


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("preset", SHIPPED)
def test_the_pair_scores_its_manifest_and_well_above_guessing(preset):
    m = manifest(preset)
    loaded = pair.load_pair(builtin_pair.shipped(preset), pair.PairSource.BUILTIN)  # 500 fresh images
    n, chance = loaded.eval_images, loaded.chance
    for role, acc in (("resnet", loaded.resnet_accuracy), ("plain", loaded.plain_accuracy)):
        stated = m["accuracies"][role]["accuracy"]
        noise = math.hypot(binomial_se(stated, n), binomial_se(stated, m["accuracies"]["images"]))
        assert abs(acc - stated) <= 3 * noise, (role, acc, stated)  # the same networks on other fresh images
        assert acc - chance > 8 * binomial_se(chance, n), (role, acc)  # guessing: 10% +- 1.3 points on 500
    assert not loaded.is_at_chance
    assert loaded.trained.steps == m["steps"] and "shipped" in loaded.label
    info = builtin_pair.shipped_info(preset)  # what the pair picker says, read without loading the weights
    assert (info.steps, info.resnet_accuracy, info.plain_accuracy) == (
        m["steps"], m["accuracies"]["resnet"]["accuracy"], m["accuracies"]["plain"]["accuracy"])


def test_the_script_writes_what_the_loader_reads(tmp_path, monkeypatch):
    """scripts/train_pairs.py, a few steps on a few images: half-precision files, hashes, accuracies, time."""
    spec = importlib.util.spec_from_file_location("train_pairs", ROOT / "scripts" / "train_pairs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setitem(builtin_pair.SHIPPED, "resnet20", builtin_pair.BuiltinRecipe(
        steps=3, lr=0.05, batch_size=16, warmup_steps=1, decay_at=(0.5,), n_train=64))
    monkeypatch.setattr(script, "EVAL_IMAGES", 50)
    log = tmp_path / "log.txt"
    script.main(["resnet20", "--out", str(tmp_path), "--eval-every", "0", "--log", str(log)])
    m = manifest("resnet20", tmp_path)
    assert m["steps"] == 3 and m["recipe"]["n_train"] == 64 and m["training"]["seconds"] > 0
    assert "done in" in log.read_text()
    trained = builtin_pair.shipped("resnet20", tmp_path)
    sd = torch.load(tmp_path / m["files"][0]["name"], weights_only=True)
    assert sd["conv1.weight"].dtype == torch.float16
    assert torch.equal(trained.state_dict["conv1.weight"], sd["conv1.weight"].float())
    resnet, plain = pair.build_pair(trained)
    x, y = pair.eval_data(trained.cfg, 50)
    assert m["accuracies"]["resnet"]["accuracy"] == pytest.approx(pair.accuracy(resnet, x, y))
    assert m["accuracies"]["plain"]["accuracy"] == pytest.approx(pair.accuracy(plain, x, y))


def test_the_pair_pages_start_from_the_shipped_pair_for_everyone():
    """Lesion (as Paths and Loss landscape) opens on the shipped pair: no wait, and every student the same pair and
    the same numbers (the pair is in the page's link); training a pair here stays one choice away."""
    from streamlit.testing.v1 import AppTest

    from helpers import ROOT, lesson, no_exceptions, texts

    def open_lesion():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.session_state["le_n"] = 100  # the fewest test images: the study's cost is not what is tested here
        at.run()
        return at.switch_page(lesson("lesion").page).run()

    first, second = open_lesion(), open_lesion()
    for at in (first, second):
        no_exceptions(at)
        assert at.selectbox(key="le_pair_choice").value == "resnet20"
        assert "shipped with resviz" in texts(at, ("caption",))
        assert not any(b.key == "le_pair_train" for b in at.button)  # nothing to wait for
    verdict = [box.value for kind in ("success", "warning", "info") for box in getattr(first, kind)]
    assert verdict == [box.value for kind in ("success", "warning", "info") for box in getattr(second, kind)]
    assert "train" in first.selectbox(key="le_pair_choice").options[-1].lower()


def test_the_claims_use_the_shipped_pair_for_its_own_seed_and_train_the_others(monkeypatch):
    """python -m resviz.claims --full studies the pairs scripts/train_pairs.py makes from seeds 0-4: the shipped files
    are that pair for the manifest's seed (nothing trained), the other seeds train with the same recipe."""
    trained = []

    def fake_train(r, device="cpu", on_step=None, store=True, eval_every=0):
        trained.append((r.seed, r.steps, r.lr, store))
        return builtin_pair.shipped("resnet20")  # weights only: the recipe is what is tested

    monkeypatch.setattr(builtin_pair, "train", fake_train)
    builtin_pair.script_pair.cache_clear()
    try:
        seed = manifest("resnet20")["seed"]
        assert builtin_pair.script_pair("resnet20", seed) is builtin_pair.shipped_pair("resnet20") and not trained
        builtin_pair.script_pair("resnet20", seed + 1)
        r = builtin_pair.SHIPPED["resnet20"]
        assert trained == [(seed + 1, r.steps, r.lr, False)]
        ci = [(label, s) for label, s, _ in builtin_pair.deep_claims_pairs((0, 1), False, ci_size=False)]
        assert ci == [(f"shipped {p} pair", manifest(p)["seed"]) for p in builtin_pair.ci_claims_presets()]
        assert builtin_pair.ci_claims_presets() == ["resnet20"]  # ResNet-56's claims: --full only (CI's time)
        full = [(label, s) for label, s, _ in builtin_pair.deep_claims_pairs((seed,), True)]
        assert full == [(f"{p} pair of scripts/train_pairs.py", seed) for p in SHIPPED]
    finally:
        builtin_pair.script_pair.cache_clear()


def test_the_script_records_an_adam_recipe_with_its_batch_norm_bias(tmp_path, monkeypatch):
    """The ResNet-56 pair's kind of recipe (Adam, batch-norm biases set at the start): the manifest says so, the label
    says so, and reading the manifest back gives the very recipe (its disk-cache key), which the script trained."""
    spec = importlib.util.spec_from_file_location("train_pairs", ROOT / "scripts" / "train_pairs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setitem(builtin_pair.SHIPPED, "resnet20", builtin_pair.BuiltinRecipe(
        steps=2, lr=0.05, batch_size=16, n_train=64))
    monkeypatch.setattr(script, "EVAL_IMAGES", 20)
    script.main(["resnet20", "--out", str(tmp_path), "--eval-every", "0", "--optimizer", "adam", "--lr", "0.001",
                 "--bn-bias", "2", "--log", str(tmp_path / "log.txt")])
    m = manifest("resnet20", tmp_path)
    assert (m["recipe"]["optimizer"], m["recipe"]["bn_bias"], m["recipe"]["lr"]) == ("Adam", 2.0, 0.001)
    assert "momentum" not in m["recipe"]
    r = builtin_pair.recipe_from_manifest(m)
    assert r == replace(builtin_pair.SHIPPED["resnet20"], optimizer="adam", lr=0.001, bn_bias=2.0)
    assert r.key != builtin_pair.SHIPPED["resnet20"].key and r.key != replace(r, bn_bias=0.0).key
    assert "2 Adam steps" in r.label and "batch-norm biases 2 at start" in r.label
    assert "SGD steps" in builtin_pair.shipped("resnet20").label  # the shipped ResNet-20 pair's recipe as it was


def test_both_networks_start_from_the_same_batch_norm_bias():
    """``init_bn_bias`` sets every batch norm of the ResNet and of its twin alike (0: torchvision's, untouched)."""
    models = list(builtin_pair.training.make_race_models(builtin_pair.SHIPPED["resnet20"].cfg, seed=0).values())
    for model in models:
        builtin_pair.init_bn_bias(model, 2.0)
    resnet, plain = (model.state_dict() for model in models)
    biases = [k for k in plain if k.endswith(".bias") and "bn" in k]
    assert biases and all(torch.equal(plain[k], resnet[k]) and bool((plain[k] == 2).all()) for k in biases)
    fresh = builtin_pair.training.make_race_models(builtin_pair.SHIPPED["resnet20"].cfg, seed=0)["plain-20"]
    builtin_pair.init_bn_bias(fresh, 0.0)
    assert all(bool((v == 0).all()) for k, v in fresh.state_dict().items() if k in biases)

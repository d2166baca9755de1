"""The training race: learning, reproducibility, shared batches, divergence, statistics, model building."""
from __future__ import annotations

import copy
import io
import math

from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from resviz import models as M
from resviz.lessons import training as T
from resviz.pair import TrainedPair

TINY = M.ResNetConfig(block="basic", layers=(2, 1), widths=(4, 8), stem="cifar", stem_width=4, input_size=8,
                      num_classes=2, shortcut="A", name="tiny")


def easy_data(n=64, seed=0):
    """Two classes a child could tell apart: dark images (class 0) and bright ones (class 1), plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (y.float() * 2 - 1).view(-1, 1, 1, 1) * 0.5 + 0.3 * torch.randn(n, 3, 8, 8, generator=g)
    return TensorDataset(x, y)


def run(race_models, cfg, data=None):
    data = data or easy_data()
    return list(T.race(race_models, data, data, cfg))


def losses(records, name):
    return [r["runs"][name]["loss"] for r in records]


def test_loss_decreases_on_an_easy_problem():
    recs = run(T.make_race_models(TINY, seed=0), T.RaceConfig(lr=0.05, batch_size=16, steps=30, eval_every=10))
    for name in ("ResNet-8", "plain-8"):
        curve = losses(recs, name)
        assert sum(curve[-5:]) / 5 < 0.5 * sum(curve[:3]) / 3, (name, curve)
        assert recs[-1]["runs"][name]["test_acc"] >= 0.9
        assert recs[-1]["runs"][name]["acc"] is not None


def test_identical_seeds_give_identical_curves_and_other_seeds_do_not():
    cfg = T.RaceConfig(lr=0.05, batch_size=8, steps=6, eval_every=3)
    a = run(T.make_race_models(TINY, seed=1), cfg)
    b = run(T.make_race_models(TINY, seed=1), cfg)
    strip = [{k: v for k, v in r.items() if k not in ("elapsed_s", "steps_per_s")} for r in a]
    assert strip == [{k: v for k, v in r.items() if k not in ("elapsed_s", "steps_per_s")} for r in b]
    c = run(T.make_race_models(TINY, seed=1), T.RaceConfig(lr=0.05, batch_size=8, steps=6, eval_every=3, seed=2))
    assert losses(c, "ResNet-8") != losses(a, "ResNet-8")  # another batch order


def test_every_model_sees_the_same_batches():
    # Two copies of one network with one optimizer setting must follow exactly the same curve.
    m = M.build_model(TINY, seed=0)
    recs = run({"a": m, "b": copy.deepcopy(m)}, T.RaceConfig(lr=0.05, batch_size=8, steps=5))
    assert losses(recs, "a") == losses(recs, "b")
    assert [r["runs"]["a"]["grad_norms"] for r in recs] == [r["runs"]["b"]["grad_norms"] for r in recs]


def test_race_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    run(T.make_race_models(TINY, seed=0, include_shallow_plain=True), T.RaceConfig(batch_size=8, steps=2))
    assert torch.equal(torch.rand(2), expected)


def test_batch_indices_are_shuffled_epochs():
    batches = list(T.batch_indices(10, 4, 5, seed=0))
    assert [len(b) for b in batches] == [4] * 5
    assert sorted(torch.cat(batches[:2]).tolist()) == sorted(set(torch.cat(batches[:2]).tolist()))  # no repeats
    assert [b.tolist() for b in T.batch_indices(10, 4, 5, seed=0)] == [b.tolist() for b in batches]


def test_grad_norms_are_the_layer_gradient_norms_of_the_first_step():
    model = M.build_model(TINY, seed=0)
    ref = copy.deepcopy(model)
    data = easy_data()
    cfg = T.RaceConfig(lr=0.05, batch_size=8, steps=1)
    rec = next(T.race({"m": model}, data, data, cfg))
    idx = next(T.batch_indices(len(data), 8, 1, cfg.seed))
    x, y = data.tensors[0][idx], data.tensors[1][idx]
    ref.train()
    loss = nn.functional.cross_entropy(ref(x), y)
    loss.backward()
    names, weights = T.layer_params(ref)
    assert names[0] == "conv1" and names[-1] == "fc" and len(names) == 1 + 2 * 3 + 1
    expected = [w.grad.norm().item() for w in weights]
    assert rec["runs"]["m"]["grad_norms"] == pytest.approx(expected, rel=1e-5)
    assert rec["runs"]["m"]["loss"] == pytest.approx(loss.item(), rel=1e-6)
    acc = (ref(x).argmax(1) == y).float().mean().item()  # train-mode forward, before the update
    assert rec["runs"]["m"]["acc"] == pytest.approx(acc)


class NaNAfter(nn.Module):
    """A linear classifier whose output turns to NaN from its ``bad_step``-th call: a stand-in for blow-up."""

    def __init__(self, bad_step):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)
        self.calls, self.bad_step = 0, bad_step

    def forward(self, x):
        self.calls += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.calls >= self.bad_step else out


def test_nan_stops_only_that_run_with_a_message():
    recs = run({"ok": M.build_model(TINY, seed=0), "bad": NaNAfter(bad_step=3)},
               T.RaceConfig(lr=0.05, batch_size=8, steps=5, eval_every=2))
    bad = [r["runs"]["bad"] for r in recs]
    assert [b["diverged"] for b in bad] == [False, False, True, False, False]
    assert math.isnan(bad[2]["loss"]) and "diverged at step 3" in bad[2]["message"]
    assert bad[3]["loss"] is None and bad[4]["grad_norms"] is None  # stopped
    assert bad[2]["test_acc"] is None  # no evaluation of a broken model
    assert all(math.isfinite(r["runs"]["ok"]["loss"]) for r in recs)  # the other one keeps going
    assert recs[-1]["runs"]["ok"]["test_acc"] is not None


def test_huge_learning_rate_diverges():
    recs = run(T.make_race_models(TINY, seed=0), T.RaceConfig(lr=1e6, batch_size=8, steps=6))
    for name in ("ResNet-8", "plain-8"):
        flags = [r["runs"][name]["diverged"] for r in recs]
        assert flags.count(True) == 1, flags
        msg = next(r["runs"][name]["message"] for r in recs if r["runs"][name]["diverged"])
        assert "smaller learning rate" in msg


def test_make_race_models_twin_shares_initial_weights_and_shallow_is_shallower():
    ms = T.make_race_models(M.get_config("resnet56"), seed=0, include_shallow_plain=True)
    assert list(ms) == ["ResNet-56", "plain-56", "plain-20"]
    res, plain = ms["ResNet-56"].state_dict(), ms["plain-56"].state_dict()
    assert set(plain) <= set(res)
    assert all(torch.equal(plain[k], res[k]) for k in plain)
    assert ms["plain-20"].cfg.layers == (3, 3, 3) and not ms["plain-20"].cfg.residual
    assert list(T.make_race_models(TINY, seed=0, include_shallow_plain=True)) == ["ResNet-8", "plain-8", "plain-6"]
    one = replace(TINY, layers=(1, 1))  # nothing shallower to build
    assert list(T.make_race_models(one, seed=0, include_shallow_plain=True)) == ["ResNet-6", "plain-6"]
    # A plain selection still races its residual version against the plain twin.
    assert list(T.make_race_models(M.plain_config(TINY), seed=0)) == ["ResNet-8", "plain-8"]


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_plain_twin_is_copied_so_every_shared_tensor_starts_equal(shortcut):
    # Built separately, an option-B/C twin draws different weights from layer2.1 on (the projections use the RNG).
    cfg = M.get_config("resnet20", shortcut=shortcut)
    ms = T.make_race_models(cfg, seed=3)
    res, plain = ms["ResNet-20"].state_dict(), ms["plain-20"].state_dict()
    assert set(plain) <= set(res) and len(plain) > 50
    unequal = [k for k in plain if not torch.equal(plain[k], res[k])]
    assert unequal == []
    projections = [k for k in res if "downsample" in k]
    assert bool(projections) == (shortcut != "A")  # the twin drops exactly these: they have no plain counterpart
    assert set(res) - set(plain) == set(projections)


def test_check_race_explains_bad_settings():
    ms = T.make_race_models(TINY, seed=0)
    data = easy_data(n=8)
    with pytest.raises(M.ConfigError, match="larger than the training set"):
        next(T.race(ms, data, data, T.RaceConfig(batch_size=16)))
    five = TensorDataset(torch.zeros(8, 3, 8, 8), torch.arange(8) % 5)
    with pytest.raises(M.ConfigError, match="2 outputs but the data has 5 classes"):
        next(T.race(ms, five, five, T.RaceConfig(batch_size=4)))
    with pytest.raises(M.ConfigError, match="positive"):
        next(T.race(ms, data, data, T.RaceConfig(steps=0)))


def test_state_dict_bytes_round_trip():
    model = M.build_model(TINY, seed=0)
    sd = T.cpu_state_dict(model)
    back = torch.load(io.BytesIO(T.state_dict_bytes(sd)), weights_only=True)
    fresh = M.ResNet(TINY)
    fresh.load_state_dict(back)
    assert all(torch.equal(fresh.state_dict()[k], model.state_dict()[k]) for k in sd)


def _history(loss_a, loss_b):
    ms = {"a": nn.Linear(1, 1), "b": nn.Linear(1, 1)}
    h = T.new_history(ms, len(loss_a))
    for step, (la, lb) in enumerate(zip(loss_a, loss_b), start=1):
        runs = {n: {"loss": v, "acc": 0.5, "test_acc": None, "grad_norms": [1.0], "diverged": False, "message": None}
                for n, v in (("a", la), ("b", lb))}
        h.add({"step": step, "steps": len(loss_a), "elapsed_s": step / 10, "steps_per_s": 10.0, "runs": runs})
    return h


def test_history_and_pulls_ahead_worked_by_hand():
    # b's loss jumps from 1 to 3 at step 6: its moving average is 0.9 * 1 + 0.1 * 3 = 1.2 there, 0.2 above a's.
    h = _history([1.0] * 20, [1.0] * 5 + [3.0] * 15)
    assert h.runs["a"].layers == [""]  # the Linear itself is the only layer
    assert h.runs["a"].step == list(range(1, 21))
    assert (h.runs["a"].role, h.runs["b"].role) == (T.Role.RESNET, T.Role.PLAIN)
    assert h.elapsed[5] == pytest.approx(0.6)
    assert T.pulls_ahead(h, "a", "b") == 6
    assert T.pulls_ahead(h, "b", "a") is None
    assert T.pulls_ahead(_history([1.0] * 20, [1.05] * 20), "a", "b") is None  # 0.05 is not "clearly"
    assert T.pulls_ahead(_history([1.0] * 9, [2.0] * 9), "a", "b") is None  # not held for 10 steps yet


def test_fit_config_rebuilds_for_the_data_and_says_so():
    grey = TensorDataset(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    cfg, notes = T.fit_config(M.get_config("resnet18"), grey, num_classes=10)
    assert (cfg.in_channels, cfg.input_size, cfg.num_classes, cfg.residual) == (1, 28, 10, True)
    assert "input channels: 1 instead of 3" in notes[0] and "classes: 10 instead of 1000" in notes[0]
    assert "ImageNet stem" in notes[1]
    same, none = T.fit_config(M.get_config("resnet20"), easy_data(4), num_classes=10)
    assert none == [] or "input size: 8 instead of 32" in none[0]
    assert T.data_shape_for(M.get_config("resnet50")) == (32, 3) and T.data_shape_for(TINY) == (32, 3)
    assert T.data_shape_for(M.get_config("resnet20", input_size=16, in_channels=1)) == (16, 1)


def test_race_messages_and_status_line():
    h = _history([1.0] * 20, [1.0] * 5 + [3.0] * 15)
    h.runs["b"].message = "b diverged at step 7"
    msgs = T.race_messages(h)
    assert msgs[0] == ("warning", "b diverged at step 7")
    assert msgs[1][0] == "success" and "from step 6, 1 s into the race" in msgs[1][1]  # elapsed 0.6 s rounds to 1
    assert msgs[1][1].startswith("a's smoothed loss went clearly below b's")
    assert T.status_line(h, running=True) == "**10.0 steps/s** · a: loss 1.000 · *running…*"  # b stopped: not shown


def test_new_race_runs_and_hands_over_a_trained_pair():
    data = easy_data(16)
    race = T.new_race(TINY, data, data, ["dark", "bright"], T.RaceConfig(batch_size=8, steps=2), data_name="easy data")
    assert race.chance == 0.5 and race.cfg.input_size == 8 and race.notes == []
    seen = [h.step for h in race.advance()]
    assert seen == [1, 2] and not race.running
    trained = race.trained_pair()
    assert isinstance(trained, TrainedPair) and trained is race.trained_pair()  # made once
    assert trained.label == "ResNet-8 trained 2 steps on easy data"
    assert (trained.class_names, trained.data_name, trained.steps) == (("dark", "bright"), "easy data", 2)
    model = M.ResNet(trained.cfg)
    model.load_state_dict(trained.state_dict)
    assert torch.equal(model.fc.weight, race.models["ResNet-8"].fc.weight.detach())
    plain = M.ResNet(M.plain_config(trained.cfg))
    plain.load_state_dict(trained.plain_state_dict)
    assert torch.equal(plain.fc.weight, race.models["plain-8"].fc.weight.detach())
    assert all(v.device.type == "cpu" for v in trained.state_dict.values())


def test_stop_keeps_what_was_learned_and_says_so():
    data = easy_data(16)
    race = T.new_race(TINY, data, data, ["dark", "bright"], T.RaceConfig(batch_size=8, steps=5))
    next(race.advance())
    race.stop()
    race.stop()  # a second click says nothing more
    assert not race.running and race.notes == ["Stopped by you at step 1."]
    assert race.trained_pair().steps == 1


def test_data_request_keys_and_sources():
    zip_req = T.DataRequest(T.DataSource.ZIP, upload=b"PK...")
    assert not T.DataSource.ZIP.shared and T.DataSource.BUILTIN.shared
    assert [s for s in T.DataSource if s.torchvision] == [T.DataSource.CIFAR10, T.DataSource.MNIST,
                                                          T.DataSource.FASHION_MNIST]
    assert T.DataRequest(T.DataSource.ZIP, upload=b"other") == zip_req  # the bytes are not part of the key
    with pytest.raises(T.data.DatasetError, match="Upload a zip"):
        T.DataRequest(T.DataSource.ZIP).load()
    train, test, names = T.DataRequest(T.DataSource.BUILTIN, size=16, channels=1).load()
    assert train.tensors[0].shape[1:] == (1, 16, 16) and names[0] == "disc"
    assert T.RacePair.DEEP.config(TINY).name == "resnet56" and T.RacePair.SIDEBAR.config(TINY) is TINY


def test_plots_worked_by_hand():
    import numpy as np

    from resviz.plots.training import grad_range, plot_grad_heatmap, plot_race_accuracy, plot_race_loss

    assert T.smooth([1.0, None, 3.0, float("nan")], alpha=0.5) == [1.0, None, 2.0, None]
    fig = plot_grad_heatmap("net", ["conv1", "fc"], [1, 2], [[10.0, 100.0], [0.0, float("inf")]])
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z[:, 0].tolist() == [1.0, 2.0]  # log10 of 10 and 100; layers are rows
    assert np.isnan(z[:, 1]).all()  # 0 and inf cannot be shown on a log scale: gaps
    long = plot_grad_heatmap("net", ["a"], list(range(1, 601)), [[1.0]] * 600)
    assert len(long.data[0].x) == 300 and long.data[0].x[:2] == (1, 3)  # every 2nd step
    h = _history([1.0, 0.5], [2.0, 1.0])
    assert grad_range(h) == (0.0, 0.0)  # every norm is 1: log10 = 0
    loss = plot_race_loss(h)
    assert [t.name for t in loss.data] == ["a (each batch)", "a", "b (each batch)", "b"]
    assert list(loss.data[3].y) == pytest.approx([2.0, 1.9])  # 0.9 * 2 + 0.1 * 1
    acc = plot_race_accuracy(h, chance=0.1)
    assert list(acc.data[0].y) == [50.0, 50.0]

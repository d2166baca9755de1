"""The training race: learning, reproducibility, shared batches, divergence, statistics, model building."""
from __future__ import annotations

import copy
import datetime
import io
import math

from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from resviz import models as M
from resviz import runs
from resviz.inputs.data import DatasetError
from resviz.lessons import training as T
from resviz.lessons.training import default_races
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


def test_learning_rate_schedule_worked_by_hand():
    cfg = T.RaceConfig(lr=0.1, steps=100, warmup_steps=10, decay_at=(0.5, 0.75))
    assert [cfg.lr_at(s) for s in (1, 10, 11, 50, 51, 75, 76, 100)] == pytest.approx(
        [0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert T.RaceConfig(lr=0.1).lr_at(1) == 0.1  # no warm-up, no decay: the rate itself


def test_race_follows_the_schedule_for_every_network():
    # A warm-up at 0x for 2 steps (and no weight decay) leaves every weight where it started; step 3 moves them.
    ms = T.make_race_models(TINY, seed=0, include_shallow_plain=True)
    start = {n: copy.deepcopy(m.state_dict()) for n, m in ms.items()}
    cfg = T.RaceConfig(lr=0.1, batch_size=8, steps=3, weight_decay=0.0, warmup_steps=2, warmup_factor=0.0,
                       eval_every=0)
    gen = T.race(ms, easy_data(), easy_data(), cfg)
    next(gen), next(gen)
    for n, m in ms.items():
        assert all(torch.equal(v, start[n][k]) for k, v in m.state_dict().items() if "weight" in k or "bias" in k)
    next(gen)
    assert all(not torch.equal(m.fc.weight, start[n]["fc.weight"]) for n, m in ms.items())


def test_refresh_batch_norm_sets_the_statistics_of_those_images():
    model = M.build_model(TINY, seed=0)
    x = easy_data(64).tensors[0]
    T.refresh_batch_norm(model.train(), x, batch=64)
    with torch.no_grad():
        first = model.conv1(x)  # (64, 4, 8, 8): what the first batch norm sees
    assert torch.allclose(model.bn1.running_mean, first.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(model.bn1.running_var, first.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert model.training and model.bn1.momentum == 0.1  # restored


def test_held_out_accuracy_is_measured_after_a_refresh_on_the_same_images():
    data = easy_data(64)
    ms = T.make_race_models(TINY, seed=0)
    cfg = T.RaceConfig(lr=0.05, batch_size=8, steps=4, eval_every=2, eval_size=40, bn_refresh=32)
    recs = list(T.race(ms, data, data, cfg))
    x, y = data.tensors
    for name, m in ms.items():
        T.refresh_batch_norm(m, x[:32])  # what the race did before its last evaluation, done again by hand
        assert recs[-1]["runs"][name]["test_acc"] == T.evaluate(m, x[:40], y[:40])
    assert [r["runs"]["ResNet-8"]["test_acc"] is not None for r in recs] == [False, True, False, True]


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


def _records(*curves, names=("ResNet-56", "plain-56", "plain-20"), elapsed_per_step=0.1, test_acc=()):
    """The race records of hand-made loss curves, one per network in Role order; ``test_acc``: each network's
    held-out accuracy, recorded at the last step."""
    steps = len(curves[0])
    for step, losses in enumerate(zip(*curves), start=1):
        last = step == steps and test_acc
        runs = {n: {"loss": v, "acc": 0.5, "test_acc": test_acc[i] if last else None, "grad_norms": [1.0],
                    "diverged": False, "message": None} for i, (n, v) in enumerate(zip(names, losses))}
        yield {"step": step, "steps": steps, "elapsed_s": step * elapsed_per_step, "steps_per_s": 10.0, "runs": runs}


def _history(*curves, names=("ResNet-56", "plain-56", "plain-20"), elapsed_per_step=0.1, classes=0, held_out=0,
             test_acc=()):
    """A race history built from hand-made loss curves, one per network in Role order (no training)."""
    ms = {name: nn.Linear(1, 1) for name in names[:len(curves)]}
    h = T.new_history(ms, len(curves[0]), classes=classes, held_out=held_out)
    for rec in _records(*curves, names=names, elapsed_per_step=elapsed_per_step, test_acc=test_acc):
        h.add(rec)
    return h


def test_history_and_margins_worked_by_hand():
    # The twin's loss jumps from 1 to 3 at step 6: its moving average is 0.9 * 1 + 0.1 * 3 = 1.2 there, 0.2 above.
    h = _history([1.0] * 20, [1.0] * 5 + [3.0] * 15)
    assert h.runs["ResNet-56"].layers == [""]  # the Linear itself is the only layer
    assert h.runs["ResNet-56"].step == list(range(1, 21))
    assert [r.role for r in h.runs.values()] == [T.Role.RESNET, T.Role.PLAIN]
    assert h.elapsed[5] == pytest.approx(0.6)
    m = T.race_margins(h)
    assert list(m) == [T.Ordering.SHORTCUTS_HELP]  # no shallower net: only the twin comparison
    assert m[T.Ordering.SHORTCUTS_HELP].since == 6 and m[T.Ordering.SHORTCUTS_HELP].last_step == 20
    assert m[T.Ordering.SHORTCUTS_HELP].end == pytest.approx(2 - 2 * 0.9 ** 15)  # the twin: 1 + 2 * (1 - 0.9^15)
    small = T.race_margins(_history([1.0] * 20, [1.05] * 20))[T.Ordering.SHORTCUTS_HELP]
    assert small.end == pytest.approx(0.05) and not small.shows  # 0.05 is not "clearly"
    # An early lead that is lost again does not count: "since" is about the end of the run.
    lost = T.race_margins(_history([0.5] * 30 + [1.5] * 60, [1.0] * 90))[T.Ordering.SHORTCUTS_HELP]
    assert lost.end < 0 and lost.since is None


def test_smoothing_is_one_function_for_verdicts_and_charts():
    from resviz.plots.training import plot_race_loss

    h = _history([2.0, 1.0, None, 0.0], [2.0, 2.0, 2.0, 2.0])
    assert T.smooth([1.0, None, 3.0, float("nan")], alpha=0.5) == [1.0, None, 2.0, None]
    bold = [t for t in plot_race_loss(h).data if t.name == "ResNet-56"][0]
    assert h.runs["ResNet-56"].smoothed_loss == pytest.approx([2.0, 1.9, 1.71])  # the gap at step 3 is skipped
    assert list(bold.y) == h.runs["ResNet-56"].smoothed_loss
    assert T.race_margins(h)[T.Ordering.SHORTCUTS_HELP].end == pytest.approx(2.0 - 1.71)


def _text(msgs, tone=None):
    return " ".join(text for t, text in msgs if tone is None or t is tone)


def test_a_clear_gap_is_called_with_the_charted_numbers():
    h = _history([0.6] * 100, [1.0] * 100)
    msgs = T.race_messages(h)
    assert [t for t, _ in msgs] == [T.Tone.SUCCESS]
    assert "ResNet-56 trains faster than plain-56" in msgs[0][1] and "ends 0.40 lower (ResNet-56 0.60, plain-56 1.00: smoothed training loss at step 100)" in msgs[0][1]
    assert "since step 1, 0 s into the race" in msgs[0][1]


def _charted_ends(h) -> dict:
    from resviz.plots.training import plot_race_loss

    return {t.name: t.y[-1] for t in plot_race_loss(h).data if not t.name.endswith("(each batch)")}


def test_messages_never_claim_a_win_the_chart_contradicts():
    # The ResNet leads for 30 steps, then ends above its twin: no success, the warning says who ends lower.
    h = _history([0.5] * 30 + [1.5] * 60, [1.0] * 90)
    msgs = T.race_messages(h)
    assert not _text(msgs, T.Tone.SUCCESS) and "trains faster" not in _text(msgs)
    assert "**plain-56 ends below ResNet-56** (ResNet-56 1.50, plain-56 1.00" in _text(msgs, T.Tone.WARNING)
    ends = _charted_ends(h)  # the numbers quoted are the ends of the chart's bold lines
    assert ends["ResNet-56"] > ends["plain-56"]
    assert f"ResNet-56 {ends['ResNet-56']:.2f}, plain-56 {ends['plain-56']:.2f}" in _text(msgs)
    # A gap smaller than the margin is not a win either.
    msgs = T.race_messages(_history([0.95] * 50, [1.0] * 50))
    assert [t for t, _ in msgs] == [T.Tone.INFO] and "ends only 0.05 below plain-56" in msgs[0][1]


def test_degradation_verdicts_follow_the_three_curves():
    paper = T.race_messages(_history([0.5] * 50, [2.0] * 50, [1.0] * 50))  # ResNet-56 < plain-20 < plain-56
    assert [t for t, _ in paper] == [T.Tone.SUCCESS] * 3
    assert "Degradation: the deeper plain-56 trains worse than plain-20" in paper[1][1]
    assert "ends 1.00 higher (plain-20 1.00, plain-56 2.00" in paper[1][1]
    assert "ResNet-56 ends at or below the shallower plain-20 (ResNet-56 0.50, plain-20 1.00" in paper[2][1]
    upside = T.race_messages(_history([1.5] * 50, [2.0] * 50, [2.5] * 50))  # the shallow plain net is the worst
    assert "trains faster" in _text(upside, T.Tone.SUCCESS)  # ResNet-56 below plain-56 still holds
    assert "does not show in this run: plain-56 ends 0.50 below plain-20" in _text(upside, T.Tone.WARNING)
    assert "ResNet-56 ends below the shallower" not in _text(upside)
    worse = T.race_messages(_history([1.2] * 50, [2.0] * 50, [1.0] * 50))
    assert "ResNet-56 ends above the shallower plain-20 (ResNet-56 1.20, plain-20 1.00" in _text(worse, T.Tone.WARNING)


def test_a_running_race_gives_no_verdict_yet():
    h = _history([0.6] * 100, [1.0] * 100)
    h.runs["plain-56"].message = "plain-56 diverged at step 90"
    assert T.race_messages(h, live=True) == [(T.Tone.WARNING, "plain-56 diverged at step 90")]
    assert T.race_messages(_history([0.6] * 100, [1.0] * 100), live=True) == []


def test_a_diverged_network_gets_its_message_and_no_ordering():
    h = _history([1.0] * 20, [3.0] * 20)
    h.runs["plain-56"].message = "plain-56 diverged at step 7"
    msgs = T.race_messages(h)
    assert msgs == [(T.Tone.WARNING, "plain-56 diverged at step 7")]
    assert T.status_line(h, running=True) == "**10.0 steps/s** · ResNet-56: loss 1.000 · *running…*"


def test_surprises_are_explained_by_what_differs_from_the_recipe():
    rec = T.RaceConfig(lr=0.01, batch_size=128, steps=90)
    h = _history([1.5] * 90, [1.0] * 90)
    own = T.race_messages(h, T.RaceContext(rec, replace(rec, lr=1.0, batch_size=32)))
    assert "learning rate is 1 where the recipe uses 0.01" in own[0][1] and "batch size is 32" in own[0][1]
    seed = T.race_messages(h, T.RaceContext(rec, replace(rec, seed=7)))
    assert "seed 7 was not among those the recipe was checked on (0-4)" in seed[0][1]
    short = T.race_messages(_history([1.5] * 40, [1.0] * 40), T.RaceContext(rec, rec))
    assert "the race ran 40 steps and the recipe runs 90" in short[0][1]
    other = T.race_messages(h, T.RaceContext(rec, rec, builtin_data=False, swept_model=False))
    assert "not the built-in shapes" in other[0][1] and "checked on ResNet-20 and ResNet-56" in other[0][1]
    same = T.race_messages(h, T.RaceContext(rec, rec))
    assert "a surprise worth reporting" in same[0][1]


AT_LR_1 = dict(classes=10, held_out=1000, names=("ResNet-20", "plain-20"))  # the race at learning rate 1.0


def _blown_up(first: float, steps: int = 100, settle: float = 2.32) -> list[float]:
    """A loss that jumps to ``first`` at the first step and then sits at ``settle`` (guessing: ln 10 = 2.30)."""
    return [first] + [settle] * (steps - 1)


def test_two_networks_at_guessing_level_are_no_ordering_and_the_page_says_why():
    rec = T.RaceConfig(lr=0.01, batch_size=128, steps=100)
    h = _history(_blown_up(14.0), _blown_up(9.0), test_acc=(0.10, 0.11), **AT_LR_1)
    assert all(T.at_chance(r, h) for r in h.runs.values())
    msgs = T.race_messages(h, T.RaceContext(rec, replace(rec, lr=1.0)))
    assert [t for t, _ in msgs] == [T.Tone.INFO]  # one box, no ordering: not "the opposite of what He et al. show"
    text = msgs[0][1]
    assert text.startswith("**Neither ResNet-20 nor plain-20 learned the images in this run**, so there is no "
                           "ordering to compare with He et al. (2016): ResNet-20: smoothed loss 2.32, where guessing "
                           "pays ln 10 = 2.30; held-out accuracy 10% (95% interval 8-12% on 1000 images), guessing 10%;")
    assert "ResNet-20's batch loss jumped to 14 at step 1, far above the 2.30 that guessing pays: at learning " \
           "rate 1, 100 times the recipe's 0.01, each step moved the weights too far." in text
    assert "the learning rate is 1 where the recipe uses 0.01" in text and "opposite" not in text
    # Without a context the facts stay, the cause is not guessed at.
    bare = T.race_messages(h)[0][1]
    assert "jumped to 14" in bare and "learning rate" not in bare
    three = T.race_messages(_history(_blown_up(5.0), _blown_up(5.0), _blown_up(5.0), classes=10))
    assert [t for t, _ in three] == [T.Tone.INFO] and "Neither ResNet-56, plain-56 nor plain-20 learned" in three[0][1]


def test_at_guessing_level_needs_the_loss_and_the_held_out_accuracy():
    h = _history([2.25] * 50, [2.25] * 50, test_acc=(0.14, 0.11), **AT_LR_1)  # loss within 0.1 of ln 10 = 2.30
    resnet, plain = h.runs.values()
    assert not T.at_chance(resnet, h)  # 14% on 1000 images: 95% interval 12-16%, clear of 10%: barely learned
    assert T.at_chance(plain, h)  # 11%: interval 9-13%, within noise of guessing
    def alone(curve, classes):
        one = _history(curve, classes=classes)
        return T.at_chance(one.runs["ResNet-56"], one)

    assert not alone([2.25] * 50, classes=0)  # classes unknown: never called guessing
    assert alone([2.25] * 50, classes=10)  # no held-out accuracy: the loss decides
    assert not alone([2.15] * 50, classes=10)  # 0.15 below ln 10: it learned something
    msgs = T.race_messages(h)  # one net at guessing level is no "neither learned": the ordering box, which names it
    assert [t for t, _ in msgs] == [T.Tone.INFO] and "Neither" not in msgs[0][1]
    assert "ResNet-20 and plain-20 end level" in msgs[0][1] and "so this run shows no ordering" in msgs[0][1]
    assert "plain-20 ended at guessing level (smoothed loss 2.25, where guessing pays ln 10 = 2.30" in msgs[0][1]


def test_the_loss_chart_marks_the_guessing_level_the_verdicts_read():
    from resviz.plots.training import plot_race_loss

    lines = plot_race_loss(_history([2.3] * 5, [2.3] * 5, classes=10)).layout.shapes
    assert [round(s.y0, 4) for s in lines] == [round(math.log(10), 4)]
    assert not plot_race_loss(_history([2.3] * 5, [2.3] * 5)).layout.shapes  # classes unknown: no line


def test_a_difference_inside_the_margin_is_no_ordering_either_way():
    for resnet, plain, words in ((1.00, 0.98, "ResNet-56 ends 0.02 above plain-56"),
                                 (0.98, 1.00, "ResNet-56 ends only 0.02 below plain-56")):
        msgs = T.race_messages(_history([resnet] * 50, [plain] * 50, classes=10))
        assert [t for t, _ in msgs] == [T.Tone.INFO], msgs
        assert msgs[0][1].startswith(words) and "neither the paper's nor its opposite" in msgs[0][1]
    shallow = T.race_messages(_history([1.05] * 50, [2.0] * 50, [1.0] * 50))  # ResNet-56 0.05 above plain-20
    assert _text(shallow, T.Tone.INFO).count("no ordering") == 1 and not _text(shallow, T.Tone.WARNING)
    flat = T.race_messages(_history([0.5] * 50, [1.05] * 50, [1.0] * 50))  # plain-56 only 0.05 above plain-20
    assert "The degradation problem does not show clearly in this run: plain-20 ends only 0.05 below plain-56" in \
        _text(flat, T.Tone.INFO)


def test_the_reverse_ordering_beyond_the_margin_is_a_warning_that_names_a_net_at_guessing_level():
    h = _history([2.31] * 50, [1.0] * 50, test_acc=(0.10, 0.6), classes=10, held_out=1000)
    msgs = T.race_messages(h)
    assert [t for t, _ in msgs] == [T.Tone.WARNING]
    assert msgs[0][1].startswith("**plain-56 ends below ResNet-56** (ResNet-56 2.31, plain-56 1.00: smoothed "
                                 "training loss at step 50), by more than the 0.1 this page calls a clear gap")
    assert "ResNet-56 ended at guessing level (smoothed loss 2.31" in msgs[0][1]


def test_fit_config_rebuilds_for_the_data_and_says_so():
    grey = TensorDataset(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    cfg, notes = T.fit_config(M.get_config("resnet18"), grey, num_classes=10)
    assert (cfg.in_channels, cfg.input_size, cfg.num_classes, cfg.residual) == (1, 28, 10, True)
    assert "input channels: 1 instead of 3" in notes[0] and "classes: 10 instead of 1000" in notes[0]
    assert "ImageNet stem" in notes[1]
    same, none = T.fit_config(M.get_config("resnet20"), easy_data(4), num_classes=10)
    assert none == [] or "input size: 8 instead of 32" in none[0]
    assert T.data_shape_for(M.get_config("resnet50")) == (16, 3)  # built-in images: the race's size
    zip_ = T.DataSource.ZIP
    assert T.data_shape_for(M.get_config("resnet50"), zip_) == (32, 3) and T.data_shape_for(TINY, zip_) == (32, 3)
    assert T.data_shape_for(M.get_config("resnet20", input_size=16, in_channels=1), zip_) == (16, 1)


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
    with pytest.raises(DatasetError, match="Upload a zip"):
        T.DataRequest(T.DataSource.ZIP).load()
    train, test, names = T.DataRequest(T.DataSource.BUILTIN, size=16, channels=1).load()
    assert train.tensors[0].shape[1:] == (1, 16, 16) and names[0] == "disc"
    assert T.RacePair.DEEP.config(TINY).name == "resnet56" and T.RacePair.SIDEBAR.config(TINY) is TINY


def test_data_request_for_a_race_and_the_sources_offered():
    req = T.DataRequest.for_race(M.get_config("resnet20"), T.DataSource.BUILTIN)
    assert (req.source, req.size, req.channels) == (T.DataSource.BUILTIN, T.RACE_IMAGE_SIZE, 3)
    folder = T.DataRequest.for_race(replace(TINY, input_size=24, in_channels=1), T.DataSource.TEACHER, folder="x")
    assert (folder.size, folder.channels, folder.folder) == (24, 1, "x")
    assert T.DataSource.TEACHER not in T.offered_sources(False) and T.offered_sources(True) == list(T.DataSource)


def test_a_students_settings_and_the_words_for_them():
    recipe = T.recipe_for(M.get_config("resnet20"))
    c = recipe.config
    same = recipe.with_settings(c.lr, c.batch_size, c.steps, c.weight_decay, 3)
    assert same == replace(c, seed=3)
    assert recipe.in_use(same) == "Recipe: learning rate 0.01 at batch 128, weight decay 0.0001, seed 3"
    assert recipe.in_use(recipe.with_settings(0.1, 128, 300, 1e-4, 0)).endswith("(**changed** from the recommended)")


@pytest.fixture
def registry(monkeypatch):
    """A registry of shared runs of this test's own (the server's one is for the whole process)."""
    reg = runs.Registry(max_running=1, threads_per_run=None)
    monkeypatch.setattr(runs, "_REGISTRY", reg)
    yield reg
    reg.shutdown(timeout=0)


def test_a_race_job_per_settings_watched_restarted_and_stopped(registry):
    data = easy_data(16)
    loaded, req = (data, data, ["dark", "bright"]), T.DataRequest(T.DataSource.BUILTIN, 8, 3)
    used = T.RaceConfig(batch_size=8, steps=5000, eval_every=0)  # far longer than the test: it is stopped
    job = T.race_job(TINY, req, loaded, used)
    assert T.race_job(TINY, req, loaded, used).key == job.key and job.cost == 2 * 5000
    assert job.make.every == T.jobs.weights_every(5000) == 1667
    job = replace(job, make=replace(job.make, every=3))  # the weights in steps 1, 3, 6...
    assert T.race_job(TINY, req, loaded, replace(used, seed=1)).key != job.key
    assert T.race_job(TINY, req, loaded, used, include_shallow_plain=True).cost == 3 * 5000
    assert T.waiting_message(None, 1)[0] is T.Tone.INFO  # before Start: the hint
    first = T.watch_race(job)
    other = T.watch_race(T.race_job(TINY, req, loaded, used))  # another student, the same settings: the same run
    again = T.watch_race(job, first)  # Start pressed twice: still that run, the old watch let go
    assert first.detached and not again.detached and again.status.watchers == 2
    teacher = T.watch_race(job, teacher=True)  # the teacher watches too: not one of the students
    assert (again.status.watchers, again.status.students) == (3, 2)
    teacher.detach()
    snap = again.wait(60, records=3)  # the header, then two steps
    assert ["weights" in r for r in snap.records[1:3]] == [True, False]
    assert T.waiting_message(snap, 1) is None and snap.records[0].key == job.key
    earlier = object()  # the pair the student held before
    queued = T.watch_race(T.race_job(TINY, req, loaded, replace(used, seed=2)))  # the one slot is taken
    assert T.waiting_message(queued.snapshot(), 1)[1].startswith("Number 1 in the queue")
    assert T.stop_watching(queued, earlier) == (None, earlier) and queued.detached  # nothing learned yet
    kept, trained = T.stop_watching(again, earlier)
    assert again.detached and len(kept.records) >= 3 and isinstance(trained, TrainedPair)  # what was learned
    assert trained.key == T.jobs.weights_of(kept.records).key  # the latest weights record's: steps 1, 3, 6...
    assert trained.steps == max(1, kept.records[-1]["step"] // 3 * 3)
    assert all(v.dtype == torch.float32 for v in trained.state_dict.values() if v.is_floating_point())
    assert other.wait(60, records=len(kept.records) + 1).status.state is runs.State.RUNNING  # goes on for others
    other.detach()


def test_what_a_student_reads_instead_of_the_charts():
    snap = lambda state, records=(), **kw: runs.Snapshot(runs.Status(state, **kw), list(records))  # noqa: E731
    assert "Number 2 in the queue: this server trains 3 race(s)" in T.waiting_message(
        snap(runs.State.QUEUED, position=2), 3)[1]
    assert T.waiting_message(snap(runs.State.FAILED, error="out of memory"), 1) == (
        T.Tone.ERROR, "The race failed: out of memory")
    assert T.waiting_message(snap(runs.State.RUNNING), 1) == (T.Tone.INFO, "Building the networks…")
    assert T.waiting_message(snap(runs.State.RUNNING, ["header"]), 1) is None


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
    h = _history([1.0, 0.5], [2.0, 1.0], [1.5, 1.5])
    assert grad_range(h) == (0.0, 0.0)  # every norm is 1: log10 = 0
    loss = plot_race_loss(h)
    assert [t.name for t in loss.data] == ["ResNet-56 (each batch)", "ResNet-56", "plain-56 (each batch)", "plain-56",
                                           "plain-20 (each batch)", "plain-20"]
    assert list(loss.data[3].y) == pytest.approx([2.0, 1.9])  # 0.9 * 2 + 0.1 * 1
    acc = plot_race_accuracy(h, chance=0.1)
    assert list(acc.data[0].y) == [50.0, 50.0]
    assert loss.layout.xaxis.range == acc.layout.xaxis.range == (0, 1.02 * h.steps)  # the whole race, both charts


def test_max_accuracy_drop_worked_by_hand():
    h = _history([1.0] * 4, [1.0] * 4)
    h.runs["ResNet-56"].test_acc = [0.1, 0.5, 0.3, 0.6]  # falls 20 points once
    h.runs["plain-56"].test_acc = [0.2, 0.15]  # falls 5 points
    assert T.max_accuracy_drop(h) == pytest.approx(20.0)
    assert T.max_accuracy_drop(_history([1.0], [1.0])) == 0.0


def test_charts_are_readable_from_the_back_of_the_room():
    from resviz.plots.training import plot_grad_heatmap, plot_race_accuracy, plot_race_loss

    h = _history([0.5] * 30, [2.0] * 30, [1.0] * 30)
    for fig in (plot_race_loss(h), plot_race_accuracy(h, chance=0.1), plot_grad_heatmap("n", ["a"], [1], [[1.0]])):
        lay = fig.layout
        assert lay.font.size >= 14 and lay.legend.font.size >= 14 and lay.title.font.size >= 14
        assert lay.font.color == "#1a1a1a" and lay.xaxis.tickfont.size >= 14 and lay.yaxis.title.font.size >= 14
        assert lay.legend.y is None or lay.legend.y < 0  # the legend sits under the axis, never on the title
    for fig in (plot_race_loss(h), plot_race_accuracy(h)):
        colours = {t.name.split(" ")[0]: t.line.color for t in fig.data}
        assert colours == {"ResNet-56": "#1f77b4", "plain-56": "#d62728", "plain-20": "#ff7f0e"}
    lines = plot_race_loss(h).layout.shapes  # every ordering has held since step 1: each is marked there
    assert [line.x0 for line in lines] == [1, 1, 1]


def test_a_live_race_is_drawn_in_frames_that_every_watcher_shares():
    from types import SimpleNamespace

    header = SimpleNamespace(empty=SimpleNamespace(steps=300))  # 300 steps in 60 frames: one every 5 steps
    records = [header] + [{"step": i} for i in range(1, 24)]
    seen = {n: len(T.framed(records[:n], live=True)) for n in range(2, 24)}
    assert seen[2] == 2 and seen[6] == 6 and seen[7] == 6 and seen[10] == 6 and seen[11] == 11  # header + 5k steps
    assert len({seen[n] for n in range(11, 16)}) == 1  # students polling at steps 10-14 draw the same frame
    assert T.framed(records, live=False) == records  # finished or stopped: every step
    assert T.framed(records[:1], live=True) == records[:1]


def test_the_claims_check_guards_the_verdicts_against_networks_at_guessing_level():
    from types import SimpleNamespace

    def guard(*curves):
        race_ = SimpleNamespace(history=_history(*curves, classes=10), cfg=SimpleNamespace(input_size=8))
        return next(c for c in default_races._race_claims(race_, "resnet56", 0, full=False) if "guessing level" in c.text)

    one_stuck = guard([0.5] * 20, [2.32] * 20, [1.0] * 20)  # plain-56 at guessing level: the page still orders
    assert one_stuck.holds and one_stuck.margin == pytest.approx(math.log(10) - 0.1 - 1.0)
    two_stuck = guard([0.5] * 20, [2.32] * 20, [2.25] * 20)  # two of three: those two get no ordering
    assert not two_stuck.holds and two_stuck.margin == pytest.approx(math.log(10) - 0.1 - 2.25)
    assert not guard([2.3] * 20, [2.3] * 20).holds  # the race at learning rate 1.0


def _live(*curves, planned=100):
    """A live race's history: the hand-made curves so far, of ``planned`` steps."""
    h = T.new_history({name: nn.Linear(1, 1) for name in ("ResNet-56", "plain-56", "plain-20")[:len(curves)]}, planned)
    for rec in _records(*curves):
        h.add(rec)
    return h


def test_each_ordering_is_marked_on_the_loss_chart_as_it_appears():
    from resviz.plots.training import plot_race_loss

    # plain-56's loss jumps from 1 to 3 at step 21: smoothed 1.2 there (0.2 above ResNet-56's 1.0: a clear gap at
    # once), 1.38 at step 22 (0.18 above plain-20's 1.2: degradation clear, by the margin's 0.1, from step 22)
    resnet, plain, shallow = [1.0] * 40, [1.0] * 20 + [3.0] * 20, [1.2] * 40

    def marks(n):
        return [(m.ordering, m.step) for m in T.ordering_marks(_live(resnet[:n], plain[:n], shallow[:n]))]

    assert marks(20) == [(T.Ordering.NO_DEGRADATION, 1)]  # 20 steps of 100: only ResNet-56 below plain-20 so far
    assert marks(21) == [(T.Ordering.NO_DEGRADATION, 1), (T.Ordering.SHORTCUTS_HELP, 21)]
    assert marks(40) == [(T.Ordering.NO_DEGRADATION, 1), (T.Ordering.SHORTCUTS_HELP, 21), (T.Ordering.DEGRADATION, 22)]
    fig = plot_race_loss(_live(resnet, plain, shallow))
    assert [line.x0 for line in fig.layout.shapes] == [1, 21, 22]
    notes = {a.text: a for a in fig.layout.annotations if a.x in (1, 21, 22)}
    assert set(notes) == {"ResNet-56 at or below plain-20", "ResNet-56 below plain-56",
                          "degradation: plain-56 above plain-20"}
    degradation = notes["degradation: plain-56 above plain-20"]
    assert degradation.x == 22 and "by at least 0.1 in smoothed training loss from step 22 to step 40" in \
        degradation.hovertext
    assert fig.layout.xaxis.range == (0, 102)  # the whole planned race: marks stay where they are as it goes on
    # A lead that is lost again loses its mark; a diverged network gets none (its curve stopped)
    assert T.ordering_marks(_live([1.0] * 10 + [5.0] * 30, [2.0] * 40)) == []
    h = _live([1.0] * 40, [3.0] * 40)
    h.runs["plain-56"].message = "plain-56 diverged at step 40"
    assert T.ordering_marks(h) == [] and not plot_race_loss(h).layout.shapes


def test_what_to_watch_for_and_the_measured_answer():
    trio, pair = _live([1.0] * 5, [2.0] * 5, [1.5] * 5), _live([1.0] * 5, [2.0] * 5)
    assert T.watch_for(trio).startswith("Watch: does plain-56's loss stay above plain-20's (the degradation "
                                        "problem, He et al. 2016, Fig. 1), and ResNet-56's fall below plain-56's")
    assert T.watch_for(pair).startswith("Watch: does ResNet-56's loss fall below plain-56's and stay there (He et "
                                        "al. 2016, Fig. 4 and 6)?")
    assert T.measured_sentence(trio) == "5 steps, smoothed loss: ResNet-56 1.00 < plain-20 1.50 < plain-56 2.00."
    trio.runs["plain-56"].message = "diverged"
    assert T.measured_sentence(trio).endswith("ResNet-56 1.00 < plain-20 1.50 (plain-56 diverged).")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A disk cache of this test's own (the replays of default races)."""
    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path / "cache"))
    T.replay.forget_reads()
    yield
    T.replay.forget_reads()


def test_only_a_pages_default_race_is_kept_for_replay():
    r20, r56 = M.get_config("resnet20"), M.get_config("resnet56")
    builtin = lambda cfg: T.DataRequest.for_race(cfg, T.DataSource.BUILTIN)  # noqa: E731
    rec20, rec56 = T.recipe_for(r20).config, T.recipe_for(r56).config
    assert T.is_default(r20, builtin(r20), rec20) and T.is_default(r56, builtin(r56), rec56)
    assert T.is_default(r20, builtin(r20), replace(rec20, device="cuda"))  # kept per device: the key says which
    assert not T.is_default(r20, builtin(r20), replace(rec20, seed=1))
    assert not T.is_default(r20, builtin(r20), replace(rec20, lr=0.02))
    assert not T.is_default(r20, builtin(r20), replace(rec20, steps=299))
    assert not T.is_default(r56, builtin(r56), rec20) or rec20 == rec56  # another recipe's settings
    assert not T.is_default(replace(r20, widths=(8, 16, 32)), builtin(r20), rec20)  # a custom net
    assert not T.is_default(r20, T.DataRequest.for_race(r20, T.DataSource.CIFAR10), rec20)
    assert T.replay_for(r20, T.DataSource.ZIP, rec20, False) is None  # a student's own images: never
    assert T.race_key(r20, builtin(r20), rec20, False) != T.race_key(r20, builtin(r20), rec20, True)


def _finish(gen):
    records = []
    with pytest.raises(StopIteration):
        while True:
            records.append(next(gen))
    return records


def test_a_finished_default_race_is_kept_and_read_back_whole(cache):
    cfg = M.ResNetConfig(layers=(1, 1), widths=(4, 8), stem="cifar", stem_width=4, input_size=16, num_classes=10)
    train, test, names = T.DataRequest(T.DataSource.BUILTIN, 16, 3).load()
    used = T.RaceConfig(steps=3, batch_size=8, eval_every=2)
    records = _finish(T.race_run(cfg, train, test, names, used, key=("race", "kept"), keep=True,
                                 source=T.DataSource.BUILTIN, data_name="Built-in shapes"))
    kept, live = T.replay.load(("race", "kept")), T.fold(None, records)
    assert kept.history.step == 3 and kept.trained_on == datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d") and kept.caption == f"**Replayed**: trained on {kept.trained_on}, 3 steps. **Start** trains it live."
    for name, run in live.history.runs.items():
        back = kept.history.runs[name]
        assert (back.role, back.layers, back.step, back.loss, back.acc, back.test_step, back.test_acc) == (
            run.role, run.layers, run.step, run.loss, run.acc, run.test_step, run.test_acc)
        torch.testing.assert_close(torch.tensor(back.grad_norms), torch.tensor(run.grad_norms), rtol=1e-6,
                                   atol=0)  # float32 on disk
    assert (kept.notes, kept.accuracy_note, kept.chance, kept.context) == (
        live.header.notes, live.header.accuracy_note, live.header.chance, live.header.context)
    view = T.replay_view(kept)
    assert view.messages() == T.race_messages(kept.history, live.header.context)  # the same verdicts as live
    assert view.figure_key != live.figure_key  # its charts are its own in the class's figure cache
    gen = T.race_run(cfg, train, test, names, used, key=("race", "stopped"), keep=True)
    next(gen), next(gen)
    gen.close()  # a student stopped it: nothing kept
    assert T.replay.load(("race", "stopped")) is None
    _finish(T.race_run(cfg, train, test, names, used, key=("race", "not kept")))
    assert T.replay.load(("race", "not kept")) is None


def test_a_corrupt_replay_is_ignored(cache):
    from resviz import disk_cache

    key = ("race", "corrupt")
    disk_cache.cache().set(T.replay.disk_key(key), b"not a torch file")
    assert T.replay.load(key) is None
    T.replay.forget_reads()
    disk_cache.save(T.replay.disk_key(key), {"version": T.replay.VERSION, "runs": {"a": {"role": "ResNet"}}})
    assert T.replay.load(key) is None
    h = _live([1.0] * 5, [2.0] * 5, planned=5)
    T.replay.save(key, h, (), "", 0.1, None, "x.pt")
    assert T.replay.load(key).history.step == 5
    blob = disk_cache.load(T.replay.disk_key(key))
    blob["runs"]["plain-56"]["loss"] = blob["runs"]["plain-56"]["loss"][:-1]  # curves of different lengths
    disk_cache.save(T.replay.disk_key(key), blob)
    T.replay.forget_reads()
    assert T.replay.load(key) is None

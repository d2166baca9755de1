"""Training race page: AppTest runs of tiny races, and a real browser starting and stopping one."""
from __future__ import annotations

import datetime
import re

import pytest

from resviz import classroom, disk_cache, runs, ui
from resviz.inputs import data
from resviz.lessons import training
from resviz.lessons.training import RECIPES, DataSource, RacePair
from resviz.models import ResNet, get_config
from resviz.pair import TrainedPair
from helpers import figure, new_app, no_exceptions, open_page, page_exceptions, screenshot, texts, wait_idle


def tiny_app():
    """The app with a tiny custom model in the sidebar (2 stages of 1 block, width 4, 16x16): fast races."""
    at = new_app("training", timeout=120)
    at.radio(key="sel_family").set_value("Custom").run()
    at.text_input(key="sel_layers").set_value("1, 1")
    at.number_input(key="sel_width").set_value(4)
    at.number_input(key="sel_size").set_value(16)
    return at.run()


def start(at, steps=4, batch=8, **widgets):
    at.number_input(key="tr_steps").set_value(steps)
    at.select_slider(key="tr_batch").set_value(batch)
    for key, value in widgets.items():
        widget = next(w for kind in ("radio", "checkbox", "selectbox", "select_slider", "number_input")
                      for w in getattr(at, kind) if w.key == key)
        widget.set_value(value)
    at.button(key="tr_start").click()
    return at.run()


def finish(at):
    """Wait (bounded) for the shared run this session watches, then rerun: AppTest does not poll fragments."""
    assert at.session_state["tr_watch"].wait(120).status.state is runs.State.FINISHED
    return at.run()


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Each test its own disk cache (beside its tmp_path, which some tests fill with image folders): a replayed
    default race is there only where a test keeps one."""
    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path_factory.mktemp("cache")))
    training.replay.forget_reads()
    yield
    training.replay.forget_reads()


def keep_default_race(resnet=(0.6,) * 300, plain=(1.0,) * 300) -> tuple:
    """Keep a finished race with the page's default settings (ResNet-20 and its twin, the recommended recipe, seed
    0, built-in images) as a finished default run is kept: these hand-made loss curves, no training."""
    from torch import nn

    cfg = get_config("resnet20")
    used, req = training.recipe_for(cfg).config, training.DataRequest.for_race(cfg, DataSource.BUILTIN)
    steps = len(resnet)
    h = training.new_history({"ResNet-20": nn.Linear(1, 1), "plain-20": nn.Linear(1, 1)}, steps, classes=10,
                             held_out=1000)
    for step, losses in enumerate(zip(resnet, plain), start=1):
        h.add({"step": step, "steps": steps, "elapsed_s": step / 10, "steps_per_s": 10.0, "runs": {
            name: {"loss": v, "acc": 0.5, "test_acc": None, "grad_norms": [1.0], "diverged": False, "message": None}
            for name, v in zip(("ResNet-20", "plain-20"), losses)}})
    key = training.race_key(cfg, req, used, False)
    training.replay.save(key, h, (), "Held-out accuracy is not measured in this race.", 0.1,
                         training.RaceContext(used, used), "resnet20_trained.pt")
    return key


def chart_titles(at) -> list[str]:
    import json

    titles = [json.loads(c.proto.spec)["layout"]["title"] for c in at.get("plotly_chart")]
    return [f"{t['text']}: {t['subtitle']['text']}" for t in titles]


def test_page_smoke_shows_controls_and_hint():
    at = new_app("training")
    no_exceptions(at)
    assert "Training race" in at.title[0].value
    assert any("press **Start**" in i.value for i in at.info)
    assert at.radio(key="tr_pair").options == ["resnet20 (sidebar)", "Deeper: resnet56"]
    assert at.radio(key="tr_pair").value is RacePair.SIDEBAR
    assert "trained" not in at.session_state  # nothing trained yet: the other pages offer no trained pair
    rec = RECIPES["resnet20"]
    assert (at.select_slider(key="tr_lr").value, at.select_slider(key="tr_batch").value,
            at.number_input(key="tr_steps").value) == (rec.lr, rec.batch_size, rec.steps)
    assert f"learning rate {rec.lr:g} at batch {rec.batch_size}" in texts(at) and "ResNet-20 for seeds 0-4" in texts(at)


def test_the_recommended_recipe_follows_the_pair_and_a_students_changes_stay():
    at = new_app("training")
    at.select_slider(key="tr_lr").set_value(0.3).run()
    at.number_input(key="tr_seed").set_value(3).run()
    assert at.select_slider(key="tr_lr").value == 0.3  # a rerun keeps the student's rate
    at.radio(key="tr_pair").set_value(RacePair.DEEP).run()
    no_exceptions(at)
    rec = RECIPES["resnet56"]
    assert (at.select_slider(key="tr_lr").value, at.number_input(key="tr_steps").value) == (rec.lr, rec.steps)
    assert "chosen by a sweep on ResNet-56 for seeds 0-4" in texts(at)
    assert at.number_input(key="tr_seed").value == 3  # not part of the recipe


def test_start_runs_a_tiny_race_and_shares_the_trained_model():
    at = finish(start(tiny_app(), steps=4))
    no_exceptions(at)
    assert not at.error
    titles = chart_titles(at)
    assert titles[:2] == ["Training loss: same start, same batches, same recipe",
                          "Accuracy: held-out images (bold), training batches (thin)"]
    shown = texts(at)
    assert "Held-out accuracy: the same 1000 Built-in shapes images at every evaluation (every 25 steps)" in shown
    assert "re-estimated on 512 training images" in shown
    # Four steps cannot show the paper's ordering: the page says so, and why, instead of cheering.
    verdicts = [m.value for kind in ("success", "info", "warning") for m in getattr(at, kind)]
    assert len(verdicts) == 1 and "trains faster" not in verdicts[0]
    assert "the race ran 4 steps and the recipe runs 300" in verdicts[0]
    assert "the batch size is 8 where the recipe uses 128" in verdicts[0]
    assert titles[2:] == ["ResNet-6: gradient norm per layer", "plain-6: gradient norm per layer"]
    assert any("steps/s" in m.value and "ResNet-6: loss" in m.value for m in at.markdown)
    trained = at.session_state["trained"]
    assert isinstance(trained, TrainedPair)
    assert trained.label == "ResNet-6 trained 4 steps on Built-in shapes"
    assert trained.cfg.input_size == 16 and trained.cfg.num_classes == 10
    assert trained.class_names == data.SHAPES and (trained.data_name, trained.steps) == ("Built-in shapes", 4)
    model = ResNet(trained.cfg)
    model.load_state_dict(trained.state_dict)  # loads strictly: the Feature maps page can use it
    assert all(v.device.type == "cpu" for v in trained.plain_state_dict.values())
    assert at.get("download_button")
    at.switch_page("pages/feature_maps.py").run()  # same session: the Feature maps page offers these weights
    no_exceptions(at)
    at.radio(key="fm_source").set_value("trained").run()
    no_exceptions(at)
    shown = " ".join(e.value for kind in ("markdown", "caption", "info") for e in getattr(at, kind))
    assert "ResNet-6 trained 4 steps" in shown.replace("\\", "")  # the label is escaped as markdown there


def test_projector_scales_the_race_charts_and_students_at_one_step_share_them():
    from resviz.plots.projector import SCALE

    at = finish(start(tiny_app(), steps=3))
    other = finish(start(tiny_app(), steps=3))  # the same settings: the same run, its charts built once
    keys = ["tr_loss", "tr_acc", "tr_h0", "tr_h1"]
    normal = [figure(at, k)["layout"] for k in keys]
    assert at.session_state["tr_view"].figure_key == other.session_state["tr_view"].figure_key
    assert [figure(other, k)["layout"] for k in keys] == normal
    at.session_state["projector"] = True  # the sidebar's switch (app.py draws it; AppTest runs the page alone)
    at.run()
    no_exceptions(at)
    for key, before in zip(keys, normal):
        assert figure(at, key)["layout"]["font"]["size"] == pytest.approx(before["font"]["size"] * SCALE)
    other.run()
    assert [figure(other, k)["layout"] for k in keys] == normal  # per student: the other screen is unchanged


def test_shallow_plain_net_joins_the_race():
    at = tiny_app()
    at.text_input(key="sel_layers").set_value("3, 3").run()
    at = finish(start(at, steps=3, tr_shallow=True))
    no_exceptions(at)
    assert chart_titles(at)[2:] == ["ResNet-14: gradient norm per layer", "plain-14: gradient norm per layer",
                                    "plain-6: gradient norm per layer"]


# Every verdict box the race can end with, from hand-made curves (ResNet, plain twin; 100 steps; held-out accuracy
# at the end on 1000 images; 10 classes: guessing pays ln 10 = 2.30): the box and how its text starts.
RACE_VERDICTS = {
    "both at guessing level (lr 1.0)": ([14.0] + [2.32] * 99, [9.0] + [2.32] * 99, (0.10, 0.11), "info",
                                        "**Neither ResNet-6 nor plain-6 learned the images in this run**"),
    "barely above guessing, inside the margin": ([2.25] * 100, [2.27] * 100, (0.14, 0.14), "info",
                                                 "ResNet-6 ends only 0.02 below plain-6"),
    "the paper's ordering": ([0.6] * 100, [1.0] * 100, (0.8, 0.6), "success", "**ResNet-6 trains faster than plain-6**"),
    "the reverse, beyond the margin": ([1.5] * 100, [1.0] * 100, (0.5, 0.6), "warning", "**plain-6 ends below ResNet-6**"),
}


@pytest.mark.parametrize("case", RACE_VERDICTS)
def test_each_race_verdict_shows_in_its_own_box(case, monkeypatch):
    from torch import nn

    from resviz.lessons import training

    resnet, plain, held_out_acc, box, start_of = RACE_VERDICTS[case]

    def race_job(cfg, req, loaded, used, include_shallow_plain=False, notes=None):  # the race's records, by hand
        def make():
            empty = training.new_history({"ResNet-6": nn.Linear(1, 1), "plain-6": nn.Linear(1, 1)}, len(resnet),
                                         classes=10, held_out=1000)
            ctx = training.RaceContext(training.recipe_for(cfg).config, used)
            yield training.RaceHeader(empty, (), "", 0.1, ctx, "x.pt", lambda: None, key=("hand-made race", case))
            for step, (a, b) in enumerate(zip(resnet, plain), start=1):
                last = step == len(resnet)
                yield {"step": step, "steps": len(resnet), "elapsed_s": step / 10, "steps_per_s": 10.0, "runs": {
                    name: {"loss": v, "acc": 0.5, "test_acc": acc if last else None, "grad_norms": [1.0],
                           "diverged": False, "message": None}
                    for name, v, acc in (("ResNet-6", a, held_out_acc[0]), ("plain-6", b, held_out_acc[1]))}}
            return None

        return training.RaceJob(("hand-made race", case), make, cost=1)

    monkeypatch.setattr(training, "race_job", race_job)
    at = finish(start(tiny_app(), tr_lr=1.0 if "lr 1.0" in case else 0.01))
    no_exceptions(at)
    boxes = {kind: [e.value for e in getattr(at, kind)] for kind in ("success", "warning", "info")}
    assert boxes == {**{kind: [] for kind in boxes}, box: boxes[box]} and len(boxes[box]) == 1, boxes
    assert boxes[box][0].startswith(start_of), boxes[box][0]
    if "lr 1.0" in case:
        assert "at learning rate 1, 100 times the recipe's 0.01" in boxes[box][0]
        assert "opposite" not in boxes[box][0]


def test_huge_learning_rate_shows_divergence_and_the_others_keep_going():
    at = finish(start(tiny_app(), steps=6, tr_lr=100.0))
    no_exceptions(at)
    warnings = [w.value for w in at.warning]
    assert warnings and all("diverged at step" in w and "smaller learning rate" in w for w in warnings)


def test_missing_torchvision_dataset_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEFAULT_ROOT", str(tmp_path))
    at = start(tiny_app(), tr_data=DataSource.MNIST)
    no_exceptions(at)
    assert at.error and "built-in dataset" in at.error[0].value.replace("\\", "")  # escaped as markdown
    assert "tr_watch" not in at.session_state


def test_zip_source_without_upload_asks_for_one():
    at = start(tiny_app(), tr_data=DataSource.ZIP)
    no_exceptions(at)
    assert at.error and "Upload a zip" in at.error[0].value


def test_race_run_yields_a_header_then_the_records_and_fold_replays_them_per_student():
    from resviz.lessons import training
    from resviz.models import ResNetConfig

    cfg = ResNetConfig(layers=(1, 1), widths=(4, 8), stem="cifar", stem_width=4, input_size=16, num_classes=10)
    train, test, names = training.DataRequest(training.DataSource.BUILTIN, 16, 3).load()
    used = training.RaceConfig(steps=3, batch_size=8, eval_every=0)
    gen = training.race_run(cfg, train, test, names, used)
    records = []
    with pytest.raises(StopIteration) as end:
        while True:
            records.append(next(gen))
    header, steps = records[0], records[1:]
    assert isinstance(header, training.RaceHeader) and [r["step"] for r in steps] == [1, 2, 3]
    assert isinstance(end.value.value, TrainedPair) and end.value.value.steps == 3
    assert header.weights_now() is end.value.value  # once over, the header holds the weights, not the models
    assert header.empty.step == 0 and not any(r.loss for r in header.empty.runs.values())  # shared: never changed
    early = training.fold(None, records[:2])  # a student who saw one step, then the rest
    late = training.fold(None, records)  # one who joined after the end: the whole history replayed
    assert training.fold(early, records) is early and early.history == late.history and late.history.step == 3
    assert training.fold(None, []) is None
    assert header.key != next(training.race_run(cfg, train, test, names, used)).key  # unshared: a key of its own
    assert next(training.race_run(cfg, train, test, names, used, key=("race", "x"))).key == ("race", "x")


def test_same_settings_share_one_run_and_a_stop_only_detaches_that_student():
    long = dict(steps=5000, batch=256)  # far longer than the test: it is stopped, never finished
    a, b = start(tiny_app(), **long), start(tiny_app(), **long)
    wa, wb = a.session_state["tr_watch"], b.session_state["tr_watch"]
    try:
        assert wa._run is wb._run and wb.status.watchers == 2
        c = start(tiny_app(), tr_seed=1, **long)  # another seed: another run
        assert c.session_state["tr_watch"]._run is not wa._run
        c.button(key="tr_stop").click().run()
        seen = len(wb.wait(120, records=3).records)
        shown = texts(b.run())  # live: what to watch for, above the charts, and who else watches
        assert "Watch: does ResNet-6's loss fall below plain-6's and stay there (He et al. 2016, Fig. 4 and 6)?" in \
            shown and "watched by 2 students" in shown
        a.button(key="tr_stop").click().run()  # a leaves; b's run goes on
        no_exceptions(a)
        assert wa.detached and any("Stopped by you at step" in e.value for e in a.caption)
        assert isinstance(a.session_state["trained"], TrainedPair)  # what was learned so far
        snap = wb.wait(120, records=seen + 3)
        assert snap.status.state is runs.State.RUNNING and len(snap.records) >= seen + 3
        assert snap.status.watchers == 1
        b.button(key="tr_stop").click().run()  # nobody left: the run stops
        assert wb.wait(60).status.state is runs.State.CANCELLED
    finally:
        wa.detach()
        wb.detach()


def test_a_queued_student_sees_their_place(monkeypatch):
    reg = runs.Registry(max_running=1)
    monkeypatch.setattr(runs, "_REGISTRY", reg)
    try:
        a = start(tiny_app(), steps=5000, batch=256)
        b = start(tiny_app(), steps=5000, batch=256, tr_seed=2)
        no_exceptions(b)
        assert b.session_state["tr_watch"].status.state is runs.State.QUEUED
        assert any("Number 1 in the queue" in i.value for i in b.info)
        for at in (a, b):
            at.button(key="tr_stop").click().run()
    finally:
        reg.shutdown()


def test_a_race_too_big_for_the_server_is_refused_with_numbers(monkeypatch):
    monkeypatch.setenv("RESVIZ_BUDGET_MB", "1")
    at = start(tiny_app(), batch=256)
    no_exceptions(at)
    assert at.error and "The training race needs about" in at.error[0].value
    assert "tr_watch" not in at.session_state


@pytest.mark.browser
def test_browser_start_then_stop(app_server, page):
    open_page(page, app_server, "training")
    page.get_by_role("heading", name="Training race").wait_for()
    main = page.get_by_test_id("stMain")  # the header has a "Stop" button of its own while a script runs
    main.get_by_role("button", name="Start").click()
    page.get_by_text("steps/s").first.wait_for(timeout=120_000)  # live status while it trains
    page.get_by_text(re.compile(r"^step [1-9]\d* of 300$")).wait_for(timeout=300_000)  # a step done: curves to keep
    main.get_by_role("button", name="Stop").click()
    page.get_by_text("Stopped by you at step").wait_for(timeout=60_000)
    wait_idle(page)
    assert page_exceptions(page) == []
    assert page.get_by_text("Download the trained ResNet").count() == 1
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 4
    screenshot(page, "training_race")


@pytest.mark.browser
def test_browser_race_runs_to_its_finish(app_server, page):
    open_page(page, app_server, "training")
    main = page.get_by_test_id("stMain")
    steps = main.get_by_label("Steps")
    steps.fill("60")
    steps.press("Enter")
    wait_idle(page)
    main.get_by_role("button", name="Start").click()
    page.get_by_text("Download the trained ResNet").wait_for(timeout=300_000)  # drawn once the race is over
    wait_idle(page)
    assert page_exceptions(page) == []
    assert page.get_by_text("step 60 of 60").count() == 1
    screenshot(page, "training_race_finished")


def _image_zip_members(classes=("circles", "squares"), n=6):
    import io as _io

    from PIL import Image, ImageDraw

    members = {}
    for c, name in enumerate(classes):
        for i in range(n):
            im = Image.new("RGB", (24, 24), (20 * i, 0, 0))
            draw = ImageDraw.Draw(im)
            (draw.ellipse if c == 0 else draw.rectangle)((4 + i, 4, 18, 18), fill=(255, 255, 255))
            buf = _io.BytesIO()
            im.save(buf, "PNG")
            members[f"{name}/{i}.png"] = buf.getvalue()
    return members


def test_a_good_zip_uploaded_on_the_page_trains():
    import io as _io
    import zipfile

    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, payload in _image_zip_members().items():
            z.writestr(name, payload)
    at = new_app("training", timeout=300)
    at.selectbox(key="tr_data").set_value(DataSource.ZIP).run()
    at.file_uploader(key="tr_zip").set_value(("shapes.zip", buf.getvalue(), "application/zip")).run()
    at.number_input(key="tr_steps").set_value(3)
    at.select_slider(key="tr_batch").set_value(8)
    finish(at.button(key="tr_start").click().run())
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["tr_view"].history.step == 3


def test_teacher_folders_are_offered_by_name_only(tmp_path, monkeypatch):
    for name, payload in _image_zip_members().items():
        (tmp_path / "shapes" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "shapes" / name).write_bytes(payload)
    (tmp_path / "shapes" / name).with_name("broken.png").write_bytes(b"\x89PNG not really")  # skipped and named
    at = new_app("training", timeout=300)
    assert "The teacher's image folders" not in at.selectbox(key="tr_data").options  # not configured: not offered
    assert at.selectbox(key="tr_data").options[0] == "Built-in shapes (no download)"
    monkeypatch.setenv("RESVIZ_IMAGE_FOLDERS", str(tmp_path))
    at.run()
    at.selectbox(key="tr_data").set_value(DataSource.TEACHER).run()
    assert at.selectbox(key="tr_folder").options == ["shapes"]
    at.number_input(key="tr_steps").set_value(2)
    at.select_slider(key="tr_batch").set_value(8)
    finish(at.button(key="tr_start").click().run())
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["tr_view"].history.step == 2
    assert "broken" in texts(at) and "not a usable image" in texts(at)


def test_a_live_race_fills_its_own_shelf_and_leaves_the_pages_figures():
    made = []
    page_fig = ui.figure(("test page figure",), lambda: made.append("page") or {"page": 1})
    for step in range(ui.FIGURE_SHELVES["pages"] + 1):  # more frames than the pages' shelf holds
        ui.figure(("test race", step), lambda: made.append("frame") or {"step": step}, "live")
    assert ui.figure(("test page figure",), lambda: made.append("page") or {"page": 2}) is page_fig
    assert made.count("page") == 1
    live, _ = ui._figure_store("live")
    assert len(live) == ui.FIGURE_SHELVES["live"]


def test_the_default_race_replays_at_once_and_nothing_is_computed(monkeypatch):
    keep_default_race()
    reg = runs.Registry()
    monkeypatch.setattr(runs, "_REGISTRY", reg)
    monkeypatch.setattr(training.jobs, "new_race", lambda *a, **k: pytest.fail("a replay trains nothing"))
    try:
        at = new_app("training")  # a fresh session with the page's defaults
        no_exceptions(at)
        replayed = [i.value for i in at.info if i.value.startswith("**Replayed**")]
        assert replayed and f"trained on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}, 300 steps" in \
            replayed[0] and "**Start** trains it live" in replayed[0]
        assert chart_titles(at)[:2] == ["Training loss: same start, same batches, same recipe",
                                        "Accuracy: held-out images (bold), training batches (thin)"]
        assert [s.value for s in at.success][0].startswith("**ResNet-20 trains faster than plain-20**")
        assert "tr_watch" not in at.session_state and reg.overview() == []  # no run, nothing queued
        assert "trained" not in at.session_state and not at.get("download_button")  # a history, not weights
        at.number_input(key="tr_seed").set_value(1).run()  # not the default: nothing to replay
        no_exceptions(at)
        assert not at.get("plotly_chart") and any("press **Start**" in i.value for i in at.info)
        at.number_input(key="tr_seed").set_value(0).run()
        at.checkbox(key="tr_shallow").set_value(True).run()  # the trio is another default race, not kept here
        assert not at.get("plotly_chart")
    finally:
        reg.shutdown()


def test_a_corrupt_replay_is_ignored_and_start_stays_offered():
    key = keep_default_race()
    disk_cache.cache().set(training.replay.disk_key(key), b"\x80not a torch file")
    at = new_app("training")
    no_exceptions(at)
    assert not at.get("plotly_chart") and any("press **Start**" in i.value for i in at.info)
    assert not at.error and not at.warning


def test_the_teachers_start_locks_the_vote_and_the_teacher_is_not_counted_as_a_student(monkeypatch, quiet_bell):
    monkeypatch.setenv(classroom.KEY_ENV, "the teacher's key")
    room = classroom.Classroom()
    room.ask("Which ends with the lower training loss?", ["ResNet-6", "plain-6"])
    long = dict(steps=5000, batch=256)  # stopped, never finished
    student = start(tiny_app(), **long)
    assert not room.question().locked  # a student's Start does not lock the vote
    teacher = tiny_app()
    teacher.session_state["class_teacher"] = True  # unlocked with the key (test_browser_class tests the unlocking)
    teacher = start(teacher, **long)
    ws, wt = student.session_state["tr_watch"], teacher.session_state["tr_watch"]
    try:
        assert room.question().locked  # the teacher started the experiment: votes are locked
        assert wt._run is ws._run and (ws.status.watchers, ws.status.students) == (2, 1)
        ws.wait(120, records=2)
        assert "watched by 1 student" in texts(student.run()) and "1 students" not in texts(student)
    finally:
        ws.detach()
        wt.detach()


def test_a_finished_race_shows_the_class_prediction_beside_what_was_measured(monkeypatch, quiet_bell):
    monkeypatch.setenv(classroom.KEY_ENV, "the teacher's key")
    classroom.Classroom().ask("Which ends with the lower training loss?", ["ResNet-6", "plain-6"])
    at = finish(start(tiny_app(), steps=4))
    no_exceptions(at)
    shown = texts(at).replace("\\", "")  # the class's panel escapes the sentence as markdown
    assert re.search(r"\*\*Measured:\*\* 4 steps, smoothed loss: (ResNet|plain)-6 \d\.\d\d < (ResNet|plain)-6 "
                     r"\d\.\d\d\.", shown), shown
    assert "The tally shows when the teacher reveals it." in shown

"""The sidebar's model picker: its text checked before anything is computed from it, and its stride toggle naming
the paper it is about."""
import time

import pytest

from helpers import new_app, no_exceptions, texts
from resviz import models, ui
from resviz.inputs import limits

CUSTOM = {"sel_family": "Custom", "sel_block": "basic", "sel_width": 16, "sel_size": 32}


@pytest.mark.parametrize("text, layers", [("2, 2, 2", (2, 2, 2)), (" 3,4 ,6,3, ", (3, 4, 6, 3)), ("0007", (7,)),
                                          ("2, 0, 2", (2, 0, 2))])  # a 0 is check_config's to explain
def test_blocks_per_stage_reads_whole_numbers(text, layers):
    assert ui.parse_layers(text) == layers


@pytest.mark.parametrize("text, words", [
    (", ".join(["1"] * 150_000), f"at most {limits.LAYERS_CHARS} characters"),  # 300 KB: 50 s and +646 MB before
    (", ".join(["1"] * (limits.CONFIG_STAGES + 1)), f"At most {limits.CONFIG_STAGES} stages"),
    ("2, 10000", f"At most {limits.LAYERS_BLOCKS:,} blocks in one stage"),
    ("2, ², 2", "whole numbers"), ("2.5, 2", "whole numbers"), ("-1, 2", "whole numbers"), ("1e3", "whole numbers"),
])
def test_blocks_per_stage_refuses_with_plain_words(text, words):
    with pytest.raises(models.ConfigError, match=words):
        ui.parse_layers(text)


def test_a_300_kb_stages_text_is_refused_at_once_and_the_previous_model_kept():
    at = new_app("architecture", sidebar=CUSTOM | {"sel_layers": "2, 2, 2"})
    before = at.session_state["selection"].cfg
    t = time.perf_counter()
    at.session_state["sel_layers"] = ", ".join(["9"] * 150_000)
    at.run()
    assert time.perf_counter() - t < 20  # was 50-86 s of CPU and +646-927 MB for this one rerun
    no_exceptions(at)
    assert any(f"at most {limits.LAYERS_CHARS} characters" in e.value and "Keeping the previous model" in e.value
               for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    assert at.session_state["selection"].cfg == before


def test_the_stride_toggle_names_he_et_al_for_their_resnets():
    at = new_app(sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet50"})
    no_exceptions(at)
    assert "He et al. 2016" in at.sidebar.toggle(key="sel_stride_in_1x1").label


@pytest.mark.parametrize("name, words", [("resnext50_32x4d", "Xie et al. 2017"), ("wide_resnet50_2", "Wide ResNet")])
def test_resnext_and_wide_resnet_say_where_their_stride_is_instead_of_the_toggle(name, words):
    at = new_app(sidebar={"sel_family": "ImageNet", "sel_imagenet": name, "sel_stride_in_1x1": True})
    no_exceptions(at)
    assert "sel_stride_in_1x1" not in [t.key for t in at.sidebar.toggle]
    shown = texts(at.sidebar, ("caption",))
    assert words in shown and "3x3" in shown and "stride" in shown
    assert not at.session_state["selection"].cfg.stride_in_1x1  # a toggle left on for ResNet-50 does not apply

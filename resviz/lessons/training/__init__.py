"""The training race: a ResNet, its plain twin and optionally a shallower plain net trained side by side on the same
batches (He et al. 2016, Fig. 1, 4 and 6); pages, tests, benchmarks and claims import its names from here.

    models = make_race_models(get_config("resnet56"), seed=0, include_shallow_plain=True)
    for rec in race(models, train, test, RaceConfig(steps=100)):
        print(rec["step"], {name: r["loss"] for name, r in rec["runs"].items()})

One module a seam, each readable alone:

- ``sources``: where the images come from (``DataSource``, ``DataRequest``) and the config fitted to them
- ``loop``: the settings (``RaceConfig``), the networks, and the loop that trains them (``race``)
- ``history``: a race's curves as a page keeps them (``RaceHistory``) and the one smoothing (``smooth``)
- ``orderings``: the paper's orderings and their margins (``race_margins``)
- ``recipes``: the recommended settings the sweep chose (``recipe_for``)
- ``verdicts``: what a race showed, in words (``race_messages``)
- ``runner``: a race as a page or a benchmark holds it (``Race``, ``new_race``)
- ``default_races``: the page's default races, for the benchmarks and the lesson claims (``claims``)
- ``jobs``: the race as a shared run (``race_job``, ``watch_race``)
- ``replay``: a finished default race kept in the disk cache, replayed at once to the next students (``replay_for``)
- ``frames``: what one student sees of a shared race (``fold``, ``framed``, ``waiting_message``)
"""
from resviz.lessons.training.default_races import (CI_SCALE, CLAIM_LEARNED, CLAIM_TEXTS, CLAIM_WORKERS, MAX_DROP,
                                                   claims, default_race, max_accuracy_drop)
from resviz.lessons.training.frames import FRAMES, RaceView, fold, framed, queue_text, replay_view, waiting_message
from resviz.lessons.training.history import (ROLES_IN_ORDER, SMOOTHING, RaceHistory, Role, RunHistory, new_history,
                                             new_history_like, smooth)
from resviz.lessons.training.jobs import RaceHeader, RaceJob, race_job, race_run, stop_watching, watch_race
from resviz.lessons.training.loop import (DIVERGED_LOSS, RaceConfig, RacePair, bare_loop, batch_indices, check_race,
                                          cpu_state_dict, evaluate, layer_params, make_race_models, race,
                                          refresh_batch_norm, shallow_config, short_name, state_dict_bytes)
from resviz.lessons.training.orderings import (GAP_MARGIN, MARK_TEXTS, Margin, Mark, Ordering, curve_margins,
                                               ordering_marks, race_margins)
from resviz.lessons.training.recipes import (CHECKED_SEEDS, LEARNING_RATES, RECIPES, WHY_THE_RATE, Recipe,
                                             recipe_for)
from resviz.lessons.training.replay import Replay, is_default, race_key, replay_for
from resviz.lessons.training.runner import Race, new_race
from resviz.lessons.training.sources import (RACE_IMAGE_SIZE, DataRequest, DataSource, data_shape_for, fit_config,
                                             offered_sources)
from resviz.lessons.training.verdicts import (RaceContext, Tone, at_chance, measured_sentence, race_messages,
                                              status_line, watch_for)

__all__ = [
    "CI_SCALE", "CLAIM_LEARNED", "CLAIM_TEXTS", "CLAIM_WORKERS", "MAX_DROP", "claims", "default_race",
    "max_accuracy_drop", "FRAMES", "RaceView", "fold", "framed", "queue_text", "waiting_message", "ROLES_IN_ORDER",
    "SMOOTHING", "RaceHistory", "Role", "RunHistory", "new_history", "new_history_like", "smooth", "RaceHeader",
    "RaceJob", "race_job", "race_run", "stop_watching", "watch_race", "DIVERGED_LOSS", "RaceConfig", "RacePair",
    "bare_loop", "batch_indices", "check_race", "cpu_state_dict", "evaluate", "layer_params", "make_race_models",
    "race", "refresh_batch_norm", "shallow_config", "short_name", "state_dict_bytes", "GAP_MARGIN", "Margin",
    "Ordering", "curve_margins", "race_margins", "CHECKED_SEEDS", "LEARNING_RATES", "RECIPES", "WHY_THE_RATE",
    "Recipe", "recipe_for", "Race", "new_race", "RACE_IMAGE_SIZE", "DataRequest", "DataSource", "data_shape_for",
    "fit_config", "offered_sources", "RaceContext", "Tone", "at_chance", "race_messages", "status_line",
    "replay_view", "MARK_TEXTS", "Mark", "ordering_marks", "Replay", "is_default", "race_key", "replay_for",
    "measured_sentence", "watch_for",
]

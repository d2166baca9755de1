"""deploy.bench_replicas: the figures made from the students' records (the deploy itself runs in the benchmark)."""
from deploy import bench_replicas


def _rec(click_at: float, finished: float | None) -> dict:
    return {"click_at_s": click_at, "finished_s": finished, "exceptions": [], "errors": []}


def test_ratios_against_one_race_alone_and_the_races_the_cpu_counts():
    alone = [_rec(0.0, 60.0)]
    same = [_rec(0.0, 66.0), _rec(5.0, 63.0), _rec(10.0, None)]  # the last never finished
    f = bench_replicas.figures(alone, same, cpu_alone=100.0, cpu_same=130.0)
    assert (f["finished"], f["sessions"], f["ratios"]) == (2, 3, [1.05, 1.1])
    assert f["race_wall_s"] == 68.0 and round(f["race_wall_ratio"], 3) == round(68 / 60, 3)  # first Start, last end
    assert f["races_by_cpu"] == 1.3
    table = bench_replicas.format_table({"one": {"summary": {**f, "replicas": 1, "workers": 0}}})
    assert "| 1 replica(s), 0 workers | 2 / 3 | 60.0 s | 64.5 s | 1.08 / 1.10 | 1.13 | 1.30 | - |" in table

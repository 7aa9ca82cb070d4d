"""The calibration gain: recorded runs beside a measurement, the median ratio per preset, a bad file is no history."""

from pathlib import Path

import pytest

from bitsmith.engine.search.calibration_gain import KEEP_RUNS, gain_for, history_path, read_runs, record_run


def test_median_ratio_of_this_preset_only(tmp_path: Path) -> None:
    path = history_path(tmp_path / "abc.json")
    assert path.name == "abc.runs.json" and gain_for(path, "demo") is None
    for predicted, achieved in ((2.0, 0.8), (1.0, 0.5), (4.0, 1.0)):
        record_run(path, "demo", 3.0, predicted, achieved)
    record_run(path, "default", 3.0, 1.0, 0.1)
    record_run(path, "demo", 4.0, 0.0, 0.1)  # nothing predicted: no ratio to learn from
    gain = gain_for(path, "demo")
    assert gain is not None and gain.runs == 3 and gain.ratio == pytest.approx(0.4)  # median of 0.4, 0.5, 0.25
    assert gain_for(path, "default").ratio == pytest.approx(0.1) and gain_for(path, "best") is None
    assert "0.40" in gain.describe() and "3 earlier run(s)" in gain.describe()


def test_only_the_newest_runs_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "m.runs.json"
    for i in range(KEEP_RUNS + 5):
        record_run(path, "demo", 3.0, 1.0, float(i))
    runs = read_runs(path)
    assert len(runs) == KEEP_RUNS and runs[0]["achieved"] == 5.0 and runs[-1]["achieved"] == KEEP_RUNS + 4


@pytest.mark.parametrize("text", ["{not json", '{"a": 1}', '[1, "x", {"preset": "demo", "predicted": "?"}]'])
def test_an_unreadable_history_is_no_history(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.runs.json"
    path.write_text(text)
    assert gain_for(path, "demo") is None
    record_run(path, "demo", 3.0, 2.0, 1.0)  # and it is replaced by a good one
    assert gain_for(path, "demo").ratio == pytest.approx(0.5)

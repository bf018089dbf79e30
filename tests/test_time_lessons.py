"""tools/time_lessons.py: what it reads from an executed notebook (no lesson is run here)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import time_lessons  # noqa: E402


def _cell(kind: str, source: str, seconds: float | None):
    cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
    if seconds is not None:
        cell.metadata["papermill"] = {"duration": seconds}
    return cell


def test_section_seconds_sums_the_cells_under_each_level_two_heading():
    nb = nbformat.v4.new_notebook(cells=[
        _cell("md", "# Lesson", 0.01),
        _cell("code", "setup()", 2.0),
        _cell("md", "## 1. Train\ntext\n### a sub-heading stays in its section", 0.0),
        _cell("code", "train()", 30.0),
        _cell("md", "### Exercise", 0.0),
        _cell("code", "check()", 1.5),
        _cell("md", "## 2. Explore", None),     # not executed: no duration
        _cell("code", "explore()", None),
        _cell("md", "## 3. Evaluate", 0.0),
        _cell("code", "evaluate()", 4.0),
    ])
    seconds = time_lessons.section_seconds(nb)
    assert list(seconds) == ["set-up", "1. Train", "2. Explore", "3. Evaluate"]
    assert seconds["set-up"] == pytest.approx(2.01)
    assert seconds["1. Train"] == pytest.approx(31.5)
    assert seconds["2. Explore"] == 0.0
    assert seconds["3. Evaluate"] == pytest.approx(4.0)


def test_table_totals_and_names_the_command():
    text = time_lessons.table({"00_a": 10.4, "01_b": 20.2}, "python tools/time_lessons.py", "2026-01-01", "a CPU")
    assert "| `00_a` | 10 |" in text and "| total | 31 |" in text
    assert text.endswith("Measured 2026-01-01 on a CPU: `python tools/time_lessons.py`.")


def test_a_folder_it_did_not_write_is_never_emptied(tmp_path):
    (tmp_path / "precious.txt").write_text("keep")
    with pytest.raises(SystemExit, match="not written by this tool"):
        time_lessons.fresh_folder(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep"
    ours = time_lessons.fresh_folder(tmp_path / "timing")
    (ours / "old.ipynb").write_text("{}")
    assert not (time_lessons.fresh_folder(ours) / "old.ipynb").exists()


def _lesson():
    params = nbformat.v4.new_code_cell(
        'PROFILE = "smoke"   # one of the three below\n'
        "# smoke: CI and a first look\n"
        "# cpu:   a lab machine without a GPU\n"
        "# gpu:   a lab or Colab GPU\n"
        "SEED = 0")
    params.metadata["tags"] = ["parameters"]
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Lesson 9\n\n### a sub-heading is not a section"),
        params,
        nbformat.v4.new_markdown_cell("## 1. Train\ntext"),
        nbformat.v4.new_code_cell("# cpu: a comment in another cell stays"),
        nbformat.v4.new_markdown_cell("## 2. Read only"),
    ])


def test_annotate_writes_the_profile_line_and_the_section_times_and_can_rewrite_them():
    nb = _lesson()
    assert time_lessons.annotate(nb, "cpu", 150.0, {"1. Train": 95.0, "2. Read only": 0.2},
                                 where="on a 2-core CPU") == 2
    params = nb.cells[1].source.splitlines()
    assert params[2] == "# cpu:   a lab machine without a GPU — this lesson: 2.5 min on a 2-core CPU"
    assert params[1] == "# smoke: CI and a first look" and params[3] == "# gpu:   a lab or Colab GPU"
    assert nb.cells[2].source == "## 1. Train ⏱ 1.5 min\ntext"
    assert nb.cells[4].source == "## 2. Read only"                  # under a second: no time
    assert nb.cells[3].source == "# cpu: a comment in another cell stays"

    # Measured again: the times are replaced, not appended; headings read back without them.
    assert time_lessons.annotate(nb, "cpu", 40.0, {"1. Train": 20.0}) == 2
    assert nb.cells[1].source.splitlines()[2].endswith("GPU — this lesson: 40 s here")
    assert nb.cells[2].source.startswith("## 1. Train ⏱ 20 s\n")
    for cell in nb.cells[2:]:
        cell.metadata["papermill"] = {"duration": 3.0}
    assert list(time_lessons.section_seconds(nb)) == ["set-up", "1. Train", "2. Read only"]

    # Another profile's timing touches only its own line and no heading.
    assert time_lessons.annotate(nb, "smoke", 12.0) == 1
    assert nb.cells[1].source.splitlines()[1] == "# smoke: CI and a first look — this lesson: 12 s here"
    assert nb.cells[2].source.startswith("## 1. Train ⏱ 20 s\n")


def test_a_lesson_that_ran_another_profile_keeps_its_times(tmp_path, monkeypatch):
    """Lesson 05 without a GPU runs smoke whatever it is asked: a cpu timing of it is not its
    cpu time, and its sections are not the lab profile's."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for stem in ("00_a", "05_b"):
        nbformat.write(_lesson(), notebooks / f"{stem}.ipynb")
    monkeypatch.setattr(time_lessons, "NOTEBOOKS", notebooks)
    assert time_lessons.ran_as({"profile": "smoke"}, "cpu") == "smoke"
    assert time_lessons.ran_as({}, "cpu") == "cpu"
    timing = tmp_path / "timing-cpu"
    timing.mkdir()
    sections = {"1. Train": 95.0}
    (timing / "times.json").write_text(json.dumps({
        "profile": "cpu", "where": "here", "seconds": {"00_a": 150.0, "05_b": 20.0},
        "sections": {"00_a": sections, "05_b": sections},
        "ran_as": {"00_a": "cpu", "05_b": "smoke"}}))
    time_lessons.write_times([timing])
    assert "## 1. Train ⏱ 1.5 min" in nbformat.read(notebooks / "00_a.ipynb", as_version=4).cells[2].source
    untouched = nbformat.read(notebooks / "05_b.ipynb", as_version=4)
    assert [c.source for c in untouched.cells] == [c.source for c in _lesson().cells]


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (29.6, "30 s"), (59.4, "59 s"),
                                           (60, "1 min"), (100, "1.5 min"), (1000, "16.5 min")])
def test_human_durations(seconds, text):
    assert time_lessons.human(seconds) == text

"""Lesson 07 reads the shipped studies: its structure, its text against the shipped numbers, and
a papermill run on the smoke profile."""
from __future__ import annotations

import ast
import re

import nbformat
import pytest

from conftest import REPO
from dynat_lite import study

LESSON = REPO / "notebooks" / "07_does_it_work.ipynb"
RESULTS = REPO / "results"
VERDICT_LINE = re.compile(r"^- \*\*(\w+)\*\* — (not supported|supported|inconclusive|collapses|"
                          r"does not collapse)\b", re.M)
STUDIES = ("overfitting", "tradeoff", "steps", "strong-guide")


def _notebook():
    return nbformat.read(LESSON, as_version=4)


def _evidence():
    return (study.overfitting_evidence(study.summarize(RESULTS / "overfitting"))
            + study.tradeoff_evidence(study.summarize(RESULTS / "tradeoff"))
            + study.steps_evidence(study.summarize(RESULTS / "steps"),
                                   study.histories(RESULTS / "steps"))
            + study.strong_guide_evidence(study.summarize(RESULTS / "strong-guide")))


def test_structure():
    nb = _notebook()
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[1]
    params = {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(tagged[0].source).body}
    assert {"PROFILE", "DATASET", "DEVICE", "SEED", "RESULTS_DIR", "OUT_DIR"} <= set(params)
    assert all(not c.get("outputs") for c in code)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "**Think!**" in text and "<details>" in text and "$$" in text
    assert "what to try next" in nb.cells[-1].source.lower()


def test_the_text_states_the_verdicts_the_shipped_numbers_give():
    nb = _notebook()
    cell = next(c for c in nb.cells if c.source.startswith("### What the evidence says"))
    written = dict(VERDICT_LINE.findall(cell.source))
    computed = {e["claim"].split(".")[0]: e["verdict"] for e in _evidence()}
    assert written == computed


def test_the_shipped_studies_are_complete():
    for name in STUDIES:
        s = study.get(name)
        finished = {r["run"] for r in study.summarize(RESULTS / name)}
        assert finished, f"results/{name} holds no finished run"
        missing = {r.name for r in s.runs} - finished
        # Every run of a study was meant to finish; the README and lesson 07 name what did not.
        readme = (RESULTS / name / "README.md").read_text()
        for run in missing:
            assert run in readme, f"{run} did not finish and results/{name}/README.md does not say so"


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.timeout(1800)
def test_lesson_07_runs_under_papermill(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("DYNAT_HEADLESS", "1")
    out = tmp_path / "07.ipynb"
    papermill.execute_notebook(str(LESSON), str(out), cwd=str(LESSON.parent),
                               kernel_name="python3", engine_name="dynat", progress_bar=False,
                               parameters={"PROFILE": "smoke", "DEVICE": "cpu",
                                           "OUT_DIR": str(tmp_path / "rerun")})
    nb = nbformat.read(out, as_version=4)
    shown = "\n".join(str(o.get("data", {}).get("text/markdown", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    for e in _evidence():
        assert f"**{e['verdict']}**" in shown
    assert (tmp_path / "rerun" / "smoke" / "summary.csv").exists()

"""Lesson 08, the capstone: its structure, the pre-registration machinery it calls
(``evidence.freeze_plan``, ``frozen_plan``, ``claim_verdict``), and a real nbgrader course on it.

The course (as tests/test_nbgrader.py, whose helpers it uses) releases the lesson and autogrades
two submissions, each executed from top to bottom on the smoke profile: the instructor's notebook
gets full marks on both autograded exercises and leaves the write-up to be graded by hand; the
release version, unanswered, gets zero and still runs to its end. The instructor's run is also
where the executed lesson is checked: its plan fixed before the study, the verdict it printed.
"""
from __future__ import annotations

import ast
import json
import math
import shutil

import nbformat
import pytest

from conftest import REPO
from dynat_lite import evidence, study

LESSON = REPO / "notebooks" / "08_capstone.ipynb"
ASSIGNMENT = "capstone"
EXERCISES = ("preregistration", "claim_verdict")
WRITEUP = "writeup"
PLAN = {"claim": "With a guide pre-trained alone, DYNAT is more robust than PGD-AT",
        "metric": "pgd20", "comparison": ["dynat_guide_init", "pgd_at_gauss"],
        "prediction": "inconclusive", "reason": "A small study has wide intervals around noise."}


def _notebook():
    return nbformat.read(LESSON, as_version=4)


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


# --------------------------------------------------------------------------- structure (fast)
def test_structure_parameters_and_what_every_lesson_has():
    nb = _notebook()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "[![Open In Colab]" in nb.cells[0].source and nb.cells[0].source.startswith("# Lesson 08 ")
    assert "ENV = setup()" in code[0].source
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[1]
    params = {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(tagged[0].source).body}
    assert {"PROFILE", "DATASET", "DEVICE", "SEED", "OUT_DIR"} <= set(params)
    assert params["PROFILE"] == "smoke" and params["OUT_DIR"].startswith("../runs/")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for needed in ("arXiv:2408.13102", "**Prerequisites.**", "an estimate, not measured",
                   "**Think!**", "$$", "## Recap", "## What to try next", "**Rubric.**"):
        assert needed in text, needed


def test_two_autograded_exercises_and_a_write_up_graded_by_hand():
    cells = _notebook().cells
    graded = [(i, _nbgrader(c)) for i, c in enumerate(cells) if _nbgrader(c)]
    solutions = [(i, g["grade_id"]) for i, g in graded if g["solution"]]
    assert [name for _, name in solutions] == list(EXERCISES)
    for i, name in solutions:
        check = _nbgrader(cells[i + 1])
        assert check["grade"] and check["locked"] and check["points"] == 1
        assert cells[i + 1].source == f'exercises.check("{name}", {name})'
    tasks = [(i, g) for i, g in graded if g.get("task")]
    assert len(tasks) == 1
    i, task = tasks[0]
    assert task["grade_id"] == WRITEUP and task["points"] == 4 and cells[i].cell_type == "markdown"
    rubric = [line for line in cells[i].source.splitlines() if line.startswith("| 1 |")]
    assert len(rubric) == task["points"], "one rubric row per point"
    assert cells[i + 1].cell_type == "markdown" and not _nbgrader(cells[i + 1]), "room to write"


def test_the_plan_is_fixed_before_the_study_runs_and_judged_after():
    order = [c.get("id") for c in _notebook().cells]
    assert (order.index("ex-preregistration-check") < order.index("capstone-freeze")
            < order.index("capstone-run") < order.index("capstone-apply"))
    source = {c.get("id"): c.source for c in _notebook().cells}
    assert "evidence.freeze_plan(plan, OUT" in source["capstone-freeze"]
    assert "evidence.frozen_plan(OUT)" in source["capstone-apply"]
    assert "evidence.claim_verdict(rows, fixed)" in source["capstone-apply"]


def test_the_groups_and_metrics_are_the_checkers():
    """The notebook offers the strong-guide study's configurations and the study's two
    accuracies; exercise 8.1's check accepts exactly those."""
    from dynat_lite.exercises import lesson08

    strong = study.get("strong-guide")
    groups = {r.name.rsplit("-s", 1)[0] for r in strong.runs}
    assert set(lesson08.GROUPS) == groups and lesson08.METRICS == ("clean", "pgd20")
    menu = next(c.source for c in _notebook().cells if c.get("id") == "capstone-menu")
    assert 'METRICS = ("clean", "pgd20")' in menu and 'study.get("strong-guide")' in menu


# --------------------------------------------------------------- the pre-registration (fast)
def _finish(folder, run):
    (folder / run).mkdir(parents=True)
    (folder / run / study.FINAL).write_text("{}")


def test_a_plan_is_fixed_before_results_and_refused_after(tmp_path):
    assert evidence._FINISHED == f"*/{study.FINAL}"
    record = evidence.freeze_plan(PLAN, tmp_path)
    assert record["sha256"] == evidence.plan_fingerprint(PLAN)
    assert evidence.freeze_plan(dict(PLAN), tmp_path) == record, "the same plan again: fine"
    changed = {**PLAN, "metric": "clean"}
    assert evidence.freeze_plan(changed, tmp_path)["plan"] == changed, "no result yet: replaced"
    _finish(tmp_path, "dynat_guide_init-s0")
    with pytest.raises(evidence.PlanError, match="changed after its results"):
        evidence.freeze_plan(PLAN, tmp_path)
    assert evidence.frozen_plan(tmp_path) == changed


def test_a_plan_written_after_results_or_edited_is_refused(tmp_path):
    _finish(tmp_path, "pgd_at_gauss-s0")
    with pytest.raises(evidence.PlanError, match="have finished already"):
        evidence.freeze_plan(PLAN, tmp_path)
    other = tmp_path / "other"
    evidence.freeze_plan(PLAN, other)
    path = other / evidence.PLAN_FILE
    record = json.loads(path.read_text())
    record["plan"]["prediction"] = "supported"
    path.write_text(json.dumps(record))
    with pytest.raises(evidence.PlanError, match="edited after it was fixed"):
        evidence.frozen_plan(other)
    with pytest.raises(evidence.PlanError, match="No plan was fixed"):
        evidence.frozen_plan(tmp_path / "none")


def test_an_incomplete_plan_is_named_field_by_field(tmp_path):
    assert evidence.plan_problems(PLAN, ("clean", "pgd20"), ("dynat_guide_init", "pgd_at_gauss")) == []
    problems = evidence.plan_problems({**PLAN, "extra": 1, "comparison": ["dynat", "x"],
                                       "prediction": "yes"}, groups=("dynat", "pgd_at"))
    assert any("'extra' is not a field" in p for p in problems)
    assert any("['x']" in p for p in problems) and any("'prediction'" in p for p in problems)
    with pytest.raises(evidence.PlanError, match="'reason' is missing"):
        evidence.freeze_plan({k: v for k, v in PLAN.items() if k != "reason"}, tmp_path)
    assert not (tmp_path / evidence.PLAN_FILE).exists()


def _rows(right_a, right_b, n=200, seeds=2):
    """Summary rows of two groups, ``right_*`` images right per seed, ``n`` test images each."""
    return [{"run": f"{group}-s{s}", "pgd20": right / n, "n_test": n}
            for group, right in (("dynat_guide_init", right_a), ("pgd_at_gauss", right_b))
            for s in range(seeds)]


@pytest.mark.parametrize("right_a, right_b, verdict", [(90, 50, evidence.SUPPORTED),
                                                       (50, 90, evidence.NOT_SUPPORTED),
                                                       (60, 55, evidence.INCONCLUSIVE)])
def test_the_verdict_is_the_kits_rule_and_the_lessons_solution_agrees(right_a, right_b, verdict):
    rows = _rows(right_a, right_b)
    got = evidence.claim_verdict(rows, PLAN)
    c = evidence.compare_groups(rows, "dynat_guide_init", "pgd_at_gauss", "pgd20")
    assert got["verdict"] == verdict and math.isclose(got["low"], c["diff"] - c["margin"])
    assert f"**{verdict}**" in study.evidence_markdown([got])
    solution = next(c.source for c in _notebook().cells if c.get("id") == "ex-claim-verdict")
    namespace = {"math": math}
    exec(compile(solution, LESSON.name, "exec"), namespace)
    low, high, mine = namespace["claim_verdict"](2 * right_a, 400, 2 * right_b, 400)
    assert mine == verdict and math.isclose(low, got["low"]) and math.isclose(high, got["high"])


def test_counts_pool_the_seeds_and_agree_with_the_kit_on_single_precision_accuracies():
    """Studies store each accuracy as a float32 number: the counts round it back to whole
    images, and the interval from the counts is the kit's within the lesson's tolerance (1e-6),
    though not always to the last bit (130 and 164 of 1,000 right: 2e-9 apart)."""
    import torch

    rows = [{"run": f"{group}-s{s}", "pgd20": torch.tensor(right / 500).item(), "n_test": 500}
            for group, rights in (("dynat_guide_init", (59, 71)), ("pgd_at_gauss", (79, 85)))
            for s, right in enumerate(rights)]
    assert evidence.counts(rows, "dynat_guide_init", "pgd20") == (130, 1000)
    assert evidence.counts(rows, "pgd_at_gauss", "pgd20") == (164, 1000)
    assert evidence.counts(rows, "pgd_at", "pgd20") == (0, 0)
    # an attack measured on fewer images than the others counts its own
    fewer = [{**r, "aa_standard": 0.25, "aa_standard_n": 100} for r in rows]
    assert evidence.counts(fewer, "pgd_at_gauss", "aa_standard") == (50, 200)
    kit = evidence.claim_verdict(rows, PLAN)
    p, q = 0.130, 0.164
    low = p - q - evidence.difference_margin(p, q, 1000, 1000)
    assert math.isclose(low, kit["low"], abs_tol=1e-6)


# -------------------------------------------------------------- an nbgrader course (slow)
@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The lesson released and autograded: the instructor's notebook and the blank release."""
    pytest.importorskip("nbgrader")
    from test_nbgrader import nbgrader_cli

    root = tmp_path_factory.mktemp("capstone-course")
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(LESSON, root / "source" / ASSIGNMENT)
    (root / "nbgrader_config.py").write_text(f"""c = get_config()
c.CourseDirectory.root = {str(root)!r}
c.CourseDirectory.course_id = "dynat-lite"
c.CourseDirectory.db_url = "sqlite:///{root / 'gradebook.db'}"
c.CourseDirectory.db_students = [dict(id="solver"), dict(id="blank")]
c.Execute.timeout = 1800
from dynat_lite.nbgrader_stubs import configure
configure(c)
""")
    nbgrader_cli("generate_assignment", ASSIGNMENT, cwd=root)
    for sid, notebook in (("solver", root / "source" / ASSIGNMENT / LESSON.name),
                          ("blank", root / "release" / ASSIGNMENT / LESSON.name)):
        (root / "submitted" / sid / ASSIGNMENT).mkdir(parents=True)
        shutil.copy(notebook, root / "submitted" / sid / ASSIGNMENT)
    nbgrader_cli("autograde", ASSIGNMENT, cwd=root)
    return root


def _grades(course, student):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        nb = gb.find_submission_notebook(LESSON.stem, ASSIGNMENT, student)
        return {g.name: (g.auto_score, g.max_score, g.needs_manual_grade) for g in nb.grades}


def _autograded(course, student):
    return nbformat.read(course / "autograded" / student / ASSIGNMENT / LESSON.name, as_version=4)


def _shown(nb, cell_id) -> str:
    cell = next(c for c in nb.cells if c.get("id") == cell_id)
    return "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                   for o in cell.get("outputs", []))


@pytest.mark.slow
@pytest.mark.notebook
def test_the_solutions_get_full_marks_and_the_write_up_waits_for_a_grader(course):
    from test_nbgrader import errors

    grades = _grades(course, "solver")
    assert {f"check_{n}": (1.0, 1.0, False) for n in EXERCISES}.items() <= grades.items()
    assert grades[WRITEUP][1:] == (4.0, True), "graded by hand"
    nb = _autograded(course, "solver")
    assert errors(nb) == [], "the whole capstone runs cleanly with the solutions"
    # The run: the plan fixed in the study's folder before the runs, the verdicts agreeing.
    out = course / "autograded" / "solver" / "runs" / "lesson-08" / "smoke"
    plan = evidence.frozen_plan(out)
    rows = study.summarize(out)
    assert {r["run"] for r in rows} == {f"{g}-s0" for g in plan["comparison"]}
    assert "they agree" in _shown(nb, "capstone-apply")
    assert f"**{evidence.claim_verdict(rows, plan)['verdict']}**" in _shown(nb, "capstone-apply")
    assert "unchanged since" in _shown(nb, "capstone-facts")
    with pytest.raises(evidence.PlanError):  # the results are in: the plan cannot change now
        evidence.freeze_plan({**plan, "metric": "clean"}, out)


@pytest.mark.slow
@pytest.mark.notebook
def test_the_unanswered_release_gets_zero_and_runs_to_its_end(course):
    from test_nbgrader import errors

    grades = _grades(course, "blank")
    assert {f"check_{n}": (0.0, 1.0, False) for n in EXERCISES}.items() <= grades.items()
    nb = _autograded(course, "blank")
    found = {nb.cells[i].metadata.get("nbgrader", {}).get("grade_id"): o for i, o in errors(nb)}
    for name in EXERCISES:
        assert found[f"check_{name}"]["ename"] == "ExerciseError"
        assert f"{name} is not written yet" in found[f"check_{name}"]["evalue"]
    assert [c for c in nb.cells if c.cell_type == "code"][-1].get("execution_count")
    assert not (course / "autograded" / "blank" / "runs").exists(), "no plan, no study"

"""A real nbgrader course in a temporary directory, on real lessons.

Its own nbgrader_config.py (which calls ``dynat_lite.nbgrader_stubs.configure``, as the README
tells a course to) and SQLite gradebook; ``nbgrader generate_assignment`` makes the release
versions: of one lesson, and of every lesson in a second assignment. Their cells are those of
``make student``: the same scaffolded stubs and no Think! answer. ``nbgrader autograde`` then
executes two submissions of the one lesson from top to bottom (smoke profile, 16 test images
attacked) and grades them: the instructor's notebook, with the solutions, gets full marks; the
unanswered release version gets zero on every exercise, and the run does not crash. Nothing is
mocked: nbgrader's command line, its gradebook and a kernel running the lesson.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from dynat_lite import nbgrader_stubs as stubs

pytest.importorskip("nbgrader")
from nbgrader.api import Gradebook  # noqa: E402

#: The lesson graded, one with exercises (three) and a widget: autograding executes the whole
#: lesson (00, smoke profile: the standard model the kit ships for it, attacks, figures, the ε
#: slider).
LESSON = "00_threat_model"
ASSIGNMENT = "lesson00"
ALL = "all-lessons"  # every lesson, released only
STUDENTS = {"solver": "the instructor's notebook, solutions in place",
            "blank": "the release version, nothing answered"}
CELL_TIMEOUT = 1800  # seconds per cell: training on a loaded 2-core CPU

pytestmark = [pytest.mark.slow, pytest.mark.notebook, pytest.mark.timeout(5400)]


def _make_student():
    path = REPO / "tools" / "make_student.py"
    spec = importlib.util.spec_from_file_location("make_student", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nbgrader_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``nbgrader ARGS`` run from the course directory, with this environment's tools on PATH
    (nbgrader starts ``alembic`` to set up its database)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=5000)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def errors(nb) -> list[tuple[int, dict]]:
    return [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course directory with the lesson as its one assignment, generated and autograded."""
    root = tmp_path_factory.mktemp("course")
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / f"{LESSON}.ipynb", root / "source" / ASSIGNMENT)
    (root / "source" / ALL).mkdir()
    for lesson in _make_student().lessons():
        shutil.copy(lesson, root / "source" / ALL)
    students = ", ".join(f"dict(id={sid!r})" for sid in STUDENTS)
    (root / "nbgrader_config.py").write_text(f"""c = get_config()
c.CourseDirectory.root = {str(root)!r}
c.CourseDirectory.course_id = "dynat-lite"
c.CourseDirectory.db_url = "sqlite:///{root / 'gradebook.db'}"
c.CourseDirectory.db_students = [{students}]
c.Execute.timeout = {CELL_TIMEOUT}
from dynat_lite.nbgrader_stubs import configure
configure(c)
""")
    nbgrader_cli("generate_assignment", ASSIGNMENT, cwd=root)
    nbgrader_cli("generate_assignment", ALL, cwd=root)
    release = root / "release" / ASSIGNMENT / f"{LESSON}.ipynb"
    (root / "shared-runs").mkdir()
    for sid, notebook in (("solver", root / "source" / ASSIGNMENT / f"{LESSON}.ipynb"),
                          ("blank", release)):
        (root / "submitted" / sid / ASSIGNMENT).mkdir(parents=True)
        _submit(notebook, root / "submitted" / sid / ASSIGNMENT / notebook.name)
        # The lesson keeps trained models in ../runs/models (next to the assignment folder):
        # one folder for both submissions, so the second loads the model the first trained.
        (root / "autograded" / sid).mkdir(parents=True)
        (root / "autograded" / sid / "runs").symlink_to(root / "shared-runs",
                                                        target_is_directory=True)
    nbgrader_cli("autograde", ASSIGNMENT, cwd=root)
    return root


def _submit(notebook: Path, dest: Path) -> None:
    """A copy of ``notebook`` whose parameters cell (not a graded or locked cell) attacks 16 test
    images instead of the profile's 64, as a student may set it: the grading is checked here;
    lesson 00 at its own size runs in tests/test_notebooks.py."""
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "N_EVAL = None" in cell.source and "nbgrader" not in cell.metadata
    cell.source = cell.source.replace("N_EVAL = None", "N_EVAL = 16")
    nbformat.write(nb, dest)


def grades(course: Path, student: str):
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        nb = gb.find_submission_notebook(LESSON, ASSIGNMENT, student)
        return nb.score, nb.max_score, {g.name: (g.auto_score, g.max_score) for g in nb.grades}


def autograded(course: Path, student: str):
    return nbformat.read(course / "autograded" / student / ASSIGNMENT / f"{LESSON}.ipynb",
                         as_version=4)


def exercise_names() -> list[str]:
    nb = nbformat.read(REPO / "notebooks" / f"{LESSON}.ipynb", as_version=4)
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("solution")]


def test_the_release_version_is_the_student_version(course):
    """nbgrader's release and `make student` clear the same solutions the same way."""
    release = nbformat.read(course / "release" / ASSIGNMENT / f"{LESSON}.ipynb", as_version=4)
    student = nbformat.read(REPO / "notebooks" / "student" / f"{LESSON}.ipynb", as_version=4)
    solutions = [[c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
                 for nb in (release, student)]
    assert solutions[0] == solutions[1] and len(solutions[0]) == len(exercise_names()) > 0
    assert all("BEGIN SOLUTION" not in s for s in solutions[0])


def test_every_release_has_the_scaffolded_stubs_and_no_think_answer(course):
    """Lesson by lesson, every cell of nbgrader's release is the cell `make student` clears
    (before it moves the copy to notebooks/student/): the scaffolded exercises, the answers
    replaced by the note."""
    make_student = _make_student()
    blanks = notes = 0
    for lesson in make_student.lessons():
        release = nbformat.read(course / "release" / ALL / lesson.name, as_version=4)
        cleared = make_student.cleared(nbformat.read(lesson, as_version=4))
        assert [(c.get("id"), c.cell_type, c.source) for c in release.cells] == [
            (c.get("id"), c.cell_type, c.source) for c in cleared.cells], lesson.name
        text = "\n".join(c.source for c in release.cells)
        assert "BEGIN SOLUTION" not in text and not stubs.answer_blocks(text), lesson.name
        blanks += text.count(f" = {stubs.BLANK}")
        notes += text.count(stubs.ANSWER_NOTE)
    assert blanks > 0 and notes > 0


def test_the_solutions_get_full_marks(course):
    score, max_score, by_cell = grades(course, "solver")
    assert set(by_cell) == {f"check_{name}" for name in exercise_names()}
    assert score == max_score == len(by_cell)
    assert all(auto == full for auto, full in by_cell.values())
    nb = autograded(course, "solver")
    assert errors(nb) == [], "the whole lesson runs cleanly with the solutions"
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_the_unanswered_version_gets_zero_on_every_exercise_without_a_crash(course):
    score, max_score, by_cell = grades(course, "blank")
    assert set(by_cell) == {f"check_{name}" for name in exercise_names()}
    assert score == 0 and max_score == len(by_cell)
    assert all(auto == 0 for auto, _ in by_cell.values())
    nb = autograded(course, "blank")
    found = {nb.cells[i].metadata.get("nbgrader", {}).get("grade_id"): o for i, o in errors(nb)}
    for name in exercise_names():
        error = found[f"check_{name}"]
        assert error["ename"] == "ExerciseError"
        assert f"{name} is not written yet" in error["evalue"]
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert last.get("execution_count"), "autograding ran the lesson to its end"

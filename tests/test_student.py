"""The student versions in notebooks/student/: generated from the lessons by nbgrader's
preprocessors (tools/make_student.py, `make student`), committed, and never out of date; each
instructor solution passes its check; a student version run top to bottom stops at the first
unanswered exercise with that exercise's message."""
from __future__ import annotations

import ast
import importlib.util

import nbformat
import pytest

from conftest import REPO
from dynat_lite import exercises

LESSONS = REPO / "notebooks"
STUDENT = LESSONS / "student"


def _load_make_student():
    path = REPO / "tools" / "make_student.py"
    spec = importlib.util.spec_from_file_location("make_student", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_student = _load_make_student()
LESSON_PATHS = make_student.lessons()


def nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def solution_cells(nb) -> list:
    return [c for c in nb.cells if nbgrader(c).get("solution") and c.cell_type == "code"]


def with_exercises() -> list:
    return [p for p in LESSON_PATHS if solution_cells(nbformat.read(p, as_version=4))]


# ------------------------------------------------------------------------------ fast checks
def test_student_versions_are_up_to_date():
    """Regenerated in a temporary folder, every student version matches the committed one."""
    problems = make_student.stale(STUDENT)
    assert not problems, "out of date (run `make student`): " + "; ".join(problems)


def test_stale_notices_a_changed_lesson(tmp_path):
    make_student.write_all(tmp_path)
    assert make_student.stale(tmp_path) == []
    victim = tmp_path / LESSON_PATHS[0].name
    nb = nbformat.read(victim, as_version=4)
    nb.cells[-1].source += "\n# edited by hand"
    nbformat.write(nb, victim)
    (tmp_path / "99_gone.ipynb").write_text(victim.read_text())
    problems = make_student.stale(tmp_path)
    assert f"{victim.name}: differs from its lesson" in problems
    assert "99_gone.ipynb: no such lesson" in problems


@pytest.mark.parametrize("lesson", LESSON_PATHS, ids=lambda p: p.stem)
def test_student_version_clears_solutions_and_keeps_everything_else(lesson):
    teacher = nbformat.read(lesson, as_version=4)
    student = make_student.student_version(lesson)
    repo = make_student.repository_url()
    teacher_url = make_student.colab_url(repo, lesson.name)
    student_url = make_student.colab_url(repo, f"student/{lesson.name}")
    assert student.metadata == teacher.metadata
    assert len(student.cells) == len(teacher.cells)
    for t, s in zip(teacher.cells, student.cells):
        assert (s.get("id"), s.cell_type) == (t.get("id"), t.cell_type)
        kept = {k: v for k, v in s.metadata.items() if k not in ("deletable", "editable")}
        assert kept == dict(t.metadata)
        if nbgrader(t).get("solution"):
            assert "BEGIN SOLUTION" in t.source and "BEGIN SOLUTION" not in s.source
            assert make_student.CODE_STUB in s.source
            head = t.source.split("### BEGIN SOLUTION")[0]
            assert s.source.startswith(head), "the signature and docstring stay"
            assert s.metadata.get("deletable") is False
        elif nbgrader(t).get("grade"):
            assert s.source == t.source and s.metadata.get("editable") is False
        elif t.cell_type == "code":
            assert s.source == make_student.deepen_relative_paths(t.source)
            assert not s.get("outputs") and s.get("execution_count") is None
        else:  # markdown: only the Colab badge changes, to open the student version
            assert s.source.replace(student_url, teacher_url) == t.source
    tagged = [c for c in student.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = {stmt.targets[0].id: ast.literal_eval(stmt.value)
              for stmt in ast.parse(tagged[0].source).body}  # still literals only
    badge = f"/blob/main/notebooks/student/{lesson.name})"
    assert badge in student.cells[0].source
    for name, value in params.items():
        if isinstance(value, str) and value.startswith("../"):
            assert value.startswith("../../"), "paths point at the same runs/ and data/ folders"


def test_relative_paths_gain_one_level():
    deepen = make_student.deepen_relative_paths
    assert deepen('OUT = "../runs/x"  # "../" too') == 'OUT = "../../runs/x"  # "../../" too'
    assert deepen("root='../data'") == "root='../../data'"
    assert deepen('x = "a/../b"; y = "./c"') == 'x = "a/../b"; y = "./c"'


@pytest.mark.skipif(not with_exercises(), reason="no lesson has exercise cells yet")
def test_every_exercise_cell_follows_the_convention():
    """One function per solution cell, named as its grade_id, then a check cell calling it;
    every exercise of exercises.NAMES appears at most once over all lessons."""
    seen = []
    for path in with_exercises():
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if not nbgrader(cell).get("solution"):
                continue
            name = nbgrader(cell)["grade_id"]
            assert name in exercises.NAMES, f"{path.name}: unknown exercise {name}"
            defs = [n.name for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef)]
            assert defs == [name], f"{path.name}: the cell must define exactly {name}"
            check = nb.cells[i + 1]
            assert nbgrader(check) | {"points": 1} == {
                "grade": True, "grade_id": f"check_{name}", "locked": True, "points": 1,
                "schema_version": 3, "solution": False, "task": False}
            assert check.source.strip() == f'exercises.check("{name}", {name})'
            seen.append(name)
    assert len(seen) == len(set(seen))


@pytest.mark.skipif(not with_exercises(), reason="no lesson has exercise cells yet")
@pytest.mark.parametrize("lesson", with_exercises(), ids=lambda p: p.stem)
def test_instructor_solutions_pass_their_checks(lesson, capsys):
    """Each solution cell, run with the lesson's imports, passes exercises.check."""
    nb = nbformat.read(lesson, as_version=4)
    namespace: dict = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # a cell with IPython magics (the set-up cell)
            continue
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(imports, type_ignores=[]), lesson.name, "exec"), namespace)
    for cell in solution_cells(nb):
        exec(compile(cell.source, lesson.name, "exec"), namespace)
        name = nbgrader(cell)["grade_id"]
        exercises.check(name, namespace[name])
        assert capsys.readouterr().out.startswith(f"✓ {name}: ")


# ------------------------------------------------------------------------- a student's run
def _cheapest_student_lesson():
    """The lesson with exercises whose first exercise comes after the fewest code cells."""
    def cost(path):
        cells = nbformat.read(path, as_version=4).cells
        first = next(i for i, c in enumerate(cells) if nbgrader(c).get("solution"))
        return sum(c.cell_type == "code" for c in cells[:first])
    return min(with_exercises(), key=cost)


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not with_exercises(), reason="no lesson has exercise cells yet")
def test_a_student_run_stops_at_the_first_exercise_with_its_message(tmp_path):
    papermill = pytest.importorskip("papermill")
    lesson = _cheapest_student_lesson()
    student = STUDENT / lesson.name
    assert student.exists(), "run `make student`"
    output = tmp_path / lesson.name
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(
            str(student), str(output), cwd=str(STUDENT), kernel_name="python3",
            parameters=dict(PROFILE="smoke", DEVICE="cpu", SEED=0, OUT_DIR=str(tmp_path / "out"),
                            MODELS_DIR=str(tmp_path / "models")),
            execution_timeout=1500, engine_name="dynat", progress_bar=False)
    error = info.value
    nb = nbformat.read(output, as_version=4)
    first = next(c for c in nb.cells if nbgrader(c).get("solution"))
    name = nbgrader(first)["grade_id"]
    assert error.ename == "ExerciseError"
    assert f"{name} is not written yet" in error.evalue and exercises.TASKS[name] in error.evalue
    trace = "\n".join(error.traceback)
    assert "NotImplementedError" not in trace.replace("`raise NotImplementedError(...)`", "")
    assert "During handling" not in trace and "_check_" not in trace  # no library internals
    failed = [i for i, c in enumerate(nb.cells)
              if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    check_cell = nb.cells[failed[0]]
    assert failed == [failed[0]] and nbgrader(check_cell).get("grade_id") == f"check_{name}"
    later = [c for c in nb.cells[failed[0] + 1:] if c.cell_type == "code"]
    assert all(c.get("execution_count") is None for c in later), "the run stopped there"

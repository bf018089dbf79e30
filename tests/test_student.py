"""The student versions in notebooks/student/: generated from the lessons by nbgrader's
preprocessors and the kit's own (tools/make_student.py, `make student`), committed, and never out
of date. Each exercise is a scaffolded stub (signature, docstring with shapes and dtypes, the
lesson's skeleton, blanks `name = ...` where a solution region was one assignment) without any
solution text, and filling its blanks with the instructor's regions gives the instructor's
function back; no Think! answer reaches a student version; each instructor solution passes its
check; a student version run top to bottom stops at the first unanswered exercise with that
exercise's message."""
from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import re

import nbformat
import pytest

from conftest import REPO
from dynat_lite import exercises
from dynat_lite import nbgrader_stubs as stubs

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


@functools.cache
def _student_version(path):
    """make_student.student_version, once per lesson (the tests only read it)."""
    return make_student.student_version(path)


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


def test_check_option_reports_stale_versions(tmp_path, capsys):
    """`make_student.py --check` exits 0 on fresh versions, 1 (naming it) on a stale one."""
    make_student.write_all(tmp_path)
    assert make_student.main(["--check", "--out", str(tmp_path)]) == 0
    victim = tmp_path / LESSON_PATHS[0].name
    nb = nbformat.read(victim, as_version=4)
    nb.cells[0].source += "\nedited"
    nbformat.write(nb, victim)
    capsys.readouterr()
    assert make_student.main(["--check", "--out", str(tmp_path)]) == 1
    assert f"{victim.name}: differs from its lesson" in capsys.readouterr().out


# ------------------------------------------------------------------- scaffolded exercises
def _without_markers(source: str) -> str:
    """The instructor's cell as a student who filled every blank right would have it."""
    return "\n".join(line for line in source.split("\n")
                     if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)


def _body(source: str) -> list[str]:
    """The lines of the function defined in ``source`` after its docstring, stripped."""
    function = ast.parse(source).body[0]
    body = function.body[1:] if ast.get_docstring(function) else function.body
    lines = source.split("\n")[body[0].lineno - 1:] if body else []
    return [line.strip() for line in lines if line.strip()]


def _refill(student: str, regions: list[list[str]]) -> str:
    """The student version's stubs (blanks and raise lines), in order, replaced by ``regions``."""
    out, todo = [], list(regions)
    for line in student.split("\n"):
        stripped = line.strip()
        if stripped.endswith(f"= {stubs.BLANK}") or stripped == stubs.CODE_STUB:
            out += todo.pop(0)
        else:
            out.append(line)
    assert not todo, "a region has no stub in the student version"
    return "\n".join(out)


def _exercise_cells():
    """(lesson name, instructor solution cell, student solution cell) of every exercise."""
    for path in with_exercises():
        student = {c.get("id"): c for c in _student_version(path).cells}
        for cell in solution_cells(nbformat.read(path, as_version=4)):
            yield path.name, cell, student[cell.get("id")]


@pytest.mark.skipif(not with_exercises(), reason="no lesson has exercise cells yet")
def test_student_exercises_are_scaffolded_stubs_without_solution_text():
    """Blanks `name = ...` where a region was one assignment, the raise stub only where the
    whole body is one line, and no line of a solution left in the student version."""
    for lesson, teacher, student in _exercise_cells():
        where = f"{lesson} {nbgrader(teacher)['grade_id']}"
        regions = stubs.solution_regions(teacher.source)
        lines = [line.strip() for line in student.source.split("\n")]
        outside = {line.strip() for line in stubs.scaffold(teacher.source, "")[0].split("\n")}
        for line in (line.strip() for region in regions for line in region if line.strip()):
            assert line in outside or line not in lines, f"{where}: solution text {line!r}"
        blanks = [stubs.assigned_name(r) for r in regions if stubs.assigned_name(r)]
        assert [line.split(" = ")[0] for line in lines
                if line.endswith(f" = {stubs.BLANK}")] == blanks, where
        assert lines.count(stubs.CODE_STUB) == len(regions) - len(blanks), where
        if _body(student.source) == [stubs.CODE_STUB]:  # only a raise: a one-line function
            assert len(_body(_without_markers(teacher.source))) == 1, (
                f"{where}: keep the skeleton outside the markers, blanks inside")


@pytest.mark.skipif(not with_exercises(), reason="no lesson has exercise cells yet")
def test_every_exercise_docstring_gives_every_argument_with_shapes_and_dtypes():
    for lesson, _, student in _exercise_cells():
        function = ast.parse(student.source).body[0]
        doc = ast.get_docstring(function) or ""
        where = f"{lesson} {function.name}"
        for arg in function.args.args:
            assert re.search(rf"\b{arg.arg}\b[^\n]*:", doc), f"{where}: describe {arg.arg}"
        assert "Returns" in doc, f"{where}: describe the result"
        assert re.search(r"\b(tensor|float|int|bool)\b", doc), f"{where}: name the dtypes"
        tensors = re.search(r"\b(float|int64|bool)\w* tensor", doc)
        assert not tensors or re.search(r"\(N\b|shape|scalar", doc), (
            f"{where}: give the tensors' shapes")


@pytest.mark.skipif(not with_exercises(), reason="no lesson has exercise cells yet")
def test_filling_the_blanks_with_the_solutions_gives_the_instructor_function():
    """Property: each stub of the student version replaced by its region's lines is the
    instructor's cell without its markers, so a student who fills every blank right has it."""
    for lesson, teacher, student in _exercise_cells():
        regions = stubs.solution_regions(teacher.source)
        assert regions, f"{lesson}: a solution cell without a region"
        refilled = _refill(student.source, regions)
        assert refilled == _without_markers(teacher.source), lesson
        compile(refilled, lesson, "exec")


def test_scaffold_blanks_one_assignment_and_stubs_anything_else():
    source = "\n".join([
        "def f(x):",
        "    '''Doc.'''",
        "    ### BEGIN SOLUTION",
        "    y = x + 1  # a comment",
        "    ### END SOLUTION",
        "    for _ in range(2):",
        "        ### BEGIN SOLUTION",
        "        a, = [x]",                       # not a simple name: a raise stub
        "        ### END SOLUTION",
        "    ### BEGIN SOLUTION",
        "    z = y",
        "    return z",                           # two lines: a raise stub
        "    ### END SOLUTION",
    ])
    expected = "\n".join([
        "def f(x):", "    '''Doc.'''", f"    y = {stubs.BLANK}", "    for _ in range(2):",
        f"        {stubs.CODE_STUB}", f"    {stubs.CODE_STUB}"])
    assert stubs.scaffold(source) == (expected, True)
    assert stubs.scaffold("x = 1") == ("x = 1", False)
    for one in ("total = (a +\n b)", "x = y = 1", "x += 1", "x: int = 1", "f(x)", "x == 1"):
        assert stubs.assigned_name(one.split("\n")) is None, one
    nested = "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION"
    for bad in ("### BEGIN SOLUTION\nx = 1", nested, "x = 1\n### END SOLUTION"):
        with pytest.raises(RuntimeError):
            stubs.scaffold(bad)


def test_scaffold_agrees_with_nbgrader_where_no_region_is_one_assignment():
    """ScaffoldSolutions differs from nbgrader's ClearSolutions only on one-assignment regions."""
    from nbgrader.preprocessors import ClearSolutions

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"language": "python", "name": "python3",
                                                           "display_name": "Python 3"}})
    meta = {"nbgrader": {"solution": True, "grade": False, "grade_id": "f", "locked": False,
                         "schema_version": 3, "task": False}}
    sources = ["def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION",
               "def g(x):\n    ### BEGIN SOLUTION\n    y = x\n    ### END SOLUTION\n    return y"]
    nb.cells = [nbformat.v4.new_code_cell(s, metadata=meta) for s in sources]
    ours = stubs.ScaffoldSolutions(config=make_student.nbgrader_config()).preprocess(copy.deepcopy(nb), {})[0]
    theirs = ClearSolutions(code_stub={"python": stubs.CODE_STUB}).preprocess(
        copy.deepcopy(nb), {})[0]
    assert ours.cells[0].source == theirs.cells[0].source
    assert theirs.cells[1].source == f"def g(x):\n    {stubs.CODE_STUB}\n    return y"
    assert ours.cells[1].source == f"def g(x):\n    y = {stubs.BLANK}\n    return y"


# -------------------------------------------------------------------------- Think! answers
def test_think_answers_are_tagged_and_never_reach_a_student_version():
    """Every answer block sits in a cell tagged `answer`, every such cell has one, and the
    student version keeps the question but none of the answer's text."""
    answers = 0
    for path in LESSON_PATHS:
        teacher = nbformat.read(path, as_version=4)
        student = {c.get("id"): c for c in _student_version(path).cells}
        for cell in teacher.cells:
            where = f"{path.name} cell {cell.get('id')}"
            blocks = stubs.answer_blocks(cell.source) if cell.cell_type == "markdown" else []
            assert bool(blocks) == stubs.is_answer_cell(cell), (
                f"{where}: tag the cell {stubs.ANSWER_TAG!r} and write its answer as "
                f"<details><summary>Answer</summary> ... </details> (tools/make_student.py)")
            shown = student[cell.get("id")].source
            for block in blocks:
                answers += 1
                body = block.split("</summary>", 1)[1].replace("</details>", "")
                for line in filter(None, (line.strip() for line in body.split("\n"))):
                    assert line not in shown, f"{where}: the answer shows: {line}"
            if blocks:
                assert shown.count(stubs.ANSWER_NOTE) == len(blocks), where
                assert "**Think!**" not in cell.source or "**Think!**" in shown, where
            assert not re.search(r"<summary[^>]*>[^<]*(answer|solution)", shown, re.IGNORECASE), where
            assert not re.search(r"^\W*answer\b", shown, re.IGNORECASE | re.MULTILINE), f"{where}: an answer?"
    assert answers > 0


def test_answer_marking_variants_and_a_tagged_cell_without_a_block_fails_the_build():
    question = "**Think!** Why?\n\n"
    for block in ("<details><summary>Answer (click to open)</summary>\n\nBecause.\n\n</details>",
                  "<details open>\n<summary><b>Answer</b></summary>\nBecause.\n</details >"):
        assert stubs.remove_answers(question + block + "\n\nMore prose.") == (
            question + stubs.ANSWER_NOTE + "\n\nMore prose.")
    hint = question + "<details><summary>Hint</summary>\nLook at step 2.\n</details>"
    assert stubs.remove_answers(hint) == hint, "hints stay"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"language": "python", "name": "python3",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_markdown_cell(question + "**Answer:** because.",
                                              metadata={"tags": [stubs.ANSWER_TAG]})]
    with pytest.raises(ValueError, match="tagged 'answer' but holds no"):
        make_student.cleared(nb)


@pytest.mark.parametrize("lesson", LESSON_PATHS, ids=lambda p: p.stem)
def test_student_version_clears_solutions_and_answers_and_keeps_everything_else(lesson):
    teacher = nbformat.read(lesson, as_version=4)
    student = _student_version(lesson)
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
            assert s.source == make_student.deepen_relative_paths(stubs.scaffold(t.source)[0])
            head = t.source.split("### BEGIN SOLUTION")[0]
            assert s.source.startswith(head), "the signature and docstring stay"
            assert s.metadata.get("deletable") is False
        elif nbgrader(t).get("grade"):
            assert s.source == t.source and s.metadata.get("editable") is False
        elif t.cell_type == "code":
            assert s.source == make_student.deepen_relative_paths(t.source)
            assert not s.get("outputs") and s.get("execution_count") is None
        else:  # markdown: the Colab badge opens the student version; the answers are gone;
            # links to the project's files gain a ../
            assert s.source.replace(student_url, teacher_url) == (
                make_student.deepen_relative_links(stubs.remove_answers(t.source)))
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
    links = make_student.deepen_relative_links
    assert links("[Madry](../REFERENCES.md#madry2018), [g](../GLOSSARY.md)") == (
        "[Madry](../../REFERENCES.md#madry2018), [g](../../GLOSSARY.md)")
    assert links("[x](https://a/../b) and ../c") == "[x](https://a/../b) and ../c"


def test_a_student_versions_links_to_project_files_resolve():
    for lesson in make_student.lessons():
        student = make_student.STUDENT / lesson.name
        text = "\n".join(c.source for c in nbformat.read(student, as_version=4).cells
                         if c.cell_type == "markdown")
        for target in re.findall(r"\]\((\.\./[^)#\s]+)", text):
            assert (student.parent / target).resolve().exists(), (lesson.name, target)


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

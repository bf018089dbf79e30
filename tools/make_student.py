"""Write the student versions of the lessons: notebooks/student/NN_*.ipynb.

The instructor notebooks in ``notebooks/`` are the single source. The student version is made
by nbgrader's preprocessors, in the order ``nbgrader generate_assignment`` runs them, with two
of the kit's own (``dynat_lite/nbgrader_stubs.py``, which a course's ``nbgrader_config.py`` names
too, so that its release versions are these):

* ``LockCells``: the check cells become read-only and undeletable;
* ``ScaffoldSolutions`` (nbgrader's ``ClearSolutions``, scaffolded): each solution region is
  cleared. A region that is exactly one assignment line ``name = expression`` becomes
  ``name = ...  # YOUR CODE`` at the same indentation; any other region becomes
  ``raise NotImplementedError("Exercise: ...")`` (``exercises.check`` turns either into "not
  written yet" and the task). Everything outside the regions stays: the signature, the
  docstring, and the skeleton that is the lesson;
* ``ClearAnswers``: each Think! answer is replaced by a line asking the students to discuss it;
* ``ClearOutput``, ``ClearHiddenTests``, ``ClearMarkScheme``, and ``CheckCellMetadata``, which
  rejects malformed nbgrader metadata.

How to write an exercise: a solution cell (nbgrader metadata ``solution: true``) keeps the
function's signature and a docstring with every argument and the return value (shape and dtype)
outside the markers; each blank is its own ``### BEGIN SOLUTION`` / ``### END SOLUTION`` region,
preferably one assignment line.

How to mark a Think! answer, which students must not see: in a markdown cell tagged ``answer``
(cell metadata ``"tags": ["answer"]``; in JupyterLab, the property inspector's cell tags), as a
block

    <details><summary>Answer (click to open)</summary>

    The answer.

    </details>

The question stays above it. Any such block is removed, tagged or not, but a cell tagged
``answer`` without such a block stops this script (its answer would be handed out), and
``tests/test_student.py`` fails on a lesson with an untagged answer block or with an answer that
the student version still shows.

Everything else is kept: every cell's id and metadata (the ``parameters`` tag included) and the
notebook's metadata. Two things follow from where the copy lives: its *Open in Colab* badge opens
the student version, and relative paths in code (``"../runs"``, ``"../data"``) gain one ``../``,
so a student version in notebooks/student/ writes to and reads from the same runs/ and data/
folders as its lesson; links to the project's files in Markdown (``](../REFERENCES.md)``) gain it
too.

    python tools/make_student.py              # write notebooks/student/ (make student)
    python tools/make_student.py --out DIR    # write somewhere else
    python tools/make_student.py --check      # exit 1, listing them, if any is out of date
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import nbformat
from nbgrader.preprocessors import (CheckCellMetadata, ClearHiddenTests, ClearMarkScheme,
                                    ClearOutput, LockCells)
from traitlets.config import Config

from dynat_lite.nbgrader_stubs import ClearAnswers, ScaffoldSolutions, configure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colab_badges import colab_url, repository_url, rewrite  # noqa: E402,F401 (a sibling)

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "notebooks"
STUDENT = LESSONS / "student"
SUBDIR = "student"

#: generate_assignment's preprocessors (as nbgrader_stubs.configure sets them), in its order, less
#: those that need a course: header and footer, test instantiation, checksums, the gradebook.
PREPROCESSORS = (LockCells, ScaffoldSolutions, ClearAnswers, ClearOutput, ClearHiddenTests,
                 ClearMarkScheme, CheckCellMetadata)

# A string literal that starts with "../" (either quote): a path relative to notebooks/.
_RELATIVE = re.compile(r"""(?<![\w.])(["'])\.\./""")


def lessons() -> list[Path]:
    return sorted(LESSONS.glob("[0-9]*.ipynb"))


def nbgrader_config() -> Config:
    """The configuration a course gets from ``nbgrader_stubs.configure``."""
    config = Config()
    configure(config)
    return config


def deepen_relative_paths(source: str) -> str:
    """``"../runs"`` -> ``"../../runs"``: the student version sits one folder deeper."""
    return _RELATIVE.sub(lambda m: m.group(1) + "../../", source)


# A Markdown link or image target that starts with "../": a file of the project.
_RELATIVE_LINK = re.compile(r"\]\(\.\./")


def deepen_relative_links(source: str) -> str:
    """``[refs](../REFERENCES.md)`` -> ``[refs](../../REFERENCES.md)``, for the same reason."""
    return _RELATIVE_LINK.sub("](../../", source)


def cleared(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` run through the preprocessors: the cells nbgrader's release version has too."""
    config, resources = nbgrader_config(), {}
    for preprocessor in PREPROCESSORS:
        nb, resources = preprocessor(config=config).preprocess(nb, resources)
    return nb


def student_version(path: Path) -> nbformat.NotebookNode:
    """The student version of the lesson at ``path`` (nothing is written)."""
    nb = cleared(nbformat.read(path, as_version=4))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = deepen_relative_paths(cell.source)
        elif cell.cell_type == "markdown":
            cell.source = deepen_relative_links(cell.source)
    text = rewrite(nbformat.writes(nb), repository_url(), f"{SUBDIR}/{path.name}")
    return nbformat.reads(text, as_version=4)


def write_all(out: Path = STUDENT) -> list[Path]:
    """Write the student version of every lesson into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for lesson in lessons():
        nb = student_version(lesson)
        nbformat.validate(nb)
        nbformat.write(nb, out / lesson.name)
        written.append(out / lesson.name)
    return written


def stale(out: Path = STUDENT) -> list[str]:
    """The student versions in ``out`` that are missing or differ (cell by cell: type, source,
    metadata) from what this script writes now; [] when all are up to date."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: nbformat.read(p, as_version=4) for p in write_all(Path(tmp))}
    problems = []
    for name, nb in fresh.items():
        path = out / name
        if not path.exists():
            problems.append(f"{name}: missing")
            continue
        old = nbformat.read(path, as_version=4)
        if _cells(old) != _cells(nb):
            problems.append(f"{name}: differs from its lesson")
    extra = sorted(p.name for p in out.glob("*.ipynb") if p.name not in fresh)
    problems += [f"{name}: no such lesson" for name in extra]
    return problems


def _cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STUDENT, help="default: notebooks/student/")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a student version is out of date")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.out)
        for line in problems:
            print(line)
        if problems:
            print("run `make student` to regenerate the student versions")
        return 1 if problems else 0
    for path in write_all(args.out):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

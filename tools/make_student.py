"""Write the student versions of the lessons: notebooks/student/NN_*.ipynb.

The instructor notebooks in ``notebooks/`` are the single source. In them each exercise's
solution sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a cell that nbgrader's
metadata marks as a solution cell; the next cell, a locked grade cell, calls
``exercises.check``. The student version is made by nbgrader's own preprocessors, in the order
``nbgrader generate_assignment`` runs them:

* ``LockCells``: the check cells become read-only and undeletable;
* ``ClearSolutions``: each solution region becomes ``raise NotImplementedError("Exercise: ...")``
  (``exercises.check`` turns that into "not written yet" and the task);
* ``ClearOutput``, ``ClearHiddenTests``, ``ClearMarkScheme``, and ``CheckCellMetadata``, which
  rejects malformed nbgrader metadata.

Everything else is kept: every cell's id and metadata (the ``parameters`` tag included) and the
notebook's metadata. Two things follow from where the copy lives: its *Open in Colab* badge opens
the student version, and relative paths in code (``"../runs"``, ``"../data"``) gain one ``../``,
so a student version in notebooks/student/ writes to and reads from the same runs/ and data/
folders as its lesson.

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
                                    ClearOutput, ClearSolutions, LockCells)
from traitlets.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colab_badges import colab_url, repository_url, rewrite  # noqa: E402,F401 (a sibling)

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "notebooks"
STUDENT = LESSONS / "student"
SUBDIR = "student"

#: What a cleared solution region becomes (one line, indented like the region it replaces).
CODE_STUB = ('raise NotImplementedError("Exercise: write this function, run this cell, then the '
             'check below")')

#: nbgrader's preprocessors, in generate_assignment's order.
PREPROCESSORS = (LockCells, ClearSolutions, ClearOutput, ClearHiddenTests, ClearMarkScheme,
                 CheckCellMetadata)

# A string literal that starts with "../" (either quote): a path relative to notebooks/.
_RELATIVE = re.compile(r"""(?<![\w.])(["'])\.\./""")


def lessons() -> list[Path]:
    return sorted(LESSONS.glob("[0-9]*.ipynb"))


def nbgrader_config() -> Config:
    config = Config()
    config.ClearSolutions.code_stub = {"python": CODE_STUB}
    return config


def deepen_relative_paths(source: str) -> str:
    """``"../runs"`` -> ``"../../runs"``: the student version sits one folder deeper."""
    return _RELATIVE.sub(lambda m: m.group(1) + "../../", source)


def student_version(path: Path) -> nbformat.NotebookNode:
    """The student version of the lesson at ``path`` (nothing is written)."""
    nb = nbformat.read(path, as_version=4)
    config, resources = nbgrader_config(), {}
    for preprocessor in PREPROCESSORS:
        nb, resources = preprocessor(config=config).preprocess(nb, resources)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = deepen_relative_paths(cell.source)
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

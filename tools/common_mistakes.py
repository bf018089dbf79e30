"""Print docs/common_mistakes.md: every exercise's plausible mistakes and the exact message its
check gives each, produced by running ``exercises.check`` on the mistakes of
tests/mistake_support.py (the ones the tests assert).

    python tools/common_mistakes.py            # print the page
    python tools/common_mistakes.py --write    # write docs/common_mistakes.md
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "common_mistakes.md"
sys.path.insert(0, str(ROOT / "tests"))

from dynat_lite import exercises  # noqa: E402

INTRO = """# Common mistakes in the exercises

Each lesson's exercises are checked by `dynat_lite.exercises.check`. Below, for every exercise,
plausible wrong answers and the message the check gives each: the first property that failed,
in the exercise's terms, with a hint. The messages are the checker's own, produced by running it
on these mistakes (`python tools/common_mistakes.py --write` regenerates this page from
`tests/mistake_support.py`; a test fails when the page is out of date).

A function that still holds a blank of the student version (a line `name = ...`) or its
`raise NotImplementedError(...)` gets "not written yet" and the task instead.
"""


def lesson_of(name: str) -> str | None:
    """The lesson whose solution cell defines exercise ``name`` (its nbgrader grade_id)."""
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == name:
                return path.stem
    return None


def message_of(mistake) -> str:
    """The message ``exercises.check`` gives ``mistake`` (it must reject it)."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            exercises.check(mistake.name, mistake.fn)
        except exercises.ExerciseError as error:
            return str(error)
    raise AssertionError(f"{mistake.name}: the check accepted {mistake.description!r}")


def _cell(text: str) -> str:
    """``text`` as a table cell: a code span (no markup inside), pipes escaped."""
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def row(mistake, message: str) -> str:
    return f"| {mistake.description.replace('|', '/')} | {_cell(message)} |"


def page(messages: dict | None = None) -> str:
    """The page; ``messages``: the message of each mistake (by index), computed if None."""
    from mistake_support import MISTAKES

    lines = [INTRO]
    for name in exercises.NAMES:
        lesson = lesson_of(name)
        lines += ["", f"## `{name}`" + (f" (lesson {lesson})" if lesson else ""), "",
                  exercises.TASKS[name] + ".", "", "| mistake | what the check says |",
                  "|---|---|"]
        for i, mistake in enumerate(MISTAKES):
            if mistake.name == name:
                message = messages[i] if messages is not None else message_of(mistake)
                lines.append(row(mistake, message))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOC.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    text = page()
    if args.write:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
        print(f"wrote {DOC.relative_to(ROOT)}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()

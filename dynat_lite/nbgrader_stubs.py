"""What the student versions of the lessons leave out, for ``make student`` and for an nbgrader
course alike: the exercises' solution regions and the Think! answers.

**Solution regions.** An exercise's solution cell keeps the function's skeleton (signature,
docstring, the structure that is the lesson) and puts each blank between ``### BEGIN SOLUTION``
and ``### END SOLUTION``. In the student version a region that is exactly one simple assignment
line, ``name = expression``, becomes ``name = ...  # YOUR CODE`` at the same indentation; any
other region becomes the one line :data:`CODE_STUB`, indented like the region.

**Think! answers.** A Think! answer is a ``<details>`` block whose ``<summary>`` starts with
"Answer", in a markdown cell tagged ``answer`` (cell metadata ``tags``)::

    **Think!** The question, which students keep.

    <details><summary>Answer (click to open)</summary>

    The answer, for the instructor only.

    </details>

The student version replaces each such block by :data:`ANSWER_NOTE`. The block is removed from
any markdown cell, tagged or not; a cell tagged ``answer`` in which no such block is found makes
the student version fail to build instead of handing out an answer written some other way.

nbgrader's ``ClearMarkScheme`` is not used for the answers: it only accepts mark-scheme regions in
manually graded task cells, which would add points to every lesson's gradebook.

The text functions need only the standard library. The nbgrader preprocessors are built on first
use (``from dynat_lite.nbgrader_stubs import ScaffoldSolutions``), since nbgrader comes with the
``lab`` extra only. A course's ``nbgrader_config.py`` uses them with::

    c = get_config()
    from dynat_lite.nbgrader_stubs import configure
    configure(c)
"""
from __future__ import annotations

import ast
import functools
import re

#: What a region that is not one assignment becomes (one line, indented like the region).
CODE_STUB = ('raise NotImplementedError("Exercise: write this function, run this cell, then the '
             'check below")')
#: What follows ``name = `` where a region was one assignment.
BLANK = "...  # YOUR CODE"
BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"

#: The tag of a markdown cell that holds Think! answers.
ANSWER_TAG = "answer"
#: What replaces a Think! answer in the student version.
ANSWER_NOTE = "*Discuss your answer with your instructor or a partner.*"
# <details> (any attributes), then a <summary> whose text starts with "Answer", up to </details>.
_ANSWER = re.compile(r"<details\b[^>]*>\s*<summary\b[^>]*>\s*(?:<[^>]+>\s*)*answer\b"
                     r".*?</details\s*>", re.IGNORECASE | re.DOTALL)


# ------------------------------------------------------------------------------ solutions
def assigned_name(region: list[str]) -> str | None:
    """The name that ``region`` (the lines between the markers) assigns, when it is exactly one
    line ``name = expression``; None for anything else."""
    lines = [line for line in region if line.strip()]
    if len(lines) != 1:
        return None
    try:
        body = ast.parse(lines[0].strip()).body
    except SyntaxError:
        return None
    if len(body) != 1 or not isinstance(body[0], ast.Assign):
        return None
    targets = body[0].targets
    return targets[0].id if len(targets) == 1 and isinstance(targets[0], ast.Name) else None


def stub_for(region: list[str], indent: str, stub: str = CODE_STUB) -> list[str]:
    """The student version of one solution region: ``name = ...  # YOUR CODE`` for a one-line
    assignment (at that line's indentation), else ``stub`` at the marker's ``indent``."""
    name = assigned_name(region)
    if name is None:
        return [indent + line for line in stub.split("\n")]
    line = next(line for line in region if line.strip())
    return [f"{line[:len(line) - len(line.lstrip())]}{name} = {BLANK}"]


def solution_regions(source: str) -> list[list[str]]:
    """The lines inside each ``### BEGIN SOLUTION`` / ``### END SOLUTION`` region, in order."""
    return [region for _, region in _split(source) if region is not None]


def scaffold(source: str, stub: str = CODE_STUB) -> tuple[str, bool]:
    """``source`` with every solution region replaced by its student version; also whether
    there was a region. Raises RuntimeError for a nested or unterminated region."""
    out, found = [], False
    for indent, region in _split(source):
        if region is None:
            out.append(indent)
        else:
            out += stub_for(region, indent, stub)
            found = True
    return "\n".join(out), found


def _split(source: str) -> list[tuple[str, list[str] | None]]:
    """``source`` as a list of (line, None) outside the regions and (marker's indentation,
    region's lines) for each region."""
    parts, region, indent = [], None, ""
    for line in source.split("\n"):
        if BEGIN in line:
            if region is not None:
                raise RuntimeError(f"nested {BEGIN} in:\n{source}")
            region, indent = [], line[:len(line) - len(line.lstrip())]
        elif END in line:
            if region is None:
                raise RuntimeError(f"{END} without {BEGIN} in:\n{source}")
            parts.append((indent, region))
            region = None
        elif region is not None:
            region.append(line)
        else:
            parts.append((line, None))
    if region is not None:
        raise RuntimeError(f"no {END} in:\n{source}")
    return parts


# -------------------------------------------------------------------------------- answers
def answer_blocks(source: str) -> list[str]:
    """The Think! answer blocks in a markdown cell's source."""
    return _ANSWER.findall(source)


def remove_answers(source: str) -> str:
    """``source`` with each Think! answer block replaced by :data:`ANSWER_NOTE`."""
    return _ANSWER.sub(ANSWER_NOTE, source)


def is_answer_cell(cell) -> bool:
    return ANSWER_TAG in cell.get("metadata", {}).get("tags", [])


def clear_answers(cell) -> None:
    """Remove the Think! answers from a markdown ``cell`` in place. Raises ValueError when the
    cell is tagged ``answer`` but holds no answer block that can be removed."""
    if cell.get("cell_type") != "markdown":
        return
    if is_answer_cell(cell) and not answer_blocks(cell.source):
        raise ValueError(
            f"cell {cell.get('id')} is tagged {ANSWER_TAG!r} but holds no "
            f"<details><summary>Answer ...</summary> ... </details> block: write its answer "
            f"in one (or remove the tag), else the student version would show it:\n"
            f"{cell.source}")
    cell.source = remove_answers(cell.source)


# ----------------------------------------------------------------- nbgrader (built lazily)
@functools.cache
def _preprocessor_classes() -> dict[str, type]:
    from nbgrader.preprocessors import ClearSolutions, Execute, NbGraderPreprocessor
    from traitlets import Dict

    from .papermill_engine import PollingKernelManager

    class ScaffoldSolutions(ClearSolutions):
        """nbgrader's ClearSolutions, except that a solution region that is one assignment
        ``name = expression`` becomes ``name = ...  # YOUR CODE``; the stub for any other
        region is :data:`CODE_STUB` unless ``ClearSolutions.code_stub`` says otherwise."""

        code_stub = Dict({"python": CODE_STUB}).tag(config=True)

        def _replace_solution_region(self, cell, language):
            if cell.cell_type != "code":
                return super()._replace_solution_region(cell, language)
            if self.begin_solution_delimeter != BEGIN or self.end_solution_delimeter != END:
                raise ValueError(f"ScaffoldSolutions reads the markers {BEGIN!r} / {END!r}")
            cell.source, found = scaffold(cell.source, self.code_stub[language])
            return found

    class ClearAnswers(NbGraderPreprocessor):
        """Replace each Think! answer block in a markdown cell by a note (see the module)."""

        def preprocess_cell(self, cell, resources, index):
            clear_answers(cell)
            return cell, resources

    class PollingExecute(Execute):
        """nbgrader's Execute with the kernel manager of the kit's papermill engine: a cell's
        reply that the event loop was not woken for is found within a second (see
        ``dynat_lite.papermill_engine``; nbgrader's own sets its manager in ``__init__``, past
        the reach of configuration)."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("kernel_manager_class", PollingKernelManager)
            super().__init__(*args, **kwargs)

    return {"ScaffoldSolutions": ScaffoldSolutions, "ClearAnswers": ClearAnswers,
            "PollingExecute": PollingExecute}


def __getattr__(name: str):
    if name in ("ScaffoldSolutions", "ClearAnswers", "PollingExecute"):
        return _preprocessor_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def generate_assignment_preprocessors() -> list[type]:
    """nbgrader's ``GenerateAssignment.preprocessors`` with ``ClearSolutions`` replaced by
    ``ScaffoldSolutions`` and ``ClearAnswers`` run right after it."""
    from nbgrader.converters import GenerateAssignment
    from nbgrader.preprocessors import ClearSolutions

    classes = _preprocessor_classes()
    out = []
    for preprocessor in GenerateAssignment.class_traits()["preprocessors"].default():
        if preprocessor is ClearSolutions:
            out += [classes["ScaffoldSolutions"], classes["ClearAnswers"]]
        else:
            out.append(preprocessor)
    return out


def autograde_preprocessors() -> list[type]:
    """nbgrader's ``Autograde.autograde_preprocessors`` with ``Execute`` replaced by
    ``PollingExecute``."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    polling = _preprocessor_classes()["PollingExecute"]
    return [polling if p is Execute else p
            for p in Autograde.class_traits()["autograde_preprocessors"].default()]


def configure(c) -> None:
    """Make an nbgrader course's ``generate_assignment`` write the student versions that
    ``make student`` writes, and its ``autograde`` run the lessons with the kernel manager of the
    kit's papermill engine (``PollingExecute``: without it, autograding a lesson whose widgets
    display an Output can sit idle until the cell's time limit, the reply unread). Call it in
    the course's ``nbgrader_config.py`` with its config."""
    c.GenerateAssignment.preprocessors = generate_assignment_preprocessors()
    c.Autograde.autograde_preprocessors = autograde_preprocessors()

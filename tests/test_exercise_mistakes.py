"""Every plausible mistake of tests/mistake_support.py is rejected by its exercise's check with
a message that names it; docs/common_mistakes.md shows each of those messages as it is."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dynat_lite.exercises import ExerciseError, check
from mistake_support import MISTAKES

REPO = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("common_mistakes",
                                                  REPO / "tools" / "common_mistakes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common_mistakes = _load_tool()


@pytest.fixture(scope="module")
def doc_lines() -> set[str]:
    return set(common_mistakes.DOC.read_text().splitlines())


@pytest.mark.parametrize("mistake", MISTAKES, ids=[f"{m.name}-{i}" for i, m in
                                                   enumerate(MISTAKES)])
def test_mistake_is_rejected_with_a_message_that_names_it(mistake, capsys, doc_lines):
    with pytest.raises(ExerciseError) as info:
        check(mistake.name, mistake.fn)
    message = str(info.value)
    assert message.startswith(f"{mistake.name}: ")
    assert mistake.fragment in message, message
    assert "✓" not in capsys.readouterr().out
    assert common_mistakes.row(mistake, message) in doc_lines, (
        "docs/common_mistakes.md is out of date: python tools/common_mistakes.py --write")


def test_the_page_lists_exactly_these_mistakes_under_their_exercises():
    """The page without its messages (computing them again would repeat the test above)."""
    page = common_mistakes.DOC.read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(MISTAKES)
    expected = common_mistakes.page(messages={i: "MESSAGE" for i in range(len(MISTAKES))})
    heads = [line for line in page.splitlines() if not line.startswith("| ")]
    assert heads == [line for line in expected.splitlines() if not line.startswith("| ")]

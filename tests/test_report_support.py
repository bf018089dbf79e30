"""A failure is reported even while garbage with a raising finalizer waits (tests/report_support.py).

Each test runs a small pytest session of its own in a subprocess: one test that fails while the
garbage collector always has an object to collect whose finalizer raises.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

FAILING_TEST = '''
import gc

class Rearming:
    """Cyclic garbage whose finalizer raises and leaves another like it behind."""

    def __init__(self):
        self.me = self

    def __del__(self):
        Rearming()
        raise RuntimeError("a finalizer that raises")


def test_fails_while_garbage_waits():
    Rearming()
    numbers = [
''' + "".join(f"        {i} * {i} + {i},\n" for i in range(400)) + '''    ]
    assert sum(numbers) < 0, "this test fails on purpose"
'''


def _session(tmp_path: Path, guarded: bool) -> str:
    """Run the failing test in a pytest session of its own; its output."""
    (tmp_path / "test_inner.py").write_text(FAILING_TEST)
    conftest = "from report_support import pytest_runtest_makereport  # noqa: F401\n"
    (tmp_path / "conftest.py").write_text(conftest if guarded else "")
    env = dict(os.environ, PYTHONPATH=str(HERE))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    return run.stdout + run.stderr


def test_the_failure_is_reported_and_the_session_ends_normally(tmp_path):
    out = _session(tmp_path, guarded=True)
    assert "INTERNALERROR" not in out, out[-3000:]
    assert "1 failed" in out and "this test fails on purpose" in out, out[-3000:]


@pytest.mark.skipif(not (3, 11) <= sys.version_info[:3] <= (3, 11, 7),
                    reason="the parser's shared depth counter is a bug of Python 3.11.0 to 3.11.7")
def test_without_the_guard_this_python_stops_the_session(tmp_path):
    out = _session(tmp_path, guarded=False)
    assert "INTERNALERROR" in out and "AST constructor recursion depth mismatch" in out, out[-3000:]

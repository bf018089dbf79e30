"""Failure reports that a finalizer cannot break (imported by ``conftest.py``).

To show a failure, pytest parses the test's source with :func:`ast.parse`. Python 3.11 up to
3.11.7 keeps the depth counter of that parse in one place for the whole interpreter, so a second
parse that starts inside the first one corrupts it. The garbage collector can start that second
parse: it runs the finalizers of collected objects, and a finalizer that raises (a kernel client
or an event loop left behind by a lesson run in this process) goes to pytest's hook for
unraisable exceptions, which formats its traceback, which parses source. The first parse then
ends with ``SystemError: AST constructor recursion depth mismatch`` and pytest stops the whole
session with INTERNALERROR, hiding every result after it. The collector is therefore paused while
a report is built; garbage waits until the report is done.
"""
from __future__ import annotations

import gc

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Build the report of each phase (setup, call, teardown) with the garbage collector paused."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return (yield)
    finally:
        if was_enabled:
            gc.enable()

"""Processes that tests start (JupyterLab, kernels, Chromium), stopped even when a test fails.

* :func:`start` runs a command in a process group of its own, and :func:`stop` ends the group
  and every process it started (a Jupyter server's kernels sit in groups of their own), politely
  first, then with SIGKILL. Use them in a fixture's ``try/finally``. :func:`jupyter_address`
  waits for the address a Jupyter server started so prints once it serves.
* Two autouse fixtures (imported by ``conftest.py``) catch what a failing or timed-out test left:
  ``stray_kernels`` stops, after each test, a kernel the test process started and did not shut
  down (papermill stopped by a timeout mid-lesson); ``stray_processes`` stops, at the end of the
  session, every process the test process started that is still running.
* :func:`longer_timeouts_for_lessons` (called by ``conftest.py``'s collection hook) gives tests
  marked ``notebook`` (they run a whole lesson) ``NOTEBOOK_TIMEOUT_S`` instead of
  pytest-timeout's default, unless they set their own.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

#: pytest-timeout's limit for a test marked ``notebook``: a lesson on a busy 2-core machine.
NOTEBOOK_TIMEOUT_S = 2400
#: The address a Jupyter server on localhost prints once it serves: (port, token); the token is
#: printed as "..." when the server was given one (``--IdentityProvider.token``).
JUPYTER_ADDRESS = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]+|\.\.\.)")


def start(cmd: list[str], *, log, env: dict | None = None, cwd=None) -> subprocess.Popen:
    """``cmd`` in a new session (its own process group), stdout and stderr into ``log``."""
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)


def stop(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM to ``proc``'s group, wait up to ``grace_s``; then SIGKILL to all of it that is left."""
    family = _descendants(proc.pid)
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    family += [p for p in _descendants(proc.pid) if p not in family]
    _, alive = psutil.wait_procs(family, timeout=5)
    for p in alive:
        _kill(p)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def jupyter_address(proc: subprocess.Popen, log: Path, timeout_s: float, what: str) -> re.Match:
    """The ``http://127.0.0.1:PORT/lab?token=...`` line that the server ``proc``, started with
    its output into ``log``, prints once it is serving (read, not assumed: when the port asked
    for was taken, the server serves on the next free one). Fails the test with ``what`` and the
    log's end when the server exits or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = JUPYTER_ADDRESS.search(log.read_text(errors="replace"))
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"{what}:\n{log.read_text(errors='replace')[-3000:]}")


def alive_in_group(pgid: int) -> list[int]:
    """Pids of the processes still running (not zombies) in process group ``pgid``."""
    pids = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                pids.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return pids


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(p: psutil.Process) -> None:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass


def _is_kernel(p: psutil.Process) -> bool:
    try:
        return any("ipykernel" in part for part in p.cmdline())
    except psutil.Error:
        return False


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:  # it ended, or is a zombie, while we looked
        return f"pid {p.pid}"


def _terminate(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        _kill(p)


def longer_timeouts_for_lessons(items):
    """Tests marked ``notebook`` get ``NOTEBOOK_TIMEOUT_S`` unless they carry a timeout marker."""
    for item in items:
        if item.get_closest_marker("notebook") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(NOTEBOOK_TIMEOUT_S))


@pytest.fixture(autouse=True)
def stray_kernels():
    """After each test, stop the kernels this process started during it and left running."""
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    yield
    strays = [p for p in me.children() if p.pid not in before and _is_kernel(p)]
    if strays:
        print(f"\nstopping {len(strays)} kernel(s) left running by the test", file=sys.stderr)
        _terminate(strays)


@pytest.fixture(scope="session", autouse=True)
def stray_processes():
    """At the end of the session, stop every process this one started that is still running."""
    yield
    strays = [p for p in psutil.Process().children(recursive=True) if _running(p)]
    if strays:
        names = ", ".join(sorted({_name(p) for p in strays}))
        print(f"\nstopping {len(strays)} process(es) left running by the tests: {names}",
              file=sys.stderr)
        _terminate(strays)

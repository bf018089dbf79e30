"""`make lab` starts JupyterLab on the lessons (as root too), and the clone stores notebooks bare.

The targets run in a copy of the project (Makefile, tools/, notebooks/, .gitattributes) that uses
this checkout's environment (``VENV=...``; ``make -o`` keeps make from reinstalling it), so the
checkout's own git settings are never touched. JupyterLab runs on 127.0.0.1 without a browser,
in a process group of its own, and is stopped (with its kernels) when the test ends, pass or fail.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

from process_support import alive_in_group, jupyter_address, start, stop

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
LESSONS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))

pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
    pytest.mark.skipif(not (VENV / "bin" / "jupyter").exists(),
                       reason="no .venv with JupyterLab: run `make lab` once"),
]


def _project_copy(dest: Path) -> Path:
    """The files the Makefile's targets use, copied to ``dest``."""
    dest.mkdir()
    for name in ("Makefile", "pyproject.toml", "constraints.txt", ".gitattributes"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "tools", dest / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "notebooks").mkdir()
    for name in LESSONS:
        shutil.copy(ROOT / "notebooks" / name, dest / "notebooks" / name)
    return dest


def _make(project: Path, *targets: str, **variables: str) -> list[str]:
    """The make command for ``targets`` in ``project``, on this checkout's environment."""
    assigns = [f"{k}={v}" for k, v in {"VENV": str(VENV), **variables}.items()]
    return ["make", "--no-print-directory", "-o", str(VENV / ".lab"), "-C", str(project),
            *targets, *assigns]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


@pytest.fixture
def lab(tmp_path):
    """`make lab` on 127.0.0.1, no browser; yields (process, base URL, token, log path)."""
    project = _project_copy(tmp_path / "project")
    log_path = tmp_path / "make-lab.log"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), PYTHONUNBUFFERED="1")
    args = f"--ip=127.0.0.1 --port={_free_port()} --no-browser"
    with open(log_path, "w") as log:
        proc = start(_make(project, "lab", JUPYTER_ARGS=args), log=log, env=env)
        try:
            found = jupyter_address(proc, log_path, 300, "`make lab` printed no address with a token")
            yield proc, f"http://127.0.0.1:{found.group(1)}", found.group(2), log_path
        finally:
            stop(proc)


def test_make_lab_serves_the_lessons_and_stops_clean(lab):
    proc, base, token, log_path = lab
    printed = log_path.read_text()
    root = os.geteuid() == 0
    # As root JupyterLab only starts with --allow-root, which make adds by itself.
    assert ("--allow-root" in printed) == root
    assert "--no-browser" in printed and "--ip=127.0.0.1" in printed  # JUPYTER_ARGS passed on

    listing = _get(f"{base}/api/contents?token={token}")
    names = sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
    assert names == LESSONS, "the server's root is notebooks/: every lesson, nothing else"

    # The lessons' kernel, "python3", is this environment's own Python (no registration needed).
    specs = _get(f"{base}/api/kernelspecs?token={token}")
    assert "python3" in specs["kernelspecs"]
    request = urllib.request.Request(f"{base}/api/kernels?token={token}", method="POST",
                                     data=json.dumps({"name": "python3"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.status == 201
    kernels = _wait_for_kernels(proc.pid)
    assert kernels and all(Path(_cmdline(k)[0]).parent == VENV / "bin" for k in kernels)

    # Stopping leaves nothing behind: not the server, not make, not the kernel.
    stop(proc)
    assert not alive_in_group(proc.pid)
    assert not [k for k in kernels if _running(k)]


def _running(p: psutil.Process) -> bool:
    """Alive and not a zombie (a process that ends while we look is not running)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(p: psutil.Process) -> list[str]:
    """``p``'s command line; [] for a process that ended or is a zombie (psutil raises)."""
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _wait_for_kernels(pid: int, timeout_s: float = 60) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kernels = [p for p in psutil.Process(pid).children(recursive=True)
                   if any("ipykernel" in part for part in _cmdline(p))]
        if kernels:
            return kernels
        time.sleep(0.5)
    return []


# ------------------------------------------------------------- outputs never reach git
def _executed_copy(path: Path) -> str:
    """A lesson's text as if it had been run: an output, an execution count, widget state."""
    nb = nbformat.read(path, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    code.execution_count = 1
    code.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nbformat.writes(nb) + "\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_stores_notebooks_without_outputs_and_make_clean_strips_them(tmp_path):
    project = _project_copy(tmp_path / "project")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(_make(project, "git-filter"), check=True, capture_output=True)

    lesson = project / "notebooks" / LESSONS[0]
    clean = lesson.read_text(encoding="utf-8")
    other = project / "notebooks" / LESSONS[-1]
    lesson.write_text(_executed_copy(lesson), encoding="utf-8")
    subprocess.run(["git", "add", "notebooks"], cwd=project, check=True)

    def stored(path: Path) -> str:
        return subprocess.run(["git", "show", f":notebooks/{path.name}"], cwd=project, check=True,
                              capture_output=True, text=True).stdout

    assert stored(lesson) == clean, "git stored the lesson exactly as it was before it ran"
    assert stored(other) == other.read_text(encoding="utf-8"), "a bare lesson is stored unchanged"
    assert '"ran\\n"' in lesson.read_text(encoding="utf-8"), "the working copy keeps its outputs"

    (project / "build" / "html").mkdir(parents=True)
    subprocess.run(_make(project, "clean"), check=True, capture_output=True)
    assert lesson.read_text(encoding="utf-8") == clean
    assert not (project / "build").exists()

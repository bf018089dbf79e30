"""Lesson 01's label-evolution explorer in a real browser.

Starts JupyterLab from the project's environment on localhost (a token, a temporary root folder),
opens a copy of lesson 01 with the smoke profile injected, runs all cells in headless Chromium,
and checks what a student would see: the explorer and a plotly figure are on the page and visible,
and moving the explorer's ``step`` slider (with the keyboard) changes the figure. A screenshot is
saved under the test's tmp folder and, when set, ``$DYNAT_SCREENSHOT_DIR``.

Deselect with ``pytest -m "not browser"``. Skips, saying why, without Playwright or Chromium.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sys
import time
from pathlib import Path

import pytest

from browser_support import chromium, save_screenshot  # noqa: F401  (chromium is a fixture)
from process_support import jupyter_address, start, stop

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "01_dynamic_labels.ipynb"
FIXTURE = Path(__file__).parent / "fixtures" / "explorer.ipynb"
EXPLORER = ".dynat-label-explorer"
RUN_TIMEOUT_S = 600  # all cells of the lesson, smoke profile, on a busy 2-core machine
START_TIMEOUT_S = 300  # JupyterLab's start: over two minutes were seen on a busy 2-core machine
PAGE_TIMEOUT_MS = 300_000  # loading JupyterLab's page, then its kernel: over 2 min seen when busy


def _python() -> str:
    """The project's environment: .venv when there is one, else the interpreter running pytest."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(source: Path, dest: Path, **parameters) -> None:
    """Copy ``source`` with PROFILE="smoke" (and ``parameters``) injected by papermill, on the
    server's own kernel."""
    import papermill

    papermill.execute_notebook(
        str(source), str(dest), parameters={"PROFILE": "smoke", **parameters},
        prepare_only=True, kernel_name="python3", progress_bar=False,
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on localhost; yields (base URL, token, root folder)."""
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), PYTHONUNBUFFERED="1")
    # Answer JupyterLab's "get notified about news?" question in advance: no toast over the page.
    notification = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false"}))
    log = open(tmp_path / "jupyterlab.log", "w")
    # In a process group of its own: stop() ends the server and its kernels, pass or fail.
    proc = start(
        [_python(), "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--allow-root", "--LabApp.extension_manager=readonly",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        log=log, env=env, cwd=root,
    )
    try:
        port = jupyter_address(proc, tmp_path / "jupyterlab.log", START_TIMEOUT_S,
                               "JupyterLab did not start").group(1)
        yield f"http://127.0.0.1:{port}", token, root
    finally:
        stop(proc)
        log.close()


# JavaScript run in the page (JupyterLab exposes its app as window.jupyterapp with the flag above).
_CELL_STATES = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  return cells.map(c => ({count: c.model.executionCount,
                          errors: c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                                     .map(o => o.ename + ': ' + o.evalue)}));
}"""
_FIGURE_STATE = """(box) => Array.from(box.querySelectorAll('.js-plotly-plot'))
  .map(gd => JSON.stringify([gd.data, gd.layout && gd.layout.title])).join('|')"""


def _run_all_cells(page) -> None:
    """Run the notebook's cells and wait until every code cell has run; fail on an error output."""
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
        " && window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayStatus === 'idle'",
        timeout=PAGE_TIMEOUT_MS,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        states = page.evaluate(_CELL_STATES)
        errors = [e for s in states for e in s["errors"]]
        assert not errors, f"a cell failed in the browser: {errors}"
        busy = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayStatus")
        if all(s["count"] for s in states) and busy == "idle":
            return
        assert time.monotonic() < deadline, f"cells still running after {RUN_TIMEOUT_S} s: {states}"
        time.sleep(1)


@pytest.mark.timeout(START_TIMEOUT_S + RUN_TIMEOUT_S + 600)  # the server's start counts too
def test_label_explorer_renders_and_follows_the_slider(lab, chromium, tmp_path):  # noqa: F811
    """Lesson 01 (or, before it exists, the small fixture) in JupyterLab as a student runs it."""
    base, token, root = lab
    source = LESSON if LESSON.exists() else FIXTURE
    notebook = root / "notebooks" / source.name
    # The explorer is checked here, not the guide: one epoch of its training instead of two
    # (the lesson at its own size runs in tests/test_notebooks.py).
    _prepare(source, notebook, **({"EPOCHS": 1} if source == LESSON else {}))
    chromium.run(_check_explorer, f"{base}/lab/tree/notebooks/{source.name}?token={token}&reset", tmp_path, "lab")


def test_colab_renderer_draws_inside_widgets(lab, chromium, tmp_path):  # noqa: F811
    """The plotly renderer ``setup()`` picks on Colab loads plotly.js itself and draws in a widget.

    Colab cannot be reached from a test; this runs the same renderer in JupyterLab, with
    plotly.js served by the Jupyter server instead of the CDN, and checks the same things.
    """
    import nbformat
    from plotly.offline import get_plotlyjs

    base, token, root = lab
    (root / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
    nb = nbformat.read(FIXTURE, as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell(
        "import plotly.io as pio\n"
        "from dynat_lite.notebook import register_colab_renderer\n"
        'pio.renderers.default = register_colab_renderer("/files/plotly.min.js")'
    ))
    nbformat.write(nb, root / "notebooks" / "colab_renderer.ipynb")
    _prepare(root / "notebooks" / "colab_renderer.ipynb", root / "notebooks" / "colab_renderer.ipynb")
    chromium.run(_check_explorer, f"{base}/lab/tree/notebooks/colab_renderer.ipynb?token={token}&reset",
                 tmp_path, "colab-renderer")


def _check_explorer(browser, url: str, tmp_path: Path, name: str) -> None:
    """Open ``url``, run all cells, check the explorer and its figure, move the slider, screenshot.

    Runs on the browser's own thread (``chromium.run``).
    """
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.set_default_timeout(120_000)  # calls without a timeout of their own (30 s): a busy machine
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.goto(url, timeout=PAGE_TIMEOUT_MS)
    try:
        _run_all_cells(page)

        explorer = page.locator(EXPLORER).first
        explorer.wait_for(state="visible", timeout=60_000)
        explorer.scroll_into_view_if_needed()
        figure = explorer.locator(".js-plotly-plot").first
        figure.wait_for(state="visible", timeout=60_000)
        assert figure.bounding_box()["height"] > 100, "the explorer's plotly figure has no height"
        assert page.locator(".js-plotly-plot").count() >= 1

        # The IntSlider whose description is exactly "step" (not e.g. "PGD steps").
        label = page.locator("label.widget-label", has_text=re.compile(r"^\s*step\s*$"))
        slider = explorer.locator(".widget-slider").filter(has=label).first
        slider.wait_for(state="visible", timeout=30_000)
        before = _settled(page, explorer)
        assert before, "no plotly figure data inside the explorer"
        _shoot(page, explorer, tmp_path, f"{name}-before")

        # Move the slider with the keyboard: focus its handle, then step right.
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
        page.wait_for_function(
            f"([box, before]) => ({_FIGURE_STATE})(box) !== before && ({_FIGURE_STATE})(box) !== ''",
            arg=[explorer.element_handle(), before], timeout=60_000,
        )
        after = _settled(page, explorer)
        assert after != before, "the explorer's figure did not change when the step slider moved"
        explorer.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=30_000)
        _shoot(page, explorer, tmp_path, f"{name}-after")
    except Exception:
        try:
            _shoot(page, None, tmp_path, f"{name}-failure")
        except Exception as shot_error:  # a page too busy to screenshot: keep the first error
            print(f"no failure screenshot: {shot_error}".splitlines()[0])
        print("\n".join(console[-40:]))
        raise
    finally:
        page.close()


def _settled(page, explorer, timeout_s: float = 60) -> str:
    """The explorer's figure state once the kernel is idle and the figure stopped changing."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        idle = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayStatus") == "idle"
        state = explorer.evaluate(_FIGURE_STATE)
        if idle and state and state == last:
            return state
        last = state
        time.sleep(0.5)
    return explorer.evaluate(_FIGURE_STATE)


def _shoot(page, explorer, tmp_path: Path, tag: str) -> None:
    """Screenshots of the window and of the explorer, named after ``tag``."""
    save_screenshot(page.screenshot(), f"browser-{tag}-window.png", tmp_path)
    if explorer is not None:
        save_screenshot(explorer.screenshot(), f"browser-{tag}-explorer.png", tmp_path)


# A student's first contact with an exercise: the student version of a lesson, run top to bottom,
# stops at the exercise's check; a wrong answer gets the checker's message, a right one the "✓".
# (lesson, exercise, a wrong answer and the words its message must contain)
STUDENT_CASES = {
    "00_threat_model": ("fgsm", '''def fgsm(model, x, y, eps):
    was_training = model.training
    model.eval()
    x_in = x.detach().clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x_in), y), x_in)
    model.train(was_training)
    return (x + eps * grad.sign()).detach()   # forgot to clamp to [0, 1]
''', "[0, 1]"),
    "03_dynat_training": ("dynat_loss", '''def dynat_loss(guide, target, x, y, eps, step_size, steps, beta):
    guide.train()
    guide_logits = guide(x)
    labels = guide_logits.argmax(1).detach()
    x_adv = attacks.pgd(target, x, y, eps=eps, step_size=step_size, steps=steps,
                        random_start=None)                  # attacks the true label y
    target.train()
    return F.cross_entropy(guide_logits, y) + beta * F.cross_entropy(target(x_adv), labels)
''', "dynamic label"),
}

_CELL_OUTPUT = """(i) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[i];
  return {count: cell.model.executionCount, outputs: cell.model.outputs.toJSON()};
}"""


def _solution(lesson: str, exercise: str) -> str:
    """The instructor version's answer cell for ``exercise`` (nbgrader's markers removed)."""
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == exercise:
            return "\n".join(line for line in cell.source.splitlines()
                             if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
    raise AssertionError(f"no answer cell {exercise!r} in {lesson}")


def _cell_index(page, grade_id: str) -> int:
    return page.evaluate("""(gid) => window.jupyterapp.shell.currentWidget.content.widgets
        .findIndex(c => (c.model.getMetadata('nbgrader') || {}).grade_id === gid)""", grade_id)


def _run_cells(page, indices: list[int]) -> None:
    """Run the cells at ``indices`` one by one, as Shift+Enter would, and wait for the kernel."""
    for i in indices:
        page.evaluate("""(i) => { const nb = window.jupyterapp.shell.currentWidget.content;
            nb.activeCellIndex = i; nb.deselectAll();
            return window.jupyterapp.commands.execute('notebook:run-cell'); }""", i)
        _wait_idle(page, lambda: page.evaluate(_CELL_OUTPUT, i)["count"] is not None)


def _wait_idle(page, done, timeout_s: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayStatus")
        if status == "idle" and done():
            return
        assert time.monotonic() < deadline, "the kernel did not finish in time"
        time.sleep(0.5)


def _error_text(page, i: int) -> str:
    outputs = page.evaluate(_CELL_OUTPUT, i)["outputs"]
    return " ".join(f"{o['ename']}: {o['evalue']}" for o in outputs if o["output_type"] == "error")


def _traceback_text(page, i: int) -> str:
    outputs = page.evaluate(_CELL_OUTPUT, i)["outputs"]
    return "\n".join(line for o in outputs if o["output_type"] == "error" for line in o["traceback"])


def _stream_text(page, i: int) -> str:
    outputs = page.evaluate(_CELL_OUTPUT, i)["outputs"]
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")


@pytest.mark.slow
@pytest.mark.timeout(START_TIMEOUT_S + 2 * RUN_TIMEOUT_S)
@pytest.mark.parametrize("lesson", sorted(STUDENT_CASES))
def test_student_version_checks_a_wrong_then_a_right_answer(lab, chromium, tmp_path, lesson):  # noqa: F811
    base, token, root = lab
    exercise, wrong, said = STUDENT_CASES[lesson]
    notebook = root / "notebooks" / "student" / f"{lesson}.ipynb"
    notebook.parent.mkdir(parents=True, exist_ok=True)
    _prepare(ROOT / "notebooks" / "student" / notebook.name, notebook)
    url = f"{base}/lab/tree/notebooks/student/{notebook.name}?token={token}&reset"
    chromium.run(_student_session, url, exercise, wrong, said, _solution(lesson, exercise),
                 tmp_path, f"student-{lesson[:2]}")


def _student_session(browser, url, exercise, wrong, said, right, tmp_path, tag) -> None:
    """Runs on the browser's thread: run all, then a wrong answer, then the right one."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(url, timeout=PAGE_TIMEOUT_MS)
    try:
        page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.sessionContext"
            " && window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayStatus === 'idle'",
            timeout=PAGE_TIMEOUT_MS)
        answer, check = _cell_index(page, exercise), _cell_index(page, f"check_{exercise}")
        assert 0 < answer < check, f"no answer cell and check cell for {exercise}"

        # Run all: the run stops at the first exercise, with the exercise's message, not a traceback.
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        _wait_idle(page, lambda: _error_text(page, check) != "")
        first = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets
            .findIndex(c => c.model.type === 'code' && c.model.outputs.toJSON()
                            .some(o => o.output_type === 'error'))""")
        assert first == check, f"the first error is in cell {first}, not in {exercise}'s check ({check})"
        message = _error_text(page, check)
        assert message.startswith("ExerciseError") and "not written yet" in message, message
        assert "dynat_lite" not in _traceback_text(page, check), "the checker's frames are shown"

        def answer_with(source: str, name: str) -> None:
            page.evaluate("""([i, s]) => window.jupyterapp.shell.currentWidget.content.widgets[i]
                .model.sharedModel.setSource(s)""", [answer, source])
            _run_cells(page, [answer, check])
            cell = page.locator(".jp-Notebook .jp-Cell").nth(check)
            cell.scroll_into_view_if_needed()
            time.sleep(0.5)
            save_screenshot(page.screenshot(), f"browser-{tag}-{name}.png", tmp_path)

        answer_with(wrong, "wrong")
        message = _error_text(page, check)
        assert message.startswith("ExerciseError") and said in message, message
        assert "not written yet" not in message
        assert "dynat_lite" not in _traceback_text(page, check), "the checker's frames are shown"

        answer_with(right, "right")
        assert _error_text(page, check) == ""
        assert _stream_text(page, check).startswith(f"✓ {exercise}:"), _stream_text(page, check)
    except Exception:
        try:
            save_screenshot(page.screenshot(), f"browser-{tag}-failure.png", tmp_path)
        except Exception as shot_error:
            print(f"no failure screenshot: {shot_error}".splitlines()[0])
        raise
    finally:
        page.close()

"""Colab readiness: badges and install lines follow the one repository setting; setup() on Colab;
lessons 00-02 on Colab's versions of ipywidgets (7.7) and plotly (5.x)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_badges  # noqa: E402

from dynat_lite import notebook  # noqa: E402

LESSONS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _lesson(badge_target: str, install_url: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# A lesson\n\n{BADGE}({badge_target})\n\nText (COLAB_URL) stays."),
        nbformat.v4.new_code_cell(
            "try:\n    import dynat_lite\nexcept ImportError:\n"
            f'    %pip install -q "dynat-lite @ git+{install_url}"\n'
            "from dynat_lite.notebook import setup; ENV = setup()"
        ),
    ]
    return nb


def test_repository_url_is_read_from_pyproject():
    url = colab_badges.repository_url()
    assert url.startswith("https://github.com/") and url.count("/") == 4


def test_rewrite_sets_both_lines_and_nothing_else(tmp_path):
    path = tmp_path / "07_demo.ipynb"
    nbformat.write(_lesson("COLAB_URL", "https://github.com/someone/old"), path)
    before = path.read_text()
    assert colab_badges.main(["--check", str(path)]) == 1
    assert colab_badges.main([str(path)]) == 0
    after = path.read_text()

    url = colab_badges.repository_url()
    badges, installs = colab_badges.links(json.loads(after))
    assert badges == [colab_badges.colab_url(url, "07_demo.ipynb")]
    assert badges[0].endswith("/blob/main/notebooks/07_demo.ipynb")
    assert installs == [url]
    # Only the two targets changed: every other line is byte for byte the same.
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines()) and len(changed) == 2
    assert "Text (COLAB_URL) stays." in after
    # A second run changes nothing.
    assert colab_badges.main(["--check", str(path)]) == 0


@pytest.mark.skipif(not LESSONS, reason="no lessons in notebooks/ yet")
@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_every_lesson_badge_and_install_line_match_the_setting(path):
    url = colab_badges.repository_url()
    badges, installs = colab_badges.links(nbformat.read(path, as_version=4))
    assert badges, f"{path.name}: no 'Open In Colab' badge; see tools/colab_badges.py"
    assert installs, f"{path.name}: no '%pip install -q \"dynat-lite @ git+URL\"' line in the set-up cell"
    expected = colab_badges.colab_url(url, path.name)
    assert set(badges) == {expected}, f"{path.name}: run `python tools/colab_badges.py`"
    assert set(installs) == {url}, f"{path.name}: run `python tools/colab_badges.py`"


def test_setup_outside_colab_changes_nothing(monkeypatch):
    import plotly.io as pio

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    before = pio.renderers.default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = notebook.setup(quiet=True)
    assert env["colab"] is False and env["device"] in ("cpu", "cuda")
    assert pio.renderers.default == before


def test_setup_on_colab_enables_widgets_renderer_and_warns_without_gpu(monkeypatch):
    import plotly.io as pio
    import torch

    calls = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("widgets"))
    colab = types.ModuleType("google.colab")
    colab.output = output
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # restored afterwards

    with pytest.warns(UserWarning, match="No GPU"):
        env = notebook.setup(quiet=True)
    assert calls == ["widgets"]
    assert env["colab"] is True and env["device"] == "cpu"
    assert env["plotly_renderer"] == pio.renderers.default == notebook.COLAB_RENDERER


def test_colab_renderer_draws_after_loading_plotlyjs():
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(y=[3, 1, 2], name="probe"), layout={"title": "a </script> title"})
    html = notebook.figure_html(fig.to_dict(), "https://example.invalid/plotly.min.js")
    assert '"probe"' in html and "Plotly.newPlot" in html
    assert 'addEventListener("load", draw)' in html  # draws only once the library is there
    assert html.count("<script") == 1  # no <script src>: the library is loaded by the script
    assert html.count("</script>") == 1  # the title cannot close the script early


# ------------------------------------------------- the lessons on Colab's package versions (slow)
# What a Colab runtime has (its preinstalled packages, 2025): the versions the lessons must run on.
COLAB_PINS = ["ipywidgets==7.7.1", "plotly==5.24.1", "ipykernel==6.17.1", "ipython==7.34.0",
              "traitlets==5.7.1"]
COLAB_VENV = ROOT / ".venv-colab"  # git-ignored; built once, reused while the pins are the same
MAIN_VENV = ROOT / ".venv"
COLAB_LESSONS = ["00_threat_model", "01_dynamic_labels", "02_inner_optimizer"]
# What is checked here is how the lessons run and draw on Colab's versions, not their numbers
# (tests/test_notebooks.py runs them at their own sizes): fewer images attacked, one epoch of
# the guide instead of two. Every cell still runs.
COLAB_SIZES = {"00_threat_model": dict(N_EVAL=16), "01_dynamic_labels": dict(EPOCHS=1),
               "02_inner_optimizer": dict(N_IMAGES=16)}
# A stand-in for the google.colab module, so that setup() takes its Colab path.
COLAB_STUB = '''"""A stand-in for Colab's module (tests only): setup() takes its Colab path."""
import types

output = types.SimpleNamespace(enable_custom_widget_manager=lambda: None)
'''


def _run(cmd: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _colab_venv() -> Path:
    """The Python of ``.venv-colab``: Colab's widget and plotly versions, this checkout's torch.

    Colab runs Python 3.12; this venv runs the checkout's Python (3.11 here) because the pinned
    torch and torchvision are on this machine's disk for 3.11 only. They, numpy and dynat_lite
    come from ``.venv`` (a ``.pth`` file appends its site-packages after the venv's own), so the
    venv holds only Colab's versions of the packages that differ. Skips when pip cannot fetch them.
    """
    python = COLAB_VENV / "bin" / "python"
    stamp = COLAB_VENV / ".colab-pins"
    wanted = "\n".join(COLAB_PINS + [str(MAIN_VENV)])
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    shutil.rmtree(COLAB_VENV, ignore_errors=True)
    made = _run([sys.executable, "-m", "venv", str(COLAB_VENV)])
    if made.returncode:
        pytest.skip(f"cannot make a virtual environment: {made.stderr.strip()[-300:]}")
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    main_site = Path(_run([str(MAIN_VENV / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # Written before pip runs: pip then counts .venv's packages as installed and adds only
    # Colab's versions and what .venv lacks (built alone on an idle 2-core CPU: 19 s; 34 s when
    # the .pth came after pip).
    (site / "zz_dynat_main_env.pth").write_text(f"import site; site.addsitedir({str(main_site)!r})\n")
    pip = _run([str(python), "-m", "pip", "install", "--quiet", *COLAB_PINS])
    if pip.returncode:
        shutil.rmtree(COLAB_VENV, ignore_errors=True)
        pytest.skip("cannot install Colab's package versions (offline?): "
                    + " ".join(pip.stderr.strip().splitlines()[-2:])[-400:])
    (site / "google" / "colab").mkdir(parents=True)  # "google" stays a namespace package
    (site / "google" / "colab" / "__init__.py").write_text(COLAB_STUB)
    stamp.write_text(wanted)
    return python


@pytest.fixture(scope="module")
def colab_kernel(tmp_path_factory):
    """A kernel spec "colab" for the venv's Python, on JUPYTER_PATH for papermill; its versions."""
    if not (MAIN_VENV / "bin" / "python").exists():
        pytest.skip("no .venv: run `make test` once")
    python = _colab_venv()
    probe = _run([str(python), "-c", "import json, ipywidgets, plotly, ipykernel, torch, dynat_lite; "
                  "print(json.dumps({m.__name__: m.__version__ for m in "
                  "(ipywidgets, plotly, ipykernel, torch)}))"])
    assert probe.returncode == 0, probe.stderr[-2000:]
    versions = json.loads(probe.stdout)
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "colab" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                "display_name": "Colab's versions", "language": "python"}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root), old]))
    try:
        yield versions
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH")
        else:
            os.environ["JUPYTER_PATH"] = old


@pytest.fixture(scope="module")
def colab_models(tmp_path_factory):
    """One models folder for lessons 00-02, as for a student who runs them in order."""
    return tmp_path_factory.mktemp("colab-models")


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("name", COLAB_LESSONS)
def test_lesson_runs_on_colabs_versions(name, colab_kernel, colab_models, tmp_path):
    papermill = pytest.importorskip("papermill")
    assert colab_kernel["ipywidgets"].startswith("7.7.") and colab_kernel["plotly"].startswith("5.")
    source = ROOT / "notebooks" / f"{name}.ipynb"
    output = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(source), str(output), cwd=str(source.parent), kernel_name="colab",
        parameters=dict(PROFILE="smoke", DATASET="synthetic", DEVICE="cpu", SEED=0,
                        OUT_DIR=str(tmp_path / name), MODELS_DIR=str(colab_models),
                        **COLAB_SIZES[name]),
        execution_timeout=1800, engine_name="dynat", progress_bar=False)
    nb = nbformat.read(output, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "dynat-lite set-up: Colab" in text, "setup() took its Colab path"
    assert (tmp_path / name / "results.json").exists()
    # Figures come through the Colab renderer (HTML that loads plotly.js), not plotly's JSON.
    drawn = [o for o in outputs if "Plotly.newPlot" in o.get("data", {}).get("text/html", "")]
    assert len(drawn) >= 3 and not any(PLOTLY_MIME in o.get("data", {}) for o in outputs)
    # The explorer was built by ipywidgets 7: its models' protocol version is 1.5.0 (8: 2.0.0).
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    boxes = [m for m in state.values() if m["model_name"] == "VBoxModel"
             and "dynat-explorer" in m["state"].get("_dom_classes", [])]
    assert boxes, f"{name}: no explorer in the saved widget state"
    assert {m["model_module_version"] for m in boxes} == {"1.5.0"}

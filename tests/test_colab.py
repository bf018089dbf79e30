"""Colab readiness: badges and install lines follow the one repository setting; setup() on Colab."""
from __future__ import annotations

import json
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

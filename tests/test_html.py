"""HTML export (tools/export_html.py) on the small explorer notebook: figures visible without a kernel."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

from browser_support import chromium  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import export_html  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "explorer.ipynb"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The fixture executed (smoke profile) and exported once; yields (page, executed notebook)."""
    out = tmp_path_factory.mktemp("export") / "html"
    assert export_html.main([str(FIXTURE), "--out", str(out), "--kernel", "python3", "--no-check"]) == 0
    executed = nbformat.read(out.parent / "executed" / FIXTURE.name, as_version=4)
    return out / f"{FIXTURE.stem}.html", executed


def test_executed_with_the_chosen_profile_and_widget_state_saved(exported):
    _, nb = exported
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'PROFILE = "smoke"' in injected[0].source
    assert export_html.WIDGET_STATE in nb.metadata.get("widgets", {}), "papermill did not save widget state"


def test_page_embeds_plotlyjs_once_and_every_figure(exported):
    page, nb = exported
    text = page.read_text(encoding="utf-8")
    from plotly.offline import get_plotlyjs_version

    assert text.count(f"plotly.js v{get_plotlyjs_version()}") == 1  # the library's banner, once
    assert not re.search(r'<script[^>]*src="[^"]*plot\.ly', text)  # no CDN: works offline
    figures = export_html.count_page_figures(nb)
    assert figures >= 1
    assert text.count("Plotly.newPlot(") >= figures
    assert (page.parent / "index.html").read_text().count(page.name) == 1


def test_plotly_outputs_inside_widgets_get_html_too(exported):
    _, nb = exported
    nb = nbformat.from_dict(json.loads(nbformat.writes(nb)))
    state = nb.metadata["widgets"][export_html.WIDGET_STATE]["state"]
    inside = [o for m in state.values() for o in m["state"].get("outputs", [])
              if export_html.PLOTLY_MIME in o.get("data", {})]
    assert inside, "the explorer's Output widget holds no plotly figure in its saved state"
    assert export_html.add_html_to_widget_state(nb) == len(inside)
    assert all(re.search(r"Plotly\.newPlot\(", o["data"]["text/html"]) for o in inside)
    assert export_html.add_html_to_widget_state(nb) == 0  # never twice


@pytest.mark.browser
def test_page_draws_its_figures_in_headless_chromium(exported, chromium):  # noqa: F811
    page_path, nb = exported
    figures, drawn, visible = chromium.run(_open_and_count, page_path)
    assert figures >= export_html.count_page_figures(nb) >= 1
    assert drawn == figures, f"only {drawn} of {figures} plotly figures were drawn"
    assert visible


def _open_and_count(browser, page_path: Path):
    """(plotly figures on the page, those drawn with an SVG, whether the first is visible)."""
    page = browser.new_page()
    try:
        page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=60_000)
        page.wait_for_function("() => window.Plotly !== undefined", timeout=60_000)
        plots = page.locator(".js-plotly-plot")
        drawn = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                              ".filter(gd => gd.querySelector('svg.main-svg')).length")
        return plots.count(), drawn, plots.first.is_visible()
    finally:
        page.close()

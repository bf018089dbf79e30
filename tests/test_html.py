"""HTML export (tools/export_html.py): a small static site whose figures and formulas need no
kernel and no network.

Most tests export the small explorer fixture (seconds); lesson 00's formulas are typeset from a
page of the lesson as stored (no execution: its formulas are in its text). A real lesson's page
(its size, its explorer note, its progress lines, offline drawing) is checked on the run of
lesson 01 that tests/test_notebooks.py executes, so that the lesson runs once.
"""
from __future__ import annotations

import os
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
FORMULAS = ROOT / "notebooks" / "00_threat_model.ipynb"  # display formulas ($$) in its text
LESSONS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
MATHJAX_BUDGET = 2_500_000  # bytes of the MathJax copy (2.0 MB when written)
# Bytes for the whole site: every lesson, plotly.js, the stylesheet, and MathJax (10 MB before
# MathJax was copied beside the pages; its copy adds what MATHJAX_BUDGET allows, no more).
SITE_BUDGET = 10_000_000 + MATHJAX_BUDGET


def _export(source: Path, out: Path) -> tuple[Path, nbformat.NotebookNode]:
    """``source`` executed headless (smoke profile) and exported; (page, executed notebook)."""
    saved = os.environ.get("DYNAT_HEADLESS")
    os.environ["DYNAT_HEADLESS"] = "1"  # explorers also draw their default view
    try:
        # A cell that runs past 600 s fails here, inside pytest-timeout's 900 s per test.
        assert export_html.main([str(source), "--out", str(out), "--no-check", "--timeout", "600"]) == 0
    finally:
        if saved is None:
            os.environ.pop("DYNAT_HEADLESS")
        else:
            os.environ["DYNAT_HEADLESS"] = saved
    executed = nbformat.read(out.parent / "executed" / source.name, as_version=4)
    return out / f"{source.stem}.html", executed


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The fixture executed (smoke profile) and exported once; yields (page, executed notebook)."""
    return _export(FIXTURE, tmp_path_factory.mktemp("export") / "html")


def test_executed_with_the_chosen_profile_and_widget_state_saved(exported):
    _, nb = exported
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'PROFILE = "smoke"' in injected[0].source
    assert export_html.WIDGET_STATE in nb.metadata.get("widgets", {}), "papermill did not save widget state"


def test_plotlyjs_once_for_the_site_beside_the_pages(exported):
    page, nb = exported
    from plotly.offline import get_plotlyjs_version

    text = page.read_text(encoding="utf-8")
    library = page.parent / f"plotly-{get_plotlyjs_version()}.min.js"
    assert [p.name for p in page.parent.glob("*.js")] == [library.name]
    assert library.read_text(encoding="utf-8").count(f"plotly.js v{get_plotlyjs_version()}") == 1
    assert text.count(f'src="{library.name}"') == 1 and "plotly.js v" not in text  # referenced, not copied
    assert not re.search(r'<script[^>]*src="https?://[^"]*(plot\.ly|plotly|require)', text)
    figures = export_html.count_page_figures(nb)
    assert figures >= 1
    assert text.count("Plotly.newPlot(") >= figures
    assert len(text) < 100_000, "the page carries its figures only: library and styles are shared"
    assert (page.parent / "index.html").read_text().count(f'href="{page.name}"') == 1
    # MathJax from its copy beside the pages, loaded without holding the page up; no CDN.
    assert text.count(f'<script async src="{export_html.mathjax_url()}">') == 1
    assert not re.search(r'src="https?://[^"]*mathjax', text, re.I)
    assert (page.parent / export_html.MATHJAX_DIR / "MathJax.js").is_file()


def test_page_has_no_widgets_no_injected_cell_and_says_how_it_ran(exported):
    page, nb = exported
    text = page.read_text(encoding="utf-8")
    assert "widget-state" not in text and "widget-view" not in text
    explorers = sum(export_html.WIDGET_VIEW in o.get("data", {})
                    for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert explorers == 1 and text.count(export_html.EXPLORER_NOTE) == explorers
    source = nbformat.read(FIXTURE, as_version=4)
    code_cells = sum(c.cell_type == "code" for c in source.cells)
    assert text.count('class="jp-Cell jp-CodeCell') == code_cells  # the injected one is gone
    assert "This page shows the lesson as it ran with" in text and '<code>PROFILE = "smoke"</code>' in text
    assert "colab-badge.svg" not in text  # the badge is a plain link: no image from outside


def test_every_figure_has_an_alt_text_from_its_title_and_axes(exported):
    page, nb = exported
    text = page.read_text(encoding="utf-8")
    labels = _figure_labels(text)
    assert len(labels) == text.count('class="plotly-graph-div"') == export_html.count_page_figures(nb)
    assert all(labels)
    assert "label agreement up to step 4" in labels[-1] and "x: step, y: agreement" in labels[-1]


def _figure_labels(text: str) -> list[str]:
    """The alt texts (aria-label) of the page's ``<figure role="img">`` elements, in order."""
    from html.parser import HTMLParser

    labels = []

    class Figures(HTMLParser):
        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "figure" and attrs.get("role") == "img":
                labels.append(attrs.get("aria-label") or "")

    Figures().feed(text)
    return labels


def test_alt_text_names_kind_title_axes_and_series():
    fig = {"data": [{"type": "scatter", "mode": "lines", "name": "PGD-20"},
                    {"type": "scatter", "mode": "lines", "name": "FGSM"}],
           "layout": {"title": {"text": "Accuracy as ε grows<br><sup>500 images</sup>"},
                      "xaxis": {"title": {"text": "ε (× 1/255)"}}, "yaxis": {"title": "accuracy (%)"}}}
    assert export_html.alt_text(fig) == ("Line chart: Accuracy as ε grows — 500 images. axes x: ε (× 1/255), "
                                         "y: accuracy (%). series PGD-20, FGSM.")
    grid = {"data": [{"type": "image"}] * 3, "layout": {"annotations": [{"text": "cat"}, {"text": "dog"}]}}
    assert export_html.alt_text(grid) == "3 images: untitled. labelled cat; dog."


def test_links_to_the_projects_files_are_made_relative_to_the_pages_folder(tmp_path):
    lessons, pages = tmp_path / "notebooks", tmp_path / "build" / "html"
    text = ("See [the glossary](../GLOSSARY.md#pgd), ![a figure](figures/a.png), "
            "[Colab](https://colab.research.google.com/x), [above](#section) and [mail](mailto:a@b).")
    got = export_html.relink(text, lessons, pages)
    assert got == ("See [the glossary](../../GLOSSARY.md#pgd), ![a figure](../../notebooks/"
                   "figures/a.png), [Colab](https://colab.research.google.com/x), [above](#section)"
                   " and [mail](mailto:a@b).")
    # every link a lesson makes to a project file resolves from the pages' folder to a file
    for lesson in LESSONS:
        for cell in nbformat.read(lesson, as_version=4).cells:
            if cell.cell_type != "markdown":
                continue
            for target in re.findall(r"\]\(([^)\s]+)\)", export_html.relink(
                    cell.source, lesson.parent, ROOT / "build" / "html")):
                path = target.partition("#")[0]
                if path and not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", path):
                    assert (ROOT / "build" / "html" / path).resolve().exists(), (lesson.name, target)


def test_progress_bars_become_their_last_line_and_other_widgets_the_note():
    state = {
        "bar": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_p", "IPY_MODEL_f", "IPY_MODEL_s"]}},
        "p": {"model_name": "HTMLModel", "state": {"value": "epoch 1/2: 100%"}},
        "f": {"model_name": "FloatProgressModel", "state": {"value": 32, "max": 32}},
        "s": {"model_name": "HTMLModel", "state": {"value": " 32/32 [00:27&lt;00:00]"}},
        "box": {"model_name": "VBoxModel", "state": {"children": []}},
    }

    def view(model_id, plain="..."):
        return {"output_type": "display_data", "data": {export_html.WIDGET_VIEW: {"model_id": model_id},
                                                        "text/plain": plain}}

    assert export_html.widget_output(view("bar"), state)["text"] == "epoch 1/2: 100% 32/32 [00:27<00:00]\n"
    assert export_html.EXPLORER_NOTE in export_html.widget_output(view("box"), state)["data"]["text/html"]
    assert export_html.widget_output(view("gone", "VBox(children=(HTML(value='x'),))"), {}) is not None
    assert export_html.widget_output(view("gone", "epoch 1/2:   0%|"), {}) is None


@pytest.mark.skipif(not LESSONS, reason="no lessons in notebooks/ yet")
@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_index_title_and_one_line_summary_from_the_first_markdown_cell(path):
    title, summary = export_html.title_and_summary(nbformat.read(path, as_version=4))
    assert title.startswith(f"Lesson {path.name[:2]} ")
    assert summary.endswith((".", "!", "?")) and "\n" not in summary and 20 < len(summary) < 300
    assert not re.search(r"[*`\[\]]|colab", summary, re.I), summary  # plain text, not the badge


def test_index_lists_title_and_summary(exported):
    page, _ = exported
    index = (page.parent / "index.html").read_text(encoding="utf-8")
    assert '<a href="explorer.html">A small explorer (test fixture)</a>' in index
    assert "A stand-in for a lesson&#x27;s explorer: a box with class dynat-label-explorer" in index


@pytest.mark.browser
def test_page_draws_its_figures_in_headless_chromium(exported, chromium):  # noqa: F811
    page_path, nb = exported
    figures, drawn, visible = chromium.run(_open_and_count, page_path)
    assert figures >= export_html.count_page_figures(nb) >= 1
    assert drawn == figures, f"only {drawn} of {figures} plotly figures were drawn"
    assert visible


@pytest.mark.browser
def test_pages_draw_with_the_network_off(exported, chromium):  # noqa: F811
    page_path, nb = exported
    seen = chromium.run(export_html.open_offline, page_path)
    assert seen["figures"] == seen["drawn"] == export_html.count_page_figures(nb) >= 1
    assert not seen["errors"], seen["errors"]
    assert seen["outside"] == [] and seen["missing"] == [], (seen["outside"], seen["missing"])
    assert export_html.typeset(seen["formulas"]), seen["formulas"]
    index = chromium.run(export_html.open_offline, page_path.parent / "index.html")
    assert index["outside"] == [] and index["errors"] == []


# ------------------------------------------------------------------ formulas, offline
def _display_formulas(nb) -> int:
    """The display formulas ($$ ... $$) in a lesson's markdown."""
    count = sum(c.source.count("$$") for c in nb.cells if c.cell_type == "markdown")
    assert count % 2 == 0
    return count // 2


@pytest.fixture(scope="module")
def formula_page(tmp_path_factory):
    """Lesson 00 as stored (no outputs: its formulas are in its text) as a page of a site, with
    plotly.js and the MathJax copy beside it."""
    out = tmp_path_factory.mktemp("formulas") / "html"
    out.mkdir()
    nb = nbformat.read(FORMULAS, as_version=4)
    text, _ = export_html.to_html_page(nb, "Lesson 00", export_html.write_plotlyjs(out))
    page = out / FORMULAS.with_suffix(".html").name
    page.write_text(export_html.share_css(text, out), encoding="utf-8")
    return page, export_html.write_mathjax(out), _display_formulas(nb)


def test_mathjax_copy_is_the_packages_files_needed_for_tex_only(formula_page):
    page, size, _ = formula_page
    copy = page.parent / export_html.MATHJAX_DIR
    files = [p for p in copy.rglob("*") if p.is_file()]
    assert size == sum(p.stat().st_size for p in files) < MATHJAX_BUDGET
    source = export_html.mathjax_source()
    assert all((copy / p.relative_to(copy)).read_bytes() == (source / p.relative_to(copy)).read_bytes()
               for p in files[:20]), "copied unchanged from jupyter-server-mathjax"
    names = {p.relative_to(copy).as_posix() for p in files}
    assert {"MathJax.js", "config/TeX-AMS-MML_HTMLorMML-full.js", "extensions/tex2jax.js",
            "jax/input/TeX/jax.js"} <= names
    assert any(n.startswith("fonts/HTML-CSS/STIX-Web/woff/") for n in names)
    assert not [n for n in names if n.startswith(("jax/output/SVG", "extensions/a11y", "localization"))]


@pytest.mark.browser
def test_lesson_00_display_formulas_are_typeset_with_the_network_off(formula_page, chromium):  # noqa: F811
    page, _, display = formula_page
    assert display >= 3, "lesson 00 derives FGSM and PGD in display formulas"
    seen = chromium.run(export_html.open_offline, page)
    formulas = seen["formulas"]
    assert formulas["started"] and formulas["display"] == display, formulas
    assert formulas["inline"] > 0 and formulas["errors"] == 0 and not formulas["raw"], formulas
    assert seen["outside"] == [] and seen["missing"] == [] and seen["errors"] == [], seen


@pytest.mark.browser
def test_without_the_copy_the_formulas_stay_tex(formula_page, chromium, tmp_path):  # noqa: F811
    """The check can fail: the same page without MathJax beside it shows raw $$ TeX."""
    page, _, _ = formula_page
    bare = tmp_path / page.name
    bare.write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
    seen = chromium.run(export_html.open_offline, bare)
    assert not seen["formulas"]["started"] and seen["formulas"]["raw"]
    assert not export_html.typeset(seen["formulas"]) and seen["missing"]


def test_only_files_the_package_ships_are_expected_in_the_mathjax_copy(tmp_path):
    copy = (tmp_path / "html" / export_html.MATHJAX_DIR).as_uri()
    assert export_html.expected_file(f"{copy}/MathJax.js?config=x")
    assert export_html.expected_file(f"{copy}/fonts/HTML-CSS/STIX-Web/woff/STIXMathJax_Main-Regular.woff?V=2.7.9")
    assert not export_html.expected_file(f"{copy}/fonts/HTML-CSS/TeX/otf/MathJax_AMS-Regular.otf")
    assert export_html.expected_file((tmp_path / "html" / "plotly.min.js").as_uri())


def _open_and_count(browser, page_path: Path):
    """(plotly figures on the page, those drawn with an SVG, whether the first is visible)."""
    page = browser.new_page()
    try:
        page.goto(page_path.resolve().as_uri(), wait_until="domcontentloaded", timeout=180_000)
        page.wait_for_function("() => window.Plotly !== undefined", timeout=180_000)
        page.wait_for_function("() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
                               ".every(gd => gd.querySelector('svg.main-svg'))", timeout=180_000)
        plots = page.locator(".js-plotly-plot")
        drawn = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                              ".filter(gd => gd.querySelector('svg.main-svg')).length")
        return plots.count(), drawn, plots.first.is_visible()
    finally:
        page.close()

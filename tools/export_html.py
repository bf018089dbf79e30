"""Export the lessons to a small static HTML site that shows every figure without a kernel.

    python tools/export_html.py                       # execute every lesson (smoke profile), export
    python tools/export_html.py --profile cpu         # another profile
    python tools/export_html.py --executed runs       # take lessons already executed (make run)
    python tools/export_html.py notebooks/01_dynamic_labels.ipynb   # some lessons only

Pages go to ``build/html/`` (one per lesson, ``index.html``, plotly.js, a stylesheet and
MathJax); executed copies to ``build/executed/``. What the pages are made of:

* **plotly.js once for the whole site**: one file beside the pages (``plotly-VERSION.min.js``),
  which every page loads with ``<script src>``; JupyterLab's styles likewise (``lab-HASH.css``). Each figure, stored by the kernel as plotly's JSON
  (``application/vnd.plotly.v1+json``, which nbconvert cannot draw), becomes a ``<div>`` and the
  call that draws it, inside a ``<figure>`` whose ``aria-label`` is its alt text: what it shows,
  from its title and its axes' titles.
* **Explorers** (ipywidgets) need a kernel to move; where one stood the page says so in one line
  (the interactive version needs JupyterLab or Colab). Run headless, every explorer also shows its
  default view as static figures, and those are on the page. tqdm progress bars (widgets too)
  become the line of text they ended with. No widget state is kept.
* Papermill's injected-parameters cell is left out; a line under the title says which parameters
  the page was run with. The Colab badge becomes a plain link (no image from outside).
* ``index.html`` lists the lessons with their titles and a one-line summary, both taken from each
  lesson's first markdown cell.
* **MathJax beside the pages**, so that the formulas are typeset offline: MathJax 2 as the
  ``jupyter-server-mathjax`` package ships it (the ``lab`` extra installs it), of which only what
  typesets TeX is copied to ``mathjax/`` (``MATHJAX_FILES``: the TeX input, the HTML-CSS output
  and its STIX-Web fonts; about 2 MB). nbconvert's ``mathjax_url`` points every page at it.

Nothing is fetched from the network. After exporting, every page is opened in headless Chromium
with the network cut off (when Playwright and a Chromium are installed): each must draw all its
figures, typeset all its formulas and ask the network for nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import hashlib
import html
import os
import re
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
INJECTED = "injected-parameters"
EXPLORER_NOTE = ("Interactive explorer: its controls need a running kernel. Open this lesson in "
                 "JupyterLab or on Colab to use it.")
#: Where the pages find MathJax (beside them), the configuration they load, and the files of the
#: jupyter-server-mathjax package copied there: the loader, the TeX input, the HTML-CSS output,
#: the STIX-Web fonts it draws with, and the extensions TeX loads on demand (\boldsymbol,
#: \color, ...). Left out: the SVG output, the MathML extensions, the accessibility (a11y)
#: extensions and the menu's translations.
MATHJAX_DIR = "mathjax"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
MATHJAX_FILES = ("LICENSE", "MathJax.js", "config/TeX-AMS-MML_HTMLorMML-full.js", "config/Safe.js",
                 "extensions/*.js", "extensions/TeX/*.js", "extensions/HTML-CSS/*.js",
                 "jax/input/TeX/*.js", "jax/element/mml/**/*.js", "jax/output/HTML-CSS/**/*.js",
                 "fonts/HTML-CSS/STIX-Web/woff/*.woff")
#: The HTML-CSS output's fonts: the STIX-Web web fonts copied above (as the Jupyter notebook
#: configures them), never fonts of the reader's system or images.
MATHJAX_FONTS = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": '
                 '{availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}'
                 '});</script>\n')
#: Lines kernels print that say nothing wrong: hidden while lessons run.
KERNEL_NOISE = ("KeyboardInterrupt caught in kernel", "running over TCP without encryption")
_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)\s]*)\)")


# --- executing ---------------------------------------------------------------------------

def execute(source: Path, dest: Path, parameters: dict, kernel: str, timeout: int) -> None:
    """Run a lesson top to bottom with papermill, ``parameters`` injected, in the lesson's folder."""
    import papermill

    dest.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source), str(dest), parameters=parameters, cwd=str(source.parent),
        kernel_name=kernel, execution_timeout=timeout, engine_name="dynat", progress_bar=False,
    )


@contextlib.contextmanager
def hide_kernel_noise(noise: tuple[str, ...] = KERNEL_NOISE):
    """Drop the lines containing one of ``noise`` from this process's stderr and its children's.

    Kernels write to the stderr they inherit (file descriptor 2), so the filter sits on the
    descriptor: a pipe whose lines a thread copies to the real stderr, all but the noise.
    """
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def copy_lines():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not any(n.encode() in line for n in noise):
                    os.write(real, line)

    thread = threading.Thread(target=copy_lines, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe ends when no process holds its write end any more
        thread.join(timeout=5)
        if not thread.is_alive():
            os.close(real)


# --- figures -------------------------------------------------------------------------------

def _plain(text) -> str:
    """Text of a plotly title (a string or ``{"text": ...}``) without its HTML tags."""
    if isinstance(text, dict):
        text = text.get("text", "")
    text = re.sub(r"<br\s*/?>", " — ", str(text or ""))
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())


def _kind(traces: list[dict]) -> str:
    """What sort of chart the traces make: "Line chart", "Heatmap", "10 images", ..."""
    images = sum(t.get("type") == "image" for t in traces)
    if images:
        return f"{images} image{'s' if images > 1 else ''}"
    kinds = []
    for t in traces:
        kind = t.get("type", "scatter")
        if kind == "scatter":
            kind = "line chart" if "lines" in t.get("mode", "lines") else "scatter plot"
        elif kind == "bar":
            kind = "bar chart"
        if kind not in kinds:
            kinds.append(kind)
    return " and ".join(kinds).capitalize() or "Figure"


def alt_text(fig: dict) -> str:
    """What a figure shows, in words: its kind and title, its axes, series and labels."""
    layout = fig.get("layout", {})
    traces = fig.get("data", [])
    parts = [f"{_kind(traces)}: {_plain(layout.get('title')) or 'untitled'}"]
    axes = []
    for key in sorted(layout):
        if re.fullmatch(r"[xy]axis\d*", key):
            title = _plain(layout[key].get("title") if isinstance(layout[key], dict) else "")
            if title and title not in axes:
                axes.append(f"{key[0]}: {title}")
    if axes:
        parts.append("axes " + ", ".join(axes))
    names = [t["name"] for t in traces if t.get("name") and t.get("showlegend", True) is not False]
    names = list(dict.fromkeys(names))
    if names:
        parts.append("series " + ", ".join(names[:8]) + (" and more" if len(names) > 8 else ""))
    labels = [t for t in (_plain(a.get("text")) for a in layout.get("annotations", [])) if t]
    if labels:
        parts.append("labelled " + "; ".join(labels[:8]) + ("; and more" if len(labels) > 8 else ""))
    return ". ".join(parts) + "."


def figure_html(fig: dict) -> str:
    """A figure as a ``<figure>`` with its alt text, drawn by the page's plotly.js."""
    import plotly.io as pio

    drawing = pio.to_html(fig, include_plotlyjs=False, full_html=False, validate=False,
                          default_width="100%", default_height=525)
    label = html.escape(alt_text(fig), quote=True)
    return f'<figure class="dynat-figure" role="img" aria-label="{label}">{drawing}</figure>'


# --- widgets -------------------------------------------------------------------------------

def progress_text(model_id: str, state: dict) -> str | None:
    """The line a tqdm progress bar ended with, from the saved widget state; None if not one."""
    model = state.get(model_id, {})
    children = model.get("state", {}).get("children", [])
    ids = [c.removeprefix("IPY_MODEL_") for c in children if isinstance(c, str)]
    kinds = [state.get(i, {}).get("model_name", "") for i in ids]
    if not any(k in ("FloatProgressModel", "IntProgressModel") for k in kinds):
        return None
    texts = [_plain(state[i]["state"].get("value", "")) for i, k in zip(ids, kinds) if k == "HTMLModel"]
    return " ".join(t for t in texts if t) or None


def widget_output(out: dict, state: dict) -> dict | None:
    """What a widget's output becomes on the page: a progress line, the explorer note, or None.

    A widget missing from the saved state is told by its text: a box (``VBox(children=...``)
    is an explorer; anything else is left out.
    """
    model_id = out["data"][WIDGET_VIEW].get("model_id", "")
    if model_id in state:
        line = progress_text(model_id, state)
        if line is not None:
            return {"output_type": "stream", "name": "stdout", "text": line + "\n"}
    elif not re.match(r"[A-Z]\w*Box\(", "".join(out["data"].get("text/plain", ""))):
        return None
    note = f'<p class="dynat-explorer-note"><em>{html.escape(EXPLORER_NOTE)}</em></p>'
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": note}}


# --- a lesson to a page ----------------------------------------------------------------------

def injected_parameters(nb) -> str:
    """The assignments papermill injected (``PROFILE = "smoke"``, ...), one line; folders left out."""
    cells = [c for c in nb.cells if INJECTED in c.metadata.get("tags", [])]
    lines = [ln.strip() for c in cells for ln in c.source.splitlines()]
    return ", ".join(ln for ln in lines
                     if ln and not ln.startswith("#") and not re.match(r"\w*_DIR\s*=", ln))


# A Markdown link or image whose target is a relative path (not a URL, an anchor or a mail).
_RELATIVE_LINK = re.compile(r"\]\((?![a-zA-Z][a-zA-Z0-9+.-]*:|#|/)([^)\s]+)\)")


def relink(source: str, lesson_dir: Path, page_dir: Path) -> str:
    """Markdown ``source`` with each link relative to the lesson's folder (``../GLOSSARY.md``
    from notebooks/) made relative to the folder its page is written to."""
    def fix(m: re.Match) -> str:
        path, _, anchor = m.group(1).partition("#")
        target = Path(os.path.relpath(lesson_dir / path, page_dir)).as_posix()
        return f"]({target}{'#' + anchor if anchor else ''})"

    return _RELATIVE_LINK.sub(fix, source)


def prepare(nb, run_with: str) -> tuple:
    """A copy of an executed lesson ready for nbconvert, and its number of figures."""
    import nbformat

    nb = copy.deepcopy(nb)
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    nb.metadata.pop("papermill", None)
    nb.cells = [c for c in nb.cells if INJECTED not in c.metadata.get("tags", [])]
    figures = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _BADGE.sub(r"[Open in Colab](\1)", cell.source)
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                out = {**out, "data": {"text/html": figure_html(data[PLOTLY_MIME])}}
                figures += 1
            elif WIDGET_VIEW in data:
                out = widget_output(out, state)
            if out is not None:
                outputs.append(nbformat.from_dict(out))
        cell.outputs = outputs
    if run_with and nb.cells and nb.cells[0].cell_type == "markdown":
        note = f"*This page shows the lesson as it ran with `{run_with}`.*"
        nb.cells[0].source = nb.cells[0].source.rstrip() + "\n\n" + note
    return nb, figures


def count_page_figures(nb) -> int:
    """Plotly figures in an executed lesson's cell outputs (not inside widgets): all are drawn."""
    return sum(PLOTLY_MIME in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))


def title_and_summary(nb) -> tuple[str, str]:
    """The lesson's title (its first heading) and one line: the first sentence of its overview."""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title, summary = "", ""
    for block in re.split(r"\n\s*\n", first):
        block = block.strip()
        if block.startswith("#") and not title:
            title = block.lstrip("#").strip().splitlines()[0]
        elif block and not summary and not block.startswith("[!["):  # not the badge
            text = re.sub(r"^\*\*[^*]{1,30}[.:]\*\*\s*", "", " ".join(block.split()))  # "**Overview.**"
            text = re.sub(r"`([^`]*)`", r"\1", text)                    # code: its text
            text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)                  # bold
            text = re.sub(r"(?<!\w)[*_](.+?)[*_](?!\w)", r"\1", text)     # italics
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)           # links: their text
            found = re.search(r"^.+?[.!?](?=\s+[A-Z(]|$)", text)
            summary = found.group(0) if found else text
    return title, summary


def mathjax_url(folder: str = MATHJAX_DIR) -> str:
    """The address pages load MathJax from: its copy in ``folder`` beside them."""
    return f"{folder}/MathJax.js?config={MATHJAX_CONFIG}"


def to_html_page(nb, title: str, plotlyjs: str, run_with: str = "") -> tuple[str, int]:
    """The lesson as one page (nbconvert, lab template) that loads ``plotlyjs`` and MathJax from
    beside it; and its figures."""
    from nbconvert import HTMLExporter

    nb, figures = prepare(nb, run_with)
    nb.metadata["title"] = title
    body, _ = HTMLExporter(template_name="lab", mathjax_url=mathjax_url()).from_notebook_node(nb)
    # require.js is for widgets and would capture plotly.js as a module: not needed here.
    body = re.sub(r'<script src="[^"]*require(?:\.min)?\.js"></script>\s*', "", body)
    # MathJax loads without holding the page up: it runs the page's configuration blocks (the
    # template's and MATHJAX_FONTS) when it arrives, then typesets.
    body = re.sub(r'<script src="([^"]*mathjax[^"]*)">', r'<script async src="\1">', body)
    script = f'<script charset="utf-8" src="{html.escape(plotlyjs)}"></script>\n'
    return body.replace("</head>", MATHJAX_FONTS + script + "</head>", 1), figures


def share_css(page: str, out_dir: Path) -> str:
    """Move the page's stylesheets (JupyterLab's theme, 0.26 MB) to one file that pages share."""
    head_end = page.find("</head>")
    blocks = re.findall(r"<style[^>]*>(.*?)</style>", page[:head_end], re.S)
    if not blocks:
        return page
    css = "\n".join(blocks)
    name = f"lab-{hashlib.sha256(css.encode()).hexdigest()[:12]}.css"
    if not (out_dir / name).exists():
        (out_dir / name).write_text(css, encoding="utf-8")
    head = re.sub(r"<style[^>]*>.*?</style>\s*", "", page[:head_end], flags=re.S)
    link = f'<link rel="stylesheet" href="{name}">\n'
    return head + link + page[head_end:]


def write_plotlyjs(out_dir: Path) -> str:
    """Write plotly.js beside the pages (once for the site); its file name."""
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    name = f"plotly-{get_plotlyjs_version()}.min.js"
    for old in out_dir.glob("plotly-*.min.js"):
        if old.name != name:
            old.unlink()
    (out_dir / name).write_text(get_plotlyjs(), encoding="utf-8")
    return name


def mathjax_source() -> Path:
    """The MathJax that the jupyter-server-mathjax package ships (the ``lab`` extra)."""
    try:
        from jupyter_server_mathjax.app import STATIC_ASSETS_PATH
    except ImportError:
        raise SystemExit("MathJax for the pages comes from the jupyter-server-mathjax package: "
                         "pip install -e '.[lab]' (make html does it)") from None
    return Path(STATIC_ASSETS_PATH)


def write_mathjax(out_dir: Path, source: Path | None = None) -> int:
    """Copy the files of ``MATHJAX_FILES`` to ``out_dir/mathjax`` (once for the site, replacing
    an older copy); their size in bytes."""
    import shutil

    source = source or mathjax_source()
    dest = out_dir / MATHJAX_DIR
    if dest.exists():
        shutil.rmtree(dest)
    size = 0
    for pattern in MATHJAX_FILES:
        found = sorted(p for p in source.glob(pattern) if p.is_file())
        if not found:
            raise SystemExit(f"MathJax in {source} has no {pattern}: is jupyter-server-mathjax "
                             f"the version constraints.txt names?")
        for path in found:
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            size += path.stat().st_size
    return size


def write_index(lessons: list[tuple[Path, str, str]], out_dir: Path, run_with: str = "") -> Path:
    """``index.html``: every lesson's title as a link, and its one-line summary."""
    items = "\n".join(
        f'<li><a href="{html.escape(page.name)}">{html.escape(title or page.stem)}</a>'
        f"<br>{html.escape(summary)}</li>" for page, title, summary in lessons)
    ran = f" The pages show the lessons as they ran with <code>{html.escape(run_with)}</code>." if run_with else ""
    index = out_dir / "index.html"
    index.write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>dynat-lite lessons</title>\n<style>body{font-family:sans-serif;max-width:52em;"
        "margin:2em auto;padding:0 1em;line-height:1.5}li{margin-bottom:1em}</style></head>\n"
        "<body><h1>dynat-lite lessons</h1>\n"
        f"<p>Dynamic Label Adversarial Training (DYNAT), step by step.{ran} The explorers are "
        "interactive in JupyterLab or on Colab only.</p>\n"
        f"<ol>\n{items}\n</ol>\n</body></html>\n",
        encoding="utf-8",
    )
    return index


def site_size(out_dir: Path) -> int:
    return sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())


# --- checking the site in a browser --------------------------------------------------------

def find_chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


#: In the browser: the page's formulas once MathJax has typeset them (MathJax 2's queue runs the
#: callback after the typesetting it queued at start-up), and whether ``$$`` is still in the
#: page's text (outside code).
_TYPESET = """() => new Promise(done => {
    const seen = () => ({
        started: Boolean(window.MathJax && MathJax.Hub),
        display: document.querySelectorAll('.MathJax_Display').length,
        inline: document.querySelectorAll('span.MathJax').length
                - document.querySelectorAll('.MathJax_Display span.MathJax').length,
        errors: document.querySelectorAll('.MathJax_Error, merror').length,
        raw: rawTex()});
    // '$$' left in the page's text outside code (where TeX may be shown as code on purpose)
    const rawTex = () => {
        const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode:
            n => n.parentElement.closest('code, pre, script, style')
                 ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
        for (let n = walk.nextNode(); n; n = walk.nextNode()) if (n.nodeValue.includes('$$')) return true;
        return false;
    };
    if (window.MathJax && MathJax.Hub) MathJax.Hub.Queue(() => done(seen())); else done(seen());
})"""
#: MathJax has started, or the page has loaded without it (its script missing).
_MATHJAX_SETTLED = ("() => (window.MathJax && MathJax.isReady) "
                    "|| (document.readyState === 'complete' && !window.MathJax)")


def expected_file(url: str) -> bool:
    """Whether a local file a page asked for should be there: any file but those in the MathJax
    copy that jupyter-server-mathjax does not ship either (MathJax's HTML-CSS output declares
    its TeX fonts too, and asks for two or three of them; it draws with STIX-Web)."""
    from urllib.parse import unquote, urlparse

    parts = Path(unquote(urlparse(url).path)).parts
    if MATHJAX_DIR not in parts:
        return True
    inside = Path(*parts[len(parts) - parts[::-1].index(MATHJAX_DIR):])
    return (mathjax_source() / inside).exists()


def open_offline(browser, page_path: Path, timeout_ms: int = 180_000) -> dict:
    """Open a page with the network cut off; what was drawn and what was asked for.

    Returns ``figures`` (plotly figures on the page), ``drawn`` (those with an SVG),
    ``formulas`` (whether MathJax ``started``; its typeset formulas, ``display`` and
    ``inline``; ``errors``; and ``raw``: whether ``$$`` is still in its text), ``outside``
    (addresses other than local files the page asked for: all refused), ``missing`` (local
    files it asked for that are not there, e.g. a MathJax file not copied; see
    ``expected_file``) and ``errors`` (uncaught script errors).
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context(offline=True)
    outside, errors, missing = [], [], []
    context.route(re.compile(r"^(?!file:).*"), lambda route: (outside.append(route.request.url), route.abort()))
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda request: request.url.startswith("file:")
            and expected_file(request.url) and missing.append(request.url))
    try:
        page.goto(page_path.resolve().as_uri(), wait_until="domcontentloaded", timeout=timeout_ms)
        try:
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
                ".every(gd => gd.querySelector('svg.main-svg'))", timeout=timeout_ms)
        except PlaywrightTimeout:
            pass  # counted below
        drawn = page.evaluate("() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
                              ".filter(gd => gd.querySelector('svg.main-svg')"
                              " && gd.getBoundingClientRect().height > 0).length")
        figures = page.locator(".plotly-graph-div").count()
        try:
            page.wait_for_function(_MATHJAX_SETTLED, timeout=timeout_ms)
        except PlaywrightTimeout:
            pass  # formulas["started"] says so
        formulas = page.evaluate(_TYPESET)
        return {"figures": figures, "drawn": drawn, "formulas": formulas, "outside": outside,
                "missing": missing, "errors": errors}
    finally:
        context.close()


def typeset(formulas: dict) -> bool:
    """Whether MathJax started and left no formula as TeX source or as an error."""
    return formulas["started"] and not formulas["raw"] and not formulas["errors"]


def check_site(pages: list[Path], expected: list[int]) -> bool | None:
    """True/False: every page drew its figures and typeset its formulas offline; None: no
    browser to check with."""
    exe = find_chromium()
    try:
        import playwright  # noqa: F401
    except ImportError:
        exe = None
    if exe is None:
        print("not checked in a browser (needs Playwright and Chromium)")
        return None
    from concurrent.futures import ThreadPoolExecutor

    # Playwright's sync API refuses a thread whose asyncio loop runs, as papermill may leave
    # the main thread's: the browser gets a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        results = pool.submit(_check_pages, exe, pages).result()
    ok = True
    for page, want, got in zip(pages, expected, results):
        outside, formulas = got["outside"] + got["missing"], got["formulas"]
        good = (got["drawn"] == got["figures"] == want and not outside and not got["errors"]
                and typeset(formulas))
        ok &= good
        math = (f"{formulas['display'] + formulas['inline']} formula(s) typeset"
                + ("" if typeset(formulas) else ", some left as TeX or errors")
                if formulas["started"] else "MathJax did not start")
        print(f"  {page.name}: {got['drawn']} of {want} figure(s) drawn offline, {math}"
              + (f"; asked for {outside}, which it could not get" if outside else "")
              + (f"; script errors {got['errors']}" if got["errors"] else ""))
    return ok


def _check_pages(executable: str, pages: list[Path]) -> list[dict]:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        try:
            return [open_offline(browser, page) for page in pages]
        finally:
            browser.close()


# --- command line --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9]*.ipynb")
    parser.add_argument("--profile", default="smoke", help="PROFILE injected when executing (default smoke)")
    parser.add_argument("--dataset", help="DATASET injected when executing (default: the lesson's own)")
    parser.add_argument("--executed", type=Path, help="folder of already-executed lessons (same file names); no execution")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "html", help="where the pages go")
    parser.add_argument("--kernel", default="python3", help="kernel to execute with (default python3: "
                        "the Python of the environment this runs in)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run")
    parser.add_argument("--no-check", action="store_true", help="skip opening the pages in Chromium")
    args = parser.parse_args(argv)

    import nbformat

    sources = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    if not sources:
        raise SystemExit("no lessons to export: notebooks/ has no [0-9]*.ipynb")
    args.out.mkdir(parents=True, exist_ok=True)
    plotlyjs = write_plotlyjs(args.out)
    mathjax_bytes = write_mathjax(args.out)
    lessons, pages, expected, ran_with = [], [], [], set()
    for i, source in enumerate(sources, 1):
        step = f"[{i}/{len(sources)}] {source.stem}"
        if args.executed:
            executed = args.executed / source.name
            if not executed.exists():
                raise SystemExit(f"{executed} does not exist: run `make run` first, or drop --executed")
        else:
            executed = args.out.parent / "executed" / source.name
            parameters = {"PROFILE": args.profile, **({"DATASET": args.dataset} if args.dataset else {})}
            print(f"{step}: running with {parameters} ...", flush=True)
            t0 = time.perf_counter()
            with hide_kernel_noise():
                execute(source, executed, parameters, args.kernel, args.timeout)
            print(f"{step}: ran in {time.perf_counter() - t0:.0f} s", flush=True)
        nb = nbformat.read(executed, as_version=4)
        run_with = injected_parameters(nb)
        ran_with.add(run_with)
        title, summary = title_and_summary(nb)
        page = args.out / f"{source.stem}.html"
        for cell in nb.cells:  # links to the project's files, from the page's folder
            if cell.cell_type == "markdown":
                cell.source = relink(cell.source, source.resolve().parent, args.out.resolve())
        text, figures = to_html_page(nb, title or source.stem, plotlyjs, run_with)
        page.write_text(share_css(text, args.out), encoding="utf-8")
        lessons.append((page, title, summary))
        pages.append(page)
        expected.append(figures)
        print(f"{step}: wrote {page} ({page.stat().st_size / 1e3:.0f} kB, {figures} figure(s))", flush=True)
    index = write_index(lessons, args.out, ran_with.pop() if len(ran_with) == 1 else "")
    today = datetime.date.today().isoformat()
    print(f"wrote {index}: {len(pages)} page(s), {plotlyjs} and MathJax "
          f"({mathjax_bytes / 1e6:.1f} MB), {site_size(args.out) / 1e6:.1f} MB in all ({today})")

    if not args.no_check:
        print("checking every page in headless Chromium, network off:")
        if check_site(pages, expected) is False:
            print("not every page drew its figures and typeset its formulas offline (see "
                  "above)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

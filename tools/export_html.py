"""Export the lessons to HTML pages that show every figure without a kernel, for instructors to publish.

    python tools/export_html.py                       # execute every lesson (smoke profile), export
    python tools/export_html.py --profile cpu         # another profile
    python tools/export_html.py --executed runs       # take lessons already executed (make run)
    python tools/export_html.py notebooks/01_dynamic_labels.ipynb   # some lessons only

Pages go to ``build/html/`` (one per lesson, plus ``index.html``); executed copies to
``build/executed/``. What makes the figures visible without a kernel:

* In JupyterLab a plotly figure is stored as plotly's JSON (``application/vnd.plotly.v1+json``),
  which nbconvert cannot draw. Each such output gets a ``text/html`` rendering made by plotly
  (``plotly.io.to_html``), also inside the saved state of ``ipywidgets.Output`` widgets.
* plotly.js itself is embedded once per page, in its head, so the pages work offline too.
* The widgets' state, saved by papermill when it executes a lesson, stays in the page: where the
  page can reach the ipywidgets HTML manager (a CDN), the explorers render from that state. Every
  explorer also shows its default view as a static figure when run headless, which needs nothing.

After exporting, the first page is opened in headless Chromium (when Playwright and a Chromium are
installed) and the number of drawn plotly figures is checked against the page's figures.
"""
from __future__ import annotations

import argparse
import copy
import html
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


# --- executing ---------------------------------------------------------------------------

def execute(source: Path, dest: Path, parameters: dict, kernel: str | None, timeout: int) -> None:
    """Run a lesson top to bottom with papermill, ``parameters`` injected, in the lesson's folder."""
    import papermill

    dest.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source), str(dest), parameters=parameters, cwd=str(source.parent),
        kernel_name=kernel, execution_timeout=timeout, progress_bar=False,
    )


# --- plotly outputs to HTML ----------------------------------------------------------------

def plotly_html(fig_json: dict) -> str:
    """A figure's ``<div>`` and drawing script, without plotly.js (the page embeds it once)."""
    import plotly.io as pio

    return pio.to_html(fig_json, include_plotlyjs=False, full_html=False, validate=False,
                       default_width="100%", default_height=525)


def add_html_to_outputs(outputs: list) -> int:
    """Give every plotly output in ``outputs`` a ``text/html`` rendering; return how many."""
    count = 0
    for out in outputs:
        data = out.get("data", {})
        if PLOTLY_MIME in data and "text/html" not in data:
            data["text/html"] = plotly_html(data[PLOTLY_MIME])
            count += 1
    return count


def add_html_to_widget_state(nb) -> int:
    """The same for plotly outputs held in the saved state of ``ipywidgets.Output`` widgets."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return sum(add_html_to_outputs(model.get("state", {}).get("outputs", []))
               for model in state.values())


def count_page_figures(nb) -> int:
    """Plotly figures shown directly in cell outputs (not inside widgets): all must be drawn."""
    return sum(PLOTLY_MIME in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))


def to_html_page(nb, title: str) -> str:
    """The notebook as one HTML page (nbconvert, lab template) with plotly.js embedded once."""
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    nb = copy.deepcopy(nb)
    nb.metadata["title"] = title
    figures = sum(add_html_to_outputs(cell.get("outputs", [])) for cell in nb.cells
                  if cell.cell_type == "code")
    figures += add_html_to_widget_state(nb)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    if figures:
        library = f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        body = body.replace("</head>", library + "</head>", 1)
    return body


def write_index(pages: list[Path], out_dir: Path) -> Path:
    """``index.html``: a list of links to the lesson pages."""
    items = "\n".join(f'<li><a href="{html.escape(p.name)}">{html.escape(p.stem)}</a></li>' for p in pages)
    index = out_dir / "index.html"
    index.write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dynat-lite lessons</title>"
        f"</head>\n<body><h1>dynat-lite lessons</h1>\n<ul>\n{items}\n</ul>\n</body></html>\n",
        encoding="utf-8",
    )
    return index


# --- checking a page in a browser ----------------------------------------------------------

def drawn_figures(page_path: Path, executable: str, timeout_ms: int = 60_000) -> int:
    """Open a page in headless Chromium and count the plotly figures that were drawn (have an SVG).

    Runs on a thread of its own: Playwright's sync API refuses a thread whose asyncio loop is
    running, as papermill may leave the main thread's.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_drawn_figures, page_path, executable, timeout_ms).result()


def _drawn_figures(page_path: Path, executable: str, timeout_ms: int) -> int:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page()
            page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=timeout_ms)
            page.wait_for_function("() => window.Plotly !== undefined", timeout=timeout_ms)
            return page.evaluate(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".filter(gd => gd.querySelector('svg.main-svg') && gd.getBoundingClientRect().height > 0).length"
            )
        finally:
            browser.close()


def find_chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def check_page(page_path: Path, expected: int) -> bool | None:
    """True/False: the page drew all ``expected`` figures; None: no browser to check with."""
    exe = find_chromium()
    try:
        import playwright  # noqa: F401
    except ImportError:
        exe = None
    if exe is None:
        print(f"not checked in a browser (needs Playwright and Chromium): {page_path}")
        return None
    drawn = drawn_figures(page_path, exe)
    print(f"checked {page_path.name} in headless Chromium: {drawn} of {expected} figure(s) drawn")
    return drawn >= expected


# --- command line --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9]*.ipynb")
    parser.add_argument("--profile", default="smoke", help="PROFILE injected when executing (default smoke)")
    parser.add_argument("--dataset", help="DATASET injected when executing (default: the lesson's own)")
    parser.add_argument("--executed", type=Path, help="folder of already-executed lessons (same file names); no execution")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "html", help="where the pages go")
    parser.add_argument("--kernel", help="kernel to execute with (default: the notebook's own)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run")
    parser.add_argument("--no-check", action="store_true", help="skip opening the first page in Chromium")
    args = parser.parse_args(argv)

    import nbformat

    sources = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    if not sources:
        raise SystemExit("no lessons to export: notebooks/ has no [0-9]*.ipynb")
    args.out.mkdir(parents=True, exist_ok=True)
    pages, expected = [], []
    for source in sources:
        if args.executed:
            executed = args.executed / source.name
            if not executed.exists():
                raise SystemExit(f"{executed} does not exist: run `make run` first, or drop --executed")
        else:
            executed = args.out.parent / "executed" / source.name
            parameters = {"PROFILE": args.profile}
            if args.dataset:
                parameters["DATASET"] = args.dataset
            print(f"executing {source.name} with {parameters} ...", flush=True)
            execute(source, executed, parameters, args.kernel, args.timeout)
        nb = nbformat.read(executed, as_version=4)
        page = args.out / f"{source.stem}.html"
        page.write_text(to_html_page(nb, source.stem), encoding="utf-8")
        pages.append(page)
        expected.append(count_page_figures(nb))
        print(f"wrote {page} ({expected[-1]} figure(s) outside widgets)")
    print(f"wrote {write_index(pages, args.out)}")

    if not args.no_check:
        ok = check_page(pages[0], expected[0])
        if ok is False:
            print(f"{pages[0]}: not every figure was drawn", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Set-up for the lessons: the same first cell works in JupyterLab, on Colab and under papermill.

Every lesson's set-up cell ends with::

    from dynat_lite.notebook import setup; ENV = setup()

In plain JupyterLab (and under papermill) nothing needs configuring: ipywidgets render through
the widget manager JupyterLab ships, and plotly figures through the plotly mime renderer that the
plotly wheel installs into JupyterLab. On Colab three things differ, and ``setup`` handles them:

* third-party widgets (ipywidgets 8 with plotly) need Colab's *custom widget manager*;
* plotly's own ``"colab"`` renderer loads plotly.js with a ``<script src=...>`` tag, which is
  loaded asynchronously when the figure is drawn inside an ``ipywidgets.Output`` (as the
  explorers do), so the drawing code can run before ``Plotly`` exists and the figure stays blank.
  ``setup`` registers and selects the renderer ``"dynat_colab"``, which loads plotly.js itself
  and draws only once it has loaded;
* a Colab runtime may have no GPU attached: ``setup`` warns and says where to change it.

Nothing heavy is imported at module level: plotly is configured only when ``setup`` runs, and
torch is imported there only to ask whether CUDA is available.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import uuid
import warnings

#: Name under which ``setup`` registers the Colab renderer with ``plotly.io.renderers``.
COLAB_RENDERER = "dynat_colab"

_NO_GPU_MESSAGE = (
    "No GPU is attached to this Colab runtime, so training runs on the CPU. The 'smoke' and "
    "'cpu' profiles still work; for the 'gpu' profile choose Runtime > Change runtime type > "
    "a GPU (e.g. T4), then run the notebook again from the top."
)


def on_colab() -> bool:
    """True when this kernel runs on Google Colab.

    Colab's kernel imports ``google.colab`` at start-up; the environment variable is a second
    signal that survives a kernel in which that module was not imported yet.
    """
    if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no 'google' namespace package at all
        return False


def plotly_cdn_url() -> str:
    """The CDN address of the plotly.js that matches the installed plotly (for the Colab renderer)."""
    from plotly.offline import get_plotlyjs_version

    return f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"


def figure_html(fig_dict: dict, plotlyjs_url: str) -> str:
    """HTML that draws one plotly figure, loading plotly.js from ``plotlyjs_url`` if needed.

    The script waits for the library to load before drawing (and reuses it when a previous figure
    already loaded it), so it works wherever inline scripts run, including inside widgets. The
    box is as tall as the figure's layout asks (plotly's default, 525 px, otherwise).
    """
    height = int(fig_dict.get("layout", {}).get("height") or 525)
    div_id = f"dynat-fig-{uuid.uuid4().hex}"
    # "</" inside a string (a title, say) must not end the <script> early.
    fig_json = json.dumps(fig_dict, cls=_plotly_json_encoder()).replace("</", "<\\/")
    return f"""<div id="{div_id}" class="plotly-graph-div" style="height:{height}px; width:100%;"></div>
<script type="text/javascript">
(function () {{
  var fig = {fig_json};
  function draw() {{
    var gd = document.getElementById("{div_id}");
    if (gd) {{ window.Plotly.newPlot(gd, fig.data || [], fig.layout || {{}}, {{responsive: true}}); }}
  }}
  if (window.Plotly) {{ draw(); return; }}
  var src = {json.dumps(plotlyjs_url)};
  var tag = document.querySelector('script[data-dynat-plotly="' + src + '"]');
  if (!tag) {{
    tag = document.createElement("script");
    tag.src = src;
    tag.setAttribute("data-dynat-plotly", src);
    document.head.appendChild(tag);
  }}
  tag.addEventListener("load", draw);
}})();
</script>"""


def _plotly_json_encoder():
    from plotly.utils import PlotlyJSONEncoder

    return PlotlyJSONEncoder


def register_colab_renderer(plotlyjs_url: str | None = None) -> str:
    """Register the renderer ``"dynat_colab"`` with plotly and return its name.

    Built on plotly's ``MimetypeRenderer``: a figure becomes one ``text/html`` output made by
    :func:`figure_html`.
    """
    import plotly.io as pio
    from plotly.io.base_renderers import MimetypeRenderer

    url = plotlyjs_url or plotly_cdn_url()

    class _ColabRenderer(MimetypeRenderer):
        """plotly figures as self-loading HTML (see :func:`figure_html`)."""

        def to_mimebundle(self, fig_dict):
            return {"text/html": figure_html(fig_dict, url)}

    pio.renderers[COLAB_RENDERER] = _ColabRenderer()
    return COLAB_RENDERER


def _setup_colab() -> None:
    """Enable Colab's custom widget manager and the plotly renderer that works there."""
    from google.colab import output  # type: ignore[import-not-found]

    output.enable_custom_widget_manager()
    import plotly.io as pio

    pio.renderers.default = register_colab_renderer()


def setup(*, quiet: bool = False) -> dict:
    """Prepare widgets and plotly for the environment this notebook runs in, and report it.

    Returns a dict: ``colab`` (running on Colab), ``cuda`` (a CUDA GPU is usable), ``device``
    (``"cuda"`` or ``"cpu"``) and ``plotly_renderer`` (plotly's default renderer after set-up).
    Prints one line saying so unless ``quiet``. On Colab without a GPU it warns (the lesson still
    runs, on the CPU).
    """
    import torch

    colab = on_colab()
    cuda = torch.cuda.is_available()
    if colab:
        _setup_colab()
        if not cuda:
            warnings.warn(_NO_GPU_MESSAGE, stacklevel=2)
    import plotly.io as pio

    info = {
        "colab": colab,
        "cuda": cuda,
        "device": "cuda" if cuda else "cpu",
        "plotly_renderer": pio.renderers.default,
    }
    if not quiet:
        where = "Colab" if colab else "Jupyter"
        print(f"dynat-lite set-up: {where}, device {info['device']}, torch {torch.__version__}")
    return info

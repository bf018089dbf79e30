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

After the parameters cell, one call builds everything a lesson shares with the others (see
:func:`lesson`)::

    L = lesson(PROFILE, DATASET, DEVICE, SEED, OUT_DIR, MODELS_DIR, epochs=EPOCHS,
               data_root="../data")
    cfg, ds, device = L.cfg, L.ds, L.device
    standard = L.trained("standard")      # trained now, or loaded from MODELS_DIR
    L.results["clean"] = 0.9
    L.save_results()                      # OUT_DIR/results.json
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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


# ------------------------------------------------------------------------------ one lesson's set-up
#: Config fields that decide which images a run sees: a model trained with other values of these
#: needs its own dataset, not the lesson's.
DATA_FIELDS = ("dataset", "n_train", "n_test", "seed")

#: Where the lessons find the data: they run with the notebooks/ folder as working directory.
LESSON_DATA_ROOT = "../data"


@dataclass
class Lesson:
    """What a lesson shares with the others: made by :func:`lesson`, read through its fields.

    ``cfg`` is the profile's :class:`~dynat_lite.train.Config` with the lesson's settings (for
    the method Config defaults to; :meth:`config` gives any method's); ``ds`` the dataset,
    ``device`` the torch device, ``results`` the dict that :meth:`save_results` writes.
    """

    profile: str
    cfg: Any                       # train.Config
    ds: Any                        # data.Dataset
    device: Any                    # torch.device
    out_dir: Path
    models_dir: Path
    settings: dict                 # the Config fields the lesson overrides (None values left out)
    results: dict = field(default_factory=dict)
    progress: Callable | None = None
    retrain: bool = False          # True: train every model, never load a shipped one
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def classes(self) -> list[str]:
        """The dataset's class names, index = label."""
        return self.ds.classes

    def config(self, method: str, **settings):
        """The Config of ``method`` in this lesson: the profile, the lesson's settings, then
        ``settings`` (None values left out). Every lesson builds its configs this way, so a
        model one lesson trains is the model the next one finds."""
        from . import train

        return train.config(self.profile, **{**self.settings, "method": method,
                                             **_given(settings)})

    def trained(self, method: str, *, shipped: bool = True, **settings):
        """The ``method`` model of this lesson (``settings`` overriding its config), shared
        between lessons: loaded from ``models_dir`` if a finished run of exactly this config is
        there, else from the models the kit ships (``lesson_models``; not with ``shipped=False``
        or the lesson's ``retrain``), resumed if an interrupted run is there, trained now
        otherwise.

        Returns a :class:`~dynat_lite.train.Result`: ``.target`` (and ``.guide`` for methods
        with one) in eval mode on the lesson's device, ``.history`` one record per epoch.
        """
        from . import lesson_models, train

        cfg = self.config(method, **settings)
        if shipped and not self.retrain:
            name = lesson_models.install(cfg, train.run_folder(cfg, self.models_dir))
            if name is not None:
                print(f"{method}: {lesson_models.describe(name)}")
        same_data = all(getattr(cfg, f) == getattr(self.cfg, f) for f in DATA_FIELDS)
        return train.fit_or_load(cfg, self.models_dir, dataset=self.ds if same_data else None,
                                 progress=self.progress if self.progress is not None else False)

    def generator(self, seed: int | None = None):
        """A torch.Generator on the lesson's device, seeded with ``seed`` (default: the
        lesson's seed): pass it to an attack and its random start is the same on every run."""
        import torch

        return torch.Generator(device=self.device).manual_seed(
            self.cfg.seed if seed is None else seed)

    @property
    def results_file(self) -> Path:
        """Where :meth:`save_results` writes: ``out_dir/results.json``."""
        return self.out_dir / "results.json"

    def save_results(self, quiet: bool = False) -> None:
        """Write ``results`` (plus ``seconds``, the time since the set-up) to
        :attr:`results_file`, and say so unless ``quiet``. Tensors become lists."""
        self.results["seconds"] = round(time.perf_counter() - self.t_start, 1)
        self.results_file.write_text(json.dumps(self.results, indent=1, default=_plain))
        if not quiet:
            print(f"wrote {self.results_file} after {self.results['seconds']} s")

    def __str__(self) -> str:
        c = self.cfg
        return (f"{self.ds}\nprofile {self.profile}: {c.model}, {c.epochs} epochs of "
                f"{len(self.ds.y_train)} images, batch {c.batch_size}, device {self.device}")


def lesson(profile: str, dataset: str | None = None, device: str = "auto", seed: int = 0,
           out_dir: str | Path = "../runs/lesson", models_dir: str | Path = "../runs/models", *,
           progress: Callable | bool = True, quiet: bool = False, retrain: bool = False,
           **settings) -> Lesson:
    """Set up a lesson from its parameters cell; the lesson's first cell after the parameters::

        L = lesson(PROFILE, DATASET, DEVICE, SEED, OUT_DIR, MODELS_DIR, epochs=EPOCHS,
                   data_root="../data")

    * ``profile``: a profile of ``train.PROFILES`` ("smoke", "cpu", "gpu", "paper").
    * ``dataset``: None for the profile's; else "synthetic", "cifar10" or a path to an .npz.
    * ``device``: "auto" (the GPU if there is one), "cpu", "cuda", ...
    * ``seed``: seeds torch's global generator now, and every config (model initialisation,
      batches, the data subsets).
    * ``out_dir``: created if missing; :meth:`Lesson.save_results` writes results.json there.
    * ``models_dir``: where :meth:`Lesson.trained` keeps one folder per trained config, shared
      by all lessons.
    * ``settings``: any other Config field (``epochs=3``, ``n_train=4000``, ...); a None value
      means "the profile's", so a parameter like ``EPOCHS = None`` can be passed straight on.
      ``data_root`` defaults to "../data" (the lessons run in notebooks/); write it in the
      lesson's call all the same: the student copies, one folder deeper, get it rewritten to
      "../../data" with the lesson's other relative paths.
    * ``progress``: True for notebook progress bars (tqdm.auto), False for none, or a tqdm-like
      callable. ``quiet``: do not print the summary (dataset, model, epochs, device).
    * ``retrain``: True to train every model the lesson asks for, never loading one of the
      trained models the kit ships for the ``cpu`` and ``smoke`` profiles (``lesson_models``).

    Loads the dataset once (``L.ds``), resolves the device (``L.device``) and starts
    ``L.results`` with the profile, the dataset's name and the seed. Raises ValueError for an
    unknown profile or setting, naming the valid ones.
    """
    import dataclasses

    import torch

    from . import data, train

    if profile not in train.PROFILES:
        raise ValueError(f"Unknown profile {profile!r}. Valid: {', '.join(train.PROFILES)}.")
    fields = {f.name for f in dataclasses.fields(train.Config)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ValueError(f"lesson() got unknown setting(s) {unknown}; pass Config fields only: "
                         f"{', '.join(sorted(fields - {'method'}))}.")
    if "method" in settings:
        raise ValueError("lesson() sets up no single method: pass it to L.trained(method) or "
                         "L.config(method) instead.")
    given = _given({"dataset": dataset, "device": device, "seed": seed, **settings})
    given.setdefault("data_root", LESSON_DATA_ROOT)
    torch.manual_seed(seed)
    cfg = train.config(profile, **given)
    ds = data.load(cfg.dataset, root=cfg.data_root, n_train=cfg.n_train, n_test=cfg.n_test,
                   seed=cfg.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if progress is True:
        from tqdm.auto import tqdm as progress
    L = Lesson(profile=profile, cfg=cfg, ds=ds, device=train.resolve_device(cfg.device),
               out_dir=out, models_dir=Path(models_dir), settings=given,
               results={"profile": profile, "dataset": ds.name, "seed": seed},
               progress=progress or None, retrain=bool(retrain))
    if not quiet:
        print(L)
    return L


def _given(settings: dict) -> dict:
    """``settings`` without the entries whose value is None ("use the profile's")."""
    return {k: v for k, v in settings.items() if v is not None}


def _plain(obj):
    """JSON fallback for ``save_results``: tensors and arrays as lists, paths as strings."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"results[...] holds a {type(obj).__name__}, which JSON cannot store; "
                    f"store numbers, strings, lists or dicts.")

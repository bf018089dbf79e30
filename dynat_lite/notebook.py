"""Set-up for the lessons: the same first cell works in JupyterLab, on Colab and under papermill.

Imports nothing heavy at module level; plotly is configured only when ``setup`` runs.
"""
from __future__ import annotations

import sys


def on_colab() -> bool:
    return "google.colab" in sys.modules


def setup() -> dict:
    """Prepare widgets and plotly for the environment the notebook runs in; report it."""
    import torch

    info = {"colab": on_colab(), "cuda": torch.cuda.is_available()}
    if info["colab"]:
        from google.colab import output  # type: ignore

        output.enable_custom_widget_manager()
        import plotly.io as pio

        pio.renderers.default = "colab"
    return info

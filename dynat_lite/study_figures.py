"""The studies' figures: robust accuracy per epoch, clean vs robust accuracy with intervals, and a
switch on vs off, from the summaries and histories of ``dynat_lite.study``. Pure functions, data in,
figure out, in the kit's one look (``plotstyle``); it imports nothing else of the package.
"""
from __future__ import annotations

import plotly.graph_objects as go

from .plotstyle import (
    BLACK, BLUE, FIG_WIDTH, PURPLE, SYMBOLS, _bar_style, _finish, _line_style, _percent_axis,
    series_colors)


# ----------------------------------------------------------------------------------- studies
#: How a study's run names (``dynat_nocf-s1``: a configuration and a seed) are shown.
STUDY_NAMES = {"dynat": "DYNAT", "dynat_nocf": "DYNAT, no clean forward", "pgd_at": "PGD-AT",
               "pgd_at_cf": "PGD-AT + clean forward", "trades": "TRADES", "lbgat": "LBGAT",
               "standard": "standard", "pgd_at_gauss": "PGD-AT, DYNAT's start",
               "dynat_static": "DYNAT, static labels",
               "dynat_guide_init": "DYNAT, pre-trained guide (not the paper's)",
               "dynat_label_warmup": "DYNAT, y for the first steps (not the paper's)"}


def study_label(run: str) -> tuple[str, int]:
    """'dynat_nocf-s1' -> ('DYNAT, no clean forward', 1)."""
    config, seed = run.rsplit("-s", 1)
    return STUDY_NAMES.get(config, config), int(seed)


def _study_colors(runs) -> dict[str, str]:
    labels = list(dict.fromkeys(study_label(r)[0] for r in runs))
    return series_colors(labels)


def study_curves(histories: dict, *, title: str = "Robust accuracy after every epoch",
                 width: int = FIG_WIDTH):
    """Robust overfitting: PGD accuracy on test images (solid) and on training images (dotted)
    after every epoch; one colour per method, one line per seed; a star on the best test epoch."""
    colors = _study_colors(histories)
    fig = go.Figure()
    for run, hist in histories.items():
        label, seed = study_label(run)
        color = colors[label]
        epochs = [h["epoch"] for h in hist]
        test = [100 * h["test_pgd"] for h in hist]
        fig.add_trace(go.Scatter(x=epochs, y=test, name=f"{label}, seed {seed}: test",
                                 legendgroup=run, **_line_style(color)))
        if "train_pgd" in hist[0]:
            fig.add_trace(go.Scatter(x=epochs, y=[100 * h["train_pgd"] for h in hist],
                                     name=f"{label}, seed {seed}: training", mode="lines",
                                     line=dict(color=color, width=2, dash="dot"),
                                     legendgroup=run))
        best = max(range(len(test)), key=test.__getitem__)
        fig.add_trace(go.Scatter(x=[epochs[best]], y=[test[best]], mode="markers",
                                 marker=dict(color=color, size=14, symbol="star",
                                             line=dict(color=BLACK, width=1)),
                                 name=f"{label}, seed {seed}: best test epoch",
                                 legendgroup=run, showlegend=False))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="PGD-10 accuracy (%)", ticksuffix="%")
    return _finish(fig, title + "<br><sup>solid: test images; dotted: training images; "
                   "★ best test epoch</sup>", width=width, height=460,
                   legend=dict(font=dict(size=10)))


def study_tradeoff(rows: list[dict], robust: str = "pgd20", *,
                   title: str = "Clean against robust accuracy, with 95 % intervals",
                   robust_title: str | None = None, width: int = FIG_WIDTH):
    """One point per run: clean accuracy against robust accuracy, both with their binomial 95 %
    intervals as error bars; one colour (and marker) per method, seeds labelled."""
    colors = _study_colors([r["run"] for r in rows])
    fig = go.Figure()
    shown = set()
    for r in rows:
        label, seed = study_label(r["run"])
        color = colors[label]
        x, y = 100 * r[robust], 100 * r["clean"]
        fig.add_trace(go.Scatter(
            x=[x], y=[y], mode="markers+text", text=[f"s{seed}"], textposition="top right",
            textfont=dict(size=10, color=color), name=label, legendgroup=label,
            showlegend=label not in shown,
            marker=dict(color=color, size=11, symbol=SYMBOLS.get(color, "circle"),
                        line=dict(color=BLACK, width=0.5)),
            error_x=dict(type="data", symmetric=False, array=[100 * r[robust + "_hi"] - x],
                         arrayminus=[x - 100 * r[robust + "_lo"]], color=color, thickness=1),
            error_y=dict(type="data", symmetric=False, array=[100 * r["clean_hi"] - y],
                         arrayminus=[y - 100 * r["clean_lo"]], color=color, thickness=1)))
        shown.add(label)
    fig.update_xaxes(title_text=f"{robust_title or robust} accuracy (%)", ticksuffix="%")
    fig.update_yaxes(title_text="clean accuracy (%)", ticksuffix="%")
    return _finish(fig, title, width=width, height=460, legend=dict(font=dict(size=11)))


def study_pairs(rows: list[dict], pairs, metric: str = "pgd20", *, metric_title: str | None = None,
                title: str = "With and without the target's clean forward",
                width: int = FIG_WIDTH):
    """Paired bars: for each ``(on, off, label)`` the mean ``metric`` over the seeds of the runs
    named ``on-s*`` and ``off-s*``; every seed drawn as a marker on its bar."""
    fig = go.Figure()
    for name, pick, color in (("clean forward on", 0, BLUE), ("clean forward off", 1, PURPLE)):
        labels, means, seed_x, seed_y = [], [], [], []
        for pair in pairs:
            vals = [100 * r[metric] for r in rows if r["run"].rsplit("-s", 1)[0] == pair[pick]]
            if vals:
                labels.append(pair[2])
                means.append(sum(vals) / len(vals))
                seed_x += [pair[2]] * len(vals)
                seed_y += vals
        fig.add_trace(go.Bar(x=labels, y=means, name=name, offsetgroup=name,
                             text=[f"{v:.1f}%" for v in means], textposition="outside",
                             **_bar_style(color)))
        fig.add_trace(go.Scatter(x=seed_x, y=seed_y, mode="markers", offsetgroup=name,
                                 name=f"{name}: each seed", showlegend=False,
                                 marker=dict(color=BLACK, size=7, symbol="line-ew-open",
                                             line=dict(width=2))))
    fig.update_layout(barmode="group", scattermode="group")
    fig.update_xaxes(title_text="method")
    _percent_axis(fig, f"{metric_title or metric} accuracy (%), mean of seeds")
    return _finish(fig, title + "<br><sup>bars: mean over seeds; dashes: each seed</sup>",
                   width=width, height=380)

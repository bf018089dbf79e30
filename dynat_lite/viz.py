"""Plotly figures for the lessons: pure functions, data in, figure out.

Every function takes plain data (tensors, arrays or lists: images in [0, 1] NCHW, integer labels,
class names) and returns a ``plotly.graph_objects.Figure`` with a title, axis titles with units
and class names where classes appear. Nothing here trains, attacks or displays anything; the
widgets in :mod:`dynat_lite.widgets` and the notebooks call these and show the result.

Every student can read the figures: one colour-blind-safe palette, right and wrong marked by
glyphs as well as colours, one colour per method, figures that fit a notebook (``plotstyle``).
The studies' figures are in ``study_figures`` and re-exported here (``viz.study_curves``, ...).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .plotstyle import (  # noqa: F401  (re-exported: viz.BLUE, viz.FIG_WIDTH, ...)
    BLACK, BLUE, CAPTION_SIZE, CHAR_EM, FIG_WIDTH, GREEN, GREY, METHOD_COLORS, ORANGE, PALETTE,
    PATTERNS, PURPLE, RIGHT, RIGHT_MARK, SKY, SUBTITLE_SIZE, SYMBOLS, TITLE_SIZE, VERMILLION,
    WRONG, WRONG_MARK, _LINE, _PAD, _bar_style, _finish, _hide_axes, _line_style, _name,
    _percent_axis, amplify, fit_title, image_uint8, mark, method_of, series_colors, to_numpy,
    verdict_color, wrap)
from .study_figures import (STUDY_NAMES, study_curves, study_label,  # noqa: F401
                            study_pairs, study_tradeoff)


# -------------------------------------------------------------------------------- image grids
def image_grid(images, captions: Sequence[str] | None = None, *, cols: int = 8,
               title: str = "Images", caption_colors: Sequence[str] | None = None,
               row_titles: Sequence[str] | None = None, size: int = 96,
               width: int = FIG_WIDTH) -> go.Figure:
    """Images in a grid, each with a caption above it (e.g. "✓ cat 93%").

    ``caption_colors`` colours each caption (e.g. :data:`RIGHT`, :data:`WRONG`); ``row_titles``
    names the rows on the left. ``size`` is the largest pixel size of one image: images shrink
    so that the figure is at most ``width`` px wide. Captions too long for an image's width are
    wrapped onto more lines.
    """
    pics = image_uint8(images)
    n = len(pics)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    captions = list(captions) if captions is not None else [""] * n
    if len(captions) != n:
        raise ValueError(f"Got {n} images but {len(captions)} captions.")
    left, right, gap = (96 if row_titles is not None else 12), 12, 6
    size = int(max(24, min(size, (width - left - right - (cols - 1) * gap) // cols)))
    per_line = (size + gap) / (CHAR_EM * CAPTION_SIZE)
    captions = ["<br>".join(line for part in c.split("<br>") for line in wrap(part, per_line))
                for c in captions]
    cap_h = int(max(c.count("<br>") + 1 for c in captions) * _LINE * CAPTION_SIZE) + 6
    plot_w, plot_h = cols * size + (cols - 1) * gap, rows * size + (rows - 1) * cap_h
    # make_subplots skips empty titles, which would shift every later caption: pad with " ".
    titles = [c or " " for c in captions] + [" "] * (rows * cols - n)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                        horizontal_spacing=gap / plot_w if cols > 1 else 0,
                        vertical_spacing=cap_h / plot_h if rows > 1 else 0)
    for i, pic in enumerate(pics):
        fig.add_trace(go.Image(z=pic, hovertemplate=captions[i] + "<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    for i, ann in enumerate(fig.layout.annotations[:n]):
        ann.font = dict(size=CAPTION_SIZE, color=caption_colors[i] if caption_colors else BLACK)
    for r, name in enumerate(row_titles or []):
        top = 1 - r * (size + cap_h) / plot_h
        fig.add_annotation(text="<br>".join(wrap(str(name), (left - 16) / (CHAR_EM * 12))),
                           xref="paper", yref="paper", x=0, xshift=-8, xanchor="right",
                           y=top - size / 2 / plot_h, yanchor="middle", showarrow=False,
                           align="right", font=dict(size=12, color=BLACK))
    _hide_axes(fig)
    return _finish(fig, title, width=left + plot_w + right, height=plot_h + 12, left=left,
                   right=right, bottom=12, top_extra=cap_h)


def adversarial_examples(x, x_adv, truth, clean_pred, adv_pred, classes, *, eps: float,
                         title: str = "Clean, perturbation and adversarial images",
                         perturbation_scale: float | None = None) -> go.Figure:
    """Three rows over the same images: clean (with the prediction), the perturbation
    x_adv - x amplified to be visible, and the adversarial image (with the prediction).

    The perturbation row maps ±``perturbation_scale`` (default: ``eps``) to full contrast; pass
    one scale for several ε (as the ε explorer does) so that the rows can be compared.
    """
    x, x_adv = to_numpy(x), to_numpy(x_adv)
    truth, clean_pred, adv_pred = (to_numpy(a).astype(int) for a in (truth, clean_pred, adv_pred))
    n = len(x)
    scale = eps if perturbation_scale is None else perturbation_scale
    if scale <= 0:
        raise ValueError(f"The perturbation needs a positive scale: got eps = {eps} and "
                         f"perturbation_scale = {perturbation_scale}; pass perturbation_scale > 0.")
    caps = ([f"{mark(p == t)} {_name(classes, p)}" for p, t in zip(clean_pred, truth)] + [""] * n
            + [f"{mark(p == t)} {_name(classes, p)}" for p, t in zip(adv_pred, truth)])
    colors = ([verdict_color(p == t) for p, t in zip(clean_pred, truth)] + [BLACK] * n
              + [verdict_color(p == t) for p, t in zip(adv_pred, truth)])
    images = np.concatenate([x, amplify(x_adv - x, scale), x_adv])
    factor = f"×{0.5 / scale:.0f}"
    same = (f", the same for every ε (±{scale * 255:.3g}/255 = full contrast)"
            if perturbation_scale is not None else "")
    return image_grid(images, caps, cols=n, caption_colors=colors,
                      row_titles=["clean", f"perturbation {factor}", "adversarial"],
                      title=f"{title} (ε = {eps * 255:.3g}/255)<br><sup>captions: the model's "
                            f"prediction, {RIGHT_MARK} right (blue), {WRONG_MARK} wrong "
                            f"(orange)</sup><br><sup>perturbation x_adv − x: grey = none, "
                            f"amplified {factor}{same}</sup>")


# ------------------------------------------------------------------------------------- curves
def accuracy_vs_eps(eps: Sequence[float], curves: Mapping[str, Sequence[float]], *,
                    title: str = "Accuracy as the budget ε grows",
                    attack: str = "PGD") -> go.Figure:
    """One line per model (or attack): accuracy (fractions in [0, 1]) against ε (in [0, 1],
    drawn in units of 1/255)."""
    xs = [e * 255 for e in eps]
    colors = series_colors(list(curves))
    fig = go.Figure()
    for name, acc in curves.items():
        fig.add_trace(go.Scatter(x=xs, y=[100 * a for a in acc], name=name,
                                 **_line_style(colors[name])))
    fig.update_layout(xaxis_title=f"{attack} budget ε (× 1/255)", legend_title_text="")
    _percent_axis(fig)
    return _finish(fig, title, width=640, height=360)


def history(records: Mapping[str, Sequence[Mapping]] | Sequence[Mapping], *,
            title: str = "Training history") -> go.Figure:
    """Training curves from ``train.fit`` histories, one panel each: the training loss, clean
    and PGD test accuracy, and (for methods with a guide) the agreement of the dynamic labels
    with the ground truth. One colour per run in every panel.

    ``records`` is one history (a list of per-epoch dicts) or a dict name -> history.
    """
    runs = dict(records) if isinstance(records, Mapping) else {"run": records}
    colors = series_colors(list(runs))
    panels = (("loss", "training loss", 1, 1), ("test_clean", "clean test accuracy", 1, 2),
              ("test_pgd", "PGD test accuracy", 2, 1),
              ("label_agreement", "label agreement (train)", 2, 2))
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.14, vertical_spacing=0.2,
                        subplot_titles=[p[1] for p in panels])
    for name, hist in runs.items():
        ep = [r["epoch"] for r in hist]
        for key, label, row, col in panels:
            scale = 1 if key == "loss" else 100
            fig.add_trace(go.Scatter(x=ep, y=[scale * r[key] for r in hist], name=name,
                                     legendgroup=name, showlegend=key == "loss",
                                     hovertemplate=f"{name}, {label}: %{{y:.3g}}<extra></extra>",
                                     **_line_style(colors[name])), row=row, col=col)
    fig.update_xaxes(title_text="epoch (passes over the training set)", dtick=1)
    fig.update_yaxes(title_text="loss (nats)", row=1, col=1)
    _percent_axis(fig, "accuracy (%)", row=1, col=2)
    _percent_axis(fig, "accuracy (%)", row=2, col=1)
    _percent_axis(fig, "labels = ground truth (%)", row=2, col=2)
    return _finish(fig, title, width=FIG_WIDTH, height=620, top_extra=30,
                   legend=dict(title_text=""))


#: The per-step diagnostics of a training run (``diagnostics.sample``): each field's panel
#: title, its axis title (with the unit), and whether it is a share (drawn in percent).
STEP_FIELDS = {
    "label_agreement": ("training labels = ground truth", "labels = y (%)", True),
    "logit_spread": ("logit spread (0: a flat output)", "std over classes (logit units)", False),
    "clean_accuracy": ("clean accuracy on the batch", "accuracy (%)", True),
    "top_class_share": ("batch predicted as the top class", "share of the batch (%)", True),
    "adv_loss": ("the target's adversarial loss", "loss (nats)", False),
    "dead_units": ("dead penultimate units", "zero on every image (%)", True),
}


def step_diagnostics(histories: Mapping[str, Sequence[Mapping]],
                     fields: Sequence[str] = ("label_agreement", "logit_spread", "dead_units",
                                              "adv_loss"), *,
                     title: str = "Inside the target, step by step",
                     thresholds: Mapping[str, float] | None = None) -> go.Figure:
    """The per-step diagnostics of ``train.fit`` histories: one panel per field of ``fields``
    (keys of :data:`STEP_FIELDS`), x = the optimizer step, one line per run in the same colour
    in every panel.

    ``histories`` maps a run's name to its history (per-epoch records); the points are the
    records' ``steps`` lists, epoch after epoch (a record without ``steps`` adds none).
    ``thresholds`` (field -> value, e.g. the collapse rule's) draws a dotted line in that
    field's panel.
    """
    unknown = [f for f in fields if f not in STEP_FIELDS]
    if unknown:
        raise ValueError(f"Unknown diagnostic field(s) {unknown}. Valid: "
                         f"{', '.join(STEP_FIELDS)}.")
    runs = dict(histories)
    colors = series_colors(list(runs))
    cols = 1 if len(fields) == 1 else 2
    rows = -(-len(fields) // cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.14,
                        vertical_spacing=0.42 / rows,
                        subplot_titles=[STEP_FIELDS[f][0] for f in fields])
    for name, hist in runs.items():
        samples = [(r["epoch"], s) for r in hist for s in r.get("steps") or []]
        style = _line_style(colors[name])
        style["marker"]["size"] = 5  # many samples: smaller markers than the epoch curves'
        for i, field in enumerate(fields):
            row, col = i // cols + 1, i % cols + 1
            scale = 100 if STEP_FIELDS[field][2] else 1
            fig.add_trace(go.Scatter(
                x=[s["step"] for _, s in samples], y=[scale * s[field] for _, s in samples],
                customdata=[e for e, _ in samples], name=name, legendgroup=name,
                showlegend=i == 0,
                hovertemplate=(f"{name}, step %{{x}} (epoch %{{customdata}}): "
                               f"%{{y:.3g}}<extra></extra>"),
                **style), row=row, col=col)
    for i, field in enumerate(fields):
        row, col = i // cols + 1, i % cols + 1
        _, axis, share = STEP_FIELDS[field]
        if share:
            _percent_axis(fig, axis, row=row, col=col)
        else:
            fig.update_yaxes(title_text=axis, rangemode="tozero", row=row, col=col)
        if thresholds and field in thresholds:
            value = thresholds[field]
            fig.add_hline(y=(100 if share else 1) * value, row=row, col=col,
                          line=dict(dash="dot", color=GREY, width=1.5),
                          annotation_text=f"rule: {value:g}", annotation_position="top right",
                          annotation_font=dict(size=CAPTION_SIZE, color=GREY))
    fig.update_xaxes(title_text="optimizer step (mini-batch updates)", rangemode="tozero")
    plot_h = 300 * rows - 20  # px: the plot area's height (the legend goes in the margin below)
    return _finish(fig, title, width=FIG_WIDTH, height=plot_h + 100, top_extra=30, bottom=100,
                   legend=dict(title_text="", orientation="h", yanchor="top",
                               y=-64 / plot_h, x=0))  # below the x axis' title


def bar_comparison(results: Mapping[str, Mapping[str, float]], *,
                   title: str = "Accuracy by model and attack", xaxis: str = "model",
                   legend: str = "attack", yaxis: str = "accuracy (%)") -> go.Figure:
    """Grouped bars: ``results[model][attack]`` accuracies (fractions) for each model (or any
    two-level table of fractions: one group per outer key, one bar per inner key). Each bar
    carries its value; the series differ by colour and by fill pattern."""
    attacks = list(dict.fromkeys(a for r in results.values() for a in r))
    colors = series_colors(attacks)
    fig = go.Figure()
    for attack in attacks:
        vals = [100 * results[m].get(attack, float("nan")) for m in results]
        fig.add_trace(go.Bar(x=list(results), y=vals, name=attack,
                             text=[f"{v:.1f}" for v in vals], textposition="outside",
                             **_bar_style(colors[attack])))
    fig.update_layout(barmode="group", xaxis_title=xaxis, legend_title_text=legend,
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0))
    _percent_axis(fig, yaxis)
    fig.update_yaxes(range=[0, 112], tickvals=[0, 20, 40, 60, 80, 100])  # room for the labels
    return _finish(fig, title, width=FIG_WIDTH, height=440, bottom=70)


# -------------------------------------------------------------------------- dynamic labels
def probe_labels(images, labels, truth, confidence, classes, *, step: int | None = None,
                 cols: int = 8, title: str | None = None,
                 n_total: int | None = None) -> go.Figure:
    """The probe images with the guide's dynamic label and its confidence: ✓ in blue where the
    label equals the ground truth, ✗ in orange where it does not.

    The default title counts the images *shown*; ``n_total`` (the number of probe images in
    all) says that these are only the first of them.
    """
    labels, truth = to_numpy(labels).astype(int), to_numpy(truth).astype(int)
    conf = to_numpy(confidence).astype(float)
    caps = [f"{mark(l == t)} {_name(classes, l)}<br>{100 * c:.0f}%"
            for l, t, c in zip(labels, truth, conf)]
    colors = [verdict_color(l == t) for l, t in zip(labels, truth)]
    right, n = int((labels == truth).sum()), len(labels)
    if title is None:
        when = f" at step {step}" if step is not None else ""
        which = (f"the first {n} of the {n_total} probe images; "
                 if n_total is not None and n_total > n else "")
        title = (f"Dynamic labels{when}: {right} of these {n} shown agree with the ground "
                 f"truth<br><sup>{which}{RIGHT_MARK} blue: label = ground truth, "
                 f"{WRONG_MARK} orange: wrong; % = the guide's confidence</sup>")
    return image_grid(images, caps, cols=cols, caption_colors=colors, title=title, size=84)


def agreement_curve(steps: Sequence[int], agreement: Sequence[float], *,
                    current: int | None = None, chance: float | None = None,
                    title: str = "Dynamic labels vs ground truth over training",
                    n_probes: int | None = None) -> go.Figure:
    """Agreement (a fraction per recorded step) against the training step, with an optional
    dashed marker at the ``current`` step and a dotted line at chance level. ``n_probes`` (the
    number of probe images the agreement is over) is said in a subtitle."""
    fig = go.Figure(go.Scatter(x=list(steps), y=[100 * a for a in agreement], name="agreement",
                               **_line_style(BLUE)))
    if chance is not None:
        fig.add_hline(y=100 * chance, line=dict(dash="dot", color=GREY),
                      annotation_text="chance", annotation_position="bottom right")
    if current is not None:
        fig.add_vline(x=current, line=dict(color=BLACK, width=2, dash="dash"),
                      annotation_text=f"step {current}", annotation_position="top left")
    if n_probes is not None:
        title += f"<br><sup>agreement over all {n_probes} probe images</sup>"
    fig.update_layout(xaxis_title="guide training step (mini-batch updates)", showlegend=False)
    _percent_axis(fig, "labels = ground truth (%)")
    return _finish(fig, title, width=500, height=340)


def confusion(truth, labels, classes, *, title: str = "Dynamic label vs ground truth",
              normalize: bool = False) -> go.Figure:
    """Confusion matrix: rows the ground-truth class, columns the (dynamic) label given. Each
    non-empty cell shows its count of probe images with ✓ on the diagonal (the label is right)
    and ✗ off it; the diagonal is outlined. ``normalize`` shades each row by its fraction."""
    truth, labels = to_numpy(truth).astype(int), to_numpy(labels).astype(int)
    k = len(classes)
    m = np.zeros((k, k), dtype=float)
    np.add.at(m, (truth, labels), 1)
    z = m / np.maximum(m.sum(1, keepdims=True), 1) if normalize else m
    names = [str(c) for c in classes]
    text = [[f"{int(m[i, j])}{mark(i == j)}" if m[i, j] else "" for j in range(k)]
            for i in range(k)]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, colorscale=[[0, "#ffffff"], [1, BLUE]],
                               showscale=False, text=text, texttemplate="%{text}",
                               textfont=dict(size=11), customdata=m.astype(int),
                               hovertemplate="truth %{y}<br>label %{x}<br>%{customdata} probe "
                                             "images<extra></extra>"))
    for i in range(k):
        fig.add_shape(type="rect", x0=i - 0.5, x1=i + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line=dict(color=BLACK, width=1))
    fig.update_layout(xaxis_title="dynamic label (the guide's class)",
                      yaxis_title="ground truth (class)")
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-45)
    title += (f"<br><sup>cells: number of images, of {len(truth)}; {RIGHT_MARK} on the "
              f"diagonal: label right, {WRONG_MARK} off it: wrong</sup>")
    return _finish(fig, title, width=500, height=440, left=90, bottom=90)


def thin(n: int, most: int) -> list[int]:
    """Indices of at most about ``most`` evenly spaced items of ``n`` (always the first and the
    last)."""
    if n <= most:
        return list(range(n))
    stride = -(-(n - 1) // max(most - 1, 1))
    keep = list(range(0, n, stride))
    return keep if keep[-1] == n - 1 else keep + [n - 1]


def label_flips(steps: Sequence[int], labels, truth, classes, *, current: int | None = None,
                title: str = "Each probe image's dynamic label over training",
                max_columns: int = 120) -> go.Figure:
    """Probe x step map: blue where the label is right, orange and crossed (✗) where wrong; a
    black dot marks a flip (the label changed since the previous record).

    A record longer than ``max_columns`` is thinned to evenly spaced records (the subtitle says
    so), so that every cell stays wide enough for its glyph and the figure stays light; a dot
    then marks a change since the previous record *shown*.
    """
    labels, truth = to_numpy(labels).astype(int), to_numpy(truth).astype(int)  # (T, P), (P,)
    n_records = len(labels)
    keep = thin(n_records, max_columns)
    labels, steps = labels[keep], [list(steps)[i] for i in keep]
    n_steps, n_probes = labels.shape
    right = labels == truth[None]
    names = np.array([_name(classes, k) for k in range(max(len(classes), labels.max() + 1))])
    hover = np.array([[f"probe {p} ({names[truth[p]]})<br>step {s}: {names[labels[t, p]]} "
                       f"{mark(right[t, p])}" for t, s in enumerate(steps)]
                      for p in range(n_probes)])
    left, right_margin = 70, 20
    cell_w = (FIG_WIDTH - left - right_margin) / max(n_steps, 1)
    cell_h = float(np.clip(480 / max(n_probes, 1), 4, 14))
    glyph = int(np.clip(min(cell_w, cell_h) * 1.1, 4, 14))
    fig = go.Figure(go.Heatmap(
        z=right.T.astype(float), x=steps, y=list(range(n_probes)), zmin=0, zmax=1,
        colorscale=[[0, WRONG], [0.5, WRONG], [0.5, RIGHT], [1, RIGHT]], showscale=False,
        text=np.where(right.T, "", WRONG_MARK), texttemplate="%{text}",
        textfont=dict(size=glyph, color="white"), customdata=hover,
        hovertemplate="%{customdata}<extra></extra>"))
    flip_t, flip_p = np.nonzero(labels[1:] != labels[:-1])
    fig.add_trace(go.Scatter(x=[steps[t + 1] for t in flip_t], y=flip_p, mode="markers",
                             marker=dict(color=BLACK, size=max(3, glyph // 2)),
                             name="label flip", hoverinfo="skip"))
    if current is not None:
        fig.add_vline(x=current, line=dict(color=BLACK, width=2, dash="dash"))
    fig.update_layout(xaxis_title="guide training step (mini-batch updates)",
                      yaxis_title="probe image (index)", showlegend=False)
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_xaxes(showgrid=False)
    shown = (f"{n_steps} of the {n_records} records, evenly spaced; "
             if n_steps < n_records else "")
    since = "since the previous record shown" if shown else "at that step"
    title += (f"<br><sup>{shown}blue: label right; orange with {WRONG_MARK}: wrong; black dot: "
              f"the label flipped {since}</sup>")
    return _finish(fig, title, width=FIG_WIDTH, height=int(n_probes * cell_h) + 70, left=left,
                   right=right_margin)


# ---------------------------------------------------------------------------- inner optimizer
def pgd_trace(losses: Mapping[str, Sequence[float]], *,
              title: str = "The attacker's loss over the PGD steps",
              yaxis: str = "loss (nats, mean over the images)",
              current: int | None = None) -> go.Figure:
    """One line per objective: the loss the attacker maximizes, at the start and each step.
    A method's objective ("... (DYNAT)") takes the method's colour."""
    colors = series_colors(list(losses))
    fig = go.Figure()
    for name, values in losses.items():
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=list(values), name=name,
                                 **_line_style(colors[name])))
    if current is not None:
        fig.add_vline(x=current, line=dict(color=BLACK, width=2, dash="dash"))
    fig.update_layout(xaxis_title="PGD step (iterations; 0 = the random start)",
                      yaxis_title=yaxis, legend_title_text="objective")
    return _finish(fig, title, width=FIG_WIDTH, height=340)


def probabilities(probs: Mapping[str, Sequence[float]], classes, *, truth: int | None = None,
                  label: int | None = None,
                  title: str = "The target's prediction") -> go.Figure:
    """Grouped bars of class probabilities (e.g. clean vs after each attack) for one image.
    The true class is marked ✓ and a dynamic label that differs from it ✗."""
    names = [str(c) for c in classes]
    if truth is not None:
        names[truth] = f"{RIGHT_MARK} {names[truth]}<br>(truth)"
    if label is not None and label != truth:
        names[label] = f"{WRONG_MARK} {names[label]}<br>(dynamic label)"
    colors = series_colors(list(probs))
    fig = go.Figure()
    for name, p in probs.items():
        fig.add_trace(go.Bar(x=names, y=[100 * float(v) for v in p], name=name,
                             **_bar_style(colors[name])))
    fig.update_layout(barmode="group", xaxis_title="class", legend_title_text="",
                      legend=dict(orientation="h", yanchor="top", y=-0.3, x=0))
    _percent_axis(fig, "probability (%)")
    return _finish(fig, title, width=FIG_WIDTH, height=400, bottom=80)


def sweep(xs: Sequence[float], curves: Mapping[str, Sequence[float]], *, title: str,
          xaxis: str, yaxis: str = "accuracy (%)", percent: bool = True,
          log_x: bool = False) -> go.Figure:
    """Lines of values against a swept setting (e.g. accuracy against the number of PGD steps)."""
    colors = series_colors(list(curves))
    fig = go.Figure()
    for name, ys in curves.items():
        fig.add_trace(go.Scatter(x=list(xs), y=[100 * y if percent else y for y in ys],
                                 name=name, **_line_style(colors[name])))
    fig.update_layout(xaxis_title=xaxis, legend_title_text="")
    if log_x:
        fig.update_xaxes(type="log")
    if percent:
        _percent_axis(fig, yaxis)
    else:
        fig.update_yaxes(title_text=yaxis)
    return _finish(fig, title, width=FIG_WIDTH, height=360)


# ------------------------------------------------------------------------ comparing methods
def clean_vs_robust(rows: Sequence[Mapping], robust: str, *, robust_title: str | None = None,
                    title: str | None = None) -> go.Figure:
    """Clean vs robust accuracy, one point per method (as Figure 4 of the DYNAT paper): rows
    of ``compare`` (``method``, ``clean`` and the ``robust`` column, fractions); DYNAT and its
    variants as stars."""
    robust_title = robust_title or robust
    fig = go.Figure()
    colors = series_colors([r["method"] for r in rows])
    for r in rows:
        dynat = str(r["method"]).startswith("dynat")
        fig.add_trace(go.Scatter(
            x=[100 * r["clean"]], y=[100 * r[robust]], mode="markers+text", name=r["method"],
            text=[r["method"]], textposition="top center",
            marker=dict(size=14 if dynat else 10, symbol="star" if dynat else "circle",
                        color=colors[r["method"]]),
            hovertemplate=(f"{r['method']}<br>clean %{{x:.1f}} %<br>"
                           f"{robust_title} %{{y:.1f}} %<extra></extra>")))
    fig.update_layout(xaxis_title="clean accuracy (%)", yaxis_title=f"{robust_title} accuracy (%)",
                      showlegend=False)
    return _finish(fig, title or f"Clean vs robust accuracy ({robust_title})", width=FIG_WIDTH,
                   height=440)

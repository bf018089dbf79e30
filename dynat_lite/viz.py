"""Plotly figures for the lessons: pure functions, data in, figure out.

Every function takes plain data (tensors, arrays or lists: images in [0, 1] NCHW, integer labels,
class names) and returns a ``plotly.graph_objects.Figure`` with a title, axis labels and class
names where classes appear. Nothing here trains, attacks or displays anything; the widgets in
:mod:`dynat_lite.widgets` and the notebooks call these and show the result.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

RIGHT = "#1a9850"   # green: the label agrees with the ground truth
WRONG = "#d73027"   # red: it does not
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


# ------------------------------------------------------------------------------------ helpers
def to_numpy(a) -> np.ndarray:
    """A tensor, array or list as a numpy array (tensors are detached and moved to the CPU)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def image_uint8(images) -> np.ndarray:
    """Float images in [0, 1], NCHW (or CHW), as uint8 NHWC arrays that ``go.Image`` draws."""
    x = to_numpy(images).astype(np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"Expected images of shape (N, C, H, W) with C = 1 or 3, got {x.shape}.")
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def amplify(delta, eps: float) -> np.ndarray:
    """A perturbation in [-eps, eps] mapped to [0, 1] (grey = 0), so that it can be seen."""
    if eps <= 0:
        raise ValueError(f"eps must be positive to amplify a perturbation, got {eps}.")
    return np.clip(0.5 + 0.5 * to_numpy(delta) / eps, 0, 1)


def _name(classes: Sequence[str] | None, k: int) -> str:
    return str(classes[k]) if classes is not None and 0 <= k < len(classes) else str(k)


def _hide_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)


def _percent_axis(fig: go.Figure, title: str = "accuracy (%)", **where) -> None:
    fig.update_yaxes(title_text=title, range=[0, 101], ticksuffix="%", **where)


# -------------------------------------------------------------------------------- image grids
def image_grid(images, captions: Sequence[str] | None = None, *, cols: int = 8,
               title: str = "Images", caption_colors: Sequence[str] | None = None,
               row_titles: Sequence[str] | None = None, size: int = 96) -> go.Figure:
    """Images in a grid, each with a caption above it (e.g. "cat 93%").

    ``caption_colors`` colours each caption (e.g. green right, red wrong); ``row_titles`` names
    the rows on the left. ``size`` is the pixel size of one cell.
    """
    pics = image_uint8(images)
    n = len(pics)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    captions = list(captions) if captions is not None else [""] * n
    if len(captions) != n:
        raise ValueError(f"Got {n} images but {len(captions)} captions.")
    # make_subplots skips empty titles, which would shift every later caption: pad with " ".
    titles = [c or " " for c in captions] + [" "] * (rows * cols - n)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                        horizontal_spacing=0.01, vertical_spacing=0.3 / rows + 0.02,
                        row_titles=list(row_titles) if row_titles is not None else None)
    for i, pic in enumerate(pics):
        fig.add_trace(go.Image(z=pic, hovertemplate=captions[i] + "<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    for i, ann in enumerate(fig.layout.annotations[:n]):
        ann.font = dict(size=11, color=caption_colors[i] if caption_colors else "black")
    if row_titles is not None:
        for ann in fig.layout.annotations[len(titles):]:
            ann.update(x=-0.005, xanchor="right", textangle=-90, font=dict(size=13))
    _hide_axes(fig)
    fig.update_layout(title=dict(text=title), height=rows * size + 110,
                      width=max(cols * size + 120, 420), margin=dict(l=50, r=20, t=90, b=20))
    return fig


def adversarial_examples(x, x_adv, truth, clean_pred, adv_pred, classes, *, eps: float,
                         title: str = "Clean, perturbation and adversarial images") -> go.Figure:
    """Three rows over the same images: clean (with the prediction), the perturbation
    x_adv - x amplified to be visible, and the adversarial image (with the prediction)."""
    x, x_adv = to_numpy(x), to_numpy(x_adv)
    truth, clean_pred, adv_pred = (to_numpy(a).astype(int) for a in (truth, clean_pred, adv_pred))
    n = len(x)
    caps = ([f"{_name(classes, p)}" for p in clean_pred] + [""] * n
            + [f"{_name(classes, p)}" for p in adv_pred])
    colors = ([RIGHT if p == t else WRONG for p, t in zip(clean_pred, truth)] + ["black"] * n
              + [RIGHT if p == t else WRONG for p, t in zip(adv_pred, truth)])
    images = np.concatenate([x, amplify(x_adv - x, eps), x_adv])
    eps255 = eps * 255
    return image_grid(images, caps, cols=n, caption_colors=colors,
                      row_titles=["clean", f"perturbation ×{0.5 / eps:.0f}", "adversarial"],
                      title=f"{title} (ε = {eps255:.3g}/255)<br><sup>captions: the model's "
                            f"prediction, green right, red wrong</sup>")


# ------------------------------------------------------------------------------------- curves
def accuracy_vs_eps(eps: Sequence[float], curves: Mapping[str, Sequence[float]], *,
                    title: str = "Accuracy as the budget ε grows",
                    attack: str = "PGD") -> go.Figure:
    """One line per model (or attack): accuracy (fractions in [0, 1]) against ε (in [0, 1],
    drawn in units of 1/255)."""
    xs = [e * 255 for e in eps]
    fig = go.Figure()
    for i, (name, acc) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=xs, y=[100 * a for a in acc], mode="lines+markers", name=name,
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    fig.update_layout(title=dict(text=title), xaxis_title=f"{attack} budget ε (× 1/255)",
                      legend_title_text="", height=420, width=640)
    _percent_axis(fig)
    return fig


def history(records: Mapping[str, Sequence[Mapping]] | Sequence[Mapping], *,
            title: str = "Training history") -> go.Figure:
    """Training curves from ``train.fit`` histories: loss, clean and PGD accuracy, and (for
    methods with a guide) the agreement of the dynamic labels with the ground truth.

    ``records`` is one history (a list of per-epoch dicts) or a dict name -> history.
    """
    runs = dict(records) if isinstance(records, Mapping) else {"run": records}
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09, subplot_titles=(
        "training loss", "test accuracy (solid: clean, dashed: PGD)", "label agreement (train)"))
    for i, (name, hist) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        ep = [r["epoch"] for r in hist]
        fig.add_trace(go.Scatter(x=ep, y=[r["loss"] for r in hist], name=name, legendgroup=name,
                                 mode="lines+markers", line=dict(color=color)), row=1, col=1)
        fig.add_trace(go.Scatter(x=ep, y=[100 * r["test_clean"] for r in hist], legendgroup=name,
                                 name=f"{name} clean", showlegend=False, mode="lines+markers",
                                 line=dict(color=color)), row=1, col=2)
        fig.add_trace(go.Scatter(x=ep, y=[100 * r["test_pgd"] for r in hist], legendgroup=name,
                                 name=f"{name} PGD", showlegend=False, mode="lines+markers",
                                 line=dict(color=color, dash="dash")), row=1, col=2)
        fig.add_trace(go.Scatter(x=ep, y=[100 * r["label_agreement"] for r in hist],
                                 legendgroup=name, name=f"{name} agreement", showlegend=False,
                                 mode="lines+markers", line=dict(color=color)), row=1, col=3)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    _percent_axis(fig, row=1, col=2)
    _percent_axis(fig, "labels = ground truth (%)", row=1, col=3)
    fig.update_layout(title=dict(text=title), height=400, width=1100)
    return fig


def bar_comparison(results: Mapping[str, Mapping[str, float]], *,
                   title: str = "Accuracy by model and attack", xaxis: str = "model",
                   legend: str = "attack", yaxis: str = "accuracy (%)") -> go.Figure:
    """Grouped bars: ``results[model][attack]`` accuracies (fractions) for each model (or any
    two-level table of fractions: one group per outer key, one bar per inner key)."""
    attacks = list(dict.fromkeys(a for r in results.values() for a in r))
    fig = go.Figure()
    for i, attack in enumerate(attacks):
        vals = [100 * results[m].get(attack, float("nan")) for m in results]
        fig.add_trace(go.Bar(x=list(results), y=vals, name=attack,
                             marker_color=PALETTE[i % len(PALETTE)],
                             text=[f"{v:.1f}" for v in vals], textposition="outside"))
    fig.update_layout(title=dict(text=title), barmode="group", xaxis_title=xaxis,
                      legend_title_text=legend, height=440, width=760)
    _percent_axis(fig, yaxis)
    fig.update_yaxes(range=[0, 112], tickvals=[0, 20, 40, 60, 80, 100])  # room for the labels
    return fig


# -------------------------------------------------------------------------- dynamic labels
def probe_labels(images, labels, truth, confidence, classes, *, step: int | None = None,
                 cols: int = 8, title: str | None = None) -> go.Figure:
    """The probe images with the guide's dynamic label and its confidence, green where the
    label equals the ground truth and red where it does not."""
    labels, truth = to_numpy(labels).astype(int), to_numpy(truth).astype(int)
    conf = to_numpy(confidence).astype(float)
    caps = [f"{_name(classes, l)} {100 * c:.0f}%" for l, c in zip(labels, conf)]
    colors = [RIGHT if l == t else WRONG for l, t in zip(labels, truth)]
    right = int((labels == truth).sum())
    if title is None:
        when = f"at step {step}" if step is not None else ""
        title = (f"Dynamic labels {when}: {right} of {len(labels)} agree with the ground truth"
                 f"<br><sup>green: label = ground truth, red: wrong; % = the guide's confidence"
                 f"</sup>")
    return image_grid(images, caps, cols=cols, caption_colors=colors, title=title, size=80)


def agreement_curve(steps: Sequence[int], agreement: Sequence[float], *,
                    current: int | None = None, chance: float | None = None,
                    title: str = "Dynamic labels vs ground truth over training") -> go.Figure:
    """Agreement (a fraction per recorded step) against the training step, with an optional
    marker at the ``current`` step and a dotted line at chance level."""
    fig = go.Figure(go.Scatter(x=list(steps), y=[100 * a for a in agreement],
                               mode="lines+markers", name="agreement", line=dict(color=PALETTE[0])))
    if chance is not None:
        fig.add_hline(y=100 * chance, line=dict(dash="dot", color="grey"),
                      annotation_text="chance", annotation_position="bottom right")
    if current is not None:
        fig.add_vline(x=current, line=dict(color=WRONG, width=2),
                      annotation_text=f"step {current}", annotation_position="top left")
    fig.update_layout(title=dict(text=title), xaxis_title="guide training step", height=380,
                      width=560, showlegend=False)
    _percent_axis(fig, "labels = ground truth (%)")
    return fig


def confusion(truth, labels, classes, *, title: str = "Dynamic label vs ground truth",
              normalize: bool = False) -> go.Figure:
    """Confusion matrix: rows the ground-truth class, columns the (dynamic) label given."""
    truth, labels = to_numpy(truth).astype(int), to_numpy(labels).astype(int)
    k = len(classes)
    m = np.zeros((k, k), dtype=float)
    np.add.at(m, (truth, labels), 1)
    z = m / np.maximum(m.sum(1, keepdims=True), 1) if normalize else m
    names = [str(c) for c in classes]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, colorscale="Blues", showscale=False,
                               text=m.astype(int), texttemplate="%{text}",
                               hovertemplate="truth %{y}<br>label %{x}<br>count %{text}"
                                             "<extra></extra>"))
    fig.update_layout(title=dict(text=title), xaxis_title="dynamic label (guide's argmax)",
                      yaxis_title="ground truth", height=460, width=520)
    fig.update_yaxes(autorange="reversed")
    return fig


def label_flips(steps: Sequence[int], labels, truth, classes, *, current: int | None = None,
                title: str = "Each probe image's dynamic label over training") -> go.Figure:
    """Probe x step heatmap: green where the label is right, red where wrong; a black dot marks
    a flip (the label changed since the previous record)."""
    labels, truth = to_numpy(labels).astype(int), to_numpy(truth).astype(int)  # (T, P), (P,)
    steps = list(steps)
    right = (labels == truth[None]).astype(float).T  # (P, T)
    names = np.array([_name(classes, k) for k in range(max(len(classes), labels.max() + 1))])
    hover = np.array([[f"probe {p} ({names[truth[p]]})<br>step {s}: {names[labels[t, p]]}"
                       for t, s in enumerate(steps)] for p in range(labels.shape[1])])
    fig = go.Figure(go.Heatmap(z=right, x=steps, y=list(range(labels.shape[1])), zmin=0, zmax=1,
                               colorscale=[[0, WRONG], [0.5, WRONG], [0.5, RIGHT], [1, RIGHT]],
                               showscale=False, text=hover, hovertemplate="%{text}<extra></extra>"))
    flip_t, flip_p = np.nonzero(labels[1:] != labels[:-1])
    fig.add_trace(go.Scatter(x=[steps[t + 1] for t in flip_t], y=flip_p, mode="markers",
                             marker=dict(color="black", size=4), name="label flip",
                             hoverinfo="skip"))
    if current is not None:
        fig.add_vline(x=current, line=dict(color="black", width=2, dash="dash"))
    fig.update_layout(title=dict(text=title + "<br><sup>green: label right, red: wrong, "
                                            "black dot: the label flipped at that step</sup>"),
                      xaxis_title="guide training step", yaxis_title="probe image",
                      height=420, width=900, showlegend=False)
    fig.update_yaxes(autorange="reversed")
    return fig


# ---------------------------------------------------------------------------- inner optimizer
def pgd_trace(losses: Mapping[str, Sequence[float]], *,
              title: str = "The attacker's loss over the PGD steps",
              yaxis: str = "loss (mean over the images)", current: int | None = None) -> go.Figure:
    """One line per objective: the loss the attacker maximizes, at the start and each step."""
    fig = go.Figure()
    for i, (name, values) in enumerate(losses.items()):
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=list(values), name=name,
                                 mode="lines+markers", line=dict(color=PALETTE[i % len(PALETTE)])))
    if current is not None:
        fig.add_vline(x=current, line=dict(color="black", width=2, dash="dash"))
    fig.update_layout(title=dict(text=title), xaxis_title="PGD step (0 = the random start)",
                      yaxis_title=yaxis, height=380, width=620, legend_title_text="objective")
    return fig


def probabilities(probs: Mapping[str, Sequence[float]], classes, *, truth: int | None = None,
                  label: int | None = None,
                  title: str = "The target's prediction") -> go.Figure:
    """Grouped bars of class probabilities (e.g. clean vs after each attack) for one image."""
    names = [str(c) for c in classes]
    if truth is not None:
        names[truth] += " (truth)"
    if label is not None and label != truth:
        names[label] += " (dynamic label)"
    fig = go.Figure()
    for i, (name, p) in enumerate(probs.items()):
        fig.add_trace(go.Bar(x=names, y=[100 * float(v) for v in p], name=name,
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(title=dict(text=title), barmode="group", xaxis_title="class",
                      height=380, width=760, legend_title_text="")
    _percent_axis(fig, "probability (%)")
    return fig


def sweep(xs: Sequence[float], curves: Mapping[str, Sequence[float]], *, title: str,
          xaxis: str, yaxis: str = "accuracy (%)", percent: bool = True,
          log_x: bool = False) -> go.Figure:
    """Lines of values against a swept setting (e.g. accuracy against the number of PGD steps)."""
    fig = go.Figure()
    for i, (name, ys) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=list(xs), y=[100 * y if percent else y for y in ys],
                                 name=name, mode="lines+markers",
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    fig.update_layout(title=dict(text=title), xaxis_title=xaxis, height=400, width=620,
                      legend_title_text="")
    if log_x:
        fig.update_xaxes(type="log")
    if percent:
        _percent_axis(fig, yaxis)
    else:
        fig.update_yaxes(title_text=yaxis)
    return fig

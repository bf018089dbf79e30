"""ipywidgets explorers for the lessons, drawn with the figures of :mod:`dynat_lite.viz`.

Each explorer is an :class:`Explorer`: an ``ipywidgets.VBox`` (``explorer.box``) holding its
controls and one ``Output`` per figure, redrawn whenever a control moves. ``figures()`` gives
the figures of the current state (pure: handy in tests and for exporting); ``show()`` displays
the box, and when the notebook runs **headless** (papermill, nbconvert, CI: no frontend will
ever move a slider) it also displays the default view as static figures, so the executed
notebook carries them. Nothing here waits for input.

Headless is decided by :func:`headless`: the environment variable ``DYNAT_HEADLESS`` ("1" or
"0") wins; otherwise a kernel started by a Jupyter server (JupyterLab, Notebook 7: they set
``JPY_SESSION_NAME``), by Colab or by VS Code counts as interactive, and anything else (a
kernel started by papermill or nbconvert, a plain Python process) as headless.
"""
from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

import ipywidgets as W
import torch

from . import viz
from .labels import predict

EXPLORER_CLASS = "dynat-explorer"
LABEL_EXPLORER_CLASS = "dynat-label-explorer"

#: Control labels take the room their text needs (ipywidgets cuts them at 80 px otherwise).
_WIDE_LABEL = {"description_width": "initial"}


def headless() -> bool:
    """True when no frontend will display widgets (see the module docstring)."""
    flag = os.environ.get("DYNAT_HEADLESS", "").strip().lower()
    if flag in ("1", "true", "yes"):
        return True
    if flag in ("0", "false", "no"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return True  # plain Python or a terminal IPython: no widgets at all
    interactive = ("JPY_SESSION_NAME", "COLAB_RELEASE_TAG", "VSCODE_PID", "VSCODE_CWD")
    return not any(k in os.environ for k in interactive)


def _display(*objs) -> None:
    """IPython's display when there is a shell; silently nothing in a plain Python process."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is not None:
        display(*objs)


class Explorer:
    """Controls plus figure panes; ``draw()`` returns the figures for the controls' state.

    ``layout`` groups the panes into rows: e.g. ``(1, 2, 1)`` puts the second and third
    figure side by side.
    """

    def __init__(self, controls: Sequence[W.Widget], draw: Callable[[], list],
                 layout: Sequence[int], *, css_class: str | None = None, title: str = ""):
        self.controls = list(controls)
        self._draw = draw
        self.outputs = [W.Output() for _ in range(sum(layout))]
        rows, i = [], 0
        for n in layout:
            panes = self.outputs[i:i + n]
            # Side by side when there is room, wrapped one under the other when there is not.
            rows.append(panes[0] if n == 1 else
                        W.HBox(panes, layout=W.Layout(flex_flow="row wrap")))
            i += n
        header = [W.HTML(f"<b>{title}</b>")] if title else []
        controls = W.HBox(self.controls, layout=W.Layout(flex_flow="row wrap"))
        self.box = W.VBox(header + [controls] + rows)
        self.box.add_class(EXPLORER_CLASS)
        if css_class:
            self.box.add_class(css_class)
        for c in self.controls:
            c.observe(lambda _change: self.redraw(), names="value")
        self.redraw()

    def figures(self) -> list:
        """The figures for the current state of the controls."""
        return self._draw()

    def redraw(self) -> None:
        for out, fig in zip(self.outputs, self.figures()):
            out.clear_output(wait=True)
            with out:
                _display(fig)

    def show(self, static: bool | None = None) -> None:
        """Display the explorer; also its current view as static figures when headless."""
        _display(self.box)
        if headless() if static is None else static:
            for fig in self.figures():
                _display(fig)

    def _ipython_display_(self):
        self.show()


# ----------------------------------------------------------------------- 00: the epsilon slider
def eps_explorer(x: torch.Tensor, y: torch.Tensor, classes: Sequence[str],
                 adversarial: Mapping[float, torch.Tensor], clean_pred: torch.Tensor,
                 adv_pred: Mapping[float, torch.Tensor], *,
                 default: float | None = None) -> Explorer:
    """A slider over the budget ε: the same images clean, their perturbation and adversarial
    version, with the model's predictions. ``adversarial[eps]`` and ``adv_pred[eps]`` hold the
    precomputed attack for each ε. The perturbation row is drawn on one scale for every ε (the
    largest ε is full contrast), so moving the slider shows the perturbation grow."""
    eps_values = sorted(adversarial)
    if not eps_values:
        raise ValueError("adversarial must hold at least one eps -> images entry.")
    if max(eps_values) <= 0:
        raise ValueError("adversarial needs at least one eps > 0 (the largest sets the scale "
                         "on which every perturbation is drawn).")
    options = [(f"{e * 255:.3g}/255", e) for e in eps_values]
    start = default if default in eps_values else eps_values[len(eps_values) // 2]
    slider = W.SelectionSlider(options=options, value=start, description="ε",
                               continuous_update=False, style=_WIDE_LABEL,
                               layout=W.Layout(width="500px"))
    scale = max(eps_values)  # one scale for every eps: the perturbation visibly grows

    def draw():
        e = slider.value
        return [viz.adversarial_examples(x, adversarial[e], y, clean_pred, adv_pred[e], classes,
                                         eps=e, perturbation_scale=scale,
                                         title="Clean, perturbation and adversarial images")]

    return Explorer([slider], draw, (1,), title="Move ε: how large must the attack be?")


# ---------------------------------------------------------------- 01: the label-evolution explorer
def default_step(steps: Sequence[int], agreement: Sequence[float]) -> int:
    """The first recorded step at which the agreement has covered half of its way from the
    first record to its best: the middle of the weak-to-strong story."""
    agreement = [float(a) for a in agreement]
    half = agreement[0] + 0.5 * (max(agreement) - agreement[0])
    for s, a in zip(steps, agreement):
        if a >= half:
            return int(s)
    return int(steps[-1])


def label_explorer(record: Mapping, probe_x: torch.Tensor, classes: Sequence[str], *,
                   show_images: int = 32, step: int | None = None) -> Explorer:
    """The label-evolution explorer: a slider over training steps showing

    1. the first ``show_images`` probe images with the guide's dynamic label and confidence
       (✓ blue right, ✗ orange wrong);
    2. the agreement of the dynamic labels with the ground truth over training, and the
       confusion matrix of dynamic label vs ground truth at the chosen step, both over all the
       probe images;
    3. a probe x step map of right/wrong labels with every flip marked.

    ``record`` is ``LabelRecorder.to_dict()`` (steps, labels, confidence, truth, agreement).
    """
    steps = [int(s) for s in record["steps"]]
    labels = torch.as_tensor(record["labels"])
    conf = torch.as_tensor(record["confidence"])
    truth = torch.as_tensor(record["truth"])
    agreement = record.get("agreement") or (labels == truth[None]).float().mean(1).tolist()
    stride = steps[1] - steps[0] if len(steps) > 1 else 1
    start = default_step(steps, agreement) if step is None else int(step)
    slider = W.IntSlider(value=start, min=steps[0], max=steps[-1], step=stride,
                         description="step", continuous_update=False, style=_WIDE_LABEL,
                         layout=W.Layout(width="600px"))
    n_show, n_probes = min(show_images, len(truth)), len(truth)
    chance = 1 / len(classes)

    def index() -> int:
        """The last record taken at or before the slider's step."""
        i = 0
        for k, s in enumerate(steps):
            if s <= slider.value:
                i = k
        return i

    def draw():
        i = index()
        s = steps[i]
        return [
            viz.probe_labels(probe_x[:n_show], labels[i, :n_show], truth[:n_show],
                             conf[i, :n_show], classes, step=s, n_total=n_probes),
            viz.agreement_curve(steps, agreement, current=s, chance=chance, n_probes=n_probes,
                                title=f"Agreement with the ground truth at step {s}: "
                                      f"{100 * agreement[i]:.0f}%"),
            viz.confusion(truth, labels[i], classes,
                          title=f"Dynamic label vs ground truth at step {s}"),
            viz.label_flips(steps, labels, truth, classes, current=s,
                            title=f"Each of the {n_probes} probe images' dynamic label over "
                                  f"training"),
        ]

    return Explorer([slider], draw, (1, 2, 1), css_class=LABEL_EXPLORER_CLASS,
                    title="Label-evolution explorer: move the step slider")


# ------------------------------------------------------------------ 02: inside the inner maximization
def pgd_trajectory(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor | None, *,
                   loss: str = "ce", eps: float = 8 / 255, step_size: float = 2 / 255,
                   steps: int = 10, random_start: str | None = "gaussian", seed: int = 0) -> dict:
    """Every point PGD visits, for the PGD explorer: ``x`` (steps+1, N, C, H, W), the attacker's
    per-example ``loss`` (steps+1, N), the model's softmax ``probs`` (steps+1, N, K) at each
    point and ``clean_probs`` (N, K) on the clean images."""
    from .attacks import pgd_iterates

    generator = torch.Generator().manual_seed(seed)
    points, losses = [], []
    for x_adv, value in pgd_iterates(model, x, labels, eps=eps, step_size=step_size, steps=steps,
                                     loss=loss, random_start=random_start, generator=generator):
        points.append(x_adv.cpu())
        losses.append(value.cpu())
    xs = torch.stack(points)
    return {"x": xs, "loss": torch.stack(losses),
            "probs": torch.stack([predict(model, p) for p in xs]),
            "clean_probs": predict(model, x), "eps": eps}


def _short(name: str) -> str:
    """A caption-sized name: the text in the last parentheses ("CE to y (PGD-AT)" -> "PGD-AT")."""
    if name.endswith(")") and "(" in name:
        return name[name.rindex("(") + 1:-1]
    return name


def pgd_explorer(x: torch.Tensor, y: torch.Tensor, guide_labels: torch.Tensor,
                 classes: Sequence[str], trajectories: Mapping[str, dict], *,
                 image: int = 0) -> Explorer:
    """Step through PGD: the attacker's loss per step for each objective, and for one chosen
    image its perturbation and adversarial image under each objective and the target's
    prediction, at the chosen step. ``trajectories[name]`` come from :func:`pgd_trajectory`."""
    names = list(trajectories)
    n_steps = len(next(iter(trajectories.values()))["loss"]) - 1
    eps = next(iter(trajectories.values()))["eps"]
    step = W.IntSlider(value=n_steps, min=0, max=n_steps, description="PGD step",
                       continuous_update=False, style=_WIDE_LABEL)
    options = [(f"#{i}: {classes[int(y[i])]}"
                + ("" if int(guide_labels[i]) == int(y[i])
                   else f" (guide says {classes[int(guide_labels[i])]})"), i)
               for i in range(len(y))]
    longest = max(len(label) for label, _ in options)
    pick = W.Dropdown(options=options, value=image, description="image", style=_WIDE_LABEL,
                      layout=W.Layout(width=f"{min(max(16, longest + 10), 60)}em"))

    def draw():
        t, i = step.value, pick.value
        mean_loss = {n: tr["loss"].float().mean(1).tolist() for n, tr in trajectories.items()}
        trace = viz.pgd_trace(mean_loss, current=t,
                              title="The attacker's objective over the PGD steps<br><sup>mean "
                                    "over the images; each objective on its own scale</sup>")
        imgs = [x[i]] + [viz.amplify(trajectories[n]["x"][t, i] - x[i], eps) for n in names] + \
               [trajectories[n]["x"][t, i] for n in names]
        preds = [int(trajectories[n]["probs"][t, i].argmax()) for n in names]
        short = [_short(n) for n in names]
        first = trajectories[names[0]]
        clean_probs = first["clean_probs"] if "clean_probs" in first else first["probs"][0]
        clean_label = classes[int(clean_probs[i].argmax())]
        clean_right = clean_label == classes[int(y[i])]
        caps = ([f"clean:<br>{viz.mark(clean_right)} {clean_label}"]
                + [f"δ<br>{n}" for n in short]
                + [f"{n}:<br>{viz.mark(p == int(y[i]))} {classes[p]}"
                   for n, p in zip(short, preds)])
        colors = ([viz.verdict_color(clean_right)] + [viz.BLACK] * len(names)
                  + [viz.verdict_color(p == int(y[i])) for p in preds])
        grid = viz.image_grid(torch.stack([torch.as_tensor(im) for im in imgs]), caps,
                              cols=len(imgs), caption_colors=colors, size=110,
                              title=f"Image #{i} (truth: {classes[int(y[i])]}) after {t} PGD "
                                    f"steps<br><sup>the perturbation δ (amplified ×"
                                    f"{0.5 / eps:.0f}, grey = 0) and the adversarial image of "
                                    f"each objective, with the target's prediction: "
                                    f"{viz.RIGHT_MARK} right (blue), {viz.WRONG_MARK} wrong "
                                    f"(orange)</sup>")
        probs = {"clean": clean_probs[i].tolist()}
        probs.update({n: trajectories[n]["probs"][t, i].tolist() for n in names})
        bars = viz.probabilities(probs, classes, truth=int(y[i]), label=int(guide_labels[i]),
                                 title=f"The target's prediction on image #{i} at step {t}")
        return [trace, grid, bars]

    return Explorer([step, pick], draw, (1, 1, 1),
                    title="PGD explorer: step through the inner maximization")

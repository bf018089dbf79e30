"""Build DYNAT yourself: the lessons' exercises and their automatic checks.

Each lesson asks you to write a few functions (their names and signatures are fixed, see
``NAMES`` and ``TASKS``). After writing one, check it::

    from dynat_lite import exercises
    exercises.check("fgsm", fgsm)

``check`` runs your function on small seeded inputs -- tiny networks in float64, so that rounding
never decides a test -- and compares it with the library's own implementation
(``dynat_lite.attacks``, ``labels``, ``methods``, ``evaluate``, ``diagnostics``) and with the
properties that define it (an attack stays in the eps-ball and in [0, 1], takes gradients with
respect to the input only, leaves the model's mode as it found it, ...). On success it prints one
line starting with "✓" that says what was verified. Otherwise it raises ``ExerciseError`` naming
the first property that failed, in the terms of the exercise, with a hint -- never the answer. A
function that still raises ``NotImplementedError`` (the student version's placeholder) gets "not
written yet" and the task.
"""
from __future__ import annotations

import copy
import math
import statistics
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import attacks, diagnostics, evaluate, labels, methods

_PACKAGE = Path(__file__).resolve().parent  # frames from here are the checker's, not the student's

#: What each exercise's function must do (the lessons' exercise cells explain why).
TASKS: dict[str, str] = {
    "fgsm": "fgsm(model, x, y, eps): one step of size eps along the sign of the gradient of "
            "CE(model(x), y) with respect to x, clamped to [0, 1]; input gradient only",
    "project": "project(x_adv, x, eps): the nearest point to x_adv in the L-inf ball of "
               "radius eps around x, then clamped to [0, 1]",
    "pgd": "pgd(model, x, y, eps, step_size, steps): PGD on CE(model(x'), y) from x (no random "
           "start), `steps` signed steps of `step_size`, projecting after every step",
    "dynamic_labels": "dynamic_labels(guide_logits): the argmax class of each row, with no "
                      "gradient attached",
    "label_agreement": "label_agreement(labels, y): the fraction of labels equal to y, as a "
                       "Python float",
    "trades_kl": "trades_kl(logits_adv, logits_clean): KL(softmax(logits_clean) || "
                 "softmax(logits_adv)), summed over classes, averaged over the batch",
    "inner_max": "inner_max(target, x, labels, eps, step_size, steps): PGD from x (no random "
                 "start) maximizing CE(target(x'), labels), projecting every step, with the "
                 "target in eval mode and its mode restored afterwards",
    "dynat_loss": "dynat_loss(guide, target, x, y, eps, step_size, steps, beta): labels = "
                  "argmax of the guide (train mode) on clean x; x_adv = PGD on the target (eval "
                  "mode, no random start) against them; return CE(guide(x), y) + beta * "
                  "CE(target(x_adv), labels), the target back in train mode",
    "detect_collapse": "detect_collapse(history): the epoch numbers (record[\"epoch\"]) of the "
                       "records whose samples in the second half, record[\"steps\"][len(steps) "
                       "// 2:], have median label_agreement >= 0.5 and median logit_spread < "
                       "0.5; an epoch without samples is not collapsed",
    "cw_margin": "cw_margin(logits, y): per example, the largest logit of a class j != y "
                 "minus the logit of y",
    "worst_case": "worst_case(correct): from a dict attack name -> boolean tensor (robust per "
                  "example), the per-example AND over all attacks",
    "straight_through": "straight_through(x, levels): forward = evaluate.Quantized's rounding "
                        "round(x * levels) / levels, backward = the identity (BPDA)",
    "zero_grad_fraction": "zero_grad_fraction(model, x, y): the fraction of examples whose "
                          "input gradient of CE(model(x), y) is exactly zero at every pixel, a "
                          "Python float; the model in eval mode, its mode restored, nothing "
                          "left in its .grad",
}

#: Every exercise, in lesson order.
NAMES: tuple[str, ...] = tuple(TASKS)


class ExerciseError(AssertionError):
    """Your function does not do what the exercise asks yet; the message says what and why."""

    def _render_traceback_(self) -> list[str]:
        """How Jupyter (IPython) shows it: the message, without the checker's own frames.

        When the student's function raised, its frames (and only those) come first, so the
        line of their code that failed is on the page.
        """
        lines = []
        cause = self.__cause__
        if cause is not None and cause.__traceback__ is not None:
            yours = [frame for frame in traceback.extract_tb(cause.__traceback__)
                     if not Path(frame.filename).resolve().is_relative_to(_PACKAGE)]
            if yours:
                lines.append("Traceback of your function (most recent call last):")
                lines += [line.rstrip("\n") for line in traceback.format_list(yours)]
                lines.append(f"{type(cause).__name__}: {cause}")
                lines.append("")
        return lines + [f"\x1b[0;31mExerciseError\x1b[0m: {self}"]


class _StudentRaised(Exception):
    """The student's function raised (other than NotImplementedError): report it as such."""


def check(name: str, fn: Callable) -> None:
    """Test your function ``fn`` for the exercise ``name``; print a "✓" line if it is right.

    Raises ``ExerciseError`` with the first property that failed otherwise.
    """
    __tracebackhide__ = True  # pytest and IPython show the student's cell, not this frame
    if name not in _CHECKS:
        raise ValueError(f"Unknown exercise {name!r}. The exercises are: {', '.join(NAMES)}.")
    if not callable(fn):
        raise TypeError(f"check({name!r}, fn) needs your function as fn, got "
                        f"{type(fn).__name__}. Run the cell that defines it first.")
    try:
        verified = _CHECKS[name](fn)
    except NotImplementedError:
        error, cause = ExerciseError(
            f"{name} is not written yet. Task: {TASKS[name]}. Replace the line `raise "
            f"NotImplementedError(...)` with your code, run that cell, then this one."), None
    except ExerciseError as failure:
        error, cause = ExerciseError(f"{name}: {_without_name(str(failure), name)}"), None
    except _StudentRaised as raised:
        error, cause = ExerciseError(f"{name}: {raised}"), raised.__cause__
    else:
        print(f"✓ {name}: {verified}")
        return
    raise error from cause


# ------------------------------------------------------------------------------ shared helpers
def _without_name(message: str, name: str) -> str:
    """"fgsm changed x" -> "changed x" (check puts "fgsm: " in front of every message)."""
    return message[len(name) + 1:] if message.startswith(name + " ") else message


def _require(ok: bool, message: str) -> None:
    """Fail with ``message`` (the property and a hint) unless ``ok``."""
    if not ok:
        raise ExerciseError(message)


def _call(fn: Callable, *args):
    """``fn(*args)``; NotImplementedError passes through, any other error is reported."""
    try:
        return fn(*args)
    except (NotImplementedError, ExerciseError):
        raise
    except Exception as err:  # the student's bug: show it with their traceback
        raise _StudentRaised(f"your function raised {type(err).__name__}: {err}") from err


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _require_tensor(out, like_shape, what: str) -> None:
    _require(torch.is_tensor(out), f"{what} must be a tensor, got {type(out).__name__}")
    _require(tuple(out.shape) == tuple(like_shape),
             f"{what} must have shape {tuple(like_shape)}, got {tuple(out.shape)}")


class _TinyNet(nn.Module):
    """conv -> BatchNorm -> tanh -> pool -> linear, in float64, from a seed.

    Smooth (tanh), so no input gradient is exactly zero; BatchNorm with running statistics
    far from a batch's own, so train and eval mode give clearly different outputs.
    """

    def __init__(self, seed: int, classes: int = 5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(16, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            self.bn.running_mean.copy_(torch.randn(4, generator=g))
            self.bn.running_var.copy_(0.5 + torch.rand(4, generator=g))
        self.double()

    def forward(self, x):
        h = torch.tanh(self.bn(self.conv(x)))
        return self.fc(F.adaptive_avg_pool2d(h, 2).flatten(1))


def _images(seed: int, n: int = 6, dtype=torch.float64) -> torch.Tensor:
    """n random 3x6x6 images in [0, 1]; many pixels lie near 0 or 1, where clamping matters."""
    return torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _classes(seed: int, n: int = 6, classes: int = 5) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of CE(model(x), y) with respect to x, the model in eval mode (a copy)."""
    model = copy.deepcopy(model).eval()
    x = x.detach().clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad


class _Watch:
    """What calling the student's function may not change: the models' modes, BatchNorm
    statistics and parameter gradients, and the input tensors."""

    SENTINEL = 0.25

    def __init__(self, models: dict[str, nn.Module], tensors: dict[str, torch.Tensor]):
        self.models, self.tensors = models, tensors
        self.modes = {k: m.training for k, m in models.items()}
        self.buffers = {k: [b.clone() for b in m.buffers()] for k, m in models.items()}
        self.copies = {k: t.detach().clone() for k, t in tensors.items()}
        for m in models.values():  # as if a training step were accumulating gradients
            for p in m.parameters():
                p.grad = torch.full_like(p, self.SENTINEL)

    def grads_untouched(self, name: str, model: str) -> None:
        for p in self.models[model].parameters():
            _require(p.grad is not None and bool((p.grad == self.SENTINEL).all()),
                     f"{name} changed the {model}'s parameter gradients (.grad): take the "
                     f"gradient with respect to the input only, torch.autograd.grad(loss, x), "
                     f"instead of loss.backward()")

    def inputs_untouched(self, name: str) -> None:
        for k, t in self.tensors.items():
            _require(torch.equal(t.detach(), self.copies[k]),
                     f"{name} changed its argument {k} in place: work on a copy "
                     f"(x.clone(), or out-of-place operations)")

    def mode_restored(self, name: str, model: str) -> None:
        was, now = self.modes[model], self.models[model].training
        mode = {True: "train", False: "eval"}
        _require(was == now,
                 f"{name} left the {model} in {mode[now]} mode, but it was in {mode[was]} mode "
                 f"when called: remember its mode (was_training = {model}.training) and restore "
                 f"it afterwards ({model}.train(was_training))")

    def batches_tracked(self, model: str) -> int:
        """How many train-mode forward passes the call made (BatchNorm counts them)."""
        now = self.models[model].named_buffers()
        counts = [int(b) - int(old) for (name, b), old in zip(now, self.buffers[model])
                  if name.endswith("num_batches_tracked")]
        return max(counts, default=0)

    def stats_unchanged(self, model: str) -> bool:
        return all(torch.equal(a, b) for a, b in zip(self.models[model].buffers(),
                                                     self.buffers[model]))


def _require_detached(out: torch.Tensor, what: str) -> None:
    _require(not out.requires_grad,
             f"{what} still requires grad (it carries the attack's graph): return "
             f"x_adv.detach()")


def _require_box(x_adv: torch.Tensor, hint: str) -> None:
    excess = max(float(-x_adv.min()), float(x_adv.max() - 1), 0.0)
    _require(excess <= 1e-12, f"x_adv leaves the image range [0, 1] by {_fmt(excess)} — {hint}")


def _require_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, hint: str) -> None:
    excess = float((x_adv - x).abs().max()) - eps
    _require(excess <= 1e-12, f"x_adv leaves the ε-ball around x (ε = {_fmt(eps)}) by "
                              f"{_fmt(excess)} — {hint}")


def _require_signed_step(x_adv, x, grad, step: float, what: str) -> None:
    """x_adv must be clamp(x + step * sign(grad), 0, 1): diagnose how it is not."""
    ideal = (x + step * grad.sign()).clamp(0, 1)
    free = (x > step) & (x < 1 - step)  # pixels the clamp touches in neither direction
    delta = (x_adv - x)[free]
    up = grad.sign()[free]
    moved = delta.abs() > 1e-12
    against = float(((delta.sign() == -up) & moved).float().mean())
    _require(against < 0.9,
             f"{what} goes down the loss on {against:.0%} of the pixels (x − step·sign(∇)): an "
             f"attack climbs it, x + step·sign(∇ₓ CE)")
    size = delta.abs()
    typical = float(size.median())
    usual = float((size - typical).abs().le(1e-9).float().mean())
    _require(not (usual > 0.8 and not math.isclose(typical, step, abs_tol=1e-9)),
             f"{what} moves most pixels by {_fmt(typical)}, not by the step size {_fmt(step)}")
    lo, hi = float(size.min()), float(size.max())
    _require(math.isclose(lo, step, abs_tol=1e-9) and math.isclose(hi, step, abs_tol=1e-9),
             f"{what} moves the pixels by different amounts ({_fmt(lo)} to {_fmt(hi)}), not "
             f"each by the step size {_fmt(step)}: step along the sign of the gradient, "
             f"step·sign(∇ₓ CE), not along the gradient itself")
    wrong = int((~torch.isclose(x_adv, ideal, atol=1e-9)).sum())
    _require(wrong == 0,
             f"{what} differs from x + step·sign(∇ₓ CE(model(x), y)) clamped to [0, 1] on "
             f"{wrong} pixels: take the gradient of CE(model(x), y) with respect to x, and "
             f"clamp to [0, 1] only after the step")


# -------------------------------------------------------------------------------- lesson 00
def _check_fgsm(fgsm) -> str:
    model, x, y, eps = _TinyNet(0).eval(), _images(1), _classes(1), 0.1
    reference = attacks.fgsm(copy.deepcopy(model), x, y, eps=eps)
    watch = _Watch({"model": model}, {"x": x, "y": y})
    out = _call(fgsm, model, x, y, eps)
    _require_tensor(out, x.shape, "the result x_adv")
    watch.inputs_untouched("fgsm")
    watch.grads_untouched("fgsm", "model")
    watch.mode_restored("fgsm", "model")
    _require_detached(out, "x_adv")
    _require_box(out, "clamp to [0, 1] after the step")
    _require_ball(out, x, eps, "FGSM moves each pixel by ε, no more")
    _require_signed_step(out, x, _input_grad(model, x, y), eps, "the FGSM step")
    _require(torch.allclose(out, reference, atol=1e-9),
             "x_adv differs from dynat_lite.attacks.fgsm: one step ε·sign(∇ₓ CE(model(x), y))")
    return (f"one step ε·sign(∇ₓ CE) on {len(x)} images equals dynat_lite.attacks.fgsm; stays "
            f"in [0, 1] and the ε-ball; input gradient only (.grad untouched), mode unchanged")


def _check_project(project) -> str:
    eps = 0.1
    x = _images(2, n=8)
    g = torch.Generator().manual_seed(3)
    x_adv = (x + 3 * eps * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(-0.2, 1.2)
    inside = torch.rand(x.shape, generator=g, dtype=x.dtype) < 0.3  # already in both sets
    x_adv = torch.where(inside, (x + 0.5 * eps * (2 * torch.rand(
        x.shape, generator=g, dtype=x.dtype) - 1)).clamp(0, 1), x_adv)
    reference = attacks.project(x_adv, x, eps)
    watch = _Watch({}, {"x": x})
    out = _call(project, x_adv.clone(), x, eps)
    _require_tensor(out, x.shape, "the result")
    watch.inputs_untouched("project")
    _require_ball(out, x, eps, "clip each pixel to [x − ε, x + ε] (torch.min/torch.max or "
                               "clamp with tensor bounds)")
    _require_box(out, "clamp to [0, 1] as well")
    moved = int((~torch.isclose(out[inside], x_adv[inside], atol=1e-12)).sum())
    _require(moved == 0, f"project moved {moved} pixels that were already within ε of x and in "
                         f"[0, 1]: the nearest point of the ball is the point itself")
    wrong = int((~torch.isclose(out, reference, atol=1e-12)).sum())
    _require(wrong == 0, f"{wrong} pixels are not the nearest point of the ε-ball ∩ [0, 1]: a "
                         f"pixel above x + ε goes to x + ε, one below x − ε to x − ε")
    return (f"{x.numel()} pixels in and out of the ε-ball and [0, 1] go to their nearest point "
            f"of both (equal to dynat_lite.attacks.project); points inside stay put")


def _pgd_like(name: str, fn, model, x, lab, eps, step, steps) -> torch.Tensor:
    """Call an attack exercise and check what a call must not change; returns x_adv."""
    who = "model" if name == "pgd" else "target"
    watch = _Watch({who: model}, {"x": x, "labels": lab})
    out = _call(fn, model, x, lab, eps, step, steps)
    _require_tensor(out, x.shape, "the result x_adv")
    watch.inputs_untouched(name)
    watch.grads_untouched(name, who)
    watch.mode_restored(name, who)
    _require(watch.stats_unchanged(who),
             f"{name} ran the {who} in train mode (its BatchNorm running statistics changed): "
             f"attack it in eval mode ({who}.eval()), then restore its mode")
    _require_detached(out, "x_adv")
    return out


def _check_pgd_like(name: str, fn, train_mode: bool) -> str:
    """pgd and inner_max: the same attack; inner_max gets a target in train mode, whose mode it
    must switch to eval for the attack and restore."""
    model, x, lab = _TinyNet(4), _images(5), _classes(5)
    model.train(train_mode)
    eps, step, steps = 0.06, 0.025, 6

    def run(steps_, net=None):
        net = copy.deepcopy(model) if net is None else net
        return _pgd_like(name, fn, net, x, lab, eps, step, steps_)

    if train_mode:  # a target that comes in eval mode must leave in eval mode too
        run(1, net=copy.deepcopy(model).eval())
    start = run(0)
    shift = float((start - x).abs().max())
    _require(shift <= 1e-12, f"with steps = 0 x_adv should be x itself, but it moved by up to "
                             f"{_fmt(shift)}: no random start here, start at x")
    one = run(1)
    _require_box(one, "clamp to [0, 1] in every step")
    _require_signed_step(one, x, _input_grad(model, x, lab), step, "one step")
    out = run(steps)
    _require_box(out, "clamp to [0, 1] in every step")
    _require_ball(out, x, eps, "project after every step")
    again = run(steps)
    _require(torch.equal(out, again), f"two calls with the same inputs gave different x_adv: "
                                      f"no random start, start at x")
    reference = attacks.pgd(copy.deepcopy(model), x, lab, eps=eps, step_size=step, steps=steps,
                            loss="ce", random_start=None)
    if not torch.allclose(out, reference, atol=1e-9):
        _diagnose_pgd(out, model, x, lab, eps, step, steps)
    return (f"{steps} steps of PGD from x equal dynat_lite.attacks.pgd (no random start); "
            f"stays in [0, 1] and the ε-ball; climbs the loss; input gradient only (.grad "
            f"untouched); the model's mode " + ("switched to eval and restored" if train_mode
                                               else "unchanged"))


def _diagnose_pgd(out, model, x, lab, eps, step, steps) -> None:
    """Name the PGD mistake that gives ``out``, or say where it differs."""
    g = _input_grad(model, x, lab)
    once = attacks.project((x + steps * step * g.sign()), x, eps)
    _require(not torch.allclose(out, once, atol=1e-9),
             "x_adv follows the gradient at x in every step: recompute the gradient at the "
             "current x_adv in each step")
    for clamp_each_step in (False, True):
        x_adv = x.clone()
        for _ in range(steps):
            x_adv = x_adv + step * _input_grad(model, x_adv, lab).sign()
            x_adv = x_adv.clamp(0, 1) if clamp_each_step else x_adv
        _require(not torch.allclose(out, attacks.project(x_adv, x, eps), atol=1e-9),
                 "x_adv is projected onto the ε-ball only at the end: project after every "
                 "step, so that each gradient is taken at a point of the ball")
    _require(False, "x_adv differs from PGD's after several steps (the first step is right): "
                    "in each step take the gradient of CE at the current x_adv, step by "
                    "step_size·sign, then project onto the ε-ball around the ORIGINAL x and "
                    "onto [0, 1]")


def _check_pgd(pgd) -> str:
    return _check_pgd_like("pgd", pgd, train_mode=False)


# -------------------------------------------------------------------------------- lesson 01
def _guide_logits() -> torch.Tensor:
    """Logits of 7 images over 10 classes, part of a graph (as a guide's output is)."""
    g = torch.Generator().manual_seed(6)
    w = torch.randn(7, 10, generator=g, dtype=torch.float64, requires_grad=True)
    return 3 * w


def _check_dynamic_labels(dynamic_labels) -> str:
    logits = _guide_logits()
    watch = _Watch({}, {"guide_logits": logits})
    out = _call(dynamic_labels, logits)
    _require(torch.is_tensor(out), f"dynamic_labels must return a tensor, got "
                                   f"{type(out).__name__}")
    _require(not out.requires_grad,
             "the labels carry gradient (requires_grad=True): hard labels come from argmax, "
             "and nothing of the target's loss may flow back into the guide through them")
    watch.inputs_untouched("dynamic_labels")
    _require(tuple(out.shape) != (logits.shape[1],),
             f"dynamic_labels returned {logits.shape[1]} values for {len(logits)} rows: take "
             f"the argmax over the classes (dim=1), not over the batch (dim=0)")
    _require(tuple(out.shape) == (len(logits),),
             f"dynamic_labels must return one label per row, shape ({len(logits)},), got "
             f"{tuple(out.shape)}: take the argmax over the classes (dim=1)")
    _require(not out.is_floating_point(),
             f"the labels are {out.dtype}: class indices are integers (argmax gives them)")
    reference = labels.dynamic_labels(logits)
    wrong = int((out.cpu() != reference).sum())
    _require(wrong == 0, f"{wrong} of {len(logits)} labels are not the class with the largest "
                         f"logit of their row")
    return (f"the argmax class of each of {len(logits)} rows, integer labels with no gradient "
            f"(equal to dynat_lite.labels.dynamic_labels)")


def _check_label_agreement(label_agreement) -> str:
    g = torch.Generator().manual_seed(7)
    y = torch.randint(0, 10, (20,), generator=g)
    lab = y.clone()
    lab[:6] = (y[:6] + 1 + torch.randint(0, 8, (6,), generator=g)) % 10  # 14 of 20 agree
    cases = [(lab, y), (y.clone(), y), ((y + 1) % 10, y)]
    for lab_, y_ in cases:
        expected = int((lab_ == y_).sum()) / len(y_)
        watch = _Watch({}, {"labels": lab_, "y": y_})
        out = _call(label_agreement, lab_, y_)
        watch.inputs_untouched("label_agreement")
        _require(isinstance(out, float) and not isinstance(out, bool),
                 f"label_agreement must return a Python float, got {type(out).__name__}"
                 + (": use .item()" if torch.is_tensor(out) else ""))
        agree = int((lab_ == y_).sum())
        _require(not (math.isclose(out, agree, rel_tol=1e-6) and agree > 1),
                 f"label_agreement returned {_fmt(out)}, the number of agreeing labels: return "
                 f"the fraction (divide by the number of labels)")
        _require(not math.isclose(out, 100 * expected, rel_tol=1e-6) or expected == 0,
                 f"label_agreement returned {_fmt(out)}, a percentage: return a fraction in "
                 f"[0, 1]")
        _require(0 <= out <= 1, f"label_agreement returned {_fmt(out)}, not a fraction in [0, 1]")
        _require(not (math.isclose(out, 1 - expected, abs_tol=1e-6) and expected != 0.5),
                 "label_agreement returned the fraction of labels that DIFFER from y")
        _require(math.isclose(out, expected, abs_tol=1e-6),
                 f"label_agreement returned {_fmt(out)} for {len(y_)} labels of which "
                 f"{agree} equal y")
    return "the fraction of labels equal to y as a Python float (some, all and none agreeing)"


# -------------------------------------------------------------------------------- lesson 02
def _kl_pair():
    g = torch.Generator().manual_seed(8)
    adv = (2 * torch.randn(5, 7, generator=g, dtype=torch.float64)).requires_grad_(True)
    clean = (2 * torch.randn(5, 7, generator=g, dtype=torch.float64)).requires_grad_(True)
    return adv, clean


def _check_trades_kl(trades_kl) -> str:
    adv, clean = _kl_pair()
    n, c = adv.shape
    reference = methods._kl(adv, F.softmax(clean, 1))
    watch = _Watch({}, {"logits_adv": adv, "logits_clean": clean})
    out = _call(trades_kl, adv, clean)
    watch.inputs_untouched("trades_kl")
    _require(torch.is_tensor(out), f"trades_kl must return a tensor (the loss), got "
                                   f"{type(out).__name__}: do not call .item()")
    _require(tuple(out.shape) != (n,), "trades_kl returns one value per example: average them "
                                       "over the batch")
    _require(out.dim() == 0, f"trades_kl must return a scalar, got shape {tuple(out.shape)}: "
                             f"sum over the classes, average over the batch")
    _require(out.requires_grad, "trades_kl's result carries no gradient: TRADES minimizes it, "
                                "so keep the graph (no .detach(), no torch.no_grad())")
    value, ref = float(out.detach()), float(reference.detach())
    p_clean, p_adv = F.softmax(clean, 1), F.softmax(adv, 1)
    reverse = float((p_adv * (p_adv.log() - p_clean.log())).sum(1).mean().detach())
    _require(not math.isclose(value, reverse, rel_tol=1e-6),
             "this is KL(p_adv ‖ p_clean), the wrong direction: TRADES uses KL(p_clean ‖ p_adv) "
             "= Σ p_clean (log p_clean − log p_adv) (F.kl_div(log_input, target) computes "
             "KL(target ‖ input))")
    _require(not math.isclose(value, n * ref, rel_tol=1e-6),
             "the KL is summed over the batch: average it over the examples (reduction="
             "'batchmean', not 'sum')")
    _require(not math.isclose(value, ref / c, rel_tol=1e-6),
             "the KL is averaged over the classes too: sum over the classes, average over the "
             "batch only (reduction='batchmean', not 'mean')")
    _require(math.isclose(value, ref, rel_tol=1e-6, abs_tol=1e-12),
             "the value is not KL(softmax(logits_clean) ‖ softmax(logits_adv)) summed over "
             "classes and averaged over the batch")
    grad, = torch.autograd.grad(out, adv)
    ref_grad, = torch.autograd.grad(reference, adv)
    _require(torch.allclose(grad, ref_grad, atol=1e-9),
             "the value is right but its gradient with respect to logits_adv is not that of the "
             "KL: compute it from logits_adv with differentiable operations")
    return ("KL(p_clean ‖ p_adv), summed over classes and averaged over the batch, with its "
            "gradient (equal to the TRADES term of dynat_lite.methods)")


def _check_inner_max(inner_max) -> str:
    return _check_pgd_like("inner_max", inner_max, train_mode=True)


# -------------------------------------------------------------------------------- lesson 03
class _DynatCase:
    """A guide and a target in train mode, a batch whose ground truth differs from the guide's
    train-mode labels, which differ from its eval-mode labels: every mix-up shows."""

    EPS, STEP, STEPS = 0.06, 0.025, 3

    def __init__(self):
        self.guide, self.target = _TinyNet(27).train(), _TinyNet(12).train()
        self.x = _images(13, n=8)
        self.y = _classes(14, n=8)
        with torch.no_grad():
            guide = copy.deepcopy(self.guide)
            self.labels = guide(self.x).argmax(1)
            # from the guide in eval mode, before or after its train-mode pass updated BatchNorm
            self.labels_eval = [copy.deepcopy(self.guide).eval()(self.x).argmax(1),
                                guide.eval()(self.x).argmax(1)]

    def nets(self):
        return copy.deepcopy(self.guide), copy.deepcopy(self.target)

    def loss(self, beta, attack_labels=None, target_labels=None, target_on_clean=False,
             target_eval=False, guide_beta=False):
        """DYNAT's loss, or a variant of it with one mistake (for naming the mistake)."""
        guide, target = self.nets()
        guide_logits = guide(self.x)
        attack_labels = self.labels if attack_labels is None else attack_labels
        target_labels = self.labels if target_labels is None else target_labels
        x_adv = attacks.pgd(target, self.x, attack_labels, eps=self.EPS, step_size=self.STEP,
                            steps=self.STEPS, random_start=None)
        target.train(not target_eval)
        target_term = F.cross_entropy(target(self.x if target_on_clean else x_adv), target_labels)
        guide_term = F.cross_entropy(guide_logits, self.y)
        return (beta if guide_beta else 1) * guide_term + beta * target_term


def _dynat_call(dynat_loss, case: _DynatCase, beta: float):
    """Call the student's dynat_loss on fresh copies; check the call's side effects."""
    guide, target = case.nets()
    watch = _Watch({"guide": guide, "target": target}, {"x": case.x, "y": case.y})
    out = _call(dynat_loss, guide, target, case.x, case.y, case.EPS, case.STEP, case.STEPS,
                beta)
    _require(not isinstance(out, (tuple, list)),
             "dynat_loss returned a tuple: return only the scalar loss")
    _require(torch.is_tensor(out) and out.dim() == 0,
             f"dynat_loss must return a scalar tensor, got "
             f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}: average the "
             f"cross-entropies over the batch")
    _require(out.requires_grad, "the loss carries no gradient: do not detach it or call .item()")
    watch.inputs_untouched("dynat_loss")
    for who in ("guide", "target"):
        watch.grads_untouched("dynat_loss", who)
        watch.mode_restored("dynat_loss", who)
    passes = watch.batches_tracked("target")
    _require(passes <= 1, f"the target ran in train mode during the attack ({passes} train-mode "
                          f"passes, BatchNorm counts them): attack it in eval mode")
    _require(passes == 1, "the target's loss CE(target(x_adv), labels) must run the target in "
                          "train mode (it is trained on it): switch it back before that pass")
    _require(watch.batches_tracked("guide") >= 1,
             "the guide never ran in train mode: its CE(guide(x), y) trains it, so it runs in "
             "train mode")
    return out, guide, target


def _check_dynat_loss(dynat_loss) -> str:
    case, beta = _DynatCase(), 2.0
    out, guide, target = _dynat_call(dynat_loss, case, beta)
    again, _, _ = _dynat_call(dynat_loss, case, beta)
    _require(torch.equal(out.detach(), again.detach()),
             "two calls with the same inputs gave different losses: no random start here, the "
             "attack starts at x")
    # The guide's gradient: that of CE(guide(x), y) alone, whatever beta.
    ref_guide = copy.deepcopy(case.guide)
    expected = torch.autograd.grad(F.cross_entropy(ref_guide(case.x), case.y),
                                   list(ref_guide.parameters()))
    zero, g0, _ = _dynat_call(dynat_loss, case, 0.0)
    got0 = torch.autograd.grad(zero, list(g0.parameters()), allow_unused=True)
    _require(all(g is not None and torch.allclose(g, e, atol=1e-9)
                 for g, e in zip(got0, expected)),
             "with beta = 0 the guide's gradient is not that of CE(guide(x), y): the guide's "
             "term is the cross-entropy of the guide in train mode on clean x against y")
    got = torch.autograd.grad(out, list(guide.parameters()), retain_graph=True,
                              allow_unused=True)
    _require(all(g is not None and torch.allclose(g, e, atol=1e-9)
                 for g, e in zip(got, expected)),
             "the target's term sends gradient into the guide: with beta > 0 the guide's "
             "gradient changes. The dynamic labels must be hard and carry no gradient "
             "(argmax of detached logits)")
    reference = methods.dynat_loss(*case.nets(), case.x, case.y, eps=case.EPS,
                                   step_size=case.STEP, steps=case.STEPS, beta=beta,
                                   random_start=None)[0]
    value = float(out.detach())
    if not math.isclose(value, float(reference.detach()), rel_tol=1e-9, abs_tol=1e-12):
        _diagnose_dynat_value(value, case, beta)
    return (f"equals dynat_lite.methods.dynat_loss (no random start, beta = {beta:g}): labels "
            f"from the train-mode guide, the attack on the eval-mode target, the target trained "
            f"in train mode; the guide's gradient is its CE's alone; .grad and modes as found")


def _diagnose_dynat_value(value: float, case: _DynatCase, beta: float) -> None:
    """Name the mistake whose loss is ``value`` (always raises)."""
    ref, y = float(case.loss(beta).detach()), case.y
    eval_labels = "the dynamic labels come from the guide in eval mode: DYNAT takes them from " \
                  "the same train-mode forward guide(x) that its CE term uses"
    variants = [(dict(attack_labels=lab, target_labels=lab), eval_labels)
                for lab in case.labels_eval] + [
        (dict(attack_labels=y, target_labels=y), "the target is attacked and trained on y "
         "where the dynamic labels belong: use labels = argmax of the guide's logits in both"),
        (dict(target_labels=y), "the target's loss uses y where the dynamic label belongs: "
         "CE(target(x_adv), labels)"),
        (dict(attack_labels=y), "the attack on the target aims at y where the dynamic label "
         "belongs: PGD maximizes CE(target(x'), labels)"),
        (dict(target_on_clean=True), "the target's loss is on clean x: it is trained on x_adv"),
        (dict(target_eval=True), "the target's loss runs in eval mode: switch it back to train "
         "mode before CE(target(x_adv), labels)"),
        (dict(guide_beta=True), "beta multiplies the guide's term too: only the target's term "
         "is weighted, CE(guide(x), y) + beta·CE(target(x_adv), labels)"),
    ]
    for kwargs, message in variants:
        variant = case.loss(beta, **kwargs)
        variant = float(variant.detach())
        _require(not math.isclose(value, variant, rel_tol=1e-9, abs_tol=1e-12), message)
    _require(not math.isclose(value, float(case.loss(1.0).detach()), rel_tol=1e-9),
             "the target's term is not multiplied by beta")
    _require(False, f"the loss differs from DYNAT's by {_fmt(abs(value - ref))}: CE(guide(x), y) "
                    f"+ beta·CE(target(x_adv), labels), labels = argmax guide(x), x_adv = PGD "
                    f"from x on the eval-mode target against the labels")


# The collapse rule (diagnostics.is_collapsed) on hand-made histories. Each epoch is built so
# that one mistake changes its verdict, and so that every way of taking a median (statistics,
# numpy, torch's lower median) gives the right verdict on the samples that count.
def _steps(first_step: int, agreement, spread) -> list[dict]:
    """One epoch's diagnostic samples: the given label agreements and logit spreads, the other
    fields filled in plausibly."""
    return [{"step": first_step + 2 * i, "label_agreement": a, "logit_spread": s,
             "clean_accuracy": min(a, 0.9), "top_class_share": 0.2 if s > 1 else 0.5,
             "adv_loss": 2.3 if s < 0.5 else 1.5, "dead_units": 0.5 if s < 0.5 else 0.0}
            for i, (a, s) in enumerate(zip(agreement, spread))]


#: Per epoch of the checker's history: (what it tests, label agreements, logit spreads); the
#: rule reads the second half, steps[len(steps) // 2:].
_COLLAPSE_EPOCHS = (
    ("an untrained start: weak labels, flat output (not collapsed: the labels carry nothing)",
     [0.1, 0.1, 0.1, 0.1], [0.05, 0.04, 0.03, 0.02]),
    ("labels turning good, the output going flat (collapsed in the second half only)",
     [0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9], [6.0, 6.0, 6.0, 6.0, 6.0, 0.2, 0.2, 0.2]),
    ("one large spread among small ones (collapsed: the median is small, the mean is not)",
     [0.95] * 6, [0.3, 0.3, 0.3, 0.1, 0.2, 3.0]),
    ("one sample of agreement 0 (collapsed: the median agreement is 0.6, the mean 0.43)",
     [0.9, 0.9, 0.9, 0.0, 0.6, 0.7], [0.1] * 6),
    ("a target that learns within the epoch: flat at first, a large spread in the second half "
     "(not collapsed)", [0.8, 0.85, 0.9, 0.9, 0.95, 0.97], [0.2, 0.3, 0.4, 3.0, 4.0, 5.0]),
    ("a single sample (collapsed: with one sample, that one is the second half)",
     [0.9], [0.1]),
    ("a median agreement of exactly 0.5 (collapsed: AGREEMENT_MIN itself counts)",
     [0.9, 0.9, 0.9, 0.45, 0.5, 0.9], [0.1] * 6),
    ("a median spread of exactly 0.5 (not collapsed: the spread must be below SPREAD_MAX)",
     [0.9] * 6, [0.1, 0.1, 0.1, 0.4, 0.5, 0.6]),
)


def _collapse_history(first_epoch: int = 1, empty_at: int | None = None) -> list[dict]:
    """Per-epoch records as ``train.fit`` writes them, without their "collapsed" flag (the
    function must compute the rule itself); ``empty_at``: an epoch (index) with no samples."""
    history, step = [], 1
    for i, (_, agreement, spread) in enumerate(_COLLAPSE_EPOCHS):
        steps = [] if i == empty_at else _steps(step, agreement, spread)
        step += 20
        history.append({"epoch": first_epoch + i, "loss": 2.0, "label_agreement":
                        sum(agreement) / len(agreement), "test_clean": 0.3, "test_pgd": 0.1,
                        "steps": steps})
    return history


def _collapse_rule(history, half=lambda s: s[len(s) // 2:], average=None, agree=None,
                   flat=None, agreement_counts=True, spread_counts=True):
    """The epochs of ``history`` flagged by the rule, or by a variant with one mistake."""
    average = average or statistics.median
    agree = agree or (lambda a: a >= diagnostics.AGREEMENT_MIN)
    flat = flat or (lambda s: s < diagnostics.SPREAD_MAX)
    out = []
    for record in history:
        late = half(record["steps"])
        if not late:
            continue
        ok_agreement = agree(average([s["label_agreement"] for s in late]))
        ok_spread = flat(average([s["logit_spread"] for s in late]))
        if (ok_agreement or not agreement_counts) and (ok_spread or not spread_counts):
            out.append(record["epoch"])
    return out


def _collapse_mistakes(history) -> list[tuple[list[int], str]]:
    """(the epochs a mistaken rule returns, the message naming the mistake)."""
    mean = statistics.fmean
    A, S = diagnostics.AGREEMENT_MIN, diagnostics.SPREAD_MAX
    variants = [
        (dict(average=mean), "the mean where the rule takes the median: one outlier (a "
         "single large spread, a single wrong batch) would decide the verdict"),
        (dict(half=lambda s: s), "this reads all of the epoch's samples: the rule reads only "
         "the second half, steps[len(steps) // 2:], where the labels have had time to turn"),
        (dict(half=lambda s: s[:len(s) // 2] or s), "this reads the first half of each epoch: the "
         "rule reads the second half, steps[len(steps) // 2:]"),
        (dict(half=lambda s: s[-1:]), "this reads only the last sample of each epoch: the rule "
         "takes the median over the second half, steps[len(steps) // 2:]"),
        (dict(half=lambda s: s[(len(s) + 1) // 2:]), "with one sample the second half is that "
         "sample: take steps[len(steps) // 2:] (an epoch of one sample can collapse)"),
        (dict(flat=lambda s: s > S), "the spread comparison is reversed: a collapsed target's "
         f"output is flat, its median logit spread BELOW SPREAD_MAX = {S}"),
        (dict(agree=lambda a: a < A), "the agreement comparison is reversed: a collapsed "
         f"target's labels are good, their median agreement with y AT LEAST AGREEMENT_MIN = "
         f"{A}"),
        (dict(flat=lambda s: s > S, agree=lambda a: a < A), "both comparisons are reversed: "
         "collapsed = median agreement >= AGREEMENT_MIN and median spread < SPREAD_MAX"),
        (dict(agree=lambda a: a > A), f"a median agreement of exactly {A} counts: the rule "
         f"asks for agreement >= AGREEMENT_MIN, not >"),
        (dict(flat=lambda s: s <= S), f"a median spread of exactly {S} does not count: the "
         f"rule asks for spread < SPREAD_MAX, not <="),
        (dict(agreement_counts=False), "this ignores the label agreement: a flat output under "
         "weak labels (the untrained start) is not collapse; the rule also asks for median "
         "agreement >= AGREEMENT_MIN"),
        (dict(spread_counts=False), "this ignores the logit spread: good labels alone are not "
         "collapse; the rule also asks for median spread < SPREAD_MAX"),
    ]
    out = []
    for kwargs, message in variants:
        try:
            out.append((_collapse_rule(history, **kwargs), message))
        except statistics.StatisticsError:  # a variant that fails on an epoch: no answer
            pass
    collapsed = _collapse_rule(history)
    out.append(([r["epoch"] for r in history if r["epoch"] not in collapsed],
                "these are the epochs that did NOT collapse"))
    out.append(([i for i, r in enumerate(history) if r["epoch"] in collapsed],
                "these are positions in the list, not the epoch numbers: return "
                "record[\"epoch\"] of each collapsed record"))
    return out


def _call_detect(detect_collapse, history, what: str, hint: str = ""):
    """The student's function on a deep copy of ``history``; checks that it left the copy
    unchanged and returned a list of epoch numbers. ``hint``: added when the function raises."""
    given = copy.deepcopy(history)
    try:
        out = _call(detect_collapse, given)
    except _StudentRaised as raised:
        cause = raised.__cause__
        if isinstance(cause, KeyError) and cause.args == ("collapsed",):
            raise ExerciseError("the records carry no \"collapsed\" flag here (the checker "
                                "leaves it out): compute the rule from record[\"steps\"]") \
                from None
        raise _StudentRaised(f"{raised} on {what}{hint}") from cause
    _require(given == history, f"detect_collapse changed the history it was given ({what}): "
                               f"read the records, do not sort or edit them")
    _require(isinstance(out, (list, tuple)),
             f"detect_collapse must return a list of epoch numbers, got {type(out).__name__}")
    _require(not (len(out) == len(history) and out and all(isinstance(v, bool) for v in out)),
             "detect_collapse returned one bool per epoch: return the epoch numbers "
             "(record[\"epoch\"]) of the collapsed epochs only")
    _require(all(isinstance(v, int) and not isinstance(v, bool) for v in out),
             f"detect_collapse must return epoch numbers (integers), got "
             f"{', '.join(type(v).__name__ for v in out[:3])}")
    return list(out)


def _check_detect_collapse(detect_collapse) -> str:
    history = _collapse_history()
    expected = _collapse_rule(history)
    one = next(r["epoch"] for r, e in zip(history, _COLLAPSE_EPOCHS) if len(e[1]) == 1)
    out = _call_detect(detect_collapse, history, f"a history of {len(history)} epochs",
                       hint=f" (epoch {one} has a single sample: its second half, "
                            f"steps[len(steps) // 2:], is that sample)")
    if out != expected:
        for variant, message in _collapse_mistakes(history):
            _require(out != variant, message)
        epochs = [r["epoch"] for r in history]
        _require(set(out) <= set(epochs), f"returned epoch numbers that are not in the history "
                                          f"({sorted(set(out) - set(epochs))}): return "
                                          f"record[\"epoch\"] of each collapsed record")
        _require(sorted(set(out)) != expected, f"returned the right epochs, but as {out}: each "
                                               f"once, in the history's order")
        i = next(i for i, e in enumerate(epochs) if (e in out) != (e in expected))
        _require(False, f"the verdict on epoch {epochs[i]} is wrong, {_COLLAPSE_EPOCHS[i][0]}: "
                        f"collapsed = over steps[len(steps) // 2:], median label agreement >= "
                        f"AGREEMENT_MIN and median logit spread < SPREAD_MAX")
    # An epoch without samples (diagnose_every = 0, or a history written before them).
    empty = _collapse_history(empty_at=1)
    out = _call_detect(detect_collapse, empty, "a history whose epoch 2 has an empty steps list",
                       hint=": an epoch without samples is not collapsed, skip it")
    _require(out == _collapse_rule(empty),
             "an epoch with an empty steps list has no samples and is not collapsed: leave it "
             "out")
    # A history that starts later (the records of epochs 4 to 11 of a run).
    later = _collapse_history(first_epoch=4)
    out = _call_detect(detect_collapse, later, "a history whose first record is epoch 4")
    _require(out == _collapse_rule(later),
             "on a history whose first record is epoch 4 the epoch numbers are wrong: return "
             "record[\"epoch\"], not a count from 1")
    return (f"epochs {expected} of {len(history)} collapsed by the kit's rule (median over the "
            f"second half, agreement >= {diagnostics.AGREEMENT_MIN}, spread < "
            f"{diagnostics.SPREAD_MAX}), as diagnostics.is_collapsed; an epoch without samples "
            f"left out; record[\"epoch\"] returned; the history untouched")


# -------------------------------------------------------------------------------- lesson 04
def _margin_case():
    """Logits where every way of getting the margin wrong shows: rows whose true class is the
    largest logit, rows where it is not, and a row whose other logits are all negative."""
    g = torch.Generator().manual_seed(15)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    logits[0, 0] = logits[0].max() + 1.0                             # right, by a margin
    logits[5] = torch.tensor([-1.0, -2.5, 3.0, -0.5, -4.0], dtype=torch.float64)  # others < 0
    logits[1, 1] = logits[1].min() - 0.5                             # wrong
    return logits.requires_grad_(True), y


def _check_cw_margin(cw_margin) -> str:
    logits, y = _margin_case()
    watch = _Watch({}, {"logits": logits, "y": y})
    out = _call(cw_margin, logits, y)
    watch.inputs_untouched("cw_margin")
    _require_tensor(out, (len(y),), "the result (one margin per example)")
    _require(out.requires_grad, "the margin carries no gradient: the C&W attack climbs it, so "
                                "compute it from the logits with differentiable operations")
    reference = attacks.attack_loss(logits, y, "cw").double()
    z = logits.detach()
    true = z.gather(1, y[:, None]).squeeze(1)
    others = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).max(1).values
    value = out.detach().double()
    close = lambda a: torch.allclose(value, a, atol=1e-5)  # noqa: E731 (the library is float32)
    _require(not close(z.max(1).values - true),
             "the max includes the true class y: where y has the largest logit the margin "
             "comes out 0. Exclude y before the max (e.g. set its logit to −inf)")
    _require(not close(true - others), "the sign is reversed: the margin is max_{j≠y} z_j − "
                                       "z_y, positive where the model is wrong")
    zeroed = z * (1 - F.one_hot(y, z.shape[1]).double())
    _require(not close(zeroed.max(1).values - true),
             "masking the true class with 0 picks that 0 when every other logit is negative: "
             "mask it with −inf (or a very negative number)")
    probs = z.softmax(1)
    _require(not close(probs.masked_fill(F.one_hot(y, z.shape[1]).bool(), -1).max(1).values
                       - probs.gather(1, y[:, None]).squeeze(1)),
             "this is the margin of the probabilities: C&W's margin is on the logits")
    bad = int((~torch.isclose(value, reference, atol=1e-5)).sum())
    _require(bad == 0, f"{bad} of {len(y)} margins are not max_{{j≠y}} z_j − z_y")
    return (f"max_(j≠y) z_j − z_y for {len(y)} examples, equal to the library's C&W loss, with "
            f"gradient")


def _check_worst_case(worst_case) -> str:
    g = torch.Generator().manual_seed(16)
    clean = torch.rand(12, generator=g) < 0.8
    pgd = clean & (torch.rand(12, generator=g) < 0.7)
    cw = clean & (torch.rand(12, generator=g) < 0.7)
    clean[0], pgd[0], cw[0] = False, True, True  # an attack can fix a wrong clean prediction
    pgd[1], cw[1], clean[1] = False, True, True
    pgd[2], cw[2], clean[2] = True, False, True
    cases = [{"clean": clean, "pgd20": pgd, "cw": cw}, {"pgd20": pgd}]
    for correct in cases:
        expected = torch.stack(list(correct.values())).all(0)
        watch = _Watch({}, dict(correct))
        keys = list(correct)
        out = _call(worst_case, dict(correct))
        watch.inputs_untouched("worst_case")
        _require(torch.is_tensor(out) and out.dim() == 1,
                 f"worst_case must return one boolean per example, got "
                 f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}: not the "
                 f"accuracy, the per-example result")
        _require(len(out) == len(expected), f"worst_case returned {len(out)} values for "
                                            f"{len(expected)} examples")
        _require(out.dtype == torch.bool, f"worst_case returned {out.dtype} values: return "
                                          f"booleans (robust or not), e.g. with &")
        any_ = torch.stack(list(correct.values())).any(0)
        _require(len(keys) == 1 or not torch.equal(out, any_),
                 "this is the OR: an example would count as robust if it survived ANY attack. "
                 "It counts only if it survives EVERY attack (AND)")
        if len(keys) > 1:
            accs = {k: v.float().mean() for k, v in correct.items()}
            strongest = correct[min(accs, key=accs.get)]
            _require(not torch.equal(out, strongest) or torch.equal(strongest, expected),
                     "this is the single strongest attack: the worst case is per example, an "
                     "image counts as robust only if every attack fails on it")
            without_clean = torch.stack([v for k, v in correct.items() if k != "clean"]).all(0)
            _require(not torch.equal(out, without_clean),
                     "an entry of the dict is left out (\"clean\"?): AND over every entry")
        _require(torch.equal(out, expected),
                 f"{int((out != expected).sum())} examples are wrong: an example is robust "
                 f"exactly when every entry of the dict says so")
    return ("the per-example AND over every attack in the dict (3 attacks and 1), booleans, "
            "the dict untouched")


# -------------------------------------------------------------------------------- lesson 06
def _check_straight_through(straight_through) -> str:
    verified = []
    for levels, seed in ((8, 17), (3, 18)):
        x = _images(seed, n=4)
        quantize = evaluate.Quantized(nn.Identity(), levels)
        reference = quantize(x)
        x_in = x.clone().requires_grad_(True)
        out = _call(straight_through, x_in, levels)
        _require_tensor(out, x.shape, "the result")
        _require(torch.equal(x_in.detach(), x), "straight_through changed x in place")
        value = out.detach()
        _require(not torch.allclose(value, x, atol=1e-12),
                 "the forward pass is not quantized: it must equal Quantized's "
                 "round(x·levels)/levels")
        wrong = int((~torch.isclose(value, reference, atol=1e-12)).sum())
        _require(wrong == 0, f"the forward differs from evaluate.Quantized's "
                             f"round(x·levels)/levels on {wrong} pixels (levels = {levels})")
        _require(out.requires_grad, "the result carries no gradient at all: only the rounding "
                                    "is detached, x itself must stay in the graph")
        upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed),
                               dtype=x.dtype)
        grad, = torch.autograd.grad(out, x_in, upstream, allow_unused=True)
        _require(grad is not None and bool(grad.abs().sum() > 0),
                 "the gradient is zero, as rounding's own: that is the mask. BPDA passes the "
                 "gradient straight through: x + (quantized − x).detach()")
        _require(torch.allclose(grad, upstream, atol=1e-12),
                 "the backward pass is not the identity: the gradient reaching x must equal the "
                 "one arriving at the output")
        verified.append(levels)
    return (f"forward equals evaluate.Quantized's rounding (levels {verified[0]} and "
            f"{verified[1]}), backward is the identity")


class _PartlyMasked(nn.Module):
    """``net`` behind a mask: images whose first pixel exceeds 0.5 are rounded (their input
    gradient is exactly zero); the others lose their right half (zero gradient there only)."""

    def __init__(self, net: nn.Module, levels: int = 4):
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x):
        keep = torch.zeros_like(x)
        keep[..., : x.shape[-1] // 2] = 1
        masked = (x[:, :1, :1, :1] > 0.5)
        return self.net(torch.where(masked, torch.round(x * self.levels) / self.levels,
                                    x * keep))


def _check_zero_grad_fraction(zero_grad_fraction) -> str:
    net = _TinyNet(19).float()
    x = _images(20, n=8, dtype=torch.float32)
    x[:, 0, 0, 0] = torch.tensor([0.9, 0.1, 0.2, 0.7, 0.3, 0.6, 0.4, 0.2])  # 3 of 8 masked
    y = _classes(21, n=8)
    cases = [("a plain network", net), ("evaluate.Quantized", evaluate.Quantized(net, 4)),
             ("a partly masked network", _PartlyMasked(net))]
    found = []
    for title, model in cases:
        model = copy.deepcopy(model).train()
        expected = evaluate.zero_gradient_fraction(copy.deepcopy(model), x, y)
        watch = _Watch({"model": model}, {"x": x, "y": y})
        out = _call(zero_grad_fraction, model, x, y)
        watch.inputs_untouched("zero_grad_fraction")
        watch.grads_untouched("zero_grad_fraction", "model")
        watch.mode_restored("zero_grad_fraction", "model")
        _require(watch.stats_unchanged("model"),
                 "zero_grad_fraction ran the model in train mode (its BatchNorm statistics "
                 "changed): evaluate in eval mode (model.eval()), then restore its mode")
        _require(isinstance(out, float) and not isinstance(out, bool),
                 f"zero_grad_fraction must return a Python float, got {type(out).__name__}"
                 + (": use .item()" if torch.is_tensor(out) else ""))
        _require(0 <= out <= 1, f"zero_grad_fraction returned {_fmt(out)} for {title}: return "
                                f"the fraction of examples (a count divided by the batch size)")
        _require(not math.isclose(out, 1 - expected, abs_tol=1e-6),
                 "this is the fraction of examples with a NON-zero gradient")
        if title == "a partly masked network":
            pixels = (3 + 5 * 0.5) / 8
            _require(not math.isclose(out, pixels, abs_tol=1e-6),
                     "this counts zero PIXELS: count EXAMPLES whose gradient is zero at every "
                     "pixel")
            _require(not math.isclose(out, 1.0, abs_tol=1e-6),
                     "an example counts when its gradient is zero at EVERY pixel (all), not at "
                     "some pixel (any)")
        _require(math.isclose(out, expected, abs_tol=1e-6),
                 f"returned {_fmt(out)} for {title}, not the fraction of examples with an "
                 f"all-zero input gradient: take the gradient of CE(model(x), y) with respect "
                 f"to x and count "
                 f"the examples whose gradient is 0 at every pixel")
        found.append(f"{expected:.3g} for {title}")
    return ", ".join(found) + " (equal to evaluate.zero_gradient_fraction); eval mode, mode " \
                              "restored, .grad untouched"


_CHECKS: dict[str, Callable[[Callable], str]] = {
    "fgsm": _check_fgsm,
    "project": _check_project,
    "pgd": _check_pgd,
    "dynamic_labels": _check_dynamic_labels,
    "label_agreement": _check_label_agreement,
    "trades_kl": _check_trades_kl,
    "inner_max": _check_inner_max,
    "dynat_loss": _check_dynat_loss,
    "detect_collapse": _check_detect_collapse,
    "cw_margin": _check_cw_margin,
    "worst_case": _check_worst_case,
    "straight_through": _check_straight_through,
    "zero_grad_fraction": _check_zero_grad_fraction,
}
assert tuple(_CHECKS) == NAMES

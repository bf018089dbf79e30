"""What every checker shares: the error a student sees, calling the student's function, the
requirement helpers, and the small seeded fixtures (tiny float64 networks, images, labels, a
watcher that sees whether inputs or modes were changed). Imports only torch.
"""
from __future__ import annotations

import copy
import inspect
import math
import re
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Frames from here (the package) are the checker's, not the student's.
_PACKAGE = Path(__file__).resolve().parents[1]


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


class _Blank(Exception):
    """A blank (``...``) of the student version was still in the code that ran."""


#: A line of a student version's blank: ``name = ...  # YOUR CODE`` (or ``return ...``).
_BLANK_LINE = re.compile(r"^\s*(?:[\w.\[\], ]+=|return)\s*\.\.\.\s*(?:#.*)?$")


def _blanks(fn) -> tuple[list[str], int]:
    """The lines of ``fn``'s source that are still a blank, ``name = ...``, and how many
    ``raise NotImplementedError`` stubs it still has (none when its source cannot be read)."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return [], 0
    lines = source.splitlines()
    stubs = sum(line.strip().startswith("raise NotImplementedError") for line in lines)
    return [line.strip() for line in lines if _BLANK_LINE.match(line)], stubs


def _is_blank_error(err: Exception) -> bool:
    """An error that Python raises when code computes with ``...`` (a blank left in)."""
    return isinstance(err, (TypeError, AttributeError, ValueError)) and "ellipsis" in str(err)


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
        out = fn(*args)
    except (NotImplementedError, ExerciseError):
        raise
    except Exception as err:  # the student's bug: show it with their traceback
        if _is_blank_error(err):
            raise _Blank(f"{type(err).__name__}: {err}") from err
        raise _StudentRaised(f"your function raised {type(err).__name__}: {err}") from err
    if out is Ellipsis:
        raise _Blank("it returned ...")
    return out


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _require_tensor(out, like_shape, what: str, dtype: torch.dtype | None = None) -> None:
    """``out`` is a tensor of shape ``like_shape`` (and of ``dtype``, when given: a float32
    answer to float64 inputs is told so, not that it misses by rounding)."""
    _require(torch.is_tensor(out), f"{what} must be a tensor, got {type(out).__name__}")
    _require(tuple(out.shape) == tuple(like_shape),
             f"{what} must have shape {tuple(like_shape)}, got {tuple(out.shape)}")
    _require(dtype is None or out.dtype == dtype,
             f"{what} has dtype {out.dtype}, but the inputs are {dtype}: keep the input's dtype "
             f"(no .float(), and give torch.zeros/rand/tensor dtype=x.dtype)")


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


def _edge_images(seed: int, n: int = 6, dtype=torch.float64) -> torch.Tensor:
    """``_images`` with the extremes in every image: its top row black (0), its bottom row white
    (1), where a step must stop at the edge of [0, 1]."""
    x = _images(seed, n, dtype)
    x[:, :, 0, :] = 0.0
    x[:, :, -1, :] = 1.0
    return x


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

    def attacked_in_eval(self, name: str, model: str) -> None:
        """The call left the model's BatchNorm statistics as they were (no train-mode pass)."""
        _require(self.stats_unchanged(model),
                 f"{name} ran the {model} in train mode (its BatchNorm running statistics "
                 f"changed, and its output used the batch's own statistics): attack it in eval "
                 f"mode ({model}.eval()), then restore its mode")


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

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
function that still raises ``NotImplementedError`` (the student version's placeholder) or still
holds a blank (``name = ...``) gets "not written yet" and the task.
"""
from __future__ import annotations

from typing import Callable

from .lesson00 import _check_fgsm, _check_pgd, _check_project
from .lesson01 import _check_dynamic_labels, _check_label_agreement
from .lesson02 import _check_inner_max, _check_trades_kl
from .lesson03 import _check_detect_collapse, _check_dynat_loss, _check_dynat_step
from .lesson04 import _check_cw_margin, _check_worst_case
from .lesson05 import _check_step_cost
from .lesson06 import _check_straight_through, _check_zero_grad_fraction
from .lesson07 import _check_wilson_interval
from .lesson08 import _check_claim_verdict, _check_preregistration
from .support import ExerciseError, _Blank, _blanks, _StudentRaised, _without_name

# The package: ``support`` (the error, calling the student's function, shared fixtures) and one
# module of checkers per lesson; this file holds what a lesson calls.

TASKS: dict[str, str] = {
    "fgsm": "fgsm(model, x, y, eps): one step of size eps along the sign of the gradient of "
            "CE(model(x), y) with respect to x, clamped to [0, 1]; input gradient only, the "
            "model in eval mode and its mode restored afterwards",
    "project": "project(x_adv, x, eps): the nearest point to x_adv in the L-inf ball of "
               "radius eps around x, then clamped to [0, 1]",
    "pgd": "pgd(model, x, y, eps, step_size, steps): PGD on CE(model(x'), y) from x (no random "
           "start), `steps` signed steps of `step_size`, projecting after every step, with the "
           "model in eval mode and its mode restored afterwards",
    "dynamic_labels": "dynamic_labels(guide_logits): the argmax class of each row, with no "
                      "gradient attached",
    "label_agreement": "label_agreement(labels, y): the fraction of labels equal to y, as a "
                       "Python float",
    "trades_kl": "trades_kl(logits_adv, logits_clean): KL(softmax(logits_clean) || "
                 "softmax(logits_adv)), summed over classes, averaged over the batch, "
                 "differentiable with respect to both logits",
    "inner_max": "inner_max(target, x, labels, eps, step_size, steps): PGD from x (no random "
                 "start) maximizing CE(target(x'), labels), projecting every step, with the "
                 "target in eval mode and its mode restored afterwards",
    "dynat_loss": "dynat_loss(guide, target, x, y, eps, step_size, steps, beta): labels = "
                  "argmax of the guide (train mode) on clean x; x_adv = PGD on the target (eval "
                  "mode, no random start) against them; return CE(guide(x), y) + beta * "
                  "CE(target(x_adv), labels), the target back in train mode",
    "dynat_step": "dynat_step(guide, target, optimizer, x, y, eps, step_size, steps, beta): one "
                  "training step of both networks as train.train_epoch takes it: both in train "
                  "mode, loss = dynat_loss(...), the old gradients cleared, backward, one step "
                  "of the one optimizer over both networks; return the loss detached",
    "detect_collapse": "detect_collapse(history): the epoch numbers (record[\"epoch\"]) of the "
                       "records whose samples in the second half, record[\"steps\"][len(steps) "
                       "// 2:], have median label_agreement >= 0.5 and median logit_spread < "
                       "0.5; an epoch without samples is not collapsed",
    "cw_margin": "cw_margin(logits, y): per example, the largest logit of a class j != y "
                 "minus the logit of y",
    "worst_case": "worst_case(correct): from a dict attack name -> boolean tensor (robust per "
                  "example), the per-example AND over all attacks",
    "step_cost": "step_cost(method, steps): for \"standard\", \"pgd_at\" and \"dynat\", the "
                 "forward and backward passes through each network of one training step "
                 "(train.train_epoch, an attack of `steps` PGD steps), as a dict of ints with "
                 "the keys target_forward, target_backward, guide_forward, guide_backward",
    "straight_through": "straight_through(x, levels): forward = evaluate.Quantized's rounding "
                        "round(x * levels) / levels, backward = the identity (BPDA)",
    "zero_grad_fraction": "zero_grad_fraction(model, x, y): the fraction of examples whose "
                          "input gradient of CE(model(x), y) is exactly zero at every pixel, a "
                          "Python float; the model in eval mode, its mode restored, nothing "
                          "left in its .grad",
    "wilson_interval": "wilson_interval(successes, n, z=1.96): the Wilson score interval "
                       "(low, high) of successes / n, two Python floats clamped to [0, 1]; "
                       "ValueError when n = 0",
    "preregistration": "preregistration(): your plan, a dict with the fields of "
                       "evidence.PLAN_FIELDS (claim, metric, comparison, prediction, reason), "
                       "complete, its values written in the function (nothing read from the "
                       "notebook), the same at every call",
    "claim_verdict": "claim_verdict(k_a, n_a, k_b, n_b): with p_a = k_a / n_a and p_b = k_b / "
                     "n_b, the 95 % interval (low, high) of p_a - p_b, p_a - p_b -/+ 1.96 * "
                     "sqrt(p_a(1 - p_a) / n_a + p_b(1 - p_b) / n_b), two Python floats, and the "
                     "verdict on \"a is higher than b\": \"supported\" if low > 0, \"not "
                     "supported\" if high < 0, else \"inconclusive\"",
}

#: Every exercise, in lesson order.
NAMES: tuple[str, ...] = tuple(TASKS)


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
    left, stubs = _blanks(fn)
    if left:
        also = (f", and replace its {stubs} line{'s' if stubs > 1 else ''} `raise "
                f"NotImplementedError(...)` with your code" if stubs else "")
        raise ExerciseError(
            f"{name} is not written yet: fill in the blanks (`...`) of its cell ({len(left)} "
            f"left, the first: `{left[0]}`){also}; run that cell, then this one. Task: "
            f"{TASKS[name]}.") from None
    try:
        verified = _CHECKS[name](fn)
    except _Blank as blank:
        error, cause = ExerciseError(
            f"{name} is not written yet: a blank (`...`) is still in the code it runs ({blank}),"
            f" maybe in a function it calls. Fill in the blanks (`...`), run those cells, then "
            f"this one. Task: {TASKS[name]}."), None
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


_CHECKS: dict[str, Callable[[Callable], str]] = {
    "fgsm": _check_fgsm,
    "project": _check_project,
    "pgd": _check_pgd,
    "dynamic_labels": _check_dynamic_labels,
    "label_agreement": _check_label_agreement,
    "trades_kl": _check_trades_kl,
    "inner_max": _check_inner_max,
    "dynat_loss": _check_dynat_loss,
    "dynat_step": _check_dynat_step,
    "detect_collapse": _check_detect_collapse,
    "cw_margin": _check_cw_margin,
    "worst_case": _check_worst_case,
    "step_cost": _check_step_cost,
    "straight_through": _check_straight_through,
    "zero_grad_fraction": _check_zero_grad_fraction,
    "wilson_interval": _check_wilson_interval,
    "preregistration": _check_preregistration,
    "claim_verdict": _check_claim_verdict,
}
assert tuple(_CHECKS) == NAMES

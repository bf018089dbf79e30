"""The checkers of lesson 00's exercises (fgsm, project, pgd)."""
from __future__ import annotations

import copy

import torch

from .. import attacks
from .support import (_TinyNet, _Watch, _call, _classes, _edge_images, _fmt, _images,
    _input_grad, _require, _require_ball, _require_box, _require_detached, _require_signed_step,
    _require_tensor)


def _fgsm_call(fgsm, model, x, y, eps) -> torch.Tensor:
    """Call the student's fgsm; check what a call must not change; returns x_adv."""
    watch = _Watch({"model": model}, {"x": x, "y": y})
    out = _call(fgsm, model, x, y, eps)
    _require_tensor(out, x.shape, "the result x_adv", dtype=x.dtype)
    watch.inputs_untouched("fgsm")
    watch.grads_untouched("fgsm", "model")
    watch.mode_restored("fgsm", "model")
    watch.attacked_in_eval("fgsm", "model")
    _require_detached(out, "x_adv")
    return out


def _check_fgsm(fgsm) -> str:
    net, x, y, eps = _TinyNet(0), _edge_images(1), _classes(1), 0.1
    _fgsm_call(fgsm, copy.deepcopy(net).eval(), x, y, eps)  # a model in eval mode stays so
    out = _fgsm_call(fgsm, copy.deepcopy(net).train(), x, y, eps)
    reference = attacks.fgsm(copy.deepcopy(net), x, y, eps=eps)
    _require_box(out, "clamp to [0, 1] after the step")
    _require_ball(out, x, eps, "FGSM moves each pixel by ε, no more")
    _require_signed_step(out, x, _input_grad(net, x, y), eps, "the FGSM step")
    _require(torch.allclose(out, reference, atol=1e-9),
             "x_adv differs from dynat_lite.attacks.fgsm: one step ε·sign(∇ₓ CE(model(x), y))")
    for edge in (0.0, 1.0):  # the budget's extremes: nothing moves; every pixel to 0 or 1
        got = _fgsm_call(fgsm, copy.deepcopy(net).train(), x, y, edge)
        wrong = int((~torch.isclose(got, attacks.fgsm(copy.deepcopy(net), x, y, eps=edge),
                                    atol=1e-12)).sum())
        _require(wrong == 0, f"with ε = {edge:g} x_adv is wrong on {wrong} pixels: the step is "
                             f"ε·sign(∇ₓ CE) whatever ε, then the clamp to [0, 1]")
    return (f"one step ε·sign(∇ₓ CE) on {len(x)} images (with black and white pixels, ε = 0.1, "
            f"0 and 1) equals dynat_lite.attacks.fgsm; stays in [0, 1] and the ε-ball; the "
            f"model attacked in eval mode, its mode restored; input gradient only (.grad "
            f"untouched)")


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
    _require_tensor(out, x.shape, "the result", dtype=x.dtype)
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
    _require_tensor(out, x.shape, "the result x_adv", dtype=x.dtype)
    watch.inputs_untouched(name)
    watch.grads_untouched(name, who)
    watch.mode_restored(name, who)
    watch.attacked_in_eval(name, who)
    _require_detached(out, "x_adv")
    return out


def _check_pgd_like(name: str, fn) -> str:
    """pgd and inner_max: the same attack. Each gets its model in train mode (with BatchNorm),
    whose mode it must switch to eval for the attack and restore, and once in eval mode."""
    model, x, lab = _TinyNet(4).train(), _edge_images(5), _classes(5)
    eps, step, steps = 0.06, 0.025, 6

    def run(steps_, net=None, eps_=eps):
        net = copy.deepcopy(model) if net is None else net
        return _pgd_like(name, fn, net, x, lab, eps_, step, steps_)

    run(1, net=copy.deepcopy(model).eval())  # a model that comes in eval mode leaves in it
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
    _require(torch.equal(out, again), "two calls with the same inputs gave different x_adv: "
                                      "no random start, start at x")
    still = run(steps, eps_=0.0)
    moved = float((still - x).abs().max())
    _require(moved <= 1e-12, f"with ε = 0 x_adv moved by up to {_fmt(moved)}: the ε-ball of "
                             f"radius 0 is x itself, project onto it after every step")
    reference = attacks.pgd(copy.deepcopy(model), x, lab, eps=eps, step_size=step, steps=steps,
                            loss="ce", random_start=None)
    if not torch.allclose(out, reference, atol=1e-9):
        _diagnose_pgd(out, model, x, lab, eps, step, steps)
    return (f"{steps} steps of PGD from x (with black and white pixels) equal "
            f"dynat_lite.attacks.pgd (no random start); stays in [0, 1] and the ε-ball (ε = 0 "
            f"too); climbs the loss; input gradient only (.grad untouched); the model attacked "
            f"in eval mode, its mode restored")


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
    return _check_pgd_like("pgd", pgd)

"""The checkers of lesson 00's exercises (fgsm, project, pgd)."""
from __future__ import annotations

import copy

import torch

from .. import attacks
from .support import (_TinyNet, _Watch, _call, _classes, _fmt, _images, _input_grad, _require,
    _require_ball, _require_box, _require_detached, _require_signed_step, _require_tensor)


def _check_fgsm(fgsm) -> str:
    model, x, y, eps = _TinyNet(0).eval(), _images(1), _classes(1), 0.1
    reference = attacks.fgsm(copy.deepcopy(model), x, y, eps=eps)
    watch = _Watch({"model": model}, {"x": x, "y": y})
    out = _call(fgsm, model, x, y, eps)
    _require_tensor(out, x.shape, "the result x_adv", dtype=x.dtype)
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

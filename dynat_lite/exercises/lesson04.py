"""The checkers of lesson 04's exercises (cw_margin, worst_case)."""
from __future__ import annotations


import torch
import torch.nn.functional as F

from .. import attacks
from .support import (_Watch, _call, _require, _require_tensor)


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
    upstream = torch.linspace(-1, 2, len(y), dtype=logits.dtype)
    grad, = torch.autograd.grad(out, logits, upstream, allow_unused=True)
    expected, = torch.autograd.grad(_margin(logits, y), logits, upstream)
    _require(grad is not None and torch.allclose(grad, expected, atol=1e-9),
             "the margins are right but their gradient with respect to the logits is not: both "
             "the best other class's logit and the true class's must stay in the graph (mask a "
             "copy computed from the logits, do not detach)")
    _check_large_margins(cw_margin)
    return (f"max_(j≠y) z_j − z_y for {len(y)} examples, equal to the library's C&W loss, with "
            f"its gradient; also for logits of size 1e5")


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The C&W margin in the logits' own dtype (the library's computes in float32)."""
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.max(1).values - logits.gather(1, y[:, None]).squeeze(1)


def _check_large_margins(cw_margin) -> None:
    """Logits of size 1e5: a true class far ahead of all others, all others below -1e4."""
    logits = torch.tensor([[1e5, -1e5, -2e5, -1.5e5, -3e5],
                           [-2e5, -1e5, 5e4, -3e5, -1.2e5],
                           [-1e5, 1e5, -2e5, -5e4, -3e5]], dtype=torch.float64)
    y = torch.tensor([0, 2, 3])
    out = _call(cw_margin, logits.clone().requires_grad_(True), y)
    _require_tensor(out, (len(y),), "the result (one margin per example)")
    wrong = int((~torch.isclose(out.detach().double(), _margin(logits, y), rtol=1e-9)).sum())
    _require(wrong == 0,
             f"with logits of size 1e5, {wrong} of {len(y)} margins are wrong: masking the true "
             f"class with a large but finite number (subtracting 1e4, or filling with −1e4) "
             f"does not take it out of the max when the logits are larger still. Mask it with "
             f"−inf")


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

"""The checkers of lesson 02's exercises (trades_kl, inner_max)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import methods
from .lesson00 import _check_pgd_like
from .support import (_Watch, _call, _require)


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
    grads = torch.autograd.grad(out, [adv, clean], allow_unused=True)
    ref_grads = torch.autograd.grad(reference, [adv, clean])
    _require(grads[0] is not None and torch.allclose(grads[0], ref_grads[0], atol=1e-9),
             "the value is right but its gradient with respect to logits_adv is not that of the "
             "KL: compute it from logits_adv with differentiable operations")
    _require(grads[1] is not None and bool(grads[1].abs().sum() > 0),
             "no gradient reaches logits_clean: TRADES trains the network through its clean "
             "logits too (lesson 02: the loss trains through both), so do not detach them")
    _require(torch.allclose(grads[1], ref_grads[1], atol=1e-9),
             "the gradient with respect to logits_clean is not that of the KL: compute "
             "softmax(logits_clean) and its log from logits_clean with differentiable "
             "operations")
    _check_large_logits(trades_kl)
    return ("KL(p_clean ‖ p_adv), summed over classes and averaged over the batch, with its "
            "gradient with respect to both logits, also for logits of size 1e5 (equal to the "
            "TRADES term of dynat_lite.methods)")


def _check_large_logits(trades_kl) -> None:
    """Logits of size 1e5, where softmax underflows to exactly 0 for all classes but one."""
    adv, clean = (5e4 * t.detach() for t in _kl_pair())
    adv, clean = adv.requires_grad_(True), clean.requires_grad_(True)
    reference = methods._kl(adv, F.softmax(clean, 1))
    out = _call(trades_kl, adv, clean)
    value = float(out.detach())
    _require(math.isfinite(value),
             f"with logits of size 1e5 the KL comes out {value}: there softmax underflows to 0 "
             f"and log(0) = −inf. Compute the log-probabilities with F.log_softmax, not "
             f"log(softmax(...))")
    _require(math.isclose(value, float(reference.detach()), rel_tol=1e-9),
             "with logits of size 1e5 the KL is wrong: where softmax underflows to 0, "
             "log(softmax + a small constant) is not the log-probability. Compute the "
             "log-probabilities with F.log_softmax")


def _check_inner_max(inner_max) -> str:
    return _check_pgd_like("inner_max", inner_max)

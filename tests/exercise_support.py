"""The exercises' reference solutions and correct variants: every one must pass its check
(tests/test_exercises.py); the mistakes built on them are in tests/mistake_support.py."""
from __future__ import annotations

import functools
import math
import operator
import statistics

import numpy as np
import torch
import torch.nn.functional as F

from dynat_lite import attacks, diagnostics, evaluate, exercises, methods, study, train

# ------------------------------------------------------------------------ reference solutions
def fgsm_step(model, x, y, eps):
    """FGSM in whatever mode the model is (the mistakes use it as it is)."""
    x = x.clone().detach().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def fgsm(model, x, y, eps):
    with attacks.eval_mode(model):
        return fgsm_step(model, x, y, eps)


def project(x_adv, x, eps):
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def pgd_steps(model, x, y, eps, step_size, steps):
    """PGD in whatever mode the model is (the mistakes use it as it is)."""
    x_adv = x.clone().detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def pgd(model, x, y, eps, step_size, steps):
    was_training = model.training
    model.eval()
    try:
        return pgd_steps(model, x, y, eps, step_size, steps)
    finally:
        model.train(was_training)


def dynamic_labels(guide_logits):
    return guide_logits.detach().argmax(dim=1)


def label_agreement(labels, y):
    return (labels == y).float().mean().item()


def trades_kl(logits_adv, logits_clean):
    p_clean = F.softmax(logits_clean, dim=1)
    log_ratio = F.log_softmax(logits_clean, dim=1) - F.log_softmax(logits_adv, dim=1)
    return (p_clean * log_ratio).sum(dim=1).mean()


def inner_max(target, x, labels, eps, step_size, steps):
    was_training = target.training
    target.eval()
    try:
        return pgd(target, x, labels, eps, step_size, steps)
    finally:
        target.train(was_training)


def dynat_loss(guide, target, x, y, eps, step_size, steps, beta):
    guide_logits = guide(x)
    labels = dynamic_labels(guide_logits)
    x_adv = inner_max(target, x, labels, eps, step_size, steps)
    return F.cross_entropy(guide_logits, y) + beta * F.cross_entropy(target(x_adv), labels)


def detect_collapse(history):
    collapsed = []
    for record in history:
        late = record["steps"][len(record["steps"]) // 2:]
        if (late and statistics.median(s["label_agreement"] for s in late) >= 0.5
                and statistics.median(s["logit_spread"] for s in late) < 0.5):
            collapsed.append(record["epoch"])
    return collapsed


def cw_margin(logits, y):
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.max(dim=1).values - true


def worst_case(correct):
    return torch.stack(list(correct.values())).all(dim=0)


def straight_through(x, levels):
    return x + (torch.round(x * levels) / levels - x).detach()


def zero_grad_fraction(model, x, y):
    was_training = model.training
    model.eval()
    try:
        x = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    finally:
        model.train(was_training)
    return (grad.flatten(1).abs().sum(1) == 0).float().mean().item()


def dynat_step(guide, target, optimizer, x, y, eps, step_size, steps, beta):
    guide.train()
    target.train()
    loss = dynat_loss(guide, target, x, y, eps, step_size, steps, beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def step_cost(method, steps):
    attack_steps = 0 if method == "standard" else steps
    has_guide = method == "dynat"
    return {"target_forward": attack_steps + 1, "target_backward": attack_steps + 1,
            "guide_forward": int(has_guide), "guide_backward": int(has_guide)}


def wilson_interval(successes, n, z=1.96):
    if n < 1:
        raise ValueError("An interval needs at least one trial.")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def preregistration():
    claim = "With a guide pre-trained alone, DYNAT's target is more robust than PGD-AT's from DYNAT's start"
    metric = "pgd20"
    comparison = ["dynat_guide_init", "pgd_at_gauss"]
    prediction = "inconclusive"
    reason = "Lesson 07 found PGD-20 within the noise of PGD-AT at 4,000 images and 124 steps."
    return {"claim": claim, "metric": metric, "comparison": comparison, "prediction": prediction,
            "reason": reason}


def claim_verdict(k_a, n_a, k_b, n_b):
    p_a, p_b = k_a / n_a, k_b / n_b
    margin = 1.96 * math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    low, high = p_a - p_b - margin, p_a - p_b + margin
    verdict = "supported" if low > 0 else "not supported" if high < 0 else "inconclusive"
    return low, high, verdict


REFERENCES = {name: globals()[name] for name in exercises.NAMES}

# ---------------------------------------------------------------------------- correct variants
def fgsm_context_minmax_ratio(model, x, y, eps):
    """eval mode via the library's context manager, projection by torch.min/max, grad/|grad|."""
    with attacks.eval_mode(model), torch.enable_grad():
        x_adv = x.detach().clone().requires_grad_(True)
        loss = F.nll_loss(F.log_softmax(model(x_adv), 1), y, reduction="sum")
        grad, = torch.autograd.grad(loss, x_adv)
    step = x + eps * grad / grad.abs()
    return torch.max(torch.min(step, torch.ones_like(x)), torch.zeros_like(x)).detach()


def fgsm_no_grad_sum(model, x, y, eps):
    """A loss summed over the batch, clamp(min=, max=), the result built under no_grad."""
    mode = model.training
    model.eval()
    x_adv = x.clone().requires_grad_()
    grad = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), [x_adv])[0]
    model.train(mode)
    with torch.no_grad():
        return torch.clamp(x + eps * torch.sign(grad), min=0.0, max=1.0)


def project_clamp_tensors(x_adv, x, eps):
    return x_adv.clamp(x - eps, x + eps).clamp(0, 1)


def project_delta(x_adv, x, eps):
    delta = torch.clamp(x_adv - x, -eps, eps)
    return torch.clamp(x + delta, 0, 1)


def project_box_first(x_adv, x, eps):
    return torch.clamp(x_adv, 0, 1).clamp(min=x - eps, max=x + eps)


def pgd_ratio_clamp(model, x, y, eps, step_size, steps):
    with attacks.eval_mode(model):
        return _pgd_ratio_clamp(model, x, y, eps, step_size, steps)


def _pgd_ratio_clamp(model, x, y, eps, step_size, steps):
    x_adv = x.detach().clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        grad, = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + step_size * grad / grad.abs()
            x_adv = x_adv.clamp(x - eps, x + eps).clamp(0, 1)
    return x_adv


def pgd_with_library_projection(model, x, y, eps, step_size, steps):
    x_adv = x
    for _ in range(steps):
        x_adv = attacks.project(fgsm(model, x_adv, y, step_size), x, eps)
    return x_adv


def pgd_library(model, x, y, eps, step_size, steps):
    return attacks.pgd(model, x, y, eps=eps, step_size=step_size, steps=steps,
                       random_start=None)


def labels_max_indices(guide_logits):
    return torch.max(guide_logits, 1).indices


def labels_no_grad(guide_logits):
    with torch.no_grad():
        return guide_logits.argmax(-1)


def labels_plain_argmax(guide_logits):
    return guide_logits.argmax(1)  # integer tensors never carry gradient


def agreement_count(labels, y):
    return float((labels == y).sum()) / len(y)


def agreement_numpy(labels, y):
    return float(np.mean(labels.numpy() == y.numpy()))


def agreement_double(labels, y):
    return (labels == y).double().mean().item()


def kl_div_batchmean(logits_adv, logits_clean):
    return F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1),
                    reduction="batchmean")


def kl_log_softmax_terms(logits_adv, logits_clean):
    log_p, log_q = F.log_softmax(logits_clean, -1), F.log_softmax(logits_adv, -1)
    return torch.sum(log_p.exp() * (log_p - log_q)) / logits_adv.shape[0]


def kl_log_target(logits_adv, logits_clean):
    return F.kl_div(F.log_softmax(logits_adv, 1), F.log_softmax(logits_clean, 1),
                    reduction="sum", log_target=True) / len(logits_adv)


def inner_max_context(target, x, labels, eps, step_size, steps):
    with attacks.eval_mode(target):
        return pgd_ratio_clamp(target, x, labels, eps, step_size, steps)


def inner_max_library(target, x, labels, eps, step_size, steps):
    return attacks.pgd(target, x, labels, eps=eps, step_size=step_size, steps=steps,
                       random_start=None)


def dynat_loss_library_pieces(guide, target, x, y, eps, step_size, steps, beta):
    guide_logits = guide(x)
    with torch.no_grad():
        labels = guide_logits.argmax(1)
    x_adv = attacks.pgd(target, x, labels, eps=eps, step_size=step_size, steps=steps,
                        random_start=None)
    target_term = F.cross_entropy(target(x_adv), labels, reduction="none").mean()
    return F.cross_entropy(guide_logits, y) + beta * target_term


def dynat_loss_library(guide, target, x, y, eps, step_size, steps, beta):
    loss, _ = methods.dynat_loss(guide, target, x, y, eps=eps, step_size=step_size,
                                 steps=steps, beta=beta, random_start=None)
    return loss


def dynat_loss_explicit_modes(guide, target, x, y, eps, step_size, steps, beta):
    guide_logits = guide(x)
    labels = guide_logits.argmax(1)
    target.eval()
    x_adv = pgd(target, x, labels, eps, step_size, steps)
    target.train()
    return F.cross_entropy(guide_logits, y) + beta * F.cross_entropy(target(x_adv), labels)


def collapse_library(history):
    return [record["epoch"] for record in history if diagnostics.is_collapsed(record["steps"])]


def collapse_numpy(history):
    out = []
    for record in history:
        steps = record["steps"]
        if len(steps) == 0:
            continue
        late = steps[len(steps) // 2:]
        agreement = np.median([s["label_agreement"] for s in late])
        spread = np.median([s["logit_spread"] for s in late])
        if agreement >= diagnostics.AGREEMENT_MIN and spread < diagnostics.SPREAD_MAX:
            out.append(int(record["epoch"]))
    return out


def collapse_torch_lower_median(history):
    def median(values):
        return torch.tensor(values).median().item()  # the lower of the two middle values

    return [r["epoch"] for r in history if r["steps"]
            and median([s["label_agreement"] for s in r["steps"][len(r["steps"]) // 2:]]) >= 0.5
            and median([s["logit_spread"] for s in r["steps"][len(r["steps"]) // 2:]]) < 0.5]


def margin_topk(logits, y):
    top = logits.topk(2, dim=1)
    best_other = torch.where(top.indices[:, 0] == y, top.values[:, 1], top.values[:, 0])
    return best_other - logits.gather(1, y[:, None]).squeeze(1)


def margin_most_negative(logits, y):
    """The true class masked with the most negative float of the dtype."""
    one_hot = F.one_hot(y, logits.shape[1]).bool()
    others = logits.masked_fill(one_hot, torch.finfo(logits.dtype).min)
    return others.max(1).values - (logits * one_hot).sum(1)


def margin_library(logits, y):
    return attacks.attack_loss(logits, y, "cw")


def worst_case_reduce(correct):
    return functools.reduce(operator.and_, correct.values())


def worst_case_loop(correct):
    robust = None
    for ok in correct.values():
        robust = ok.clone() if robust is None else robust & ok
    return robust


def worst_case_min(correct):
    return torch.stack([v.int() for v in correct.values()]).min(0).values.bool()


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, levels):
        return torch.round(x * levels) / levels

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


def ste_function(x, levels):
    return _RoundSTE.apply(x, levels)


def ste_rescaled(x, levels):
    scaled = x * levels
    return (scaled + (torch.round(scaled) - scaled).detach()) / levels


def zero_grad_all(model, x, y):
    with attacks.eval_mode(model):
        x = x.detach().clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (grad.flatten(1) == 0).all(dim=1).float().mean().item()


def zero_grad_count_nonzero(model, x, y):
    was_training = model.training
    model.eval()
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    model.train(was_training)
    zero = torch.count_nonzero(grad.abs().flatten(1) > 1e-12, dim=1) == 0
    return int(zero.sum()) / len(x)


def zero_grad_library(model, x, y):
    return evaluate.zero_gradient_fraction(model, x, y)


def dynat_step_library(guide, target, optimizer, x, y, eps, step_size, steps, beta):
    """The library's pieces: nets.train(), methods.dynat_loss, zeros kept in .grad."""
    nets = train.Nets(target, guide)
    nets.train()
    loss, _ = methods.dynat_loss(guide, target, x, y, eps=eps, step_size=step_size,
                                 steps=steps, beta=beta, random_start=None)
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    optimizer.step()
    return loss.detach()


def dynat_step_module_zero_grad(guide, target, optimizer, x, y, eps, step_size, steps, beta):
    """Gradients cleared through the networks, before the loss is computed."""
    for net in (guide, target):
        net.train()
        net.zero_grad()
    loss = dynat_loss_library_pieces(guide, target, x, y, eps, step_size, steps, beta)
    loss.backward()
    optimizer.step()
    return loss.detach().clone()


def step_cost_by_method(method, steps):
    counts = dict(target_forward=1, target_backward=1, guide_forward=0, guide_backward=0)
    if method in ("pgd_at", "dynat"):
        counts["target_forward"] += steps
        counts["target_backward"] += steps
    if method == "dynat":
        counts["guide_forward"] = counts["guide_backward"] = 1
    return counts


def step_cost_table(method, steps):
    attack = {"standard": 0, "pgd_at": steps, "dynat": steps}[method]
    guide = {"standard": 0, "pgd_at": 0, "dynat": 1}[method]
    return dict(zip(("target_forward", "target_backward", "guide_forward", "guide_backward"),
                    (attack + 1, attack + 1, guide, guide)))


def wilson_library(successes, n, z=1.96):
    return study.wilson_interval(successes / n if n else 0.0, n, z)


def wilson_counts(successes, n, z=1.96):
    """The same formula multiplied through by n, in counts; bounds clamped with min/max."""
    if n == 0:
        raise ValueError("no trials")
    z2 = z ** 2
    centre = (successes + z2 / 2) / (n + z2)
    half = z * (successes * (n - successes) / n + z2 / 4) ** 0.5 / (n + z2)
    return float(max(centre - half, 0)), float(min(centre + half, 1))


def preregistration_literal():
    """One dict literal, the comparison a tuple."""
    return dict(claim="DYNAT as published reaches a higher clean accuracy than PGD-AT from Madry's start",
                metric="clean", comparison=("dynat", "pgd_at"), prediction="not supported",
                reason="Lesson 07's trade-off study found DYNAT's clean accuracy 9 to 12 points below.")


def preregistration_keyword_default(warmup="dynat_label_warmup"):
    """An argument with a default (nothing has to be passed), the plan built step by step."""
    plan = {"claim": "With y for the first steps, DYNAT's target is more robust than static labels"}
    plan.update(metric="pgd20", comparison=[warmup, "pgd_at_gauss"], prediction="inconclusive")
    plan["reason"] = "A small study has wide intervals, so most differences stay within the noise."
    return plan


def claim_verdict_library(k_a, n_a, k_b, n_b):
    """The kit's margin and its rule, by name."""
    from dynat_lite import evidence
    p_a, p_b = k_a / n_a, k_b / n_b
    m = evidence.difference_margin(p_a, p_b, n_a, n_b)
    verdict = (evidence.SUPPORTED if p_a - p_b > m else
               evidence.NOT_SUPPORTED if p_a - p_b < -m else evidence.INCONCLUSIVE)
    return p_a - p_b - m, p_a - p_b + m, verdict


def claim_verdict_numpy(k_a, n_a, k_b, n_b):
    """numpy for the root, floats returned, a list instead of a tuple."""
    p = np.array([k_a / n_a, k_b / n_b])
    se = np.sqrt((p * (1 - p) / np.array([n_a, n_b])).sum())
    low, high = float(p[0] - p[1] - 1.96 * se), float(p[0] - p[1] + 1.96 * se)
    return [low, high, "supported" if low > 0 else ("not supported" if high < 0 else "inconclusive")]


CORRECT = {
    "fgsm": [fgsm_context_minmax_ratio, fgsm_no_grad_sum],
    "project": [project_clamp_tensors, project_delta, project_box_first],
    "pgd": [pgd_ratio_clamp, pgd_with_library_projection, pgd_library],
    "dynamic_labels": [labels_max_indices, labels_no_grad, labels_plain_argmax],
    "label_agreement": [agreement_count, agreement_numpy, agreement_double],
    "trades_kl": [kl_div_batchmean, kl_log_target, kl_log_softmax_terms],
    "inner_max": [inner_max_context, inner_max_library],
    "dynat_loss": [dynat_loss_library_pieces, dynat_loss_library, dynat_loss_explicit_modes],
    "dynat_step": [dynat_step_library, dynat_step_module_zero_grad],
    "detect_collapse": [collapse_library, collapse_numpy, collapse_torch_lower_median],
    "cw_margin": [margin_topk, margin_most_negative, margin_library],
    "worst_case": [worst_case_reduce, worst_case_loop, worst_case_min],
    "step_cost": [step_cost_by_method, step_cost_table],
    "straight_through": [ste_function, ste_rescaled],
    "zero_grad_fraction": [zero_grad_all, zero_grad_count_nonzero, zero_grad_library],
    "wilson_interval": [wilson_library, wilson_counts],
    "preregistration": [preregistration_literal, preregistration_keyword_default],
    "claim_verdict": [claim_verdict_library, claim_verdict_numpy],
}



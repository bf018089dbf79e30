"""The exercise checker: every reference solution and correct variants pass; the common mistakes
are rejected, each with a message that names the mistake; unwritten exercises say so."""
from __future__ import annotations

import copy
import functools
import operator
import statistics
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dynat_lite import attacks, diagnostics, evaluate, exercises, methods
from dynat_lite.exercises import ExerciseError, check


# ------------------------------------------------------------------------ reference solutions
def fgsm(model, x, y, eps):
    x = x.clone().detach().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def project(x_adv, x, eps):
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def pgd(model, x, y, eps, step_size, steps):
    x_adv = x.clone().detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


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
    x_adv = x.clone().requires_grad_()
    grad = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), [x_adv])[0]
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


def kl_clean_detached(logits_adv, logits_clean):
    p = F.softmax(logits_clean.detach(), 1)
    return F.kl_div(F.log_softmax(logits_adv, 1), p, reduction="none").sum(1).mean()


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


def margin_big_number(logits, y):
    one_hot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return (logits - 1e9 * one_hot).max(1).values - (logits * one_hot).sum(1)


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


CORRECT = {
    "fgsm": [fgsm_context_minmax_ratio, fgsm_no_grad_sum],
    "project": [project_clamp_tensors, project_delta, project_box_first],
    "pgd": [pgd_ratio_clamp, pgd_with_library_projection, pgd_library],
    "dynamic_labels": [labels_max_indices, labels_no_grad, labels_plain_argmax],
    "label_agreement": [agreement_count, agreement_numpy, agreement_double],
    "trades_kl": [kl_div_batchmean, kl_clean_detached, kl_log_target],
    "inner_max": [inner_max_context, inner_max_library],
    "dynat_loss": [dynat_loss_library_pieces, dynat_loss_library, dynat_loss_explicit_modes],
    "detect_collapse": [collapse_library, collapse_numpy, collapse_torch_lower_median],
    "cw_margin": [margin_topk, margin_big_number, margin_library],
    "worst_case": [worst_case_reduce, worst_case_loop, worst_case_min],
    "straight_through": [ste_function, ste_rescaled],
    "zero_grad_fraction": [zero_grad_all, zero_grad_count_nonzero, zero_grad_library],
}


# ------------------------------------------------------------------------------------ mistakes
def _fgsm_with(step):
    """An FGSM whose step is ``step(x, grad, eps)`` (for the mistakes)."""
    def attack(model, x, y, eps):
        x_adv = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        return step(x, grad, eps).detach()
    return attack


def fgsm_backward(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()  # also fills the parameters' .grad
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def fgsm_train_at_end(model, x, y, eps):
    out = fgsm(model, x, y, eps)
    model.train()
    return out


def fgsm_in_place(model, x, y, eps):
    grad = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(grad), y), grad)
    return x.add_(eps * g.sign()).clamp_(0, 1)


def _pgd_with(step, start=lambda x, eps: x.clone(), project_each=True, grad_once=False,
              proj=project):
    """A PGD with one thing changed (for the mistakes)."""
    def attack(model, x, y, eps, step_size, steps):
        x_adv, g0 = start(x, eps), None
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
            g0 = grad if (g0 is None or not grad_once) else g0
            x_adv = step(x_adv.detach(), g0, step_size, eps)
            x_adv = proj(x_adv, x, eps) if project_each else x_adv
        return (x_adv if project_each else proj(x_adv, x, eps)).detach()
    return attack


def _up(x_adv, g, step, eps):
    return x_adv + step * g.sign()


def pgd_backward(model, x, y, eps, step_size, steps):
    x_adv = x.clone()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        F.cross_entropy(model(x_adv), y).backward()
        x_adv = project(x_adv + step_size * x_adv.grad.sign(), x, eps)
    return x_adv.detach()


def inner_max_no_eval(target, x, labels, eps, step_size, steps):
    return pgd(target, x, labels, eps, step_size, steps)


def inner_max_no_restore(target, x, labels, eps, step_size, steps):
    target.eval()
    return pgd(target, x, labels, eps, step_size, steps)


def inner_max_always_train(target, x, labels, eps, step_size, steps):
    target.eval()
    out = pgd(target, x, labels, eps, step_size, steps)
    target.train()
    return out


def inner_max_descends(target, x, labels, eps, step_size, steps):
    with attacks.eval_mode(target):
        return _pgd_with(lambda xa, g, s, e: xa - s * g.sign())(target, x, labels, eps,
                                                                 step_size, steps)


def inner_max_random_start(target, x, labels, eps, step_size, steps):
    return attacks.pgd(target, x, labels, eps=eps, step_size=step_size, steps=steps)


def _dynat_with(attack_labels="dynamic", target_labels="dynamic", guide_eval_labels=False,
                attack_train=False, target_eval=False, soft=False, beta_used=True):
    def loss_fn(guide, target, x, y, eps, step_size, steps, beta):
        guide_logits = guide(x)
        labels = guide_logits.detach().argmax(1)
        if guide_eval_labels:
            guide.eval()
            labels = guide(x).argmax(1)
            guide.train()
        pick = {"dynamic": labels, "y": y}
        if attack_train:
            x_adv = pgd(target, x, pick[attack_labels], eps, step_size, steps)
        else:
            x_adv = inner_max(target, x, pick[attack_labels], eps, step_size, steps)
        target.train(not target_eval)
        target_out = target(x_adv)
        target.train()
        if soft:
            term = F.cross_entropy(target_out, F.softmax(guide_logits, 1))
        else:
            term = F.cross_entropy(target_out, pick[target_labels])
        return F.cross_entropy(guide_logits, y) + (beta if beta_used else 1.0) * term
    return loss_fn


def dynat_random_start(guide, target, x, y, eps, step_size, steps, beta):
    return methods.dynat_loss(guide, target, x, y, eps=eps, step_size=step_size, steps=steps,
                              beta=beta)[0]


def dynat_returns_tuple(guide, target, x, y, eps, step_size, steps, beta):
    return methods.dynat_loss(guide, target, x, y, eps=eps, step_size=step_size, steps=steps,
                              beta=beta, random_start=None)


def _collapse_with(half=lambda s: s[len(s) // 2:], average=statistics.median,
                   rule=lambda a, s: a >= 0.5 and s < 0.5, empty=False, skip_empty=True,
                   epoch=lambda i, record: record["epoch"], verdicts=False):
    """A detect_collapse with one thing changed (for the mistakes)."""
    def detect(history):
        out = []
        for i, record in enumerate(history):
            if not record["steps"] and skip_empty:
                flagged = empty
            else:
                late = half(record["steps"])
                flagged = rule(average([s["label_agreement"] for s in late]),
                               average([s["logit_spread"] for s in late]))
            if verdicts:
                out.append(flagged)
            elif flagged:
                out.append(epoch(i, record))
        return out
    return detect


def collapse_sorts_in_place(history):
    for record in history:
        record["steps"].sort(key=lambda s: s["logit_spread"])
    return detect_collapse(history)


def _margin_masked_by_zero(logits, y):
    one_hot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return (logits * (1 - one_hot)).max(1).values - (logits * one_hot).sum(1)


def _zero_grad_counting(count):
    def fn(model, x, y):
        with attacks.eval_mode(model):
            x = x.clone().requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
        return count(grad.flatten(1) == 0, len(x))
    return fn


def zero_grad_train_mode(model, x, y):
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (grad.flatten(1) == 0).all(1).float().mean().item()


def zero_grad_no_restore(model, x, y):
    model.eval()
    return zero_grad_train_mode(model, x, y)


def zero_grad_backward(model, x, y):
    with attacks.eval_mode(model):
        x = x.clone().requires_grad_(True)
        F.cross_entropy(model(x), y).backward()
    return (x.grad.flatten(1) == 0).all(1).float().mean().item()


def _reversed_kl(a, c):
    return F.kl_div(F.log_softmax(c, 1), F.softmax(a, 1), reduction="batchmean")


MISTAKES = [
    # fgsm
    ("fgsm", _fgsm_with(lambda x, g, eps: x + eps * g.sign()), "leaves the image range [0, 1]"),
    ("fgsm", _fgsm_with(lambda x, g, eps: (x - eps * g.sign()).clamp(0, 1)),
     "goes down the loss"),
    ("fgsm", _fgsm_with(lambda x, g, eps: (x + eps * g).clamp(0, 1)), "different amounts"),
    ("fgsm", fgsm_backward, "changed the model's parameter gradients (.grad)"),
    ("fgsm", fgsm_train_at_end, "left the model in train mode"),
    ("fgsm", fgsm_in_place, "changed its argument x in place"),
    ("fgsm", lambda m, x, y, eps: fgsm(m, x, m(x).argmax(1), eps), "differs from x + step"),
    ("fgsm", lambda m, x, y, eps: fgsm(m, x, y, eps).requires_grad_(True), "still requires grad"),
    # project
    ("project", lambda xa, x, eps: torch.min(torch.max(xa, x - eps), x + eps),
     "leaves the image range [0, 1]"),
    ("project", lambda xa, x, eps: xa.clamp(0, 1), "leaves the ε-ball"),
    ("project", lambda xa, x, eps: (x + eps * (xa - x).sign()).clamp(0, 1),
     "already within ε of x"),
    ("project", lambda xa, x, eps: torch.clamp(xa - x, -eps, eps), "leaves the ε-ball"),
    ("project", lambda xa, x, eps: xa.clamp(-eps, eps).clamp(0, 1), "leaves the ε-ball"),
    # pgd
    ("pgd", _pgd_with(_up, project_each=False), "only at the end"),
    ("pgd", _pgd_with(lambda xa, g, s, e: (xa + s * g.sign()).clamp(0, 1),
                      proj=lambda xa, x, eps: xa), "project after every step"),
    ("pgd", _pgd_with(_up, proj=lambda xa, x, eps: torch.min(torch.max(xa, x - eps), x + eps)),
     "leaves the image range [0, 1]"),
    ("pgd", _pgd_with(lambda xa, g, s, e: xa - s * g.sign()), "goes down the loss"),
    ("pgd", _pgd_with(_up, start=lambda x, eps: (x + eps * (2 * torch.rand_like(x) - 1))
                      .clamp(0, 1)), "no random start"),
    ("pgd", _pgd_with(_up, grad_once=True), "recompute the gradient"),
    ("pgd", _pgd_with(lambda xa, g, s, e: xa + e * g.sign()), "not by the step size"),
    ("pgd", pgd_backward, "(.grad)"),
    # dynamic_labels
    ("dynamic_labels", lambda z: F.softmax(z, 1), "carry gradient"),
    ("dynamic_labels", lambda z: (F.softmax(z, 1) * torch.arange(z.shape[1])).sum(1),
     "carry gradient"),
    ("dynamic_labels", lambda z: z.detach().argmax(0), "not over the batch (dim=0)"),
    ("dynamic_labels", lambda z: z.detach().argmin(1), "not the class with the largest logit"),
    ("dynamic_labels", lambda z: z.detach().argmax(1).float(), "integers"),
    ("dynamic_labels", lambda z: F.softmax(z, 1).detach(), "one label per row"),
    # label_agreement
    ("label_agreement", lambda lab, y: (lab == y).float().mean(), "Python float, got Tensor"),
    ("label_agreement", lambda lab, y: float((lab == y).sum()), "the number of agreeing labels"),
    ("label_agreement", lambda lab, y: 100 * (lab == y).float().mean().item(), "a percentage"),
    ("label_agreement", lambda lab, y: (lab != y).float().mean().item(), "DIFFER from y"),
    ("label_agreement", lambda lab, y: float(int((lab == y).sum()) // len(y)),
     "of which 14 equal y"),
    # trades_kl
    ("trades_kl", _reversed_kl, "wrong direction"),
    ("trades_kl", lambda a, c: F.kl_div(F.log_softmax(a, 1), F.softmax(c, 1), reduction="sum"),
     "summed over the batch"),
    ("trades_kl", lambda a, c: F.kl_div(F.log_softmax(a, 1), F.softmax(c, 1),
                                        reduction="none").mean(),
     "averaged over the classes"),
    ("trades_kl", lambda a, c: F.kl_div(F.log_softmax(a, 1), F.softmax(c, 1),
                                        reduction="none").sum(1), "one value per example"),
    ("trades_kl", lambda a, c: kl_div_batchmean(a, c).item(), "must return a tensor"),
    ("trades_kl", lambda a, c: kl_div_batchmean(a, c).detach(), "carries no gradient"),
    ("trades_kl", lambda a, c: F.kl_div(F.softmax(a, 1), F.softmax(c, 1), reduction="batchmean"),
     "is not KL("),
    # inner_max
    ("inner_max", inner_max_no_eval, "ran the target in train mode"),
    ("inner_max", inner_max_no_restore, "left the target in eval mode"),
    ("inner_max", inner_max_always_train, "left the target in train mode, but it was in eval"),
    ("inner_max", inner_max_descends, "goes down the loss"),
    ("inner_max", lambda t, x, lab, e, s, n: inner_max_context(t, x, lab, 2 * e, s, n),
     "leaves the ε-ball"),
    ("inner_max", inner_max_random_start, "no random start"),
    # dynat_loss
    ("dynat_loss", _dynat_with(guide_eval_labels=True), "guide in eval mode"),
    ("dynat_loss", _dynat_with(target_labels="y"), "the target's loss uses y"),
    ("dynat_loss", _dynat_with(attack_labels="y"), "the attack on the target aims at y"),
    ("dynat_loss", _dynat_with(attack_labels="y", target_labels="y"),
     "attacked and trained on y"),
    ("dynat_loss", _dynat_with(soft=True), "sends gradient into the guide"),
    ("dynat_loss", _dynat_with(target_eval=True), "must run the target in train mode"),
    ("dynat_loss", _dynat_with(attack_train=True), "in train mode during the attack"),
    ("dynat_loss", _dynat_with(beta_used=False), "not multiplied by beta"),
    ("dynat_loss", dynat_random_start, "no random start"),
    ("dynat_loss", dynat_returns_tuple, "returned a tuple"),
    # detect_collapse
    ("detect_collapse", _collapse_with(average=statistics.fmean), "the mean where the rule takes "
     "the median"),
    ("detect_collapse", _collapse_with(half=lambda s: s), "all of the epoch's samples"),
    ("detect_collapse", _collapse_with(half=lambda s: s[:len(s) // 2] or s), "the first half"),
    ("detect_collapse", _collapse_with(half=lambda s: s[-1:]), "only the last sample"),
    ("detect_collapse", _collapse_with(half=lambda s: s[(len(s) + 1) // 2:]),
     "epoch 6 has a single sample"),
    ("detect_collapse", _collapse_with(half=lambda s: s[(len(s) + 1) // 2:] or [
        {"label_agreement": 0.0, "logit_spread": 0.0}]), "with one sample the second half is "
     "that sample"),
    ("detect_collapse", _collapse_with(rule=lambda a, s: a >= 0.5 and s > 0.5),
     "the spread comparison is reversed"),
    ("detect_collapse", _collapse_with(rule=lambda a, s: a < 0.5 and s < 0.5),
     "the agreement comparison is reversed"),
    ("detect_collapse", _collapse_with(rule=lambda a, s: a > 0.5 and s < 0.5),
     "a median agreement of exactly 0.5 counts"),
    ("detect_collapse", _collapse_with(rule=lambda a, s: a >= 0.5 and s <= 0.5),
     "a median spread of exactly 0.5 does not count"),
    ("detect_collapse", _collapse_with(rule=lambda a, s: s < 0.5), "ignores the label agreement"),
    ("detect_collapse", _collapse_with(rule=lambda a, s: a >= 0.5), "ignores the logit spread"),
    ("detect_collapse", _collapse_with(rule=lambda a, s: not (a >= 0.5 and s < 0.5)),
     "did NOT collapse"),
    ("detect_collapse", _collapse_with(verdicts=True), "one bool per epoch"),
    ("detect_collapse", lambda h: [diagnostics.is_collapsed(r["steps"]) for r in h],
     "one bool per epoch"),
    ("detect_collapse", _collapse_with(skip_empty=False), "empty steps list"),
    ("detect_collapse", _collapse_with(empty=True), "empty steps list has no samples"),
    ("detect_collapse", lambda h: [r["epoch"] for r in h if r["collapsed"]],
     "no \"collapsed\" flag"),
    ("detect_collapse", _collapse_with(epoch=lambda i, r: i), "positions in the list"),
    ("detect_collapse", _collapse_with(epoch=lambda i, r: i + 1), "not a count from 1"),
    ("detect_collapse", collapse_sorts_in_place, "changed the history"),
    ("detect_collapse", lambda h: set(detect_collapse(h)), "must return a list"),
    # cw_margin
    ("cw_margin", lambda z, y: z.max(1).values - z.gather(1, y[:, None]).squeeze(1),
     "includes the true class"),
    ("cw_margin", lambda z, y: -cw_margin(z, y), "sign is reversed"),
    ("cw_margin", _margin_masked_by_zero, "masking the true class with 0"),
    ("cw_margin", lambda z, y: cw_margin(F.softmax(z, 1), y), "margin of the probabilities"),
    ("cw_margin", lambda z, y: cw_margin(z.detach(), y), "carries no gradient"),
    ("cw_margin", lambda z, y: cw_margin(z, y).mean(), "must have shape (6,)"),
    # worst_case
    ("worst_case", lambda c: torch.stack(list(c.values())).any(0), "this is the OR"),
    ("worst_case", lambda c: min(c.values(), key=lambda v: v.float().mean()),
     "single strongest attack"),
    ("worst_case", lambda c: torch.stack(list(c.values())).all(0).float().mean(),
     "one boolean per example"),
    ("worst_case", lambda c: worst_case({k: v for k, v in c.items() if k != "clean"}),
     "left out"),
    ("worst_case", lambda c: torch.stack([v.float() for v in c.values()]).prod(0),
     "return booleans"),
    # straight_through
    ("straight_through", lambda x, levels: torch.round(x * levels) / levels,
     "the gradient is zero"),
    ("straight_through", lambda x, levels: (torch.round(x * levels) / levels).detach(),
     "no gradient at all"),
    ("straight_through", lambda x, levels: x + (torch.floor(x * levels) / levels - x).detach(),
     "forward differs"),
    ("straight_through", lambda x, levels: x * 1.0, "not quantized"),
    ("straight_through", lambda x, levels: (x + (torch.round(x * levels) - x).detach()) / levels,
     "not the identity"),
    # zero_grad_fraction
    ("zero_grad_fraction", _zero_grad_counting(lambda zero, n: zero.float().mean().item()),
     "zero PIXELS"),
    ("zero_grad_fraction", _zero_grad_counting(lambda zero, n: zero.any(1).float().mean().item()),
     "(any)"),
    ("zero_grad_fraction", _zero_grad_counting(lambda zero, n: zero.all(1).float().mean()),
     "Python float, got Tensor"),
    ("zero_grad_fraction", _zero_grad_counting(lambda zero, n: float(zero.all(1).sum())),
     "fraction of examples"),
    ("zero_grad_fraction", _zero_grad_counting(lambda zero, n: 1 - zero.all(1).float().mean()
                                               .item()), "NON-zero"),
    ("zero_grad_fraction", zero_grad_train_mode, "ran the model in train mode"),
    ("zero_grad_fraction", zero_grad_no_restore, "left the model in eval mode"),
    ("zero_grad_fraction", zero_grad_backward, "(.grad)"),
]


# --------------------------------------------------------------------------------------- tests
def _id(fn) -> str:
    return getattr(fn, "__name__", "fn")


@pytest.mark.parametrize("name", exercises.NAMES)
def test_reference_passes_with_one_check_line(name, capsys):
    check(name, REFERENCES[name])
    out = capsys.readouterr().out
    assert out.startswith(f"✓ {name}: ") and out.count("\n") == 1, out


@pytest.mark.parametrize("name, fn", [(n, f) for n, fs in CORRECT.items() for f in fs],
                         ids=lambda v: v if isinstance(v, str) else _id(v))
def test_correct_variant_passes(name, fn, capsys):
    check(name, fn)
    assert capsys.readouterr().out.startswith(f"✓ {name}: ")


@pytest.mark.parametrize("name, fn, fragment", MISTAKES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(MISTAKES)])
def test_mistake_is_rejected_with_a_message_that_names_it(name, fn, fragment, capsys):
    with pytest.raises(ExerciseError) as info:
        check(name, fn)
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert fragment in message, message
    assert "✓" not in capsys.readouterr().out


def test_every_exercise_has_two_variants_and_three_mistakes():
    assert len(exercises.NAMES) == 13 and exercises.NAMES == tuple(exercises.TASKS)
    for name in exercises.NAMES:
        assert len(CORRECT[name]) >= 2, name
        assert sum(n == name for n, _, _ in MISTAKES) >= 3, name


@pytest.mark.parametrize("name", exercises.NAMES)
def test_an_unwritten_exercise_says_so_without_a_library_traceback(name):
    def stub(*args):
        raise NotImplementedError("Exercise: write this function")

    with pytest.raises(ExerciseError) as info:
        check(name, stub)
    err = info.value
    assert "not written yet" in str(err) and exercises.TASKS[name] in str(err)
    assert err.__cause__ is None and err.__suppress_context__  # raise ... from None
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if Path(f.filename).parent.name == "exercises"]
    assert [f.name for f in frames] == ["check"]


def test_a_crash_in_the_students_function_is_reported_with_its_own_traceback():
    def broken(logits, y):
        return logits[:, 99]  # IndexError in the student's code

    with pytest.raises(ExerciseError, match="raised IndexError") as info:
        check("cw_margin", broken)
    assert isinstance(info.value.__cause__, IndexError)
    frames = traceback.extract_tb(info.value.__cause__.__traceback__)
    assert frames[-1].name == "broken"


def test_jupyter_shows_the_message_without_the_checkers_frames():
    with pytest.raises(ExerciseError) as info:
        check("fgsm", lambda model, x, y, eps: x + eps)     # no gradient at all
    lines = info.value._render_traceback_()
    assert lines[-1].endswith(str(info.value)) and "ExerciseError" in lines[-1]
    assert not any(str(Path(exercises.__file__).parent) in line for line in lines), lines


def test_jupyter_shows_the_students_frames_when_their_function_crashed():
    def broken(logits, y):
        return logits[:, 99]  # IndexError in the student's code

    with pytest.raises(ExerciseError) as info:
        check("cw_margin", broken)
    text = "\n".join(info.value._render_traceback_())
    assert "in broken" in text and "logits[:, 99]" in text and "IndexError" in text
    assert str(Path(exercises.__file__).parent) not in text
    assert text.splitlines()[-1].endswith(str(info.value))


def test_ipython_uses_the_short_rendering():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    with pytest.raises(ExerciseError) as info:
        check("label_agreement", lambda labels, y: 2.0)
    error = {}
    shell._showtraceback = lambda etype, evalue, stb: error.update(stb=stb)
    try:
        raise info.value
    except ExerciseError:
        shell.showtraceback()
    assert error["stb"] == info.value._render_traceback_()


def test_check_rejects_an_unknown_name_or_a_non_function():
    with pytest.raises(ValueError, match="fgsm"):
        check("fgms", fgsm)
    with pytest.raises(TypeError, match="your function"):
        check("fgsm", None)


# ---------------------------------------------------- the checker's inputs show every mistake
def test_dynat_case_separates_every_label_source():
    case = exercises.lesson03._DynatCase()
    assert (case.labels != case.y).any(), "y must differ from the dynamic labels"
    for labels_eval in case.labels_eval:
        assert (case.labels != labels_eval).any(), "eval-mode labels must differ"
    library = methods.dynat_loss(*case.nets(), case.x, case.y, eps=case.EPS,
                                 step_size=case.STEP, steps=case.STEPS, beta=2.0,
                                 random_start=None)[0]
    assert torch.allclose(library, case.loss(2.0), rtol=1e-10)


def test_pgd_inputs_reach_the_box_and_the_ball():
    x = exercises.support._images(5)
    reference = attacks.pgd(exercises.support._TinyNet(4).eval(), x, exercises.support._classes(5), eps=0.06,
                            step_size=0.025, steps=6, random_start=None)
    assert ((reference == 0) | (reference == 1)).any(), "the clamp to [0, 1] matters"
    assert torch.isclose((reference - x).abs(), torch.tensor(0.06, dtype=x.dtype)).any()


def test_margin_case_has_a_right_row_and_a_row_of_negative_logits():
    logits, y = exercises.lesson04._margin_case()
    assert (logits.argmax(1) == y).any() and (logits.argmax(1) != y).any()
    others = logits.detach().masked_fill(F.one_hot(y, 5).bool(), float("-inf"))
    assert ((others.max(1).values < 0) & (logits.argmax(1) == y)).any()


def test_the_masked_models_zero_gradient_fractions():
    net = exercises.support._TinyNet(19).float()
    x = exercises.support._images(20, n=8, dtype=torch.float32)
    x[:, 0, 0, 0] = torch.tensor([0.9, 0.1, 0.2, 0.7, 0.3, 0.6, 0.4, 0.2])
    y = exercises.support._classes(21, n=8)
    assert evaluate.zero_gradient_fraction(net, x, y) == 0.0
    assert evaluate.zero_gradient_fraction(evaluate.Quantized(net, 4), x, y) == 1.0
    masked = exercises.lesson06._PartlyMasked(copy.deepcopy(net))
    assert evaluate.zero_gradient_fraction(masked, x, y) == 3 / 8


def test_collapse_history_separates_every_mistake_whatever_the_median():
    history = exercises.lesson03._collapse_history()
    expected = exercises.lesson03._collapse_rule(history)
    assert expected == [r["epoch"] for r in history if diagnostics.is_collapsed(r["steps"])]
    assert all("collapsed" not in r for r in history), "the function must apply the rule itself"
    for median in (statistics.median_low, statistics.median_high, np.median,
                   lambda v: torch.tensor(v).median().item()):
        assert exercises.lesson03._collapse_rule(history, average=median) == expected
    answers = [tuple(a) for a, _ in exercises.lesson03._collapse_mistakes(history)]
    assert len(set(answers)) == len(answers) and tuple(expected) not in answers


@pytest.mark.parametrize("name", ["fgsm", "pgd", "inner_max", "project"])
def test_an_answer_in_the_wrong_dtype_is_told_its_dtype(name):
    from dynat_lite import attacks

    def as_float32(*args):
        if name == "project":
            return attacks.project(*args).float()
        model, x, lab, eps, *rest = args
        if name == "fgsm":
            return attacks.fgsm(model, x, lab, eps=eps).float()
        step, steps = rest
        was = model.training
        model.eval()
        out = attacks.pgd(model, x, lab, eps=eps, step_size=step, steps=steps,
                          random_start=None)
        model.train(was)
        return out.float()

    with pytest.raises(ExerciseError, match="has dtype torch.float32, but the inputs are "
                                            "torch.float64"):
        check(name, as_float32)

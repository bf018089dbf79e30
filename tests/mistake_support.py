"""Plausible wrong answers to every exercise, each with a fragment of the message its checker
must give (tests/test_exercise_mistakes.py) and a description (docs/common_mistakes.md, written
by tools/common_mistakes.py)."""
from __future__ import annotations

import math
import statistics
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from dynat_lite import attacks, diagnostics, methods
from exercise_support import (cw_margin, detect_collapse, dynamic_labels, dynat_loss, dynat_step,
                              fgsm, fgsm_step, inner_max, inner_max_context, kl_div_batchmean,
                              pgd, pgd_steps, project, step_cost, worst_case)


# ------------------------------------------------------------------------------------ mistakes
def _fgsm_with(step):
    """An FGSM whose step is ``step(x, grad, eps)`` (for the mistakes)."""
    def attack(model, x, y, eps):
        with attacks.eval_mode(model):
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
        with attacks.eval_mode(model):
            return _attack(model, x, y, eps, step_size, steps)

    def _attack(model, x, y, eps, step_size, steps):
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
    return pgd_steps(target, x, labels, eps, step_size, steps)


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
    return attacks.pgd(target, x, labels, eps=eps, step_size=step_size, steps=steps,
                       generator=torch.Generator().manual_seed(0))


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
            x_adv = pgd_steps(target, x, pick[attack_labels], eps, step_size, steps)
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




# ------------------------------------------------------------- the mistakes added with them
def fgsm_train_mode(model, x, y, eps):
    return fgsm_step(model, x, y, eps)


def fgsm_eval_no_restore(model, x, y, eps):
    model.eval()
    return fgsm_step(model, x, y, eps)


def fgsm_own_labels(model, x, y, eps):
    with attacks.eval_mode(model), torch.no_grad():
        predicted = model(x).argmax(1)
    return fgsm(model, x, predicted, eps)


def pgd_train_mode(model, x, y, eps, step_size, steps):
    return pgd_steps(model, x, y, eps, step_size, steps)


def pgd_eval_no_restore(model, x, y, eps, step_size, steps):
    model.eval()
    return pgd_steps(model, x, y, eps, step_size, steps)


def pgd_ball_without_zero(model, x, y, eps, step_size, steps):
    """A budget of 0 read as 'no budget given': the ball is skipped."""
    proj = project if eps > 0 else (lambda xa, x_, e: xa.clamp(0, 1))
    return _pgd_with(_up, proj=proj)(model, x, y, eps, step_size, steps)


def kl_clean_detached(logits_adv, logits_clean):
    p = F.softmax(logits_clean.detach(), 1)
    return F.kl_div(F.log_softmax(logits_adv, 1), p, reduction="none").sum(1).mean()


def kl_log_of_softmax(logits_adv, logits_clean):
    p, q = F.softmax(logits_clean, 1), F.softmax(logits_adv, 1)
    return (p * (p.log() - q.log())).sum(1).mean()


def kl_log_with_epsilon(logits_adv, logits_clean):
    p, q = F.softmax(logits_clean, 1), F.softmax(logits_adv, 1)
    return (p * (torch.log(p + 1e-12) - torch.log(q + 1e-12))).sum(1).mean()


def dynat_target_detached(guide, target, x, y, eps, step_size, steps, beta):
    guide_logits = guide(x)
    labels = dynamic_labels(guide_logits)
    x_adv = inner_max(target, x, labels, eps, step_size, steps)
    target_term = F.cross_entropy(target(x_adv).detach(), labels)
    return F.cross_entropy(guide_logits, y) + beta * target_term


def dynat_guide_twice(guide, target, x, y, eps, step_size, steps, beta):
    labels = dynamic_labels(guide(x))
    x_adv = inner_max(target, x, labels, eps, step_size, steps)
    return F.cross_entropy(guide(x), y) + beta * F.cross_entropy(target(x_adv), labels)


def margin_minus_constant(logits, y):
    one_hot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return (logits - 1e4 * one_hot).max(1).values - (logits * one_hot).sum(1)


def margin_fill_constant(logits, y):
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -1e4)
    return others.max(1).values - logits.gather(1, y[:, None]).squeeze(1)


def margin_others_detached(logits, y):
    others = logits.detach().masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.max(1).values - logits.gather(1, y[:, None]).squeeze(1)


def _dynat_step_with(train_mode=True, zero=True, order="zero-backward-step", ret="detach",
                     loss_fn=None):
    """A dynat_step with one thing changed (for the mistakes)."""
    def step(guide, target, optimizer, x, y, eps, step_size, steps, beta):
        if train_mode:
            guide.train()
            target.train()
        loss = (loss_fn or dynat_loss)(guide, target, x, y, eps, step_size, steps, beta)
        for action in order.split("-"):
            if action == "zero" and zero:
                optimizer.zero_grad()
            elif action == "backward":
                loss.backward()
            elif action == "step":
                optimizer.step()
        return {"detach": loss.detach(), "graph": loss, "float": loss.item()}[ret]
    return step


def dynat_step_new_optimizer(guide, target, optimizer, x, y, eps, step_size, steps, beta):
    own = torch.optim.SGD([*guide.parameters(), *target.parameters()], lr=0.1)
    return dynat_step(guide, target, own, x, y, eps, step_size, steps, beta)


def dynat_step_loss_twice(guide, target, optimizer, x, y, eps, step_size, steps, beta):
    out = dynat_step(guide, target, optimizer, x, y, eps, step_size, steps, beta)
    dynat_loss(guide, target, x, y, eps, step_size, steps, beta)  # "to report it"
    return out


def dynat_step_target_only(guide, target, optimizer, x, y, eps, step_size, steps, beta):
    """'The guide is only a teacher': its gradients dropped before the step."""
    guide.train()
    target.train()
    loss = dynat_loss(guide, target, x, y, eps, step_size, steps, beta)
    optimizer.zero_grad()
    loss.backward()
    for p in guide.parameters():
        p.grad = None
    optimizer.step()
    return loss.detach()


def _step_cost_with(target_extra=1, guide_forward=1, guide_backward=1, attack_backward=True,
                    standard_attacks=False, pgd_guide=False):
    """A step_cost with one thing changed (for the mistakes)."""
    def cost(method, steps):
        attack = steps if (method != "standard" or standard_attacks) else 0
        guide = method == "dynat" or (pgd_guide and method == "pgd_at")
        g_fwd = (steps + 1 if guide_forward == "each" else guide_forward) if guide else 0
        return {"target_forward": attack + target_extra,
                "target_backward": (attack if attack_backward else 0) + target_extra,
                "guide_forward": g_fwd, "guide_backward": guide_backward if guide else 0}
    return cost


def _wilson_with(kind):
    """A wilson_interval with one mistake (for the mistakes)."""
    def interval(successes, n, z=1.96):
        if kind == "n0":
            pass
        elif n < 1:
            raise ValueError("no trials")
        p = successes / n
        if kind in ("wald", "wald_clamped"):
            half = z * math.sqrt(p * (1 - p) / n)
            lo, hi = p - half, p + half
            return (max(0.0, lo), min(1.0, hi)) if kind == "wald_clamped" else (lo, hi)
        zz = {"z_not_squared": z}.get(kind, z * z)
        z196 = 1.96 * 1.96 if kind == "fixed_z" else zz
        centre_term = z196 / n if kind == "centre_z2_over_n" else z196 / (2 * n)
        spread_term = z196 / (4 * n) if kind == "spread_4n" else z196 / (4 * n * n)
        denominator = 1.0 if kind == "no_denominator" else 1 + z196 / n
        z_ = 1.96 if kind == "fixed_z" else z
        centre = (p + centre_term) / denominator
        half = z_ * math.sqrt(p * (1 - p) / n + spread_term) / denominator
        if kind == "no_clamp":
            return centre - half, centre + half
        if kind == "percent":
            return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)
        if kind == "tensor":
            return torch.tensor(max(0.0, centre - half)), torch.tensor(min(1.0, centre + half))
        if kind == "centre_half":
            return centre, half
        return max(0.0, centre - half), min(1.0, centre + half)
    return interval


# ---------------------------------------------------------------------------- the catalogue
class Mistake(NamedTuple):
    """A plausible wrong answer: the exercise, what the mistake is (for docs/common_mistakes.md),
    the function, and a fragment its checker's message must contain."""
    name: str
    description: str
    fn: Callable
    fragment: str


M = Mistake
# preregistration and claim_verdict (lesson 08)
_STUDY_METRIC = "pgd20"


def _plan_with(**changes):
    """A preregistration whose plan has ``changes`` (a value None: the field left out)."""
    def preregistration():
        plan = {"claim": "With a guide pre-trained alone, DYNAT is more robust than PGD-AT",
                "metric": "pgd20", "comparison": ["dynat_guide_init", "pgd_at_gauss"],
                "prediction": "inconclusive",
                "reason": "The intervals of a small study are wide, so I expect noise."}
        plan.update(changes)
        return {k: v for k, v in plan.items() if v is not None}
    return preregistration


def preregistration_reads_a_global():
    return {"claim": "With a guide pre-trained alone, DYNAT is more robust than PGD-AT",
            "metric": _STUDY_METRIC, "comparison": ["dynat_guide_init", "pgd_at_gauss"],
            "prediction": "inconclusive",
            "reason": "The intervals of a small study are wide, so I expect noise."}


def preregistration_from_rows(rows):
    return _plan_with()()


def _verdict_with(mistake):
    """A claim_verdict with one thing changed (for the mistakes)."""
    def claim_verdict(k_a, n_a, k_b, n_b):
        p_a, p_b = k_a / n_a, k_b / n_b
        va, vb = p_a * (1 - p_a) / n_a, p_b * (1 - p_b) / n_b
        d, m = p_a - p_b, 1.96 * math.sqrt(va + vb)
        if mistake == "z90":
            m = 1.645 * math.sqrt(va + vb)
        elif mistake == "a_only":
            m = 1.96 * math.sqrt(va)
        elif mistake == "pooled":
            q = (k_a + k_b) / (n_a + n_b)
            m = 1.96 * math.sqrt(q * (1 - q) * (1 / n_a + 1 / n_b))
        elif mistake == "added":
            m = 1.96 * (math.sqrt(va) + math.sqrt(vb))
        elif mistake == "reversed":
            d = -d
        low, high = d - m, d + m
        verdict = "supported" if low > 0 else "not supported" if high < 0 else "inconclusive"
        if mistake == "sign":
            verdict = "supported" if d > 0 else "not supported"
        if mistake == "percent":
            return 100 * low, 100 * high, verdict
        if mistake == "pair":
            return low, high
        if mistake == "capital":
            verdict = verdict.capitalize()
        return low, high, verdict
    return claim_verdict


MISTAKES = [
    # fgsm
    M("fgsm", "no clamp to [0, 1] after the step",
      _fgsm_with(lambda x, g, eps: x + eps * g.sign()), "leaves the image range [0, 1]"),
    M("fgsm", "steps down the loss (minus sign)",
      _fgsm_with(lambda x, g, eps: (x - eps * g.sign()).clamp(0, 1)), "goes down the loss"),
    M("fgsm", "steps along the gradient, not its sign",
      _fgsm_with(lambda x, g, eps: (x + eps * g).clamp(0, 1)), "different amounts"),
    M("fgsm", "loss.backward() instead of torch.autograd.grad", fgsm_backward,
      "changed the model's parameter gradients (.grad)"),
    M("fgsm", "puts the model in train mode at the end", fgsm_train_at_end,
      "left the model in train mode"),
    M("fgsm", "changes x in place", fgsm_in_place, "changed its argument x in place"),
    M("fgsm", "attacks the model's own prediction instead of y", fgsm_own_labels,
      "differs from x + step"),
    M("fgsm", "returns x_adv still attached to the graph",
      lambda m, x, y, eps: fgsm(m, x, y, eps).requires_grad_(True), "still requires grad"),
    M("fgsm", "never switches the model to eval mode (attacks in train mode)", fgsm_train_mode,
      "ran the model in train mode"),
    M("fgsm", "switches to eval mode but never restores the mode", fgsm_eval_no_restore,
      "left the model in eval mode"),
    # project
    M("project", "no clamp to [0, 1]", lambda xa, x, eps: torch.min(torch.max(xa, x - eps),
                                                                     x + eps),
      "leaves the image range [0, 1]"),
    M("project", "clamps to [0, 1] only", lambda xa, x, eps: xa.clamp(0, 1), "leaves the ε-ball"),
    M("project", "moves every pixel to the edge of the ball",
      lambda xa, x, eps: (x + eps * (xa - x).sign()).clamp(0, 1), "already within ε of x"),
    M("project", "returns the clipped perturbation, not the point",
      lambda xa, x, eps: torch.clamp(xa - x, -eps, eps), "leaves the ε-ball"),
    M("project", "clips x_adv itself to [−ε, ε]", lambda xa, x, eps: xa.clamp(-eps, eps).clamp(0, 1),
      "leaves the ε-ball"),
    # pgd
    M("pgd", "projects onto the ε-ball only at the end", _pgd_with(_up, project_each=False),
      "only at the end"),
    M("pgd", "never projects onto the ε-ball",
      _pgd_with(lambda xa, g, s, e: (xa + s * g.sign()).clamp(0, 1), proj=lambda xa, x, eps: xa),
      "project after every step"),
    M("pgd", "projects onto the ball but not onto [0, 1]",
      _pgd_with(_up, proj=lambda xa, x, eps: torch.min(torch.max(xa, x - eps), x + eps)),
      "leaves the image range [0, 1]"),
    M("pgd", "steps down the loss", _pgd_with(lambda xa, g, s, e: xa - s * g.sign()),
      "goes down the loss"),
    M("pgd", "a random start", _pgd_with(_up, start=lambda x, eps: (x + eps * (2 * torch.rand(
        x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype) - 1)).clamp(0, 1)),
      "no random start"),
    M("pgd", "the gradient of the first step reused in every step", _pgd_with(_up, grad_once=True),
      "recompute the gradient"),
    M("pgd", "steps of size ε instead of step_size", _pgd_with(lambda xa, g, s, e: xa + e * g.sign()),
      "not by the step size"),
    M("pgd", "loss.backward() instead of torch.autograd.grad", pgd_backward, "(.grad)"),
    M("pgd", "never switches the model to eval mode (attacks in train mode)", pgd_train_mode,
      "ran the model in train mode"),
    M("pgd", "switches to eval mode but never restores the mode", pgd_eval_no_restore,
      "left the model in eval mode"),
    M("pgd", "skips the projection when ε = 0", pgd_ball_without_zero, "with ε = 0"),
    # dynamic_labels
    M("dynamic_labels", "returns the softmax probabilities", lambda z: F.softmax(z, 1),
      "carry gradient"),
    M("dynamic_labels", "a soft argmax (expected class index)",
      lambda z: (F.softmax(z, 1) * torch.arange(z.shape[1])).sum(1), "carry gradient"),
    M("dynamic_labels", "argmax over the batch (dim=0)", lambda z: z.detach().argmax(0),
      "not over the batch (dim=0)"),
    M("dynamic_labels", "argmin instead of argmax", lambda z: z.detach().argmin(1),
      "not the class with the largest logit"),
    M("dynamic_labels", "labels as floats", lambda z: z.detach().argmax(1).float(), "integers"),
    M("dynamic_labels", "detached probabilities instead of labels",
      lambda z: F.softmax(z, 1).detach(), "one label per row"),
    # label_agreement
    M("label_agreement", "returns a tensor", lambda lab, y: (lab == y).float().mean(),
      "Python float, got Tensor"),
    M("label_agreement", "the count, not the fraction", lambda lab, y: float((lab == y).sum()),
      "the number of agreeing labels"),
    M("label_agreement", "a percentage", lambda lab, y: 100 * (lab == y).float().mean().item(),
      "a percentage"),
    M("label_agreement", "the fraction that differs", lambda lab, y: (lab != y).float().mean()
      .item(), "DIFFER from y"),
    M("label_agreement", "integer division", lambda lab, y: float(int((lab == y).sum()) // len(y)),
      "of which 14 equal y"),
    # trades_kl
    M("trades_kl", "KL(p_adv ‖ p_clean), the wrong direction", _reversed_kl, "wrong direction"),
    M("trades_kl", "summed over the batch",
      lambda a, c: F.kl_div(F.log_softmax(a, 1), F.softmax(c, 1), reduction="sum"),
      "summed over the batch"),
    M("trades_kl", "averaged over the classes too",
      lambda a, c: F.kl_div(F.log_softmax(a, 1), F.softmax(c, 1), reduction="none").mean(),
      "averaged over the classes"),
    M("trades_kl", "one value per example",
      lambda a, c: F.kl_div(F.log_softmax(a, 1), F.softmax(c, 1), reduction="none").sum(1),
      "one value per example"),
    M("trades_kl", "returns a Python float", lambda a, c: kl_div_batchmean(a, c).item(),
      "must return a tensor"),
    M("trades_kl", "returns the KL detached", lambda a, c: kl_div_batchmean(a, c).detach(),
      "carries no gradient"),
    M("trades_kl", "probabilities where F.kl_div expects log-probabilities",
      lambda a, c: F.kl_div(F.softmax(a, 1), F.softmax(c, 1), reduction="batchmean"),
      "is not KL("),
    M("trades_kl", "detaches the clean logits", kl_clean_detached, "no gradient reaches "
      "logits_clean"),
    M("trades_kl", "log(softmax(...)) instead of log_softmax", kl_log_of_softmax,
      "with logits of size 1e5 the KL comes out nan"),
    M("trades_kl", "log(softmax(...) + 1e-12)", kl_log_with_epsilon,
      "with logits of size 1e5 the KL is wrong"),
    # inner_max
    M("inner_max", "never switches the target to eval mode", inner_max_no_eval,
      "ran the target in train mode"),
    M("inner_max", "switches to eval mode but never restores the mode", inner_max_no_restore,
      "left the target in eval mode"),
    M("inner_max", "restores train mode whatever the mode was", inner_max_always_train,
      "left the target in train mode, but it was in eval"),
    M("inner_max", "steps down the loss", inner_max_descends, "goes down the loss"),
    M("inner_max", "a ball of twice the budget",
      lambda t, x, lab, e, s, n: inner_max_context(t, x, lab, 2 * e, s, n), "leaves the ε-ball"),
    M("inner_max", "the library's attack with its default random start", inner_max_random_start,
      "no random start"),
    # dynat_loss
    M("dynat_loss", "the labels from the guide in eval mode", _dynat_with(guide_eval_labels=True),
      "guide in eval mode"),
    M("dynat_loss", "the target trained on y", _dynat_with(target_labels="y"),
      "the target's loss uses y"),
    M("dynat_loss", "the attack aims at y", _dynat_with(attack_labels="y"),
      "the attack on the target aims at y"),
    M("dynat_loss", "attacked and trained on y (PGD-AT)",
      _dynat_with(attack_labels="y", target_labels="y"), "attacked and trained on y"),
    M("dynat_loss", "the guide's probabilities as soft labels", _dynat_with(soft=True),
      "sends gradient into the guide"),
    M("dynat_loss", "the target's loss in eval mode", _dynat_with(target_eval=True),
      "must run the target in train mode"),
    M("dynat_loss", "the attack on the target in train mode", _dynat_with(attack_train=True),
      "in train mode during the attack"),
    M("dynat_loss", "beta left out", _dynat_with(beta_used=False), "not multiplied by beta"),
    M("dynat_loss", "the library's random start", dynat_random_start, "no random start"),
    M("dynat_loss", "returns the library's (loss, out) tuple", dynat_returns_tuple,
      "returned a tuple"),
    M("dynat_loss", "the target's output detached", dynat_target_detached,
      "no gradient reaches the target"),
    M("dynat_loss", "the guide run twice (once for the labels, once for its CE)",
      dynat_guide_twice, "the guide ran 2 times in train mode"),
    # dynat_step
    M("dynat_step", "no optimizer.zero_grad(): the previous step's gradients are added",
      _dynat_step_with(zero=False), "adds the gradients that .grad held"),
    M("dynat_step", "optimizer.step() before loss.backward()",
      _dynat_step_with(order="zero-step-backward"), "no parameter changed"),
    M("dynat_step", "zero_grad after backward", _dynat_step_with(order="backward-zero-step"),
      "no parameter changed"),
    M("dynat_step", "no optimizer.step()", _dynat_step_with(order="zero-backward"),
      "no parameter changed"),
    M("dynat_step", "two optimizer steps", _dynat_step_with(order="zero-backward-step-step"),
      "moved twice"),
    M("dynat_step", "optimizer.step() first, on the previous step's gradients",
      _dynat_step_with(order="step-zero-backward"), "before loss.backward() had used them"),
    M("dynat_step", "the networks not put in train mode", _dynat_step_with(train_mode=False),
      "left the guide in eval mode"),
    M("dynat_step", "returns the loss with its graph", _dynat_step_with(ret="graph"),
      "still carries the step's graph"),
    M("dynat_step", "returns loss.item()", _dynat_step_with(ret="float"),
      "must return the step's loss, a scalar tensor"),
    M("dynat_step", "a new optimizer made inside the step", dynat_step_new_optimizer,
      "differs from the library's step"),
    M("dynat_step", "the loss computed a second time to report it", dynat_step_loss_twice,
      "ran 2 times in train mode"),
    M("dynat_step", "the guide's gradients dropped ('the guide is only a teacher')",
      dynat_step_target_only, "the guide's parameters did not change"),
    M("dynat_step", "a loss whose target term reaches the guide (soft labels)",
      _dynat_step_with(loss_fn=_dynat_with(soft=True)), "changes when the target's term is "
      "removed"),
    # detect_collapse
    M("detect_collapse", "the mean instead of the median", _collapse_with(average=statistics.fmean),
      "the mean where the rule takes the median"),
    M("detect_collapse", "all samples instead of the second half", _collapse_with(half=lambda s: s),
      "all of the epoch's samples"),
    M("detect_collapse", "the first half", _collapse_with(half=lambda s: s[:len(s) // 2] or s),
      "the first half"),
    M("detect_collapse", "the last sample only", _collapse_with(half=lambda s: s[-1:]),
      "only the last sample"),
    M("detect_collapse", "the second half rounded the other way (empty for one sample)",
      _collapse_with(half=lambda s: s[(len(s) + 1) // 2:]), "epoch 6 has a single sample"),
    M("detect_collapse", "the second half rounded the other way, a dummy for one sample",
      _collapse_with(half=lambda s: s[(len(s) + 1) // 2:] or [
          {"label_agreement": 0.0, "logit_spread": 0.0}]),
      "with one sample the second half is that sample"),
    M("detect_collapse", "spread comparison reversed",
      _collapse_with(rule=lambda a, s: a >= 0.5 and s > 0.5), "the spread comparison is reversed"),
    M("detect_collapse", "agreement comparison reversed",
      _collapse_with(rule=lambda a, s: a < 0.5 and s < 0.5),
      "the agreement comparison is reversed"),
    M("detect_collapse", "agreement > 0.5 instead of >=",
      _collapse_with(rule=lambda a, s: a > 0.5 and s < 0.5),
      "a median agreement of exactly 0.5 counts"),
    M("detect_collapse", "spread <= 0.5 instead of <",
      _collapse_with(rule=lambda a, s: a >= 0.5 and s <= 0.5),
      "a median spread of exactly 0.5 does not count"),
    M("detect_collapse", "the label agreement ignored", _collapse_with(rule=lambda a, s: s < 0.5),
      "ignores the label agreement"),
    M("detect_collapse", "the logit spread ignored", _collapse_with(rule=lambda a, s: a >= 0.5),
      "ignores the logit spread"),
    M("detect_collapse", "the rule negated",
      _collapse_with(rule=lambda a, s: not (a >= 0.5 and s < 0.5)), "did NOT collapse"),
    M("detect_collapse", "one verdict per epoch", _collapse_with(verdicts=True),
      "one bool per epoch"),
    M("detect_collapse", "the library's verdict per epoch",
      lambda h: [diagnostics.is_collapsed(r["steps"]) for r in h], "one bool per epoch"),
    M("detect_collapse", "an empty epoch not skipped", _collapse_with(skip_empty=False),
      "empty steps list"),
    M("detect_collapse", "an empty epoch counted as collapsed", _collapse_with(empty=True),
      "empty steps list has no samples"),
    M("detect_collapse", "reads the records' own flag", lambda h: [r["epoch"] for r in h
                                                                    if r["collapsed"]],
      "no \"collapsed\" flag"),
    M("detect_collapse", "positions instead of epoch numbers",
      _collapse_with(epoch=lambda i, r: i), "positions in the list"),
    M("detect_collapse", "a count from 1 instead of the epoch numbers",
      _collapse_with(epoch=lambda i, r: i + 1), "not a count from 1"),
    M("detect_collapse", "sorts the history's samples in place", collapse_sorts_in_place,
      "changed the history"),
    M("detect_collapse", "returns a set", lambda h: set(detect_collapse(h)),
      "must return a list"),
    # cw_margin
    M("cw_margin", "the true class inside the max",
      lambda z, y: z.max(1).values - z.gather(1, y[:, None]).squeeze(1), "includes the true class"),
    M("cw_margin", "the sign reversed", lambda z, y: -cw_margin(z, y), "sign is reversed"),
    M("cw_margin", "the true class masked with 0", _margin_masked_by_zero,
      "masking the true class with 0"),
    M("cw_margin", "the margin of the probabilities", lambda z, y: cw_margin(F.softmax(z, 1), y),
      "margin of the probabilities"),
    M("cw_margin", "returned detached", lambda z, y: cw_margin(z.detach(), y),
      "carries no gradient"),
    M("cw_margin", "averaged over the batch", lambda z, y: cw_margin(z, y).mean(),
      "must have shape (6,)"),
    M("cw_margin", "the true class masked by subtracting 1e4", margin_minus_constant,
      "with logits of size 1e5"),
    M("cw_margin", "the true class masked by filling with −1e4", margin_fill_constant,
      "with logits of size 1e5"),
    M("cw_margin", "the other classes' max taken from detached logits", margin_others_detached,
      "their gradient with respect to the logits is not"),
    # worst_case
    M("worst_case", "OR instead of AND", lambda c: torch.stack(list(c.values())).any(0),
      "this is the OR"),
    M("worst_case", "the strongest single attack",
      lambda c: min(c.values(), key=lambda v: v.float().mean()), "single strongest attack"),
    M("worst_case", "the accuracy instead of per-example results",
      lambda c: torch.stack(list(c.values())).all(0).float().mean(), "one boolean per example"),
    M("worst_case", "the clean entry left out",
      lambda c: worst_case({k: v for k, v in c.items() if k != "clean"}), "left out"),
    M("worst_case", "a float product instead of booleans",
      lambda c: torch.stack([v.float() for v in c.values()]).prod(0), "return booleans"),
    # step_cost
    M("step_cost", "the target's training pass forgotten", _step_cost_with(target_extra=0),
      "counts only the attack's forward passes"),
    M("step_cost", "the attack's input gradients not counted as backward passes",
      _step_cost_with(attack_backward=False), "each PGD step takes the gradient"),
    M("step_cost", "the guide run at every PGD step, as in the authors' loop",
      _step_cost_with(guide_forward="each"), "runs the guide at every PGD step"),
    M("step_cost", "the guide's backward forgotten", _step_cost_with(guide_backward=0),
      "the guide is trained in the same step"),
    M("step_cost", "standard training attacks too", _step_cost_with(standard_attacks=True),
      "standard training does not attack"),
    M("step_cost", "a guide counted for PGD-AT", _step_cost_with(pgd_guide=True),
      "pgd_at has no guide"),
    M("step_cost", "a tuple instead of a dict", lambda m, s: tuple(step_cost(m, s).values()),
      "must return a dict"),
    M("step_cost", "counts as floats", lambda m, s: {k: float(v) for k, v in
                                                     step_cost(m, s).items()},
      "whole numbers of passes"),
    # straight_through
    M("straight_through", "plain rounding", lambda x, levels: torch.round(x * levels) / levels,
      "the gradient is zero"),
    M("straight_through", "rounding detached",
      lambda x, levels: (torch.round(x * levels) / levels).detach(), "no gradient at all"),
    M("straight_through", "floor instead of round",
      lambda x, levels: x + (torch.floor(x * levels) / levels - x).detach(), "forward differs"),
    M("straight_through", "no quantization", lambda x, levels: x * 1.0, "not quantized"),
    M("straight_through", "the identity applied at the wrong scale",
      lambda x, levels: (x + (torch.round(x * levels) - x).detach()) / levels,
      "not the identity"),
    # zero_grad_fraction
    M("zero_grad_fraction", "counts zero pixels",
      _zero_grad_counting(lambda zero, n: zero.float().mean().item()), "zero PIXELS"),
    M("zero_grad_fraction", "any pixel instead of every pixel",
      _zero_grad_counting(lambda zero, n: zero.any(1).float().mean().item()), "(any)"),
    M("zero_grad_fraction", "returns a tensor",
      _zero_grad_counting(lambda zero, n: zero.all(1).float().mean()), "Python float, got Tensor"),
    M("zero_grad_fraction", "the count, not the fraction",
      _zero_grad_counting(lambda zero, n: float(zero.all(1).sum())), "fraction of examples"),
    M("zero_grad_fraction", "the fraction with a non-zero gradient",
      _zero_grad_counting(lambda zero, n: 1 - zero.all(1).float().mean().item()), "NON-zero"),
    M("zero_grad_fraction", "the model left in train mode", zero_grad_train_mode,
      "ran the model in train mode"),
    M("zero_grad_fraction", "eval mode never restored", zero_grad_no_restore,
      "left the model in eval mode"),
    M("zero_grad_fraction", "loss.backward() instead of torch.autograd.grad", zero_grad_backward,
      "(.grad)"),
    # wilson_interval
    M("wilson_interval", "the normal (Wald) interval", _wilson_with("wald"),
      "this is the normal (Wald) interval"),
    M("wilson_interval", "the normal (Wald) interval, clamped", _wilson_with("wald_clamped"),
      "this is the normal (Wald) interval"),
    M("wilson_interval", "no clamp to [0, 1]", _wilson_with("no_clamp"), "leaves [0, 1]"),
    M("wilson_interval", "z where z² belongs", _wilson_with("z_not_squared"),
      "z appears where z² belongs"),
    M("wilson_interval", "z²/n added to the centre", _wilson_with("centre_z2_over_n"),
      "the centre adds z²/n"),
    M("wilson_interval", "z²/(4n) under the root", _wilson_with("spread_4n"),
      "not z²/(4n)"),
    M("wilson_interval", "no division by 1 + z²/n", _wilson_with("no_denominator"),
      "not divided by 1 + z²/n"),
    M("wilson_interval", "z = 1.96 whatever z is given", _wilson_with("fixed_z"),
      "use the argument z"),
    M("wilson_interval", "n = 0 not handled (division by zero)", _wilson_with("n0"),
      "it raised ZeroDivisionError"),
    M("wilson_interval", "percentages", _wilson_with("percent"), "percentages"),
    M("wilson_interval", "tensors instead of floats", _wilson_with("tensor"),
      "must be Python floats"),
    M("wilson_interval", "(centre, half-width) instead of (low, high)",
      _wilson_with("centre_half"), "is above the high bound"),
    # preregistration
    M("preregistration", "a field left out", _plan_with(reason=None), "'reason' is missing"),
    M("preregistration", "the plan's metric read from the notebook",
      preregistration_reads_a_global, "reads _STUDY_METRIC from the notebook"),
    M("preregistration", "the plan made from the results", preregistration_from_rows,
      "must take no arguments"),
    M("preregistration", "a prediction that is not a verdict", _plan_with(prediction="higher"),
      "'prediction' must be"),
    M("preregistration", "one group compared with itself",
      _plan_with(comparison=["dynat", "dynat"]), "two different group names"),
    M("preregistration", "a metric the study does not measure", _plan_with(metric="pgd10"),
      "'metric' must be one of"),
    M("preregistration", "a group the study cannot run",
      _plan_with(comparison=["dynat_resnet", "pgd_at"]), "the groups this study can run"),
    M("preregistration", "a claim of two words", _plan_with(claim="DYNAT wins"),
      "'claim' must be a sentence"),
    # claim_verdict
    M("claim_verdict", "the 90 % interval (z = 1.645)", _verdict_with("z90"), "90 % interval"),
    M("claim_verdict", "the verdict from the sign of the difference", _verdict_with("sign"),
      "follows the sign of the difference alone"),
    M("claim_verdict", "a's variance only", _verdict_with("a_only"), "a's variance only"),
    M("claim_verdict", "the pooled accuracy", _verdict_with("pooled"), "pooled accuracy"),
    M("claim_verdict", "the standard errors added", _verdict_with("added"), "are added"),
    M("claim_verdict", "p_b - p_a", _verdict_with("reversed"), "interval of p_b − p_a"),
    M("claim_verdict", "points instead of proportions", _verdict_with("percent"), "in points"),
    M("claim_verdict", "no verdict returned", _verdict_with("pair"), "three values"),
    M("claim_verdict", "the verdict capitalized", _verdict_with("capital"),
      "the verdict must be one of"),
]

"""One loss function per training method, and a registry of them.

Every loss takes a batch of clean images ``x`` in [0, 1] with ground truth ``y`` and returns
``(loss, out)``: the scalar to minimize and a dict of what was computed on the way (at least
``x_adv``; ``labels``, the labels the target was trained on; and the detached loss terms).
Methods with a guide network take ``(guide, target, x, y)``, the others ``(target, x, y)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import pgd
from .labels import dynamic_labels

LABEL_SOURCES = ("dynamic", "static")
TARGET_LOSSES = ("ce", "kl", "mse")


def _check_choice(what: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {what} {value!r}. Valid: {', '.join(map(str, valid))}.")


def target_term(target_logits: torch.Tensor, labels: torch.Tensor, guide_logits: torch.Tensor,
                kind: str = "ce") -> torch.Tensor:
    """The target's loss on adversarial examples, for the ablation of DESIGN.md.

    "ce": CE(f_t(x'), labels), DYNAT's choice. "kl": KL(softmax f_g(x) || softmax f_t(x')), the
    guide's whole distribution instead of its argmax. "mse": mean squared error between the
    logits f_t(x') and f_g(x) (as LBGAT). The guide's logits are detached in all three, so the
    target term never trains the guide.
    """
    _check_choice("target loss", kind, TARGET_LOSSES)
    if kind == "ce":
        return F.cross_entropy(target_logits, labels)
    guide_logits = guide_logits.detach()
    if kind == "kl":
        return F.kl_div(F.log_softmax(target_logits, 1), F.softmax(guide_logits, 1),
                        reduction="batchmean")
    return F.mse_loss(target_logits, guide_logits)


def dynat_loss(guide: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
               beta: float = 1.0, random_start: str | None = "gaussian",
               generator: torch.Generator | None = None, label_source: str = "dynamic",
               target_loss: str = "ce"):
    """Dynamic Label Adversarial Training, one batch.

    1. The guide sees the clean batch: guide_logits = f_g(x), trained with CE(guide_logits, y).
    2. Dynamic labels l = argmax guide_logits, without gradient (``label_source="static"``
       uses y instead: the ablation of ground-truth labels).
    3. Inner maximization: x' = PGD on the target (in eval mode) maximizing CE(f_t(x'), l).
    4. Outer loss: CE(f_g(x), y) + beta * CE(f_t(x'), l), the target back in train mode.
    """
    _check_choice("label source", label_source, LABEL_SOURCES)
    _check_choice("target loss", target_loss, TARGET_LOSSES)
    guide_logits = guide(x)
    labels = dynamic_labels(guide_logits) if label_source == "dynamic" else y
    x_adv = pgd(target, x, labels, eps=eps, step_size=step_size, steps=steps, loss="ce",
                random_start=random_start, generator=generator)
    target_logits = target(x_adv)
    guide_loss = F.cross_entropy(guide_logits, y)
    adv_loss = target_term(target_logits, labels, guide_logits, target_loss)
    loss = guide_loss + beta * adv_loss
    return loss, {"x_adv": x_adv, "labels": labels, "guide_logits": guide_logits.detach(),
                  "target_logits": target_logits.detach(), "guide_loss": guide_loss.detach(),
                  "target_loss": adv_loss.detach()}


def standard_loss(target: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Plain training on clean images: CE(f(x), y). No attack."""
    logits = target(x)
    loss = F.cross_entropy(logits, y)
    return loss, {"x_adv": x, "labels": y, "target_logits": logits.detach(),
                  "target_loss": loss.detach()}


def pgd_at_loss(target: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
                step_size: float = 2 / 255, steps: int = 10,
                random_start: str | None = "uniform",
                generator: torch.Generator | None = None):
    """PGD adversarial training (Madry et al., ICLR 2018): CE(f(x'), y), x' = PGD-CE to y."""
    x_adv = pgd(target, x, y, eps=eps, step_size=step_size, steps=steps, loss="ce",
                random_start=random_start, generator=generator)
    logits = target(x_adv)
    loss = F.cross_entropy(logits, y)
    return loss, {"x_adv": x_adv, "labels": y, "target_logits": logits.detach(),
                  "target_loss": loss.detach()}


def trades_loss(target: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
                step_size: float = 2 / 255, steps: int = 10, beta: float = 6.0,
                random_start: str | None = "gaussian",
                generator: torch.Generator | None = None):
    """TRADES (Zhang et al., ICML 2019): CE(f(x), y) + beta * KL(f(x) || f(x')), with x' the
    PGD maximizer of that KL started at x + 0.001 N(0, I), as the official code."""
    x_adv = pgd(target, x, None, eps=eps, step_size=step_size, steps=steps, loss="kl",
                random_start=random_start, generator=generator)
    logits = target(x)
    adv_logits = target(x_adv)
    natural = F.cross_entropy(logits, y)
    robust = F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(logits, 1), reduction="batchmean")
    loss = natural + beta * robust
    return loss, {"x_adv": x_adv, "labels": y, "target_logits": adv_logits.detach(),
                  "natural_loss": natural.detach(), "target_loss": robust.detach()}


def lbgat_loss(guide: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
               beta: float = 0.0, random_start: str | None = "gaussian",
               generator: torch.Generator | None = None):
    """LBGAT (Cui et al., ICCV 2021): MSE(f_t(x'), f_g(x)) + CE(f_g(x), y) [+ beta * TRADES-KL
    of the target], with x' from the TRADES KL inner step on the target. Unlike DYNAT, the MSE
    term sends gradient into the guide: the guide is pulled towards the target's logits."""
    x_adv = pgd(target, x, None, eps=eps, step_size=step_size, steps=steps, loss="kl",
                random_start=random_start, generator=generator)
    guide_logits = guide(x)
    adv_logits = target(x_adv)
    guide_loss = F.cross_entropy(guide_logits, y)
    mse = F.mse_loss(adv_logits, guide_logits)
    loss = mse + guide_loss
    if beta:
        clean_logits = target(x)
        loss = loss + beta * F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(clean_logits, 1),
                                      reduction="batchmean")
    return loss, {"x_adv": x_adv, "labels": dynamic_labels(guide_logits),
                  "guide_logits": guide_logits.detach(), "target_logits": adv_logits.detach(),
                  "guide_loss": guide_loss.detach(), "target_loss": mse.detach()}


@dataclass(frozen=True)
class Method:
    """A registered training method: its loss, whether it trains a guide, its default options."""
    name: str
    loss: Callable
    uses_guide: bool
    defaults: dict = field(default_factory=dict)
    attack: bool = True  # False: no inner maximization (standard training)

    def __call__(self, guide, target, x, y, **options):
        kwargs = {**self.defaults, **options}
        if self.uses_guide:
            return self.loss(guide, target, x, y, **kwargs)
        return self.loss(target, x, y, **kwargs)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


register(Method("standard", standard_loss, uses_guide=False, attack=False))
register(Method("pgd_at", pgd_at_loss, uses_guide=False))
register(Method("trades", trades_loss, uses_guide=False))
register(Method("dynat", dynat_loss, uses_guide=True))
register(Method("dynat_static", dynat_loss, uses_guide=True, defaults={"label_source": "static"}))
register(Method("lbgat", lbgat_loss, uses_guide=True))


def get(name: str) -> Method:
    """The registered method called ``name``."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}. Valid: {', '.join(METHODS)}.")
    return METHODS[name]

"""One loss function per training method, and a registry of them.

Every loss takes a batch of clean images ``x`` in [0, 1] with ground truth ``y`` and returns
``(loss, out)``: the scalar to minimize and a dict of what was computed on the way (at least
``x_adv``; ``labels``, the hard labels the target was trained on; and the detached loss terms
``guide_loss`` / ``target_loss`` that the training loop averages). Methods with a guide network
take ``(guide, target, x, y)``, the others ``(target, x, y)``. No loss synchronizes with the
host (no ``.item()``), so a training step stays asynchronous on a GPU.

The inner maximization is an argument: every loss that attacks takes ``attack``, an
:class:`dynat_lite.attacks.PGD` (or the training step's :class:`dynat_lite.fast.FastPGD`), and
runs it as ``attack(model, x, labels)`` (CE), ``attack(model, x, None, loss="kl")`` or
``attack.with_kappa(model, x, labels)``. Called without one, a loss builds ``PGD`` from its
budget keywords (``eps``, ``step_size``, ``steps``, ``random_start``, ``generator``), whose
defaults are the method's own; given one, it runs that attack and the budget keywords are not
used. The training loop always passes the attack it built from its Config.

Methods with a burn-in (GAIRAT, MAIL, DYNAT + GAIRAT) also take ``run_fraction``: the fraction
of the run completed when the current epoch started (epoch / epochs), which the training loop
passes to every method registered with ``scheduled=True``.

Every published method's defaults follow its paper's official code; the attack budget (eps,
step size, steps) is set by the training config, the same for all methods.
``Method.settings()`` lists a method's own settings (beta, weights, ...) with their defaults;
``train.config`` writes them into ``Config.method_options``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import PGD

LABEL_SOURCES = ("dynamic", "static", "soft")
TARGET_LOSSES = ("ce", "kl", "mse")
INNER_OBJECTIVES = ("label", "dynamic", "y", "kl")
GAIR_FUNCTIONS = ("tanh", "sigmoid", "discrete")


def _check_choice(what: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {what} {value!r}. Valid: {', '.join(map(str, valid))}.")


def dynamic_labels(guide_logits: torch.Tensor) -> torch.Tensor:
    """The guide's argmax class per example: a hard label with no gradient attached."""
    return guide_logits.detach().argmax(dim=1)


def inner_attack(attack: PGD | None = None, **budget) -> PGD:
    """The attack a loss runs: ``attack`` when given, else :class:`dynat_lite.attacks.PGD`
    with ``budget`` (the loss's own keywords and defaults)."""
    return attack if attack is not None else PGD(**budget)


def _kl(adv_logits: torch.Tensor, probs: torch.Tensor, reduction: str = "batchmean"):
    """KL(probs || softmax(adv_logits)), summed over classes."""
    kl = F.kl_div(F.log_softmax(adv_logits, 1), probs, reduction="none").sum(1)
    return kl.mean() if reduction == "batchmean" else kl


# ----------------------------------------------------------------------- per-example weights
def gair_weights(kappa: torch.Tensor, steps: int, *, lam: float = -1.0,
                 func: str = "tanh") -> torch.Tensor:
    """GAIRAT's per-example weights from the geometry value kappa, normalized to mean 1.

    kappa[i] is how many PGD iterates point i survived (see ``attacks.pgd_with_kappa``): a
    small kappa means a point close to the decision boundary, which gets a large weight.
    "tanh" (the paper's default): w = (1 + tanh(lam + 5 (1 - kappa / (K/2)))) / 2, with
    K/2 = int(steps / 2) as in ``GAIR.py``; "sigmoid" and "discrete" are the code's other
    choices. Zhang et al., "Geometry-aware Instance-reweighted Adversarial Training", ICLR 2021.
    """
    _check_choice("GAIR weight function", func, GAIR_FUNCTIONS)
    half = max(int(steps / 2), 1)
    if func == "tanh":
        w = ((lam + (half - kappa) * 5 / half).tanh() + 1) / 2
    elif func == "sigmoid":
        w = (lam + (half - kappa) * 5 / half).sigmoid()
    else:
        w = ((steps + 1) - kappa) / (steps + 1)
    return w * len(w) / w.sum()


def probabilistic_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MAIL's probabilistic margin: max_{j != y} p_j - p_y (positive: misclassified)."""
    probs = logits.detach().float().softmax(1)
    true = probs.gather(1, y[:, None]).squeeze(1)
    others = probs.masked_fill(F.one_hot(y, probs.shape[1]).bool(), -1.0)
    return others.max(1).values - true


def mail_weights(logits: torch.Tensor, y: torch.Tensor, *, bias: float = -0.5,
                 slope: float = 10.0) -> torch.Tensor:
    """MAIL's per-example weights 3 * sigmoid(slope * (margin + bias)), no gradient.

    Points with a larger probabilistic margin (closer to, or across, the boundary) weigh more.
    Wang et al., "Probabilistic Margins for Instance Reweighting in Adversarial Training",
    NeurIPS 2021 (``weight_assign`` in the official code: the factor 3; bias -0.5 and slope 10
    are what its README gives for MAIL-AT).
    """
    return 3 * ((probabilistic_margin(logits, y) + bias) * slope).sigmoid()


def _after_burn_in(run_fraction: float | None, burn_in: float) -> bool:
    """True once ``burn_in`` of the run is over; ``run_fraction=None`` (called outside the
    training loop) counts as after it."""
    return run_fraction is None or run_fraction >= burn_in


# ------------------------------------------------------------------------------------ DYNAT
def target_term(target_logits: torch.Tensor, labels: torch.Tensor, guide_logits: torch.Tensor,
                kind: str = "ce", weights: torch.Tensor | None = None) -> torch.Tensor:
    """The target's loss on adversarial examples, and its ablation.

    "ce": CE(f_t(x'), labels), DYNAT's choice (``labels`` may be hard class indices or soft
    probabilities). "kl": KL(softmax f_g(x) || softmax f_t(x')), the guide's whole distribution
    instead of its argmax. "mse": mean squared error between the logits f_t(x') and f_g(x) (as
    LBGAT). The guide's logits are detached in all three, so the target term never trains the
    guide. ``weights`` (per example, mean 1, e.g. GAIRAT's) weigh each example's term.
    """
    _check_choice("target loss", kind, TARGET_LOSSES)
    guide_logits = guide_logits.detach()
    if kind == "ce":
        per_example = F.cross_entropy(target_logits, labels, reduction="none")
    elif kind == "kl":
        per_example = _kl(target_logits, F.softmax(guide_logits, 1), reduction="none")
    else:
        per_example = F.mse_loss(target_logits, guide_logits, reduction="none").mean(1)
    if weights is not None:
        per_example = per_example * weights
    return per_example.mean()


def dynat_loss(guide: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               attack: PGD | None = None, eps: float = 8 / 255, step_size: float = 2 / 255,
               steps: int = 10, random_start: str | None = "gaussian",
               generator: torch.Generator | None = None, beta: float = 1.0,
               label_source: str = "dynamic", target_loss: str = "ce", inner: str = "label",
               reweight: str | None = None, run_fraction: float | None = None,
               burn_in: float = 0.5, gair_lambda: float = -1.0, gair_func: str = "tanh"):
    """Dynamic Label Adversarial Training, one batch (the DYNAT paper).

    1. The guide sees the clean batch: guide_logits = f_g(x), trained with CE(guide_logits, y).
    2. Dynamic labels l = argmax guide_logits, without gradient.
    3. Inner maximization: x' = ``attack`` on the target (in eval mode) maximizing
       CE(f_t(x'), l); the paper's is PGD from x + 0.001 N(0, I).
    4. Outer loss: CE(f_g(x), y) + beta * CE(f_t(x'), l), the target back in train mode.

    Ablations (each argument's first value is DYNAT):

    - ``label_source``: "dynamic" (l = argmax f_g(x)), "static" (l = y: plain PGD-AT on the
      target, with a guide trained beside it), "soft" (the guide's probabilities softmax f_g(x)
      as a soft label; the inner attack uses their argmax).
    - ``target_loss``: "ce", "kl" or "mse" (see ``target_term``).
    - ``inner``: the inner objective: "label" (CE to the label the target is trained on),
      "dynamic" (CE to argmax f_g(x) whatever the label source), "y" (CE to the ground
      truth), "kl" (TRADES' KL from the target's clean prediction).
    - ``reweight="gairat"``: DYNAT + GAIRAT, GAIRAT's per-example weights (``gair_weights``,
      kappa counted against the labels the attack maximizes CE to) on the target term once
      ``burn_in`` of the run is over (``run_fraction``, passed by the training loop).

    ``out["labels"]`` holds the hard labels (for "soft", their argmax).
    """
    _check_choice("label source", label_source, LABEL_SOURCES)
    _check_choice("target loss", target_loss, TARGET_LOSSES)
    _check_choice("inner objective", inner, INNER_OBJECTIVES)
    _check_choice("reweighting", reweight, (None, "gairat"))
    if reweight == "gairat" and inner == "kl":
        raise ValueError("GAIRAT's kappa needs a CE inner attack; use inner='label', "
                         "'dynamic' or 'y' with reweighting.")
    attack = inner_attack(attack, eps=eps, step_size=step_size, steps=steps,
                          random_start=random_start, generator=generator)
    guide_logits = guide(x)
    hard = dynamic_labels(guide_logits) if label_source != "static" else y
    attack_labels = {"label": hard, "dynamic": dynamic_labels(guide_logits), "y": y}.get(inner)
    weights = None
    if reweight == "gairat":
        x_adv, kappa = attack.with_kappa(target, x, attack_labels)
        if _after_burn_in(run_fraction, burn_in):
            weights = gair_weights(kappa, attack.steps, lam=gair_lambda, func=gair_func)
    elif inner == "kl":
        x_adv = attack(target, x, None, loss="kl")
    else:
        x_adv = attack(target, x, attack_labels)
    soft = F.softmax(guide_logits.detach().float(), 1) if label_source == "soft" else None
    target_logits = target(x_adv)
    guide_loss = F.cross_entropy(guide_logits, y)
    adv_loss = target_term(target_logits, soft if soft is not None else hard, guide_logits,
                           target_loss, weights)
    loss = guide_loss + beta * adv_loss
    out = {"x_adv": x_adv, "labels": hard, "guide_logits": guide_logits.detach(),
           "target_logits": target_logits.detach(), "guide_loss": guide_loss.detach(),
           "target_loss": adv_loss.detach()}
    if weights is not None:
        out["weights"] = weights.detach()
    return loss, out


# -------------------------------------------------------------------------- single-network
def standard_loss(target: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Plain training on clean images: CE(f(x), y). No attack."""
    logits = target(x)
    loss = F.cross_entropy(logits, y)
    return loss, {"x_adv": x, "labels": y, "target_logits": logits.detach(),
                  "target_loss": loss.detach()}


def pgd_at_loss(target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                attack: PGD | None = None, eps: float = 8 / 255,
                step_size: float = 2 / 255, steps: int = 10,
                random_start: str | None = "uniform",
                generator: torch.Generator | None = None):
    """PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018): CE(f(x'), y), x' = PGD-CE to y from a uniform start."""
    attack = inner_attack(attack, eps=eps, step_size=step_size, steps=steps,
                          random_start=random_start, generator=generator)
    x_adv = attack(target, x, y)
    logits = target(x_adv)
    loss = F.cross_entropy(logits, y)
    return loss, {"x_adv": x_adv, "labels": y, "target_logits": logits.detach(),
                  "target_loss": loss.detach()}


def trades_loss(target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                attack: PGD | None = None, eps: float = 8 / 255,
                step_size: float = 2 / 255, steps: int = 10, beta: float = 6.0,
                random_start: str | None = "gaussian",
                generator: torch.Generator | None = None):
    """TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and
    Accuracy", ICML 2019): CE(f(x), y) + beta * KL(f(x) || f(x')), with x' the PGD maximizer
    of that KL started at x + 0.001 N(0, I), beta = 6, as the official code."""
    attack = inner_attack(attack, eps=eps, step_size=step_size, steps=steps,
                          random_start=random_start, generator=generator)
    x_adv = attack(target, x, None, loss="kl")
    logits = target(x)
    adv_logits = target(x_adv)
    natural = F.cross_entropy(logits, y)
    robust = _kl(adv_logits, F.softmax(logits, 1))
    loss = natural + beta * robust
    return loss, {"x_adv": x_adv, "labels": y, "target_logits": adv_logits.detach(),
                  "natural_loss": natural.detach(), "target_loss": robust.detach()}


def mart_loss(target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
              attack: PGD | None = None, eps: float = 8 / 255,
              step_size: float = 2 / 255, steps: int = 10, beta: float = 6.0,
              random_start: str | None = "gaussian",
              generator: torch.Generator | None = None):
    """MART (Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified
    Examples", ICLR 2020), as the official ``mart_loss``:

        BCE(f(x'), y) + beta * mean( KL(p(x) || p(x')) * (1 - p_y(x)) )

    with BCE = CE(f(x'), y) - log(1 - max_{j != y} p_j(x')) (the boosted CE), x' = PGD-CE to y
    from x + 0.001 N(0, I), beta = 6. The KL term weighs misclassified (low p_y) points more.
    """
    attack = inner_attack(attack, eps=eps, step_size=step_size, steps=steps,
                          random_start=random_start, generator=generator)
    x_adv = attack(target, x, y)
    logits = target(x)
    adv_logits = target(x_adv)
    adv_probs = F.softmax(adv_logits, 1)
    top2 = adv_probs.argsort(1)[:, -2:]
    runner_up = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boosted_ce = (F.cross_entropy(adv_logits, y)
                  + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), runner_up))
    nat_probs = F.softmax(logits, 1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(1)
    robust = (kl * (1.0000001 - true_probs)).mean()
    loss = boosted_ce + beta * robust
    return loss, {"x_adv": x_adv, "labels": y, "target_logits": adv_logits.detach(),
                  "natural_loss": boosted_ce.detach(), "target_loss": robust.detach()}


def gairat_loss(target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                attack: PGD | None = None, eps: float = 8 / 255,
                step_size: float = 2 / 255, steps: int = 10,
                random_start: str | None = "uniform",
                generator: torch.Generator | None = None, run_fraction: float | None = None,
                burn_in: float = 0.5, lam: float = -1.0, func: str = "tanh"):
    """GAIRAT (Zhang et al., "Geometry-aware Instance-reweighted Adversarial Training", ICLR
    2021): PGD-AT whose per-example CE is weighted by ``gair_weights(kappa)``, kappa being the
    number of PGD iterates a point survives (``attacks.pgd_with_kappa``, uniform start).

    As the official ``GAIRAT.py``: plain PGD-AT during the burn-in (``begin_epoch`` 60 of 120
    epochs: ``burn_in=0.5`` of the run), then Lambda = -1 ("fixed" schedule), Tanh weights.
    """
    attack = inner_attack(attack, eps=eps, step_size=step_size, steps=steps,
                          random_start=random_start, generator=generator)
    x_adv, kappa = attack.with_kappa(target, x, y)
    logits = target(x_adv)
    per_example = F.cross_entropy(logits, y, reduction="none")
    out = {"x_adv": x_adv, "labels": y, "target_logits": logits.detach()}
    if _after_burn_in(run_fraction, burn_in):
        weights = gair_weights(kappa, attack.steps, lam=lam, func=func)
        per_example = per_example * weights
        out["weights"] = weights.detach()
    loss = per_example.mean()
    out["target_loss"] = loss.detach()
    return loss, out


def mail_loss(target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
              attack: PGD | None = None, eps: float = 8 / 255,
              step_size: float = 2 / 255, steps: int = 10,
              random_start: str | None = "gaussian",
              generator: torch.Generator | None = None, run_fraction: float | None = None,
              burn_in: float = 76 / 120, bias: float = -0.5, slope: float = 10.0):
    """MAIL-AT (Wang et al., "Probabilistic Margins for Instance Reweighting in Adversarial
    Training", NeurIPS 2021): PGD-AT whose per-example CE on x' is weighted by
    ``mail_weights`` (3 sigmoid(slope (margin + bias))), computed on the adversarial logits.

    As the official code (``train.py`` and ``mail_loss.py``) for MAIL-AT: bias -0.5 and slope
    10 (its README's command for MAIL-AT; the script's own defaults, -1.5 and 1, are not the
    ones it gives for MAIL-AT); x' = PGD-CE from x + 0.001 N(0, I); plain PGD-AT while
    ``epoch <= 75`` of 120 epochs, reweighting from epoch 76 on: ``burn_in=76/120`` of the run.
    Its optimizer (lr 0.01, weight decay 3.5e-3) is not a method setting here: every method
    trains with the Config's.
    """
    attack = inner_attack(attack, eps=eps, step_size=step_size, steps=steps,
                          random_start=random_start, generator=generator)
    x_adv = attack(target, x, y)
    logits = target(x_adv)
    per_example = F.cross_entropy(logits, y, reduction="none")
    out = {"x_adv": x_adv, "labels": y, "target_logits": logits.detach()}
    if _after_burn_in(run_fraction, burn_in):
        weights = mail_weights(logits, y, bias=bias, slope=slope)
        per_example = per_example * weights
        out["weights"] = weights.detach()
    loss = per_example.mean()
    out["target_loss"] = loss.detach()
    return loss, out


# --------------------------------------------------------------------------------- LBGAT
def lbgat_loss(guide: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               attack: PGD | None = None, eps: float = 8 / 255, step_size: float = 2 / 255,
               steps: int = 10, beta: float = 0.0, random_start: str | None = "gaussian",
               generator: torch.Generator | None = None):
    """LBGAT (Cui et al., "Learnable Boundary Guided Adversarial Training", ICCV 2021):
    MSE(f_t(x'), f_g(x)) + CE(f_g(x), y) [+ beta * TRADES-KL of the target], with x' from the
    TRADES KL inner step on the target. beta = 0 (LBGAT) and beta = 6 (LBGAT + TRADES) are the
    paper's two variants. Unlike DYNAT, the MSE term sends gradient into the guide: the guide
    is pulled towards the target's logits."""
    attack = inner_attack(attack, eps=eps, step_size=step_size, steps=steps,
                          random_start=random_start, generator=generator)
    x_adv = attack(target, x, None, loss="kl")
    guide_logits = guide(x)
    adv_logits = target(x_adv)
    guide_loss = F.cross_entropy(guide_logits, y)
    mse = F.mse_loss(adv_logits, guide_logits)
    loss = mse + guide_loss
    if beta:
        clean_logits = target(x)
        loss = loss + beta * _kl(adv_logits, F.softmax(clean_logits, 1))
    return loss, {"x_adv": x_adv, "labels": dynamic_labels(guide_logits),
                  "guide_logits": guide_logits.detach(), "target_logits": adv_logits.detach(),
                  "guide_loss": guide_loss.detach(), "target_loss": mse.detach()}


# ------------------------------------------------------------------------------ the registry
#: Loss keywords that are not a method's own settings: the attack and its budget (the training
#: Config sets them, the same for every method) and the run fraction (the training loop's).
NOT_SETTINGS = ("attack", "eps", "step_size", "steps", "random_start", "generator",
                "run_fraction")


@dataclass(frozen=True)
class Method:
    """A registered training method: its loss, whether it trains a guide, its default options.

    A variant is the same loss with other ``defaults`` (DYNAT + GAIRAT is ``dynat_loss`` with
    ``reweight="gairat"``). ``scheduled``: the loss takes ``run_fraction`` (epoch / epochs),
    for a burn-in; the training loop passes it. ``description``: one line for tables and the
    command line.
    """
    name: str
    loss: Callable
    uses_guide: bool
    defaults: dict = field(default_factory=dict)
    attack: bool = True  # False: no inner maximization (standard training)
    scheduled: bool = False
    description: str = ""

    def __call__(self, guide, target, x, y, **options):
        budget = sorted(k for k in options if k in NOT_SETTINGS[1:-1])
        if options.get("attack") is not None and budget:
            raise ValueError(f"{self.name}: got an attack and the budget keywords {budget}; "
                             f"the attack carries its own budget: set it there.")
        kwargs = {**self.defaults, **options}
        if self.uses_guide:
            return self.loss(guide, target, x, y, **kwargs)
        return self.loss(target, x, y, **kwargs)

    def option_default(self, name: str, fallback=None):
        """The value option ``name`` takes unless the caller sets it: the registered default,
        else the loss function's keyword default, else ``fallback``."""
        if name in self.defaults:
            return self.defaults[name]
        param = inspect.signature(self.loss).parameters.get(name)
        if param is None or param.default is inspect.Parameter.empty:
            return fallback
        return param.default

    def settings(self) -> dict:
        """The method's own settings (beta, label source, weights, burn-in, ...) and the values
        they take unless set: every keyword of its loss but those of ``NOT_SETTINGS``, the
        registered defaults over the loss's. ``train.config`` writes them into the Config."""
        params = inspect.signature(self.loss).parameters.values()
        own = {p.name: p.default for p in params
               if p.kind is p.KEYWORD_ONLY and p.name not in NOT_SETTINGS}
        return {**own, **{k: v for k, v in self.defaults.items() if k not in NOT_SETTINGS}}


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


register(Method("standard", standard_loss, uses_guide=False, attack=False,
                description="clean training, no attack"))
register(Method("pgd_at", pgd_at_loss, uses_guide=False, description="PGD-AT (Madry et al.)"))
# PGD-AT with DYNAT's attack start (x + 0.001 N(0, I)) instead of Madry's uniform one: the
# like-with-like baseline for DYNAT (with 2-3 step training attacks the start alone moves accuracy).
register(Method("pgd_at_gauss", pgd_at_loss, uses_guide=False,
                defaults={"random_start": "gaussian"},
                description="PGD-AT, DYNAT's start (x + 0.001 N(0, I))"))
register(Method("trades", trades_loss, uses_guide=False, description="TRADES, beta = 6"))
register(Method("mart", mart_loss, uses_guide=False, description="MART, beta = 6"))
register(Method("gairat", gairat_loss, uses_guide=False, scheduled=True,
                description="GAIRAT (PGD-AT + geometry weights after half the run)"))
register(Method("mail", mail_loss, uses_guide=False, scheduled=True,
                description="MAIL-AT (PGD-AT + margin weights)"))
register(Method("lbgat", lbgat_loss, uses_guide=True, description="LBGAT, beta = 0"))
register(Method("lbgat_trades", lbgat_loss, uses_guide=True, defaults={"beta": 6.0},
                description="LBGAT + TRADES-KL, beta = 6"))
register(Method("dynat", dynat_loss, uses_guide=True, description="DYNAT"))
register(Method("dynat_gairat", dynat_loss, uses_guide=True, scheduled=True,
                defaults={"reweight": "gairat"},
                description="DYNAT + GAIRAT weights on the target term"))
# DYNAT ablations: one argument changed each.
register(Method("dynat_static", dynat_loss, uses_guide=True, defaults={"label_source": "static"},
                description="DYNAT, static labels (ground truth)"))
register(Method("dynat_soft", dynat_loss, uses_guide=True, defaults={"label_source": "soft"},
                description="DYNAT, soft labels (guide probabilities)"))
register(Method("dynat_kl", dynat_loss, uses_guide=True, defaults={"target_loss": "kl"},
                description="DYNAT, KL target loss"))
register(Method("dynat_mse", dynat_loss, uses_guide=True, defaults={"target_loss": "mse"},
                description="DYNAT, MSE target loss"))
register(Method("dynat_inner_y", dynat_loss, uses_guide=True, defaults={"inner": "y"},
                description="DYNAT, inner CE to y"))
register(Method("dynat_inner_kl", dynat_loss, uses_guide=True, defaults={"inner": "kl"},
                description="DYNAT, inner KL (TRADES)"))


def get(name: str) -> Method:
    """The registered method called ``name``."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}. Valid: {', '.join(METHODS)}.")
    return METHODS[name]

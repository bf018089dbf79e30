"""Clean and robust accuracy of a model, batched, on any device, in float32; and a report a
reviewer can trust: accuracy per attack, the per-example worst case over all attacks, and
sanity checks that catch a broken evaluation (gradient masking, a weak or buggy attack).

    report = robustness_report(model, x, y, attacks=("clean", "pgd20", "cw", "aa_fast"))
    print(report)          # the table, then every check with PASS or FAIL
    report.ok              # False if any sanity check failed

An attack is named by a spec: "clean", "fgsm", "pgd-N" (N steps of 2/255 from a uniform start;
"pgd10" and "pgd20" are the old spellings), "cw" (C&W-inf), "aa_fast" and "aa_standard"
(AutoAttack). ``PROTOCOLS`` are whole evaluations: the standard one (eps = 8/255, every test
image) and the DYNAT authors' (standard AutoAttack at eps = 0.031 on the first 1,000).
``pick_best`` chooses among the weights a run kept by PGD accuracy on held-out training images.
This module measures only; it imports nothing above ``attacks``.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import (_check_labels, autoattack, check_images, cw_inf, eval_mode, fgsm,
                      pgd)
from .models import folded


@dataclass(frozen=True)
class PGDAttack:
    """PGD-CE as an evaluation attack: ``steps`` steps of ``step_size`` (None: max(eps/4,
    2/255), at most 1) from a uniform random start (none at eps = 0)."""
    steps: int
    step_size: float | None = 2 / 255

    def __call__(self, model, x, y, eps, generator):
        step = self.step_size if self.step_size is not None else max(eps / 4, 2 / 255)
        return pgd(model, x, y, eps=eps, step_size=min(step, 1.0), steps=self.steps, loss="ce",
                   random_start="uniform" if eps > 0 else None, generator=generator)


def _cw(model, x, y, eps, generator):
    return cw_inf(model, x, y, eps=eps, generator=generator)


def _autoattack(version):
    def attack(model, x, y, eps, generator):
        seed = generator.initial_seed() if generator is not None else 0
        return autoattack(model, x, y, eps=eps, version=version, batch_size=len(x), seed=seed)
    return attack


# name -> attack(model, x, y, eps, generator) returning adversarial images; "pgd-N" for any N
# is understood too (``attack_function``).
ATTACKS: dict[str, Callable] = {
    "clean": lambda model, x, y, eps, generator: x,
    "fgsm": lambda model, x, y, eps, generator: fgsm(model, x, y, eps=eps),
    "pgd10": PGDAttack(10),
    "pgd20": PGDAttack(20),
    "cw": _cw,                            # C&W-inf: PGD on the margin loss, 30 steps
    "aa_fast": _autoattack("fast"),       # APGD-CE + APGD-T
    "aa_standard": _autoattack("standard"),
}

#: How the report names each attack (``attack_title`` also names "pgd-N").
ATTACK_TITLES = {"clean": "clean", "fgsm": "FGSM", "pgd10": "PGD-10", "pgd20": "PGD-20",
                 "cw": "C&W∞", "aa_fast": "AutoAttack (fast)",
                 "aa_standard": "AutoAttack", "worst_case": "worst case"}

_PGD_SPEC = re.compile(r"pgd-?([0-9]+)")


def attack_function(attack: str | Callable) -> Callable:
    """The attack a spec names (``attack(model, x, y, eps, generator)`` -> adversarial
    images): a name of ``ATTACKS``, or "pgd-N" (N >= 1 steps of 2/255); a callable is its own."""
    if callable(attack):
        return attack
    if attack in ATTACKS:
        return ATTACKS[attack]
    found = _PGD_SPEC.fullmatch(str(attack))
    if found and int(found.group(1)) >= 1:
        return PGDAttack(int(found.group(1)))
    raise ValueError(f"Unknown attack {attack!r}. Valid: {', '.join(ATTACKS)}, or pgd-N for "
                     f"PGD with N steps (e.g. pgd-50).")


def attack_title(name: str) -> str:
    """How tables name the attack ``name``: "PGD-50" for "pgd-50", "C&W∞" for "cw", ..."""
    if name in ATTACK_TITLES:
        return ATTACK_TITLES[name]
    found = _PGD_SPEC.fullmatch(str(name))
    return f"PGD-{int(found.group(1))}" if found else str(name)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def default_batch_size(device: torch.device) -> int:
    """Images per evaluation batch when none is given: 256 on a GPU; 64 on a CPU, where a small
    batch stays in cache (the README gives the figures)."""
    return 256 if torch.device(device).type == "cuda" else 64


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int | None, device: torch.device):
    """(x, y) in float32 batches on ``device`` (``batch_size`` None: ``default_batch_size``)."""
    size = batch_size or default_batch_size(device)
    for i in range(0, len(y), size):
        yield x[i:i + size].to(device).float(), y[i:i + size].to(device)


def correct_under(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  attack: str | Callable = "clean", *, eps: float = 8 / 255,
                  batch_size: int | None = None, seed: int = 0) -> torch.Tensor:
    """Per-example booleans (on the CPU): is the model right on the attacked image?

    ``attack``: a spec ("clean", "fgsm", "pgd-20", "cw", "aa_fast", ...: ``attack_function``)
    or an attack function. Runs on the model's device, in float32 (autocast off), in eval mode,
    batch by batch; the attack's random start comes from one generator seeded with ``seed``.
    On the CPU the attack and the prediction run on the model with its batch norms folded into
    the convolutions before them (``models.folded``): in eval mode the same function up to float
    rounding, a fifth faster for the lessons' small CNN (``model`` itself is left as it is).
    """
    attack_fn = attack_function(attack)
    check_images(x)  # every attack, "clean" too: NaN images would score as class 0
    _check_labels(x, y, model)
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    with eval_mode(model), torch.autocast(device.type, enabled=False):
        net = folded(model) if device.type == "cpu" else model
        for xb, yb in _batches(x, y, batch_size, device):
            x_adv = attack_fn(net, xb, yb, eps, generator)
            with torch.no_grad():
                out.append((net(x_adv).argmax(1) == yb).cpu())
    return torch.cat(out)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             attacks=("clean", "fgsm", "pgd20"), eps: float = 8 / 255,
             batch_size: int | None = None, seed: int = 0) -> dict[str, float]:
    """Accuracy (a fraction in [0, 1]) under each attack, e.g. {"clean": .9, "pgd20": .4}."""
    return {name: correct_under(model, x, y, name, eps=eps, batch_size=batch_size,
                                seed=seed).float().mean().item()
            for name in attacks}


def accuracy_vs_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_grid, *,
                    steps: int = 10, step_fraction: float = 0.25, batch_size: int | None = None,
                    seed: int = 0) -> dict[str, list[float]]:
    """Accuracy under FGSM and PGD at every budget of ``eps_grid``: the robustness curve.

    Returns ``{"FGSM": [...], f"PGD-{steps}": [...]}``, one fraction per eps in the grid's
    order. PGD takes ``steps`` steps of ``step_fraction * eps`` (the step grows with the ball)
    from a uniform random start, its generator seeded with ``seed`` afresh at every eps. At
    eps = 0 both attacks leave x unchanged: both curves take the clean accuracy there, measured
    once instead of attacking with a budget of zero. Each point is a :func:`correct_under`: on
    the model's device, in float32, in eval mode.
    """
    def accuracy(attack, eps):
        right = correct_under(model, x, y, attack, eps=eps, batch_size=batch_size, seed=seed)
        return right.sum().item() / len(y)

    curves: dict[str, list[float]] = {"FGSM": [], f"PGD-{steps}": []}
    for eps in eps_grid:
        if eps == 0:
            points = [accuracy("clean", eps)] * 2
        else:
            points = [accuracy("fgsm", eps), accuracy(PGDAttack(steps, step_fraction * eps), eps)]
        for curve, point in zip(curves.values(), points):
            curve.append(point)
    return curves


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities of ``model`` on ``x`` (on the CPU), in eval mode, batch by batch;
    the model's mode is restored."""
    with eval_mode(model):
        device = model_device(model)
        probs = [model(x[i:i + batch_size].to(device)).float().softmax(1).cpu()
                 for i in range(0, len(x), batch_size)]
    return torch.cat(probs)


# ------------------------------------------------------------------------------ sanity checks
class Quantized(nn.Module):
    """``model`` behind a quantization step: inputs rounded to ``levels`` grey levels first.

    A textbook gradient mask (Athalye et al., "Obfuscated Gradients Give a False Sense of
    Security", ICML 2018): rounding has a zero gradient, so every gradient attack is blind and
    the model *looks* robust. For demonstrations and tests of ``sanity_checks``; never a defense.
    """

    def __init__(self, model: nn.Module, levels: int = 8):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


@dataclass
class Check:
    """One sanity check: what it tests, whether it passed, what was measured."""
    name: str
    passed: bool
    measured: str
    expected: str

    def line(self) -> str:
        flag = "PASS" if self.passed else "FAIL ⚠"
        return f"[{flag}] {self.name}: {self.measured} (expected {self.expected})"


def _pgd_accuracy(model, x, y, *, eps, steps, step_size=None, seed=0, batch_size=None):
    """Accuracy under PGD-CE (``PGDAttack``: step eps/4 unless given, at least 2/255)."""
    return correct_under(model, x, y, PGDAttack(steps, step_size), eps=eps, seed=seed,
                         batch_size=batch_size).float().mean().item()


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                           batch_size: int | None = None) -> float:
    """Fraction of examples whose input gradient of CE(f(x), y) is exactly zero everywhere.

    A differentiable classifier almost never has one; a model that hides its gradient (a
    quantization step, a hard threshold, a saturated output) has many, and then every
    gradient attack is blind and robust accuracy is overstated.
    """
    device = model_device(model)
    zero = 0
    with eval_mode(model), torch.autocast(device.type, enabled=False):
        for xb, yb in _batches(x, y, batch_size, device):
            xb.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(xb).float(), yb, reduction="sum")
                grad, = torch.autograd.grad(loss, xb, allow_unused=True)
            if grad is None:
                zero += len(yb)
            else:
                zero += int((grad.flatten(1).abs().sum(1) == 0).sum())
    return zero / max(len(y), 1)


def check_falls_with_eps(model, x, y, *, eps, tol, seed=0, batch_size=None) -> Check:
    """1. Accuracy falls as eps grows: PGD-10 at 0, eps/4, eps/2, eps, 2 eps."""
    grid = [0.0, eps / 4, eps / 2, eps, min(2 * eps, 1.0)]
    accs = [_pgd_accuracy(model, x, y, eps=e, steps=10, seed=seed, batch_size=batch_size)
            for e in grid]
    rises = [b - a for a, b in zip(accs, accs[1:])]
    return Check("accuracy falls as eps grows", max(rises) <= tol,
                 "PGD-10 at eps×255 " + ", ".join(f"{e * 255:.3g}: {a:.1%}"
                                                  for e, a in zip(grid, accs)),
                 "non-increasing")


def check_unbounded(model, x, y, *, most, seed=0, batch_size=None) -> Check:
    """2. An unbounded attack (eps = 1, PGD-20 with step 0.1) drives accuracy to about 0."""
    acc = _pgd_accuracy(model, x, y, eps=1.0, steps=20, step_size=0.1, seed=seed,
                        batch_size=batch_size)
    return Check("an unbounded attack (eps = 1) breaks every example", acc <= most,
                 f"accuracy {acc:.1%}", f"≤ {most:.0%}")


def check_gradients(model, x, y, *, most, batch_size=None) -> Check:
    """3. The fraction of examples with an all-zero input gradient is about 0."""
    frac = zero_gradient_fraction(model, x, y, batch_size=batch_size)
    return Check("input gradients are not zero", frac <= most,
                 f"{frac:.1%} of examples have an all-zero input gradient", f"≤ {most:.0%}")


def check_more_steps(model, x, y, pgd10: float, *, eps, tol, seed=0, batch_size=None) -> Check:
    """4. More PGD steps (50 vs 10, steps of 2/255) do not raise accuracy; ``pgd10`` is the
    PGD-10 accuracy with the same seed."""
    pgd50 = _pgd_accuracy(model, x, y, eps=eps, steps=50, step_size=2 / 255, seed=seed,
                          batch_size=batch_size)
    return Check("more PGD steps do not raise accuracy", pgd50 <= pgd10 + tol,
                 f"PGD-10 {pgd10:.1%}, PGD-50 {pgd50:.1%}", "PGD-50 ≤ PGD-10")


def check_restarts(model, x, y, pgd10: float, *, eps, tol, seed=0, batch_size=None) -> Check:
    """5. More random restarts (the worst of 5, fresh seeds, so that the comparison is not true
    by construction) do not raise accuracy over one PGD-10 run (``pgd10``)."""
    survived = torch.ones(len(y), dtype=torch.bool)
    for r in range(1, 6):
        survived &= correct_under(model, x, y, PGDAttack(10, 2 / 255), eps=eps,
                                  seed=seed + 1000 * r, batch_size=batch_size)
    acc = survived.float().mean().item()
    return Check("more random restarts do not raise accuracy", acc <= pgd10 + tol,
                 f"PGD-10 {pgd10:.1%}, worst of 5 restarts {acc:.1%}", "restarts ≤ single run")


def check_fgsm_weaker(model, x, y, pgd10: float, *, eps, tol, seed=0, batch_size=None) -> Check:
    """6. One FGSM step is not stronger than PGD-10 (``pgd10``)."""
    acc = correct_under(model, x, y, "fgsm", eps=eps, seed=seed,
                        batch_size=batch_size).float().mean().item()
    return Check("one FGSM step is not stronger than PGD", pgd10 <= acc + tol,
                 f"FGSM {acc:.1%}, PGD-10 {pgd10:.1%}", "PGD-10 ≤ FGSM")


def check_worst_case(correct: dict[str, torch.Tensor]) -> Check:
    """7. The per-example worst case is at most every single attack's accuracy (``correct``:
    the per-example results of the report's attacks)."""
    worst = torch.stack(list(correct.values())).all(0).float().mean().item()
    singles = {k: v.float().mean().item() for k, v in correct.items()}
    return Check("worst case ≤ every single attack",
                 all(worst <= a + 1e-12 for a in singles.values()),
                 f"worst case {worst:.1%}, lowest single attack {min(singles.values()):.1%}",
                 "worst ≤ each")


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
                  seed: int = 0, batch_size: int | None = None, correct: dict | None = None,
                  max_zero_grad: float = 0.01, unbounded_max: float = 0.02) -> list[Check]:
    """The checks a trustworthy robustness evaluation passes (Carlini et al., "On Evaluating
    Adversarial Robustness", 2019; Athalye et al., ICML 2018), on the images ``x``: the seven
    ``check_*`` functions above, in their order (the last one given ``correct``, the
    per-example results of the report's attacks).

    "Does not raise" allows a tolerance of max(1 %, 3 examples) for the randomness of the
    starts. A model with a masked gradient fails 2 and 3 (and often 1 and 6).
    """
    tol = max(0.01, 3 / max(len(y), 1))
    kw = dict(seed=seed, batch_size=batch_size)
    pgd10 = _pgd_accuracy(model, x, y, eps=eps, steps=10, step_size=2 / 255, **kw)
    checks = [
        check_falls_with_eps(model, x, y, eps=eps, tol=tol, **kw),
        check_unbounded(model, x, y, most=unbounded_max, **kw),
        check_gradients(model, x, y, most=max_zero_grad, batch_size=batch_size),
        check_more_steps(model, x, y, pgd10, eps=eps, tol=tol, **kw),
        check_restarts(model, x, y, pgd10, eps=eps, tol=tol, **kw),
        check_fgsm_weaker(model, x, y, pgd10, eps=eps, tol=tol, **kw),
    ]
    if correct:
        checks.append(check_worst_case(correct))
    return checks


# ------------------------------------------------------------------------------------ report
@dataclass
class Report:
    """Accuracy under each attack, the per-example worst case, timings and sanity checks."""
    n: int
    eps: float
    accuracy: dict[str, float]            # attack -> accuracy; "worst_case" included
    seconds: dict[str, float]             # attack -> wall time; "checks" included
    checks: list[Check] = field(default_factory=list)
    correct: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    protocol: str = ""                    # the PROTOCOLS entry measured ("": none named)

    @property
    def ok(self) -> bool:
        """True if every sanity check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        """Everything but the per-example tensors, JSON-ready."""
        return {"protocol": self.protocol or None, "n": self.n, "eps": self.eps,
                "accuracy": dict(self.accuracy), "seconds": dict(self.seconds), "ok": self.ok,
                "checks": [vars(c).copy() for c in self.checks]}

    def headline(self) -> str:
        """What was measured: the protocol (if one), the images, the budget."""
        what = f"{self.n} test images, eps = {self.eps * 255:.3g}/255"
        if self.protocol in PROTOCOLS:
            return f"{PROTOCOLS[self.protocol].title}: {what}"
        return what

    def table(self) -> str:
        """A Markdown table: one row per attack."""
        rows = ["| attack | accuracy | seconds |", "|---|---:|---:|"]
        for name, acc in self.accuracy.items():
            secs = self.seconds.get(name)
            rows.append(f"| {attack_title(name)} | {acc:.1%} | "
                        f"{'' if secs is None else f'{secs:.1f}'} |")
        return "\n".join(rows)

    def __str__(self) -> str:
        head = f"Robustness report, {self.headline()}"
        lines = [head, self.table()]
        if self.checks:
            lines += ["", "Sanity checks: " + self._verdict()] + [c.line() for c in self.checks]
        return "\n".join(lines)

    def _verdict(self) -> str:
        if self.ok:
            return "all passed"
        return (f"⚠ {len(self.failed)} FAILED: the robust accuracies above are not "
                f"trustworthy (gradient masking or a broken attack?)")

    def to_markdown(self) -> str:
        """The report as Markdown: the table, then the checks as a list."""
        lines = [f"**Robustness report**, {self.headline()}",
                 "", self.table()]
        if self.checks:
            lines += ["", "**Sanity checks**: " + self._verdict(), ""]
            lines += [f"- {c.line()}" for c in self.checks]
        return "\n".join(lines)

    _repr_markdown_ = to_markdown  # Jupyter shows the report as Markdown


def robustness_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                      attacks=("clean", "pgd20", "cw", "aa_fast"), eps: float = 8 / 255,
                      batch_size: int | None = None, seed: int = 0, checks: bool = True,
                      n_check: int | None = 200, protocol: str = "") -> Report:
    """Accuracy under each attack on (x, y), the per-example worst case over all of them (an
    example counts as robust only if it survives every attack), and the sanity checks of
    ``sanity_checks`` on the first ``n_check`` images (None: all). ``protocol``: the name of
    the ``PROTOCOLS`` entry the arguments follow, for the report's label (see
    :func:`protocol_report`)."""
    for name in attacks:
        attack_function(name)  # an unknown name raises before any attack runs
    correct, accuracy, seconds = {}, {}, {}
    for name in attacks:
        t0 = time.perf_counter()
        correct[name] = correct_under(model, x, y, name, eps=eps, batch_size=batch_size,
                                      seed=seed)
        seconds[name] = time.perf_counter() - t0
        accuracy[name] = correct[name].float().mean().item()
    if correct:
        accuracy["worst_case"] = torch.stack(list(correct.values())).all(0).float().mean().item()
    found = []
    if checks:
        t0 = time.perf_counter()
        k = len(y) if n_check is None else min(n_check, len(y))
        found = sanity_checks(model, x[:k], y[:k], eps=eps, seed=seed, batch_size=batch_size,
                              correct={a: c for a, c in correct.items()})
        seconds["checks"] = time.perf_counter() - t0
    return Report(len(y), eps, accuracy, seconds, found, correct, protocol)


# --------------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class Protocol:
    """A whole evaluation: the budget, which test images, which attacks."""
    name: str
    eps: float
    n: int | None                         # the first n test images (None: every one)
    attacks: tuple
    title: str

    def images(self, x: torch.Tensor, y: torch.Tensor):
        """The test images (and labels) the protocol evaluates, of the test split (x, y)."""
        k = len(y) if self.n is None else min(self.n, len(y))
        return x[:k], y[:k]


PROTOCOLS: dict[str, Protocol] = {
    "standard": Protocol("standard", 8 / 255, None, ("clean", "pgd20", "cw", "aa_standard"),
                         "standard protocol (eps = 8/255, every test image)"),
    "authors": Protocol("authors", 0.031, 1000, ("clean", "aa_standard"),
                        "the DYNAT authors' protocol (standard AutoAttack at eps = 0.031 on "
                        "the first 1,000 test images)"),
}


def protocol_report(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor,
                    protocol: str = "standard", *, attacks=None, **options) -> Report:
    """``robustness_report`` as protocol ``protocol`` (a key of ``PROTOCOLS``) measures it, on
    its share of the test split (x_test, y_test), labelled with it. ``attacks`` replaces the
    protocol's attacks (the report lists those it ran); ``options`` go to the report."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}. Valid: {', '.join(PROTOCOLS)}.")
    chosen = PROTOCOLS[protocol]
    x, y = chosen.images(x_test, y_test)
    return robustness_report(model, x, y, attacks=tuple(attacks or chosen.attacks),
                             eps=chosen.eps, protocol=protocol, **options)


# ------------------------------------------------------------------ choosing a kept checkpoint
@dataclass
class Pick:
    """Which of a run's kept epochs ``pick_best`` chose, and why: its accuracy under
    ``attack`` on ``n`` held-out training images, and every candidate's."""
    epoch: int
    attack: str
    n: int
    accuracy: dict[int, float]            # epoch -> held-out accuracy under ``attack``

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "attack": self.attack, "n_holdout": self.n,
                "holdout_accuracy": {str(k): v for k, v in self.accuracy.items()}}


def pick_best(candidates, x_holdout: torch.Tensor, y_holdout: torch.Tensor, *,
              attack: str = "pgd-10", eps: float = 8 / 255, seed: int = 0,
              batch_size: int | None = None) -> Pick:
    """The epoch whose weights are most accurate under ``attack`` on held-out training images
    (x_holdout, y_holdout): images the run never trained on, and never the test set, whose
    accuracy would then overstate the chosen model's. Ties go to the later epoch.

    ``candidates``: epoch -> the model, or a function returning it (so that only one of
    several large networks is in memory at a time).
    """
    if len(y_holdout) == 0:
        raise ValueError("No held-out images to choose a checkpoint by: train with n_holdout > 0 "
                         "(--n-holdout; the paper profile holds out 1,000).")
    if not candidates:
        raise ValueError("No kept checkpoints to choose from: train with keep_last > 1.")
    accuracy = {}
    for epoch, model in sorted(candidates.items()):
        model = model() if not isinstance(model, nn.Module) else model
        accuracy[epoch] = correct_under(model, x_holdout, y_holdout, attack, eps=eps, seed=seed,
                                        batch_size=batch_size).float().mean().item()
    best = max(accuracy, key=lambda e: (accuracy[e], e))
    return Pick(best, attack, len(y_holdout), accuracy)

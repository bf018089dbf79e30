"""L-inf attacks on models that take images in [0, 1].

All attacks run the model in eval mode and restore its mode afterwards, take gradients with
respect to the input only (``torch.autograd.grad``; parameter ``.grad`` is never touched), and
return detached tensors.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES = ("ce", "cw", "kl")
RANDOM_STARTS = ("uniform", "gaussian", None)


# ------------------------------------------------------------------------------ input checks
def check_images(x: torch.Tensor) -> None:
    """Raise if ``x`` is not a non-empty float NCHW batch of finite images in [0, 1].

    NaN needs its own test: every comparison with NaN is False, so NaN images would pass a
    range check -- and NaN logits make ``argmax`` answer class 0, a silently wrong accuracy.
    One host synchronization."""
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 4:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"Expected float images of shape (N, C, H, W), got {shape}. "
                         f"Use dynat_lite.data to load images as float tensors in [0, 1].")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        raise ValueError(f"Images of shape {tuple(x.shape)} look channels-last (N, H, W, C); "
                         f"the models take (N, C, H, W): pass x.permute(0, 3, 1, 2).")
    if x.numel() == 0:
        raise ValueError(f"No images: the batch has shape {tuple(x.shape)}.")
    lo, hi = torch.stack([x.detach().min(), x.detach().max()]).float().tolist()
    if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
        bad = int((~torch.isfinite(x.detach())).sum())
        raise ValueError(f"Images hold {bad} non-finite value(s) (NaN or ±inf) among "
                         f"{x.numel()}: a model's output on them means nothing. Find where they "
                         f"came from (a division by zero, a corrupt file) and fix or drop them.")
    if lo < 0 or hi > 1:
        raise ValueError(f"Images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]. "
                         f"Divide uint8 images by 255; do not normalize outside the model "
                         f"(every dynat_lite model normalizes inside itself).")


def check_budget(eps: float, step_size: float, steps: int) -> None:
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must lie in [0, 1] (images are in [0, 1]; 8/255 = 0.031 is "
                         f"usual), got {eps}.")
    if not 0 <= step_size <= 1:
        raise ValueError(f"step_size must lie in [0, 1] (2/255 is usual), got {step_size}.")
    if not isinstance(steps, int) or not 0 <= steps <= 10_000:
        raise ValueError(f"steps must be an integer in [0, 10000], got {steps!r}.")


def _check_labels(x: torch.Tensor, y: torch.Tensor, model: nn.Module | None = None) -> None:
    """Integer labels, one per image, each a class the model scores (one host sync)."""
    if not torch.is_tensor(y) or y.shape != (len(x),) or y.is_floating_point():
        raise ValueError(f"Labels must be an integer tensor of shape ({len(x)},), got "
                         f"{getattr(y, 'dtype', type(y))} {tuple(getattr(y, 'shape', ()))}.")
    lo, hi = torch.stack([y.min(), y.max()]).tolist()
    k = _num_outputs(model) if model is not None else None
    if lo < 0 or (k is not None and hi >= k):
        classes = f"[0, {k})" if k is not None else "[0, number of classes)"
        raise ValueError(f"Labels must lie in {classes}"
                         f"{' (the model scores %d classes)' % k if k is not None else ''}, "
                         f"got values in [{lo}, {hi}].")


def _num_outputs(model: nn.Module) -> int | None:
    """How many classes ``model`` scores: the outputs of its last linear layer (None: none)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def _check_model_dtype(model: nn.Module, x: torch.Tensor) -> None:
    """Images in the dtype of the model's weights (float64 images meet float32 weights when
    they come from numpy)."""
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if weight is not None and x.dtype != weight.dtype:
        raise ValueError(f"Images are {x.dtype} but the model's weights are {weight.dtype}: "
                         f"convert them with x.to({weight.dtype}) (numpy arrays are float64).")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run ``model`` in eval mode inside the block; restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------------ pieces
def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: str,
                clean_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example loss the attacker maximizes.

    "ce": cross-entropy to ``y``; "cw": the C&W margin max_{j != y} z_j - z_y; "kl": KL from
    the clean prediction ``clean_probs`` to the prediction at the adversarial point (TRADES).
    """
    logits = logits.float()
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "cw":
        true = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
        return others.max(dim=1).values - true
    if loss == "kl":
        return F.kl_div(F.log_softmax(logits, dim=1), clean_probs, reduction="none").sum(1)
    raise ValueError(f"Unknown attack loss {loss!r}. Valid: {', '.join(LOSSES)}.")


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    gen_device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=gen_device).to(x.device)


def _rand_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    gen_device = generator.device if generator is not None else x.device
    return torch.rand(x.shape, generator=generator, device=gen_device).to(x.device)


def random_start_point(x: torch.Tensor, eps: float, kind: str | None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Where PGD starts: x + U(-eps, eps), x + 0.001 N(0, I) (the DYNAT/TRADES code) or x."""
    if kind == "uniform":
        return x + (2 * _rand_like(x, generator) - 1) * eps
    if kind == "gaussian":
        return x + 0.001 * _randn_like(x, generator)
    if kind is None:
        return x.clone()
    raise ValueError(f"Unknown random_start {kind!r}. Valid: 'uniform', 'gaussian', None.")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Nearest point of the L-inf ball of radius eps around x that is also in [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


# ------------------------------------------------------------------------------------- PGD
def _validate(x, y, eps, step_size, steps, loss, model=None):
    check_images(x)
    if model is not None:
        _check_model_dtype(model, x)
    check_budget(eps, step_size, steps)
    if loss not in LOSSES:
        raise ValueError(f"Unknown attack loss {loss!r}. Valid: {', '.join(LOSSES)}.")
    if loss != "kl":
        _check_labels(x, y, model)


def _clean_probs(model, x, loss):
    if loss != "kl":
        return None
    with torch.no_grad():
        return F.softmax(model(x).float(), dim=1)


def pgd_path(model: nn.Module, x: torch.Tensor, y, start: torch.Tensor, *, eps: float,
             step_size: float, steps: int, loss: str = "ce", clean_probs=None
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """The PGD loop: every attack of the kit that iterates runs this one.

    From ``start`` (projected first), ``steps`` times: x' <- Proj(x' + step_size *
    sign(grad_x' loss)), projecting onto the eps-ball around ``x`` intersected with [0, 1].
    Yields ``(point, logits, per_example_loss)`` for each of the ``steps`` points, looked at
    before its step, then ``(last_point, None, None)``: ``steps + 1`` triples in all.

    Only the input's gradient is computed. No input checks, no change of the model's mode and
    no host synchronization: the callers (``pgd``, ``pgd_with_kappa``, ``pgd_iterates`` here,
    the fast attack of ``fast.py`` and its CUDA graph) do those.
    """
    x_adv = project(start, x, eps)
    for _ in range(steps):
        point = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(point)
            per_example = attack_loss(logits, y, loss, clean_probs)
            grad, = torch.autograd.grad(per_example.sum(), point)
        yield point.detach(), logits.detach(), per_example.detach()
        x_adv = project(point.detach() + step_size * grad.sign(), x, eps)
    yield x_adv, None, None


def pgd_endpoint(model: nn.Module, x: torch.Tensor, y, start: torch.Tensor, *, eps: float,
                 step_size: float, steps: int, loss: str = "ce",
                 clean_probs=None) -> torch.Tensor:
    """The last point of :func:`pgd_path`: the adversarial images."""
    for point, _, _ in pgd_path(model, x, y, start, eps=eps, step_size=step_size, steps=steps,
                                loss=loss, clean_probs=clean_probs):
        pass
    return point


def _start(model, x, y, *, eps, step_size, steps, loss, random_start, generator):
    """Check the arguments; return (x detached, PGD's start point, the clean probabilities
    that the KL loss needs). Call inside ``eval_mode(model)``."""
    _validate(x, y, eps, step_size, steps, loss, model)
    x = x.detach()
    clean_probs = _clean_probs(model, x, loss)
    return x, random_start_point(x, eps, random_start, generator), clean_probs


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, eps: float = 8 / 255,
        step_size: float = 2 / 255, steps: int = 10, loss: str = "ce",
        random_start: str | None = "uniform",
        generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD maximizing ``loss`` within ``eps`` of ``x``; returns the adversarial images.

    ``loss``: "ce" (cross-entropy to ``y``: ground truth or dynamic labels), "cw" (the margin
    loss), "kl" (KL from the model's clean prediction, ``y`` unused). ``random_start``:
    "uniform" (x + U(-eps, eps)), "gaussian" (x + 0.001 N(0, I), as the DYNAT code) or None.
    """
    with eval_mode(model):
        x, start, clean_probs = _start(model, x, y, eps=eps, step_size=step_size, steps=steps,
                                       loss=loss, random_start=random_start,
                                       generator=generator)
        return pgd_endpoint(model, x, y, start, eps=eps, step_size=step_size, steps=steps,
                            loss=loss, clean_probs=clean_probs)


def pgd_iterates(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *,
                 eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 loss: str = "ce", random_start: str | None = "uniform",
                 generator: torch.Generator | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """PGD one step at a time, for looking inside: yields ``(x_adv, loss_per_example)`` at the
    start point and after each step (``steps + 1`` pairs), the same points ``pgd`` visits."""
    with eval_mode(model):
        x, start, clean_probs = _start(model, x, y, eps=eps, step_size=step_size, steps=steps,
                                       loss=loss, random_start=random_start,
                                       generator=generator)
        for point, _, value in pgd_path(model, x, y, start, eps=eps, step_size=step_size,
                                        steps=steps, loss=loss, clean_probs=clean_probs):
            if value is None:  # the last point: its loss was never needed for a step
                with torch.no_grad():
                    value = attack_loss(model(point), y, loss, clean_probs)
            yield point, value


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
         eps: float = 8 / 255) -> torch.Tensor:
    """Fast Gradient Sign Method: one step of size eps from x along the sign of the CE gradient."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, loss="ce", random_start=None)


def kappa_path(model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, *,
               eps: float, step_size: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD-CE from ``start`` (:func:`pgd_path`) counting GAIRAT's kappa on the way: the
    iterates, each looked at before its step, at which the model still predicts ``y``."""
    kappa = torch.zeros(len(x), device=x.device)
    for point, logits, _ in pgd_path(model, x, y, start, eps=eps, step_size=step_size,
                                     steps=steps, loss="ce"):
        if logits is not None:
            kappa += (logits.argmax(1) == y).float()
    return point, kappa


def pgd_with_kappa(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                   random_start: str | None = "uniform",
                   generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD-CE that also returns GAIRAT's geometry value kappa: ``(x_adv, kappa)``.

    kappa[i] counts the PGD iterates (the start point and the next ``steps - 1`` points, each
    looked at before its step) at which the model still predicts ``y[i]``, as ``GA_PGD`` in the
    GAIRAT code (Zhang et al., ICLR 2021). A point far from the decision boundary survives all
    ``steps`` iterates (kappa = steps); one already misclassified has kappa = 0. The attack
    does not stop early, so ``x_adv`` is what ``pgd`` with the same arguments returns. kappa is
    a float tensor on x's device (no host synchronization).
    """
    with eval_mode(model):
        x, start, _ = _start(model, x, y, eps=eps, step_size=step_size, steps=steps, loss="ce",
                             random_start=random_start, generator=generator)
        return kappa_path(model, x, y, start, eps=eps, step_size=step_size, steps=steps)


@dataclass(frozen=True, eq=False)
class PGD:
    """A PGD attack with its budget bound: what a training loss runs as its inner maximization.

        attack = PGD(eps=8 / 255, step_size=2 / 255, steps=10, random_start="gaussian")
        x_adv = attack(model, x, labels)                  # maximize CE to labels
        x_adv = attack(model, x, None, loss="kl")         # TRADES' KL from the clean prediction
        x_adv, kappa = attack.with_kappa(model, x, labels)  # and GAIRAT's kappa

    The losses of ``methods`` take one as ``attack``; ``fast.FastPGD`` is the same attack made
    for the training step (no input checks, frozen parameters, a CUDA graph).
    """
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    random_start: str | None = "gaussian"
    generator: torch.Generator | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                 loss: str = "ce") -> torch.Tensor:
        return pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                   loss=loss, random_start=self.random_start, generator=self.generator)

    def with_kappa(self, model: nn.Module, x: torch.Tensor,
                   y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pgd_with_kappa(model, x, y, eps=self.eps, step_size=self.step_size,
                              steps=self.steps, random_start=self.random_start,
                              generator=self.generator)


def cw_inf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
           step_size: float = 0.003, steps: int = 30, random_start: str | None = "uniform",
           generator: torch.Generator | None = None) -> torch.Tensor:
    """C&W-inf as robustness papers report it (TRADES, MART, LBGAT, DYNAT): L-inf PGD on the
    C&W margin loss max_{j != y} z_j - z_y, 30 steps of 0.003 from a uniform random start.

    The margin loss attacks logits directly, so it is not fooled by a saturated softmax the way
    cross-entropy can be; a model much more robust to PGD-CE than to C&W-inf is suspect.
    """
    return pgd(model, x, y, eps=eps, step_size=step_size, steps=steps, loss="cw",
               random_start=random_start, generator=generator)


# ------------------------------------------------------------------------------- AutoAttack
AUTOATTACK_VERSIONS = ("standard", "fast")


def _autoattack_class():
    """AutoAttack's class from ``pyautoattack`` (pip) or upstream ``autoattack`` (git)."""
    try:
        from pyautoattack import AutoAttack
        return AutoAttack, "pyautoattack"
    except ImportError:
        pass
    try:
        from autoattack import AutoAttack
        return AutoAttack, "autoattack"
    except ImportError:
        raise ImportError("AutoAttack is not installed. Install it with "
                          "`pip install pyautoattack` (or upstream: pip install "
                          "git+https://github.com/fra31/auto-attack).") from None


def _build_autoattack(model: nn.Module, eps: float, version: str, seed: int, device,
                      n_target_classes: int):
    AutoAttack, package = _autoattack_class()
    fast = version == "fast"
    if package == "pyautoattack":
        if fast:
            adversary = AutoAttack(model, norm="Linf", eps=eps, version="custom", seed=seed,
                                   attacks=["apgd-ce", "apgd-t"], device=device)
        else:
            adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed,
                                   device=device)
    else:
        if fast:
            adversary = AutoAttack(model, norm="Linf", eps=eps, version="custom", seed=seed,
                                   attacks_to_run=["apgd-ce", "apgd-t"], device=device,
                                   verbose=False)
        else:
            adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed,
                                   device=device, verbose=False)
    adversary.verbose = False
    if fast:
        adversary.apgd.n_restarts = 1
        adversary.apgd_targeted.n_restarts = 1
        adversary.apgd_targeted.n_target_classes = n_target_classes
    return adversary, package


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
               version: str = "fast", batch_size: int = 500, seed: int = 0,
               n_target_classes: int = 3) -> torch.Tensor:
    """AutoAttack (Croce & Hein, ICML 2020) in L-inf; returns the adversarial images.

    ``version="standard"``: APGD-CE, APGD-T (9 target classes), FAB-T and Square (5000
    queries) -- the benchmark everyone reports, and slow on a CPU. ``version="fast"``: APGD-CE
    (100 iterations, 1 restart) and APGD-T (100 iterations against the ``n_target_classes``
    most likely wrong classes), the two attacks that do almost all the work against models
    without gradient masking; a CPU can afford it. Each attack runs only on the points the
    previous ones did not break. Runs in float32 (autocast off) with the model in eval mode.
    Uses ``pyautoattack`` if it is installed, upstream ``autoattack`` otherwise.
    """
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"Unknown AutoAttack version {version!r}. "
                         f"Valid: {', '.join(AUTOATTACK_VERSIONS)}.")
    check_images(x)
    check_budget(eps, 0, 0)
    _check_labels(x, y, model)
    device = next(model.parameters()).device
    # Contiguous NCHW: AutoAttack calls ``.view`` on the input's gradient, which fails when the
    # images carry channels-last strides (e.g. permuted from NHWC arrays).
    x, y = x.detach().float().to(device).contiguous(), y.to(device)
    with eval_mode(model), torch.autocast(device.type, enabled=False):
        adversary, package = _build_autoattack(model, eps, version, seed, device,
                                               n_target_classes)
        logger = __import__("logging").getLogger("auto-attack")
        old_level = logger.level
        logger.setLevel("ERROR")  # AutoAttack logs every batch at DEBUG/INFO
        try:
            if package == "pyautoattack":
                x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
            else:
                x_adv = adversary.run_standard_evaluation(x, y, bs=batch_size)
        finally:
            logger.setLevel(old_level)
    return project(x_adv.detach().float(), x, eps)

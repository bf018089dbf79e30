"""Is the target learning? Per-step diagnostics of a training run, and the collapse rule.

DYNAT's target learns from the guide's labels. While the guide is untrained those labels are
weak: near one class for every image. A target can learn that one class and stay flat (near
uniform output) even after the labels turn good: it has *collapsed*. A target can also be
*capped*: it learns, but from labels that are often wrong. The two look alike in an accuracy
table and differ here.

Every ``Config.diagnose_every`` optimizer steps the training loop calls :func:`sample` on the
step's (augmented) clean batch, and keeps the record in the epoch's ``steps`` list:

- ``step``: optimizer steps done so far in the run;
- ``label_agreement``: share of the batch whose training label (the dynamic label for DYNAT,
  y for the methods without a guide) equals y;
- ``logit_spread``: the target's clean logits, their standard deviation over the classes,
  averaged over the batch (0 for a flat, uniform output);
- ``clean_accuracy``: share of the batch the target classifies correctly (clean);
- ``top_class_share``: share of the batch the target assigns to its most frequent class
  (1/C for balanced predictions, 1 when it predicts one class for all);
- ``adv_loss``: the method's target term on the step's adversarial batch (``target_loss``);
- ``dead_units``: share of the penultimate layer's units (the input of ``model.fc``) that are
  zero for every image of the batch.

The target is run in eval mode with no gradient for this, and put back in its mode: the
diagnostics draw no random numbers and update no BatchNorm statistics, so a run with them
computes the same weights as one without.

The collapse rule (:func:`is_collapsed`), fixed here and the same for every method: an epoch is
*collapsed* when, over its samples in the second half of the epoch, the median label agreement
is at least ``AGREEMENT_MIN`` (the labels carry the classes) while the median logit spread is
below ``SPREAD_MAX`` (the target's output stays nearly flat). ``SPREAD_MAX`` was set from runs of
the kit (the numbers are in the lesson on DYNAT training): a collapsed target's spread stays
well below it, a learning one's rises well above it within its first epoch. The training loop
flags an epoch only once the run has had ``MIN_STEPS`` optimizer steps (``epoch_collapsed``):
before that every target is still flat, and "not started yet" cannot be told from "stopped".

This module imports torch only; the training loop (``train``) calls it.
"""
from __future__ import annotations

import statistics

import torch
import torch.nn as nn

AGREEMENT_MIN = 0.5
SPREAD_MAX = 0.5
MIN_STEPS = 20
FIELDS = ("step", "label_agreement", "logit_spread", "clean_accuracy", "top_class_share",
          "adv_loss", "dead_units")


def logit_spread(logits: torch.Tensor) -> torch.Tensor:
    """Standard deviation of each row of ``logits`` over the classes, averaged over rows."""
    return logits.float().std(dim=1).mean()


def dead_units(features: torch.Tensor) -> torch.Tensor:
    """Share of the columns of ``features`` (images x units) that are <= 0 for every image."""
    return (features <= 0).all(dim=0).float().mean()


def top_class_share(logits: torch.Tensor) -> torch.Tensor:
    """Share of the rows whose argmax is the most frequent argmax."""
    predicted = logits.argmax(dim=1)
    return torch.bincount(predicted, minlength=logits.shape[1]).max() / len(predicted)


@torch.no_grad()
def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input of ``model.fc``, logits) of ``model`` on ``x``, in eval mode, no gradient; the
    model's train/eval mode is restored."""
    seen = {}
    hook = model.fc.register_forward_pre_hook(lambda _, args: seen.update(features=args[0]))
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        hook.remove()
        model.train(was_training)
    return seen["features"].float(), logits.float()


def sample(step: int, target: nn.Module, x: torch.Tensor, y: torch.Tensor, out: dict) -> dict:
    """One diagnostic record (see the module's docstring) after optimizer step ``step``, from
    the step's clean batch ``x``, ``y`` and the method's ``out`` dict."""
    features, logits = features_and_logits(target, x)
    zero = torch.zeros((), device=x.device)
    values = torch.stack([(out["labels"] == y).float().mean(), logit_spread(logits),
                          (logits.argmax(1) == y).float().mean(), top_class_share(logits),
                          out.get("target_loss", zero).float(), dead_units(features)])
    return {"step": step, **dict(zip(FIELDS[1:], values.tolist()))}


def probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The same measurements on a trained ``model`` and images ``x`` (e.g. test images), for a
    model whose run recorded no diagnostics: its logit spread, clean accuracy, top-class share,
    dead units, and how many classes it predicts at all. A collapsed target has a small spread
    and few classes; a capped one (trained on labels that are often wrong) a spread like its
    baselines' and most classes."""
    features, logits = features_and_logits(model, x)
    return {"logit_spread": logit_spread(logits).item(),
            "clean_accuracy": (logits.argmax(1) == y).float().mean().item(),
            "top_class_share": top_class_share(logits).item(),
            "dead_units": dead_units(features).item(),
            "classes_predicted": int(logits.argmax(1).unique().numel())}


def late_median(steps: list[dict], field: str) -> float:
    """The median of ``field`` over the second half of ``steps`` (the last sample if there is
    only one)."""
    return statistics.median(s[field] for s in steps[len(steps) // 2:])


def late_medians(steps: list[dict]) -> tuple[float, float]:
    """(median label agreement, median logit spread) over the second half of ``steps``: what
    the collapse rule reads."""
    return late_median(steps, "label_agreement"), late_median(steps, "logit_spread")


def is_collapsed(steps: list[dict]) -> bool:
    """The collapse rule (see the module's docstring) over one epoch's ``steps`` records: the
    samples of the epoch's second half (the last one if there is only one). False without
    samples."""
    if not steps:
        return False
    agreement, spread = late_medians(steps)
    return agreement >= AGREEMENT_MIN and spread < SPREAD_MAX


def epoch_collapsed(steps: list[dict]) -> bool:
    """The training loop's flag: :func:`is_collapsed`, for an epoch that ends at step
    ``MIN_STEPS`` or later (an earlier one is never flagged)."""
    return bool(steps) and steps[-1]["step"] >= MIN_STEPS and is_collapsed(steps)


def describe(record: dict) -> str:
    """A few words on an epoch's record for the epoch line: empty unless it collapsed."""
    if not record.get("collapsed"):
        return ""
    agreement, spread = late_medians(record["steps"])
    return (f"TARGET COLLAPSED (logit spread {spread:.2f} < {SPREAD_MAX} while its labels "
            f"agree with y on {agreement:.0%})")


def collapsed_epochs(history: list[dict]) -> list[int]:
    """The epochs of ``history`` that the rule flags (computed from each record's ``steps``
    with :func:`epoch_collapsed`, so the rule of this version is applied to any history)."""
    return [h["epoch"] for h in history if epoch_collapsed(h.get("steps", []))]


def collapse_summary(history: list[dict]) -> dict:
    """The rule applied to a whole run: ``collapsed_epochs`` (:func:`collapsed_epochs`), the
    number of ``epochs`` and of diagnostic ``samples``, the ``last_step`` sampled (None without
    samples) and a ``verdict`` in words ("epoch(s) 2, 3", "no epoch", or "no diagnostic samples
    recorded": then the rule could not look)."""
    steps = [s["step"] for h in history for s in h.get("steps") or []]
    epochs = collapsed_epochs(history)
    verdict = (f"epoch(s) {', '.join(map(str, epochs))}" if epochs else
               "no epoch" if steps else "no diagnostic samples recorded")
    return {"collapsed_epochs": epochs, "epochs": len(history), "samples": len(steps),
            "last_step": steps[-1] if steps else None, "verdict": verdict}

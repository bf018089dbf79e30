"""Dynamic labels, for looking at them: a recorder of the guide's labels on a fixed probe set,
and a guide trained alone while they are recorded.

The label itself, ``dynamic_labels`` (the guide's argmax), is part of the DYNAT step and lives
in ``methods``; ``predict`` lives beside the evaluation, in ``evaluate``. Both are importable
from here too, as the lessons call them.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import train as train_lib
from .evaluate import predict
from .methods import dynamic_labels

__all__ = ["LabelRecorder", "dynamic_labels", "predict", "train_guide"]


class LabelRecorder:
    """Keeps the guide's dynamic label and confidence on a fixed probe set over training.

    Call ``record(guide, step)`` whenever you like (e.g. every few steps); each call stores the
    labels (argmax) and the probability the guide gives them. ``labels``/``confidence`` are then
    (n_records, n_probe) tensors, ``steps`` the steps they were taken at.
    """

    def __init__(self, probe_x: torch.Tensor, probe_y: torch.Tensor):
        self.probe_x = probe_x
        self.probe_y = probe_y
        self.steps: list[int] = []
        self._labels: list[torch.Tensor] = []
        self._confidence: list[torch.Tensor] = []

    def record(self, guide: nn.Module, step: int) -> None:
        probs = predict(guide, self.probe_x)
        conf, lab = probs.max(dim=1)
        self.steps.append(int(step))
        self._labels.append(lab)
        self._confidence.append(conf)

    @property
    def labels(self) -> torch.Tensor:
        return torch.stack(self._labels)

    @property
    def confidence(self) -> torch.Tensor:
        return torch.stack(self._confidence)

    def agreement(self) -> torch.Tensor:
        """Fraction of probe images whose dynamic label equals the ground truth, per record."""
        return (self.labels == self.probe_y.cpu()[None]).float().mean(dim=1)

    def flips(self) -> torch.Tensor:
        """(n_records, n_probe) booleans: did the label change since the previous record?"""
        lab = self.labels
        out = torch.zeros_like(lab, dtype=torch.bool)
        out[1:] = lab[1:] != lab[:-1]
        return out

    def to_dict(self) -> dict:
        """Plain lists, ready for JSON."""
        return {"steps": self.steps, "labels": self.labels.tolist(),
                "confidence": self.confidence.tolist(), "truth": self.probe_y.tolist(),
                "agreement": self.agreement().tolist()}


def train_guide(cfg, probe_x: torch.Tensor, probe_y: torch.Tensor, *, every: int = 2,
                max_steps: int | None = None, dataset=None, progress=None,
                also: list[LabelRecorder] | tuple = ()):
    """Train a guide from scratch on clean images (``train.train_guide``) while recording its
    dynamic labels.

    The labels on ``probe_x`` are recorded before the first step and every ``every`` steps
    (and after the last). ``max_steps`` stops early (e.g. for a young, still-weak guide).
    ``also``: more LabelRecorders (e.g. on training images) that record at the same steps.
    Returns ``(guide, recorder)``; the guide comes back in eval mode.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer (steps between records), got "
                         f"{every!r}.")
    recorders = [LabelRecorder(probe_x, probe_y), *also]

    def record(guide: nn.Module, step: int, last: bool) -> None:
        if step % every == 0 or last:
            for r in recorders:
                r.record(guide, step)

    guide = train_lib.train_guide(cfg, dataset=dataset, max_steps=max_steps, on_step=record,
                                  progress=progress)
    return guide, recorders[0]

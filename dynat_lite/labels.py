"""Dynamic labels: the guide network's own prediction, handed to the target as its label."""
from __future__ import annotations

import torch
import torch.nn as nn


def dynamic_labels(guide_logits: torch.Tensor) -> torch.Tensor:
    """The guide's argmax class per example: a hard label with no gradient attached."""
    return guide_logits.detach().argmax(dim=1)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities of ``model`` on ``x`` in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        probs = [model(x[i:i + batch_size].to(device)).float().softmax(1).cpu()
                 for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(probs)


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

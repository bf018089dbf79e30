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


def train_guide(cfg, probe_x: torch.Tensor, probe_y: torch.Tensor, *, every: int = 2,
                max_steps: int | None = None, dataset=None, progress=None):
    """Train a guide from scratch on clean images while recording its dynamic labels.

    This is exactly the guide's half of DYNAT: CE(f_g(x), y) with ``cfg``'s optimizer, schedule,
    batches and seed. The target's term never sends gradient into the guide, so a guide trained
    alone gives the same kind of labels, step for step, as one trained inside DYNAT.

    The labels on ``probe_x`` are recorded before the first step and every ``every`` steps
    (and after the last). ``max_steps`` stops early (e.g. for a young, still-weak guide).
    Returns ``(guide, recorder)``; the guide comes back in eval mode.
    """
    import dataclasses

    import torch.nn.functional as F

    from . import data as data_lib
    from . import train as train_lib

    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer (steps between records), got {every!r}.")
    gcfg = dataclasses.replace(cfg, method="standard", model=cfg.guide_model)
    if dataset is None:
        dataset = data_lib.load(cfg.dataset, root=cfg.data_root, n_train=cfg.n_train,
                                n_test=cfg.n_test, seed=cfg.seed)
    device = train_lib.resolve_device(cfg.device)
    nets = train_lib.build(gcfg, dataset.num_classes, device)
    guide, optimizer = nets.target, train_lib.make_optimizer(gcfg, nets)
    batches = data_lib.Batches(dataset.x_train, dataset.y_train, cfg.batch_size, device=device,
                               augment=cfg.augment, seed=cfg.seed)
    total = len(batches) * cfg.epochs
    if max_steps is not None:
        total = min(total, max_steps)
    recorder = LabelRecorder(probe_x, probe_y)
    recorder.record(guide, 0)
    bar = progress(total=total, desc="guide") if progress is not None else None
    step = 0
    for epoch in range(cfg.epochs):
        for i, (x, y) in enumerate(batches.epoch(epoch)):
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = train_lib.learning_rate(gcfg, epoch + i / len(batches))
            guide.train()
            loss = F.cross_entropy(guide(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % every == 0 or step == total:
                recorder.record(guide, step)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return guide.eval(), recorder

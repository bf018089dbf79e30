"""Clean and robust accuracy of a model, batched, on any device, in float32."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .attacks import eval_mode, fgsm, pgd


def _pgd20(model, x, y, eps, generator):
    return pgd(model, x, y, eps=eps, step_size=2 / 255, steps=20, loss="ce",
               random_start="uniform", generator=generator)


def _pgd10(model, x, y, eps, generator):
    return pgd(model, x, y, eps=eps, step_size=2 / 255, steps=10, loss="ce",
               random_start="uniform", generator=generator)


# name -> attack(model, x, y, eps, generator) returning adversarial images
ATTACKS: dict[str, Callable] = {
    "clean": lambda model, x, y, eps, generator: x,
    "fgsm": lambda model, x, y, eps, generator: fgsm(model, x, y, eps=eps),
    "pgd10": _pgd10,
    "pgd20": _pgd20,
}


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def correct_under(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str = "clean", *,
                  eps: float = 8 / 255, batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """Per-example booleans (on the CPU): is the model right on the attacked image?

    Runs on the model's device, in float32 (autocast off), in eval mode; the attack's random
    start comes from a generator seeded with ``seed``.
    """
    if attack not in ATTACKS:
        raise ValueError(f"Unknown attack {attack!r}. Valid: {', '.join(ATTACKS)}.")
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    with eval_mode(model), torch.autocast(device.type, enabled=False):
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            x_adv = ATTACKS[attack](model, xb, yb, eps, generator)
            with torch.no_grad():
                out.append((model(x_adv).argmax(1) == yb).cpu())
    return torch.cat(out)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             attacks=("clean", "fgsm", "pgd20"), eps: float = 8 / 255, batch_size: int = 256,
             seed: int = 0) -> dict[str, float]:
    """Accuracy (a fraction in [0, 1]) under each attack, e.g. {"clean": .9, "pgd20": .4}."""
    return {name: correct_under(model, x, y, name, eps=eps, batch_size=batch_size,
                                seed=seed).float().mean().item()
            for name in attacks}

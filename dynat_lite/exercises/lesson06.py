"""The checkers of lesson 06's exercises (straight_through, zero_grad_fraction)."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from .. import evaluate
from .support import (_TinyNet, _Watch, _call, _classes, _fmt, _images, _require, _require_tensor)


def _check_straight_through(straight_through) -> str:
    verified = []
    for levels, seed in ((8, 17), (3, 18)):
        x = _images(seed, n=4)
        quantize = evaluate.Quantized(nn.Identity(), levels)
        reference = quantize(x)
        x_in = x.clone().requires_grad_(True)
        out = _call(straight_through, x_in, levels)
        _require_tensor(out, x.shape, "the result")
        _require(torch.equal(x_in.detach(), x), "straight_through changed x in place")
        value = out.detach()
        _require(not torch.allclose(value, x, atol=1e-12),
                 "the forward pass is not quantized: it must equal Quantized's "
                 "round(x·levels)/levels")
        wrong = int((~torch.isclose(value, reference, atol=1e-12)).sum())
        _require(wrong == 0, f"the forward differs from evaluate.Quantized's "
                             f"round(x·levels)/levels on {wrong} pixels (levels = {levels})")
        _require(out.requires_grad, "the result carries no gradient at all: only the rounding "
                                    "is detached, x itself must stay in the graph")
        upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed),
                               dtype=x.dtype)
        grad, = torch.autograd.grad(out, x_in, upstream, allow_unused=True)
        _require(grad is not None and bool(grad.abs().sum() > 0),
                 "the gradient is zero, as rounding's own: that is the mask. BPDA passes the "
                 "gradient straight through: x + (quantized − x).detach()")
        _require(torch.allclose(grad, upstream, atol=1e-12),
                 "the backward pass is not the identity: the gradient reaching x must equal the "
                 "one arriving at the output")
        verified.append(levels)
    return (f"forward equals evaluate.Quantized's rounding (levels {verified[0]} and "
            f"{verified[1]}), backward is the identity")


class _PartlyMasked(nn.Module):
    """``net`` behind a mask: images whose first pixel exceeds 0.5 are rounded (their input
    gradient is exactly zero); the others lose their right half (zero gradient there only)."""

    def __init__(self, net: nn.Module, levels: int = 4):
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x):
        keep = torch.zeros_like(x)
        keep[..., : x.shape[-1] // 2] = 1
        masked = (x[:, :1, :1, :1] > 0.5)
        return self.net(torch.where(masked, torch.round(x * self.levels) / self.levels,
                                    x * keep))


def _check_zero_grad_fraction(zero_grad_fraction) -> str:
    net = _TinyNet(19).float()
    x = _images(20, n=8, dtype=torch.float32)
    x[:, 0, 0, 0] = torch.tensor([0.9, 0.1, 0.2, 0.7, 0.3, 0.6, 0.4, 0.2])  # 3 of 8 masked
    y = _classes(21, n=8)
    cases = [("a plain network", net), ("evaluate.Quantized", evaluate.Quantized(net, 4)),
             ("a partly masked network", _PartlyMasked(net))]
    found = []
    for title, model in cases:
        model = copy.deepcopy(model).train()
        expected = evaluate.zero_gradient_fraction(copy.deepcopy(model), x, y)
        watch = _Watch({"model": model}, {"x": x, "y": y})
        out = _call(zero_grad_fraction, model, x, y)
        watch.inputs_untouched("zero_grad_fraction")
        watch.grads_untouched("zero_grad_fraction", "model")
        watch.mode_restored("zero_grad_fraction", "model")
        _require(watch.stats_unchanged("model"),
                 "zero_grad_fraction ran the model in train mode (its BatchNorm statistics "
                 "changed): evaluate in eval mode (model.eval()), then restore its mode")
        _require(isinstance(out, float) and not isinstance(out, bool),
                 f"zero_grad_fraction must return a Python float, got {type(out).__name__}"
                 + (": use .item()" if torch.is_tensor(out) else ""))
        _require(0 <= out <= 1, f"zero_grad_fraction returned {_fmt(out)} for {title}: return "
                                f"the fraction of examples (a count divided by the batch size)")
        _require(not math.isclose(out, 1 - expected, abs_tol=1e-6),
                 "this is the fraction of examples with a NON-zero gradient")
        if title == "a partly masked network":
            pixels = (3 + 5 * 0.5) / 8
            _require(not math.isclose(out, pixels, abs_tol=1e-6),
                     "this counts zero PIXELS: count EXAMPLES whose gradient is zero at every "
                     "pixel")
            _require(not math.isclose(out, 1.0, abs_tol=1e-6),
                     "an example counts when its gradient is zero at EVERY pixel (all), not at "
                     "some pixel (any)")
        _require(math.isclose(out, expected, abs_tol=1e-6),
                 f"returned {_fmt(out)} for {title}, not the fraction of examples with an "
                 f"all-zero input gradient: take the gradient of CE(model(x), y) with respect "
                 f"to x and count "
                 f"the examples whose gradient is 0 at every pixel")
        found.append(f"{expected:.3g} for {title}")
    return ", ".join(found) + " (equal to evaluate.zero_gradient_fraction); eval mode, mode " \
                              "restored, .grad untouched"

"""The checkers of lesson 01's exercises (dynamic_labels, label_agreement)."""
from __future__ import annotations

import math

import torch

from .. import labels
from .support import (_Watch, _call, _fmt, _require)


def _guide_logits() -> torch.Tensor:
    """Logits of 7 images over 10 classes, part of a graph (as a guide's output is)."""
    g = torch.Generator().manual_seed(6)
    w = torch.randn(7, 10, generator=g, dtype=torch.float64, requires_grad=True)
    return 3 * w


def _check_dynamic_labels(dynamic_labels) -> str:
    logits = _guide_logits()
    watch = _Watch({}, {"guide_logits": logits})
    out = _call(dynamic_labels, logits)
    _require(torch.is_tensor(out), f"dynamic_labels must return a tensor, got "
                                   f"{type(out).__name__}")
    _require(not out.requires_grad,
             "the labels carry gradient (requires_grad=True): hard labels come from argmax, "
             "and nothing of the target's loss may flow back into the guide through them")
    watch.inputs_untouched("dynamic_labels")
    _require(tuple(out.shape) != (logits.shape[1],),
             f"dynamic_labels returned {logits.shape[1]} values for {len(logits)} rows: take "
             f"the argmax over the classes (dim=1), not over the batch (dim=0)")
    _require(tuple(out.shape) == (len(logits),),
             f"dynamic_labels must return one label per row, shape ({len(logits)},), got "
             f"{tuple(out.shape)}: take the argmax over the classes (dim=1)")
    _require(not out.is_floating_point(),
             f"the labels are {out.dtype}: class indices are integers (argmax gives them)")
    reference = labels.dynamic_labels(logits)
    wrong = int((out.cpu() != reference).sum())
    _require(wrong == 0, f"{wrong} of {len(logits)} labels are not the class with the largest "
                         f"logit of their row")
    return (f"the argmax class of each of {len(logits)} rows, integer labels with no gradient "
            f"(equal to dynat_lite.labels.dynamic_labels)")


def _check_label_agreement(label_agreement) -> str:
    g = torch.Generator().manual_seed(7)
    y = torch.randint(0, 10, (20,), generator=g)
    lab = y.clone()
    lab[:6] = (y[:6] + 1 + torch.randint(0, 8, (6,), generator=g)) % 10  # 14 of 20 agree
    cases = [(lab, y), (y.clone(), y), ((y + 1) % 10, y)]
    for lab_, y_ in cases:
        expected = int((lab_ == y_).sum()) / len(y_)
        watch = _Watch({}, {"labels": lab_, "y": y_})
        out = _call(label_agreement, lab_, y_)
        watch.inputs_untouched("label_agreement")
        _require(isinstance(out, float) and not isinstance(out, bool),
                 f"label_agreement must return a Python float, got {type(out).__name__}"
                 + (": use .item()" if torch.is_tensor(out) else ""))
        agree = int((lab_ == y_).sum())
        _require(not (math.isclose(out, agree, rel_tol=1e-6) and agree > 1),
                 f"label_agreement returned {_fmt(out)}, the number of agreeing labels: return "
                 f"the fraction (divide by the number of labels)")
        _require(not math.isclose(out, 100 * expected, rel_tol=1e-6) or expected == 0,
                 f"label_agreement returned {_fmt(out)}, a percentage: return a fraction in "
                 f"[0, 1]")
        _require(0 <= out <= 1, f"label_agreement returned {_fmt(out)}, not a fraction in [0, 1]")
        _require(not (math.isclose(out, 1 - expected, abs_tol=1e-6) and expected != 0.5),
                 "label_agreement returned the fraction of labels that DIFFER from y")
        _require(math.isclose(out, expected, abs_tol=1e-6),
                 f"label_agreement returned {_fmt(out)} for {len(y_)} labels of which "
                 f"{agree} equal y")
    return "the fraction of labels equal to y as a Python float (some, all and none agreeing)"

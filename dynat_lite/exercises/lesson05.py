"""The checker of lesson 05's exercise (step_cost): the student's counts against the passes
counted, with forward hooks, on a real training step of the library (``train.train_epoch``)."""
from __future__ import annotations

import functools

import torch

from .. import data, methods, train
from .support import _TinyNet, _call, _classes, _images, _require

#: The methods the exercise asks about, and the keys of its answer.
METHODS = ("standard", "pgd_at", "dynat")
KEYS = ("target_forward", "target_backward", "guide_forward", "guide_backward")
#: The attack's step counts the checker asks about (0: an attack that does not move).
STEPS = (0, 1, 3, 10)


def _count_passes(net: torch.nn.Module, counts: dict, who: str):
    """Count every forward pass of ``net`` and every backward pass through it: a forward hook
    that, when the output is part of a graph, hooks the output's gradient (it arrives once per
    backward pass through the network)."""
    def backward(grad):
        counts[f"{who}_backward"] += 1

    def forward(module, inputs, output):
        counts[f"{who}_forward"] += 1
        if output.requires_grad:
            output.register_hook(backward)

    return net.register_forward_hook(forward)


@functools.lru_cache(maxsize=None)
def counted_passes(method: str, steps: int) -> dict[str, int]:
    """The passes of one training step of ``method`` (``train.train_epoch`` on one batch, the
    attack of ``steps`` PGD steps, no extra clean forward, no diagnostics), counted."""
    cfg = train.config("smoke", method=method, steps=steps, diagnose_every=0, batch_size=4,
                       target_clean_forward=False, device="cpu")
    uses_guide = methods.get(method).uses_guide
    nets = train.Nets(_TinyNet(41).float(), _TinyNet(42).float() if uses_guide else None)
    counts = dict.fromkeys(KEYS, 0)
    hooks = [_count_passes(nets.target, counts, "target")]
    if uses_guide:
        hooks.append(_count_passes(nets.guide, counts, "guide"))
    x, y = _images(43, n=4, dtype=torch.float32), _classes(44, n=4)
    batches = data.Batches(x, y, 4, augment=False, shuffle=False)
    try:
        train.train_epoch(cfg, nets, train.make_optimizer(cfg, nets), batches, 0)
    finally:
        for hook in hooks:
            hook.remove()
    return counts


def _answer(step_cost, method: str, steps: int) -> dict:
    out = _call(step_cost, method, steps)
    _require(isinstance(out, dict), f"step_cost must return a dict with the keys "
                                    f"{', '.join(KEYS)}, got {type(out).__name__}")
    missing = [k for k in KEYS if k not in out]
    _require(not missing, f"step_cost({method!r}, {steps}) has no {', '.join(missing)}: return "
                          f"all four counts, 0 for a network the method does not have")
    _require(all(isinstance(out[k], int) and not isinstance(out[k], bool) for k in KEYS),
             f"step_cost({method!r}, {steps}) must give whole numbers of passes (int), got "
             f"{', '.join(type(out[k]).__name__ for k in KEYS)}")
    return out


def _check_step_cost(step_cost) -> str:
    for method in METHODS:
        for steps in STEPS:
            counted, given = counted_passes(method, steps), _answer(step_cost, method, steps)
            if given != {k: given[k] for k in KEYS} or any(given[k] != counted[k] for k in KEYS):
                _diagnose(method, steps, {k: given[k] for k in KEYS}, counted)
    return (f"the passes of one training step of {', '.join(METHODS)} with {STEPS} PGD steps, "
            f"each equal to the count made with forward hooks on train.train_epoch")


def _diagnose(method: str, steps: int, given: dict, counted: dict) -> None:
    """Name the mistake whose answer is ``given`` (always raises)."""
    call = f"step_cost({method!r}, {steps})"
    attack = 0 if method == "standard" else steps
    has_guide = counted["guide_forward"] > 0
    _require(has_guide or given["guide_forward"] == given["guide_backward"] == 0,
             f"{call} counts guide passes, but {method} has no guide: only DYNAT trains one")
    _require(not (method == "standard" and given["target_forward"] > 1),
             f"{call}: standard training does not attack, whatever `steps` says: one forward "
             f"and one backward of the target on the clean batch")
    _require(given["target_forward"] != attack,
             f"{call} counts only the attack's forward passes: after the attack the target is "
             f"trained on x_adv, one more forward (and one more backward)")
    _require(not (attack > 0 and given["target_backward"] <= 1),
             f"{call}: each PGD step takes the gradient of the loss with respect to the input, "
             f"a backward pass through the target (it computes no weight gradients, but it "
             f"costs about as much)")
    _require(given["target_backward"] != attack,
             f"{call} counts only the attack's backward passes: training the target on x_adv "
             f"adds one more")
    if has_guide:
        _require(not (attack > 0 and given["guide_forward"] == attack + 1),
                 f"{call} runs the guide at every PGD step, as the authors' loop does: the "
                 f"library's step computes the dynamic labels once per batch, before the attack, "
                 f"from the guide's one forward pass")
        _require(given["guide_backward"] != 0,
                 f"{call}: the guide is trained in the same step, CE(guide(x), y) is "
                 f"backpropagated through it: one backward pass")
    wrong = [k for k in KEYS if given[k] != counted[k]]
    _require(False, f"{call}: {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not what "
                    f"the library's step runs: count per network the attack's passes (forward "
                    f"and input gradient per step) and the training passes (forward and backward "
                    f"of each network it trains)")

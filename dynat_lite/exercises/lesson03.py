"""The checkers of lesson 03's exercises (dynat_loss, detect_collapse)."""
from __future__ import annotations

import copy
import math
import statistics

import torch
import torch.nn.functional as F

from .. import attacks, diagnostics, methods, train
from .support import (ExerciseError, _StudentRaised, _TinyNet, _Watch, _call, _classes, _fmt,
    _images, _require)


class _DynatCase:
    """A guide and a target in train mode, a batch whose ground truth differs from the guide's
    train-mode labels, which differ from its eval-mode labels: every mix-up shows."""

    EPS, STEP, STEPS = 0.06, 0.025, 3

    def __init__(self):
        self.guide, self.target = _TinyNet(27).train(), _TinyNet(12).train()
        self.x = _images(13, n=8)
        self.y = _classes(14, n=8)
        with torch.no_grad():
            guide = copy.deepcopy(self.guide)
            self.labels = guide(self.x).argmax(1)
            # from the guide in eval mode, before or after its train-mode pass updated BatchNorm
            self.labels_eval = [copy.deepcopy(self.guide).eval()(self.x).argmax(1),
                                guide.eval()(self.x).argmax(1)]

    def nets(self):
        return copy.deepcopy(self.guide), copy.deepcopy(self.target)

    def loss(self, beta, attack_labels=None, target_labels=None, target_on_clean=False,
             target_eval=False, guide_beta=False):
        """DYNAT's loss, or a variant of it with one mistake (for naming the mistake)."""
        guide, target = self.nets()
        guide_logits = guide(self.x)
        attack_labels = self.labels if attack_labels is None else attack_labels
        target_labels = self.labels if target_labels is None else target_labels
        x_adv = attacks.pgd(target, self.x, attack_labels, eps=self.EPS, step_size=self.STEP,
                            steps=self.STEPS, random_start=None)
        target.train(not target_eval)
        target_term = F.cross_entropy(target(self.x if target_on_clean else x_adv), target_labels)
        guide_term = F.cross_entropy(guide_logits, self.y)
        return (beta if guide_beta else 1) * guide_term + beta * target_term


def _dynat_call(dynat_loss, case: _DynatCase, beta: float):
    """Call the student's dynat_loss on fresh copies; check the call's side effects."""
    guide, target = case.nets()
    watch = _Watch({"guide": guide, "target": target}, {"x": case.x, "y": case.y})
    out = _call(dynat_loss, guide, target, case.x, case.y, case.EPS, case.STEP, case.STEPS,
                beta)
    _require(not isinstance(out, (tuple, list)),
             "dynat_loss returned a tuple: return only the scalar loss")
    _require(torch.is_tensor(out) and out.dim() == 0,
             f"dynat_loss must return a scalar tensor, got "
             f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}: average the "
             f"cross-entropies over the batch")
    _require(out.requires_grad, "the loss carries no gradient: do not detach it or call .item()")
    watch.inputs_untouched("dynat_loss")
    for who in ("guide", "target"):
        watch.grads_untouched("dynat_loss", who)
        watch.mode_restored("dynat_loss", who)
    passes = watch.batches_tracked("target")
    _require(passes <= 1, f"the target ran in train mode during the attack ({passes} train-mode "
                          f"passes, BatchNorm counts them): attack it in eval mode")
    _require(passes == 1, "the target's loss CE(target(x_adv), labels) must run the target in "
                          "train mode (it is trained on it): switch it back before that pass")
    guide_passes = watch.batches_tracked("guide")
    _require(guide_passes >= 1,
             "the guide never ran in train mode: its CE(guide(x), y) trains it, so it runs in "
             "train mode")
    _require(guide_passes == 1,
             f"the guide ran {guide_passes} times in train mode (BatchNorm counts them, and "
             f"each pass moves its running statistics): one forward pass of the guide per "
             f"batch, whose logits give both the labels and its CE")
    return out, guide, target


def _check_dynat_loss(dynat_loss) -> str:
    case, beta = _DynatCase(), 2.0
    out, guide, target = _dynat_call(dynat_loss, case, beta)
    again, _, _ = _dynat_call(dynat_loss, case, beta)
    _require(torch.equal(out.detach(), again.detach()),
             "two calls with the same inputs gave different losses: no random start here, the "
             "attack starts at x")
    # The guide's gradient: that of CE(guide(x), y) alone, whatever beta.
    ref_guide = copy.deepcopy(case.guide)
    expected = torch.autograd.grad(F.cross_entropy(ref_guide(case.x), case.y),
                                   list(ref_guide.parameters()))
    zero, g0, _ = _dynat_call(dynat_loss, case, 0.0)
    got0 = torch.autograd.grad(zero, list(g0.parameters()), allow_unused=True)
    _require(all(g is not None and torch.allclose(g, e, atol=1e-9)
                 for g, e in zip(got0, expected)),
             "with beta = 0 the guide's gradient is not that of CE(guide(x), y): the guide's "
             "term is the cross-entropy of the guide in train mode on clean x against y")
    got = torch.autograd.grad(out, list(guide.parameters()), retain_graph=True,
                              allow_unused=True)
    _require(all(g is not None and torch.allclose(g, e, atol=1e-9)
                 for g, e in zip(got, expected)),
             "the target's term sends gradient into the guide: with beta > 0 the guide's "
             "gradient changes. The dynamic labels must be hard and carry no gradient "
             "(argmax of detached logits)")
    reference = methods.dynat_loss(*case.nets(), case.x, case.y, eps=case.EPS,
                                   step_size=case.STEP, steps=case.STEPS, beta=beta,
                                   random_start=None)[0]
    value = float(out.detach())
    if not math.isclose(value, float(reference.detach()), rel_tol=1e-9, abs_tol=1e-12):
        _diagnose_dynat_value(value, case, beta)
    _check_target_gradient(out, target, case, beta)
    return (f"equals dynat_lite.methods.dynat_loss (no random start, beta = {beta:g}): labels "
            f"from the train-mode guide (one pass), the attack on the eval-mode target, the "
            f"target trained in train mode; the guide's gradient is its CE's alone, the "
            f"target's that of beta·CE(target(x_adv), labels); .grad and modes as found")


def _check_target_gradient(out, target, case: _DynatCase, beta: float) -> None:
    """The gradient reaching the target's parameters is the library's."""
    ref_guide, ref_target = case.nets()
    reference = methods.dynat_loss(ref_guide, ref_target, case.x, case.y, eps=case.EPS,
                                   step_size=case.STEP, steps=case.STEPS, beta=beta,
                                   random_start=None)[0]
    expected = torch.autograd.grad(reference, list(ref_target.parameters()))
    got = torch.autograd.grad(out, list(target.parameters()), allow_unused=True)
    _require(any(g is not None and bool(g.abs().sum() > 0) for g in got),
             "no gradient reaches the target: its term beta·CE(target(x_adv), labels) trains "
             "it, so keep target(x_adv) in the graph (no .detach(), no torch.no_grad() around "
             "it; only the attack's x_adv is detached)")
    _require(all(g is not None and torch.allclose(g, e, atol=1e-9)
                 for g, e in zip(got, expected)),
             "the loss is right but the target's gradient is not that of "
             "beta·CE(target(x_adv), labels): compute that term from the target's train-mode "
             "output on x_adv, with differentiable operations")


def _diagnose_dynat_value(value: float, case: _DynatCase, beta: float) -> None:
    """Name the mistake whose loss is ``value`` (always raises)."""
    ref, y = float(case.loss(beta).detach()), case.y
    eval_labels = "the dynamic labels come from the guide in eval mode: DYNAT takes them from " \
                  "the same train-mode forward guide(x) that its CE term uses"
    variants = [(dict(attack_labels=lab, target_labels=lab), eval_labels)
                for lab in case.labels_eval] + [
        (dict(attack_labels=y, target_labels=y), "the target is attacked and trained on y "
         "where the dynamic labels belong: use labels = argmax of the guide's logits in both"),
        (dict(target_labels=y), "the target's loss uses y where the dynamic label belongs: "
         "CE(target(x_adv), labels)"),
        (dict(attack_labels=y), "the attack on the target aims at y where the dynamic label "
         "belongs: PGD maximizes CE(target(x'), labels)"),
        (dict(target_on_clean=True), "the target's loss is on clean x: it is trained on x_adv"),
        (dict(target_eval=True), "the target's loss runs in eval mode: switch it back to train "
         "mode before CE(target(x_adv), labels)"),
        (dict(guide_beta=True), "beta multiplies the guide's term too: only the target's term "
         "is weighted, CE(guide(x), y) + beta·CE(target(x_adv), labels)"),
    ]
    for kwargs, message in variants:
        variant = case.loss(beta, **kwargs)
        variant = float(variant.detach())
        _require(not math.isclose(value, variant, rel_tol=1e-9, abs_tol=1e-12), message)
    _require(not math.isclose(value, float(case.loss(1.0).detach()), rel_tol=1e-9),
             "the target's term is not multiplied by beta")
    _require(False, f"the loss differs from DYNAT's by {_fmt(abs(value - ref))}: CE(guide(x), y) "
                    f"+ beta·CE(target(x_adv), labels), labels = argmax guide(x), x_adv = PGD "
                    f"from x on the eval-mode target against the labels")


# The collapse rule (diagnostics.is_collapsed) on hand-made histories. Each epoch is built so
# that one mistake changes its verdict, and so that every way of taking a median (statistics,
# numpy, torch's lower median) gives the right verdict on the samples that count.
def _steps(first_step: int, agreement, spread) -> list[dict]:
    """One epoch's diagnostic samples: the given label agreements and logit spreads, the other
    fields filled in plausibly."""
    return [{"step": first_step + 2 * i, "label_agreement": a, "logit_spread": s,
             "clean_accuracy": min(a, 0.9), "top_class_share": 0.2 if s > 1 else 0.5,
             "adv_loss": 2.3 if s < 0.5 else 1.5, "dead_units": 0.5 if s < 0.5 else 0.0}
            for i, (a, s) in enumerate(zip(agreement, spread))]


#: Per epoch of the checker's history: (what it tests, label agreements, logit spreads); the
#: rule reads the second half, steps[len(steps) // 2:].
_COLLAPSE_EPOCHS = (
    ("an untrained start: weak labels, flat output (not collapsed: the labels carry nothing)",
     [0.1, 0.1, 0.1, 0.1], [0.05, 0.04, 0.03, 0.02]),
    ("labels turning good, the output going flat (collapsed in the second half only)",
     [0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9], [6.0, 6.0, 6.0, 6.0, 6.0, 0.2, 0.2, 0.2]),
    ("one large spread among small ones (collapsed: the median is small, the mean is not)",
     [0.95] * 6, [0.3, 0.3, 0.3, 0.1, 0.2, 3.0]),
    ("one sample of agreement 0 (collapsed: the median agreement is 0.6, the mean 0.43)",
     [0.9, 0.9, 0.9, 0.0, 0.6, 0.7], [0.1] * 6),
    ("a target that learns within the epoch: flat at first, a large spread in the second half "
     "(not collapsed)", [0.8, 0.85, 0.9, 0.9, 0.95, 0.97], [0.2, 0.3, 0.4, 3.0, 4.0, 5.0]),
    ("a single sample (collapsed: with one sample, that one is the second half)",
     [0.9], [0.1]),
    ("a median agreement of exactly 0.5 (collapsed: AGREEMENT_MIN itself counts)",
     [0.9, 0.9, 0.9, 0.45, 0.5, 0.9], [0.1] * 6),
    ("a median spread of exactly 0.5 (not collapsed: the spread must be below SPREAD_MAX)",
     [0.9] * 6, [0.1, 0.1, 0.1, 0.4, 0.5, 0.6]),
)


def _collapse_history(first_epoch: int = 1, empty_at: int | None = None) -> list[dict]:
    """Per-epoch records as ``train.fit`` writes them, without their "collapsed" flag (the
    function must compute the rule itself); ``empty_at``: an epoch (index) with no samples."""
    history, step = [], 1
    for i, (_, agreement, spread) in enumerate(_COLLAPSE_EPOCHS):
        steps = [] if i == empty_at else _steps(step, agreement, spread)
        step += 20
        history.append({"epoch": first_epoch + i, "loss": 2.0, "label_agreement":
                        sum(agreement) / len(agreement), "test_clean": 0.3, "test_pgd": 0.1,
                        "steps": steps})
    return history


def _collapse_rule(history, half=lambda s: s[len(s) // 2:], average=None, agree=None,
                   flat=None, agreement_counts=True, spread_counts=True):
    """The epochs of ``history`` flagged by the rule, or by a variant with one mistake."""
    average = average or statistics.median
    agree = agree or (lambda a: a >= diagnostics.AGREEMENT_MIN)
    flat = flat or (lambda s: s < diagnostics.SPREAD_MAX)
    out = []
    for record in history:
        late = half(record["steps"])
        if not late:
            continue
        ok_agreement = agree(average([s["label_agreement"] for s in late]))
        ok_spread = flat(average([s["logit_spread"] for s in late]))
        if (ok_agreement or not agreement_counts) and (ok_spread or not spread_counts):
            out.append(record["epoch"])
    return out


def _collapse_mistakes(history) -> list[tuple[list[int], str]]:
    """(the epochs a mistaken rule returns, the message naming the mistake)."""
    mean = statistics.fmean
    A, S = diagnostics.AGREEMENT_MIN, diagnostics.SPREAD_MAX
    variants = [
        (dict(average=mean), "the mean where the rule takes the median: one outlier (a "
         "single large spread, a single wrong batch) would decide the verdict"),
        (dict(half=lambda s: s), "this reads all of the epoch's samples: the rule reads only "
         "the second half, steps[len(steps) // 2:], where the labels have had time to turn"),
        (dict(half=lambda s: s[:len(s) // 2] or s), "this reads the first half of each epoch: the "
         "rule reads the second half, steps[len(steps) // 2:]"),
        (dict(half=lambda s: s[-1:]), "this reads only the last sample of each epoch: the rule "
         "takes the median over the second half, steps[len(steps) // 2:]"),
        (dict(half=lambda s: s[(len(s) + 1) // 2:]), "with one sample the second half is that "
         "sample: take steps[len(steps) // 2:] (an epoch of one sample can collapse)"),
        (dict(flat=lambda s: s > S), "the spread comparison is reversed: a collapsed target's "
         f"output is flat, its median logit spread BELOW SPREAD_MAX = {S}"),
        (dict(agree=lambda a: a < A), "the agreement comparison is reversed: a collapsed "
         f"target's labels are good, their median agreement with y AT LEAST AGREEMENT_MIN = "
         f"{A}"),
        (dict(flat=lambda s: s > S, agree=lambda a: a < A), "both comparisons are reversed: "
         "collapsed = median agreement >= AGREEMENT_MIN and median spread < SPREAD_MAX"),
        (dict(agree=lambda a: a > A), f"a median agreement of exactly {A} counts: the rule "
         f"asks for agreement >= AGREEMENT_MIN, not >"),
        (dict(flat=lambda s: s <= S), f"a median spread of exactly {S} does not count: the "
         f"rule asks for spread < SPREAD_MAX, not <="),
        (dict(agreement_counts=False), "this ignores the label agreement: a flat output under "
         "weak labels (the untrained start) is not collapse; the rule also asks for median "
         "agreement >= AGREEMENT_MIN"),
        (dict(spread_counts=False), "this ignores the logit spread: good labels alone are not "
         "collapse; the rule also asks for median spread < SPREAD_MAX"),
    ]
    out = []
    for kwargs, message in variants:
        try:
            out.append((_collapse_rule(history, **kwargs), message))
        except statistics.StatisticsError:  # a variant that fails on an epoch: no answer
            pass
    collapsed = _collapse_rule(history)
    out.append(([r["epoch"] for r in history if r["epoch"] not in collapsed],
                "these are the epochs that did NOT collapse"))
    out.append(([i for i, r in enumerate(history) if r["epoch"] in collapsed],
                "these are positions in the list, not the epoch numbers: return "
                "record[\"epoch\"] of each collapsed record"))
    return out


def _call_detect(detect_collapse, history, what: str, hint: str = ""):
    """The student's function on a deep copy of ``history``; checks that it left the copy
    unchanged and returned a list of epoch numbers. ``hint``: added when the function raises."""
    given = copy.deepcopy(history)
    try:
        out = _call(detect_collapse, given)
    except _StudentRaised as raised:
        cause = raised.__cause__
        if isinstance(cause, KeyError) and cause.args == ("collapsed",):
            raise ExerciseError("the records carry no \"collapsed\" flag here (the checker "
                                "leaves it out): compute the rule from record[\"steps\"]") \
                from None
        raise _StudentRaised(f"{raised} on {what}{hint}") from cause
    _require(given == history, f"detect_collapse changed the history it was given ({what}): "
                               f"read the records, do not sort or edit them")
    _require(isinstance(out, (list, tuple)),
             f"detect_collapse must return a list of epoch numbers, got {type(out).__name__}")
    _require(not (len(out) == len(history) and out and all(isinstance(v, bool) for v in out)),
             "detect_collapse returned one bool per epoch: return the epoch numbers "
             "(record[\"epoch\"]) of the collapsed epochs only")
    _require(all(isinstance(v, int) and not isinstance(v, bool) for v in out),
             f"detect_collapse must return epoch numbers (integers), got "
             f"{', '.join(type(v).__name__ for v in out[:3])}")
    return list(out)


def _check_detect_collapse(detect_collapse) -> str:
    history = _collapse_history()
    expected = _collapse_rule(history)
    one = next(r["epoch"] for r, e in zip(history, _COLLAPSE_EPOCHS) if len(e[1]) == 1)
    out = _call_detect(detect_collapse, history, f"a history of {len(history)} epochs",
                       hint=f" (epoch {one} has a single sample: its second half, "
                            f"steps[len(steps) // 2:], is that sample)")
    if out != expected:
        for variant, message in _collapse_mistakes(history):
            _require(out != variant, message)
        epochs = [r["epoch"] for r in history]
        _require(set(out) <= set(epochs), f"returned epoch numbers that are not in the history "
                                          f"({sorted(set(out) - set(epochs))}): return "
                                          f"record[\"epoch\"] of each collapsed record")
        _require(sorted(set(out)) != expected, f"returned the right epochs, but as {out}: each "
                                               f"once, in the history's order")
        i = next(i for i, e in enumerate(epochs) if (e in out) != (e in expected))
        _require(False, f"the verdict on epoch {epochs[i]} is wrong, {_COLLAPSE_EPOCHS[i][0]}: "
                        f"collapsed = over steps[len(steps) // 2:], median label agreement >= "
                        f"AGREEMENT_MIN and median logit spread < SPREAD_MAX")
    # An epoch without samples (diagnose_every = 0, or a history written before them).
    empty = _collapse_history(empty_at=1)
    out = _call_detect(detect_collapse, empty, "a history whose epoch 2 has an empty steps list",
                       hint=": an epoch without samples is not collapsed, skip it")
    _require(out == _collapse_rule(empty),
             "an epoch with an empty steps list has no samples and is not collapsed: leave it "
             "out")
    # A history that starts later (the records of epochs 4 to 11 of a run).
    later = _collapse_history(first_epoch=4)
    out = _call_detect(detect_collapse, later, "a history whose first record is epoch 4")
    _require(out == _collapse_rule(later),
             "on a history whose first record is epoch 4 the epoch numbers are wrong: return "
             "record[\"epoch\"], not a count from 1")
    return (f"epochs {expected} of {len(history)} collapsed by the kit's rule (median over the "
            f"second half, agreement >= {diagnostics.AGREEMENT_MIN}, spread < "
            f"{diagnostics.SPREAD_MAX}), as diagnostics.is_collapsed; an epoch without samples "
            f"left out; record[\"epoch\"] returned; the history untouched")


# ------------------------------------------------------------------------------ dynat_step
def _library_step(guide, target, optimizer, x, y, beta, variant: str | None = None):
    """One DYNAT step as ``train.train_epoch`` takes it (no random start), or a variant of it
    with one mistake: "accumulate" (no zero_grad), "twice" (two optimizer steps)."""
    guide.train()
    target.train()
    loss, _ = methods.dynat_loss(guide, target, x, y, eps=_DynatCase.EPS,
                                 step_size=_DynatCase.STEP, steps=_DynatCase.STEPS, beta=beta,
                                 random_start=None)
    if variant != "accumulate":
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if variant == "twice":
        optimizer.step()
    return loss.detach()


class _StepCase:
    """The networks of ``_DynatCase`` with their one SGD optimizer (``train.make_optimizer``)
    after one library step on another batch: momentum buffers filled, and .grad still holding
    that step's gradients, as inside a training run. Handed over in eval mode, as after an
    evaluation."""

    BETA = 2.0

    def __init__(self):
        base = _DynatCase()
        self.guide, self.target, self.x, self.y = base.guide, base.target, base.x, base.y
        self.x_before, self.y_before = _images(31, n=8), _classes(32, n=8)

    def prepared(self):
        guide, target = copy.deepcopy(self.guide), copy.deepcopy(self.target)
        optimizer = train.make_optimizer(train.Config(), train.Nets(target, guide))
        _library_step(guide, target, optimizer, self.x_before, self.y_before, self.BETA)
        guide.eval()
        target.eval()
        return guide, target, optimizer

    def updates(self, beta, variant=None):
        """(guide's, target's) parameter changes of the library's step or of a variant."""
        guide, target, optimizer = self.prepared()
        before = [_params(guide), _params(target)]
        loss = _library_step(guide, target, optimizer, self.x, self.y, beta, variant)
        return _changes(before, guide, target), loss


def _params(net) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _changes(before, guide, target) -> list[list[torch.Tensor]]:
    return [[p.detach() - b for p, b in zip(net.parameters(), old)]
            for net, old in zip((guide, target), before)]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(u, v, rtol=1e-7, atol=1e-10) for u, v in zip(a, b))


def _student_step(dynat_step, case: _StepCase, beta: float):
    """Call the student's dynat_step on a prepared copy; returns (updates, loss, watch)."""
    guide, target, optimizer = case.prepared()
    before = [_params(guide), _params(target)]
    left = [[p.grad for p in net.parameters()] for net in (guide, target)]
    watch = _Watch({"guide": guide, "target": target}, {"x": case.x, "y": case.y})
    for net, grads in zip((guide, target), left):  # the previous step's, not _Watch's
        for p, g in zip(net.parameters(), grads):
            p.grad = g
    out = _call(dynat_step, guide, target, optimizer, case.x, case.y, _DynatCase.EPS,
                _DynatCase.STEP, _DynatCase.STEPS, beta)
    watch.inputs_untouched("dynat_step")
    _require(torch.is_tensor(out) and out.dim() == 0,
             f"dynat_step must return the step's loss, a scalar tensor, got "
             f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}")
    _require(not out.requires_grad, "the returned loss still carries the step's graph (and "
                                    "keeps its memory alive): return loss.detach()")
    for who, net in (("guide", guide), ("target", target)):
        _require(net.training, f"dynat_step left the {who} in eval mode: a training step puts "
                               f"both networks in train mode (as train.train_epoch does with "
                               f"nets.train()) and leaves them so")
        passes = watch.batches_tracked(who)
        _require(passes <= 1, f"the {who} ran {passes} times in train mode during the step: "
                              f"compute the loss once, then backward() and step() on it")
    return _changes(before, guide, target), out, watch


def _check_dynat_step(dynat_step) -> str:
    case = _StepCase()
    try:
        (guide_update, target_update), out, _ = _student_step(dynat_step, case, case.BETA)
    except _StudentRaised as raised:
        _require("modified by an inplace operation" not in str(raised),
                 "optimizer.step() changed the parameters (in place) before loss.backward() "
                 "had used them, and backward failed: zero_grad, backward, then step")
        raise
    _require(any(bool(u.abs().sum() > 0) for u in guide_update + target_update),
             "no parameter changed: after loss.backward() call optimizer.step()")
    for who, update in (("guide", guide_update), ("target", target_update)):
        _require(any(bool(u.abs().sum() > 0) for u in update),
                 f"the {who}'s parameters did not change: the one optimizer holds both "
                 f"networks' parameters, and the loss trains both")
    (zero_beta_guide, _), _, _ = _student_step(dynat_step, case, 0.0)
    _require(_same(guide_update, zero_beta_guide),
             "the guide's update changes when the target's term is removed (beta = 0): the "
             "guide learns from CE(guide(x), y) alone, nothing of the target's term may reach it")
    (expected_guide, expected_target), loss = case.updates(case.BETA)
    _require(math.isclose(float(out), float(loss), rel_tol=1e-9),
             "the returned loss is not the step's DYNAT loss: return the loss whose backward() "
             "made the step, detached")
    if not (_same(guide_update, expected_guide) and _same(target_update, expected_target)):
        for variant, message in _STEP_MISTAKES:
            (g, t), _ = case.updates(case.BETA, variant)
            _require(not (_same(guide_update, g) and _same(target_update, t)), message)
    _require(_same(guide_update, expected_guide),
             "the guide's update differs from the library's step (train.train_epoch): one "
             "optimizer over both networks, zero_grad, backward of the DYNAT loss, step")
    _require(_same(target_update, expected_target),
             "the target's update differs from the library's step (train.train_epoch): one "
             "optimizer over both networks, zero_grad, backward of the DYNAT loss, step")
    return ("one SGD step (momentum, weight decay) of both networks equal to the library's "
            "training step: the networks put in train mode, one training pass each, the "
            "previous step's .grad cleared first, the guide's update independent of the "
            "target's term (beta = 0 gives the same), the loss returned detached")


#: (variant of ``_library_step``, the message naming it).
_STEP_MISTAKES = (
    ("accumulate", "the update adds the gradients that .grad held from the previous step: "
     "backward() adds to .grad, so clear it first (optimizer.zero_grad()), as every step "
     "of train.train_epoch does"),
    ("twice", "the parameters moved twice: one optimizer.step() per batch"),
)

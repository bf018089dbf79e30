"""The checkers of lesson 08's exercises (the capstone): a pre-registration that is complete and
fixed (``preregistration``), and the verdict on a claim from counts (``claim_verdict``), against
``evidence.plan_problems`` and the rule of ``evidence.claim_verdict``."""
from __future__ import annotations

import builtins
import dis
import inspect
import math

from .. import evidence, study
from .support import _call, _fmt, _require

#: The accuracies the capstone's study measures on its test images.
METRICS = ("clean", "pgd20")
#: The groups of runs the capstone can compare: the configurations of the strong-guide study.
GROUPS = tuple(dict.fromkeys(r.name.rsplit("-s", 1)[0] for r in study.get("strong-guide").runs))
VERDICTS = (evidence.SUPPORTED, evidence.NOT_SUPPORTED, evidence.INCONCLUSIVE)


# ------------------------------------------------------------------------- preregistration
def _globals_read(fn) -> list[str]:
    """Names that ``fn`` (and any function or comprehension inside it) reads from the notebook's
    globals, builtins aside."""
    names, todo = [], [fn.__code__]
    while todo:
        code = todo.pop()
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and not hasattr(builtins, ins.argval):
                names.append(ins.argval)
        todo += [c for c in code.co_consts if inspect.iscode(c)]
    return list(dict.fromkeys(names))


def _check_preregistration(preregistration) -> str:
    required = [p for p in inspect.signature(preregistration).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    _require(not required, f"preregistration must take no arguments (it has "
                           f"{', '.join(p.name for p in required)}): the plan is fixed before "
                           f"anything is measured, so nothing can be passed to it")
    read = _globals_read(preregistration)
    _require(not read, f"reads {', '.join(read)} from the notebook: write the plan's values "
                       f"into the function itself, so that nothing computed later (no result) "
                       f"can change it")
    plan = _call(preregistration)
    problems = evidence.plan_problems(plan, METRICS, GROUPS)
    _require(not problems, f"the plan is not complete: {problems[0]}" if problems else "")
    _require(_call(preregistration) == plan, "returned another plan when called again: the "
                                             "plan must be the same every time")
    a, b = plan["comparison"]
    return (f"a complete plan ({', '.join(evidence.PLAN_FIELDS)}) that reads nothing from the "
            f"notebook: is {plan['metric']} of {a} higher than of {b}? You predict: "
            f"{plan['prediction']}")


# --------------------------------------------------------------------------- claim_verdict
#: (k_a, n_a, k_b, n_b): a clear win, a clear loss, noise, different sizes, ties at 0 and n,
#: a margin just crossed, one image each.
_CASES = ((60, 100, 30, 100), (20, 100, 45, 100), (33, 64, 30, 64), (150, 500, 20, 100),
          (0, 64, 0, 64), (64, 64, 64, 64), (300, 1000, 255, 1000), (1, 1, 0, 1),
          (410, 1000, 90, 300))


def _reference(k_a, n_a, k_b, n_b) -> tuple[float, float, str]:
    p_a, p_b = k_a / n_a, k_b / n_b
    margin = evidence.difference_margin(p_a, p_b, n_a, n_b)
    verdict = {1: evidence.SUPPORTED, -1: evidence.NOT_SUPPORTED, 0: evidence.INCONCLUSIVE}[
        evidence._verdict(p_a - p_b, margin)]
    return p_a - p_b - margin, p_a - p_b + margin, verdict


def _mistaken(k_a, n_a, k_b, n_b) -> list[tuple[tuple[float, float], str]]:
    """(the interval a mistaken formula gives, the message naming the mistake)."""
    p_a, p_b = k_a / n_a, k_b / n_b
    d = p_a - p_b
    va, vb = p_a * (1 - p_a), p_b * (1 - p_b)
    pooled = (k_a + k_b) / (n_a + n_b)

    def around(m):
        return d - m, d + m

    return [
        (around(1.645 * math.sqrt(va / n_a + vb / n_b)), "this is the 90 % interval (z = "
         "1.645): a 95 % interval takes z = 1.96"),
        (around(math.sqrt(va / n_a + vb / n_b)), "the margin is the standard error alone: "
         "multiply it by z = 1.96"),
        (around(1.96 * (math.sqrt(va / n_a) + math.sqrt(vb / n_b))), "the two standard errors "
         "are added: their variances add, p_a(1−p_a)/n_a + p_b(1−p_b)/n_b, under one root"),
        (around(1.96 * math.sqrt(va / n_a)), "the margin has a's variance only: b's accuracy "
         "is measured on images too, add p_b(1−p_b)/n_b under the root"),
        (around(1.96 * math.sqrt((va + vb) / n_a)), "both variances are divided by n_a: b's "
         "by its own number of images, n_b"),
        (around(1.96 * math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))), "the margin "
         "uses the pooled accuracy (a test of 'no difference'): the kit's interval of the "
         "difference uses each group's own, p_a(1−p_a)/n_a + p_b(1−p_b)/n_b"),
        ((-d - 1.96 * math.sqrt(va / n_a + vb / n_b), -d + 1.96 * math.sqrt(va / n_a + vb / n_b)),
         "this is the interval of p_b − p_a: the claim is that a is higher, so the difference "
         "is p_a − p_b"),
    ]


def _answer(claim_verdict, k_a, n_a, k_b, n_b) -> tuple[float, float, str]:
    out = _call(claim_verdict, k_a, n_a, k_b, n_b)
    _require(isinstance(out, (tuple, list)) and len(out) == 3,
             f"claim_verdict must return three values (low, high, verdict), got "
             f"{type(out).__name__}{' of length %d' % len(out) if hasattr(out, '__len__') else ''}")
    low, high, verdict = out
    _require(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)),
             f"low and high must be Python floats, got {type(low).__name__} and "
             f"{type(high).__name__}: use float(...)")
    return float(low), float(high), verdict


def _close(a, b) -> bool:
    return all(math.isclose(u, v, abs_tol=1e-12) for u, v in zip(a, b))


def _check_claim_verdict(claim_verdict) -> str:
    for k_a, n_a, k_b, n_b in _CASES:
        low, high, verdict = _answer(claim_verdict, k_a, n_a, k_b, n_b)
        ref = _reference(k_a, n_a, k_b, n_b)
        what = f"a right on {k_a} of {n_a} images, b on {k_b} of {n_b}"
        if not _close((low, high), ref[:2]):
            _require(not _close((low, high), (100 * ref[0], 100 * ref[1])),
                     f"for {what} the bounds are in points: return proportions (a difference "
                     f"of accuracies in [0, 1])")
            _require(low <= high, f"for {what} low ({_fmt(low)}) is above high ({_fmt(high)}): "
                                  f"return (low, high, verdict)")
            for interval, message in _mistaken(k_a, n_a, k_b, n_b):
                _require(not _close((low, high), interval), f"{message} (for {what})")
            _require(False, f"for {what} the interval ({_fmt(low)}, {_fmt(high)}) is not the "
                            f"kit's: p_a − p_b ∓ 1.96·√(p_a(1−p_a)/n_a + p_b(1−p_b)/n_b), as "
                            f"evidence.difference_margin")
        _require(verdict in VERDICTS, f"the verdict must be one of "
                                      f"{', '.join(map(repr, VERDICTS))}, got {verdict!r}")
        if verdict != ref[2]:
            diff = k_a / n_a - k_b / n_b
            sign_only = verdict == (evidence.SUPPORTED if diff > 0 else evidence.NOT_SUPPORTED)
            _require(not sign_only, f"for {what} the verdict follows the sign of the "
                                    f"difference alone ({diff * 100:+.1f} points), but the "
                                    f"interval [{low * 100:+.1f}, {high * 100:+.1f}] holds 0: "
                                    f"within the noise, that is {ref[2]!r}")
            _require(False, f"for {what} the interval is [{low * 100:+.1f}, {high * 100:+.1f}] "
                            f"points and the verdict is {verdict!r}: supported when the whole "
                            f"interval is above 0, not supported when it is all below 0, else "
                            f"inconclusive")
    return (f"equals the kit's interval (evidence.difference_margin) and verdict on "
            f"{len(_CASES)} cases: clear wins and losses, noise, different numbers of images, "
            f"0 and n right, one image")

"""The checker of lesson 07's exercise (wilson_interval), against ``study.wilson_interval``."""
from __future__ import annotations

import math

from .. import study
from .support import ExerciseError, _StudentRaised, _call, _fmt, _require

#: (successes, n, z): a typical accuracy, the extremes 0 and n, one trial, another z, a large n.
_CASES = ((37, 100, 1.96), (400, 1000, 1.96), (0, 10, 1.96), (10, 10, 1.96), (1, 1, 1.96),
          (120, 300, 2.576), (3, 7, 1.0), (500_000, 1_000_000, 1.96))


def _reference(successes: int, n: int, z: float) -> tuple[float, float]:
    return study.wilson_interval(successes / n, n, z)


_WALD = ("this is the normal (Wald) interval p̂ ± z·√(p̂(1−p̂)/n), clamped or not: at 0 or n "
         "successes it shrinks to a point. Wilson's adds z²/(2n) to p̂, z²/(4n²) under the root, "
         "and divides both by 1 + z²/n")


def _mistaken(successes: int, n: int, z: float) -> list[tuple[tuple[float, float], str]]:
    """(the interval a mistaken formula gives, the message naming the mistake)."""
    p = successes / n
    wald = z * math.sqrt(p * (1 - p) / n)

    def wilson(centre_term, spread_term, denominator=1 + z * z / n):
        centre = (p + centre_term) / denominator
        half = z * math.sqrt(p * (1 - p) / n + spread_term) / denominator
        return centre - half, centre + half

    z2n, z4n2 = z * z / (2 * n), z * z / (4 * n * n)
    return [
        ((p - wald, p + wald), _WALD),
        ((max(0.0, p - wald), min(1.0, p + wald)), _WALD),
        (wilson(z2n, z4n2, denominator=1.0), "the centre and the half-width are not divided "
         "by 1 + z²/n"),
        (wilson(z * z / n, z4n2), "the centre adds z²/n to p̂: it is z²/(2n)"),
        (wilson(z / (2 * n), z / (4 * n * n), denominator=1 + z / n), "z appears where z² "
         "belongs: the formula's correction terms are z²/(2n), z²/(4n²) and z²/n"),
        (wilson(z2n, z * z / (4 * n)), "under the root the correction is z²/(4n²), not "
         "z²/(4n)"),
        (wilson(z2n, z4n2, denominator=1 + z * z / (2 * n)), "the denominator is 1 + z²/n, "
         "not 1 + z²/(2n)"),
    ]


def _interval(wilson_interval, successes: int, n: int, z: float) -> tuple[float, float]:
    out = _call(wilson_interval, successes, n, z)
    _require(isinstance(out, (tuple, list)) and len(out) == 2,
             f"wilson_interval must return a pair (low, high), got "
             f"{type(out).__name__}{' of length %d' % len(out) if hasattr(out, '__len__') else ''}")
    _require(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in out),
             f"the bounds must be Python floats, got "
             f"{', '.join(type(v).__name__ for v in out)}: use float(...)")
    return float(out[0]), float(out[1])


def _check_wilson_interval(wilson_interval) -> str:
    for successes, n, z in _CASES:
        lo, hi = _interval(wilson_interval, successes, n, z)
        ref = _reference(successes, n, z)
        if math.isclose(lo, ref[0], abs_tol=1e-12) and math.isclose(hi, ref[1], abs_tol=1e-12):
            continue
        what = f"{successes} of {n} (z = {z:g})"
        _require(not (math.isclose(lo, 100 * ref[0], abs_tol=1e-9)
                      and math.isclose(hi, 100 * ref[1], abs_tol=1e-9)),
                 f"for {what} the bounds are percentages: return proportions in [0, 1]")
        _require(not (z != 1.96 and _close((lo, hi), _reference(successes, n, 1.96))),
                 f"for {what} the interval is the one of z = 1.96: use the argument z")
        _require(lo <= hi, f"for {what} the low bound {_fmt(lo)} is above the high bound "
                           f"{_fmt(hi)}: return (low, high)")
        for interval, message in _mistaken(successes, n, z):
            _require(not _close((lo, hi), interval), f"{message} (for {what})")
        _require(False, f"for {what} the interval ({_fmt(lo)}, {_fmt(hi)}) is not Wilson's: "
                        f"(p̂ + z²/(2n) ± z·√(p̂(1−p̂)/n + z²/(4n²))) / (1 + z²/n), p̂ = "
                        f"successes / n")
    for n in range(1, 41):  # rounding puts Wilson's bounds a hair outside [0, 1] at 0 and n
        for successes in (0, n):
            lo, hi = _interval(wilson_interval, successes, n, 1.96)
            _require(0.0 <= lo <= hi <= 1.0,
                     f"for {successes} of {n} the interval ({lo!r}, {hi!r}) leaves [0, 1]: in "
                     f"exact arithmetic Wilson's bounds stay inside, but rounding pushes them a "
                     f"hair out at 0 and n successes; clamp them to [0, 1]")
    _check_no_trials(wilson_interval)
    return (f"equals study.wilson_interval on {len(_CASES)} cases (0 and n successes, one "
            f"trial, z = 1.96, 2.576 and 1, a million trials), inside [0, 1] at 0 and n "
            f"successes for n = 1 to 40, and raises ValueError for n = 0")


def _close(a, b) -> bool:
    return all(math.isclose(u, v, abs_tol=1e-12) for u, v in zip(a, b))


def _check_no_trials(wilson_interval) -> None:
    """n = 0 measures nothing: the function raises ValueError, as study.wilson_interval."""
    hint = ("with n = 0 there is no measurement and no interval: raise ValueError (\"an "
            "interval needs at least one trial\"), as study.wilson_interval does")
    try:
        out = _call(wilson_interval, 0, 0, 1.96)
    except _StudentRaised as raised:
        if isinstance(raised.__cause__, ValueError):
            return
        raise ExerciseError(f"{hint}; it raised {type(raised.__cause__).__name__} "
                            f"({raised.__cause__})") from None
    _require(False, f"{hint}; it returned {out!r}")

"""The evidence: each claim of the DYNAT paper (and the kit's own questions) stated so that a
study's summary rows can contradict it, with the rule that turns the numbers into a verdict --
supported, not supported, inconclusive (or, for collapse, collapses / does not collapse).

Rules: a difference counts only beyond its 95 % margin (``difference_margin``, the images of all
seeds pooled); "higher clean accuracy at comparable robustness" needs the clean difference above
its margin and the robust one not below its own (``clean_at_comparable_robustness``). The rows are
``study.summarize``'s; this module imports the diagnostics' collapse rule and the attacks'
titles, nothing that trains.

A claim of your own is *pre-registered* (lesson 08): its plan -- the claim, the metric, the two
groups of runs compared, the verdict you expect and why -- is fixed in the study's folder
(``freeze_plan``) before any of its runs has finished, and judged afterwards by the same rule
(``claim_verdict``).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from . import diagnostics
from .evaluate import ATTACK_TITLES

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _group(rows: list[dict], prefix: str) -> list[dict]:
    """The rows of the runs named ``prefix-s<seed>``."""
    return [r for r in rows if r["run"].rsplit("-s", 1)[0] == prefix]


def _images(row: dict, metric: str) -> int:
    """The test images ``metric`` was measured on in a summary row (an attack run on fewer
    images than the others records its own count, ``<metric>_n``)."""
    return row.get(f"{metric}_n", row["n_test"])


def counts(rows: list[dict], group: str, metric: str) -> tuple[int, int]:
    """(test images right, test images evaluated) of the runs ``group-s<seed>``, their seeds
    pooled: each run's accuracy times its images, rounded to the whole image it counts."""
    runs = _group(rows, group)
    return (sum(round(r[metric] * _images(r, metric)) for r in runs),
            sum(_images(r, metric) for r in runs))


def difference_margin(p: float, q: float, n_p: int, n_q: int, z: float = 1.96) -> float:
    """Half-width of the 95 % normal interval of the difference p - q of two independent binomial
    proportions measured on n_p and n_q images: differences smaller than this are noise."""
    return z * math.sqrt(p * (1 - p) / n_p + q * (1 - q) / n_q)


def compare_groups(rows: list[dict], a: str, b: str, metric: str) -> dict:
    """Mean ``metric`` of the runs ``a`` and ``b`` over their seeds, the difference a - b and its
    95 % margin (the images of all seeds pooled; seed-to-seed spread is reported beside it)."""
    ra, rb = _group(rows, a), _group(rows, b)
    if not ra or not rb:
        raise ValueError(f"No finished runs named {a!r} or {b!r} in the summary.")
    pa, pb = _mean(r[metric] for r in ra), _mean(r[metric] for r in rb)
    na, nb = sum(_images(r, metric) for r in ra), sum(_images(r, metric) for r in rb)
    spread = max(max(r[metric] for r in g) - min(r[metric] for r in g) for g in (ra, rb))
    return {"a": pa, "b": pb, "diff": pa - pb, "margin": difference_margin(pa, pb, na, nb),
            "seeds": min(len(ra), len(rb)), "seed_spread": spread}


def _verdict(diff: float, margin: float) -> int:
    """+1: clearly above zero, -1: clearly below, 0: within the noise."""
    return 1 if diff > margin else -1 if diff < -margin else 0


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def overfitting_evidence(rows: list[dict]) -> list[dict]:
    """Claim 1 from the overfitting study's summary rows: (a) PGD-AT overfits robustly -- in every
    seed its test PGD accuracy ends below its best by more than the noise of a difference of two
    accuracies on the evaluated images, while its training PGD accuracy has risen since that best
    epoch ("inconclusive" otherwise: see below); the best epoch here describes the shape of the
    test curve, no model is chosen by it; (b) DYNAT falls less -- its mean best-to-last drop is smaller than PGD-AT's by more
    than that noise."""
    def drops(prefix):
        out = []
        for r in _group(rows, prefix):
            n = r["n_eval"]
            margin = difference_margin(r["best_test_pgd"], r["last_test_pgd"], n, n)
            rising = r.get("last_train_pgd", 0) > r.get("train_pgd_at_best", 1)
            out.append((r["drop"], margin, rising))
        return out

    pgd, dyn = drops("pgd_at"), drops("dynat")
    overfits = [d > m and rising for d, m, rising in pgd]
    # No drop beyond the noise is not evidence against the claim: robust overfitting is an
    # effect of models that fit their training set robustly, which a study this small may not
    # train. So this study can support 1a or leave it open, never refute it.
    verdict_a = SUPPORTED if pgd and all(overfits) else INCONCLUSIVE
    measured_a = ("PGD-AT best-to-last drop in test PGD-10 accuracy per seed: "
                  + ", ".join(f"{_pct(d)} points (noise ±{_pct(m)}; train PGD-10 "
                              f"{'rising' if r else 'not rising'})" for d, m, r in pgd))
    mean_pgd, mean_dyn = _mean(d for d, _, _ in pgd), _mean(d for d, _, _ in dyn)
    margin = _mean(m for _, m, _ in pgd + dyn) / math.sqrt(2)  # a difference of two seed means
    if verdict_a != SUPPORTED:
        verdict_b = INCONCLUSIVE  # nothing to reduce at this scale
    else:
        verdict_b = {1: SUPPORTED, -1: NOT_SUPPORTED, 0: INCONCLUSIVE}[
            _verdict(mean_pgd - mean_dyn, margin)]
    measured_b = (f"mean drop over seeds: PGD-AT {_pct(mean_pgd)}, DYNAT {_pct(mean_dyn)} points "
                  f"(difference noise ±{_pct(margin)})")
    return [{"claim": "1a. PGD-AT (static labels) overfits robustly: test PGD accuracy peaks, "
                      "then falls while training PGD accuracy rises",
             "measured": measured_a, "verdict": verdict_a},
            {"claim": "1b. DYNAT (dynamic labels) overfits less than PGD-AT",
             "measured": measured_b, "verdict": verdict_b}]


def clean_at_comparable_robustness(rows: list[dict], name: str, baselines, robust: str
                                   ) -> tuple[str, str]:
    """``(measured, verdict)`` of "run ``name`` reaches higher clean accuracy than each of
    ``baselines`` ((run prefix, title) pairs) at comparable robustness": against one baseline it
    holds when the clean difference is above its margin and the robust one not below its own, it
    fails when either is below its margin; the claim is supported (not supported) when it holds
    (fails) against every baseline, else inconclusive."""
    parts, votes = [], []
    for base, title in baselines:
        c = compare_groups(rows, name, base, "clean")
        r = compare_groups(rows, name, base, robust)
        vc, vr = _verdict(c["diff"], c["margin"]), _verdict(r["diff"], r["margin"])
        votes.append(SUPPORTED if vc == 1 and vr >= 0 else
                     NOT_SUPPORTED if -1 in (vc, vr) else INCONCLUSIVE)
        parts.append(f"vs {title}: clean {c['diff'] * 100:+.1f} (±{_pct(c['margin'])}), "
                     f"{ATTACK_TITLES.get(robust, robust)} {r['diff'] * 100:+.1f} "
                     f"(±{_pct(r['margin'])})")
    verdict = (SUPPORTED if all(v == SUPPORTED for v in votes) else
               NOT_SUPPORTED if all(v == NOT_SUPPORTED for v in votes) else INCONCLUSIVE)
    return "; ".join(parts), verdict


def tradeoff_evidence(rows: list[dict], robust: str = "pgd20") -> list[dict]:
    """Claims 2-4 from the trade-off study's summary rows (DYNAT as the authors run it, with the
    clean forward, against each baseline; the clean-forward switch; the small guide)."""
    out = []
    # 2. Higher clean accuracy than PGD-AT, TRADES, LBGAT at comparable robustness.
    measured, verdict = clean_at_comparable_robustness(
        rows, "dynat", (("pgd_at", "PGD-AT"), ("trades", "TRADES"), ("lbgat", "LBGAT")), robust)
    out.append({"claim": "2. DYNAT reaches higher clean accuracy than PGD-AT, TRADES and LBGAT "
                         "at comparable robustness",
                "measured": measured + " (points, DYNAT minus baseline, mean of seeds; PGD-AT "
                                       "with Madry's uniform start)",
                "verdict": verdict})
    # 3. The clean forward: does switching it off change DYNAT (and PGD-AT)?
    parts, effects = [], []
    for on, off, title in (("dynat", "dynat_nocf", "DYNAT"), ("pgd_at_cf", "pgd_at", "PGD-AT")):
        c = compare_groups(rows, on, off, "clean")
        r = compare_groups(rows, on, off, robust)
        effects.append((_verdict(c["diff"], c["margin"]), _verdict(r["diff"], r["margin"])))
        parts.append(f"{title} on - off: clean {c['diff'] * 100:+.1f} (±{_pct(c['margin'])}), "
                     f"{ATTACK_TITLES.get(robust, robust)} {r['diff'] * 100:+.1f} "
                     f"(±{_pct(r['margin'])})")
    dynat_effect = effects[0]
    verdict = (INCONCLUSIVE if set(dynat_effect) == {1, -1} else
               SUPPORTED if 1 in dynat_effect else NOT_SUPPORTED)
    out.append({"claim": "3. (The authors' code, not the paper's text) the target's extra clean "
                         "forward explains part of DYNAT's result (switching it on helps DYNAT)",
                "measured": "; ".join(parts), "verdict": verdict})
    # 4. A guide as small as the target still works: far more robust than standard training,
    # and not less robust than PGD-AT.
    s = compare_groups(rows, "dynat", "standard", robust)
    p = compare_groups(rows, "dynat", "pgd_at", robust)
    verdict = (SUPPORTED if _verdict(s["diff"], s["margin"]) == 1 and
               _verdict(p["diff"], p["margin"]) >= 0 else
               NOT_SUPPORTED if _verdict(s["diff"], s["margin"]) <= 0 else INCONCLUSIVE)
    out.append({"claim": "4. A guide as small as the target works: DYNAT with the small CNN as "
                         "guide is robust (well above standard training, not below PGD-AT)",
                "measured": f"DYNAT minus standard {s['diff'] * 100:+.1f} (±{_pct(s['margin'])}), "
                            f"DYNAT minus PGD-AT {p['diff'] * 100:+.1f} (±{_pct(p['margin'])}) "
                            f"points of {ATTACK_TITLES.get(robust, robust)}",
                "verdict": verdict})
    return out


def evidence_markdown(items: list[dict]) -> str:
    lines = ["| claim | what was measured | verdict at this scale |", "|---|---|---|"]
    lines += [f"| {e['claim']} | {e['measured']} | **{e['verdict']}** |" for e in items]
    return "\n".join(lines)


# pgd_at_gauss also stands for DYNAT with static labels (the same target, bit for bit).
_LIKE_BASELINES = (("dynat_static", "static labels"),
                   ("pgd_at_gauss", "PGD-AT with DYNAT's start (= static labels)"),
                   ("pgd_at", "PGD-AT, uniform start"))


def strong_guide_evidence(rows: list[dict], robust: str = "pgd20") -> list[dict]:
    """Claim 2 where its premise holds, from the strong-guide study: DYNAT with a guide that is
    strong from the first step (two departures from the paper, one at a time) against static
    labels and PGD-AT with both starts, by the rule of ``clean_at_comparable_robustness``."""
    out = []
    for key, name, how in (("6a", "dynat_guide_init", "a guide pre-trained alone"),
                           ("6b", "dynat_label_warmup", "y for the first steps")):
        if not _group(rows, name):
            continue
        present = tuple(b for b in _LIKE_BASELINES if _group(rows, b[0]))
        measured, verdict = clean_at_comparable_robustness(rows, name, present, robust)
        out.append({"claim": f"{key}. Claim 2 where the guide is strong ({how}; not the "
                             f"paper's recipe): DYNAT reaches higher clean accuracy than static "
                             f"labels and PGD-AT at comparable robustness",
                    "measured": measured + " (points, DYNAT minus baseline, mean of seeds)",
                    "verdict": verdict})
    return out


def first_step(steps: list[dict], field: str, at_least: float) -> int | None:
    """The first recorded step whose ``field`` is at least ``at_least`` (None: never)."""
    return next((s["step"] for s in steps if s[field] >= at_least), None)


def collapse_trace(history: list[dict]) -> dict:
    """What a run's per-step diagnostics say about the weak-label phase: the first step where
    the labels agree with y on half the batch, the first where the target's logit spread reaches
    the collapse threshold, the collapsed epochs, and the last sample's spread and agreement."""
    steps = [s for h in history for s in h.get("steps", [])]
    if not steps:
        return {}
    return {"labels_half_right_at": first_step(steps, "label_agreement",
                                               diagnostics.AGREEMENT_MIN),
            "spread_above_threshold_at": first_step(steps, "logit_spread",
                                                    diagnostics.SPREAD_MAX),
            "collapsed_epochs": diagnostics.collapsed_epochs(history),
            "last_step": steps[-1]["step"],
            "last_spread": steps[-1]["logit_spread"],
            "last_label_agreement": steps[-1]["label_agreement"],
            "max_dead_units": max(s["dead_units"] for s in steps)}


def steps_evidence(rows: list[dict], hist: dict[str, list[dict]], robust: str = "pgd20"
                   ) -> list[dict]:
    """The steps study: does DYNAT's target collapse under the authors' own recipe and data
    size (verdict "collapses" / "does not collapse" per seed, from the fixed rule of
    ``diagnostics``), and how does DYNAT compare with static labels and PGD-AT (both starts)
    after the same steps."""
    out = []
    for run, history in sorted(hist.items()):
        if not run.startswith("dynat-s"):
            continue
        t = collapse_trace(history)
        key = "5" + "abcdefgh"[int(run.rsplit("-s", 1)[1]) % 8]
        out.append({"claim": f"{key}. ({run}; the kit's question, not the paper's claim) DYNAT's "
                             f"target collapses in the weak-label phase under the authors' "
                             f"recipe and all 50,000 training images",
                    "measured": (f"labels agree with y on half the batch from step "
                                 f"{t['labels_half_right_at']}; logit spread first >= "
                                 f"{diagnostics.SPREAD_MAX} at step "
                                 f"{t['spread_above_threshold_at']}; collapsed epochs: "
                                 f"{t['collapsed_epochs'] or 'none'}; at step {t['last_step']} "
                                 f"spread {t['last_spread']:.2f}, labels agree "
                                 f"{t['last_label_agreement']:.0%}"),
                    "verdict": "collapses" if t["collapsed_epochs"] else "does not collapse"})
    if _group(rows, "dynat"):
        present = tuple(b for b in _LIKE_BASELINES if _group(rows, b[0]))
        if present:
            measured, verdict = clean_at_comparable_robustness(rows, "dynat", present, robust)
            out.append({"claim": "5c. Claim 2 after the paper's first two epochs: DYNAT "
                                 "reaches higher clean accuracy than static labels and PGD-AT "
                                 "at comparable robustness",
                        "measured": measured + " (points, DYNAT minus baseline, mean of seeds)",
                        "verdict": verdict})
    return out


# ----------------------------------------------------------------- a pre-registered claim
#: What a pre-registration fixes before its study runs, and what each field holds.
PLAN_FIELDS = {
    "claim": "the claim, one sentence that a measurement could contradict",
    "metric": "the accuracy compared, a column of the study's summary (e.g. 'pgd20', 'clean')",
    "comparison": "[a, b]: the two groups of runs (run names without '-s<seed>'); the claim is "
                  "that a's metric is higher than b's",
    "prediction": "the verdict you expect: 'supported', 'not supported' or 'inconclusive'",
    "reason": "why you expect it, in a sentence or two",
}
PLAN_FILE = "preregistration.json"
_FINISHED = "*/final.json"  # a finished run of a study (study.FINAL in each run's folder)
_MIN_WORDS = {"claim": 6, "reason": 6}


class PlanError(ValueError):
    """A pre-registration that is incomplete, or that changed after results were in."""


def plan_problems(plan, metrics=None, groups=None) -> list[str]:
    """What is missing or wrong in ``plan`` ([] when it is complete): every field of
    ``PLAN_FIELDS`` and no other, the texts in words, the metric one of ``metrics``, the
    comparison two different names (of ``groups``, when given), the prediction a verdict."""
    if not isinstance(plan, dict):
        return [f"the plan must be a dict, got {type(plan).__name__}"]
    problems = [f"{key!r} is missing ({what})" for key, what in PLAN_FIELDS.items()
                if key not in plan]
    problems += [f"{key!r} is not a field of a plan (the fields: {', '.join(PLAN_FIELDS)})"
                 for key in plan if key not in PLAN_FIELDS]
    for key, least in _MIN_WORDS.items():
        text = plan.get(key)
        if key in plan and (not isinstance(text, str) or len(text.split()) < least):
            problems.append(f"{key!r} must be a sentence of at least {least} words")
    metric = plan.get("metric")
    if "metric" in plan and (not isinstance(metric, str) or (metrics and metric not in metrics)):
        problems.append(f"'metric' must be one of {', '.join(map(repr, metrics or ()))}"
                        if metrics else "'metric' must be the name of a summary column")
    pair = plan.get("comparison")
    if "comparison" in plan:
        names_ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
                    and all(isinstance(g, str) and re.fullmatch(r"[a-z][a-z0-9_]*", g)
                            for g in pair) and pair[0] != pair[1])
        if not names_ok:
            problems.append("'comparison' must be two different group names [a, b], such as "
                            "['dynat', 'pgd_at']")
        elif groups is not None and not set(pair) <= set(groups):
            problems.append(f"'comparison' names {sorted(set(pair) - set(groups))}: the groups "
                            f"this study can run are {', '.join(groups)}")
    if "prediction" in plan and plan["prediction"] not in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE):
        problems.append(f"'prediction' must be {SUPPORTED!r}, {NOT_SUPPORTED!r} or "
                        f"{INCONCLUSIVE!r}")
    return problems


def plan_fingerprint(plan: dict) -> str:
    """The SHA-256 of the plan written canonically (sorted keys): any change changes it."""
    text = json.dumps(plan, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def freeze_plan(plan: dict, folder, metrics=None, groups=None) -> dict:
    """Fix ``plan`` in ``folder/preregistration.json`` before the study in ``folder`` runs;
    returns the record (the plan and its fingerprint).

    Freezing the same plan again returns the recorded one (a notebook run again). A plan that
    is incomplete, or that differs from the recorded one once any run in ``folder`` has
    finished, raises ``PlanError``: a plan written after its results were seen is no
    pre-registration. Before any run has finished, a changed plan replaces the old one.
    """
    problems = plan_problems(plan, metrics, groups)
    if problems:
        raise PlanError("The plan is not complete: " + "; ".join(problems) + ".")
    folder = Path(folder)
    record = {"plan": plan, "sha256": plan_fingerprint(plan)}
    path = folder / PLAN_FILE
    finished = sorted(p.parent.name for p in folder.glob(_FINISHED))
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("sha256") == record["sha256"]:
            return old
        if finished:
            raise PlanError(f"The plan differs from the one fixed in {path} before runs "
                            f"{', '.join(finished)} finished: a plan changed after its results "
                            f"is no pre-registration. Keep the fixed plan, or start a new study "
                            f"in another folder.")
    elif finished:
        raise PlanError(f"Runs {', '.join(finished)} in {folder} have finished already: fix the "
                        f"plan before the study runs, in a new folder.")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    return record


def frozen_plan(folder) -> dict:
    """The plan fixed in ``folder``, after checking that its file was not edited since."""
    path = Path(folder) / PLAN_FILE
    if not path.exists():
        raise PlanError(f"No plan was fixed in {folder}: run freeze_plan before the study.")
    record = json.loads(path.read_text(encoding="utf-8"))
    if plan_fingerprint(record["plan"]) != record.get("sha256"):
        raise PlanError(f"{path} was edited after it was fixed: its plan no longer matches its "
                        f"fingerprint.")
    return record["plan"]


def claim_verdict(rows: list[dict], plan: dict) -> dict:
    """The verdict on a plan's claim, "a's metric is higher than b's", by the rule of every
    verdict here: ``compare_groups`` (means over seeds, the images of all seeds pooled), then
    supported when the difference is above its 95 % margin, not supported when it is below
    minus the margin, inconclusive in between. Returns compare_groups' numbers, the interval
    ``low``, ``high`` of the difference, and ``claim``, ``measured``, ``verdict`` as the other
    evidence items (``evidence_markdown``)."""
    a, b = plan["comparison"]
    metric = plan["metric"]
    c = compare_groups(rows, a, b, metric)
    verdict = {1: SUPPORTED, -1: NOT_SUPPORTED, 0: INCONCLUSIVE}[_verdict(c["diff"], c["margin"])]
    title = ATTACK_TITLES.get(metric, metric)
    low, high = c["diff"] - c["margin"], c["diff"] + c["margin"]
    measured = (f"{title}: {a} {_pct(c['a'])}, {b} {_pct(c['b'])}; difference "
                f"{c['diff'] * 100:+.1f} points, 95 % interval [{low * 100:+.1f}, "
                f"{high * 100:+.1f}] ({c['seeds']} seed(s) a group)")
    return {**c, "low": low, "high": high, "claim": plan["claim"], "measured": measured,
            "verdict": verdict}

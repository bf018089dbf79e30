"""Studies: named, resumable sets of training runs that test the DYNAT paper's claims at a scale
a CPU (or one GPU) can run, with fixed configs and seeds.

    python -m dynat_lite study overfitting --out results/overfitting --dataset cifar10
    python -m dynat_lite study tradeoff --out results/tradeoff --dataset cifar10

Each run trains in ``OUT/RUN`` (``train.fit``: an interrupted run resumes, a finished one is
loaded), writes its per-epoch history to ``OUT/RUN/history.json`` and its final evaluation to
``OUT/RUN/final.json``. When every run is done, ``summarize`` turns those files -- and nothing
else -- into ``summary.csv`` and ``summary.md``; ``figures`` draws them. Re-running a study
resumes it. Every accuracy in the summary comes with its 95 % (Wilson) binomial interval over
the number of test images it was measured on.
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import data as data_lib
from . import diagnostics, train
from . import runs as runs_lib
from .evaluate import ATTACK_TITLES, robustness_report
# The evidence rules live in evidence.py; lessons call them as study.NAME.
from .evidence import (  # noqa: F401
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, clean_at_comparable_robustness, collapse_trace,
    compare_groups, difference_margin, evidence_markdown, first_step, overfitting_evidence,
    steps_evidence, strong_guide_evidence, tradeoff_evidence)

HISTORY, FINAL, SUMMARY = "history.json", "final.json", "summary"
FAILED = "failed.json"  # runs of the last call that failed, and why


@dataclass(frozen=True)
class Run:
    """One training run of a study: a method, a seed, and config fields of its own."""
    name: str
    method: str
    seed: int
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A named set of runs on one base config, each evaluated the same way at the end."""
    name: str
    question: str
    budget: str                           # what it costs, measured on the machine named there
    profile: str
    base: dict                            # config fields shared by every run
    runs: tuple
    final_attacks: tuple = ("clean", "pgd20")
    n_final: int = 1000                   # the first n test images, the same for every run
    # Costlier attacks, on the runs of ``extra_seeds`` only, on the first ``n_extra`` test images.
    extra_attacks: tuple = ()
    n_extra: int = 500
    extra_seeds: tuple = (0,)

    def config(self, run: Run, dataset: str | None = None) -> train.Config:
        """The Config of ``run``: the profile, the study's base, the run's own fields, and the
        method's own defaults, resolved by ``train.config`` as for every caller."""
        fields = {**self.base, **run.overrides, "seed": run.seed}
        if dataset is not None:
            fields["dataset"] = dataset
        return train.config(self.profile, method=run.method, **fields)


def _seeds(name, method, seeds, **overrides):
    return tuple(Run(f"{name}-s{s}", method, s, overrides) for s in seeds)


# A training budget for a CPU: the small CNN, eps = 8/255 with PGD-3 (steps of 3/255) in training,
# PGD-10 on fixed images after every epoch.
_CPU = dict(dataset="cifar10", model="small-cnn", guide_model="small-cnn", n_test=None,
            eps=8 / 255, steps=3, step_size=3 / 255, eval_steps=10, batch_size=64)

STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    STUDIES[study.name] = study
    return study


register(Study(
    name="overfitting",
    question="Does PGD-AT overfit robustly (test PGD accuracy peaks, then falls while training "
             "PGD accuracy rises), and does DYNAT fall less?",
    budget="4 runs of 2,000 images x 30 epochs, PGD-10 on 300 test and 300 training images "
           "after every epoch; about 1.5 h on one CPU core",
    profile="cpu",
    base=dict(_CPU, n_train=2000, epochs=30, schedule="piecewise", milestones=(0.5, 0.75),
              lr=0.1, n_eval=300, n_eval_train=300),
    runs=_seeds("pgd_at", "pgd_at", (0, 1)) + _seeds("dynat", "dynat", (0, 1)),
))

register(Study(
    name="tradeoff",
    question="At one budget: clean vs robust accuracy of standard training, PGD-AT, TRADES, "
             "LBGAT and DYNAT; and does the authors' extra clean forward of the target (on "
             "for DYNAT as in their code) explain part of DYNAT's result?",
    budget="14 runs of 3,000 images x 8 epochs, PGD-20 on 1,000 test images; AutoAttack "
           "(standard) on 200 test images for the seed-0 runs; about 2.5 h on one CPU core",
    profile="cpu",
    base=dict(_CPU, n_train=3000, epochs=8, schedule="onecycle", lr=0.1, n_eval=300),
    extra_attacks=("aa_standard",),
    n_extra=200,
    # Seed 0 of every configuration first, then seed 1.
    runs=tuple(run for seed in (0, 1) for run in (
        _seeds("dynat", "dynat", (seed,), target_clean_forward=True)
        + _seeds("pgd_at", "pgd_at", (seed,))
        + _seeds("dynat_nocf", "dynat", (seed,))
        + _seeds("pgd_at_cf", "pgd_at", (seed,), target_clean_forward=True)
        + _seeds("trades", "trades", (seed,))
        + _seeds("lbgat", "lbgat", (seed,))
        + _seeds("standard", "standard", (seed,)))),
))

# The paper's first epochs on a CPU: all 50,000 training images, batch 128, the authors' lr (0.02
# in the first epoch, then 0.1; no drop this early), the small CNN as target and guide. The
# training attack a CPU affords here is PGD-2 (steps of 4/255), not the paper's PGD-10.
_FIRST_EPOCHS = dict(dataset="cifar10", model="small-cnn", guide_model="small-cnn", n_train=None,
                     n_test=None, batch_size=128, epochs=2, schedule="piecewise", lr=0.1,
                     first_epoch_lr=0.02, milestones=(), eps=8 / 255, steps=2,
                     step_size=4 / 255, eval_steps=10, n_eval=500, diagnose_every=5)

# DYNAT against its like-with-like baselines: PGD-AT with DYNAT's Gaussian start and with Madry's
# uniform one. DYNAT with static labels (y in the same two-network loop) is not run again: its
# target trains bit for bit as pgd_at_gauss's (the guide beside it never reaches the target;
# tests/test_diagnostics.py), so pgd_at_gauss stands for both.

register(Study(
    name="steps",
    question="Under the authors' own recipe and data size (all 50,000 training images, batch "
             "128, lr 0.02 then 0.1), does DYNAT's target collapse in the weak-label phase, and "
             "if so, when does it escape? Per-step diagnostics against static labels and PGD-AT "
             "with both starts.",
    budget="6 runs of 50,000 images x 2 epochs (782 steps), PGD-2 in training, PGD-10 on 500 "
           "test images after each epoch, PGD-20 on 1,000 at the end; about 25-40 min a run on "
           "one CPU core",
    profile="cpu",
    base=_FIRST_EPOCHS,
    # DYNAT's two seeds first (the collapse question), then the baselines.
    runs=(_seeds("dynat", "dynat", (0, 1)) + _seeds("pgd_at_gauss", "pgd_at_gauss", (0,))
          + _seeds("pgd_at", "pgd_at", (0,)) + _seeds("pgd_at_gauss", "pgd_at_gauss", (1,))
          + _seeds("pgd_at", "pgd_at", (1,))),
))

# The paper's premise, a guide that grows strong, made to hold from the first step by one of two
# departures from the paper (named as such in every result): a guide pre-trained alone, or y for
# the first epoch of steps. Without augmentation (for every run alike), so that a guide trained
# alone for a few epochs agrees with y on nearly all training images, as late in a long run.
GUIDE_INIT_EPOCHS = 12
LABEL_WARMUP_STEPS = 32

register(Study(
    name="strong-guide",
    question="Where the guide is strong from the start, does DYNAT reach higher clean accuracy "
             "than static labels and PGD-AT (both starts) at comparable robustness?",
    budget=f"10 runs of 4,000 images x 4 epochs (124 steps: 31 full batches an epoch), no "
           f"augmentation, PGD-2 in training; the pre-trained guide: {GUIDE_INIT_EPOCHS} epochs of clean training "
           f"first; PGD-20 on 1,000 test images; about 5-10 min a run on one CPU core",
    profile="cpu",
    base=dict(dataset="cifar10", model="small-cnn", guide_model="small-cnn", n_train=4000,
              n_test=None, batch_size=128, epochs=4, schedule="onecycle", lr=0.1, eps=8 / 255,
              steps=2, step_size=4 / 255, eval_steps=10, n_eval=500, augment=False,
              diagnose_every=2),
    runs=tuple(run for seed in (0, 1) for run in (
        _seeds("dynat_guide_init", "dynat", (seed,), guide_init_epochs=GUIDE_INIT_EPOCHS)
        + _seeds("dynat_label_warmup", "dynat", (seed,), label_warmup_steps=LABEL_WARMUP_STEPS)
        + _seeds("dynat", "dynat", (seed,))
        + _seeds("pgd_at_gauss", "pgd_at_gauss", (seed,))
        + _seeds("pgd_at", "pgd_at", (seed,)))),
))

register(Study(
    name="lab",
    question="A small rerun for a lab CPU: PGD-AT and DYNAT, robust accuracy on test and "
             "training images after every epoch.",
    budget="2 runs of 1,000 images x 6 epochs; a few minutes on a 2-core CPU",
    profile="cpu",
    base=dict(_CPU, n_train=1000, epochs=6, schedule="piecewise", milestones=(0.5, 0.75),
              lr=0.1, n_eval=200, n_eval_train=200),
    runs=(Run("pgd_at-s0", "pgd_at", 0), Run("dynat-s0", "dynat", 0,
                                             {"target_clean_forward": True})),
    n_final=500,
))

register(Study(
    name="gpu",
    question="DYNAT vs PGD-AT with ResNet-18 (target and guide) on the whole training set.",
    budget="2 runs of 50,000 images x 15 epochs on one GPU; sized for about 12 min on an H100/H200",
    profile="gpu",
    base=dict(dataset="cifar10", n_test=None, epochs=15, n_eval=1000, n_eval_train=1000),
    runs=(Run("pgd_at-s0", "pgd_at", 0), Run("dynat-s0", "dynat", 0,
                                             {"target_clean_forward": True})),
))

register(Study(
    name="smoke",
    question="The study machinery on synthetic data in seconds (tests and a first look).",
    budget="3 runs of 128 images x 2 epochs; seconds on a CPU",
    profile="smoke",
    base=dict(dataset="synthetic", n_train=128, n_test=64, epochs=2, n_eval=16, n_eval_train=16,
              schedule="piecewise", milestones=(0.5,)),
    runs=(Run("pgd_at-s0", "pgd_at", 0), Run("dynat-s0", "dynat", 0,
                                             {"target_clean_forward": True}),
          Run("dynat_nocf-s0", "dynat", 0)),
    final_attacks=("clean", "pgd10"),
    n_final=64,
    extra_attacks=("fgsm",),
    n_extra=32,
))


def get(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"Unknown study {name!r}. Valid: {', '.join(STUDIES)}.")
    return STUDIES[name]


# ------------------------------------------------------------------------------------- running
def run_study(name: str, out: str | Path, *, dataset: str | None = None,
              only: tuple | None = None, extra: bool = True, log=print) -> list[dict]:
    """Train and evaluate every run of study ``name`` (or the runs named in ``only``) in
    ``out``, resuming what is there; then write the summary. Returns the summary rows.
    ``extra=False`` leaves the study's costlier attacks for a later call."""
    study, out = get(name), Path(out)
    unknown = sorted(set(only or ()) - {r.name for r in study.runs})
    if unknown:
        raise ValueError(f"Study {name!r} has no run(s) {', '.join(unknown)}; its runs: "
                         f"{', '.join(r.name for r in study.runs)}.")
    cfgs = {r.name: study.config(r, dataset) for r in study.runs}
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder: name a folder for the "
                                 f"study.")
    out.mkdir(parents=True, exist_ok=True)
    with runs_lib.claim_run_folder(out):  # one study process per folder
        return _run_claimed(study, out, cfgs, only, extra, log)


def _run_claimed(study: Study, out: Path, cfgs: dict, only, extra: bool, log) -> list[dict]:
    (out / "study.json").write_text(json.dumps(
        {"study": study.name, "question": study.question, "budget": study.budget,
         "runs": {k: c.to_dict() for k, c in cfgs.items()}}, indent=1, default=str))
    runs = [r for r in study.runs if only is None or r.name in only]
    loaded = {}  # seed -> dataset: the training subset depends on the seed, not on the method
    failed = {}  # run name -> why it failed
    for run in runs:
        cfg = cfgs[run.name]
        if cfg.seed not in loaded:
            loaded[cfg.seed] = data_lib.load(cfg.dataset, root=cfg.data_root, n_train=cfg.n_train,
                                             n_test=cfg.n_test, seed=cfg.seed)
        data = loaded[cfg.seed]
        folder = out / run.name
        try:
            if not (folder / FINAL).exists():
                train_and_evaluate(study, run, cfg, folder, data, log=log)
            if extra and run.seed in study.extra_seeds:
                evaluate_extra(study, cfg, folder, data, log=log)
        except (train.TrainingDiverged, runs_lib.CheckpointError, json.JSONDecodeError,
                KeyError) as err:  # this run failed: say so, record it, go on with the others
            log(f"{run.name}: FAILED: {' '.join(str(err).split())}")
            failed[run.name] = f"{type(err).__name__}: {' '.join(str(err).split())}"
    (out / FAILED).write_text(json.dumps(failed, indent=1))
    rows = summarize(out)
    write_summary(rows, out)
    return rows


def train_and_evaluate(study: Study, run: Run, cfg: train.Config, folder: Path, data, *,
                       log=print) -> None:
    """Train one run (resuming), save its history, evaluate its final target on the study's
    ``final_attacks``."""
    log(f"{run.name}: training {cfg.method}, seed {cfg.seed}, {cfg.epochs} epochs")
    t0 = time.perf_counter()
    result = train.fit(cfg, out=folder, dataset=data, progress=False,
                       on_epoch=lambda r: log("  " + train.epoch_summary(r, cfg.epochs)))
    (folder / HISTORY).write_text(json.dumps(result.history, indent=1))
    n = min(study.n_final, len(data.y_test))
    report = robustness_report(result.target, data.x_test[:n], data.y_test[:n],
                               attacks=study.final_attacks, seed=cfg.seed, checks=False)
    final = {"run": run.name, "method": run.method, "seed": run.seed,
             "overrides": run.overrides, **report.to_dict(), "extra": {},
             "seconds_total": time.perf_counter() - t0}
    (folder / FINAL).write_text(json.dumps(final, indent=1))
    log("  final: " + ", ".join(f"{ATTACK_TITLES.get(k, k)} {v:.1%}"
                                 for k, v in report.accuracy.items()))


def evaluate_extra(study: Study, cfg: train.Config, folder: Path, data, *, log=print) -> None:
    """The study's costlier attacks on a finished run, each saved into its final.json once."""
    final = json.loads((folder / FINAL).read_text())
    todo = [a for a in study.extra_attacks if a not in final.get("extra", {})]
    if not todo:
        return
    model = train.load_model(folder, device=str(train.resolve_device(cfg.device)))
    n = min(study.n_extra, len(data.y_test))
    for attack in todo:
        report = robustness_report(model, data.x_test[:n], data.y_test[:n], attacks=(attack,),
                                   seed=cfg.seed, checks=False)
        final.setdefault("extra", {})[attack] = {"accuracy": report.accuracy[attack], "n": n,
                                                 "seconds": report.seconds[attack]}
        (folder / FINAL).write_text(json.dumps(final, indent=1))
        log(f"{folder.name}: {ATTACK_TITLES.get(attack, attack)} {report.accuracy[attack]:.1%} "
            f"on {n} test images ({report.seconds[attack]:.0f} s)")


# ----------------------------------------------------------------------------------- summary
def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a binomial proportion ``p`` measured on ``n`` trials."""
    if n <= 0:
        raise ValueError("An interval needs at least one trial.")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def run_row(history: list[dict], final: dict, n_eval: int) -> dict:
    """One run's line of the summary, from its history (evaluated on ``n_eval`` images after
    every epoch) and its final evaluation only."""
    row = {"run": final["run"], "method": final["method"], "seed": final["seed"],
           "clean_forward": bool(final.get("overrides", {}).get("target_clean_forward", False)),
           "epochs": len(history), "n_test": final["n"], "n_eval": n_eval}
    for attack, acc in final["accuracy"].items():
        if attack == "worst_case":
            continue
        lo, hi = wilson_interval(acc, final["n"])
        row[attack], row[f"{attack}_lo"], row[f"{attack}_hi"] = acc, lo, hi
    for attack, got in final.get("extra", {}).items():
        lo, hi = wilson_interval(got["accuracy"], got["n"])
        row[attack], row[f"{attack}_lo"], row[f"{attack}_hi"] = got["accuracy"], lo, hi
        row[f"{attack}_n"] = got["n"]
    pgd = [h["test_pgd"] for h in history]
    best = max(range(len(pgd)), key=pgd.__getitem__)
    row.update(best_epoch=best + 1, best_test_pgd=pgd[best], last_test_pgd=pgd[-1],
               drop=pgd[best] - pgd[-1])
    if "train_pgd" in history[-1]:
        row.update(last_train_pgd=history[-1]["train_pgd"],
                   train_pgd_at_best=history[best]["train_pgd"])
    row["train_seconds"] = sum(h.get("train_seconds", 0.0) for h in history)
    measured = bool(history[-1].get("steps"))  # histories written before the diagnostics
    row["collapsed"] = ("not measured" if not measured else
                        "yes" if diagnostics.epoch_collapsed(history[-1]["steps"]) else "no")
    row["collapsed_epochs"] = " ".join(map(str, diagnostics.collapsed_epochs(history)))
    row["label_agreement"] = history[-1].get("label_agreement", 1.0)
    return row


def summarize(out: str | Path) -> list[dict]:
    """One row per finished run of the study in ``out`` (folders with a final.json), with the
    per-epoch evaluation size from the configs recorded in ``study.json``."""
    configs = json.loads((Path(out) / "study.json").read_text())["runs"]
    rows = []
    for folder in sorted(Path(out).iterdir()):
        if (folder / FINAL).exists() and (folder / HISTORY).exists():
            try:
                rows.append(run_row(json.loads((folder / HISTORY).read_text()),
                                    json.loads((folder / FINAL).read_text()),
                                    configs[folder.name]["n_eval"]))
            except (json.JSONDecodeError, KeyError, TypeError, IndexError) as err:
                warnings.warn(f"{folder.name} is left out of the summary: its {HISTORY} or "
                              f"{FINAL} cannot be read ({type(err).__name__}: {err}); delete "
                              f"the folder's {FINAL} to train and evaluate it again.",
                              stacklevel=2)
    return rows


def _cell(key: str, value) -> str:
    if isinstance(value, float) and key not in ("train_seconds",):
        return f"{100 * value:.1f}"
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


def _columns(rows: list[dict]) -> list[str]:
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _interval(row: dict, attack: str) -> str:
    if attack not in row:
        return ""
    return (f"{100 * row[attack]:.1f} [{100 * row[attack + '_lo']:.1f}, "
            f"{100 * row[attack + '_hi']:.1f}]")


def markdown(rows: list[dict]) -> str:
    """The summary as a Markdown table: accuracies in percent, each with its 95 % interval."""
    if not rows:
        return "(no finished runs)"
    cols = _columns(rows)
    attacks = [k for k in cols if f"{k}_lo" in cols]
    extra = [k for k in ("best_epoch", "best_test_pgd", "last_test_pgd", "drop",
                         "last_train_pgd") if k in cols]
    head = (["run", "clean forward", "test images"]
            + [ATTACK_TITLES.get(a, a) + " (95 % CI)" for a in attacks]
            + [_TITLES[k] for k in extra] + ["labels agree with y", "target collapsed",
                                             "train s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sizes = sorted({r["n_test"]} | {r[f"{a}_n"] for a in attacks if f"{a}_n" in r})
        cells = [r["run"], "yes" if r["clean_forward"] else "no", " / ".join(map(str, sizes))]
        cells += [_interval(r, a) for a in attacks]
        cells += [_cell(k, r[k]) if k in r else "" for k in extra]
        cells += [_cell("label_agreement", r["label_agreement"]),
                  r["collapsed"] + (f" (epochs {r['collapsed_epochs']})"
                                    if r["collapsed_epochs"] else ""),
                  f"{r['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rows: list[dict], columns: list[str]) -> str:
    """Chosen columns of the summary as a Markdown table, accuracies in percent."""
    head = [_TITLES.get(c, ATTACK_TITLES.get(c, c)) for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(c, r[c]) if c in r else "" for c in columns) + " |")
    return "\n".join(lines)


_TITLES = {"best_epoch": "best epoch", "train_pgd_at_best": "train PGD-10 at best epoch", "best_test_pgd": "best test PGD-10",
           "last_test_pgd": "last test PGD-10", "drop": "best - last",
           "last_train_pgd": "last train PGD-10"}


def write_summary(rows: list[dict], out: str | Path) -> None:
    """``summary.csv`` and ``summary.md`` in ``out``."""
    out = Path(out)
    if not rows:
        return
    with open(out / f"{SUMMARY}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_columns(rows))
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{SUMMARY}.md").write_text(markdown(rows) + "\n")


def histories(out: str | Path) -> dict[str, list[dict]]:
    """Run name -> its per-epoch history, for every run of ``out`` with a history."""
    return {f.name: json.loads((f / HISTORY).read_text())
            for f in sorted(Path(out).iterdir()) if (f / HISTORY).exists()}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m dynat_lite study",
                                description="Run (or resume) a named study; see dynat_lite.study.")
    p.add_argument("name", choices=sorted(STUDIES))
    p.add_argument("--out", required=True, help="the study's folder (results/NAME to ship it)")
    p.add_argument("--dataset", help="override the dataset (e.g. the path of a CIFAR-10 .npz)")
    p.add_argument("--only", help="comma-separated run names (default: every run)")
    p.add_argument("--skip-extra", action="store_true",
                   help="train and evaluate every run first; the costlier attacks on a later call")
    args = p.parse_args(argv)
    only = tuple(args.only.split(",")) if args.only else None
    rows = run_study(args.name, args.out, dataset=args.dataset, only=only,
                     extra=not args.skip_extra, log=lambda s: print(s, flush=True))
    print(markdown(rows))
    failed = json.loads((Path(args.out) / FAILED).read_text())
    for run, why in failed.items():
        print(f"error: run {run} failed: {why}", file=sys.stderr)
    return 1 if failed else 0

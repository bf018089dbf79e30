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
    budget=f"10 runs of 4,000 images x 4 epochs (128 steps), no augmentation, PGD-2 in "
           f"training; the pre-trained guide: {GUIDE_INIT_EPOCHS} epochs of clean training "
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
    budget="3 runs of 256 images x 2 epochs; seconds on a CPU",
    profile="smoke",
    base=dict(dataset="synthetic", n_train=256, n_test=64, epochs=2, n_eval=32, n_eval_train=32,
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
    log(f"  final: " + ", ".join(f"{ATTACK_TITLES.get(k, k)} {v:.1%}"
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


# ---------------------------------------------------------------------------------- evidence
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _group(rows: list[dict], prefix: str) -> list[dict]:
    """The rows of the runs named ``prefix-s<seed>``."""
    return [r for r in rows if r["run"].rsplit("-s", 1)[0] == prefix]


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
    na = sum(r.get(f"{metric}_n", r["n_test"]) for r in ra)
    nb = sum(r.get(f"{metric}_n", r["n_test"]) for r in rb)
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

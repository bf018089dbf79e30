"""Train several methods on the same budget and seed, evaluate them the same way, and compare.

    python -m dynat_lite compare --methods dynat,pgd_at,trades --profile cpu --out runs/compare

For each method: ``train.fit`` with ``out=OUT/METHOD`` (a finished method is loaded, not
retrained; an interrupted one resumes), then ``evaluate.robustness_report`` on the first
``--n-eval`` test images (saved to ``OUT/METHOD/report.json``, reused when the evaluation
settings are unchanged). Writes ``results.csv``, ``results.md`` and the clean-vs-robust
figure ``figure.html`` (and ``figure.png`` when kaleido is installed) into OUT.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from . import data as data_lib
from . import diagnostics, lesson_models, methods, train
from .evaluate import ATTACK_TITLES, attack_function, attack_title, robustness_report

DEFAULT_METHODS = ("dynat", "pgd_at", "pgd_at_gauss", "trades", "mart", "gairat", "mail",
                   "lbgat", "dynat_gairat")
#: The DYNAT variants lesson 06 compares: its labels (static, soft), its loss (KL, MSE), and
#: DYNAT with GAIRAT's weights.
ABLATIONS = ("dynat", "dynat_static", "dynat_soft", "dynat_kl", "dynat_mse", "dynat_gairat")
DEFAULT_ATTACKS = ("clean", "pgd20", "cw", "aa_fast")
REPORT = "report.json"
RESULTS = "results.json"  # the rows and the settings they were computed with


def earlier_rows(out: Path, settings: dict) -> list[dict]:
    """The rows an earlier ``compare`` into ``out`` wrote, if it used the same settings (its
    methods then stay in the table beside the new ones); another comparison there raises."""
    path = out / RESULTS
    if not path.exists():
        return []
    try:
        saved = json.loads(path.read_text())
        same = json.loads(json.dumps(settings, default=str)) == saved["settings"]
        rows = list(saved["rows"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} cannot be read ({err}); delete it (the trained models stay) "
                         f"or choose another --out.") from err
    if not same:
        raise ValueError(f"{out} holds a comparison made with other settings "
                         f"({saved['settings']}); choose another --out to keep both.")
    return rows


def method_config(name: str, profile: str, **overrides) -> train.Config:
    """``train.config(profile, method=name, **overrides)``: the profile's budget, shared by all
    methods, with the method's own defaults (kept under this name for older callers)."""
    return train.config(profile, **{"method": name, **overrides})


def like_with_like(method_names) -> list[str]:
    """``method_names``, with ``pgd_at_gauss`` added after ``pgd_at`` when a DYNAT method is
    compared with PGD-AT: DYNAT starts its attack at x + 0.001 N(0, I), Madry's PGD-AT at a
    uniform point of the ball, and with a 2-3 step training attack the start alone moves
    accuracy; PGD-AT with DYNAT's start changes one thing at a time."""
    names = list(dict.fromkeys(method_names))
    if ("pgd_at" in names and "pgd_at_gauss" not in names
            and any(n.startswith("dynat") for n in names)):
        names.insert(names.index("pgd_at") + 1, "pgd_at_gauss")
    return names


def evaluate_method(result: train.Result, *, n_eval: int, attacks, seed: int,
                    n_check: int | None, folder: Path | None = None, log=print) -> dict:
    """The robustness report of a trained target as a dict, cached in ``folder/report.json``."""
    settings = {"n_eval": n_eval, "attacks": list(attacks), "seed": seed, "n_check": n_check,
                "epochs_trained": len(result.history)}
    cache = folder / REPORT if folder is not None else None
    if cache is not None and cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("settings") == settings:
            log(f"  evaluation: reused {cache}")
            return saved
    x, y = result.dataset.x_test[:n_eval], result.dataset.y_test[:n_eval]
    report = robustness_report(result.target, x, y, attacks=attacks, seed=seed,
                               checks=n_check != 0, n_check=n_check)
    log("  " + ", ".join(f"{attack_title(k)} {v:.1%}" for k, v in report.accuracy.items())
        + f" ({sum(report.seconds.values()):.0f} s)"
        + ("" if not report.checks else "; sanity checks: " + ("ok" if report.ok else
           "FAILED: " + "; ".join(c.name for c in report.failed))))
    saved = {"settings": settings, **report.to_dict()}
    if cache is not None:
        cache.write_text(json.dumps(saved, indent=1))
    return saved


def compare(method_names, *, profile: str = "cpu", out: str | Path, dataset: str | None = None,
            seed: int = 0, n_eval: int | None = 500, attacks=DEFAULT_ATTACKS,
            n_check: int | None = 200, overrides: dict | None = None,
            progress=False, log=print, shipped: bool = False, png: bool = True) -> list[dict]:
    """Train (or load) and evaluate each method; returns one row per method (see ``row``).

    Every method gets the same config but for ``method`` and its own defaults (random start,
    settings: ``train.config``): same data, seed, epochs, attack budget. ``n_eval`` test images
    are evaluated (None: all loaded). ``shipped``: a method whose run is one of the models the
    kit ships for the lessons (``lesson_models``) is loaded from there instead of trained.
    ``png``: also draw the figure as figure.png (kaleido starts a browser: seconds a call).
    """
    out = Path(out)
    if not list(method_names):
        raise ValueError("No methods to compare: give --methods, e.g. dynat,pgd_at.")
    for what, value, least in (("n_eval", n_eval, 1), ("n_check", n_check, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < least):
            raise ValueError(f"{what} must be an integer >= {least} (n_check 0: no sanity "
                             f"checks), got {value!r}.")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder: name a folder.")
    out.mkdir(parents=True, exist_ok=True)
    with train.claim_run_folder(out):  # one compare per folder at a time
        return _compare(method_names, profile=profile, out=out, dataset=dataset, seed=seed,
                        n_eval=n_eval, attacks=attacks, n_check=n_check, overrides=overrides,
                        progress=progress, log=log, shipped=shipped, png=png)


def _compare(method_names, *, profile, out: Path, dataset, seed, n_eval, attacks, n_check,
             overrides, progress, log, shipped, png) -> list[dict]:
    """``compare`` in the folder it owns."""
    overrides = dict(overrides or {})
    if dataset is not None:
        overrides["dataset"] = dataset
    overrides["seed"] = seed
    settings = {"profile": profile, "overrides": overrides, "n_eval": n_eval,
                "attacks": list(attacks), "n_check": n_check}
    earlier = earlier_rows(out, settings)
    names = like_with_like(method_names)
    if names != list(method_names):
        log("adding pgd_at_gauss: PGD-AT with DYNAT's attack start, beside Madry's uniform one")
    cfgs = [train.config(profile, method=name, **overrides) for name in names]
    base = cfgs[0]
    data = data_lib.load(base.dataset, root=base.data_root, n_train=base.n_train,
                         n_test=base.n_test, seed=base.seed)
    n = len(data.y_test) if n_eval is None else min(n_eval, len(data.y_test))
    rows = [r for r in earlier if r["method"] not in names]  # an earlier call's, same settings
    for cfg in cfgs:
        folder = out / cfg.method
        log(f"== {cfg.method}: {methods.get(cfg.method).description}")
        t0 = time.perf_counter()
        if shipped and (name := lesson_models.install(cfg, folder)) is not None:
            log(f"  {lesson_models.describe(name)}")
        result = train.fit(cfg, out=folder, dataset=data, progress=progress)
        log(f"  trained {len(result.history)} epochs ({time.perf_counter() - t0:.0f} s now)")
        report = evaluate_method(result, n_eval=n, attacks=attacks, seed=seed, n_check=n_check,
                                 folder=folder, log=log)
        rows.append(row(cfg.method, result.history, report, start=cfg.random_start))
        # after every method: what a rerun resumes from (the table and figure come at the end)
        (out / RESULTS).write_text(json.dumps({"settings": settings, "rows": rows}, indent=1,
                                              default=str))
    write_outputs(rows, out, png=png)
    return rows


def row(name: str, history: list[dict], report: dict, start: str | None = None) -> dict:
    """One line of the table: the training attack's random start, accuracies (fractions),
    seconds, whether the target collapsed in the last epoch (``diagnostics``), and the
    checks' verdict."""
    failed = [c["name"] for c in report.get("checks", []) if not c["passed"]]
    secs = report.get("seconds", {})
    return {"method": name, "description": methods.get(name).description,
            "start": start if methods.get(name).attack else "none",
            **{k: round(v, 4) for k, v in report["accuracy"].items()},
            "train_s": round(sum(h.get("train_seconds", 0.0) for h in history), 1),
            "eval_s": round(sum(secs.values()), 1), "n_eval": report["n"],
            "collapsed": "yes" if history and history[-1].get("collapsed") else "no",
            "checks": ("not run" if not report.get("checks") else
                       "ok" if not failed else "FAILED: " + "; ".join(failed))}


def collapse_table(rows: list[dict], out: str | Path) -> dict[str, dict]:
    """Method -> :func:`diagnostics.collapse_summary` of its run in the folder ``out`` that
    ``compare`` trained it in (the history ``train.fit`` stored in its checkpoint), for each
    row of ``rows`` in order."""
    return {r["method"]: diagnostics.collapse_summary(
                train.load_checkpoint(Path(out) / r["method"] / train.CHECKPOINT)["history"])
            for r in rows}


def collapse_text(table: dict[str, dict]) -> str:
    """``collapse_table``'s result as a fixed-width text table, one line per method."""
    lines = [f"{'method':<14} {'epochs':>6} {'samples':>8} {'last sample':>12}  collapsed in"]
    for name, e in table.items():
        last = "—" if e["last_step"] is None else f"step {e['last_step']}"
        lines.append(f"{name:<14} {e['epochs']:>6} {e['samples']:>8} {last:>12}  {e['verdict']}")
    return "\n".join(lines)


def _columns(rows):
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _is_accuracy(column: str) -> bool:
    """Does ``column`` hold an accuracy: an attack's, or the worst case?"""
    if column in ATTACK_TITLES:
        return True
    try:
        attack_function(column)
        return True
    except ValueError:
        return False


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, accuracies in percent."""
    cols = [c for c in _columns(rows) if c != "description"]
    head = [attack_title(c) for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{100 * v:.1f}" if _is_accuracy(c) and isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def robust_column(rows: list[dict]) -> str:
    """The strongest attack present in the rows: worst case, else AutoAttack, else PGD-20."""
    for name in ("aa_standard", "aa_fast", "worst_case", "cw", "pgd20", "pgd10", "fgsm"):
        if rows and all(name in r for r in rows):
            return name
    raise ValueError("The rows hold no robust accuracy; evaluate at least one attack.")


def figure(rows: list[dict], robust: str | None = None):
    """Clean vs robust accuracy, one point per method: ``viz.clean_vs_robust`` of the rows, on
    the strongest attack they hold unless ``robust`` names one."""
    from . import viz

    robust = robust or robust_column(rows)
    return viz.clean_vs_robust(rows, robust, robust_title=attack_title(robust))


def write_outputs(rows: list[dict], out: str | Path, png: bool = True) -> dict:
    """results.csv, results.md, figure.html (and figure.png with kaleido, unless not ``png``)
    into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(markdown_table(rows) + "\n")
    fig = figure(rows)
    fig.write_html(out / "figure.html", include_plotlyjs="cdn")
    paths = {"csv": out / "results.csv", "md": out / "results.md", "html": out / "figure.html"}
    if not png:
        return paths
    try:
        import kaleido  # noqa: F401
        fig.write_image(out / "figure.png")
        paths["png"] = out / "figure.png"
    except Exception:  # no kaleido, or no browser for it: the HTML figure is enough
        pass
    return paths


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m dynat_lite compare",
        description="Train methods on the same budget and seed, evaluate, write a table and "
                    "a clean-vs-robust figure. Finished methods are not retrained.")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated; registered: {', '.join(methods.METHODS)}")
    p.add_argument("--profile", default="cpu", choices=list(train.PROFILES))
    p.add_argument("--dataset", default=None,
                   help="cifar10, cifar100, synthetic or a path to an .npz (default: the "
                        "profile's)")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per method)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-eval", type=int, default=500, help="test images evaluated")
    p.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS),
                   help="comma-separated: clean, fgsm, pgd-N (e.g. pgd-20), cw, aa_fast, "
                        "aa_standard")
    p.add_argument("--n-check", type=int, default=200,
                   help="images for the sanity checks (0: skip them)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the profile's)")
    p.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command line entry: ``python -m dynat_lite compare ...``. Returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    try:
        for name in names:
            methods.get(name)
        for attack in attacks:
            attack_function(attack)  # an unknown name raises, naming the valid ones
        overrides = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train),
                                       ("device", args.device)) if v is not None}
        rows = compare(names, profile=args.profile, out=args.out, dataset=args.dataset,
                       seed=args.seed, n_eval=args.n_eval, attacks=attacks,
                       n_check=args.n_check, overrides=overrides, progress=args.progress,
                       log=lambda msg: print(msg, flush=True))
    except (ValueError, data_lib.DatasetError, train.CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(rows))
    print(f"Wrote {Path(args.out) / 'results.csv'}, results.md and figure.html.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

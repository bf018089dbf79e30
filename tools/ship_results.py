"""Copy what a finished study measured into results/NAME, to ship with the kit.

    python tools/ship_results.py RUN_FOLDER results/NAME --command "python -m dynat_lite study ..."

Copies study.json and, for every run, history.json and final.json (never checkpoints), rewrites
summary.csv and summary.md from those files (``dynat_lite.study.summarize``), draws the study's
figures as PNG (needs kaleido), and writes README.md with the command and the commit that
produced them.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dynat_lite import study, viz  # noqa: E402


def copy_measurements(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "study.json", dst / "study.json")
    for run in sorted(p for p in src.iterdir() if (p / study.FINAL).exists()):
        (dst / run.name).mkdir(exist_ok=True)
        for name in (study.HISTORY, study.FINAL):
            shutil.copy2(run / name, dst / run.name / name)


def figures(dst: Path) -> list[str]:
    """The study's figures as PNG files in ``dst``; returns their names."""
    rows, written = study.summarize(dst), []
    hist = study.histories(dst)
    if any("train_pgd" in h[0] for h in hist.values()):
        viz.study_curves(hist, title=f"{dst.name}: PGD-10 accuracy after every epoch"
                         ).write_image(dst / "curves.png", scale=1)
        written.append("curves.png")
    if all("pgd20" in r for r in rows):
        viz.study_tradeoff(rows, "pgd20", robust_title="PGD-20",
                           title=f"{dst.name}: clean vs PGD-20 accuracy, 95 % intervals"
                           ).write_image(dst / "tradeoff.png", scale=1)
        written.append("tradeoff.png")
    if any(h and h[0].get("steps") for h in hist.values()):
        viz.step_diagnostics(hist, title=f"{dst.name}: per-step diagnostics"
                             ).write_image(dst / "steps.png", scale=1)
        written.append("steps.png")
    return written


def readme(dst: Path, command: str, pngs: list[str], commit: str | None = None) -> str:
    commit = commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                      text=True, cwd=Path(__file__).resolve().parents[1]
                                      ).stdout.strip()
    meta = __import__("json").loads((dst / "study.json").read_text())
    finished = {r["run"] for r in study.summarize(dst)}
    missing = [r for r in meta["runs"] if r not in finished]
    lines = [f"# Study `{meta['study']}`", "", meta["question"], "",
             f"*Budget:* {meta['budget']}.", "",
             "Produced by", "", "```bash", command, "```", "",
             f"at commit `{commit}` of dynat-lite, on CIFAR-10 (a JPEG-compressed copy: "
             "accuracies on it run slightly below those on the original pixels). Each run's "
             "folder holds its per-epoch history and its final evaluation; `summary.csv` and "
             "`summary.md` are computed from them alone (`dynat_lite.study.summarize`), with "
             "95 % Wilson intervals.", "", study.markdown(study.summarize(dst)), ""]
    if missing:
        lines += [f"**Not finished:** {', '.join(missing)} (of {len(meta['runs'])} runs; the CPU "
                  f"time ran out). The same command resumes the study and runs them.", ""]
    lines += [f"![{p}]({p})" for p in pngs]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--command", required=True, help="the command that ran the study")
    p.add_argument("--commit", help="the commit the runs were made at (default: HEAD)")
    p.add_argument("--no-figures", action="store_true",
                   help="keep the figures already there (they do not show the extra attacks)")
    args = p.parse_args(argv)
    copy_measurements(args.src, args.dst)
    study.write_summary(study.summarize(args.dst), args.dst)
    pngs = (sorted(p.name for p in args.dst.glob("*.png")) if args.no_figures
            else figures(args.dst))
    (args.dst / "README.md").write_text(readme(args.dst, args.command, pngs, args.commit))
    print(f"shipped {args.src} -> {args.dst}: {', '.join(pngs) or 'no figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the lessons: run each with papermill under a profile and print its wall-clock seconds.

    python tools/time_lessons.py                              # smoke profile, lessons 00-04
    python tools/time_lessons.py --profile cpu --dataset cifar10
    python tools/time_lessons.py --profile cpu --dataset /path/to/cifar10.npz 00 03

The lessons run in order in fresh kernels, sharing one models folder (as ``make run``), so a
model an earlier lesson trained is loaded by a later one, as it is for a student working through
them. Executed copies and each lesson's results.json go to ``--out`` (default
``runs/timing-PROFILE``); the figures printed are the seconds per lesson, their total, and the
headline numbers each lesson wrote. Timings belong here, never in tests.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def lessons(prefixes: list[str]) -> list[Path]:
    """The lesson notebooks whose names start with one of ``prefixes`` (all 00-04 if none)."""
    prefixes = prefixes or ["00", "01", "02", "03", "04"]
    found = [nb for p in prefixes for nb in sorted(NOTEBOOKS.glob(f"{p}*.ipynb"))]
    if not found:
        raise SystemExit(f"no lesson matches {prefixes}; lessons are {NOTEBOOKS}/NN_*.ipynb")
    return found


def run(nb: Path, out: Path, profile: str, dataset: str | None, timeout: int) -> float:
    """Execute ``nb`` with papermill; return its wall-clock seconds."""
    import papermill

    params = {"PROFILE": profile, "OUT_DIR": str(out / nb.stem), "MODELS_DIR": str(out / "models")}
    if dataset:
        params["DATASET"] = dataset
    t0 = time.perf_counter()
    papermill.execute_notebook(str(nb), str(out / nb.name), parameters=params, cwd=str(NOTEBOOKS),
                               kernel_name="python3", execution_timeout=timeout,
                               progress_bar=False)
    return time.perf_counter() - t0


def headline(results: dict) -> dict:
    """The scalar results of a lesson's results.json, and its final table if it has one."""
    keep = {k: v for k, v in results.items() if isinstance(v, (int, float, str))}
    for key in ("final", "table"):
        if key in results:
            keep[key] = results[key]
    return keep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson number prefixes, e.g. 00 03")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--dataset", default=None, help="the profile's dataset if not given")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.dataset and Path(args.dataset).suffix == ".npz":
        args.dataset = str(Path(args.dataset).resolve())
    out = (args.out or ROOT / "runs" / f"timing-{args.profile}").resolve()
    out.mkdir(parents=True, exist_ok=True)

    seconds = {}
    for nb in lessons(args.lessons):
        seconds[nb.stem] = run(nb, out, args.profile, args.dataset, args.timeout)
        results = out / nb.stem / "results.json"
        summary = headline(json.loads(results.read_text())) if results.exists() else {}
        print(f"{nb.stem}: {seconds[nb.stem]:.0f} s  {json.dumps(summary)}", flush=True)
    print(f"total: {sum(seconds.values()):.0f} s for {len(seconds)} lessons "
          f"(profile {args.profile}, dataset {args.dataset or 'the profile default'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

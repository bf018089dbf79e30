"""Time the lessons: run each with papermill under a profile and print its wall-clock seconds.

    python tools/time_lessons.py --profile smoke              # every lesson, smoke profile
    python tools/time_lessons.py --profile cpu --dataset cifar10 00 01 02 03 04
    python tools/time_lessons.py --profile cpu --dataset /path/to/cifar10.npz 00 03

The lessons run in order in fresh kernels (``python3``: the Python of the environment this runs
in), sharing one models folder (as ``make run``), so a model an earlier lesson trained is loaded
by a later one, as it is for a student working through them. Executed copies and each lesson's
results.json go to ``--out`` (default ``runs/timing-PROFILE``; a folder an earlier timing wrote is
emptied first, so nothing trained before is reused; any other folder must be empty or new).

It prints a line per lesson as it finishes (seconds and the headline numbers it wrote) and the
seconds of each of its sections (the cells under each ``## `` heading, from papermill's per-cell
durations; the set-up before the first heading counts as "set-up"), then a table to paste into
the README: the seconds per lesson and their total, the date, the machine
(CPU, cores, GPU), its load average while the lessons ran (other work on the machine slows them)
and the command. Timings belong here, never in tests. The measurements are also saved, as
``times.json`` in ``--out``, for ``--write``:

    python tools/time_lessons.py --write runs/timing-smoke runs/timing-cpu

writes the measured times into the lessons themselves: in each parameters cell, the line that
describes a profile (``# cpu:   ...``) ends with this lesson's time on it, and, from a ``cpu``
timing (the lab profile), every ``## `` heading ends with its section's time (``⏱ 2 min``). Run
``make student`` afterwards: the student versions carry the same times.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_html import hide_kernel_noise  # noqa: E402


def lessons(prefixes: list[str]) -> list[Path]:
    """The lesson notebooks whose names start with one of ``prefixes`` (every lesson if none)."""
    found = [nb for p in prefixes or [""] for nb in sorted(NOTEBOOKS.glob(f"{p}*.ipynb"))
             if nb.name[:2].isdigit()]
    if not found:
        raise SystemExit(f"no lesson matches {prefixes}; lessons are {NOTEBOOKS}/NN_*.ipynb")
    return found


def run(nb: Path, out: Path, profile: str, dataset: str | None, timeout: int) -> float:
    """Execute ``nb`` with papermill; return its wall-clock seconds.

    Every folder the lesson writes to is under ``out`` (results, shared models, checkpoints), so
    nothing of an earlier run is resumed; only the parameters the lesson declares are passed.
    """
    import papermill

    params = {"PROFILE": profile, "OUT_DIR": str(out / nb.stem), "MODELS_DIR": str(out / "models"),
              "CKPT_DIR": str(out / "checkpoints")}
    if dataset:
        params["DATASET"] = dataset
    declared = papermill.inspect_notebook(str(nb))
    params = {k: v for k, v in params.items() if k in declared}
    t0 = time.perf_counter()
    with hide_kernel_noise():
        papermill.execute_notebook(str(nb), str(out / nb.name), parameters=params, cwd=str(NOTEBOOKS),
                                   kernel_name="python3", execution_timeout=timeout,
                                   engine_name="dynat", progress_bar=False)
    return time.perf_counter() - t0


def section_seconds(nb) -> dict[str, float]:
    """Seconds spent in each ``## `` section of an executed notebook (papermill's cell durations).

    Cells before the first such heading are the "set-up"; a section's time is the sum of its
    cells' durations, so time spent between cells (starting the kernel) is not in any section.
    """
    seconds: dict[str, float] = {"set-up": 0.0}
    current = "set-up"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("## "):
                    current = TIMED_HEADING.match(line).group(1)[3:].strip()  # without a ⏱ time
                    seconds.setdefault(current, 0.0)
        seconds[current] += float(cell.metadata.get("papermill", {}).get("duration") or 0.0)
    return seconds


def human(seconds: float) -> str:
    """A duration as a student reads it: "40 s" under a minute, else minutes to the half."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 30) / 2:g} min"


PROFILE_LINE = re.compile(r"^(# (\w+):\s.*?)(\s+— this lesson: .*)?$")
TIMED_HEADING = re.compile(r"^(## .*?)(\s+⏱ .*)?$")
LAB_PROFILE = "cpu"  # the profile whose section times the headings show


def annotate(nb, profile: str, seconds: float, sections: dict[str, float] | None = None,
             where: str = "here") -> int:
    """Write measured times into lesson ``nb`` (in place); returns how many lines changed.

    * The parameters cell's comment line for ``profile`` (``# cpu:   ...``) ends with
      ``— this lesson: 2.5 min on a 2-core CPU`` (``where``; a time written before is replaced).
    * With ``sections`` (a ``section_seconds`` of the same lesson), every ``## `` heading whose
      section was measured ends with ``⏱`` and the section's time; a section of under a second
      (reading only) gets none.
    """
    changed = 0

    def edit(cell, fn) -> None:
        nonlocal changed
        lines = cell.source.split("\n")
        new = [fn(line) for line in lines]
        changed += sum(a != b for a, b in zip(lines, new))
        cell.source = "\n".join(new)

    def profile_line(line: str) -> str:
        found = PROFILE_LINE.match(line)
        if not found or found.group(2) != profile:
            return line
        return f"{found.group(1)} — this lesson: {human(seconds)} {where}"

    def heading(line: str) -> str:
        found = TIMED_HEADING.match(line)
        if not found:
            return line
        title = found.group(1)
        s = sections.get(title[3:].strip())
        if s is None:
            return line
        return f"{title} ⏱ {human(s)}" if s >= 1 else title

    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            edit(cell, profile_line)
        elif cell.cell_type == "markdown" and sections is not None:
            edit(cell, heading)
    return changed


def ran_as(results: dict, profile: str) -> str:
    """The profile a lesson ran (its results.json's "profile"; a lesson that records none ran
    the one asked for): lesson 05 without a GPU runs "smoke" whatever it is asked."""
    return results.get("profile", profile)


def write_times(folders: list[Path]) -> int:
    """Write the times saved in each timing folder (``times.json``) into the lessons; a lesson
    that ran another profile than the one timed (``ran_as``) keeps its times."""
    for folder in folders:
        saved = json.loads((folder / "times.json").read_text())
        for stem, seconds in saved["seconds"].items():
            ran = saved.get("ran_as", {}).get(stem, saved["profile"])
            if ran != saved["profile"]:
                print(f"{stem}: ran {ran}, not {saved['profile']}: its times are left as they are")
                continue
            path = NOTEBOOKS / f"{stem}.ipynb"
            nb = nbformat.read(path, as_version=4)
            sections = saved["sections"][stem] if saved["profile"] == LAB_PROFILE else None
            changed = annotate(nb, saved["profile"], seconds, sections, saved.get("where", "here"))
            if changed:
                nbformat.write(nb, path)
            print(f"{path.name}: {changed} line(s) updated from {folder.name} ({saved['profile']})")
    return 0


def headline(results: dict) -> dict:
    """The scalar results of a lesson's results.json, and its final table if it has one."""
    keep = {k: v for k, v in results.items() if isinstance(v, (int, float, str))}
    for key in ("final", "table"):
        if key in results:
            keep[key] = results[key]
    return keep


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine() -> str:
    """The CPU model and cores this runs on, and the GPU if torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = cpu_cores()
    text = f"{cpu}, {cores} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
        text += f", torch {torch.__version__}"
    except ImportError:
        pass
    return text


def short_machine() -> str:
    """Where the lessons ran, in a few words: "on a 2-core CPU", or "on an NVIDIA H100 ..."."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"on an {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"on a {cpu_cores()}-core CPU"


def load_average() -> float | None:
    """The machine's load average over the last minute (None where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def table(seconds: dict[str, float], command: str, when: str, where: str) -> str:
    """The timings as a Markdown table, with the date, the machine and the command under it."""
    rows = ["| lesson | seconds |", "|---|---:|"]
    rows += [f"| `{name}` | {s:.0f} |" for name, s in seconds.items()]
    rows.append(f"| total | {sum(seconds.values()):.0f} |")
    rows.append("")
    rows.append(f"Measured {when} on {where}: `{command}`.")
    return "\n".join(rows)


MARK = ".time_lessons"


def fresh_folder(out: Path) -> Path:
    """``out``, empty: every lesson trains what it needs. Only a folder this tool wrote is cleared."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARK).exists():
            raise SystemExit(f"{out} is not empty and was not written by this tool: pass an empty "
                             "or new folder with --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARK).write_text("written by tools/time_lessons.py; emptied when it runs again\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson number prefixes, e.g. 00 03 (default: all)")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--dataset", default=None, help="the profile's dataset if not given")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--write", type=Path, nargs="+", metavar="TIMING_FOLDER",
                        help="write the times saved in these folders into the lessons; run nothing")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.write:
        return write_times(args.write)
    command = " ".join(["python tools/time_lessons.py", *(sys.argv[1:] if argv is None else argv)])
    if args.dataset and Path(args.dataset).suffix == ".npz":
        args.dataset = str(Path(args.dataset).resolve())
    out = fresh_folder((args.out or ROOT / "runs" / f"timing-{args.profile}").resolve())

    seconds, sections, loads, ran = {}, {}, [load_average()], {}
    for nb in lessons(args.lessons):
        seconds[nb.stem] = run(nb, out, args.profile, args.dataset, args.timeout)
        loads.append(load_average())
        results = out / nb.stem / "results.json"
        found = json.loads(results.read_text()) if results.exists() else {}
        ran[nb.stem] = ran_as(found, args.profile)
        summary = headline(found)
        print(f"{nb.stem}: {seconds[nb.stem]:.0f} s  {json.dumps(summary)}", flush=True)
        sections[nb.stem] = section_seconds(nbformat.read(out / nb.name, as_version=4))
        for section, s in sections[nb.stem].items():
            print(f"    {s:6.0f} s  {section}", flush=True)
    print(f"total: {sum(seconds.values()):.0f} s for {len(seconds)} lessons "
          f"(profile {args.profile}, dataset {args.dataset or 'the profile default'})\n")
    where = machine()
    if None not in loads:
        where += f", load average {min(loads):.1f}-{max(loads):.1f} while they ran"
    when = datetime.date.today().isoformat()
    print(table(seconds, command, when, where))
    (out / "times.json").write_text(json.dumps(
        {"profile": args.profile, "dataset": args.dataset, "command": command, "date": when,
         "machine": where, "where": short_machine(), "seconds": seconds, "sections": sections,
         "ran_as": ran}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

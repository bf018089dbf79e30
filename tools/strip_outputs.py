"""Strip a notebook of what running it adds: outputs, execution counts, saved widget state.

Lessons are stored without outputs, so that a diff shows only what an author changed. This script
keeps them that way, in two roles:

    python tools/strip_outputs.py < lesson.ipynb > stripped.ipynb   # a filter (stdin -> stdout)
    python tools/strip_outputs.py notebooks/*.ipynb                 # in place (make clean)
    python tools/strip_outputs.py --check notebooks/*.ipynb         # exit 1 if one has outputs

As a filter it is the *clean* filter git runs on every ``*.ipynb`` before storing it
(``.gitattributes``; ``make lab`` registers the filter for the clone with ``git config``), so
outputs never reach git, even when a student commits a notebook they ran: the working copy keeps
its outputs, the stored copy has none.

A notebook that has nothing to strip is passed through byte for byte, so git never sees a change
that is not there. Otherwise it is written the way JupyterLab and ``nbformat`` write notebooks
(sorted keys, one-space indent, UTF-8). Only the standard library is used: git may run this with
any Python 3.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

#: Cell metadata that running a cell adds: timings (JupyterLab, the ExecuteTime extension),
#: papermill's record, and how the outputs were shown (collapsed, scrolled).
RUN_CELL_METADATA = ("execution", "ExecuteTime", "papermill", "collapsed", "scrolled")
#: Notebook metadata that running a notebook adds (saved widget state, papermill's record).
RUN_NOTEBOOK_METADATA = ("widgets", "papermill")


def strip(nb: dict) -> dict:
    """``nb`` (a parsed notebook) with outputs, execution counts and run metadata removed, in place."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        meta = cell.get("metadata", {})
        for key in RUN_CELL_METADATA:
            meta.pop(key, None)
    for key in RUN_NOTEBOOK_METADATA:
        nb.get("metadata", {}).pop(key, None)
    return nb


def strip_text(text: str) -> str:
    """A notebook's JSON text, stripped; the same text when there was nothing to strip."""
    nb = json.loads(text)
    before = json.dumps(nb, sort_keys=True)
    strip(nb)
    if json.dumps(nb, sort_keys=True) == before:
        return text
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    check = "--check" in args
    paths = [Path(a) for a in args if a != "--check"]
    if check:
        dirty = [p for p in paths if strip_text(p.read_text(encoding="utf-8")) != p.read_text(encoding="utf-8")]
        for path in dirty:
            print(f"has outputs: {path} (strip them with `make clean`)")
        return 1 if dirty else 0
    if not paths:  # a filter: git hands the file on stdin and stores what comes out
        text = sys.stdin.buffer.read().decode("utf-8")
        sys.stdout.buffer.write(strip_text(text).encode("utf-8"))
        return 0
    for path in paths:
        old = path.read_text(encoding="utf-8")
        new = strip_text(old)
        if new != old:
            path.write_text(new, encoding="utf-8")
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

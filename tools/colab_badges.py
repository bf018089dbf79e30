"""Point every lesson's "Open in Colab" badge and install line at the project's repository.

The repository URL is set once, in pyproject.toml::

    [project.urls]
    Repository = "https://github.com/OWNER/REPO"

and this script rewrites, in every ``notebooks/*.ipynb``, exactly two kinds of line:

* the badge ``[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](TARGET)``
  gets TARGET = ``https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/NAME.ipynb``
  (lessons are written with the placeholder target ``(COLAB_URL)``);
* the set-up cell's ``%pip install -q "dynat-lite @ git+URL"`` gets URL = the repository URL.

Nothing else in a notebook changes: the file is edited as text, line by line, so its JSON layout,
metadata and cell ids stay as they were. Run it after changing the URL or adding a lesson::

    python tools/colab_badges.py            # rewrite the notebooks
    python tools/colab_badges.py --check    # exit 1 (and list them) if any is out of date
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
BRANCH = "main"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

# Inside the notebook's JSON text a line of a cell is a JSON string, so quotes appear as \".
_BADGE = re.compile(r"(\[!\[Open In Colab\]\(" + re.escape(BADGE_IMAGE) + r"\)\]\()([^)\s]*)(\))")
_INSTALL = re.compile(r'(%pip install -q \\"dynat-lite @ git\+)([^"\\]*)(\\")')


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The ``Repository`` entry of ``[project.urls]``, without a trailing slash or ``.git``."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    try:
        url = data["project"]["urls"]["Repository"]
    except KeyError:
        raise SystemExit(
            f"{pyproject}: no [project.urls] Repository entry; add e.g. "
            'Repository = "https://github.com/OWNER/REPO"'
        ) from None
    url = url.rstrip("/").removesuffix(".git")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"{pyproject}: Repository = {url!r} is not https://github.com/OWNER/REPO")
    return url


def colab_url(repo_url: str, notebook_name: str) -> str:
    """The Colab address that opens ``notebooks/<notebook_name>`` from the main branch of the repo."""
    owner_repo = repo_url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/notebooks/{notebook_name}"


def rewrite(text: str, repo_url: str, notebook_name: str) -> str:
    """The notebook's JSON text with its badge targets and install URLs set; all else unchanged."""
    target = colab_url(repo_url, notebook_name)
    text = _BADGE.sub(lambda m: m.group(1) + target + m.group(3), text)
    return _INSTALL.sub(lambda m: m.group(1) + repo_url + m.group(3), text)


def links(nb: dict) -> tuple[list[str], list[str]]:
    """The badge targets and the install URLs found in a parsed notebook (for checks and tests)."""
    badges, installs = [], []
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        # Match on the decoded text: re-encode it the way the JSON file spells it.
        encoded = json.dumps(source)
        badges += [m.group(2) for m in _BADGE.finditer(encoded)]
        installs += [m.group(2) for m in _INSTALL.finditer(encoded)]
    return badges, installs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is out of date")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)

    repo_url = repository_url()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    stale = []
    for path in paths:
        old = path.read_text(encoding="utf-8")
        new = rewrite(old, repo_url, path.name)
        if new == old:
            continue
        stale.append(path)
        if not args.check:
            json.loads(new)  # never write a notebook that no longer parses
            path.write_text(new, encoding="utf-8")
    verb = "out of date" if args.check else "updated"
    for path in stale:
        print(f"{verb}: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"{len(paths)} notebook(s), {len(stale)} {verb}; repository {repo_url}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

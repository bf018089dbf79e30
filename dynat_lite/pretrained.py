"""Trained models that ship with the kit: the small CNNs of the trade-off study, trained longer
than a lesson can afford.

    from dynat_lite import pretrained
    pretrained.available()                 # ["dynat-s0", "pgd_at-s0", ...]
    pretrained.info("dynat-s0")["metrics"] # {"clean": 0.71, "pgd20": 0.38, "n": 1000, ...}
    model = pretrained.load("dynat-s0")    # the target network, in eval mode

Each model is one ``.safetensors`` file (tensors only: loading runs no code) listed in
``manifest.json`` beside it, with its sha256, the training config and the accuracies measured
after training. Both live in the folder ``weights/pretrained/`` inside the package, so they are
found whether the kit is installed from a checkout (``pip install -e .``) or from git.

A manifest entry may also give a ``url``: a file that is not shipped is then downloaded once
into a cache folder (``$DYNAT_LITE_CACHE``, default ``~/.cache/dynat-lite``). Every file is
checked against its sha256 before it is loaded; a damaged or different file is never used.
``tools/export_pretrained.py`` turns a finished training run into a file and its entry.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch.nn as nn

from . import fast, models
from .config import resolve_device

#: The folder of shipped weights and their manifest (inside the package).
FOLDER = Path(__file__).resolve().parent / "weights" / "pretrained"
MANIFEST = "manifest.json"
#: The environment variable naming the download cache, and the cache used when it is unset.
CACHE_ENV = "DYNAT_LITE_CACHE"
#: What every manifest entry must hold to be checked and loaded.
REQUIRED = ("file", "sha256", "model", "num_classes")
DEFAULT_CACHE = Path("~/.cache/dynat-lite")
#: Seconds to wait for a download server before giving up.
TIMEOUT = 60


class PretrainedError(RuntimeError):
    """A pretrained model that cannot be used; the message says why and what to do."""


class ChecksumError(PretrainedError):
    """A weights file whose sha256 differs from the manifest's."""


class DownloadError(PretrainedError):
    """A weights file that could not be downloaded (offline, server down, wrong URL)."""


# -------------------------------------------------------------------------------- the manifest
def manifest_path(folder: str | Path | None = None) -> Path:
    """The manifest file of ``folder`` (None: the shipped ``FOLDER``)."""
    return Path(folder if folder is not None else FOLDER) / MANIFEST


def read_manifest(folder: str | Path | None = None) -> dict:
    """The manifest of ``folder`` as a dict {name: entry}; an absent manifest is an empty one."""
    path = manifest_path(folder)
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PretrainedError(f"{path} is not valid JSON ({err}). Restore it, or re-export the "
                              f"models with tools/export_pretrained.py.") from err
    if not isinstance(manifest, dict):
        raise PretrainedError(f"{path} must hold a JSON object {{name: entry}}, not "
                              f"{type(manifest).__name__}.")
    return manifest


def write_manifest(manifest: dict, folder: str | Path | None = None) -> Path:
    """Write ``manifest`` (sorted, indented) atomically: a temporary file, then a rename."""
    path = manifest_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def available(folder: str | Path | None = None) -> list[str]:
    """The names of the pretrained models, sorted."""
    return sorted(read_manifest(folder))


def info(name: str, folder: str | Path | None = None) -> dict:
    """The manifest entry of ``name`` (a copy): file, sha256, model, num_classes, the training
    ``config``, the ``metrics`` (accuracies as fractions, ``n`` test images, dataset, protocol)
    and a description."""
    manifest = read_manifest(folder)
    if name not in manifest:
        names = ", ".join(sorted(manifest)) or "none (the manifest is empty)"
        raise ValueError(f"Unknown pretrained model {name!r}. Available: {names}.")
    entry = manifest[name]
    missing = [k for k in REQUIRED if not isinstance(entry, dict) or k not in entry]
    if missing:
        raise PretrainedError(f"The manifest entry of {name!r} ({manifest_path(folder)}) lacks "
                              f"{', '.join(missing)}: it cannot be checked or loaded. Re-export "
                              f"the model with tools/export_pretrained.py.")
    return copy.deepcopy(entry)


def table(folder: str | Path | None = None) -> str:
    """A Markdown table of the pretrained models: method, accuracies, test images."""
    rows = ["| name | method | clean | PGD-20 | test images | dataset |",
            "|---|---|---:|---:|---:|---|"]
    for name in available(folder):
        entry = info(name, folder)
        m = entry.get("metrics", {})
        pct = {k: f"{m[k]:.1%}" if isinstance(m.get(k), float) else "" for k in ("clean", "pgd20")}
        rows.append(f"| {name} | {entry.get('config', {}).get('method', '')} | {pct['clean']} | "
                    f"{pct['pgd20']} | {m.get('n', '')} | {m.get('dataset', '')} |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------- the files
def sha256_of(path: str | Path) -> str:
    """The sha256 of a file, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """The folder downloads go to: ``$DYNAT_LITE_CACHE``, else ``~/.cache/dynat-lite``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cached_path(entry: dict, cache: str | Path | None = None) -> Path:
    """Where a downloaded file of ``entry`` is kept: its name with the first 12 digits of its
    sha256 added, so that a newer version of a model never meets an older download."""
    file = Path(entry["file"])
    folder = Path(cache) if cache is not None else cache_dir()
    return folder / f"{file.stem}-{entry['sha256'][:12]}{file.suffix}"


def fetch(name: str, folder: str | Path | None = None, *,
          cache: str | Path | None = None) -> Path:
    """The local file of model ``name``, its sha256 checked: the shipped file if it is there,
    else the cached download, else downloaded now from the entry's ``url`` into the cache."""
    entry = info(name, folder)
    shipped = Path(folder if folder is not None else FOLDER) / entry["file"]
    if shipped.exists():
        check_sha256(shipped, entry["sha256"],
                     f"Reinstall dynat-lite (or restore {entry['file']} from the repository, or "
                     f"re-export it with tools/export_pretrained.py) and try again.")
        return shipped
    if not entry.get("url"):
        raise PretrainedError(f"The weights of {name!r} are missing: expected {shipped}, and the "
                              f"manifest gives no URL to download them from. Reinstall "
                              f"dynat-lite, or re-export the model with "
                              f"tools/export_pretrained.py.")
    target = cached_path(entry, cache)
    if not target.exists():
        download(entry["url"], target, entry["sha256"], name=name)
    check_sha256(target, entry["sha256"],
                 f"Delete {target} and load the model again: it will be downloaded afresh.")
    return target


def check_sha256(path: Path, expected: str, what_to_do: str) -> None:
    """Raise a ChecksumError (saying ``what_to_do``) unless ``path`` has sha256 ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(f"{path} is damaged or is not the file the manifest lists: its "
                            f"sha256 is {actual}, the manifest expects {expected}. {what_to_do}")


def download(url: str, target: Path, sha256: str, *, name: str = "") -> Path:
    """Download ``url`` to ``target``: into a temporary file beside it, checked against
    ``sha256``, then renamed, so that ``target`` is never a partial or wrong file."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=target.parent, prefix=".write-test-")
        probe.close()
    except OSError as err:
        raise DownloadError(f"The download cache {target.parent} cannot be written "
                            f"({type(err).__name__}: {err.strerror or err}). Set ${CACHE_ENV} "
                            f"to a folder you can write, or pass cache=... .") from err
    digest = hashlib.sha256()

    def copy_response(f):
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                f.write(block)
        if digest.hexdigest() != sha256:
            raise ChecksumError(f"The file downloaded from {url} has sha256 "
                                f"{digest.hexdigest()}, the manifest expects {sha256}: the URL "
                                f"serves a different file. Nothing was saved; check the URL "
                                f"in the manifest, or update dynat-lite.")

    try:
        _atomic_write(target, copy_response)
    except (urllib.error.URLError, OSError) as err:  # offline, refused, 404, timeout
        raise DownloadError(
            f"Could not download the pretrained model {name!r} from {url} "
            f"({type(err).__name__}: {getattr(err, 'reason', err)}). It is looked for at "
            f"{target} (sha256 {sha256}). Connect to the internet and try again, or download "
            f"the file on another machine and copy it to that path (or into the folder that "
            f"${CACHE_ENV} names).") from err
    return target


def _atomic_write(path: Path, write) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``;
    on any error the temporary file is removed and ``path`` is left as it was."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------------------------- load
def load(name: str, folder: str | Path | None = None, *, device: str = "cpu",
         cache: str | Path | None = None) -> nn.Module:
    """The pretrained target network ``name``, on ``device``, in eval mode.

    The weights file is checked against the manifest's sha256 first (see :func:`fetch`). The
    network is built with ``models.create(entry["model"], entry["num_classes"])`` and kept in
    the memory layout it was trained in, as ``train.load_model`` does.
    """
    from safetensors.torch import load as load_tensors

    entry = info(name, folder)
    path = fetch(name, folder, cache=cache)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:  # changed since fetch checked it
        raise ChecksumError(f"{path} changed while it was being loaded; try again.")
    model = models.create(entry["model"], entry["num_classes"])
    try:
        model.load_state_dict(load_tensors(data))
    except RuntimeError as err:
        raise PretrainedError(f"The weights of {name!r} ({path}) do not fit a {entry['model']} "
                              f"network with {entry['num_classes']} classes ({err}). The "
                              f"manifest entry is wrong: re-export the model with "
                              f"tools/export_pretrained.py.") from err
    device = resolve_device(device)  # a device that is not there: one line saying what is
    model.to(device)
    channels_last = entry.get("config", {}).get("channels_last", True)
    fast.prepare(model, channels_last=fast.use_channels_last(device, channels_last))
    return model.eval()

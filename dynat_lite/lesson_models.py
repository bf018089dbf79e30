"""The models the lessons train on the ``cpu`` profile, shipped trained with the kit.

On a 2-core CPU the lessons' small CNNs take minutes each to train (2 epochs on 8,000 CIFAR-10
images); lesson 06 alone trains thirteen. So the kit ships them, trained by its own commands with
exactly the lessons' configs (``tools/export_lesson_models.py``), and a lesson loads a shipped
model instead of training it when the run it asks for is one of them::

    from dynat_lite import lesson_models
    lesson_models.find(cfg)              # the manifest entry of cfg's run, or None
    lesson_models.install(cfg, folder)   # write it into folder as a finished run

``install`` writes an ordinary checkpoint (the weights, the training history, the config) into
the run folder the lesson would have trained into: from then on ``train.fit`` loads it like any
finished run, and the next lesson finds it there. A lesson's ``RETRAIN = True`` skips the
shipped models and trains.

What "the same run" means: the same ``train.run_key`` (every config field that decides what is
computed), with one exception: the dataset ``"cifar10"`` and an ``.npz`` file named
``cifar10.npz`` count as the same dataset. The shipped models were trained on a JPEG-compressed
copy of CIFAR-10 read from such a file (the manifest says so); a lesson on the original images
loads them all the same, and says where they come from.

Each model is one ``.safetensors`` file (the target's and the guide's tensors, floating ones in
half precision when the export measured no change in accuracy; the training history in its
metadata) and its entry in ``manifest.json``: sha256, the config, the lessons that use it, the
accuracies measured at export.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from . import train
from .runs import CHECKPOINT, save_checkpoint

#: The folder of the shipped lesson models and their manifest (inside the package).
FOLDER = Path(__file__).resolve().parent / "weights" / "pretrained" / "lessons"
MANIFEST = "manifest.json"
#: The profile whose models are shipped.
PROFILE = "cpu"
#: The models each lesson trains on that profile, by method (every one with the profile's
#: settings and the lesson's seed; lesson 06 compares them with ``compare.compare``).
LESSONS: dict[str, tuple[str, ...]] = {
    "00_threat_model": ("standard",),
    "02_inner_optimizer": ("standard",),
    "03_dynat_training": ("standard", "pgd_at", "pgd_at_gauss", "dynat", "dynat_static"),
    "04_evaluation": ("standard", "pgd_at", "dynat"),
    "06_baselines_and_ablations": ("dynat", "pgd_at", "pgd_at_gauss", "trades", "mart",
                                   "gairat", "mail", "lbgat", "dynat_gairat", "dynat_static",
                                   "dynat_soft", "dynat_kl", "dynat_mse"),
}
#: Where the shipped models' training images came from, as the manifest and lessons say it.
TRAINED_ON = "CIFAR-10 (JPEG copy)"


def canonical_dataset(name: str) -> str:
    """"cifar10" for the dataset "cifar10" and for any ``.../cifar10.npz``; else ``name``."""
    return "cifar10" if Path(str(name)).name in ("cifar10", "cifar10.npz") else str(name)


def key(cfg: train.Config) -> dict:
    """``train.run_key(cfg)`` with the dataset named by :func:`canonical_dataset`."""
    k = train.run_key(cfg)
    return {**k, "dataset": canonical_dataset(k["dataset"])}


def key_hash(cfg: train.Config) -> str:
    """A short hash of :func:`key`: the name of the model's file."""
    text = json.dumps(key(cfg), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def read_manifest(folder: str | Path | None = None) -> dict:
    """{name: entry} of ``folder`` (None: the shipped ``FOLDER``); none there: {}."""
    path = Path(folder if folder is not None else FOLDER) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def find(cfg: train.Config, folder: str | Path | None = None) -> tuple[str, dict] | None:
    """(name, entry) of the shipped model trained with ``cfg``'s run, or None."""
    name = f"{cfg.method}-{key_hash(cfg)}"
    entry = read_manifest(folder).get(name)
    return (name, entry) if entry is not None else None


def load_file(name: str, entry: dict, folder: str | Path | None = None) -> tuple[dict, list]:
    """The shipped model's tensors {"target.*": ..., "guide.*": ...} and its training history,
    checked against the file's sha256 (a damaged file raises ``pretrained.ChecksumError``)."""
    from safetensors import safe_open

    from . import pretrained

    path = Path(folder if folder is not None else FOLDER) / entry["file"]
    pretrained.check_sha256(path, entry["sha256"],
                            f"Reinstall the kit, or pass RETRAIN = True to train {name} here.")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safe_open)
        history = json.loads(f.metadata()["history"])
    return tensors, history


def split(tensors: dict) -> tuple[dict, dict | None]:
    """{"target.w": t, "guide.w": g} -> ({"w": t}, {"w": g}); no guide tensors: None."""
    parts = {"target": {}, "guide": {}}
    for k, v in tensors.items():
        part, _, rest = k.partition(".")
        parts[part][rest] = v
    return parts["target"], parts["guide"] or None


def install(cfg: train.Config, out: str | Path, folder: str | Path | None = None) -> str | None:
    """Write the shipped model of ``cfg``'s run into the run folder ``out`` as a finished run;
    return its name. Nothing is written (None) when ``out`` already holds a finished run or no
    shipped model matches."""
    out = Path(out)
    found = find(cfg, folder)
    if found is None or train._finished(out, cfg):
        return None
    name, entry = found
    tensors, history = load_file(name, entry, folder)
    target, guide = split(tensors)
    nets = train.build(cfg, entry["num_classes"], torch.device("cpu"))
    nets.target.load_state_dict(target)  # half precision -> the network's float32
    if nets.guide is not None:
        nets.guide.load_state_dict(guide)
    optimizer = train.make_optimizer(cfg, nets)  # a finished run is never stepped again
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / CHECKPOINT, {
        "format": 1, "config": cfg.to_dict(), "epoch": cfg.epochs,
        "target": nets.target.state_dict(),
        "guide": nets.guide.state_dict() if nets.guide is not None else None,
        "optimizer": optimizer.state_dict(), "history": history,
        "device_type": "cpu", "cpu_threads": torch.get_num_threads(), "shipped": name})
    return name


def describe(name: str, folder: str | Path | None = None) -> str:
    """One line for the lesson: which shipped model it loaded and how it was made."""
    entry = read_manifest(folder)[name]
    return (f"loaded the shipped model {name} (trained by the kit with this lesson's config on "
            f"{entry['trained_on']}; RETRAIN = True trains it here instead)")


def lesson_configs(lesson: str, *, profile: str = PROFILE, **settings) -> list[train.Config]:
    """The configs of the models ``lesson`` (a key of ``LESSONS``) trains on ``profile``, with
    ``settings`` (e.g. ``dataset``) as the lesson passes them."""
    return [train.config(profile, method=m, **settings) for m in LESSONS[lesson]]

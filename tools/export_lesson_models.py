"""Train the models the lessons train on the ``cpu`` and ``smoke`` profiles, and ship them.

    python tools/export_lesson_models.py --dataset data/cifar10.npz     # the cpu profile's
    python tools/export_lesson_models.py --profile smoke                 # smoke's (synthetic)

For every model ``dynat_lite.lesson_models`` ships for the profile (``PROFILES``, ``LESSONS``;
each once, however many lessons use it): ``train.fit_or_load`` with the config the lesson's own
call builds (the profile, seed 0, the given dataset on ``cpu``), in ``--models-dir`` (a finished
run there is reused), then

* its target and guide into ``dynat_lite/weights/pretrained/lessons/NAME.safetensors`` (NAME =
  the method and a hash of the run's key; the training history in the file's metadata);
* the accuracies of the model as trained (float32) and after the round trip through half
  precision: clean on the whole test set, PGD-20 on its first ``--n-pgd`` images. The file keeps
  half precision only if neither accuracy moved by more than one standard error; else float32;
* its entry in ``manifest.json``: file, sha256, config, lessons, where its images came from
  (and ``lesson_models.data_fingerprint`` of them: a test regenerates the synthetic set and
  compares), those accuracies.

The other profile's entries are kept. Entries of models no lesson trains any more are removed
with their files. ``--trained-only``
exports only the models already trained in ``--models-dir``. The lessons then load
these models (``lesson_models.install``) unless their ``RETRAIN = True``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

from dynat_lite import data, evaluate, lesson_models, pretrained, train

ROOT = Path(__file__).resolve().parents[1]
#: The lessons' seed (every lesson's parameters cell: SEED = 0).
SEED = 0


def unique_configs(dataset: str, profiles=tuple(lesson_models.PROFILES),
                   ) -> dict[str, tuple[train.Config, list[str]]]:
    """{name: (config, the lessons that train it)} over every model shipped for ``profiles``:
    the ``cpu`` profile's on ``dataset``, the others' on their profile's own dataset."""
    found: dict[str, tuple[train.Config, list[str]]] = {}
    for profile in profiles:
        settings = dict(dataset=dataset) if profile == "cpu" else {}
        for lesson, cfg in lesson_models.shipped_configs(profile, seed=SEED, **settings):
            name = f"{cfg.method}-{lesson_models.key_hash(cfg)}"
            found.setdefault(name, (cfg, []))[1].append(lesson)
    return found


def half_round_trip(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose floating tensors went through float16 and back."""
    twin = copy.deepcopy(model)
    twin.load_state_dict({k: v.half() if v.is_floating_point() else v
                          for k, v in model.state_dict().items()})
    return twin


def accuracies(model, ds: data.Dataset, n_pgd: int) -> dict:
    """Clean accuracy on the whole test set, PGD-20 on the first ``n_pgd`` test images."""
    model = model.eval()
    clean = evaluate.robustness_report(model, ds.x_test, ds.y_test, attacks=["clean"],
                                       seed=SEED, checks=False).accuracy["clean"]
    pgd = evaluate.robustness_report(model, ds.x_test[:n_pgd], ds.y_test[:n_pgd],
                                     attacks=["pgd20"], seed=SEED,
                                     checks=False).accuracy["pgd20"]
    return {"clean": clean, "pgd20": pgd}


def within_noise(a: float, b: float, n: int) -> bool:
    """|a - b| at most one standard error of an accuracy a measured on n images."""
    return abs(a - b) <= math.sqrt(max(a * (1 - a), 1 / n) / n)


def tensors_of(result: train.Result, half: bool) -> dict[str, torch.Tensor]:
    """{"target.*", "guide.*"}: floating tensors in float16 (``half``) or float32, contiguous."""
    out = {}
    for part, net in (("target", result.target), ("guide", result.guide)):
        if net is None:
            continue
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                v = v.half() if half else v.float()
            out[f"{part}.{k}"] = v.detach().cpu().contiguous()
    return out


def holds(file: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bool:
    """Does ``file`` already hold exactly ``tensors`` and ``metadata``? (safetensors may lay the
    same contents out in another order, so a rewrite would change the file's bytes.)"""
    from safetensors import safe_open

    if not file.exists():
        return False
    with safe_open(str(file), "pt") as f:
        return (f.metadata() == metadata and set(f.keys()) == set(tensors)
                and all(_identical(f.get_tensor(k), v) for k, v in tensors.items()))


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a, b)


def export_one(name: str, cfg: train.Config, lessons: list[str], result: train.Result,
               folder: Path, n_pgd: int, trained_on: str) -> dict:
    """Measure, write ``NAME.safetensors``, and return the manifest entry."""
    from safetensors.torch import save_file

    ds = result.dataset
    full = accuracies(result.target, ds, n_pgd)
    halved = accuracies(half_round_trip(result.target), ds, n_pgd)
    half = (within_noise(full["clean"], halved["clean"], len(ds.y_test))
            and within_noise(full["pgd20"], halved["pgd20"], n_pgd))
    file = folder / f"{name}.safetensors"
    tensors = tensors_of(result, half)
    metadata = {"name": name, "history": json.dumps(result.history)}
    if not holds(file, tensors, metadata):  # the same contents keep the same bytes (and sha256)
        save_file(tensors, str(file), metadata=metadata)
    config = {k: (Path(v).name if k in ("dataset", "data_root") else v)
              for k, v in cfg.to_dict().items()}
    return {
        "file": file.name, "sha256": pretrained.sha256_of(file),
        "size_mb": round(file.stat().st_size / 1e6, 2), "half_precision": half,
        "method": cfg.method, "num_classes": ds.num_classes, "config": config,
        "lessons": lessons, "trained_on": trained_on,
        "data": lesson_models.data_fingerprint(ds),
        "accuracy": {"n_clean": len(ds.y_test), "n_pgd20": n_pgd, "float32": full,
                     "half_round_trip": halved,
                     "protocol": "eval mode; PGD-20 with steps of 2/255 and a uniform random "
                                 "start at eps 8/255, dynat_lite.evaluate, seed 0"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(lesson_models.PROFILES), default="cpu",
                        help="whose models to train and export (the others' entries are kept)")
    parser.add_argument("--dataset", default=None,
                        help="the CIFAR-10 the cpu profile's models train on: cifar10, or a "
                             "cifar10.npz (required with --profile cpu)")
    parser.add_argument("--models-dir", default=str(ROOT / "runs" / "models"),
                        help="where the runs are trained (finished ones are reused)")
    parser.add_argument("--out", default=str(lesson_models.FOLDER))
    parser.add_argument("--n-pgd", type=int, default=200)
    parser.add_argument("--diagnose-every", type=int, default=2,
                        help="per-step diagnostics in the history (lesson 03's setting)")
    parser.add_argument("--trained-only", action="store_true",
                        help="export only the models with a finished run in --models-dir "
                             "(train none); the others keep their entries, or stay missing")
    args = parser.parse_args(argv)
    if args.profile == "cpu" and lesson_models.canonical_dataset(str(args.dataset)) != "cifar10":
        parser.error("the lessons' cpu profile trains on CIFAR-10: give --dataset cifar10 or a "
                     "cifar10.npz")
    dataset = args.dataset or "cifar10"  # names do not depend on where CIFAR-10 is read from
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = unique_configs(dataset)
    manifest = {k: v for k, v in lesson_models.read_manifest(folder).items() if k in wanted}
    for name, (cfg, lessons) in unique_configs(dataset, (args.profile,)).items():
        extra = {"data_root": str(Path(args.dataset).parent)} if args.profile == "cpu" else {}
        cfg = train.Config(**{**cfg.to_dict(), "diagnose_every": args.diagnose_every, **extra})
        if args.trained_only and not train._finished(train.run_folder(cfg, args.models_dir),
                                                     cfg):
            print(f"{name}: not trained in {args.models_dir}; "
                  + ("its shipped entry is kept" if name in manifest else "not shipped"))
            continue
        t0 = time.perf_counter()
        result = train.fit_or_load(cfg, args.models_dir, progress=False)
        manifest[name] = export_one(name, cfg, lessons, result, folder, args.n_pgd,
                                    lesson_models.TRAINED_ON[args.profile])
        acc = manifest[name]["accuracy"]
        print(f"{name}: {manifest[name]['size_mb']} MB, half {manifest[name]['half_precision']}, "
              f"clean {acc['float32']['clean']:.3f} -> {acc['half_round_trip']['clean']:.3f}, "
              f"PGD-20 {acc['float32']['pgd20']:.3f} -> {acc['half_round_trip']['pgd20']:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for old in set(lesson_models.read_manifest(folder)) - set(wanted):
        (folder / f"{old}.safetensors").unlink(missing_ok=True)
    (folder / lesson_models.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(e["size_mb"] for e in manifest.values())
    print(f"{len(manifest)} models, {total:.1f} MB in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export a finished training run as a pretrained model of the kit.

    python tools/export_pretrained.py results/tradeoff/dynat-s0 --name dynat-s0

reads ``RUN/checkpoint.pt`` (written by ``dynat_lite.train.fit``) and ``RUN/final.json`` (the
final evaluation a study writes: ``{"n": ..., "eps": ..., "accuracy": {"clean": ..., ...}}``),
and writes, into ``dynat_lite/weights/pretrained/`` (``--out`` to choose another folder):

* ``NAME.safetensors``: the target network's state dict (parameters and buffers), floating
  tensors as float32, every tensor contiguous -- about 1.3 MB for the small CNN;
* its entry in ``manifest.json``: file, sha256, model, num_classes, the training config, the
  metrics (accuracies as fractions, the number of test images, dataset, protocol) and a
  description. ``--url`` adds the address the file can also be downloaded from.

``dynat_lite.pretrained.load(NAME)`` then gives the network back, checked against the sha256.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from dynat_lite import pretrained, train

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Files larger than this are refused (the kit keeps each model small).
MAX_MB = 2.5
#: How the metrics name the dataset a config trained on.
DATASET_TITLES = {"cifar10.npz": "CIFAR-10 (JPEG copy)", "cifar10": "CIFAR-10",
                  "cifar100": "CIFAR-100", "synthetic": "synthetic (dynat_lite.data.synthetic)"}
#: How the protocol describes each attack of dynat_lite.evaluate.
ATTACK_PROTOCOLS = {
    "clean": "clean",
    "fgsm": "FGSM",
    "pgd10": "PGD-10 (cross-entropy, steps of 2/255, uniform random start)",
    "pgd20": "PGD-20 (cross-entropy, steps of 2/255, uniform random start)",
    "cw": "C&W-inf (PGD on the margin loss, 30 steps)",
    "aa_fast": "AutoAttack fast (APGD-CE, APGD-T)",
    "aa_standard": "AutoAttack standard",
    "worst_case": "worst case (an image counts only if it survives every attack)",
}


def dataset_title(dataset: str) -> str:
    """The name the metrics give the dataset of a config ("data/cifar10.npz" -> the JPEG copy)."""
    return DATASET_TITLES.get(Path(dataset).name, Path(dataset).name)


def protocol(final: dict) -> str:
    """A sentence saying how the accuracies of ``final`` were measured."""
    attacks = ", ".join(ATTACK_PROTOCOLS.get(a, a) for a in final["accuracy"])
    return (f"The first {final['n']} images of the run's test set, once after the last epoch, "
            f"in eval mode and "
            f"float32; L-inf budget eps = {final['eps'] * 255:.3g}/255. Attacks: {attacks}. Measured "
            f"with dynat_lite.evaluate.robustness_report, seed {final.get('seed', 0)}.")


def portable_config(config: dict) -> dict:
    """The config with absolute paths (dataset, data_root) cut to their last part: a manifest
    never names a folder of the machine the run was trained on."""
    return {k: Path(v).name if isinstance(v, str) and Path(v).is_absolute() else v
            for k, v in config.items()}


def weights(state_dict: dict) -> dict[str, torch.Tensor]:
    """The tensors to save: floating ones as float32, all contiguous, on the CPU."""
    return {k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in state_dict.items()}


def load_final(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"No final evaluation at {path}. A study writes it when a run "
                                f"is done (python -m dynat_lite study ...); or pass --final.")
    final = json.loads(path.read_text())
    if not {"n", "accuracy"} <= set(final) or "clean" not in final["accuracy"]:
        raise ValueError(f"{path} is not a final evaluation: it needs 'n' and 'accuracy' with "
                         f"a 'clean' entry.")
    return final


def export(run: str | Path, name: str, *, final: str | Path | None = None,
           out: str | Path | None = None, url: str | None = None,
           description: str | None = None, dataset: str | None = None,
           max_mb: float = MAX_MB) -> dict:
    """Write ``NAME.safetensors`` and its manifest entry into ``out``; return the entry."""
    from safetensors.torch import save_file

    if not NAME.fullmatch(name):
        raise ValueError(f"Invalid name {name!r}: use letters, digits, '.', '_' and '-'.")
    run = Path(run)
    state = train.load_checkpoint(run)
    config = portable_config(state["config"])
    if state["epoch"] < config["epochs"]:
        raise ValueError(f"{run} is not finished: {state['epoch']} of {config['epochs']} epochs "
                         f"trained. Let the run finish first.")
    final_json = load_final(Path(final) if final is not None else run / "final.json")
    tensors = weights(state["target"])
    folder = Path(out) if out is not None else pretrained.FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"{name}.safetensors"
    save_file(tensors, str(file), metadata={"name": name, "model": config["model"]})
    size_mb = file.stat().st_size / 1e6
    if size_mb > max_mb:
        file.unlink()
        raise ValueError(f"{file.name} would be {size_mb:.1f} MB, over the {max_mb} MB a "
                         f"pretrained model of the kit may take (--max-mb to change).")
    title = dataset or dataset_title(config["dataset"])
    entry = {
        "file": file.name,
        "sha256": pretrained.sha256_of(file),
        "model": config["model"],
        "num_classes": int(tensors["fc.weight"].shape[0]),
        "config": config,
        "metrics": {**final_json["accuracy"], "n": final_json["n"], "dataset": title,
                    "protocol": protocol({**final_json, "seed": config["seed"]})},
        "description": description or (
            f"{config['method']} ({config['model']}), seed {config['seed']}: {config['epochs']} "
            f"epoch(s) on {config['n_train'] or 'all'} training images of {title}."),
    }
    if url:
        entry["url"] = url
    manifest = pretrained.read_manifest(folder)
    manifest[name] = entry
    pretrained.write_manifest(manifest, folder)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a run folder holding checkpoint.pt (and final.json)")
    parser.add_argument("--name", required=True, help="the model's name in the manifest")
    parser.add_argument("--final", help="the final evaluation JSON (default: RUN/final.json)")
    parser.add_argument("--out", help="the folder of weights and manifest "
                                      "(default: dynat_lite/weights/pretrained)")
    parser.add_argument("--url", help="an address the file can also be downloaded from")
    parser.add_argument("--description", help="one sentence about the model")
    parser.add_argument("--dataset", help="the dataset's name in the metrics "
                                          "(default: from the config)")
    parser.add_argument("--max-mb", type=float, default=MAX_MB)
    args = parser.parse_args(argv)
    entry = export(args.run, args.name, final=args.final, out=args.out, url=args.url,
                   description=args.description, dataset=args.dataset, max_mb=args.max_mb)
    metrics = entry["metrics"]
    print(f"{args.name}: {entry['file']} ({entry['sha256'][:12]}...), clean "
          f"{metrics['clean']:.1%} on {metrics['n']} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

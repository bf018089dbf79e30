"""The per-step diagnostics' measurements on the shipped models (``dynat_lite.diagnostics.probe``):
for runs trained before the diagnostics existed, whether a target is collapsed (flat output, few
classes) or capped (spread and classes like its baselines', trained on labels often wrong).

    python tools/probe_models.py --dataset data/cifar10.npz --n 1000 --out results/tradeoff/probe.json

Reads the first ``--n`` test images of the dataset the models were trained on.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dynat_lite import data, diagnostics, pretrained  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    ds = data.load(args.dataset, n_train=1, n_test=None, seed=0)
    x, y = ds.x_test[:args.n], ds.y_test[:args.n]
    found = {name: diagnostics.probe(pretrained.load(name), x, y)
             for name in pretrained.available()}
    Path(args.out).write_text(json.dumps({"n_test": len(y), "models": found}, indent=1) + "\n")
    for name, got in found.items():
        print(f"{name:>22}: spread {got['logit_spread']:.2f}, {got['classes_predicted']} classes, "
              f"top class {got['top_class_share']:.0%}, clean {got['clean_accuracy']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

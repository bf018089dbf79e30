"""What the per-step diagnostics cost: the training step of the `cpu` profile (small CNN guide and
target, batch 64, PGD-2) with the diagnostics off, every 10 steps (the default) and every step.

    python tools/bench_diagnostics.py [--steps 40] [--repeats 3] [--device cpu]

The three settings are timed in turns, ``--repeats`` times each, on synthetic images of CIFAR's
shape (the step's cost does not depend on the pixels); it prints the median images per second of
each and the overhead against "off". A figure, not a test: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dynat_lite import data, train  # noqa: E402


def time_epoch(every: int, steps: int, device: str, ds) -> float:
    """Images per second of one epoch of ``steps`` DYNAT steps with ``diagnose_every=every``."""
    cfg = train.config("cpu", method="dynat", dataset="synthetic", n_train=64 * steps,
                       diagnose_every=every, device=device)
    dev = train.resolve_device(device)
    nets = train.prepare(cfg, train.build(cfg, ds.num_classes, dev), dev)
    optimizer = train.make_optimizer(cfg, nets)
    batches = data.Batches(ds.x_train, ds.y_train, cfg.batch_size, device=dev,
                           augment=cfg.augment, seed=cfg.seed)
    t0 = time.perf_counter()
    train.train_epoch(cfg, nets, optimizer, batches, 0)
    return len(batches) * cfg.batch_size / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    ds = data.load("synthetic", n_train=64 * args.steps, n_test=64, seed=0)
    time_epoch(0, 2, args.device, ds)  # warm-up
    rates = {0: [], 10: [], 1: []}
    for _ in range(args.repeats):
        for every in rates:
            rates[every].append(time_epoch(every, args.steps, args.device, ds))
    base = statistics.median(rates[0])
    print(f"DYNAT step, cpu profile (small CNN x 2, batch 64, PGD-2), {args.steps} steps, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}:")
    for every, r in rates.items():
        label = "off" if every == 0 else f"every {every} step{'s' if every > 1 else ''}"
        rate = statistics.median(r)
        print(f"  diagnostics {label:>14}: {rate:7.1f} img/s   overhead {100 * (base / rate - 1):+5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

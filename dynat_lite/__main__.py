"""The command line: the lessons' code, headless.

    python -m dynat_lite train --profile paper --method dynat --out runs/wrn
    python -m dynat_lite train --out runs/wrn                 # resume it (config from the run)
    torchrun --nproc_per_node=4 -m dynat_lite train --profile paper --out runs/wrn
    python -m dynat_lite evaluate runs/wrn                    # clean, FGSM, PGD-20, C&W-inf
    python -m dynat_lite evaluate runs/wrn --autoattack       # ... and AutoAttack (standard)
    python -m dynat_lite bench                                # training step speed
    python -m dynat_lite compare ...                          # see its --help
    python -m dynat_lite study tradeoff --out results/tradeoff  # a named, resumable study

``train`` resumes from the checkpoint in ``--out`` whenever there is one (run the same command
again after an interruption). Installed with pip, ``dynat-lite`` is the same command.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# What `train` may override; the profile (or the run being resumed) gives everything else.
OVERRIDES = ("method", "model", "guide_model", "dataset", "epochs", "batch_size", "seed",
             "device", "n_train", "n_test", "lr", "steps", "n_eval")


def _size(text: str):
    """An image count, or "all" (None: the whole split)."""
    return None if text.lower() == "all" else int(text)


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train (or resume) a run",
                       description="Train a method; resumes from the checkpoint in --out.")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt and history.json")
    p.add_argument("--profile", help="smoke, cpu, gpu or paper (default: the run's own config "
                                     "when resuming, else smoke)")
    p.add_argument("--method", help="dynat, pgd_at, trades, lbgat, ... (see dynat_lite.methods)")
    p.add_argument("--model", help="target network: wrn-34-10, resnet18, small-cnn, ...")
    p.add_argument("--guide-model", dest="guide_model", help="guide network (default resnet18 "
                                                            "in the paper profile)")
    p.add_argument("--dataset", help="cifar10, cifar100, synthetic or a path to an .npz")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int,
                   help="global batch (split over the processes under torchrun)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--n-train", dest="n_train", type=_size, help="training images, or all")
    p.add_argument("--n-test", dest="n_test", type=_size, help="test images, or all")
    p.add_argument("--n-eval", dest="n_eval", type=int, help="test images evaluated per epoch")
    p.add_argument("--lr", type=float)
    p.add_argument("--steps", type=int, help="PGD steps of the training attack")
    p.add_argument("--compile", action="store_true", help="torch.compile both networks")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA too (no bf16)")
    p.add_argument("--no-fast", action="store_true", help="the plain step instead of the fast one")
    p.add_argument("--no-channels-last", dest="no_channels_last", action="store_true",
                   help="keep the default memory layout (channels_last is used on CUDA and CPU)")
    p.add_argument("--no-cuda-graphs", dest="no_cuda_graphs", action="store_true",
                   help="launch the attack's kernels one by one (a CUDA graph is the default)")
    p.add_argument("--data-root", dest="data_root", help="where datasets download (default data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="robust accuracy of a trained network",
                       description="Clean, FGSM, PGD-20 and C&W-inf accuracy (AutoAttack with "
                                   "--autoattack) of a checkpoint's target network, in float32.")
    p.add_argument("checkpoint", help="a run folder or its checkpoint.pt")
    p.add_argument("--attacks", help="comma-separated (default clean,fgsm,pgd20 and cw)")
    p.add_argument("--autoattack", action="store_true", help="add AutoAttack (standard)")
    p.add_argument("--n", type=_size, default=1000, help="test images (default 1000; or all)")
    p.add_argument("--which", choices=("target", "guide"), default="target")
    p.add_argument("--dataset", help="default: the run's own dataset")
    p.add_argument("--data-root", dest="data_root", help="where datasets download")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", dest="batch_size", type=int,
                   help="images per batch (default: 256 on a GPU, 64 on a CPU)")
    p.add_argument("--checks", action="store_true", help="also run the sanity checks")
    p.add_argument("--json", help="write the accuracies to this JSON file")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m dynat_lite", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    sub.add_parser("bench", help="time the training step (see --help)", add_help=False)
    sub.add_parser("compare", help="compare methods (see --help)", add_help=False)
    sub.add_parser("study", help="run a named study of the paper's claims (see --help)",
                   add_help=False)
    return top


# ------------------------------------------------------------------------------------- train
def train_config(args):
    """The run's Config: ``--profile`` with the flags, or, when resuming without a profile,
    the checkpoint's own config with the flags on top."""
    from . import train

    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    if args.data_root:
        overrides["data_root"] = args.data_root
    if args.compile:
        overrides["compile"] = True
    if args.no_amp:
        overrides["amp"] = False
    if args.no_fast:
        overrides["fast"] = False
    if args.no_channels_last:
        overrides["channels_last"] = False
    if args.no_cuda_graphs:
        overrides["cuda_graphs"] = False
    ckpt = Path(args.out) / train.CHECKPOINT
    if args.profile is None and ckpt.exists():
        base = train.load_checkpoint(ckpt)["config"]
        cfg = train.Config.from_dict({**base, **overrides})
        train.validate(cfg)
        return cfg
    return train.config(args.profile or "smoke", **overrides)


def cmd_train(args) -> int:
    from . import distributed, train

    ctx = distributed.init()
    try:
        cfg = train_config(args)
        main = ctx is None or ctx.is_main
        if main:
            where = f" on {ctx.world} processes" if ctx is not None else ""
            print(f"training {cfg.method}: target {cfg.model}, guide {cfg.guide_model}, "
                  f"{cfg.dataset}, {cfg.epochs} epochs, batch {cfg.batch_size}{where} "
                  f"-> {args.out}", flush=True)
        def report(record):
            print(train.epoch_summary(record, cfg.epochs), flush=True)

        result = train.fit(cfg, out=args.out, progress=not args.no_progress and main,
                           on_epoch=report)
        if main:
            (Path(args.out) / "history.json").write_text(json.dumps(result.history, indent=1))
            print(f"done: checkpoint in {Path(args.out) / train.CHECKPOINT}")
    finally:
        distributed.close()
    return 0


# ---------------------------------------------------------------------------------- evaluate
def default_attacks(autoattack: bool = False) -> tuple[str, ...]:
    """clean, FGSM, PGD-20, and C&W-inf / AutoAttack where dynat_lite.evaluate offers them."""
    from .evaluate import ATTACKS

    wanted = ["clean", "fgsm", "pgd20", "cw"] + (["aa_standard"] if autoattack else [])
    return tuple(a for a in wanted if a in ATTACKS)


def cmd_evaluate(args) -> int:
    from . import data, evaluate, train

    state = train.load_checkpoint(args.checkpoint)
    cfg = train.Config.from_dict(state["config"])
    device = train.resolve_device(args.device)
    model = train.load_model(args.checkpoint, which=args.which, device=str(device))
    ds = data.load(args.dataset or cfg.dataset, root=args.data_root or cfg.data_root,
                   n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed)
    n = len(ds.y_test) if args.n is None else min(args.n, len(ds.y_test))
    x, y = ds.x_test[:n], ds.y_test[:n]
    attacks = tuple(args.attacks.split(",")) if args.attacks else default_attacks(args.autoattack)
    print(f"evaluating the {args.which} of {args.checkpoint} ({cfg.method}, "
          f"{cfg.model if args.which == 'target' else cfg.guide_model}) on {n} test images of "
          f"{ds.name}, eps 8/255, float32", flush=True)
    if hasattr(evaluate, "robustness_report"):
        report = evaluate.robustness_report(model, x, y, attacks=attacks,
                                            batch_size=args.batch_size, checks=args.checks)
        print(report)
        result = report.to_dict()
    else:
        result = {"n": n, "accuracy": evaluate.evaluate(model, x, y, attacks=attacks,
                                                        batch_size=args.batch_size)}
        for name, acc in result["accuracy"].items():
            print(f"{name:>12}: {acc:.1%}")
    result.update(checkpoint=str(args.checkpoint), which=args.which, epoch=state["epoch"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


# -------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dynat_lite`` and of the ``dynat-lite`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # bench and compare parse their own arguments.
    if argv and argv[0] == "bench":
        from . import bench

        return bench.main(argv[1:])
    if argv and argv[0] == "study":
        from . import study

        return study.main(argv[1:])
    if argv and argv[0] == "compare":
        import importlib
        import importlib.util

        if importlib.util.find_spec("dynat_lite.compare") is None:
            print("error: `compare` is not available in this version of dynat-lite.",
                  file=sys.stderr)
            return 2
        compare = importlib.import_module("dynat_lite.compare")
        return compare.main(argv[1:]) or 0
    args = parser().parse_args(argv)
    from .data import DatasetError
    from .train import CheckpointError

    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate}[args.command](args)
    except (ValueError, CheckpointError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

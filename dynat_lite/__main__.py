"""The command line: the lessons' code, headless.

    python -m dynat_lite train --profile paper --method dynat --out runs/wrn
    python -m dynat_lite train --out runs/wrn                 # resume it (config from the run)
    torchrun --nproc_per_node=4 -m dynat_lite train --profile paper --out runs/wrn
    python -m dynat_lite evaluate runs/wrn                    # clean, FGSM, PGD-20, C&W-inf
    python -m dynat_lite evaluate runs/wrn --autoattack       # ... and AutoAttack (standard)
    python -m dynat_lite evaluate runs/wrn --protocol authors --epoch best  # see --help
    python -m dynat_lite bench                                # training step speed
    python -m dynat_lite compare ...                          # see its --help
    python -m dynat_lite study tradeoff --out results/tradeoff  # a named, resumable study

``train`` resumes from the checkpoint in ``--out`` whenever there is one (run the same command
again after an interruption). Installed with pip, ``dynat-lite`` is the same command.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

def _size(text: str):
    """A positive image count, or "all" (None: the whole split)."""
    if text.lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of images or 'all', "
                                         f"got {text!r}")
    return n


def _number(text: str) -> float:
    """A number, or a fraction such as 8/255."""
    try:
        top, _, bottom = text.partition("/")
        return float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.1 or 8/255, got "
                                         f"{text!r}") from None


def _number_or_none(text: str):
    return None if text.lower() == "none" else _number(text)


def _text_or_none(text: str):
    return None if text.lower() == "none" else text


def _numbers(text: str) -> tuple:
    return tuple(_number(t) for t in text.split(",") if t.strip())


def _mapping(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"beta\": 3}}', "
                                         f"got {text!r}")
    return value


#: How a flag reads a Config field, by the field's annotation.
_READERS = {"int": int, "int | None": _size, "float": _number, "float | None": _number_or_none,
            "str": str, "str | None": _text_or_none, "tuple": _numbers, "dict": _mapping}

#: Help of each Config field's flag (a field without an entry still gets its flag).
FIELD_HELP = {
    "method": "dynat, pgd_at, trades, lbgat, ... (see dynat_lite.methods)",
    "dataset": "cifar10, cifar100, synthetic or a path to an .npz",
    "model": "target network: wrn-34-10, resnet18, small-cnn, ...",
    "guide_model": "guide network (resnet18-cifar in the paper profile)",
    "n_train": "training images, or all", "n_test": "test images, or all",
    "batch_size": "global batch (split over the processes under torchrun)",
    "schedule": "piecewise or onecycle", "first_epoch_lr": "lr of the first epoch, or none",
    "milestones": "comma-separated fractions of the run where the lr drops x0.1",
    "eps": "training attack budget (e.g. 8/255)", "step_size": "training attack step",
    "steps": "PGD steps of the training attack",
    "random_start": "uniform, gaussian or none (default: the method's own)",
    "method_options": "the method's settings as JSON, e.g. '{\"beta\": 3}'",
    "target_clean_forward": "forward the target once more on the clean batch (authors' code)",
    "augment": "random crop and flip", "eval_steps": "PGD steps of the per-epoch accuracy",
    "n_eval": "test images evaluated per epoch",
    "n_eval_train": "training images evaluated per epoch",
    "n_holdout": "training images held out for choosing a kept checkpoint",
    "keep_last": "keep the weights of the last K epochs", "device": "auto, cpu, cuda",
    "amp": "bf16 autocast on GPUs with native bf16 (--no-amp: float32)",
    "fast": "the fast training attack (--no-fast: the plain one)",
    "channels_last": "channels_last memory format on CUDA and CPU",
    "compile": "torch.compile both networks",
    "cuda_graphs": "the training attack as a CUDA graph (one process on CUDA)",
    "fold_batchnorm": "on the CPU, the training attack on the target with its batch norms "
                      "folded into the convolutions (same points up to rounding)",
    "data_root": "where datasets download (default data)",
}


def config_flags(parser) -> None:
    """One flag per field of ``train.Config`` (``--batch-size`` for ``batch_size``; booleans as
    ``--amp`` / ``--no-amp``). A flag that is not given leaves its field to the profile (or to
    the run being resumed): it is absent from the parsed arguments."""
    import dataclasses

    from .train import Config

    group = parser.add_argument_group("run settings", "each sets the Config field of its name; "
                                      "the profile (or the resumed run) gives the rest")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        if kind == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=FIELD_HELP.get(f.name))
        else:
            group.add_argument(flag, dest=f.name, type=_READERS[kind], default=argparse.SUPPRESS,
                               metavar=f.name.upper(), help=FIELD_HELP.get(f.name))


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train (or resume) a run",
                       description="Train a method; resumes from the checkpoint in --out.")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt and history.json")
    p.add_argument("--profile", help="smoke, cpu, gpu or paper (default: the run's own config "
                                     "when resuming, else smoke)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    config_flags(p)


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="robust accuracy of a trained network",
                       description="Clean, FGSM, PGD-20 and C&W-inf accuracy (AutoAttack with "
                                   "--autoattack) of a checkpoint's target network, in float32; "
                                   "or a whole protocol (--protocol).")
    p.add_argument("checkpoint", help="a run folder or its checkpoint.pt")
    p.add_argument("--protocol", choices=("standard", "authors"),
                   help="standard: eps 8/255, every test image, clean, PGD-20, C&W-inf and "
                        "AutoAttack; authors: standard AutoAttack at eps 0.031 on the first "
                        "1,000 test images, as the DYNAT authors evaluate")
    p.add_argument("--epoch", default="last",
                   help="which weights: last (default), best (of the epochs the run kept, by "
                        "PGD accuracy on its held-out training images; never the test set), "
                        "or the number of a kept epoch")
    p.add_argument("--attacks", help="comma-separated: clean, fgsm, pgd-N, cw, aa_fast, "
                                     "aa_standard (default clean,fgsm,pgd20,cw)")
    p.add_argument("--autoattack", action="store_true", help="add AutoAttack (standard)")
    p.add_argument("--n", type=_size, default=argparse.SUPPRESS,
                   help="test images (default 1000; or all)")
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
    import dataclasses

    from . import train

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(train.Config)
                 if hasattr(args, f.name)}
    ckpt = Path(args.out) / train.CHECKPOINT
    if args.profile is None and ckpt.exists():
        base = train.load_checkpoint(ckpt)["config"]
        cfg = train.with_method_settings(train.Config.from_dict({**base, **overrides}))
        train.validate(cfg)
        return cfg
    return train.config(args.profile or "smoke", **overrides)


def write_history(out: Path, history: list[dict]) -> None:
    """``out/history.json``, unless it already holds exactly ``history`` (a finished run that was
    only loaded, perhaps from a read-only folder); a folder that cannot take it says so."""
    path, text = out / "history.json", json.dumps(history, indent=1)
    if path.exists() and path.read_text() == text:
        return
    try:
        path.write_text(text)
    except OSError as err:
        raise OSError(f"The run is done (its checkpoint is in {out}), but {path} could not be "
                      f"written ({err.strerror or err}); the history is also inside the "
                      f"checkpoint (train.load_checkpoint(...)['history']).") from err


def cmd_train(args) -> int:
    from . import distributed, train

    if not args.out.strip():
        raise ValueError("--out is empty: name the run folder (e.g. --out runs/dynat).")
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
            write_history(Path(args.out), result.history)
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


def chosen_weights(args, cfg, ds, state, device):
    """``(file, epoch, pick)``: the weights ``--epoch`` asks for (``pick``: how the best was
    chosen, else None)."""
    from . import train

    if args.epoch == "last":
        return args.checkpoint, state["epoch"], None
    if args.epoch == "best":
        path, pick = train.pick_kept(args.checkpoint, dataset=ds, which=args.which,
                                     device=str(device))
        return path, pick.epoch, pick
    kept = train.kept_checkpoints(_run_dir(args.checkpoint))
    if not args.epoch.isdigit() or int(args.epoch) not in kept:
        raise ValueError(f"--epoch must be last, best or a kept epoch "
                         f"({', '.join(map(str, kept)) or 'this run kept none: keep_last = 1'}), "
                         f"got {args.epoch!r}.")
    return kept[int(args.epoch)], int(args.epoch), None


def _run_dir(checkpoint) -> Path:
    path = Path(checkpoint)
    return path.parent if path.suffix in (".pt", ".pth") else path


def writable_file(path: str | Path) -> None:
    """Raise an OSError now if ``path`` cannot be written (checked before the work, not after)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name (e.g. {path}/eval.json).")
    existed = path.exists()
    with open(path, "a"):
        pass
    if not existed:
        path.unlink()


def cmd_evaluate(args) -> int:
    from . import data, evaluate, train

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}.")
    if args.json:
        writable_file(args.json)
    state = train.load_checkpoint(args.checkpoint)
    cfg = train.Config.from_dict(state["config"])
    device = train.resolve_device(args.device)
    ds = data.load(args.dataset or cfg.dataset, root=args.data_root or cfg.data_root,
                   n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed)
    path, epoch, pick = chosen_weights(args, cfg, ds, state, device)
    if pick is not None:
        print(f"chose epoch {pick.epoch} of the kept epochs "
              f"{', '.join(map(str, pick.accuracy))} by {evaluate.attack_title(pick.attack)} "
              f"accuracy on {pick.n} held-out training images", flush=True)
    model = train.load_model(path, which=args.which, device=str(device))
    net = cfg.model if args.which == "target" else cfg.guide_model
    attacks = tuple(args.attacks.split(",")) if args.attacks else None
    if args.protocol:
        if hasattr(args, "n") or args.autoattack:
            raise ValueError("--protocol fixes the test images and the attacks: drop --n and "
                             "--autoattack (--attacks may still replace the attacks).")
        print(f"evaluating the {args.which} of {args.checkpoint}, epoch {epoch} ({cfg.method}, "
              f"{net}) on {ds.name}: {evaluate.PROTOCOLS[args.protocol].title}, float32",
              flush=True)
        report = evaluate.protocol_report(model, ds.x_test, ds.y_test, args.protocol,
                                          attacks=attacks, batch_size=args.batch_size,
                                          checks=args.checks)
    else:
        wanted = getattr(args, "n", 1000)  # None: every test image
        n = len(ds.y_test) if wanted is None else min(wanted, len(ds.y_test))
        x, y = ds.x_test[:n], ds.y_test[:n]
        print(f"evaluating the {args.which} of {args.checkpoint}, epoch {epoch} ({cfg.method}, "
              f"{net}) on {n} test images of {ds.name}, eps 8/255, float32", flush=True)
        report = evaluate.robustness_report(model, x, y,
                                            attacks=attacks or default_attacks(args.autoattack),
                                            batch_size=args.batch_size, checks=args.checks)
    print(report)
    result = report.to_dict()
    result.update(checkpoint=str(args.checkpoint), which=args.which, epoch=epoch)
    if pick is not None:
        result["picked"] = pick.to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


# -------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dynat_lite`` and of the ``dynat-lite`` console script.

    Exit status: 0 done, 1 the run failed (diverged, folder in use, disk full), 2 a usage error
    (a bad flag, dataset or checkpoint), 130 stopped with Ctrl-C -- each with one line on
    stderr, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:
        print(_stopped(argv), file=sys.stderr)
        return 130


def _stopped(argv: list[str]) -> str:
    """The line that Ctrl-C prints: what was kept, and the command that goes on from there."""
    command = "python -m dynat_lite " + shlex.join(argv)
    if not argv or argv[0] not in ("train", "study"):
        return "stopped (Ctrl-C)."
    if argv[0] == "study":
        return f"stopped (Ctrl-C); finished epochs are kept. Resume with: {command}"
    from .train import CHECKPOINT

    out = _flag_value(argv, "--out")
    saved = out is not None and (Path(out) / CHECKPOINT).exists()
    kept = (f"{Path(out) / CHECKPOINT} keeps the last finished epoch" if saved
            else "no epoch had finished, so nothing was saved")
    return f"stopped (Ctrl-C); {kept}. Resume with: {command}"


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--out X`` or ``--out=X``), None if absent."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _dispatch(argv: list[str]) -> int:
    """Run the command ``argv`` names. One error policy for every subcommand: the kit's own
    errors -- a bad setting, dataset, checkpoint or pretrained model (exit 2), a run that failed
    (diverged, folder in use, disk full, a file that cannot be written: exit 1) -- are one line
    on stderr; a traceback means a bug."""
    from .data import DatasetError, plain_reason
    from .pretrained import PretrainedError
    from .runs import CheckpointError, RunFolderError
    from .train import TrainingDiverged

    try:
        return _command(argv)
    except (ValueError, CheckpointError, DatasetError, PretrainedError) as err:
        print(f"error: {plain_reason(err)}", file=sys.stderr)
        return 2
    except (RunFolderError, TrainingDiverged, OSError) as err:
        print(f"error: {plain_reason(err)}", file=sys.stderr)
        return 1


def _command(argv: list[str]) -> int:
    """The subcommand's own main (bench, study and compare parse their own arguments)."""
    if argv and argv[0] == "bench":
        from . import bench

        return bench.main(argv[1:])
    if argv and argv[0] == "study":
        from . import study

        return study.main(argv[1:])
    if argv and argv[0] == "compare":
        import importlib

        return importlib.import_module("dynat_lite.compare").main(argv[1:]) or 0
    args = parser().parse_args(argv)
    return {"train": cmd_train, "evaluate": cmd_evaluate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

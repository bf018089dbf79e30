"""The training loop: one SGD optimizer over guide and target, checkpoints, resume, history.

    from dynat_lite import train
    result = train.fit(train.config("smoke", method="dynat"), out="runs/demo")
    result.history[-1]   # {"epoch": 2, "test_pgd": ..., "label_agreement": ..., ...}

Runs are reproducible: the models start from ``seed``; the batches, their augmentation and the
attacks' random starts of epoch k depend only on (seed, k). A checkpoint is written atomically
after every epoch; calling ``fit`` again with the same config and ``out`` resumes from it and
gives, on the CPU with the same number of threads (``torch.get_num_threads()``: 1 and 2 threads
round differently), bit-identical weights to an uninterrupted run; the checkpoint records the
thread count, and a resume with another count warns. How a run is executed (device,
bf16, channels_last, torch.compile, the fast step, where the data lives) may change between
the two calls: a run started on a laptop can go on on a GPU.

Every method's loss runs the inner attack the training step hands it: the fast one of
``fast.py`` (bf16 autocast on GPUs with native bf16, channels_last, no host synchronization, a
CUDA graph, optional ``torch.compile``) unless ``Config.fast`` is off; under ``torchrun`` each
process trains on its slice of every global batch (``distributed.py``).

What this module holds: building and preparing the two networks, the epoch loop with its
per-step diagnostics (``diagnostics.py``), ``fit`` and resume, and the result cache that lets
lessons share trained models (``run_key``, ``run_folder``, ``fit_or_load``). What a run is lives
in ``config.py`` (``Config``, the profiles, ``config``), run folders and checkpoint files in
``runs.py``; their public names are re-exported here (``train.config``, ``train.Config``,
``train.load_model``, ...). It may import every module below it (data, models, attacks,
methods, fast, evaluate, config, runs, diagnostics), and none above (studies, lessons, viz).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import data as data_lib
from . import diagnostics, distributed, fast, methods, models
from . import evaluate as evaluate_lib
from .attacks import PGD
# What the lessons and users call as train.NAME, defined where their concern lives.
from .config import (PROFILES, RUNTIME_FIELDS, SCHEDULES, Config, available_devices,  # noqa: F401
                     config, learning_rate, resolve_device, validate, with_method_settings)
from .evaluate import evaluate
from .runs import (CHECKPOINT, KEPT, LOCK, CheckpointError, RunFolderError,  # noqa: F401
                   _finished, claim_run_folder, kept_checkpoints, load_checkpoint, load_model,
                   load_weights, save_checkpoint)


class TrainingDiverged(RuntimeError):
    """The loss (or a weight) stopped being a finite number; nothing was saved."""


# ------------------------------------------------------------------------------------ models
@dataclass
class Nets:
    target: nn.Module
    guide: nn.Module | None
    # What the training step calls: compiled and/or DDP-wrapped views of the two networks that
    # share their parameters (see ``prepare``); None: the networks themselves.
    step_target: nn.Module | None = None
    step_guide: nn.Module | None = None

    def for_step(self) -> tuple[nn.Module | None, nn.Module]:
        """(guide, target) as the training step should call them."""
        guide = self.step_guide if self.step_guide is not None else self.guide
        target = self.step_target if self.step_target is not None else self.target
        return guide, target

    def parameters(self):
        for net in (self.target, self.guide):
            if net is not None:
                yield from net.parameters()

    def train(self):
        for net in (self.target, self.guide):
            if net is not None:
                net.train()


def build(cfg: Config, num_classes: int, device: torch.device) -> Nets:
    """Target (and guide, if the method has one), initialized from cfg.seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        target = models.create(cfg.model, num_classes)
        guide = (models.create(cfg.guide_model, num_classes)
                 if methods.get(cfg.method).uses_guide else None)
    return Nets(target.to(device), guide.to(device) if guide is not None else None)


def prepare(cfg: Config, nets: Nets, device: torch.device) -> Nets:
    """Arrange ``nets`` for the training step, in place: global-batch batch norm under torchrun,
    channels_last weights (CUDA, CPU), ``torch.compile`` if ``cfg.compile``, the DDP wrapper under
    torchrun. Call it before the optimizer is made and the checkpoint is loaded; the networks
    keep their parameters, their names and their state_dict keys."""
    ctx = distributed.context()
    channels_last = fast.use_channels_last(device, cfg.channels_last)
    if device.type == "cuda":  # fixed batch shapes: let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    views = {}
    for name in ("target", "guide"):
        net = getattr(nets, name)
        if net is None:
            continue
        if ctx is not None:
            net = distributed.sync_batchnorm(net, device)
            setattr(nets, name, net)
        view = fast.prepare(net, channels_last=channels_last, compile=cfg.compile)
        views[name] = view
    nets.step_target = views.get("target")
    nets.step_guide = views.get("guide")
    return nets


def wrap_for_processes(nets: Nets, device: torch.device) -> Nets:
    """Under torchrun, wrap the step's views in DistributedDataParallel (after the checkpoint
    is loaded: the wrapper starts by copying rank 0's weights to every process)."""
    ctx = distributed.context()
    if ctx is not None:
        guide, target = nets.for_step()
        nets.step_target = distributed.wrap(target, ctx, device)
        if guide is not None:
            nets.step_guide = distributed.wrap(guide, ctx, device)
    return nets


def make_optimizer(cfg: Config, nets: Nets) -> torch.optim.Optimizer:
    """One SGD optimizer over the parameters of both networks, as the paper."""
    return torch.optim.SGD(list(nets.parameters()), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


# ---------------------------------------------------------------------------------- one epoch
def inner_attack(cfg: Config, device: torch.device, generator: torch.Generator | None,
                 ctx=None) -> PGD:
    """The attack the training step hands the method's loss: ``cfg``'s budget and random start,
    drawn from ``generator``. ``fast.FastPGD`` when ``cfg.fast`` (its random start drawn for the
    global batch under torchrun; a CUDA graph on CUDA with ``cfg.cuda_graphs``, one process),
    else the plain ``attacks.PGD``; both compute the same points."""
    budget = dict(eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps,
                  random_start=cfg.random_start, generator=generator)
    if not cfg.fast:
        return PGD(**budget)
    shard = (ctx.rank, ctx.world) if ctx is not None else (0, 1)
    graph = ctx is None and torch.device(device).type == "cuda" and cfg.cuda_graphs
    return fast.FastPGD(**budget, shard=shard, graph=graph, fold=cfg.fold_batchnorm)


def train_epoch(cfg: Config, nets: Nets, optimizer: torch.optim.Optimizer,
                batches: data_lib.Batches, epoch: int, progress: Callable | None = None,
                on_step: Callable[[int], bool | None] | None = None) -> dict:
    """Train one epoch; returns the mean losses, label agreement and lr, and ``steps``: the
    diagnostics (``diagnostics.sample``) of the first step of the run and of every
    ``cfg.diagnose_every``-th, which cost a host sync each (none on the other steps).

    The method's loss gets the attack of :func:`inner_attack` and its settings
    (``cfg.method_options``). Under torchrun each process trains on its slice of every global
    batch, and the returned means are over all processes. ``on_step(k)`` is called after the
    k-th step of the epoch (k = 1, 2, ...); when it returns True the epoch ends there.
    """
    method = methods.get(cfg.method)
    ctx = distributed.context()
    device = batches.x.device
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 7919 + epoch)
    options = dict(cfg.method_options)
    if method.attack:
        options["attack"] = inner_attack(cfg, device, generator, ctx)
    if method.scheduled:  # a burn-in (GAIRAT, MAIL): how far into the run this epoch starts
        options["run_fraction"] = epoch / cfg.epochs
    channels_last = fast.use_channels_last(device, cfg.channels_last)
    guide, target = nets.for_step()
    autocast = fast.autocast(device, cfg.amp)
    nets.train()
    sums = torch.zeros(4, device=device)  # loss, guide loss, target loss, agreeing labels
    n_seen, n_batches, n_done = 0, len(batches), 0
    it = batches.epoch(epoch)
    if progress is not None:
        it = progress(it, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    lr = cfg.lr
    steps = []  # diagnostics.sample records, every cfg.diagnose_every steps
    for i, (x, y) in enumerate(it):
        step = epoch * n_batches + i + 1  # optimizer steps done after this one (1-based)
        lr = learning_rate(cfg, epoch + i / n_batches)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = distributed.shard(x, ctx), distributed.shard(y, ctx)
        x = fast.to_memory_format(x, channels_last)
        step_options = options
        if step <= cfg.label_warmup_steps:  # a departure from the paper (Config)
            step_options = {**options, "label_source": "static"}
        with autocast:
            loss, out = method(guide, target, x, y, **step_options)
            if cfg.target_clean_forward:
                clean_forward(target, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        zero = torch.zeros((), device=device)
        sums += torch.stack([loss.detach().float(), out.get("guide_loss", zero).float(),
                             out.get("target_loss", zero).float(),
                             (out["labels"] == y).sum().float()])
        if cfg.diagnose_every and (step == 1 or step % cfg.diagnose_every == 0):
            steps.append(diagnostics.sample(step, nets.target, x, y, out))
        n_seen += len(y)
        n_done = i + 1
        if on_step is not None and on_step(n_done):
            break
    world = ctx.world if ctx is not None else 1
    sums = distributed.all_reduce_sum(sums, ctx).tolist()
    n_seen *= world
    n_batches = n_done * world
    return {"lr": lr, "loss": sums[0] / n_batches, "guide_loss": sums[1] / n_batches,
            "target_loss": sums[2] / n_batches, "label_agreement": sums[3] / max(n_seen, 1),
            "steps": steps}


def clean_forward(target: nn.Module, x: torch.Tensor) -> None:
    """The authors' extra forward of the target on the clean batch, in train mode, output unused:
    it changes nothing but the BatchNorm running statistics (no graph is kept, so the loss and
    its gradients are those of the step without it)."""
    with torch.no_grad():
        target(x)


def eval_epoch(cfg: Config, nets: Nets, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Clean and PGD accuracy of the target (and clean accuracy of the guide) on test images,
    in float32. Under torchrun each process evaluates every world-th image and the accuracies
    are combined."""
    ctx = distributed.context()
    if ctx is not None:
        x, y = x[ctx.rank::ctx.world], y[ctx.rank::ctx.world]
    pgd_name = f"pgd-{cfg.eval_steps}"  # PGD-N: N = eval_steps steps of 2/255
    acc = evaluate(nets.target, x, y, attacks=("clean", pgd_name), eps=8 / 255, seed=cfg.seed)
    out = {"test_clean": acc["clean"], "test_pgd": acc[pgd_name]}
    if nets.guide is not None:
        out["guide_clean"] = evaluate(nets.guide, x, y, attacks=("clean",))["clean"]
    return distributed.mean_over_processes(out, len(y), ctx, model_device(nets.target))


def eval_train_subset(cfg: Config, nets: Nets, dataset: data_lib.Dataset) -> dict:
    """Clean and PGD accuracy of the target on the first ``cfg.n_eval_train`` training images
    (no augmentation), as ``eval_epoch`` measures them on test images: with the test figures, the
    robust generalization gap and robust overfitting (Rice et al., 2020) become visible."""
    x, y = dataset.x_train[:cfg.n_eval_train], dataset.y_train[:cfg.n_eval_train]
    acc = eval_epoch(cfg, Nets(nets.target, None), x, y)
    return {"train_clean": acc["test_clean"], "train_pgd": acc["test_pgd"]}


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def epoch_summary(record: dict, epochs: int) -> str:
    """One line about an epoch's record: what the command line prints and the lessons show."""
    parts = [f"epoch {record['epoch']}/{epochs}",
             f"{record.get('images_per_second', 0):.0f} img/s",
             f"loss {record['loss']:.3f} (guide {record['guide_loss']:.3f}, "
             f"target {record['target_loss']:.3f})",
             f"clean {record['test_clean']:.1%}", f"PGD {record['test_pgd']:.1%}"]
    if "guide_clean" in record:
        parts.append(f"labels agree {record['label_agreement']:.1%}")
    parts.append(f"lr {record['lr']:.3g}")
    return "  ".join(parts + [diagnostics.describe(record)]).rstrip()


# ------------------------------------------------------------------------- the guide alone
def train_guide(cfg: Config, *, dataset: data_lib.Dataset | None = None,
                max_steps: int | None = None,
                on_step: Callable[[nn.Module, int, bool], None] | None = None,
                progress: Callable | None = None) -> nn.Module:
    """Train ``cfg``'s guide network alone, from scratch, on clean images: CE(f_g(x), y), the
    guide's half of DYNAT, with ``cfg``'s optimizer, schedule, batches and seed.

    It is ``train_epoch`` of the method "standard" on ``cfg.guide_model``, as ``fit`` runs it.
    The target's term never sends gradient into the guide, so a guide trained alone gives the
    same kind of labels, step for step, as one trained inside DYNAT.

    ``on_step(guide, step, last)`` is called before the first step (step 0) and after every
    step (``last``: True after the final one); ``max_steps`` stops early. Returns the guide in
    eval mode. ``labels.train_guide`` records the guide's dynamic labels this way.
    """
    gcfg = dataclasses.replace(cfg, method="standard", model=cfg.guide_model, method_options={},
                               target_clean_forward=False, guide_init_epochs=0,
                               label_warmup_steps=0, diagnose_every=0)
    if dataset is None:
        dataset = data_lib.load(cfg.dataset, root=cfg.data_root, n_train=cfg.n_train,
                                n_test=cfg.n_test, seed=cfg.seed)
    device = resolve_device(cfg.device)
    nets = prepare(gcfg, build(gcfg, dataset.num_classes, device), device)
    optimizer = make_optimizer(gcfg, nets)
    (x_fit, y_fit), _ = split_holdout(gcfg, dataset)
    batches = data_lib.Batches(x_fit, y_fit, cfg.batch_size, device=device,
                               augment=cfg.augment, seed=cfg.seed)
    total = len(batches) * cfg.epochs if max_steps is None else min(
        len(batches) * cfg.epochs, max_steps)
    guide, step = nets.target, 0
    bar = progress(total=total, desc="guide") if progress is not None else None
    if on_step is not None:
        on_step(guide, 0, total == 0)

    def after_step(_: int) -> bool:
        nonlocal step
        step += 1
        if on_step is not None:
            on_step(guide, step, step == total)
        if bar is not None:
            bar.update(1)
        return step >= total

    for epoch in range(cfg.epochs):
        if step >= total:
            break
        train_epoch(gcfg, nets, optimizer, batches, epoch, on_step=after_step)
    if bar is not None:
        bar.close()
    return guide.eval()


# ------------------------------------------------------------------------------------- fit
@dataclass
class Result:
    config: Config
    target: nn.Module
    guide: nn.Module | None
    history: list[dict]
    dataset: data_lib.Dataset


def run_key(cfg: Config) -> dict:
    """What defines the run ``cfg`` describes: every field but the ``RUNTIME_FIELDS``, with the
    method's settings filled in (``with_method_settings``), so that a config written before a
    setting was recorded and one that spells it out compare equal."""
    full = with_method_settings(cfg).to_dict()
    return {k: v for k, v in full.items() if k not in RUNTIME_FIELDS}


def _comparable(d: dict) -> dict:
    """``run_key`` of a config dict (defaults filled in for fields that a checkpoint written by
    an older version lacks)."""
    try:
        return run_key(Config.from_dict(d))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"The checkpoint's config cannot be read by this version of "
                              f"dynat-lite ({err}).") from err


def run_folder(cfg: Config, root: str | Path) -> Path:
    """The folder under ``root`` for the run ``cfg`` describes: the method's name and a hash of
    its ``run_key``, so a changed setting never finds a stale model."""
    key = run_key(cfg)
    tag = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path(root) / f"{cfg.method}-{tag}"


def fit_or_load(cfg: Config, root: str | Path, **fit_options) -> Result:
    """``fit`` in ``run_folder(cfg, root)``: a finished run there is loaded (no training), an
    interrupted one resumed, a missing one trained; says which. How the lessons share models."""
    out = run_folder(cfg, root)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and load_checkpoint(ckpt)["epoch"] >= cfg.epochs:
        print(f"{cfg.method}: loading the trained model from {out}")
    else:
        print(f"{cfg.method}: no trained model in {out} yet; training it now "
              f"({cfg.epochs} epochs)")
    return fit(cfg, out=out, **fit_options)


def fit(cfg: Config, *, out: str | Path | None = None, dataset: data_lib.Dataset | None = None,
        progress: Callable | bool = True, on_epoch: Callable[[dict], None] | None = None) -> Result:
    """Train ``cfg.method`` for ``cfg.epochs`` epochs; resume from ``out`` if it holds a
    checkpoint of the same config (only the ``RUNTIME_FIELDS`` may differ).

    ``progress``: True for a tqdm bar, False for none, or a tqdm-like callable (e.g.
    ``tqdm.auto.tqdm`` in a notebook). ``on_epoch(record)`` is called after every epoch.
    Under torchrun (``distributed.init()`` called first) every process runs ``fit``; only
    rank 0 shows progress, calls ``on_epoch`` and writes the checkpoint.

    While it trains, the process owns ``out`` (``claim_run_folder``): another process that
    wants to train into the same folder fails at once. If the loss or a weight stops being a
    finite number, ``TrainingDiverged`` is raised before that epoch is saved: the folder keeps
    the last good checkpoint.
    """
    validate(cfg)
    distributed.check_batch_size(cfg.batch_size, distributed.context())
    device = resolve_device(cfg.device)
    writer = out is not None and distributed.is_main() and not _finished(out, cfg)
    with claim_run_folder(out if writer else None):
        return _fit(cfg, device, out=out, dataset=dataset, progress=progress,
                    on_epoch=on_epoch)


def _fit(cfg: Config, device: torch.device, *, out, dataset, progress, on_epoch) -> Result:
    """The work of ``fit``, in the run folder it owns."""
    ctx = distributed.context()
    main = ctx is None or ctx.is_main
    if progress is True:
        from tqdm import tqdm as progress
    progress = (progress or None) if main else None
    if dataset is None:
        dataset = data_lib.load(cfg.dataset, root=cfg.data_root, n_train=cfg.n_train,
                                n_test=cfg.n_test, seed=cfg.seed)
    if main and cfg.amp and device.type == "cuda" and not fast.native_bf16(device):
        print(f"{torch.cuda.get_device_name(device)} has no native bf16 (compute capability "
              f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}): training "
              f"runs in float32.")
    nets = prepare(cfg, build(cfg, dataset.num_classes, device), device)
    optimizer = make_optimizer(cfg, nets)
    ckpt = Path(out) / CHECKPOINT if out is not None else None
    history, start = resume(cfg, nets, optimizer, ckpt, device, warn=main)
    if start == 0 and cfg.guide_init_epochs:
        init_guide(cfg, nets, dataset, progress)
    wrap_for_processes(nets, device)
    (x_fit, y_fit), _ = split_holdout(cfg, dataset)
    batches = data_lib.Batches(x_fit, y_fit, cfg.batch_size, device=device,
                               augment=cfg.augment, seed=cfg.seed)
    x_eval, y_eval = dataset.x_test[:cfg.n_eval], dataset.y_test[:cfg.n_eval]
    if len(y_eval) == 0:
        raise ValueError("The test split is empty: the accuracy after each epoch needs test "
                         "images (--n-test, n_test).")
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        record = {"epoch": epoch + 1,
                  **train_epoch(cfg, nets, optimizer, batches, epoch, progress)}
        check_finite(record, nets, ckpt)
        record["collapsed"] = diagnostics.epoch_collapsed(record["steps"])
        record["train_seconds"] = time.perf_counter() - t0
        record["images_per_second"] = len(batches) * cfg.batch_size / record["train_seconds"]
        record.update(eval_epoch(cfg, nets, x_eval, y_eval))
        if cfg.n_eval_train:
            record.update(eval_train_subset(cfg, nets, dataset))
        history.append(record)
        if ckpt is not None and main:
            save(ckpt, cfg, nets, optimizer, history, device)
        if on_epoch is not None and main:
            on_epoch(record)
    nets.target.eval()
    if nets.guide is not None:
        nets.guide.eval()
    return Result(cfg, nets.target, nets.guide, history, dataset)


def init_guide(cfg: Config, nets: Nets, dataset: data_lib.Dataset, progress=None) -> None:
    """A departure from the paper (``Config.guide_init_epochs``): the guide of a fresh run is
    replaced by one trained alone on the run's training images for ``guide_init_epochs``
    epochs (``train_guide``: clean CE, the run's optimizer settings and a schedule of its own),
    so that the joint run starts from strong labels."""
    gcfg = dataclasses.replace(cfg, epochs=cfg.guide_init_epochs, guide_init_epochs=0,
                               label_warmup_steps=0)
    guide = train_guide(gcfg, dataset=dataset, progress=progress)
    nets.guide.load_state_dict(guide.state_dict())


def split_holdout(cfg: Config, dataset: data_lib.Dataset):
    """``((x, y) trained on, (x, y) held out)``: the last ``cfg.n_holdout`` images of the
    training split are held out (none by default)."""
    x, y, n = dataset.x_train, dataset.y_train, cfg.n_holdout
    if n == 0:
        return (x, y), (x[:0], y[:0])
    if n >= len(y):
        raise ValueError(f"n_holdout = {n} would hold out all {len(y)} training images: hold "
                         f"out fewer (--n-holdout) or load more (--n-train).")
    return (x[:-n], y[:-n]), (x[-n:], y[-n:])


def resume(cfg: Config, nets: Nets, optimizer: torch.optim.Optimizer, ckpt: Path | None,
           device: torch.device, warn: bool = True) -> tuple[list[dict], int]:
    """Load the checkpoint ``ckpt`` (if there is one) into ``nets`` and ``optimizer``; return
    ``(history, epochs done)``, ``([], 0)`` for a fresh run. A checkpoint of another run (a
    config that differs in more than ``RUNTIME_FIELDS``) raises a CheckpointError."""
    if ckpt is None or not ckpt.exists():
        return [], 0
    state = load_checkpoint(ckpt, map_location=device)
    theirs, ours = _comparable(state["config"]), _comparable(cfg.to_dict())
    if theirs != ours:
        diff = ", ".join(f"{k}: {theirs[k]!r} there, {ours[k]!r} here"
                         for k in ours if theirs[k] != ours[k])
        raise CheckpointError(f"{ckpt} was written by a different config ({diff}); "
                              f"choose another output folder or delete it.")
    load_weights(nets.target, state["target"], ckpt, "target")
    if nets.guide is not None:
        load_weights(nets.guide, state.get("guide"), ckpt, "guide")
    try:
        optimizer.load_state_dict(state["optimizer"])
        history, start = list(state["history"]), int(state["epoch"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt} is not a consistent dynat-lite checkpoint: its "
                              f"optimizer state or history does not fit the run "
                              f"({' '.join(str(err).split())}).") from err
    if warn and start < cfg.epochs:
        _warn_if_threads_differ(state, device)
    return history, start



def save(ckpt: Path, cfg: Config, nets: Nets, optimizer: torch.optim.Optimizer,
         history: list[dict], device: torch.device) -> None:
    """After an epoch: the weights of the last ``cfg.keep_last`` epochs (when more than one),
    then the checkpoint ``ckpt`` that a resume starts from (weights, optimizer, history)."""
    epoch = history[-1]["epoch"]
    weights = {"format": 1, "config": cfg.to_dict(), "epoch": epoch,
               "target": nets.target.state_dict(),
               "guide": nets.guide.state_dict() if nets.guide is not None else None}
    if cfg.keep_last > 1:
        save_checkpoint(ckpt.parent / KEPT.format(epoch), weights)
    save_checkpoint(ckpt, {**weights, "optimizer": optimizer.state_dict(), "history": history,
                           "device_type": device.type, "cpu_threads": torch.get_num_threads()})
    for old, path in kept_checkpoints(ckpt.parent).items():
        if old <= epoch - cfg.keep_last:
            path.unlink(missing_ok=True)


def pick_kept(out: str | Path, *, dataset: data_lib.Dataset | None = None,
              which: str = "target", device: str = "cpu",
              attack: str | None = None) -> tuple[Path, evaluate_lib.Pick]:
    """``(file, pick)``: the kept epoch of the run in ``out`` (``Config.keep_last``) that
    ``evaluate.pick_best`` chooses, by PGD accuracy (``attack``, default PGD with the run's
    ``eval_steps``, eps 8/255) on the run's held-out training images (``Config.n_holdout``).
    The test split is never read. ``dataset``: the run's dataset if already loaded."""
    folder = Path(out).parent if Path(out).suffix in (".pt", ".pth") else Path(out)
    cfg = Config.from_dict(load_checkpoint(folder)["config"])
    kept = kept_checkpoints(folder)
    if not kept:
        raise CheckpointError(f"{folder} kept the weights of no epoch but the last (keep_last = "
                              f"{cfg.keep_last}); train with keep_last > 1 (--keep-last) to "
                              f"choose among epochs.")
    if dataset is None:
        dataset = data_lib.load(cfg.dataset, root=cfg.data_root, n_train=cfg.n_train,
                                n_test=cfg.n_test, seed=cfg.seed)
    _, (x_holdout, y_holdout) = split_holdout(cfg, dataset)
    candidates = {epoch: (lambda path=path: load_model(path, which, device))
                  for epoch, path in kept.items()}
    pick = evaluate_lib.pick_best(candidates, x_holdout, y_holdout,
                                  attack=attack or f"pgd-{cfg.eval_steps}", seed=cfg.seed)
    return kept[pick.epoch], pick


#: A mean epoch loss above this counts as diverged, like a non-finite one: every method's loss
#: starts near ln C (2.3 for 10 classes) and stays within tens in a healthy run.
LOSS_LIMIT = 1e4


def check_finite(record: dict, nets: Nets, ckpt: Path | None = None) -> None:
    """Raise TrainingDiverged unless the epoch's mean losses (``record``) are finite and at most
    ``LOSS_LIMIT`` and all weights are finite. Once per epoch: the losses are already on the
    host, the weights cost one sync."""
    losses_ok = all(math.isfinite(record[k]) and abs(record[k]) <= LOSS_LIMIT
                    for k in ("loss", "guide_loss", "target_loss"))
    weights_ok = bool(torch.stack([p.detach().isfinite().all() for p in nets.parameters()]).all())
    if losses_ok and weights_ok:
        return
    epoch = record["epoch"]
    kept = (f"{ckpt} keeps the last good checkpoint (epoch {epoch - 1})"
            if ckpt is not None and ckpt.exists() else "nothing was saved")
    again = (f"train into a new output folder (or delete {ckpt.parent})"
             if ckpt is not None and ckpt.exists() else "train again")
    raise TrainingDiverged(
        f"Training diverged in epoch {epoch}: the mean loss became {record['loss']:.4g} "
        f"(the limit: finite and at most {LOSS_LIMIT:g}) "
        f"(lr {record['lr']:.3g}){'' if weights_ok else ' and some weights are not finite'}; "
        f"{kept}. Lower the learning rate (--lr) or check the data, then {again}.")


def _warn_if_threads_differ(state: dict, device: torch.device) -> None:
    """A CPU run resumed with another thread count computes with another rounding: the result
    is no longer bit-identical to an uninterrupted run. Say so."""
    before, now = state.get("cpu_threads"), torch.get_num_threads()
    if device.type == "cpu" and state.get("device_type") == "cpu" and before not in (None, now):
        warnings.warn(f"This run trained on the CPU with {before} threads so far and resumes "
                      f"with {now}: it will not be bit-identical to an uninterrupted run (call "
                      f"torch.set_num_threads({before}), or set OMP_NUM_THREADS={before}, "
                      f"before resuming to match).", RuntimeWarning, stacklevel=3)

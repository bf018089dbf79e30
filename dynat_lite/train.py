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

``config`` is the one place where a method name becomes a run: the profile, the overrides and
the method's own defaults (its random start, its settings in ``method_options``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import data as data_lib
from . import diagnostics, distributed, fast, methods, models
from . import evaluate as evaluate_lib
from .attacks import PGD, check_budget
from .evaluate import evaluate

CHECKPOINT = "checkpoint.pt"
LOCK = "run.lock"  # while a process trains into a run folder: its pid, host and command
SCHEDULES = ("piecewise", "onecycle")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or from a different run."""


class RunFolderError(RuntimeError):
    """A run folder that cannot take the run: held by another process, not writable, full."""


class TrainingDiverged(RuntimeError):
    """The loss (or a weight) stopped being a finite number; nothing was saved."""


@dataclass
class Config:
    """Everything that defines a run. ``config(profile, **overrides)`` builds one."""
    method: str = "dynat"
    dataset: str = "synthetic"
    model: str = "small-cnn"          # the target network (the one that is evaluated)
    guide_model: str = "small-cnn"    # the guide, for methods that use one
    n_train: int | None = 1024
    n_test: int | None = 256
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    schedule: str = "piecewise"       # "piecewise": lr x0.1 at each milestone; "onecycle"
    first_epoch_lr: float | None = None  # piecewise: this lr during the first epoch (authors: 0.02)
    milestones: tuple = (0.75, 0.9)   # fractions of the run: epochs 75 and 90 of 100
    eps: float = 8 / 255              # training attack
    step_size: float = 2 / 255
    steps: int = 10
    random_start: str | None = "gaussian"
    method_options: dict = field(default_factory=dict)  # e.g. {"beta": 1.0}
    # After the training step's last forward of the target, forward it once more on the clean
    # batch in train mode, output unused, as the DYNAT (and LBGAT) authors' loops do: the loss and
    # the gradients are unchanged, only the target's BatchNorm running statistics also see clean
    # images.
    target_clean_forward: bool = False
    # Two departures from the paper, off by default, for methods with a guide (name them wherever
    # a result uses them): the guide trained alone on clean images for this many epochs before
    # the joint run (a strong guide from the first step), and y instead of the guide's labels
    # for the first label_warmup_steps optimizer steps (no weak-label phase).
    guide_init_epochs: int = 0
    label_warmup_steps: int = 0
    augment: bool = True
    eval_steps: int = 10              # PGD steps for the per-epoch robust accuracy
    n_eval: int = 256                 # test images evaluated after each epoch
    n_eval_train: int = 0             # training images (unaugmented) evaluated after each epoch
    # The last n_holdout images of the training subset are held out: never trained on, they are
    # what ``evaluate.pick_best`` chooses a kept checkpoint by (the test set never is).
    n_holdout: int = 0
    keep_last: int = 1                # keep the weights of the last K epochs (authors: 91-100)
    seed: int = 0
    device: str = "auto"              # "auto": CUDA if available, else CPU
    amp: bool = True                  # bf16 autocast on CUDA GPUs with native bf16 (not CPU)
    fast: bool = True                 # the fast step of fast.py where the method has one
    channels_last: bool = True        # channels_last memory format (CUDA and CPU)
    compile: bool = False             # torch.compile both networks (CUDA; minutes of warm-up)
    cuda_graphs: bool = True          # the fast step's attack as a CUDA graph (one process)
    diagnose_every: int = 10          # per-step diagnostics every N steps (diagnostics.py); 0: off
    data_root: str = "data"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        d = dict(d)
        d["milestones"] = tuple(d.get("milestones", (0.75, 0.9)))
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown config fields {sorted(unknown)}.")
        return cls(**d)


PROFILES: dict[str, dict] = {
    # CI and a first look: synthetic data, a few minutes per lesson on 2 CPU cores (the README
    # gives measured times). As small as the lessons' stories allow: with 1,024 training images
    # DYNAT's target does not learn in two epochs (12 % clean); the robust accuracies are
    # compared on 64 test images (standard 9 %, DYNAT 17 % under PGD-10).
    "smoke": dict(dataset="synthetic", model="small-cnn", guide_model="small-cnn", n_train=2048,
                  n_test=256, epochs=2, batch_size=64, steps=2, step_size=4 / 255,
                  schedule="onecycle", n_eval=64, eval_steps=10),
    # A lab CPU: 8,000 CIFAR-10 images, sized for a lesson (the README gives the times); PGD-2
    # with steps of half the budget in training, PGD-20 to evaluate.
    "cpu": dict(dataset="cifar10", model="small-cnn", guide_model="small-cnn", n_train=8000,
                n_test=1000, epochs=2, batch_size=64, steps=2, step_size=4 / 255,
                schedule="onecycle", n_eval=500, eval_steps=20),
    # A Colab GPU: ResNet-18 target and guide, the whole of CIFAR-10.
    "gpu": dict(dataset="cifar10", model="resnet18", guide_model="resnet18", n_train=None,
                n_test=None, epochs=30, batch_size=128, steps=10, step_size=2 / 255,
                schedule="piecewise", n_eval=1000, eval_steps=20),
    # The paper's settings: WRN-34-10 target, ResNet-18 guide, 100 epochs.
    # What the authors' released loop does beyond the paper's text is switched on here too: their
    # guide (resnet18-cifar), lr 0.02 in the first epoch, the target's extra clean forward, the
    # weights of the last 10 epochs kept. To choose among those without reading the test set,
    # 1,000 training images are held out (the authors train on all 50,000).
    "paper": dict(dataset="cifar10", model="wrn-34-10", guide_model="resnet18-cifar",
                  n_train=None, n_test=None, epochs=100, batch_size=128, lr=0.1, momentum=0.9,
                  weight_decay=2e-4, schedule="piecewise", milestones=(0.75, 0.9),
                  first_epoch_lr=0.02, eps=0.031, step_size=0.007, steps=10,
                  random_start="gaussian", target_clean_forward=True, n_eval=1000,
                  eval_steps=20, keep_last=10, n_holdout=1000),
}


def config(profile: str = "smoke", **overrides) -> Config:
    """The Config of a named profile (smoke, cpu, gpu, paper), with fields overridden and the
    method's own defaults resolved:

    - ``random_start``: the method's own (uniform for PGD-AT and GAIRAT, as their code;
      Gaussian for DYNAT, TRADES, ...) unless overridden here, whatever the profile says;
    - ``method_options``: every setting of the method (beta, label source, weights, burn-in,
      ...), its default filled in where not given (``with_method_settings``).

    The one place where a method name becomes a run: the command line, the lessons,
    ``compare`` and ``study`` all call it, so the same method name trains the same thing and
    finds the same run folder (``run_folder``) whoever asks.
    """
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}. Valid: {', '.join(PROFILES)}.")
    fields = {**PROFILES[profile], **overrides}
    if "random_start" not in overrides:
        method = methods.get(fields.get("method", Config.method))
        fields["random_start"] = method.option_default(
            "random_start", fallback=fields.get("random_start", Config.random_start))
    cfg = with_method_settings(Config(**fields))
    validate(cfg)
    return cfg


def with_method_settings(cfg: Config) -> Config:
    """``cfg`` with ``method_options`` completed by the method's own settings and their
    defaults (``methods.Method.settings``); a setting the method does not have raises."""
    settings = methods.get(cfg.method).settings()
    if not isinstance(cfg.method_options, dict):
        raise ValueError(f"method_options must be a mapping of the method's settings, got "
                         f"{type(cfg.method_options).__name__}.")
    unknown = sorted(set(cfg.method_options) - set(settings))
    if unknown:
        raise ValueError(f"Method {cfg.method!r} has no setting(s) {unknown}; its settings: "
                         f"{', '.join(settings) or 'none'} (the attack's budget is set by eps, "
                         f"step_size, steps and random_start).")
    return dataclasses.replace(cfg, method_options={**settings, **cfg.method_options})


def validate(cfg: Config) -> None:
    """Raise a ValueError naming the first bad field of ``cfg``."""
    with_method_settings(cfg)
    for name in (cfg.model, cfg.guide_model):
        if name not in models.MODELS:
            raise ValueError(f"Unknown model {name!r}. Valid: {', '.join(models.MODELS)}.")
    check_budget(cfg.eps, cfg.step_size, cfg.steps)
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {cfg.schedule!r}. Valid: {', '.join(SCHEDULES)}.")
    for what in ("epochs", "batch_size", "n_eval", "eval_steps", "keep_last"):
        if not isinstance(getattr(cfg, what), int) or getattr(cfg, what) < 1:
            raise ValueError(f"{what} must be a positive integer, got {getattr(cfg, what)!r}.")
    for what in ("n_eval_train", "n_holdout", "guide_init_epochs", "label_warmup_steps",
                 "diagnose_every"):
        if not isinstance(getattr(cfg, what), int) or getattr(cfg, what) < 0:
            raise ValueError(f"{what} must be an integer >= 0, got {getattr(cfg, what)!r}.")
    for what in ("n_train", "n_test"):  # None: the whole split
        value = getattr(cfg, what)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{what} must be a positive integer or None (all), got {value!r}.")
    for what in ("lr", "momentum", "weight_decay", "first_epoch_lr"):
        value = getattr(cfg, what)
        if value is None and what == "first_epoch_lr":
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{what} must be a finite number >= 0, got {value!r}.")
    _validate_departures(cfg)


def _validate_departures(cfg: Config) -> None:
    """``guide_init_epochs`` needs a method with a guide; ``label_warmup_steps`` one whose
    labels come from the guide (a ``label_source`` setting that is not already "static")."""
    method = methods.get(cfg.method)
    if cfg.guide_init_epochs and not method.uses_guide:
        raise ValueError(f"guide_init_epochs pre-trains the guide, and method {cfg.method!r} "
                         f"has none: use a method with a guide (dynat, lbgat, ...) or set it "
                         f"to 0.")
    source = with_method_settings(cfg).method_options.get("label_source")
    if cfg.label_warmup_steps and source in (None, "static"):
        raise ValueError(f"label_warmup_steps gives y instead of the guide's labels, and "
                         f"method {cfg.method!r} does not train on the guide's labels: use a "
                         f"DYNAT method with dynamic or soft labels, or set it to 0.")


#: Fields that say how a run is executed, not what it computes: they may differ on resume.
RUNTIME_FIELDS = ("device", "amp", "fast", "channels_last", "compile", "cuda_graphs",
                  "data_root", "keep_last", "diagnose_every")


def resolve_device(name: str) -> torch.device:
    """"auto": CUDA if available, else the CPU; under torchrun, this process's own GPU. Any
    other name must be one of ``available_devices()``: else a ValueError lists them."""
    name = str(name).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in available_devices():
        raise ValueError(_unavailable_device(name))
    return distributed.device_for(torch.device(name), distributed.context())


def available_devices() -> list[str]:
    """The device names this machine can run on: auto, cpu, and cuda / cuda:N or mps if present."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def _unavailable_device(name: str) -> str:
    """Why ``name`` cannot be used here, and what can."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = ", built without CUDA" if torch.version.cuda is None else ""
        why = f"this machine has no CUDA GPU PyTorch can use (torch {torch.__version__}{build})"
    elif name.startswith("cuda"):
        why = f"this machine has {torch.cuda.device_count()} CUDA GPU(s)"
    elif name == "gpu":
        why = "PyTorch calls an NVIDIA GPU 'cuda'"
    else:
        why = "dynat-lite runs on the CPU, CUDA GPUs and Apple's mps"
    return (f"Device {name!r} is not available: {why}. Available here: "
            f"{', '.join(available_devices())} (--device, or the DEVICE parameter of a lesson).")


def learning_rate(cfg: Config, progress: float) -> float:
    """The lr at ``progress`` epochs into the run (a float: 2.5 = half-way through epoch 3).

    "piecewise": cfg.lr, times 0.1 from each milestone epoch on (rounded to whole epochs, so
    epochs 75 and 90 of 100, as the paper), and ``cfg.first_epoch_lr`` instead during the first
    epoch when it is set (the authors' code: 0.02, then 0.1). "onecycle": up linearly to cfg.lr over the first
    40 % of the run, then down linearly to 0 -- a short run's better friend.
    """
    if cfg.schedule == "piecewise":
        if cfg.first_epoch_lr is not None and progress < 1:
            return cfg.first_epoch_lr
        passed = sum(int(progress) >= round(m * cfg.epochs) for m in cfg.milestones)
        return cfg.lr * 0.1 ** passed
    t = progress / cfg.epochs
    return cfg.lr * (t / 0.4 if t < 0.4 else max(0.0, (1 - t) / 0.6))


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
    return fast.FastPGD(**budget, shard=shard, graph=graph)


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


# -------------------------------------------------------------------------------- run folders
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@contextlib.contextmanager
def claim_run_folder(out: str | Path | None):
    """Own the run folder ``out`` while the block runs (None: nothing to own).

    First checks that a file can be created there, so that a read-only folder fails now and
    not after an epoch. Then takes the folder's lock file, ``run.lock``, which names the owner
    (pid, host, command): another process that wants the folder fails at once with a
    RunFolderError naming it. The lock is an advisory ``flock``, which the operating system
    drops when its process ends, however it ends: a lock file left by a killed run is taken
    over (where flock is missing, the recorded pid is checked instead; on Windows there is no
    lock). Then removes the temporary files of a checkpoint write that was killed midway.
    On leaving, the lock file is deleted."""
    if out is None:
        yield
        return
    folder = Path(out)
    _check_writable(folder)
    fd = _lock(folder / LOCK)
    try:
        for stale in (*folder.glob(CHECKPOINT + "*.tmp"), *folder.glob("epoch-*.pt*.tmp"),
                      *folder.glob(".write-test-*")):
            stale.unlink(missing_ok=True)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK)
        os.close(fd)  # releases the flock


def _check_writable(folder: Path) -> None:
    """Raise a RunFolderError unless a file can be created in ``folder`` (made if missing)."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"The run folder {folder} is a file, not a folder: choose another "
                             f"output folder (--out).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunFolderError(f"Cannot write to the run folder {folder} ({err.strerror or err}): "
                             f"choose an output folder you can write to (--out).") from err


def _lock(path: Path) -> int:
    """Take the lock file ``path`` (see ``claim_run_folder``); returns its descriptor."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if _held_elsewhere(fd):
            owner = _lock_owner(fd)
            os.close(fd)
            raise RunFolderError(_busy_message(path.parent, owner))
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not a file its owner just deleted
                break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "command": " ".join(sys.argv),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    return fd


def _held_elsewhere(fd: int) -> bool:
    """True if another live process holds the lock file open as ``fd``."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except OSError:
            pass  # a file system without flock: check the recorded pid
    if os.name == "nt":  # os.kill would end the process there
        return False
    pid = _lock_owner(fd).get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_owner(fd: int) -> dict:
    """What the lock file open as ``fd`` says about its owner ({} if unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        owner = json.loads(os.read(fd, 65536).decode() or "{}")
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _busy_message(folder: Path, owner: dict) -> str:
    who = f"process {owner.get('pid', '(unknown)')}"
    if owner.get("host"):
        who += f" on {owner['host']}"
    if owner.get("command"):
        who += f", running `{owner['command']}`"
    if owner.get("since"):
        who += f", since {owner['since']}"
    return (f"The run folder {folder} is in use by another run ({who}): two runs writing one "
            f"folder would overwrite each other's checkpoint. Wait for that run to finish, stop "
            f"it, or choose another output folder (--out).")


def _finished(out: str | Path, cfg: Config) -> bool:
    """True if ``out`` holds a checkpoint of ``cfg.epochs`` epochs or more: ``fit`` then only
    loads it, without owning the folder (which may be read-only). Reads no tensor data."""
    ckpt = Path(out) / CHECKPOINT
    if not ckpt.is_file():
        return False
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"]) >= cfg.epochs
    except Exception:  # fit's load_checkpoint says what is wrong with it
        return False


# -------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save to a temporary file beside ``path``, then rename: never a half-written file.
    A full disk raises a RunFolderError that says so (``path`` keeps the previous checkpoint)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if _disk_full(err):
            raise RunFolderError(_disk_full_message(path, state.get("epoch"))) from err
        raise


def _disk_full(err: BaseException) -> bool:
    """A write that failed for want of space. PyTorch's writer reports it as a RuntimeError
    ("[enforce fail at inline_container.cc] ... file write failed")."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, RuntimeError) and ("file write failed" in str(err)
                                              or "inline_container" in str(err))


def _disk_full_message(path: Path, epoch) -> str:
    try:
        free = f" ({shutil.disk_usage(path.parent).free / 2 ** 20:.0f} MiB free)"
    except OSError:
        free = ""
    previous = path if path.exists() else path.parent / CHECKPOINT  # kept weights: the run's
    kept = (f"{previous} still holds the previous checkpoint, intact" if previous.exists()
            else "no checkpoint was written before")
    return (f"The checkpoint{f' of epoch {epoch}' if epoch is not None else ''} could not be "
            f"written: the disk holding {path.parent} is full{free}. {kept}. Free some space, "
            f"then run the same command again (or fit with the same out): the run resumes from "
            f"its last checkpoint.")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by ``fit`` (``weights_only=True``: no code is unpickled);
    raise a one-line CheckpointError if it is missing, corrupt or inconsistent."""
    path = Path(path)
    if path.is_dir() or path.suffix not in (".pt", ".pth"):
        path = path / CHECKPOINT
    if not path.exists():
        runs = _run_folders_near(path.parent)
        found = (f" Run folders with a checkpoint near it: {', '.join(map(str, runs))}."
                 if runs else "")
        raise CheckpointError(f"No checkpoint at {path}.{found} Or train first "
                              f"(dynat_lite.train.fit or `python -m dynat_lite train --out "
                              f"{path.parent}`).")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is corrupt or not a dynat-lite checkpoint "
                              f"({data_lib.plain_reason(err)}). Delete it to train from "
                              f"scratch.") from err
    if not isinstance(state, dict) or not {"config", "epoch", "target"} <= set(state):
        raise CheckpointError(f"{path} is not a dynat-lite checkpoint (missing config, epoch or "
                              f"target weights). Delete it to train from scratch.")
    _check_consistent(path, state)
    return state


def _check_consistent(path: Path, state: dict) -> None:
    """The parts of a checkpoint that the weights do not decide: a readable config, a count of
    epochs, state_dicts where networks belong."""
    def inconsistent(what: str):
        return CheckpointError(f"{path} is not a consistent dynat-lite checkpoint: {what}.")

    if not isinstance(state["config"], dict):
        raise inconsistent(f"its config is a {type(state['config']).__name__}, not a mapping "
                           f"of settings")
    try:
        validate(Config.from_dict(state["config"]))
    except (TypeError, ValueError, KeyError) as err:
        raise inconsistent(f"its config cannot be read by this version of dynat-lite "
                           f"({' '.join(str(err).split())})") from err
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise inconsistent(f"its epoch is {epoch!r}, not a count of epochs")
    for part in ("target", "guide"):
        if state.get(part) is not None and not isinstance(state[part], dict):
            raise inconsistent(f"its {part} weights are a {type(state[part]).__name__}, not a "
                               f"state_dict")


def load_weights(net: nn.Module, weights, path: str | Path, part: str) -> None:
    """``net.load_state_dict(weights)``, or a one-line CheckpointError saying what does not
    fit (a missing key, a size mismatch) instead of PyTorch's multi-line traceback."""
    try:
        net.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError, KeyError, ValueError) as err:
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 400 else detail[:400] + " ..."
        raise CheckpointError(f"{path} is not a consistent dynat-lite checkpoint: its {part} "
                              f"weights do not fit the network its config names "
                              f"({detail}).") from err


def _run_folders_near(folder: Path, most: int = 5) -> list[Path]:
    """Folders holding a checkpoint, in or one level below the nearest existing ancestor of
    ``folder``: what a mistyped --out probably meant."""
    base = folder
    while not base.is_dir() and base != base.parent:
        base = base.parent
    if not base.is_dir() or base == Path(base.anchor or "/"):
        return []
    found = {p.parent for pattern in ("*/" + CHECKPOINT, "*/*/" + CHECKPOINT)
             for p in base.glob(pattern)}
    return sorted(found)[:most]


def load_model(path: str | Path, which: str = "target", device: str = "cpu") -> nn.Module:
    """The trained target (or guide) network of a checkpoint, in eval mode, in the memory
    layout ``fit`` trains in on ``device`` (so that it computes exactly what the trained one
    did)."""
    state = load_checkpoint(path)
    cfg = Config.from_dict(state["config"])
    if state.get(which) is None:
        raise CheckpointError(f"The checkpoint has no {which} network (method {cfg.method}).")
    head = state[which].get("fc.weight")
    if not torch.is_tensor(head) or head.dim() != 2:
        raise CheckpointError(f"{path} is not a consistent dynat-lite checkpoint: its {which} "
                              f"weights lack the output layer fc.weight.")
    name = cfg.model if which == "target" else cfg.guide_model
    model = models.create(name, head.shape[0])
    load_weights(model, state[which], path, which)
    model.to(device)
    fast.prepare(model, channels_last=fast.use_channels_last(device, cfg.channels_last))
    return model.eval()


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
        record["collapsed"] = diagnostics.is_collapsed(record["steps"])
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


#: The weights kept of one epoch (``Config.keep_last`` > 1), beside the checkpoint.
KEPT = "epoch-{:03d}.pt"


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


def kept_checkpoints(out: str | Path) -> dict[int, Path]:
    """Epoch -> file of the weights kept in the run folder ``out`` (``Config.keep_last``), in
    order; each loads with ``load_checkpoint`` and ``load_model`` like the checkpoint."""
    found = {}
    for path in Path(out).glob("epoch-*.pt"):
        number = path.stem.removeprefix("epoch-")
        if number.isdigit():
            found[int(number)] = path
    return dict(sorted(found.items()))


def check_finite(record: dict, nets: Nets, ckpt: Path | None = None) -> None:
    """Raise TrainingDiverged unless the epoch's mean losses (``record``) and all weights are
    finite. Once per epoch: the losses are already on the host, the weights cost one sync."""
    losses_ok = all(math.isfinite(record[k]) for k in ("loss", "guide_loss", "target_loss"))
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

"""The training loop: one SGD optimizer over guide and target, checkpoints, resume, history.

    from dynat_lite import train
    result = train.fit(train.config("smoke", method="dynat"), out="runs/demo")
    result.history[-1]   # {"epoch": 2, "test_pgd": ..., "label_agreement": ..., ...}

Runs are reproducible: the models start from ``seed``; the batches, their augmentation and the
attacks' random starts of epoch k depend only on (seed, k). A checkpoint is written atomically
after every epoch; calling ``fit`` again with the same config and ``out`` resumes from it and
gives, on the CPU, bit-identical weights to an uninterrupted run. How a run is executed (device,
bf16, channels_last, torch.compile, the fast step, where the data lives) may change between
the two calls: a run started on a laptop can go on on a GPU.

DYNAT's training step is the fast one of ``fast.py`` (bf16 autocast on CUDA, channels_last,
no host synchronization, optional ``torch.compile``); under ``torchrun`` each process trains on
its slice of every global batch (``distributed.py``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import data as data_lib
from . import distributed, fast, methods, models
from .attacks import check_budget
from .evaluate import evaluate

CHECKPOINT = "checkpoint.pt"
SCHEDULES = ("piecewise", "onecycle")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or from a different run."""


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
    augment: bool = True
    eval_steps: int = 10              # PGD steps for the per-epoch robust accuracy
    n_eval: int = 256                 # test images evaluated after each epoch
    n_eval_train: int = 0             # training images (unaugmented) evaluated after each epoch
    seed: int = 0
    device: str = "auto"              # "auto": CUDA if available, else CPU
    amp: bool = True                  # bf16 autocast on CUDA GPUs with native bf16 (not CPU)
    fast: bool = True                 # the fast step of fast.py where the method has one
    channels_last: bool = True        # channels_last memory format (CUDA and CPU)
    compile: bool = False             # torch.compile both networks (CUDA; minutes of warm-up)
    cuda_graphs: bool = True          # the fast step's attack as a CUDA graph (one process)
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
    # CI: seconds on a CPU, synthetic data.
    "smoke": dict(dataset="synthetic", model="small-cnn", guide_model="small-cnn", n_train=2048,
                  n_test=256, epochs=2, batch_size=64, steps=2, step_size=4 / 255,
                  schedule="onecycle", n_eval=128, eval_steps=10),
    # A lab CPU: minutes on 8,000 CIFAR-10 images (lesson 03 trains and evaluates PGD-AT and
    # DYNAT in under 4 minutes on 2 cores); PGD-2 with steps of half the budget in training,
    # PGD-20 to evaluate.
    "cpu": dict(dataset="cifar10", model="small-cnn", guide_model="small-cnn", n_train=8000,
                n_test=1000, epochs=2, batch_size=64, steps=2, step_size=4 / 255,
                schedule="onecycle", n_eval=500, eval_steps=20),
    # A Colab GPU: ResNet-18 target and guide, the whole of CIFAR-10.
    "gpu": dict(dataset="cifar10", model="resnet18", guide_model="resnet18", n_train=None,
                n_test=None, epochs=30, batch_size=128, steps=10, step_size=2 / 255,
                schedule="piecewise", n_eval=1000, eval_steps=20),
    # The paper's settings (DESIGN.md): WRN-34-10 target, ResNet-18 guide, 100 epochs.
    # What the authors' released loop does beyond the paper's text is switched on here too: their
    # guide (resnet18-cifar), lr 0.02 in the first epoch, the target's extra clean forward.
    "paper": dict(dataset="cifar10", model="wrn-34-10", guide_model="resnet18-cifar",
                  n_train=None, n_test=None, epochs=100, batch_size=128, lr=0.1, momentum=0.9,
                  weight_decay=2e-4, schedule="piecewise", milestones=(0.75, 0.9),
                  first_epoch_lr=0.02, eps=0.031, step_size=0.007, steps=10,
                  random_start="gaussian", target_clean_forward=True, n_eval=1000,
                  eval_steps=20),
}


def config(profile: str = "smoke", **overrides) -> Config:
    """The Config of a named profile (smoke, cpu, gpu, paper), with fields overridden."""
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}. Valid: {', '.join(PROFILES)}.")
    cfg = Config(**{**PROFILES[profile], **overrides})
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Raise a ValueError naming the first bad field of ``cfg``."""
    methods.get(cfg.method)
    for name in (cfg.model, cfg.guide_model):
        if name not in models.MODELS:
            raise ValueError(f"Unknown model {name!r}. Valid: {', '.join(models.MODELS)}.")
    check_budget(cfg.eps, cfg.step_size, cfg.steps)
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {cfg.schedule!r}. Valid: {', '.join(SCHEDULES)}.")
    for what in ("epochs", "batch_size", "n_eval"):
        if not isinstance(getattr(cfg, what), int) or getattr(cfg, what) < 1:
            raise ValueError(f"{what} must be a positive integer, got {getattr(cfg, what)!r}.")


#: Fields that say how a run is executed, not what it computes: they may differ on resume.
RUNTIME_FIELDS = ("device", "amp", "fast", "channels_last", "compile", "cuda_graphs",
                  "data_root")


def resolve_device(name: str) -> torch.device:
    """"auto": CUDA if available, else the CPU; under torchrun, this process's own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.device_for(torch.device(name), distributed.context())


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
def train_epoch(cfg: Config, nets: Nets, optimizer: torch.optim.Optimizer,
                batches: data_lib.Batches, epoch: int, progress: Callable | None = None) -> dict:
    """Train one epoch; returns the mean losses, label agreement and lr. No host sync per step.

    The loss is the fast step's where the method has one (``fast.loss_function``). Under
    torchrun each process trains on its slice of every global batch, and the returned means
    are over all processes.
    """
    method = methods.get(cfg.method)
    ctx = distributed.context()
    device = batches.x.device
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 7919 + epoch)
    options = dict(cfg.method_options)
    if method.attack:
        options.update(eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps,
                       random_start=cfg.random_start, generator=generator)
    if method.scheduled:  # a burn-in (GAIRAT, MAIL): how far into the run this epoch starts
        options["run_fraction"] = epoch / cfg.epochs
    loss_fn = fast.loss_function(cfg.method, cfg.fast, options)
    if ctx is not None and loss_fn is not method:  # the fast step draws PGD's start globally
        options["shard"] = (ctx.rank, ctx.world)
    if ctx is None and loss_fn is not method and device.type == "cuda" and cfg.cuda_graphs:
        options["graph"] = True                    # the attack as one CUDA graph per batch
    channels_last = fast.use_channels_last(device, cfg.channels_last)
    guide, target = nets.for_step()
    autocast = fast.autocast(device, cfg.amp)
    nets.train()
    sums = torch.zeros(4, device=device)  # loss, guide loss, target loss, agreeing labels
    n_seen, n_batches = 0, len(batches)
    it = batches.epoch(epoch)
    if progress is not None:
        it = progress(it, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    lr = cfg.lr
    for i, (x, y) in enumerate(it):
        lr = learning_rate(cfg, epoch + i / n_batches)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = distributed.shard(x, ctx), distributed.shard(y, ctx)
        x = fast.to_memory_format(x, channels_last)
        with autocast:
            loss, out = loss_fn(guide, target, x, y, **options)
            if cfg.target_clean_forward:
                clean_forward(target, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        zero = torch.zeros((), device=device)
        sums += torch.stack([loss.detach().float(), out.get("guide_loss", zero).float(),
                             out.get("target_loss", zero).float(),
                             (out["labels"] == y).sum().float()])
        n_seen += len(y)
    world = ctx.world if ctx is not None else 1
    sums = distributed.all_reduce_sum(sums, ctx).tolist()
    n_seen *= world
    n_batches *= world
    return {"lr": lr, "loss": sums[0] / n_batches, "guide_loss": sums[1] / n_batches,
            "target_loss": sums[2] / n_batches, "label_agreement": sums[3] / max(n_seen, 1)}


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
    pgd_name = {10: "pgd10", 20: "pgd20"}.get(cfg.eval_steps, "pgd10")
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
    return "  ".join(parts)


# -------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save to a temporary file beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by ``fit`` (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}. Train first (dynat_lite.train.fit or "
                              f"`python -m dynat_lite train --out {path.parent}`).")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is corrupt or not a dynat-lite checkpoint ({err}). "
                              f"Delete it to train from scratch.") from err
    if not isinstance(state, dict) or not {"config", "epoch", "target"} <= set(state):
        raise CheckpointError(f"{path} is not a dynat-lite checkpoint (missing config, epoch or "
                              f"target weights). Delete it to train from scratch.")
    return state


def load_model(path: str | Path, which: str = "target", device: str = "cpu") -> nn.Module:
    """The trained target (or guide) network of a checkpoint, in eval mode, in the memory
    layout ``fit`` trains in on ``device`` (so that it computes exactly what the trained one
    did)."""
    state = load_checkpoint(path)
    cfg = Config.from_dict(state["config"])
    if state.get(which) is None:
        raise CheckpointError(f"The checkpoint has no {which} network (method {cfg.method}).")
    num_classes = state[which]["fc.weight"].shape[0]
    name = cfg.model if which == "target" else cfg.guide_model
    model = models.create(name, num_classes)
    model.load_state_dict(state[which])
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


def _comparable(d: dict) -> dict:
    """The fields of a config dict that define the run (defaults filled in for fields that a
    checkpoint written by an older version lacks)."""
    try:
        full = Config.from_dict(d).to_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"The checkpoint's config cannot be read by this version of "
                              f"dynat-lite ({err}).") from err
    return {k: v for k, v in full.items() if k not in RUNTIME_FIELDS}


def run_folder(cfg: Config, root: str | Path) -> Path:
    """The folder under ``root`` for the run ``cfg`` describes: the method's name and a hash of
    the config (the runtime fields left out), so a changed setting never finds a stale model."""
    key = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
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
    """
    validate(cfg)
    ctx = distributed.context()
    distributed.check_batch_size(cfg.batch_size, ctx)
    device = resolve_device(cfg.device)
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
    history: list[dict] = []
    start = 0
    ckpt = Path(out) / CHECKPOINT if out is not None else None
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt, map_location=device)
        theirs, ours = _comparable(state["config"]), _comparable(cfg.to_dict())
        if theirs != ours:
            diff = ", ".join(f"{k}: {theirs[k]!r} there, {ours[k]!r} here"
                             for k in ours if theirs[k] != ours[k])
            raise CheckpointError(f"{ckpt} was written by a different config ({diff}); "
                                  f"choose another output folder or delete it.")
        nets.target.load_state_dict(state["target"])
        if nets.guide is not None:
            nets.guide.load_state_dict(state["guide"])
        optimizer.load_state_dict(state["optimizer"])
        history, start = list(state["history"]), int(state["epoch"])
    wrap_for_processes(nets, device)
    batches = data_lib.Batches(dataset.x_train, dataset.y_train, cfg.batch_size, device=device,
                               augment=cfg.augment, seed=cfg.seed)
    x_eval, y_eval = dataset.x_test[:cfg.n_eval], dataset.y_test[:cfg.n_eval]
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        record = {"epoch": epoch + 1,
                  **train_epoch(cfg, nets, optimizer, batches, epoch, progress)}
        record["train_seconds"] = time.perf_counter() - t0
        record["images_per_second"] = len(batches) * cfg.batch_size / record["train_seconds"]
        record.update(eval_epoch(cfg, nets, x_eval, y_eval))
        if cfg.n_eval_train:
            record.update(eval_train_subset(cfg, nets, dataset))
        history.append(record)
        if ckpt is not None and main:
            save_checkpoint(ckpt, {
                "format": 1, "config": cfg.to_dict(), "epoch": epoch + 1,
                "target": nets.target.state_dict(),
                "guide": nets.guide.state_dict() if nets.guide is not None else None,
                "optimizer": optimizer.state_dict(), "history": history})
        if on_epoch is not None and main:
            on_epoch(record)
    nets.target.eval()
    if nets.guide is not None:
        nets.guide.eval()
    return Result(cfg, nets.target, nets.guide, history, dataset)

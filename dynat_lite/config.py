"""What defines a run: ``Config``, the named profiles, validation, devices, the lr schedule.

    from dynat_lite import config
    cfg = config.config("cpu", method="dynat", epochs=4)   # also train.config

``config`` is the one place where a method name becomes a run: the profile, the overrides and
the method's own defaults (its random start, its settings in ``method_options``). This module
imports the methods (for their defaults), the models (for their names) and the attacks' budget
check; nothing that trains, and no run folder.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from . import distributed, methods, models
from .attacks import check_budget

SCHEDULES = ("piecewise", "onecycle")


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
    fold_batchnorm: bool = True       # the fast CPU attack with batch norm folded (fast.folded)
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
    for m in cfg.milestones:
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < 1:
            raise ValueError(f"milestones must be fractions of the run strictly between 0 and 1 "
                             f"(the paper's: 0.75, 0.9), got {list(cfg.milestones)!r}.")
    _validate_method_options(cfg)
    _validate_departures(cfg)


#: Method settings with a sign or range (the others only need their default's type).
_OPTION_RANGES = {"beta": (0.0, math.inf), "burn_in": (0.0, 1.0), "slope": (0.0, math.inf)}


def _validate_method_options(cfg: Config) -> None:
    """Each method setting has the type of its default (a number where the default is a
    number, finite), and ``beta`` >= 0, ``burn_in`` in [0, 1]."""
    defaults = methods.get(cfg.method).settings()
    for name, value in cfg.method_options.items():
        default = defaults.get(name)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            if default is not None and not isinstance(value, type(default)):
                raise ValueError(f"Method setting {name} of {cfg.method!r} must be a "
                                 f"{type(default).__name__} (like its default {default!r}), "
                                 f"got {value!r}.")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f"Method setting {name} of {cfg.method!r} must be a finite number "
                             f"(default {default!r}), got {value!r}.")
        low, high = _OPTION_RANGES.get(name, (-math.inf, math.inf))
        if not low <= value <= high:
            raise ValueError(f"Method setting {name} of {cfg.method!r} must be in "
                             f"[{low:g}, {high:g}], got {value!r}.")


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
                  "fold_batchnorm", "data_root", "keep_last", "diagnose_every")


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

"""The fast DYNAT training step, and the faithful float32 reference it is measured against.

The fast step computes what :func:`dynat_lite.methods.dynat_loss` computes, arranged so that a
GPU stays busy (``train.fit`` uses it for "dynat" and those of its ablations it covers, see
:func:`loss_function`):

- bf16 autocast on CUDA (``train.train_epoch`` opens the region), with the normalization, the
  first convolution and the last linear layer in float32 (:func:`dynat_lite.models.float32`);
- channels_last memory format (:func:`prepare`, :func:`to_memory_format`): cuDNN's NHWC kernels
  on CUDA, oneDNN's on the CPU (about 1.25x faster training of the small CNN on 2 cores);
- input-only gradients in the attack: the parameters are frozen while PGD runs, so neither
  eager autograd nor a compiled backward spends time on weight gradients nobody reads;
- the guide's forward once per batch: the dynamic labels are its argmax on the clean batch;
- data resident on the device and augmented there (:class:`dynat_lite.data.Batches`);
- no host synchronization inside the step: no ``.item()``, no checks that read tensor values
  (``attacks.pgd`` validates its input with a min/max read; the fast attack does not -- the
  images come from a validated dataset), the learning rate as a Python float;
- on CUDA, the attack's ten steps recorded once as a CUDA graph and replayed per batch
  (:class:`AttackGraph`; ``Config.cuda_graphs``, one process): launching thousands of small
  kernels one by one is what limits a ResNet-18 step on an H100, not arithmetic;
- ``torch.compile`` of both networks where it helps (``Config.compile``; off on the CPU).

What each of these buys on a GPU is measured by ``python -m dynat_lite bench``; the README
records the figures of one H100.

On the CPU (no autocast, no compile), given the same networks, the fast step gives exactly, bit
for bit, the loss of ``methods.dynat_loss``: tests/test_fast.py checks it.

The reference (:func:`reference_dynat_loss`, :func:`reference_batches`) is the step as the
authors' code runs it: float32, eager, the guide's argmax recomputed at every PGD step, batches
from a CPU ``DataLoader`` copied to the device. ``python -m dynat_lite bench`` times both.
"""
from __future__ import annotations

import contextlib
import inspect
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import models
from .attacks import eval_mode, pgd_step, project, random_start_point
from .labels import dynamic_labels
from .methods import TARGET_LOSSES, target_term

#: Label sources the fast step implements (``methods.dynat_loss`` also has "soft").
LABEL_SOURCES = ("dynamic", "static")


# ------------------------------------------------------------------------------- preparation
def use_channels_last(device: torch.device, requested: bool = True) -> bool:
    """channels_last pays off with cuDNN's NHWC kernels on CUDA and oneDNN's on the CPU; other
    devices keep the default layout."""
    return requested and torch.device(device).type in ("cuda", "cpu")


def native_bf16(device: torch.device) -> bool:
    """Does ``device`` compute in bf16 natively? CUDA GPUs of compute capability 8.0 (Ampere)
    and later do; older ones (a T4: 7.5) only emulate it, slower than float32."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def autocast(device: torch.device, enabled: bool = True):
    """The fast step's mixed-precision region: bf16 autocast on a GPU with native bf16 when
    ``enabled``, else a region that changes nothing (float32)."""
    on = enabled and native_bf16(device)
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=on)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in channels_last layout if asked (a copy on the device, no host sync)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def prepare(model: nn.Module, *, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Put ``model``'s weights in channels_last layout (in place) if asked; return the callable
    the step should use: ``torch.compile(model)`` if ``compile``, else ``model`` itself.

    The compiled wrapper shares the model's parameters; checkpoints are always written from the
    model itself, so their keys never carry the wrapper's ``_orig_mod.`` prefix.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Parameters of ``model`` do not require grad inside the block (restored afterwards), so
    a backward pass computes the input's gradient only."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


# ----------------------------------------------------------------------------------- attack
def start_point(x: torch.Tensor, eps: float, kind: str | None, generator=None,
                shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """PGD's random start for ``x``, which is shard ``rank`` of ``world`` equal slices of a
    global batch: the noise is drawn for the whole global batch and sliced, so that several
    processes together start exactly where one process with the whole batch would."""
    rank, world = shard
    if world == 1:
        return random_start_point(x, eps, kind, generator)
    n = len(x)
    zeros = torch.zeros((n * world, *x.shape[1:]), dtype=x.dtype, device=x.device)
    offset = random_start_point(zeros, eps, kind, generator)[rank * n:(rank + 1) * n]
    return x + offset


def pgd_ce(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, eps: float,
           step_size: float, steps: int, random_start: str | None = "gaussian",
           generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1),
           graph: bool = False) -> torch.Tensor:
    """PGD maximizing CE(model(x'), labels), as ``attacks.pgd(..., loss="ce")`` but without
    the input checks that read values from the device, and with the parameters frozen.
    ``graph``: replay the steps as a CUDA graph (:class:`AttackGraph`); same result."""
    x = x.detach()
    start = start_point(x, eps, random_start, generator, shard)
    if graph:
        return AttackGraph.of(model, x, eps=eps, step_size=step_size, steps=steps)(x, labels,
                                                                                   start)
    with eval_mode(model), frozen(model):
        return _pgd_ce_steps(model, x, labels, start, eps, step_size, steps)


def _pgd_ce_steps(model, x, labels, start, eps, step_size, steps) -> torch.Tensor:
    x_adv = project(start, x, eps)
    for _ in range(steps):
        x_adv, _ = pgd_step(model, x_adv, x, labels, eps=eps, step_size=step_size, loss="ce")
    return x_adv


class AttackGraph:
    """The PGD steps of :func:`pgd_ce` recorded once as a CUDA graph and replayed per batch.

    Why: the host launches GPU kernels one by one, tens of microseconds each, and a ResNet-18
    forward and input-gradient at batch 128 is some two hundred kernels that an H100 finishes
    faster than they can be launched; ten PGD steps are thousands. A graph launches them all
    at once. What it needs: one input shape (a graph per shape, memory layout and autocast
    state), weights updated in place between batches (SGD does; the graph then reads the new
    values), and no host work inside the attack (there is none). The random start is drawn
    outside the graph, from the same generator as without one, so both give the same attack.
    """

    _cache: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model: nn.Module, x: torch.Tensor, **budget) -> "AttackGraph":
        """The graph for ``model`` and batches like ``x`` (recorded on first use)."""
        if x.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; the batch is on {x.device}. "
                             "Turn them off (Config.cuda_graphs=False) on other devices.")
        key = (tuple(x.shape), x.stride(), x.dtype, models._autocast_dtype("cuda"),
               tuple(sorted(budget.items())))
        graphs = cls._cache.setdefault(model, {})
        if key not in graphs:
            graphs[key] = cls(model, x, **budget)
        return graphs[key]

    def __init__(self, model: nn.Module, x: torch.Tensor, *, eps: float, step_size: float,
                 steps: int):
        self.x, self.start = x.clone(), x.clone()  # the inputs the graph reads ...
        self.labels = torch.zeros(len(x), dtype=torch.long, device=x.device)
        budget = (eps, step_size, steps)
        with eval_mode(model), frozen(model):
            side = torch.cuda.Stream()               # warm up (cuDNN's choices) off the graph
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    _pgd_ce_steps(model, self.x, self.labels, self.start, *budget)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.x_adv = _pgd_ce_steps(model, self.x, self.labels, self.start, *budget)
                # ... and the one it writes

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, start: torch.Tensor):
        """PGD from ``start`` around ``x`` against ``labels``: a copy of the graph's output."""
        self.x.copy_(x)
        self.labels.copy_(labels)
        self.start.copy_(start)
        self.graph.replay()
        return self.x_adv.clone()


# ------------------------------------------------------------------------------- fast step
def dynat_loss(guide: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
               beta: float = 1.0, random_start: str | None = "gaussian",
               generator: torch.Generator | None = None, label_source: str = "dynamic",
               target_loss: str = "ce", shard: tuple[int, int] = (0, 1), graph: bool = False):
    """The DYNAT loss of one batch, the fast way; same arguments and result as
    ``methods.dynat_loss``, plus ``shard=(rank, world)`` when ``x`` is one process's slice of
    a global batch (see :func:`start_point`) and ``graph`` to run the attack as a CUDA graph
    (:class:`AttackGraph`)."""
    for what, value, valid in (("label source", label_source, LABEL_SOURCES),
                               ("target loss", target_loss, TARGET_LOSSES)):
        if value not in valid:
            raise ValueError(f"Unknown {what} {value!r}. Valid: {', '.join(valid)}.")
    guide_logits = guide(x)                                   # the guide's only forward
    labels = dynamic_labels(guide_logits) if label_source == "dynamic" else y
    x_adv = pgd_ce(target, x, labels, eps=eps, step_size=step_size, steps=steps,
                   random_start=random_start, generator=generator, shard=shard, graph=graph)
    target_logits = target(x_adv)
    guide_loss = F.cross_entropy(guide_logits, y)
    adv_loss = target_term(target_logits, labels, guide_logits, target_loss)
    loss = guide_loss + beta * adv_loss
    return loss, {"x_adv": x_adv, "labels": labels, "guide_logits": guide_logits.detach(),
                  "target_logits": target_logits.detach(), "guide_loss": guide_loss.detach(),
                  "target_loss": adv_loss.detach()}


def loss_function(method: str, fast: bool = True, options: dict | None = None):
    """The loss ``train_epoch`` calls for ``method``; both kinds take
    ``(guide, target, x, y, **options)``.

    The fast one when ``fast``, the method is registered with ``methods.dynat_loss`` (whose
    twin :func:`dynat_loss` is) and every option is one the fast step knows; otherwise the
    registered method itself, which computes the same thing, only slower on a GPU.
    """
    from . import methods

    registered = methods.get(method)
    merged = {**registered.defaults, **(options or {})}
    known = set(inspect.signature(dynat_loss).parameters)
    if not (fast and registered.loss is methods.dynat_loss and set(merged) <= known
            and merged.get("label_source", "dynamic") in LABEL_SOURCES):
        return registered

    def fast_loss(guide, target, x, y, **options):
        return dynat_loss(guide, target, x, y, **{**registered.defaults, **options})

    return fast_loss


# -------------------------------------------------------------------------------- reference
def reference_dynat_loss(guide: nn.Module, target: nn.Module, x: torch.Tensor,
                         y: torch.Tensor, *, eps: float = 0.031, step_size: float = 0.007,
                         steps: int = 10, beta: float = 1.0):
    """The DYNAT loss as the authors' loop computes it: float32, eager, and the guide's argmax
    recomputed from the clean batch at every PGD step (without gradient; the guide stays in
    its current mode). Slower, not different: the labels are the same at every step."""
    target.eval()
    x_adv = x.detach() + 0.001 * torch.randn_like(x)
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.no_grad():
            labels = guide(x).argmax(1)
        with torch.enable_grad():
            loss = F.cross_entropy(target(x_adv), labels)
        grad, = torch.autograd.grad(loss, [x_adv])
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    target.train()
    guide_logits = guide(x)
    labels = guide_logits.detach().argmax(1)
    return F.cross_entropy(guide_logits, y) + beta * F.cross_entropy(target(x_adv), labels)


class _Augmented(torch.utils.data.Dataset):
    """CIFAR-style augmentation per image on the CPU (pad 4 + random crop, random flip), the
    way a torchvision pipeline in a DataLoader worker does it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = F.pad(self.x[i], (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        img = img[:, top:top + 32, left:left + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(2)
        return img, self.y[i]


def reference_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, device,
                      workers: int = 2, seed: int = 0):
    """The reference's input pipeline: a shuffling CPU ``DataLoader`` (``workers`` processes,
    pinned memory on CUDA) whose batches are copied to ``device`` one by one."""
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(
        _Augmented(x.cpu(), y.cpu()), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed))
    while True:
        for xb, yb in loader:
            yield xb.to(device), yb.to(device)

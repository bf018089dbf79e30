"""The fast training step: the inner attack made for a busy GPU, and what it needs.

Every attacking loss of :mod:`dynat_lite.methods` takes its inner attack as an argument;
``train.train_epoch`` passes :class:`FastPGD` (unless ``Config.fast`` is off), which computes
what :class:`dynat_lite.attacks.PGD` computes, arranged so that a GPU stays busy:

- bf16 autocast on GPUs with native bf16 (``train.train_epoch`` opens the region, :func:`autocast`),
  with the normalization, the first convolution and the last linear layer in float32
  (:func:`dynat_lite.models.float32`);
- channels_last memory format (:func:`prepare`, :func:`to_memory_format`): cuDNN's NHWC kernels
  on CUDA, oneDNN's on the CPU;
- input-only gradients in the attack: the parameters are frozen while PGD runs, so neither
  eager autograd nor a compiled backward spends time on weight gradients nobody reads;
- no host synchronization inside the step: no ``.item()``, no checks that read tensor values
  (``attacks.pgd`` validates its input with a min/max read; the fast attack does not -- the
  images come from a validated dataset), the learning rate as a Python float;
- on CUDA, the PGD-CE steps recorded once as a CUDA graph and replayed per batch
  (:class:`AttackGraph`; ``Config.cuda_graphs``, one process);
- under torchrun, the random start drawn for the whole global batch and sliced
  (:func:`start_point`), so that several processes attack as one would;
- ``torch.compile`` of both networks where it helps (``Config.compile``; off on the CPU);
- on the CPU, the CE attack runs the target with each batch norm folded into the convolution
  before it (:func:`folded`): in eval mode a batch norm is a per-channel affine map, and folded
  it costs no pass over the activations.

What each of these buys on a GPU is measured by ``python -m dynat_lite bench`` (which also
times the authors' way of running the step); the README records the figures.

On the CPU (no autocast, no compile), given the same networks, a loss run with the fast
attack gives what it gives with the plain one: bit for bit where there is no batch norm to fold
(and for the KL attacks, which run unfolded), within float tolerance where there is (the folded
convolution rounds differently): tests/test_fast.py checks both.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import methods, models
from .models import FoldedConv, folded  # noqa: F401 (the attack's; kept here by name)
from .attacks import PGD, eval_mode, kappa_path, pgd_endpoint, random_start_point
from .attacks import _clean_probs


# ------------------------------------------------------------------------------- preparation
def use_channels_last(device: torch.device, requested: bool = True) -> bool:
    """channels_last where fast NHWC kernels exist (cuDNN on CUDA, oneDNN on the CPU); other
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


# ---------------------------------------------------------------------------------- wrappers
def unwrapped(model: nn.Module) -> nn.Module:
    """The network inside a DDP or ``torch.compile`` wrapper (the attack needs neither: its
    parameters are frozen, and on the CPU the step runs eager), else ``model``."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


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


@dataclass(frozen=True, eq=False)
class FastPGD(PGD):
    """:class:`dynat_lite.attacks.PGD` for the training step: the same points, but no input
    checks (no host synchronization), the parameters frozen while it runs, the random start of
    shard ``shard = (rank, world)`` of a global batch (:func:`start_point`), on the CPU the CE
    steps on the model with its batch norms folded (:func:`folded`; the same points up to
    rounding; ``fold=False``: as it is), and with ``graph`` the CE steps replayed as a CUDA graph (:class:`AttackGraph`;
    same result)."""
    shard: tuple = (0, 1)
    graph: bool = False
    fold: bool = True

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        return start_point(x, self.eps, self.random_start, self.generator, self.shard)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                 loss: str = "ce") -> torch.Tensor:
        x = x.detach()
        start = self._start(x)
        budget = dict(eps=self.eps, step_size=self.step_size, steps=self.steps)
        if self.graph and loss == "ce":
            return AttackGraph.of(model, x, **budget)(x, y, start)
        with eval_mode(model), frozen(model):
            # Folded batch norms round differently; a CE loss's input gradient is far from
            # 0, so its signs (the PGD steps) are the same. A KL loss starts at its minimum,
            # where the gradient is all rounding: that attack runs on the model as it is.
            fold = self.fold and x.device.type == "cpu" and loss == "ce"
            net = folded(unwrapped(model)) if fold else model
            return pgd_endpoint(net, x, y, start, loss=loss,
                                clean_probs=_clean_probs(net, x, loss), **budget)

    def with_kappa(self, model: nn.Module, x: torch.Tensor,
                   y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach()
        start = self._start(x)
        with eval_mode(model), frozen(model):
            return kappa_path(model, x, y, start, eps=self.eps, step_size=self.step_size,
                              steps=self.steps)


def pgd_ce(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, eps: float,
           step_size: float, steps: int, random_start: str | None = "gaussian",
           generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1),
           graph: bool = False) -> torch.Tensor:
    """PGD maximizing CE(model(x'), labels) with :class:`FastPGD`."""
    attack = FastPGD(eps, step_size, steps, random_start, generator, shard, graph)
    return attack(model, x, labels)


class AttackGraph:
    """The PGD-CE steps of :class:`FastPGD` recorded once as a CUDA graph and replayed per batch.

    Why: the host launches GPU kernels one by one, and a forward and input-gradient of a
    ResNet-18 is some two hundred small kernels that a large GPU can finish faster than the
    host launches them; ten PGD steps are thousands. A graph launches them all at once. What
    it needs: one input shape (a graph per shape, memory layout and autocast state), weights
    updated in place between batches (SGD does; the graph then reads the new values), and no
    host work inside the attack (there is none). The random start is drawn
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
        budget = dict(eps=eps, step_size=step_size, steps=steps)
        with eval_mode(model), frozen(model):
            side = torch.cuda.Stream()               # warm up (cuDNN's choices) off the graph
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    pgd_endpoint(model, self.x, self.labels, self.start, **budget)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.x_adv = pgd_endpoint(model, self.x, self.labels, self.start, **budget)
                # ... and the one it writes

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, start: torch.Tensor):
        """PGD from ``start`` around ``x`` against ``labels``: a copy of the graph's output."""
        self.x.copy_(x)
        self.labels.copy_(labels)
        self.start.copy_(start)
        self.graph.replay()
        return self.x_adv.clone()


# -------------------------------------------------------------------------- kept for lessons
def dynat_loss(guide: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
               random_start: str | None = "gaussian", generator: torch.Generator | None = None,
               shard: tuple[int, int] = (0, 1), graph: bool = False, fold: bool = True,
               **options):
    """``methods.dynat_loss`` run with :class:`FastPGD` built from the budget arguments (the
    name lesson 05 calls; new code passes ``attack=FastPGD(...)`` to ``methods.dynat_loss``)."""
    attack = FastPGD(eps, step_size, steps, random_start, generator, shard, graph, fold)
    return methods.dynat_loss(guide, target, x, y, attack=attack, **options)

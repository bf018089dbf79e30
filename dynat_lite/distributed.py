"""Data-parallel training under torchrun: one process per GPU (or per CPU share, with gloo).

    torchrun --nproc_per_node=4 -m dynat_lite train --profile paper --out runs/wrn

Every process holds the whole dataset on its device and draws the same global batch (the same
seed gives the same order and augmentation); process ``rank`` trains on rows
``[rank * b, (rank + 1) * b)`` of it, ``b = batch_size / world``. DistributedDataParallel
averages the gradients, batch norm computes its statistics over the global batch (SyncBatchNorm
on CUDA, :class:`AllReduceBatchNorm` on the CPU), and the fast step draws PGD's random start
for the global batch and keeps its slice. So N processes compute the losses one process
computes with the whole batch, up to float rounding (tests/test_ddp.py).

Outside torchrun (no ``WORLD_SIZE`` > 1 in the environment) everything here is a no-op.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Context:
    """This process's place in the group."""
    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init() -> Context | None:
    """Join the process group torchrun describes in the environment (NCCL with CUDA, gloo
    without); None when not started by torchrun with more than one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return context()


def context() -> Context | None:
    """The group this process belongs to, or None when it trains alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return Context(dist.get_rank(), dist.get_world_size(),
                   int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def close() -> None:
    """Leave the process group (at the end of a torchrun command).

    Every process waits at a barrier first, so that none tears down its connections while
    another is still in a collective. (Once, a two-process gloo run of the tests ended with one
    process aborting, "terminate called without an active exception"; a peer leaving early is
    one way that happens, and the barrier guards against it.)
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_main() -> bool:
    ctx = context()
    return ctx is None or ctx.is_main


def device_for(device: torch.device, ctx: Context | None) -> torch.device:
    """Each process's own GPU (``cuda:LOCAL_RANK``); the CPU stays the CPU."""
    if ctx is not None and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def check_batch_size(batch_size: int, ctx: Context | None) -> None:
    if ctx is not None and batch_size % ctx.world:
        raise ValueError(f"The global batch size {batch_size} must be divisible by the number "
                         f"of processes ({ctx.world}); choose --batch-size accordingly.")


def shard(t: torch.Tensor, ctx: Context | None) -> torch.Tensor:
    """This process's contiguous slice of a global batch (all of it outside a group)."""
    if ctx is None:
        return t
    b = len(t) // ctx.world
    return t[ctx.rank * b:(ctx.rank + 1) * b]


def all_reduce_sum(t: torch.Tensor, ctx: Context | None) -> torch.Tensor:
    """The sum of ``t`` over all processes (``t`` itself outside a group). A collective: one
    host synchronization; call it once per epoch, not per step."""
    if ctx is not None:
        t = t.clone()
        dist.all_reduce(t)
    return t


# ------------------------------------------------------------------------------ batch norm
class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes, differentiable: the gradient of a sum over processes is the
    sum over processes of the gradients."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class AllReduceBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, for CPU groups
    (``nn.SyncBatchNorm`` runs on GPUs only).

    Each process sums x and x^2 per channel over its slice; an autograd-aware all-reduce
    (its backward all-reduces the gradient too) gives the global sums, so forward and backward
    equal those of one BatchNorm2d over the whole batch. Equal slices are assumed (they are:
    see :func:`shard`). In eval mode, or outside a group, it is a plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = context()
        if not self.training or ctx is None:
            return super().forward(x)
        c = x.shape[1]
        sums = _AllReduceSum.apply(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))]))
        n = x.numel() // c * ctx.world
        mean = sums[:c] / n
        var = (sums[c:] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = (self.momentum if self.momentum is not None
                     else 1.0 / float(self.num_batches_tracked))
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var * n / max(n - 1, 1), alpha=m)
        shape = (1, c, 1, 1)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm2d computing global-batch statistics: nn.SyncBatchNorm on
    CUDA, AllReduceBatchNorm on the CPU. The parameters and buffers are kept (the same
    tensors), so the optimizer and the checkpoints see no difference."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = AllReduceBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                setattr(new, key, getattr(child, key))
            new.train(child.training)
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module


# ---------------------------------------------------------------------------------- wrapper
class DataParallel(DistributedDataParallel):
    """DistributedDataParallel that steps aside in eval mode.

    Attacks run the network in eval mode and differentiate with respect to the input only; a
    DDP forward would then wait for a gradient reduction that never comes ("Expected to have
    finished reduction in the prior iteration"). In eval mode this wrapper calls the network
    directly: no communication is needed there (batch norm uses its running statistics).
    """

    def forward(self, *args, **kwargs):
        if not self.training:
            return self.module(*args, **kwargs)
        return super().forward(*args, **kwargs)


def wrap(module: nn.Module, ctx: Context | None, device: torch.device) -> nn.Module:
    """``module`` wrapped for data-parallel training (itself outside a group). Buffers are not
    broadcast at each forward: global-batch batch norm keeps them equal on every process."""
    if ctx is None:
        return module
    ids = [device.index] if device.type == "cuda" else None
    with warnings.catch_warnings():  # newer torch renames the flag; the old name still works
        warnings.simplefilter("ignore", FutureWarning)
        return DataParallel(module, device_ids=ids, broadcast_buffers=False)


def mean_over_processes(values: dict[str, float], counts: int, ctx: Context | None,
                        device: torch.device) -> dict[str, float]:
    """Average per-process means ``values`` (each over ``counts`` items) over the group."""
    if ctx is None:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] * counts for k in keys] + [counts], dtype=torch.float64,
                     device=device)
    t = all_reduce_sum(t, ctx).tolist()
    return {k: v / t[-1] for k, v in zip(keys, t)}


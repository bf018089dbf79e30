"""``python -m dynat_lite bench``: how fast is the DYNAT training step on this machine?

    python -m dynat_lite bench --device cpu                 # both steps below
    python -m dynat_lite bench --device cpu --targets ""    # the lessons' step only

For DYNAT as the ``paper`` profile trains it (the authors' guide, resnet18-cifar, and the
target's extra clean forward), with a WRN-34-10 target and with a ResNet-18 target, it prints

- images per second of the fast training step (``train.train_epoch`` on device-resident
  batches: exactly what ``fit`` runs): eager, kernels launched one by one; on CUDA also with
  the attack as a CUDA graph (``fit``'s default there) and with ``torch.compile`` as well;
- the compute rate of the fastest of these (the step's FLOPs per image, counted by PyTorch's
  FlopCounterMode, times images per second) as a fraction of the device's measured matmul
  peak in the dtype the step computes in (bf16 on a GPU with native bf16, else float32);
- the ratio to the faithful reference step (:func:`reference_dynat_loss`: the step as the
  authors' code runs it -- float32, eager, the resnet18-cifar guide re-run for its argmax at
  every PGD step, the target's clean forward, batches from a CPU DataLoader, the loss read
  with ``.item()`` after each step, as a typical training script logs it), timed in the same
  run;
- PGD-20 evaluation throughput (float32, ``evaluate.correct_under``);
- for the ResNet-18 target, the projected time of one epoch of CIFAR-10 (50,000 images);
- the lessons' step (the ``cpu`` profile: small-CNN target and guide, batch 64, PGD-2) of
  DYNAT and of PGD-AT: images per second and the share of the matmul peak, on the CPU with and
  without batch norm folded in the attack (``Config.fold_batchnorm``).

On CUDA it runs the paper's sizes (batch 128, PGD-10); on a CPU a small size (batch 1 and
PGD-1 for WRN-34-10). Figures, not assertions: the tests check only that it runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data as data_lib
from . import fast, methods, models, train
from .evaluate import correct_under

CIFAR10_TRAIN = 50_000
GUIDE = train.PROFILES["paper"]["guide_model"]   # the authors' guide: resnet18-cifar
TARGETS = ("wrn-34-10", "resnet18")


@dataclass(frozen=True)
class Size:
    """How much work each measurement does."""
    batch: int        # training batch
    steps: int        # PGD steps in the training attack
    warmup: int       # batches before timing (CUDA kernels, cuDNN choices, compilation)
    iters: int        # timed batches
    eval_batch: int   # images in the timed PGD-20 evaluation (0: skipped)


def sizes(device: torch.device, target: str) -> Size:
    """The paper's sizes on CUDA; on a CPU, tiny ones: a WRN-34-10 training image costs
    ~70 GFLOP even with PGD-1, a PGD-20 evaluation image ~530 GFLOP (so that one is skipped
    on a CPU)."""
    if device.type == "cuda":
        return Size(batch=128, steps=10, warmup=3, iters=20 if target == "wrn-34-10" else 40,
                    eval_batch=512)
    if target == "wrn-34-10":
        return Size(batch=1, steps=1, warmup=1, iters=1, eval_batch=0)
    return Size(batch=4, steps=1, warmup=1, iters=1, eval_batch=2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------ peak
def matmul_peak(device: torch.device) -> tuple[float, str]:
    """(FLOP/s, dtype name) of a big square matmul in the dtype the fast step computes in: the
    fastest of several timed products, after a warm-up one."""
    dtype = torch.bfloat16 if fast.native_bf16(device) else torch.float32
    n, reps = (8192, 20) if device.type == "cuda" else (1024, 8)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best, str(dtype).replace("torch.", "")


# ----------------------------------------------------------------------------------- FLOPs
def step_flops(target: str, guide: str, steps: int, clean_forward: bool = False) -> float:
    """FLOPs per image of one DYNAT step: ``steps`` x (target forward + input gradient) +
    target forward and backward + guide forward and backward (+ a target forward with
    ``clean_forward``). Counted on the "meta" device (shapes only, no arithmetic), so it costs
    nothing."""
    extra = pass_flops(target, False, backward=False) if clean_forward else 0
    return (steps * pass_flops(target, True) + pass_flops(target, False)
            + pass_flops(guide, False) + extra)


def pass_flops(name: str, attack: bool, backward: bool = True) -> int:
    """FLOPs per image of one pass of model ``name``: an attack's forward and input gradient
    (``attack``), or a training forward and backward (weights' gradients); forward only with
    ``backward=False``. Counted on the "meta" device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = models.create(name)
        x = torch.zeros(1, 3, 32, 32, requires_grad=attack)
        y = torch.zeros(1, dtype=torch.long)
    model.train(not attack)
    model.requires_grad_(not attack)
    with FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(model(x), y)
        if backward:
            loss.backward()
    return counter.get_total_flops()


def method_flops(cfg: train.Config) -> float:
    """FLOPs per image of one training step of ``cfg.method``: its attack's steps on the
    target, the target's training pass, and the guide's if the method has one."""
    method = methods.get(cfg.method)
    attack = cfg.steps * pass_flops(cfg.model, True) if method.attack else 0
    guide = pass_flops(cfg.guide_model, False) if method.uses_guide else 0
    return attack + pass_flops(cfg.model, False) + guide


# -------------------------------------------------------------------------------- reference
def reference_dynat_loss(guide: nn.Module, target: nn.Module, x: torch.Tensor,
                         y: torch.Tensor, *, eps: float = 0.031, step_size: float = 0.007,
                         steps: int = 10, beta: float = 1.0, clean_forward: bool = True):
    """The DYNAT loss as the authors' loop computes it, for timing: float32, eager, the
    guide's argmax recomputed from the clean batch at every PGD step (without gradient; the
    guide stays in its current mode, so its BatchNorm statistics move), and, with
    ``clean_forward``, the target forwarded once more on the clean batch in train mode after
    its adversarial forward, the output unused. Slower, not different: the labels are the same
    at every step."""
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
    adv_logits = target(x_adv)
    if clean_forward:
        target(x)
    return F.cross_entropy(guide_logits, y) + beta * F.cross_entropy(adv_logits, labels)


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


# ---------------------------------------------------------------------------------- timings
def _random_images(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _bench_config(target: str, size: Size, device: torch.device, compile: bool,
                  guide: str = GUIDE, graphs: bool = False) -> train.Config:
    return train.config("paper", model=target, guide_model=guide, batch_size=size.batch,
                        steps=size.steps, device=str(device), compile=compile,
                        cuda_graphs=graphs)


def time_fast(target: str, size: Size, device: torch.device, compile: bool = False,
              guide: str = GUIDE, graphs: bool = False) -> float:
    """Images per second of ``train.train_epoch`` (the fast step) on ``size.iters`` batches,
    after ``size.warmup`` batches (where graphs are recorded and compilation happens)."""
    return time_step(_bench_config(target, size, device, compile, guide, graphs), size, device)


def time_step(cfg: train.Config, size: Size, device: torch.device) -> float:
    """Images per second of ``train.train_epoch`` with ``cfg`` on ``size.iters`` batches of
    random images, after ``size.warmup`` batches."""
    nets = train.prepare(cfg, train.build(cfg, 10, device), device)
    optimizer = train.make_optimizer(cfg, nets)
    if size.warmup:
        x, y = _random_images(size.warmup * size.batch, seed=1)
        train.train_epoch(cfg, nets, optimizer, data_lib.Batches(x, y, size.batch, device=device),
                          0)
    x, y = _random_images(size.iters * size.batch)
    batches = data_lib.Batches(x, y, size.batch, device=device)
    _sync(device)
    t0 = time.perf_counter()
    train.train_epoch(cfg, nets, optimizer, batches, 0)  # ends by reading its sums: synced
    return size.iters * size.batch / (time.perf_counter() - t0)


def time_reference(target: str, size: Size, device: torch.device, guide: str = GUIDE) -> float:
    """Images per second of the faithful reference step (:func:`reference_dynat_loss`),
    timed like ``time_fast``."""
    cfg = _bench_config(target, size, device, compile=False, guide=guide)
    nets = train.build(cfg, 10, device)   # float32, NCHW, eager
    optimizer = train.make_optimizer(cfg, nets)
    x, y = _random_images((size.warmup + size.iters) * size.batch)
    loader = reference_batches(x, y, size.batch, device=device,
                               workers=4 if device.type == "cuda" else 0)

    def step():
        xb, yb = next(loader)
        loss = reference_dynat_loss(nets.guide, nets.target, xb, yb, eps=cfg.eps,
                                    step_size=cfg.step_size, steps=cfg.steps,
                                    clean_forward=cfg.target_clean_forward)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    nets.train()
    for _ in range(size.warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(size.iters):
        step()
    _sync(device)
    return size.iters * size.batch / (time.perf_counter() - t0)


def time_pgd20(target: str, size: Size, device: torch.device) -> float | None:
    """Images per second of PGD-20 evaluation (float32, eval mode) of a fresh ``target``;
    None when ``size.eval_batch`` is 0."""
    if not size.eval_batch:
        return None
    model = models.create(target).to(device).eval()
    x, y = _random_images(size.eval_batch)
    if device.type == "cuda":  # warm up kernels and cuDNN's choices
        correct_under(model, x[:64], y[:64], "pgd20", batch_size=size.eval_batch)
    _sync(device)
    t0 = time.perf_counter()
    correct_under(model, x, y, "pgd20", batch_size=size.eval_batch)
    return len(y) / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- the lessons' step
#: The step the lessons train on a lab's CPU: the ``cpu`` profile (small-CNN target and guide,
#: its batch and PGD steps), for DYNAT and for PGD-AT beside it.
LESSON_PROFILE = "cpu"
LESSON_METHODS = ("dynat", "pgd_at")


@dataclass
class LessonRow:
    profile: str
    method: str
    fold_batchnorm: bool               # the CPU attack with batch norm folded (fast.folded)
    batch: int
    pgd_steps: int
    gflop_per_image: float
    img_s: float
    fraction_of_peak: float


def lesson_rows(device: torch.device, peak: float, iters: int = 20,
                warmup: int = 2) -> list[LessonRow]:
    """The lessons' step, timed like ``time_fast`` on ``iters`` batches: each method of
    ``LESSON_METHODS``, on the CPU with and without batch norm folded in the attack."""
    rows = []
    for method in LESSON_METHODS:
        for fold in ((False, True) if device.type == "cpu" else (True,)):
            cfg = train.config(LESSON_PROFILE, method=method, device=str(device),
                               fold_batchnorm=fold)
            size = Size(batch=cfg.batch_size, steps=cfg.steps, warmup=warmup, iters=iters,
                        eval_batch=0)
            ips, flops = time_step(cfg, size, device), method_flops(cfg)
            rows.append(LessonRow(LESSON_PROFILE, method, fold, cfg.batch_size, cfg.steps,
                                  flops / 1e9, ips, ips * flops / peak))
    return rows


def _lesson_table(rows: list[LessonRow]) -> list[str]:
    head = (f"{'profile':<7} {'method':<7} {'BN folded':>9} {'batch':>5} {'PGD':>3} "
            f"{'GFLOP/img':>9} {'img/s':>8} {'% peak':>6}")
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r.profile:<7} {r.method:<7} {'yes' if r.fold_batchnorm else 'no':>9} "
                   f"{r.batch:>5} {r.pgd_steps:>3} {r.gflop_per_image:9.3f} {r.img_s:8.1f} "
                   f"{100 * r.fraction_of_peak:5.1f}%")
    return out


# ------------------------------------------------------------------------------------- run
@dataclass
class Row:
    target: str
    batch: int
    pgd_steps: int
    gflop_per_image: float
    fast_img_s: float                  # eager, kernels launched one by one
    graphed_img_s: float | None        # the attack as a CUDA graph (fit's default on CUDA)
    compiled_img_s: float | None       # torch.compile and the CUDA graph
    best_img_s: float
    best_fraction_of_peak: float
    reference_img_s: float
    speedup: float
    pgd20_eval_img_s: float | None
    cifar10_epoch_s: float


def run(device: str = "auto", compile: str = "auto", targets=TARGETS, guide: str = GUIDE,
        print=print, lesson_iters: int = 20) -> dict:
    """Measure everything, print a report, return the figures as a dict. ``targets``: the
    paper profile's targets to time (none: only the lessons' step); ``lesson_iters``: batches
    timed of the lessons' step (0: skip it)."""
    dev = train.resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    use_compile = compile == "on" or (compile == "auto" and dev.type == "cuda")
    peak, peak_dtype = matmul_peak(dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"dynat-lite bench: the DYNAT step of the paper profile (guide {guide}, the "
          f"target's clean forward) and the lessons' step, torch {torch.__version__}, "
          f"{dev.type}: {name}")
    print(f"measured matmul peak: {peak / 1e12:.3g} TFLOP/s ({peak_dtype})")
    rows = []
    for target in targets:
        size = sizes(dev, target)
        flops = step_flops(target, guide, size.steps,
                           clean_forward=train.PROFILES["paper"]["target_clean_forward"])
        fast_ips = time_fast(target, size, dev, guide=guide)
        graphed_ips = (time_fast(target, size, dev, guide=guide, graphs=True)
                       if dev.type == "cuda" else None)
        compiled_ips = None
        if use_compile:
            try:
                compiled_ips = time_fast(target, size, dev, compile=True, guide=guide,
                                         graphs=dev.type == "cuda")
            except Exception as err:  # a compiler missing or failing: say so, go on
                print(f"  torch.compile failed for {target} ({type(err).__name__}: {err}); "
                      f"eager figures only")
        ref_ips = time_reference(target, size, dev, guide)
        best = max(fast_ips, graphed_ips or 0.0, compiled_ips or 0.0)
        rows.append(Row(
            target, size.batch, size.steps, flops / 1e9, fast_ips, graphed_ips, compiled_ips,
            best, best * flops / peak, ref_ips, best / ref_ips, time_pgd20(target, size, dev),
            CIFAR10_TRAIN / best))
    if rows:
        for line in _table(rows):
            print(line)
        print("GFLOP/img: per training image at that many PGD steps; eager / graphed / "
              "compiled: the fast step with kernels launched one by one / the attack as a CUDA "
              "graph / torch.compile and the graph; % peak: the best of them in FLOP/s over the "
              "matmul peak; speed-up: the best over the faithful reference (float32, eager, the "
              "guide re-run for its argmax at every PGD step, the clean forward, CPU "
              "DataLoader); '-': not measured here.")
    lessons = lesson_rows(dev, peak, iters=lesson_iters) if lesson_iters else []
    if lessons:
        print(f"The lessons' step ({LESSON_PROFILE} profile: small-CNN target and guide, "
              f"{lesson_iters} batches of random images, eager):")
        for line in _lesson_table(lessons):
            print(line)
        print("BN folded: the training attack runs the target with its batch norms folded into "
              "the convolutions (Config.fold_batchnorm, on by default; on the CPU only); "
              "% peak: FLOP/s over the matmul peak.")
    return {"device": dev.type, "device_name": name, "torch": torch.__version__,
            "peak_flops": peak, "peak_dtype": peak_dtype, "rows": [asdict(r) for r in rows],
            "lesson_rows": [asdict(r) for r in lessons]}


def _table(rows: list[Row]) -> list[str]:
    head = (f"{'target':<10} {'batch':>5} {'PGD':>3} {'GFLOP/img':>9} {'img/s: eager':>12} "
            f"{'graphed':>8} {'compiled':>8} {'% peak':>6} {'ref img/s':>9} {'speed-up':>8} "
            f"{'PGD-20 eval img/s':>17} {'CIFAR-10 epoch':>14}")
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r.target:<10} {r.batch:>5} {r.pgd_steps:>3} {r.gflop_per_image:9.1f} "
                   f"{r.fast_img_s:12.2f} {_number(r.graphed_img_s, 8, 1)} "
                   f"{_number(r.compiled_img_s, 8, 1)} {100 * r.best_fraction_of_peak:5.1f}% "
                   f"{r.reference_img_s:9.2f} {r.speedup:7.2f}x "
                   f"{_number(r.pgd20_eval_img_s, 17)} {_duration(r.cifar10_epoch_s):>14}")
    return out


def _number(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynat_lite bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="also time the step under torch.compile (auto: on CUDA only)")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated target models (default {','.join(TARGETS)})")
    parser.add_argument("--lesson-iters", type=int, default=20,
                        help="batches timed of the lessons' step (0: skip it)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    figures = run(args.device, args.compile, targets, lesson_iters=args.lesson_iters)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0

"""Datasets as tensors, and a fast batch iterator that augments on the device.

Every dataset comes back as a :class:`Dataset`: float images in [0, 1] (NCHW), int64 labels and
the class names. Four sources:

- ``"cifar10"``, ``"cifar100"``: through torchvision, downloaded into ``root`` on first use;
- ``"synthetic"``: a CIFAR-shaped 10-class set generated from a seed, offline, in a second;
- a path to an ``.npz`` holding ``x_train, y_train, x_test, y_test`` (uint8 NHWC, integer labels).
"""
from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .attacks import check_images

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
SYNTHETIC_CLASSES = ("stripes", "rings", "checker", "diagonal", "blob",
                     "cross", "corners", "bands", "spots", "waves")
DATASETS = ("cifar10", "cifar100", "synthetic", "<path to an .npz>")


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says what to do instead."""


# Advice, in PyTorch's and numpy's messages, to turn a safety check off (weights_only=False,
# allow_pickle=True, allow-listing globals): loading a pickle runs the code inside it.
_UNSAFE_ADVICE = re.compile(r"weights_only|allow_pickle|safe_globals|pickle\.load|trusted source"
                            r"|if you trust|trust the source", re.IGNORECASE)


def plain_reason(err: BaseException) -> str:
    """``err``'s message on one line, for our own error messages, without the advice some
    libraries give to disable a safety check: the cause in words, never "re-run with
    weights_only=False" or "allow_pickle=True"."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # terminal colour codes
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"it holds a Python object ({found.group(1)}) besides tensors and plain "
                f"containers, and such objects are never loaded: loading one can run code")
    if "Object arrays cannot be loaded" in text:
        return ("it holds an array of Python objects (dtype object), and such arrays are never "
                "loaded: loading one can run code; save numeric arrays instead")
    if "pickled" in text and "allow_pickle" in text:
        return "it holds pickled Python objects, which are never loaded: loading one can run code"
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    kept = [s.strip() for s in sentences if s.strip() and not _UNSAFE_ADVICE.search(s)]
    return " ".join(" ".join(kept).split()) or type(err).__name__


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, 3, 32, 32) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, classes={len(self.classes)})")


def load(name: str, *, root: str | Path = "data", n_train: int | None = None,
         n_test: int | None = None, seed: int = 0, download: bool = True) -> Dataset:
    """Load a dataset by name (or .npz path), optionally as stratified subsets.

    ``n_train``/``n_test`` keep that many examples with the classes in their original
    proportions, chosen with ``seed``; ``None`` keeps everything.
    """
    name = str(name)
    if name in ("cifar10", "cifar100"):
        ds = _load_torchvision(name, Path(root), download)
    elif name == "synthetic":
        ds = synthetic(n_train=n_train or 5000, n_test=n_test or 1000, seed=seed)
    elif name.endswith(".npz"):
        ds = _load_npz(Path(name))
    else:
        raise DatasetError(f"Unknown dataset {name!r}. Valid: {', '.join(DATASETS)}.")
    return Dataset(ds.name,
                   *_subset(ds.x_train, ds.y_train, n_train, seed),
                   *_subset(ds.x_test, ds.y_test, n_test, seed + 1),
                   ds.classes)


def images_from_uint8(x: np.ndarray) -> torch.Tensor:
    """uint8 NHWC array -> float32 NCHW tensor in [0, 1]."""
    nchw = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    return nchw.float().div_(255)  # contiguous NCHW, not a channels-last view of the array


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int):
    if n is None or n >= len(y):
        return x, y
    if n <= 0:
        raise DatasetError(f"Subset size must be positive, got {n}.")
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    counts = torch.stack([(y == c).sum() for c in classes]).double()
    # Largest-remainder allocation, so the subset has exactly n examples.
    share = counts / counts.sum() * n
    take = share.floor().long()
    order = torch.argsort(share - take, descending=True)
    take[order[: n - int(take.sum())]] += 1
    picks = []
    for c, k in zip(classes, take):
        idx = torch.nonzero(y == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[: int(k)]])
    keep = torch.cat(picks).sort().values
    return x[keep], y[keep]


def _load_torchvision(name: str, root: Path, download: bool) -> Dataset:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    before = set(root.iterdir()) if root.is_dir() else None
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as err:  # network errors and missing files come as many types
        _remove_new_entries(root, before)  # no half-downloaded archive is left behind
        raise DatasetError(
            f"Could not load {name} into {root}/ ({type(err).__name__}: {err}). "
            f"If this machine is offline: copy the {name} python archive from torchvision's "
            f"download into {root}/, or pass the path of an .npz with x_train, y_train, x_test, "
            f"y_test (uint8 NHWC, integer labels), or use dataset 'synthetic'."
        ) from err
    return Dataset(name, images_from_uint8(train.data), torch.as_tensor(train.targets),
                   images_from_uint8(test.data), torch.as_tensor(test.targets),
                   tuple(train.classes))


def _remove_new_entries(root: Path, before: set | None) -> None:
    """Delete what appeared in ``root`` since ``before`` (root itself if it did not exist)."""
    import shutil

    if not root.exists():
        return
    if before is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    for entry in set(root.iterdir()) - before:
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _load_npz(path: Path) -> Dataset:
    if not path.exists():
        raise DatasetError(f"No such .npz file: {path}. Check the path, or use 'cifar10' or "
                           f"'synthetic'.")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:1] == b"\x80":  # a pickle's protocol byte
        raise DatasetError(f"{path} holds pickled Python objects, which are never loaded: "
                           f"loading one can run code. Save numeric arrays with numpy.savez.")
    if head != b"\x93NUMPY" and not zipfile.is_zipfile(path):  # numpy would say "pickled"
        raise DatasetError(f"{path} is not an .npz archive (numpy.savez writes a zip file of "
                           f"arrays; this file is not a zip file). Save the dataset with "
                           f"numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as err:
        raise DatasetError(f"Could not read {path} as an .npz dataset: {plain_reason(err)}.") \
            from err
    need = ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in need if k not in arrays]
    if missing:
        raise DatasetError(f"{path} lacks the arrays {missing}; it has {list(arrays)}. An .npz "
                           f"dataset needs {', '.join(need)} (uint8 NHWC images, integer labels).")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
            raise DatasetError(f"{path}: x_{split} must be uint8 of shape (N, H, W, 3), got "
                               f"{x.dtype} {x.shape}.")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(f"{path}: y_{split} must be integers of shape ({len(x)},), got "
                               f"{y.dtype} {y.shape}.")
        if len(x) == 0:
            raise DatasetError(f"{path}: x_{split} holds no images; an .npz dataset needs at "
                               f"least one training and one test image.")
    classes = _npz_classes(path, arrays)
    return Dataset(path.stem, images_from_uint8(arrays["x_train"]),
                   torch.from_numpy(arrays["y_train"].astype(np.int64)),
                   images_from_uint8(arrays["x_test"]),
                   torch.from_numpy(arrays["y_test"].astype(np.int64)), classes)


def _npz_classes(path: Path, arrays: dict) -> tuple[str, ...]:
    """The class names of an .npz dataset: its ``classes`` array, or "0" ... "K-1" when the
    training labels are exactly 0..K-1 with every class present. Anything else -- a stray label
    57 among 0-9 would make a 58-class problem -- raises, naming the offending labels."""
    y_all = np.concatenate([arrays["y_train"], arrays["y_test"]])
    if "classes" in arrays:
        classes = tuple(str(c) for c in np.atleast_1d(arrays["classes"]))
        bad = np.unique(y_all[(y_all < 0) | (y_all >= len(classes))])
        if bad.size:
            raise DatasetError(f"{path}: labels must lie in [0, {len(classes)}) (its classes "
                               f"array names {len(classes)} classes); found {_listed(bad)}.")
        return classes
    if y_all.min() < 0:
        raise DatasetError(f"{path}: labels must lie in [0, K), found {_listed(y_all[y_all < 0])}.")
    present = set(np.unique(arrays["y_train"]).tolist())
    k = 0
    while k in present:  # the classes 0..k-1 all occur in training
        k += 1
    beyond = np.unique(y_all[y_all >= k])
    if beyond.size:
        raise DatasetError(
            f"{path}: the label(s) {_listed(beyond)} lie beyond the classes that the training "
            f"labels cover without a gap ({f'0..{k - 1}' if k else 'none'}: class {k} never "
            f"occurs in y_train). Labels must be 0..K-1 "
            f"with every class present in training, or the .npz must hold a `classes` array "
            f"naming the K classes.")
    return tuple(str(c) for c in range(k))


def _listed(values: np.ndarray, most: int = 8) -> str:
    """Distinct values, sorted, the first ``most`` of them: "57", "-1, 10, 11, ... (12 values)"."""
    values = np.unique(values).tolist()
    text = ", ".join(str(v) for v in values[:most])
    return text + (f", ... ({len(values)} values)" if len(values) > most else "")


# ----------------------------------------------------------------------------------------------
# The synthetic set: ten smooth, left-right symmetric patterns (so flips keep the class), each
# drawn faintly on a random colour background with pixel noise. The class signal is small next
# to the background, so a small CNN learns it in a minute, yet an L-inf budget of 8/255 spread
# over all 3072 pixels overwhelms it: learnable and adversarially fragile, like real images.
# ----------------------------------------------------------------------------------------------
def _class_patterns(size: int = 32) -> torch.Tensor:
    """Ten fixed patterns in [-1, 1], shape (10, 3, size, size), left-right symmetric."""
    r = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    ax = xx.abs()  # symmetric in x
    rad = (ax ** 2 + yy ** 2).sqrt()
    shapes = [
        torch.sin(6 * yy),                                   # stripes
        torch.cos(9 * rad),                                  # rings
        torch.sign(torch.sin(5 * ax) * torch.sin(5 * yy)),   # checker
        torch.sin(6 * (ax + yy)),                            # diagonal (a chevron)
        2 * torch.exp(-4 * rad ** 2) - 1,                    # blob
        torch.where((ax < .25) | (yy.abs() < .25), 1., -1.),  # cross
        torch.where((ax > .5) & (yy.abs() > .5), 1., -1.),   # corners
        torch.sign(torch.sin(3 * ax)),                       # bands
        torch.cos(8 * ax) * torch.cos(8 * yy),               # spots
        torch.sin(6 * yy + 3 * torch.cos(4 * ax)),           # waves
    ]
    colours = torch.tensor([[1., .2, .2], [.2, 1., .2], [.2, .2, 1.], [1., 1., .2], [1., .2, 1.],
                            [.2, 1., 1.], [1., .6, .2], [.6, .2, 1.], [.2, .6, 1.], [1., 1., 1.]])
    return torch.stack([c[:, None, None] * s[None] for s, c in zip(shapes, colours)])


def synthetic(n_train: int = 5000, n_test: int = 1000, *, seed: int = 0,
              signal: float = 0.12, noise: float = 0.06) -> Dataset:
    """The offline CIFAR-shaped 10-class set; the same seed gives the same images."""
    g = torch.Generator().manual_seed(seed)
    patterns = _class_patterns()

    def draw(n: int):
        y = torch.arange(n) % 10
        y = y[torch.randperm(n, generator=g)]
        # Background: a smooth random colour field (4x4 upsampled) around mid-grey.
        coarse = 0.5 + 0.25 * (torch.rand(n, 3, 4, 4, generator=g) * 2 - 1)
        bg = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
        # Each image shows its pattern at a random strength and a small random shift.
        strength = signal * (0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=g))
        shift = torch.randint(-2, 3, (n, 2), generator=g)
        pat = torch.stack([torch.roll(patterns[c], (int(s[0]), int(s[1])), dims=(1, 2))
                           for c, s in zip(y.tolist(), shift)])
        x = bg + strength * pat + noise * torch.randn(n, 3, 32, 32, generator=g)
        # Quantize to 8 bits like a real image file.
        return (x.clamp(0, 1) * 255).round() / 255, y

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return Dataset("synthetic", x_tr, y_tr, x_te, y_te, SYNTHETIC_CLASSES)


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------
def augment(x: torch.Tensor, generator: torch.Generator, *, pad: int = 4,
            flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, per image, on x's device.

    The random numbers come from ``generator`` (a CPU generator), so the result is the same on
    every device for the same seed.
    """
    n, c, h, w = x.shape
    # non_blocking: a plain copy to a GPU waits for all queued GPU work (a host sync per batch).
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device, non_blocking=True)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device, non_blocking=True)
    mirror = ((torch.rand(n, generator=generator) < 0.5).to(x.device, non_blocking=True)
              if flip else None)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=x.device)            # (n, h)
    cols = ox[:, None] + torch.arange(w, device=x.device)            # (n, w)
    if mirror is not None:
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


class Batches:
    """Mini-batches of (x, y) tensors already on ``device``, shuffled and augmented there.

    ``epoch(k)`` gives the batches of epoch k; its order and augmentation depend only on
    (seed, k), so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *,
                 device: str | torch.device = "cpu", shuffle: bool = True,
                 augment: bool = True, drop_last: bool = True, seed: int = 0):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        if len(y) == 0:
            raise ValueError("No training images: the training split is empty.")
        if drop_last and batch_size > len(y):
            raise ValueError(f"The batch size {batch_size} is larger than the {len(y)} training "
                             f"images, so every batch would be dropped: choose a batch size of "
                             f"at most {len(y)} (--batch-size) or more images (--n-train).")
        check_images(x)  # finite, in [0, 1]: NaN images would train NaN weights
        self.x = x.to(device)
        self.y = y.to(device)
        self.batch_size = batch_size
        self.shuffle, self.augment, self.drop_last, self.seed = shuffle, augment, drop_last, seed

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, k: int = 0):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        n = len(self.y)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.x.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x[idx]
            if self.augment:
                xb = augment(xb, g)
            yield xb, self.y[idx]

    def __iter__(self):
        return self.epoch(0)

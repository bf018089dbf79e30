"""Networks for 32x32 images. Every model takes images in [0, 1] and normalizes inside itself.

Each model is ``Normalize -> features -> head``: ``model.normalize`` (per-channel mean/std),
a body, and a final ``nn.Linear`` named ``model.fc``. Under bf16 autocast (the fast training
path on CUDA) the two ends run in float32 -- the normalization with the first convolution, and
the last linear layer -- while the body runs in bf16: see :func:`float32`. Without autocast
(the CPU, evaluation) :func:`float32` is a plain call and changes nothing.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts to on ``device_type`` right now, or None when it is off."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no argument and answers for CUDA only
        return torch.get_autocast_gpu_dtype() if (device_type == "cuda" and
                                                  torch.is_autocast_enabled()) else None
    except RuntimeError:  # a device type autocast does not know, e.g. "meta"
        return None
    return torch.get_autocast_dtype(device_type) if enabled else None


def float32(fn, x: torch.Tensor, *, keep_float32: bool = False) -> torch.Tensor:
    """``fn(x)`` computed in float32 even inside a bf16 autocast region (a "float32 island").

    Why: bf16 keeps 8 significant bits, so an image value near 1 is rounded to a multiple of
    1/256 -- about the size of a PGD step (2/255). Rounding x + delta before the first
    convolution would erase small attack steps, and bf16 logits would blur the loss the attack
    climbs. The island's output is cast back to the autocast dtype (as autocast's own first
    convolution would give) unless ``keep_float32`` (the logits). Outside autocast: ``fn(x)``.
    """
    dtype = _autocast_dtype(x.device.type)
    if dtype is None:
        return fn(x)
    with torch.autocast(x.device.type, enabled=False):
        out = fn(x.float())
    return out if keep_float32 else out.to(dtype)


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std as (non-trained) buffers."""

    def __init__(self, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


# ---------------------------------------------------------------------------------- WideResNet
class WideBasic(nn.Module):
    """Pre-activation basic block of the WRN used by TRADES, MART and LBGAT."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.equal else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(self, depth: int = 34, widen: int = 10, num_classes: int = 10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}.")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.normalize = Normalize()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)

        def stage(cin, cout, stride):
            return nn.Sequential(*[WideBasic(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                   for i in range(n)])

        self.block1 = stage(widths[0], widths[1], 1)
        self.block2 = stage(widths[1], widths[2], 2)
        self.block3 = stage(widths[2], widths[3], 2)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def stem(self, x):
        return self.conv1(self.normalize(x))

    def forward(self, x):
        x = float32(self.stem, x)
        x = self.block3(self.block2(self.block1(x)))
        x = F.relu(self.bn(x))
        return float32(self.fc, F.adaptive_avg_pool2d(x, 1).flatten(1), keep_float32=True)


# ------------------------------------------------------------------------------------ ResNets
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip


class ResNet(nn.Module):
    """CIFAR ResNet-18 (3x3 stem, no max-pool); ``preact=True`` gives PreActResNet-18.

    ``strides``: the stride of each of the four stages' first block. (1, 2, 2, 2) is ResNet-18
    (final feature map 4x4); (1, 1, 2, 2) is the DYNAT authors' guide ``ResNet18_cifar``, whose
    second stage keeps the 32x32 resolution (final map 8x8): the same parameters, about 3.2x the
    multiply-adds.
    """

    def __init__(self, num_classes: int = 10, preact: bool = False, blocks=(2, 2, 2, 2),
                 strides=(1, 2, 2, 2)):
        super().__init__()
        block = PreActBlock if preact else BasicBlock
        self.normalize = Normalize()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = None if preact else nn.BatchNorm2d(64)
        layers, cin = [], 64
        for width, n, stride in zip((64, 128, 256, 512), blocks, strides):
            for j in range(n):
                layers.append(block(cin, width, stride if j == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.bn_final = nn.BatchNorm2d(512) if preact else None
        self.fc = nn.Linear(512, num_classes)

    def stem(self, x):
        return self.conv1(self.normalize(x))

    def forward(self, x):
        x = float32(self.stem, x)
        if self.bn1 is not None:
            x = F.relu(self.bn1(x))
        x = self.layers(x)
        if self.bn_final is not None:
            x = F.relu(self.bn_final(x))
        return float32(self.fc, F.adaptive_avg_pool2d(x, 1).flatten(1), keep_float32=True)


# ---------------------------------------------------------------------------------- small CNN
class SmallCNN(nn.Module):
    """Five 3x3 conv layers with BatchNorm (~0.33 M parameters): small enough for a CPU."""

    def __init__(self, num_classes: int = 10, widths=(32, 64, 96, 128, 128)):
        super().__init__()
        self.normalize = Normalize()

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        a, b, c, d, e = widths
        self.features = nn.Sequential(
            *conv(3, a), *conv(a, b), nn.MaxPool2d(2),              # 16x16
            *conv(b, c), nn.MaxPool2d(2),                           # 8x8
            *conv(c, d), nn.MaxPool2d(2),                           # 4x4
            *conv(d, e), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(e, num_classes)

    def stem(self, x):
        return self.features[0](self.normalize(x))

    def forward(self, x):
        x = float32(self.stem, x)
        for layer in list(self.features)[1:]:
            x = layer(x)
        return float32(self.fc, x, keep_float32=True)


MODELS = {
    "wrn-34-10": lambda k: WideResNet(34, 10, k),
    "wrn-28-10": lambda k: WideResNet(28, 10, k),
    "resnet18": lambda k: ResNet(k),
    "resnet18-cifar": lambda k: ResNet(k, strides=(1, 1, 2, 2)),
    "preact-resnet18": lambda k: ResNet(k, preact=True),
    "small-cnn": lambda k: SmallCNN(k),
}


def create(name: str, num_classes: int = 10) -> nn.Module:
    """A fresh model by name; see ``MODELS`` for the names."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Valid: {', '.join(MODELS)}.")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
    return MODELS[name](num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------- batch norm folded
class FoldedConv(nn.Module):
    """``conv`` followed by the eval-mode batch norm ``bn``, as one convolution: weights
    w * g / s and bias b' = beta + (b - mean) * g / s, with g = bn.weight and
    s = sqrt(running_var + bn.eps) (computed without gradient, from their current values)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__()
        with torch.no_grad():
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            self.weight = conv.weight * scale.view(-1, 1, 1, 1)
            self.bias = bn.bias + (bias - bn.running_mean) * scale
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return nn.functional.conv2d(x, self.weight, self.bias, c.stride, c.padding, c.dilation,
                                    c.groups)


def _tree(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s tree of submodules that shares every parameter and buffer."""
    twin = copy.copy(module)
    twin._modules = {k: _tree(m) if m is not None else None for k, m in module._modules.items()}
    return twin


def folded(model: nn.Module) -> nn.Module:
    """The eval-mode ``model`` with every BatchNorm2d (or SyncBatchNorm) that directly follows
    a Conv2d in an
    ``nn.Sequential`` folded into the convolution (:class:`FoldedConv`): the same function up
    to float rounding, and ``model`` itself is left as it is. The attack runs the target in
    eval mode, where batch norm is a fixed per-channel affine map; folded, it costs no pass
    over the activations, forward or backward. A model without such pairs comes back as the
    same object. The folded weights are copies: fold again after every optimizer step."""
    twin = _tree(model)
    found = False
    for seq in twin.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        keys = list(seq._modules)
        for a, b in zip(keys, keys[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if (type(conv) is nn.Conv2d and type(bn) in (nn.BatchNorm2d, nn.SyncBatchNorm)
                    and bn.track_running_stats and bn.affine):
                seq._modules[a], seq._modules[b] = FoldedConv(conv, bn), nn.Identity()
                found = True
    return twin.eval() if found else model

"""Shared fixtures: tiny models and batches that make property tests fast."""
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn

# The suite runs in parallel (pytest-xdist, pyproject.toml): each worker gets its share of the
# cores, and so do the kernels and commands it starts (OMP_NUM_THREADS), so that the workers'
# thread pools do not fight over the same cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _THREADS = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)
    torch.set_num_threads(_THREADS)

# Autouse: kernels and other processes a failing test left running are stopped; lessons get a
# longer pytest-timeout limit.
from process_support import longer_timeouts_for_lessons, stray_kernels, stray_processes  # noqa: F401
# A failure's report is built with the garbage collector paused (tests/report_support.py).
from report_support import pytest_runtest_makereport  # noqa: F401


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker more than there are cores. Part of the time a test waits (on a
    kernel starting, a browser, a subprocess) and leaves its core idle. On an idle 2-core CPU,
    one run each of the same tests: three workers 503 s, two 569 s (37 s of which built the
    Colab test's environment, which the three-worker run found built)."""
    return len(os.sched_getaffinity(0)) + 1


def _cost(items) -> int:
    """A module's rough cost: a lesson or a training run on real images (marked notebook or
    cifar) weighs ten of its other slow tests."""
    return sum(10 * bool(i.get_closest_marker("notebook") or i.get_closest_marker("cifar"))
               + bool(i.get_closest_marker("slow")) for i in items)


def pytest_collection_modifyitems(items):
    """Lessons get their longer timeout; the costliest modules come first, so that the parallel
    workers (which take whole modules in this order) do not end with one long module alone."""
    longer_timeouts_for_lessons(items)
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = sorted(modules.values(), key=_cost, reverse=True)  # stable: ties keep file order
    items[:] = [item for module in order for item in module]


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: The tiny DYNAT run of the training tests: 96 synthetic images in batches of 32 (three steps an
#: epoch), two epochs of one PGD step, 32 test images evaluated after each epoch.
TINY_RUN = dict(method="dynat", n_train=96, n_test=32, epochs=2, batch_size=32, steps=1,
                n_eval=32)


def tiny_config(**overrides):
    """The smoke profile with :data:`TINY_RUN` and ``overrides``."""
    from dynat_lite import train

    return train.config("smoke", **{**TINY_RUN, **overrides})


@pytest.fixture(scope="module")
def tiny_data():
    """The synthetic images of :data:`TINY_RUN`."""
    from dynat_lite import data

    return data.load("synthetic", n_train=TINY_RUN["n_train"], n_test=TINY_RUN["n_test"], seed=0)


class TinyNet(nn.Module):
    """A conv + linear net small enough for hundreds of attack steps in a test."""

    def __init__(self, num_classes: int = 10, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 4).flatten(1))


@pytest.fixture
def tiny_net():
    return TinyNet()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    return x, y

"""torchrun with 2 CPU processes (gloo) computes the losses of one process with the same
global batch, up to float rounding.

Both runs keep the default (NCHW) memory layout and their batch norms unfolded in the attack:
with channels_last, or with the folded convolutions of fast.folded, oneDNN rounds differently for
a half batch on one thread than for the whole batch on two, and PGD's sign() turns that into
different steps; what is tested here is the sharding, not the layout or the folding."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from dynat_lite import data, train

SETTINGS = dict(n_train=192, n_test=32, n_eval=16, epochs=1, batch_size=64, steps=2, seed=1)
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _flags():
    flags = ["--profile", "smoke", "--device", "cpu", "--no-progress", "--no-channels-last",
             "--no-fold-batchnorm"]
    for key, value in SETTINGS.items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    return flags


def test_two_processes_give_the_losses_of_one(tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: a local rendezvous on a free port; its own session, so that a hung run
    # can be stopped with all its workers.
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "dynat_lite", "train", *_flags(), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun with 2 processes did not finish in 10 minutes")
    assert proc.returncode == 0, stderr[-3000:]
    assert "on 2 processes" in stdout
    two = json.loads((out / "history.json").read_text())

    cfg = train.config("smoke", device="cpu", channels_last=False, fold_batchnorm=False,
                       **SETTINGS)
    ds = data.load(cfg.dataset, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed)
    one = train.fit(cfg, dataset=ds, progress=False)

    for a, b in zip(one.history, two):
        for key in ("loss", "guide_loss", "target_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
        assert b["label_agreement"] == pytest.approx(a["label_agreement"],
                                                     abs=2 / SETTINGS["n_train"])
    # The averaged gradients moved the weights where one process moved them (PGD's sign()
    # turns rounding differences into small step differences, hence the loose tolerance;
    # summed instead of averaged gradients would be off by 100 %).
    state = train.load_checkpoint(out)
    for name, tensor in one.target.state_dict().items():
        if tensor.is_floating_point():
            scale = tensor.abs().max().clamp_min(1e-2)
            assert ((state["target"][name] - tensor).abs().max() / scale) < 0.05, name

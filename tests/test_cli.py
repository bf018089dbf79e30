"""The command line: train, interrupt, resume, evaluate, on the smoke profile at tiny sizes."""
import importlib.machinery
import json
import subprocess
import sys
import types

import pytest
import torch

from dynat_lite import train
from dynat_lite.__main__ import main

TINY = ["--profile", "smoke", "--method", "dynat", "--n-train", "128", "--n-test", "32",
        "--n-eval", "16", "--epochs", "2", "--batch-size", "64", "--steps", "1", "--seed", "3",
        "--device", "cpu", "--no-progress"]


class Interrupt(Exception):
    pass


def _stop_after_first_epoch(record):
    if record["epoch"] == 1:
        raise Interrupt


def test_train_resume_evaluate_round_trip(tmp_path, capsys, monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["train", *TINY, "--out", str(whole)]) == 0
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "img/s" in printed and "labels agree" in printed

    # Interrupt a second run after its first epoch (as a lost Colab runtime would) ...
    real_fit = train.fit

    def fit_then_die(cfg, **kwargs):
        return real_fit(cfg, **{**kwargs, "on_epoch": _stop_after_first_epoch})

    monkeypatch.setattr(train, "fit", fit_then_die)
    with pytest.raises(Interrupt):
        main(["train", *TINY, "--out", str(cut)])
    monkeypatch.setattr(train, "fit", real_fit)
    assert train.load_checkpoint(cut)["epoch"] == 1
    # ... then run the same command again: it resumes and ends where the whole run ended.
    assert main(["train", *TINY, "--out", str(cut)]) == 0
    assert "epoch 1/2" not in capsys.readouterr().out
    a, b = train.load_checkpoint(whole), train.load_checkpoint(cut)
    for key in ("target", "guide"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), name
    history = json.loads((cut / "history.json").read_text())
    assert [h["loss"] for h in history] == [h["loss"] for h in a["history"]]

    # Without --profile, `train --out` continues the run's own config (here: nothing to do).
    assert main(["train", "--out", str(cut), "--no-progress"]) == 0

    report = tmp_path / "eval.json"
    assert main(["evaluate", str(cut), "--n", "16", "--attacks", "clean,fgsm,pgd20",
                 "--json", str(report)]) == 0
    acc = json.loads(report.read_text())["accuracy"]
    assert {"clean", "fgsm", "pgd20"} <= set(acc)
    assert all(0 <= v <= 1 for v in acc.values())
    assert acc["pgd20"] <= acc["clean"]


def test_a_changed_config_is_refused_with_what_changed(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = [a if a != "2" else "1" for a in TINY]  # one epoch
    assert main(["train", *args, "--out", out]) == 0
    assert main(["train", *args, "--seed", "4", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "seed" in err


def test_user_errors_exit_with_a_message(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "No checkpoint" in capsys.readouterr().err
    assert main(["train", "--profile", "smoke", "--method", "madry",
                 "--out", str(tmp_path / "x")]) == 2
    assert "Unknown method" in capsys.readouterr().err


def test_compare_dispatches_to_the_compare_module(monkeypatch):
    seen = []
    fake = types.ModuleType("dynat_lite.compare")
    fake.__spec__ = importlib.machinery.ModuleSpec("dynat_lite.compare", None)
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "dynat_lite.compare", fake)
    assert main(["compare", "--methods", "dynat,pgd_at"]) == 0
    assert seen == [["--methods", "dynat,pgd_at"]]


def test_module_entry_point_prints_help():
    done = subprocess.run([sys.executable, "-m", "dynat_lite", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    for command in ("train", "evaluate", "bench", "compare"):
        assert command in done.stdout

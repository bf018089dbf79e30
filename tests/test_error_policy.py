"""One error policy for every subcommand: a user's mistake or a failed run is one line on stderr
and a non-zero exit (2: usage, 1: the run failed), never a traceback; nothing is lost when two
commands share a folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from dynat_lite import compare, runs, study, train
from dynat_lite.__main__ import main

TINY = ["--profile", "smoke", "--device", "cpu", "--no-progress", "--n-train", "64",
        "--n-test", "32", "--epochs", "1", "--batch-size", "32", "--n-eval", "16",
        "--eval-steps", "1", "--steps", "1"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------- train
@pytest.mark.parametrize("flags, says", [
    (["--method-options", '{"beta": -1}'], "beta of 'dynat' must be in [0, inf]"),
    (["--method-options", '{"beta": NaN}'], "must be a finite number"),
    (["--method-options", '{"label_source": 3}'], "must be a str"),
    (["--milestones", "0.5,1.5"], "strictly between 0 and 1"),
    (["--diagnose-every", "-2"], "diagnose_every must be an integer >= 0"),
])
def test_train_refuses_bad_settings_before_training(flags, says, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), *flags]) == 2
    assert says in _one_line_error(capsys)
    assert not (out / train.CHECKPOINT).exists()


def test_train_refuses_an_empty_out(capsys):
    assert main(["train", *TINY, "--out", " "]) == 2
    assert "--out is empty" in _one_line_error(capsys)


def test_an_exploding_loss_stops_the_run_as_a_non_finite_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--method", "standard", "--lr", "1e12", "--schedule",
                 "piecewise", "--out", str(out)]) == 1
    err = _one_line_error(capsys)
    assert "Training diverged in epoch 1" in err and "at most 10000" in err
    assert not (out / train.CHECKPOINT).exists()


# ---------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    assert main(["train", *TINY, "--method", "standard", "--out", str(out)]) == 0
    return out


def test_evaluate_refuses_nan_weights(trained_run, tmp_path, capsys):
    state = torch.load(trained_run / train.CHECKPOINT, weights_only=True)
    state["target"]["fc.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan"
    runs.save_checkpoint(bad / train.CHECKPOINT, state)
    assert main(["evaluate", str(bad), "--n", "8", "--attacks", "clean"]) == 2
    assert "not finite numbers" in _one_line_error(capsys)


@pytest.mark.parametrize("size", ["0", "-3"])
def test_evaluate_refuses_a_batch_size_below_one(trained_run, size, capsys):
    assert main(["evaluate", str(trained_run), "--n", "8", "--attacks", "clean",
                 "--batch-size", size]) == 2
    assert "--batch-size must be a positive integer" in _one_line_error(capsys)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_evaluate_checks_its_json_path_before_evaluating(trained_run, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["evaluate", str(trained_run), "--n", "8", "--attacks", "clean",
                     "--json", str(locked / "eval.json")]) == 1
    finally:
        locked.chmod(0o700)
    captured = capsys.readouterr()
    assert "evaluating" not in captured.out and captured.err.startswith("error: ")


def test_evaluate_json_to_a_folder_fails_before_evaluating(trained_run, tmp_path, capsys):
    assert main(["evaluate", str(trained_run), "--n", "8", "--attacks", "clean",
                 "--json", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "evaluating" not in captured.out and "is a folder" in captured.err


# ------------------------------------------------------------------------------------- study
def test_study_only_names_a_run_it_does_not_have(tmp_path, capsys):
    assert main(["study", "smoke", "--out", str(tmp_path / "s"), "--only", "nope-s0"]) == 2
    assert "has no run(s) nope-s0" in _one_line_error(capsys)


def test_study_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["study", "smoke", "--out", str(tmp_path / "f")]) == 1
    assert "is a file, not a folder" in _one_line_error(capsys)


def test_a_second_study_on_the_same_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "s"
    folder.mkdir()
    with runs.claim_run_folder(folder):
        assert main(["study", "smoke", "--out", str(folder), "--only", "pgd_at-s0"]) == 1
    assert "in use by another run" in _one_line_error(capsys)


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_the_study_goes_on(tmp_path, capsys):
    folder = tmp_path / "s"
    assert main(["study", "smoke", "--out", str(folder), "--only", "pgd_at-s0"]) == 0
    (folder / "pgd_at-s0" / study.FINAL).write_text("{not json")  # corrupt
    capsys.readouterr()
    code = main(["study", "smoke", "--out", str(folder), "--only", "pgd_at-s0,dynat_nocf-s0"])
    captured = capsys.readouterr()
    assert code == 1
    assert "error: run pgd_at-s0 failed" in captured.err
    assert (folder / "dynat_nocf-s0" / study.FINAL).exists()  # the other run went on
    failed = json.loads((folder / study.FAILED).read_text())
    assert list(failed) == ["pgd_at-s0"]
    assert [r["run"] for r in study.summarize(folder)] == ["dynat_nocf-s0"]


# ----------------------------------------------------------------------------------- compare
@pytest.mark.parametrize("flags, says", [
    (["--methods", ","], "No methods to compare"),
    (["--n-eval", "0"], "n_eval must be an integer >= 1"),
    (["--n-eval", "-5"], "n_eval must be an integer >= 1"),
    (["--n-check", "-1"], "n_check must be an integer >= 0"),
])
def test_compare_refuses_bad_flags_before_training(flags, says, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["compare", "--profile", "smoke", "--out", str(out), *flags]) == 2
    assert says in _one_line_error(capsys)
    assert not any(out.glob("*/checkpoint.pt"))


def test_compare_out_that_is_a_file_and_a_busy_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["compare", "--profile", "smoke", "--methods", "standard",
                 "--out", str(tmp_path / "f")]) == 1
    assert "is a file" in _one_line_error(capsys)
    busy = tmp_path / "busy"
    busy.mkdir()
    with runs.claim_run_folder(busy):
        assert main(["compare", "--profile", "smoke", "--methods", "standard",
                     "--out", str(busy)]) == 1
    assert "in use by another run" in _one_line_error(capsys)


@pytest.mark.slow
def test_two_compares_into_one_folder_keep_both_rows(tmp_path):
    out = tmp_path / "c"
    kw = dict(profile="smoke", out=out, dataset="synthetic", n_eval=16, attacks=("clean",),
              n_check=0, overrides={"n_train": 64, "n_test": 32, "epochs": 1, "batch_size": 32,
                                    "n_eval": 16, "eval_steps": 1, "steps": 1},
              log=lambda *_: None)
    compare.compare(["standard"], **kw)
    rows = compare.compare(["pgd_at"], **kw)
    assert [r["method"] for r in rows] == ["standard", "pgd_at"]
    table = (out / "results.md").read_text()
    assert "standard" in table and "pgd_at" in table
    with pytest.raises(ValueError, match="other settings"):
        compare.compare(["trades"], **{**kw, "n_eval": 8})


# ------------------------------------------------------------------------------------- bench
@pytest.mark.parametrize("flags, says", [(["--device", "tpu"], "Device 'tpu' is not available"),
                                         (["--device", "cuda"], "not available"),
                                         (["--targets", "vgg"], "Unknown model 'vgg'")])
def test_bench_says_what_is_wrong_in_one_line(flags, says, capsys):
    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert main(["bench", *flags]) == 2
    assert says in _one_line_error(capsys)


def test_every_policy_error_is_a_kit_error_class():
    # The classes the policy turns into one line are the kit's own (and ValueError, OSError).
    assert issubclass(runs.CheckpointError, RuntimeError)
    assert issubclass(runs.RunFolderError, RuntimeError)
    assert train.CheckpointError is runs.CheckpointError
    assert Path(study.FAILED).suffix == ".json"


# -------------------------------------------------------------------------------- pretrained
def test_pretrained_errors_are_one_line_and_name_the_fix(tmp_path, monkeypatch):
    from dynat_lite import pretrained

    name = pretrained.available()[0]
    manifest = pretrained.read_manifest()
    entry = dict(manifest[name])
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / entry["file"]).write_bytes((pretrained.FOLDER / entry["file"]).read_bytes())
    # A manifest entry without its sha256.
    pretrained.write_manifest({name: {k: v for k, v in entry.items() if k != "sha256"}}, folder)
    with pytest.raises(pretrained.PretrainedError, match="lacks sha256"):
        pretrained.load(name, folder)
    # A device that does not exist.
    with pytest.raises(ValueError, match="Device 'cuda:7' is not available|Device"):
        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has 8 GPUs")
        pretrained.load(name, device="cuda:7")
    # A cache that cannot be created (its parent is a file).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    pretrained.write_manifest({name: {**entry, "url": "http://127.0.0.1:9/none"}}, tmp_path / "w2")
    with pytest.raises(pretrained.DownloadError, match="cannot be written"):
        pretrained.load(name, tmp_path / "w2", cache=blocker / "cache")


def test_an_npz_that_is_not_a_zip_file_is_called_so(tmp_path, capsys):
    bad = tmp_path / "data.npz"
    bad.write_bytes(b"this is not a zip file at all" * 10)
    assert main(["train", *TINY, "--dataset", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = _one_line_error(capsys)
    assert "is not an .npz archive" in err and "pickled" not in err


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert main(["train", *TINY, "--method", "standard", "--lr", "1e12", "--schedule",
                 "piecewise", "--out", str(out)]) == 1
    _one_line_error(capsys)
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["train", *TINY, "--method", "standard", "--lr", "1e12", "--schedule",
                 "piecewise", "--out", str(kept)]) == 1
    assert kept.is_dir()  # a folder the user made stays


def test_a_finished_run_is_loaded_without_writing_when_its_history_is_there(tmp_path, capsys,
                                                                           monkeypatch):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--method", "standard", "--out", str(out)]) == 0
    history = out / "history.json"
    stamp = history.stat().st_mtime_ns
    # As in a read-only folder: any write into it fails.
    real = Path.write_text

    def refuse(self, *a, **k):
        if self.parent == out:
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", refuse)
    assert main(["train", *TINY, "--method", "standard", "--out", str(out)]) == 0
    assert history.stat().st_mtime_ns == stamp
    history.unlink()
    assert main(["train", *TINY, "--method", "standard", "--out", str(out)]) == 1
    assert "The run is done" in _one_line_error(capsys)

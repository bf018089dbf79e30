"""No silent wrong result, no lost run: bad inputs, two runs in one folder, and failures
(divergence, a full disk, kill -9, Ctrl-C) end with one clear line, never a traceback, and never
with a run folder left in a state that the next run misreads."""
import errno
import math
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest
import torch

from dynat_lite import attacks, data, evaluate, notebook, train
from dynat_lite.__main__ import main

from conftest import TinyNet

TINY = ["--profile", "smoke", "--method", "dynat", "--n-train", "64", "--n-test", "16",
        "--n-eval", "8", "--epochs", "1", "--batch-size", "32", "--steps", "1", "--seed", "3",
        "--device", "cpu", "--no-progress"]
UNSAFE_ADVICE = ("weights_only", "allow_pickle", "safe_globals", "trust")


@pytest.fixture(scope="module")
def tiny_data():
    return data.load("synthetic", n_train=64, n_test=16, seed=0)


def _tiny_config(**overrides):
    base = dict(method="dynat", n_train=64, n_test=16, n_eval=8, epochs=1, batch_size=32,
                steps=1, device="cpu")
    return train.config("smoke", **{**base, **overrides})


def _with_epochs(n: int) -> list[str]:
    """TINY with ``--epochs n``."""
    flags = list(TINY)
    flags[flags.index("--epochs") + 1] = str(n)
    return flags


def _cli(argv, capsys):
    """(exit code, stdout, stderr) of ``python -m dynat_lite *argv``, run in this process."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _python(code: str, **kwargs) -> subprocess.Popen:
    """A Python process running ``code``, its stdout piped, in a session of its own."""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 300) -> str:
    """Read ``proc``'s stdout until a line holds ``needle`` (the process is killed after
    ``timeout`` seconds, so a hung one fails the test instead of hanging it)."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            if needle in line:
                return line
    finally:
        timer.cancel()
    pytest.fail(f"the process ended without printing {needle!r}: {proc.stderr.read()[-2000:]}")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


# 1 --------------------------------------------------------------------------------------------
def test_non_finite_images_are_refused_by_every_entry_point(tiny_data):
    model = TinyNet().eval()
    y = torch.zeros(8, dtype=torch.long)
    for value in (float("nan"), float("inf"), float("-inf")):
        x = torch.full((8, 3, 32, 32), value)
        # All-NaN images labelled 0 used to score 100 % clean, PGD and C&W (argmax of NaN is 0).
        with pytest.raises(ValueError, match="non-finite"):
            evaluate.evaluate(model, x, y, attacks=("clean",))
        with pytest.raises(ValueError, match="non-finite"):
            evaluate.robustness_report(model, x, y, attacks=("pgd10", "cw"), checks=False)
        for attack in (attacks.pgd, attacks.fgsm, attacks.cw_inf):
            with pytest.raises(ValueError, match="non-finite"):
                attack(model, x, y)
        with pytest.raises(ValueError, match="non-finite"):
            data.Batches(x, y, 4)
    # One NaN pixel among valid images is enough.
    x = tiny_data.x_train.clone()
    x[5, 1, 2, 3] = float("nan")
    bad = data.Dataset("bad", x, tiny_data.y_train, tiny_data.x_test, tiny_data.y_test,
                       tiny_data.classes)
    with pytest.raises(ValueError, match=r"1 non-finite value"):
        train.fit(_tiny_config(), dataset=bad, progress=False)


# 2 --------------------------------------------------------------------------------------------
def test_a_run_folder_has_one_writer_and_a_dead_owners_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _python("import time\nfrom dynat_lite import train\n"
                     f"with train.claim_run_folder({str(out)!r}):\n"
                     "    print('holding', flush=True)\n    time.sleep(600)\n")
    try:
        _wait_for_line(holder, "holding")
        # A second run with another config fails at once, naming the process that holds it.
        code, stdout, err = _cli(["train", *TINY, "--seed", "9", "--out", str(out)], capsys)
        assert code == 1
        line = _one_line_error(err)
        assert "in use by another run" in line and f"process {holder.pid}" in line
        assert "epoch 1" not in stdout and not (out / train.CHECKPOINT).exists()
    finally:
        _kill(holder)  # kill -9: the lock file stays behind, naming a dead process
    assert (out / train.LOCK).exists()
    with train.claim_run_folder(out):
        assert str(os.getpid()) in (out / train.LOCK).read_text()
    assert not (out / train.LOCK).exists()


# 3 --------------------------------------------------------------------------------------------
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data,
                                                                     capsys):
    # Epoch 1 at a sane lr (the piecewise schedule's first_epoch_lr), epoch 2 at 1e30.
    cfg = _tiny_config(epochs=2, schedule="piecewise", first_epoch_lr=0.01, lr=1e30)
    with pytest.raises(train.TrainingDiverged, match="diverged in epoch 2") as caught:
        train.fit(cfg, out=tmp_path / "run", dataset=tiny_data, progress=False)
    assert "keeps the last good checkpoint (epoch 1)" in str(caught.value)
    state = train.load_checkpoint(tmp_path / "run")
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert all(torch.isfinite(t).all() for t in state["target"].values()
               if t.is_floating_point())
    # From the command line: a NaN learning rate is refused before anything runs ...
    code, _, err = _cli(["train", *TINY, "--lr", "nan", "--out", str(tmp_path / "nan")], capsys)
    assert code == 2 and "lr must be a finite number" in _one_line_error(err)
    # ... and a diverging one exits non-zero with one line (with the one-cycle schedule, the
    # lr of epoch 1 rises from 0: its loss is finite, the loss of epoch 2 is not).
    big = tmp_path / "big"
    code, stdout, err = _cli(["train", *_with_epochs(2), "--lr", "1e30", "--out", str(big)],
                             capsys)
    assert code == 1 and "Training diverged in epoch 2" in _one_line_error(err)
    assert "done" not in stdout and train.load_checkpoint(big)["epoch"] == 1


# 4 --------------------------------------------------------------------------------------------
def _write_npz(path, **override):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
                  y_train=np.arange(40) % 10,
                  x_test=rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8),
                  y_test=np.arange(10) % 10)
    arrays.update(override)
    np.savez(path, **arrays)
    return str(path)


def test_npz_labels_must_be_the_classes_or_named_by_a_classes_array(tmp_path):
    stray = np.arange(40) % 10
    stray[7] = 57
    with pytest.raises(data.DatasetError, match=r"label\(s\) 57 lie beyond .*\(0\.\.9: class 10"):
        data.load(_write_npz(tmp_path / "a.npz", y_train=stray))
    with pytest.raises(data.DatasetError, match=r"class 0 never occurs"):
        data.load(_write_npz(tmp_path / "b.npz", y_train=np.arange(40) % 10 + 1))
    with pytest.raises(data.DatasetError, match=r"label\(s\) 12 "):  # a test-only class
        data.load(_write_npz(tmp_path / "c.npz", y_test=np.full(10, 12)))
    ten = np.array([f"class {i}" for i in range(10)])
    with pytest.raises(data.DatasetError, match=r"lie in \[0, 10\).*found 57"):
        data.load(_write_npz(tmp_path / "d.npz", y_train=stray, classes=ten))
    # A classes array that says K = 58 makes it a (declared) 58-class problem.
    named = np.array([f"class {i}" for i in range(58)])
    assert data.load(_write_npz(tmp_path / "e.npz", y_train=stray, classes=named)).num_classes == 58
    assert data.load(_write_npz(tmp_path / "f.npz")).num_classes == 10


# 5 --------------------------------------------------------------------------------------------
def test_an_unwritable_out_fails_before_training(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    code, stdout, err = _cli(["train", *TINY, "--out", str(a_file)], capsys)
    assert code == 1 and "is a file, not a folder" in _one_line_error(err)
    assert "epoch 1" not in stdout

    locked = tmp_path / "read-only"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o500)
    else:  # root writes anywhere: refuse file creation there as a read-only folder would
        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and str(dir).startswith(str(locked)):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        code, stdout, err = _cli(["train", *TINY, "--out", str(locked / "run")], capsys)
    finally:
        locked.chmod(0o700)
    line = _one_line_error(err)
    assert code == 1 and "Cannot write to the run folder" in line and "Permission denied" in line
    assert "epoch 1" not in stdout


# 6 --------------------------------------------------------------------------------------------
def test_an_empty_split_or_a_batch_larger_than_the_data_is_refused(tmp_path, tiny_data, capsys):
    code, _, err = _cli(["train", *TINY, "--batch-size", "512", "--out", str(tmp_path / "a")],
                        capsys)
    line = _one_line_error(err)
    assert code == 2 and "batch size 512 is larger than the 64 training images" in line
    empty_train = data.Dataset("x", tiny_data.x_train[:0], tiny_data.y_train[:0],
                               tiny_data.x_test, tiny_data.y_test, tiny_data.classes)
    with pytest.raises(ValueError, match="training split is empty"):
        train.fit(_tiny_config(), dataset=empty_train, progress=False)
    empty_test = data.Dataset("x", tiny_data.x_train, tiny_data.y_train,
                              tiny_data.x_test[:0], tiny_data.y_test[:0], tiny_data.classes)
    with pytest.raises(ValueError, match="test split is empty"):
        train.fit(_tiny_config(), dataset=empty_test, progress=False)
    with pytest.raises(data.DatasetError, match="x_train holds no images"):
        data.load(_write_npz(tmp_path / "e.npz", x_train=np.zeros((0, 32, 32, 3), np.uint8),
                             y_train=np.zeros(0, np.int64)))


# 7 --------------------------------------------------------------------------------------------
def test_an_unavailable_device_gets_one_message_listing_what_is_here(tmp_path, capsys):
    missing_gpu = (f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available()
                   else "cuda")
    for name in ("gpu", "tpu", missing_gpu):
        with pytest.raises(ValueError, match=r"not available.*Available here: auto, cpu"):
            train.resolve_device(name)
    assert train.resolve_device("CPU") == torch.device("cpu")
    code, _, err = _cli(["train", *TINY, "--device", "tpu", "--out", str(tmp_path / "r")],
                        capsys)
    assert code == 2 and "Device 'tpu' is not available" in _one_line_error(err)
    with pytest.raises(ValueError, match="Device 'gpu' is not available"):  # a lesson's DEVICE
        notebook.lesson("smoke", "synthetic", "gpu", 0, tmp_path / "out", tmp_path / "models",
                        quiet=True, progress=False, n_train=64, n_test=16)


# 8 --------------------------------------------------------------------------------------------
def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    real_save = torch.save
    calls = []

    def save_then_fill_the_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    out = tmp_path / "run"
    argv = ["train", *_with_epochs(2), "--out", str(out)]
    code, stdout, err = _cli(argv, capsys)
    line = _one_line_error(err)
    assert code == 1 and "epoch 1/2" in stdout
    assert "epoch 2 could not be written" in line and "is full" in line
    assert "still holds the previous checkpoint, intact" in line and "resumes" in line
    monkeypatch.setattr(torch, "save", real_save)
    assert train.load_checkpoint(out)["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == [train.CHECKPOINT]  # no temporary left

    # PyTorch's own writer reports a full disk as a RuntimeError from its C++ code.
    def writer_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", writer_fails)
    with pytest.raises(train.RunFolderError, match="is full"):
        train.save_checkpoint(out / train.CHECKPOINT, {"epoch": 2})


# 9 --------------------------------------------------------------------------------------------
def test_a_checkpoint_write_killed_midway_leaves_nothing_behind(tmp_path, tiny_data):
    out = tmp_path / "run"
    # A process that is killed (kill -9) while torch.save writes its checkpoint.
    writer = _python(
        "import time, torch\nfrom dynat_lite import train\n"
        "def slow_save(obj, f, *a, **k):\n"
        "    f.write(b'half a checkpoint'); f.flush(); print('writing', flush=True)\n"
        "    time.sleep(600)\n"
        "torch.save = slow_save\n"
        f"with train.claim_run_folder({str(out)!r}):\n"
        f"    train.save_checkpoint({str(out / train.CHECKPOINT)!r}, {{'epoch': 1}})\n")
    try:
        _wait_for_line(writer, "writing")
    finally:
        _kill(writer)
    left = sorted(p.name for p in out.iterdir())
    assert train.LOCK in left and any(n.endswith(".tmp") for n in left), left
    train.fit(_tiny_config(), out=out, dataset=tiny_data, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [train.CHECKPOINT]


# 10 -------------------------------------------------------------------------------------------
def _checkpoint(cfg, tiny_data):
    """A checkpoint as ``fit`` writes one, of untrained networks (no training needed)."""
    nets = train.build(cfg, tiny_data.num_classes, torch.device("cpu"))
    optimizer = train.make_optimizer(cfg, nets)
    return {"format": 1, "config": cfg.to_dict(), "epoch": 1,
            "target": nets.target.state_dict(), "guide": nets.guide.state_dict(),
            "optimizer": optimizer.state_dict(), "history": [{"epoch": 1}]}


@pytest.mark.parametrize("damage, part", [
    (lambda s: s["target"].update({"features.0.weight": torch.zeros(2, 2)}), "size mismatch"),
    (lambda s: s["target"].pop(sorted(s["target"])[0]), "Missing key"),
    (lambda s: s["target"].update({"extra.weight": torch.zeros(1)}), "Unexpected key"),
    (lambda s: s["guide"].pop(sorted(s["guide"])[0]), "guide weights do not fit"),
    (lambda s: s.update(config=["dynat"]), "config is a list, not a mapping"),
    (lambda s: s["config"].update(colour="blue"), "Unknown config fields ['colour']"),
    (lambda s: s["config"].update(model="resnet18"), "Missing key"),
    (lambda s: s.update(epoch="one"), "not a count of epochs"),
    (lambda s: s.update(optimizer={"state": {}}), "optimizer state"),
])
def test_an_inconsistent_checkpoint_is_one_line_naming_the_part(tmp_path, tiny_data, capsys,
                                                                 damage, part):
    cfg = _tiny_config(epochs=2)
    state = _checkpoint(cfg, tiny_data)
    damage(state)
    out = tmp_path / "run"
    out.mkdir()
    torch.save(state, out / train.CHECKPOINT)
    with pytest.raises(train.CheckpointError) as caught:
        if part == "optimizer state":  # only resuming reads the optimizer state
            train.fit(cfg, out=out, dataset=tiny_data, progress=False)
        else:
            train.load_model(out, which="guide" if "guide" in part else "target")
    message = str(caught.value)
    assert "is not a consistent dynat-lite checkpoint" in message and part in message
    assert "\n" not in message
    if part != "optimizer state":
        code, _, err = _cli(["evaluate", str(out), "--n", "8", "--attacks", "clean",
                             "--which", "guide" if "guide" in part else "target"], capsys)
        assert code == 2 and part in _one_line_error(err)


# 11 -------------------------------------------------------------------------------------------
def test_no_message_advises_turning_a_safety_check_off(tmp_path, capsys):
    messages = []
    # A checkpoint holding a numpy array: torch.load(weights_only=True) refuses it and advises
    # weights_only=False and allow-listing globals.
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": {}, "epoch": 1, "target": {"w": np.zeros(3)}}, run / train.CHECKPOINT)
    with pytest.raises(train.CheckpointError, match="never loaded") as caught:
        train.load_checkpoint(run)
    messages.append(str(caught.value))
    code, _, err = _cli(["evaluate", str(run)], capsys)
    messages.append(_one_line_error(err))
    # An .npz holding an object array, and a pickle named .npz: numpy advises allow_pickle.
    np.savez(tmp_path / "objects.npz", x_train=np.array([{"a": 1}, None], dtype=object))
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps([1, 2, 3]))
    for name in ("objects.npz", "pickle.npz"):
        with pytest.raises(data.DatasetError, match="never loaded") as caught:
            data.load(str(tmp_path / name))
        messages.append(str(caught.value))
    code, _, err = _cli(["train", *TINY, "--dataset", str(tmp_path / "objects.npz"),
                         "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    messages.append(_one_line_error(err))
    for message in messages:
        assert not any(word in message for word in UNSAFE_ADVICE), message
        assert "\x1b" not in message


# 12 -------------------------------------------------------------------------------------------
def test_ctrl_c_prints_one_line_with_the_command_that_resumes(tmp_path):
    out = tmp_path / "run"
    argv = ["train", *_with_epochs(2000), "--out", str(out)]  # far more than it can finish first
    # A runner started in the background by a shell (`make test &`, nohup) passes Ctrl-C on as
    # "ignored", and Python then never raises KeyboardInterrupt: give the child the default.
    proc = subprocess.Popen([sys.executable, "-m", "dynat_lite", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_line(proc, "epoch 1/2000")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        _kill(proc)
    assert proc.returncode == 130
    line = _one_line_error(err)
    assert line.startswith("stopped (Ctrl-C)") and "keeps the last finished epoch" in line
    assert line.endswith("Resume with: python -m dynat_lite " + " ".join(argv))
    assert train.load_checkpoint(out)["epoch"] >= 1
    assert sorted(p.name for p in out.iterdir()) == [train.CHECKPOINT]  # no lock, no temporary


# 13 -------------------------------------------------------------------------------------------
def test_bad_evaluation_and_attack_inputs_get_clear_messages(tmp_path, tiny_data, capsys):
    run = tmp_path / "runs" / "dynat-1234abcd"
    run.mkdir(parents=True)
    torch.save(_checkpoint(_tiny_config(), tiny_data), run / train.CHECKPOINT)
    for n in ("0", "-3", "many"):
        with pytest.raises(SystemExit) as caught:
            main(["evaluate", str(run), "--n", n])
        assert caught.value.code == 2
        assert "expected a positive number of images or 'all'" in capsys.readouterr().err
    # A mistyped run folder: the message names the run folders that do exist there.
    code, _, err = _cli(["evaluate", str(tmp_path / "runs" / "dynat")], capsys)
    line = _one_line_error(err)
    assert code == 2 and "No checkpoint at" in line and str(run) in line
    # An .npz with empty arrays or an object array.
    np.savez(tmp_path / "empty.npz", x_train=np.zeros((0, 32, 32, 3), np.uint8),
             y_train=np.zeros(0, np.int64), x_test=np.zeros((0, 32, 32, 3), np.uint8),
             y_test=np.zeros(0, np.int64))
    code, _, err = _cli(["evaluate", str(run), "--dataset", str(tmp_path / "empty.npz")], capsys)
    assert code == 2 and "holds no images" in _one_line_error(err)
    # attacks.pgd: NHWC images, float64 images, labels the model does not score, no images.
    model = TinyNet().eval()
    x, y = tiny_data.x_test[:4], tiny_data.y_test[:4]
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        attacks.pgd(model, x.permute(0, 2, 3, 1), y)
    with pytest.raises(ValueError, match=r"torch.float64 but the model's weights are"):
        attacks.pgd(model, x.double(), y)
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 10\).*\[0, 57\]"):
        attacks.pgd(model, x, torch.tensor([0, 1, 2, 57]))
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 10\)"):
        evaluate.evaluate(model, x, torch.tensor([0, 1, -1, 2]), attacks=("clean",))
    with pytest.raises(ValueError, match="No images"):
        attacks.pgd(model, x[:0], y[:0])


# 14 -------------------------------------------------------------------------------------------
def test_the_thread_count_is_recorded_and_a_resume_with_another_warns(tmp_path, tiny_data):
    assert "same number of threads" in " ".join(train.__doc__.split())
    threads = torch.get_num_threads()
    cfg = _tiny_config(epochs=2)
    # Epoch 1 of 2, written by a process that had one thread more than this one.
    state = {**_checkpoint(cfg, tiny_data), "device_type": "cpu", "cpu_threads": threads + 1}
    torch.save(state, tmp_path / train.CHECKPOINT)
    with pytest.warns(RuntimeWarning, match=f"with {threads + 1} threads so far and resumes "
                                            f"with {threads}: it will not be bit-identical"):
        result = train.fit(cfg, out=tmp_path, dataset=tiny_data, progress=False)
    assert len(result.history) == 2 and math.isfinite(result.history[-1]["loss"])
    state = train.load_checkpoint(tmp_path)
    assert state["cpu_threads"] == threads and state["device_type"] == "cpu"

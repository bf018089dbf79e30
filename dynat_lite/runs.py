"""Run folders and checkpoint files: who owns a folder, and how weights reach and leave disk.

A process that trains owns its run folder (``claim_run_folder``: a lock file naming it);
checkpoints are written atomically (``save_checkpoint``), loaded with one-line errors for
every way they can be wrong (``load_checkpoint``, ``load_weights``), and the weights of the last
epochs can be kept beside them (``kept_checkpoints``). ``load_model`` rebuilds a trained network
from its checkpoint. This module imports the config (to read a checkpoint's settings), the
models, the fast step's memory layout and the data module's error wording; never the training
loop.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from . import data as data_lib
from . import fast, models
from .config import Config, validate

CHECKPOINT = "checkpoint.pt"
LOCK = "run.lock"  # while a process trains into a run folder: its pid, host and command
#: The weights kept of one epoch (``Config.keep_last`` > 1), beside the checkpoint.
KEPT = "epoch-{:03d}.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or from a different run."""


class RunFolderError(RuntimeError):
    """A run folder that cannot take the run: held by another process, not writable, full."""


# -------------------------------------------------------------------------------- run folders
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@contextlib.contextmanager
def claim_run_folder(out: str | Path | None):
    """Own the run folder ``out`` while the block runs (None: nothing to own).

    First checks that a file can be created there, so that a read-only folder fails now and
    not after an epoch. Then takes the folder's lock file, ``run.lock``, which names the owner
    (pid, host, command): another process that wants the folder fails at once with a
    RunFolderError naming it. The lock is an advisory ``flock``, which the operating system
    drops when its process ends, however it ends: a lock file left by a killed run is taken
    over (where flock is missing, the recorded pid is checked instead; on Windows there is no
    lock). Then removes the temporary files of a checkpoint write that was killed midway.
    On leaving, the lock file is deleted, and the folder too if this call made it and it is
    still empty (a run that failed before its first checkpoint leaves nothing behind)."""
    if out is None:
        yield
        return
    folder = Path(out)
    made = not folder.exists()
    _check_writable(folder)
    fd = _lock(folder / LOCK)
    try:
        for stale in (*folder.glob(CHECKPOINT + "*.tmp"), *folder.glob("epoch-*.pt*.tmp"),
                      *folder.glob(".write-test-*")):
            stale.unlink(missing_ok=True)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK)
        os.close(fd)  # releases the flock
        if made:
            with contextlib.suppress(OSError):  # not empty (or gone): keep it
                folder.rmdir()


def _check_writable(folder: Path) -> None:
    """Raise a RunFolderError unless a file can be created in ``folder`` (made if missing)."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"The run folder {folder} is a file, not a folder: choose another "
                             f"output folder (--out).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunFolderError(f"Cannot write to the run folder {folder} ({err.strerror or err}): "
                             f"choose an output folder you can write to (--out).") from err


def _lock(path: Path) -> int:
    """Take the lock file ``path`` (see ``claim_run_folder``); returns its descriptor."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if _held_elsewhere(fd):
            owner = _lock_owner(fd)
            os.close(fd)
            raise RunFolderError(_busy_message(path.parent, owner))
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not a file its owner just deleted
                break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "command": " ".join(sys.argv),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    return fd


def _held_elsewhere(fd: int) -> bool:
    """True if another live process holds the lock file open as ``fd``."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except OSError:
            pass  # a file system without flock: check the recorded pid
    if os.name == "nt":  # os.kill would end the process there
        return False
    pid = _lock_owner(fd).get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_owner(fd: int) -> dict:
    """What the lock file open as ``fd`` says about its owner ({} if unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        owner = json.loads(os.read(fd, 65536).decode() or "{}")
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _busy_message(folder: Path, owner: dict) -> str:
    who = f"process {owner.get('pid', '(unknown)')}"
    if owner.get("host"):
        who += f" on {owner['host']}"
    if owner.get("command"):
        who += f", running `{owner['command']}`"
    if owner.get("since"):
        who += f", since {owner['since']}"
    return (f"The run folder {folder} is in use by another run ({who}): two runs writing one "
            f"folder would overwrite each other's checkpoint. Wait for that run to finish, stop "
            f"it, or choose another output folder (--out).")


def _finished(out: str | Path, cfg: Config) -> bool:
    """True if ``out`` holds a checkpoint of ``cfg.epochs`` epochs or more: ``fit`` then only
    loads it, without owning the folder (which may be read-only). Reads no tensor data."""
    ckpt = Path(out) / CHECKPOINT
    if not ckpt.is_file():
        return False
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"]) >= cfg.epochs
    except Exception:  # fit's load_checkpoint says what is wrong with it
        return False


# -------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save to a temporary file beside ``path``, then rename: never a half-written file.
    A full disk raises a RunFolderError that says so (``path`` keeps the previous checkpoint)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if _disk_full(err):
            raise RunFolderError(_disk_full_message(path, state.get("epoch"))) from err
        raise


def _disk_full(err: BaseException) -> bool:
    """A write that failed for want of space. PyTorch's writer reports it as a RuntimeError
    ("[enforce fail at inline_container.cc] ... file write failed")."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, RuntimeError) and ("file write failed" in str(err)
                                              or "inline_container" in str(err))


def _disk_full_message(path: Path, epoch) -> str:
    try:
        free = f" ({shutil.disk_usage(path.parent).free / 2 ** 20:.0f} MiB free)"
    except OSError:
        free = ""
    previous = path if path.exists() else path.parent / CHECKPOINT  # kept weights: the run's
    kept = (f"{previous} still holds the previous checkpoint, intact" if previous.exists()
            else "no checkpoint was written before")
    return (f"The checkpoint{f' of epoch {epoch}' if epoch is not None else ''} could not be "
            f"written: the disk holding {path.parent} is full{free}. {kept}. Free some space, "
            f"then run the same command again (or fit with the same out): the run resumes from "
            f"its last checkpoint.")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by ``fit`` (``weights_only=True``: no code is unpickled);
    raise a one-line CheckpointError if it is missing, corrupt or inconsistent."""
    path = Path(path)
    if path.is_dir() or path.suffix not in (".pt", ".pth"):
        path = path / CHECKPOINT
    if not path.exists():
        runs = _run_folders_near(path.parent)
        found = (f" Run folders with a checkpoint near it: {', '.join(map(str, runs))}."
                 if runs else "")
        raise CheckpointError(f"No checkpoint at {path}.{found} Or train first "
                              f"(dynat_lite.train.fit or `python -m dynat_lite train --out "
                              f"{path.parent}`).")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is corrupt or not a dynat-lite checkpoint "
                              f"({data_lib.plain_reason(err)}). Delete it to train from "
                              f"scratch.") from err
    if not isinstance(state, dict) or not {"config", "epoch", "target"} <= set(state):
        raise CheckpointError(f"{path} is not a dynat-lite checkpoint (missing config, epoch or "
                              f"target weights). Delete it to train from scratch.")
    _check_consistent(path, state)
    return state


def _check_consistent(path: Path, state: dict) -> None:
    """The parts of a checkpoint that the weights do not decide: a readable config, a count of
    epochs, state_dicts where networks belong."""
    def inconsistent(what: str):
        return CheckpointError(f"{path} is not a consistent dynat-lite checkpoint: {what}.")

    if not isinstance(state["config"], dict):
        raise inconsistent(f"its config is a {type(state['config']).__name__}, not a mapping "
                           f"of settings")
    try:
        validate(Config.from_dict(state["config"]))
    except (TypeError, ValueError, KeyError) as err:
        raise inconsistent(f"its config cannot be read by this version of dynat-lite "
                           f"({' '.join(str(err).split())})") from err
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise inconsistent(f"its epoch is {epoch!r}, not a count of epochs")
    for part in ("target", "guide"):
        if state.get(part) is not None and not isinstance(state[part], dict):
            raise inconsistent(f"its {part} weights are a {type(state[part]).__name__}, not a "
                               f"state_dict")


def load_weights(net: nn.Module, weights, path: str | Path, part: str) -> None:
    """``net.load_state_dict(weights)``, or a one-line CheckpointError saying what does not
    fit (a missing key, a size mismatch) instead of PyTorch's multi-line traceback, or that
    some weights are NaN or infinite (never evaluated or trained on)."""
    try:
        net.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError, KeyError, ValueError) as err:
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 400 else detail[:400] + " ..."
        raise CheckpointError(f"{path} is not a consistent dynat-lite checkpoint: its {part} "
                              f"weights do not fit the network its config names "
                              f"({detail}).") from err
    bad = [name for name, t in net.state_dict().items()
           if torch.is_floating_point(t) and not bool(t.isfinite().all())]
    if bad:
        raise CheckpointError(f"{path} holds {part} weights that are not finite numbers (NaN or "
                              f"inf in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}): the "
                              f"run that wrote it diverged. Use an earlier checkpoint or train "
                              f"again.")


def _run_folders_near(folder: Path, most: int = 5) -> list[Path]:
    """Folders holding a checkpoint, in or one level below the nearest existing ancestor of
    ``folder``: what a mistyped --out probably meant."""
    base = folder
    while not base.is_dir() and base != base.parent:
        base = base.parent
    if not base.is_dir() or base == Path(base.anchor or "/"):
        return []
    found = {p.parent for pattern in ("*/" + CHECKPOINT, "*/*/" + CHECKPOINT)
             for p in base.glob(pattern)}
    return sorted(found)[:most]


def load_model(path: str | Path, which: str = "target", device: str = "cpu") -> nn.Module:
    """The trained target (or guide) network of a checkpoint, in eval mode, in the memory
    layout ``fit`` trains in on ``device`` (so that it computes exactly what the trained one
    did)."""
    state = load_checkpoint(path)
    cfg = Config.from_dict(state["config"])
    if state.get(which) is None:
        raise CheckpointError(f"The checkpoint has no {which} network (method {cfg.method}).")
    head = state[which].get("fc.weight")
    if not torch.is_tensor(head) or head.dim() != 2:
        raise CheckpointError(f"{path} is not a consistent dynat-lite checkpoint: its {which} "
                              f"weights lack the output layer fc.weight.")
    name = cfg.model if which == "target" else cfg.guide_model
    model = models.create(name, head.shape[0])
    load_weights(model, state[which], path, which)
    model.to(device)
    fast.prepare(model, channels_last=fast.use_channels_last(device, cfg.channels_last))
    return model.eval()


def kept_checkpoints(out: str | Path) -> dict[int, Path]:
    """Epoch -> file of the weights kept in the run folder ``out`` (``Config.keep_last``), in
    order; each loads with ``load_checkpoint`` and ``load_model`` like the checkpoint."""
    found = {}
    for path in Path(out).glob("epoch-*.pt"):
        number = path.stem.removeprefix("epoch-")
        if number.isdigit():
            found[int(number)] = path
    return dict(sorted(found.items()))

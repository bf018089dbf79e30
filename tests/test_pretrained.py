"""Pretrained models (dynat_lite.pretrained, tools/export_pretrained.py): a tiny trained run is
exported, listed, loaded back with the same logits, downloaded from a local HTTP server, and
refused when its checksum is wrong; every model the kit ships loads and matches its sha256."""
import functools
import http.server
import json
import shutil
import socket
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dynat_lite import pretrained, train
from dynat_lite.evaluate import robustness_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import export_pretrained  # noqa: E402

NAME = "tiny-dynat"


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch DYNAT run of the smoke profile at tiny sizes, with the final.json a study
    writes (clean and PGD-10 accuracy on its 32 test images)."""
    run = tmp_path_factory.mktemp("run")
    cfg = train.config("smoke", method="dynat", n_train=128, n_test=32, epochs=1, batch_size=32,
                       n_eval=16, eval_steps=2, device="cpu")
    result = train.fit(cfg, out=run, progress=False)
    data = result.dataset
    report = robustness_report(result.target, data.x_test, data.y_test,
                               attacks=("clean", "pgd10"), seed=cfg.seed, checks=False)
    (run / "final.json").write_text(json.dumps({"run": "dynat-s0", "method": "dynat",
                                                "seed": cfg.seed, **report.to_dict()}))
    return run, result, report


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The run exported by the tool (its command line) into a fresh weights folder."""
    run, _, _ = trained
    folder = tmp_path_factory.mktemp("weights")
    assert export_pretrained.main([str(run), "--name", NAME, "--out", str(folder)]) == 0
    return folder


@pytest.fixture
def images(trained):
    return trained[1].dataset.x_test[:8]


def logits(model, x):
    with torch.no_grad():
        return model(x)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """serve(folder) -> the http://127.0.0.1:PORT/ address of a server thread on ``folder``."""
    servers = []

    def start(folder):
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def remote_folder(exported, tmp_path, url):
    """A weights folder whose manifest lists the model with ``url`` but ships no file."""
    folder = tmp_path / "remote"
    entry = pretrained.info(NAME, exported)
    entry["url"] = url
    pretrained.write_manifest({NAME: entry}, folder)
    return folder


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------- round trip
def test_export_writes_float32_weights_and_a_manifest_entry(trained, exported):
    run, result, report = trained
    file = exported / f"{NAME}.safetensors"
    tensors = load_file(str(file))
    assert set(tensors) == set(result.target.state_dict())  # buffers included
    assert "features.1.running_mean" in tensors
    assert all(t.dtype == torch.float32 for k, t in tensors.items()
               if not k.endswith("num_batches_tracked"))
    assert file.stat().st_size < 2e6
    assert pretrained.available(exported) == [NAME]
    entry = pretrained.info(NAME, exported)
    assert entry["file"] == file.name
    assert entry["sha256"] == pretrained.sha256_of(file)
    assert (entry["model"], entry["num_classes"]) == ("small-cnn", 10)
    assert entry["config"] == train.load_checkpoint(run)["config"]
    metrics = entry["metrics"]
    assert metrics["clean"] == report.accuracy["clean"] and 0 <= metrics["clean"] <= 1
    assert metrics["pgd10"] == report.accuracy["pgd10"]
    assert metrics["n"] == report.n == 32
    assert metrics["dataset"].startswith("synthetic")
    assert "PGD-10" in metrics["protocol"] and "32" in metrics["protocol"]
    assert "dynat" in entry["description"] and "url" not in entry


def test_load_gives_the_trained_model_in_eval_mode(trained, exported, images):
    model = pretrained.load(NAME, exported)
    assert not model.training
    assert torch.equal(logits(model, images), logits(trained[1].target, images))


def test_info_is_a_copy(exported):
    pretrained.info(NAME, exported)["metrics"]["clean"] = 2.0
    assert pretrained.info(NAME, exported)["metrics"]["clean"] <= 1


def test_table_lists_every_model(exported):
    table = pretrained.table(exported)
    assert NAME in table and "dynat" in table
    assert len(table.splitlines()) == 2 + len(pretrained.available(exported))


def test_export_adds_to_an_existing_manifest(trained, exported, tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(exported, folder)
    export_pretrained.export(trained[0], "second", out=folder, url="https://example.org/x")
    assert pretrained.available(folder) == sorted([NAME, "second"])
    assert pretrained.info("second", folder)["url"] == "https://example.org/x"
    second, first = (load_file(str(folder / f"{n}.safetensors")) for n in ("second", NAME))
    assert all(torch.equal(second[k], first[k]) for k in first)


# ----------------------------------------------------------------------------------- errors
def test_unknown_name_lists_the_available_ones(exported):
    with pytest.raises(ValueError, match=f"Unknown pretrained model 'nope'.*{NAME}"):
        pretrained.load("nope", exported)


def test_a_changed_file_is_refused(exported, tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(exported, folder)
    file = folder / f"{NAME}.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 1
    file.write_bytes(bytes(data))
    with pytest.raises(pretrained.ChecksumError, match="sha256.*Reinstall"):
        pretrained.load(NAME, folder)


def test_a_missing_file_without_url_is_a_clear_error(exported, tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(exported, folder)
    (folder / f"{NAME}.safetensors").unlink()
    with pytest.raises(pretrained.PretrainedError, match="missing.*no URL"):
        pretrained.load(NAME, folder)


def test_export_refuses_an_unfinished_run(trained, tmp_path):
    state = train.load_checkpoint(trained[0])
    state["epoch"] = 0
    train.save_checkpoint(tmp_path / "run" / train.CHECKPOINT, state)
    shutil.copy(trained[0] / "final.json", tmp_path / "run" / "final.json")
    with pytest.raises(ValueError, match="not finished"):
        export_pretrained.export(tmp_path / "run", NAME, out=tmp_path / "weights")
    assert not (tmp_path / "weights" / pretrained.MANIFEST).exists()


def test_export_refuses_a_bad_name(trained, tmp_path):
    with pytest.raises(ValueError, match="Invalid name"):
        export_pretrained.export(trained[0], "../up", out=tmp_path)


# ------------------------------------------------------------------------------ downloads
def test_a_listed_url_is_downloaded_into_the_cache(exported, tmp_path, serve, images,
                                                   monkeypatch, trained):
    url = serve(exported) + f"{NAME}.safetensors"
    folder = remote_folder(exported, tmp_path, url)
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    model = pretrained.load(NAME, folder)
    cached = pretrained.cached_path(pretrained.info(NAME, folder))
    assert cached.parent == tmp_path / "cache" and cached.exists()
    assert pretrained.sha256_of(cached) == pretrained.info(NAME, folder)["sha256"]
    assert list(cached.parent.iterdir()) == [cached]  # no temporary file left
    assert torch.equal(logits(model, images), logits(trained[1].target, images))


def test_a_cached_download_loads_offline(exported, tmp_path, serve, images):
    folder = remote_folder(exported, tmp_path, serve(exported) + f"{NAME}.safetensors")
    first = pretrained.load(NAME, folder, cache=tmp_path / "cache")
    entry = pretrained.info(NAME, folder)
    entry["url"] = f"http://127.0.0.1:{free_port()}/{NAME}.safetensors"  # server gone
    pretrained.write_manifest({NAME: entry}, folder)
    again = pretrained.load(NAME, folder, cache=tmp_path / "cache")
    assert torch.equal(logits(first, images), logits(again, images))


def test_server_down_is_a_clear_error(exported, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/{NAME}.safetensors"
    folder = remote_folder(exported, tmp_path, url)
    cache = tmp_path / "cache"
    with pytest.raises(pretrained.DownloadError) as err:
        pretrained.load(NAME, folder, cache=cache)
    message = str(err.value)
    assert url in message
    assert str(pretrained.cached_path(pretrained.info(NAME, folder), cache)) in message
    assert "copy it to that path" in message
    assert not cache.exists() or not any(cache.iterdir())


def test_a_url_serving_another_file_is_refused(exported, tmp_path, serve):
    other = tmp_path / "served"
    other.mkdir()
    (other / f"{NAME}.safetensors").write_bytes(b"not the weights")
    folder = remote_folder(exported, tmp_path, serve(other) + f"{NAME}.safetensors")
    cache = tmp_path / "cache"
    with pytest.raises(pretrained.ChecksumError, match="different file"):
        pretrained.load(NAME, folder, cache=cache)
    assert not any(cache.iterdir())  # nothing saved


def test_a_damaged_cached_file_is_refused(exported, tmp_path, serve):
    folder = remote_folder(exported, tmp_path, serve(exported) + f"{NAME}.safetensors")
    pretrained.load(NAME, folder, cache=tmp_path / "cache")
    cached = pretrained.cached_path(pretrained.info(NAME, folder), tmp_path / "cache")
    cached.write_bytes(cached.read_bytes()[:-1])
    with pytest.raises(pretrained.ChecksumError, match=f"Delete {cached}"):
        pretrained.load(NAME, folder, cache=tmp_path / "cache")


def test_the_cache_defaults_to_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(pretrained.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pretrained.cache_dir() == tmp_path / ".cache" / "dynat-lite"
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert pretrained.cache_dir() == tmp_path / "elsewhere"


# ------------------------------------------------------------------------ the shipped models
def test_the_shipped_folder_lists_every_file_it_holds():
    manifest = json.loads((pretrained.FOLDER / pretrained.MANIFEST).read_text())
    files = {p.name for p in pretrained.FOLDER.glob("*.safetensors")}
    assert files <= {entry["file"] for entry in manifest.values()}


@pytest.mark.parametrize("name", pretrained.available())
def test_every_shipped_model_loads_and_matches_its_sha256(name):
    entry = pretrained.info(name)
    file = pretrained.FOLDER / entry["file"]
    if not file.exists():
        pytest.skip(f"{name} is not shipped (download only: {entry.get('url')})")
    assert pretrained.sha256_of(file) == entry["sha256"]
    assert file.stat().st_size <= export_pretrained.MAX_MB * 1e6
    train.Config.from_dict(entry["config"])  # a config this version can read
    metrics = entry["metrics"]
    assert 0 <= metrics["clean"] <= 1 and isinstance(metrics["n"], int) and metrics["n"] > 0
    assert metrics["dataset"] and metrics["protocol"]
    model = pretrained.load(name)
    assert not model.training
    out = logits(model, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, entry["num_classes"]) and torch.isfinite(out).all()

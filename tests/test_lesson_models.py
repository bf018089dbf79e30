"""The lessons' shipped models (dynat_lite.lesson_models, tools/export_lesson_models.py): a tiny
run exported and installed again is loaded by ``fit`` as a finished run with the same history
and (half-precision) weights; the lessons and ``compare`` load shipped models unless told to
retrain; and every model a lesson trains on the cpu profile (and on smoke, lesson 06 aside) is
shipped, with its lesson's config."""
import json
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from dynat_lite import compare, lesson_models, notebook, pretrained, train

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import export_lesson_models  # noqa: E402

TINY = dict(n_train=128, n_test=32, epochs=1, batch_size=32, n_eval=16, eval_steps=2,
            device="cpu", diagnose_every=1)


def tiny(method="dynat", **settings):
    return train.config("smoke", method=method, **{**TINY, **settings})


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A tiny DYNAT run trained, then exported by the tool into a fresh folder as a shipped
    model of a lesson."""
    cfg = tiny()
    result = train.fit(cfg, out=tmp_path_factory.mktemp("run"), progress=False)
    folder = tmp_path_factory.mktemp("shipped")
    name = f"{cfg.method}-{lesson_models.key_hash(cfg)}"
    entry = export_lesson_models.export_one(name, cfg, ["03_dynat_training"], result, folder,
                                            n_pgd=8, trained_on="the synthetic set")
    (folder / lesson_models.MANIFEST).write_text(json.dumps({name: entry}))
    return cfg, result, folder, name


def test_a_cifar10_npz_is_the_dataset_cifar10():
    assert lesson_models.canonical_dataset("cifar10") == "cifar10"
    assert lesson_models.canonical_dataset("../data/cifar10.npz") == "cifar10"
    assert lesson_models.canonical_dataset("cifar100") == "cifar100"
    assert lesson_models.canonical_dataset("data/other.npz") == "data/other.npz"
    a = train.config("cpu", method="dynat", dataset="cifar10")
    b = train.config("cpu", method="dynat", dataset="../data/cifar10.npz", data_root="../data")
    assert lesson_models.key_hash(a) == lesson_models.key_hash(b)
    assert lesson_models.key_hash(a) != lesson_models.key_hash(
        train.config("cpu", method="dynat", dataset="cifar10", seed=1))


def test_an_installed_model_is_loaded_by_fit_with_its_history_and_weights(shipped, tmp_path):
    cfg, result, folder, name = shipped
    assert lesson_models.find(cfg, folder)[0] == name
    out = tmp_path / "lesson-run"
    assert lesson_models.install(cfg, out, folder) == name
    loaded = train.fit(cfg, out=out, progress=False)  # trains nothing: the run is finished
    assert loaded.history == json.loads(json.dumps(result.history))
    assert torch.load(out / train.CHECKPOINT, weights_only=True)["shipped"] == name
    entry = lesson_models.read_manifest(folder)[name]
    x = result.dataset.x_test
    for part in ("target", "guide"):
        trained = getattr(result, part)
        want = (export_lesson_models.half_round_trip(trained) if entry["half_precision"]
                else trained).eval()
        with torch.no_grad():
            torch.testing.assert_close(getattr(loaded, part).eval()(x), want(x))
    assert lesson_models.install(cfg, out, folder) is None  # a finished run is left alone


def test_no_shipped_model_for_another_config_and_a_damaged_file_is_refused(shipped, tmp_path):
    cfg, _, folder, name = shipped
    other = tiny(seed=1)
    assert lesson_models.find(other, folder) is None
    assert lesson_models.install(other, tmp_path / "a", folder) is None
    assert not (tmp_path / "a").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in folder.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / f"{name}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(pretrained.ChecksumError, match="RETRAIN = True"):
        lesson_models.install(cfg, tmp_path / "b", broken)


def test_the_export_keeps_half_precision_only_within_the_noise():
    assert export_lesson_models.within_noise(0.50, 0.51, 1000)      # SE 1.6 points
    assert not export_lesson_models.within_noise(0.50, 0.53, 1000)
    assert export_lesson_models.within_noise(0.0, 0.0, 10)


def test_a_lesson_loads_a_shipped_model_unless_it_retrains(shipped, tmp_path, monkeypatch,
                                                            capsys):
    cfg, _, folder, name = shipped
    monkeypatch.setattr(lesson_models, "FOLDER", folder)
    settings = dict(TINY)
    L = notebook.lesson("smoke", models_dir=tmp_path / "models", out_dir=tmp_path / "out",
                        progress=False, quiet=True, **settings)
    L.trained("dynat")
    assert f"loaded the shipped model {name}" in capsys.readouterr().out
    R = notebook.lesson("smoke", models_dir=tmp_path / "models2", out_dir=tmp_path / "out",
                        progress=False, quiet=True, retrain=True, **settings)
    R.trained("dynat")
    assert "loaded the shipped model" not in capsys.readouterr().out
    assert "shipped" not in torch.load(train.run_folder(cfg, tmp_path / "models2")
                                       / train.CHECKPOINT, weights_only=True)


def test_compare_loads_shipped_models_only_when_asked(shipped, tmp_path, monkeypatch):
    _, _, folder, name = shipped
    monkeypatch.setattr(lesson_models, "FOLDER", folder)
    lines = []
    settings = {k: v for k, v in TINY.items() if k != "device"}
    compare.compare(["dynat"], profile="smoke", out=tmp_path / "c", n_eval=8, n_check=0,
                    attacks=["clean"], overrides={**settings, "device": "cpu"},
                    log=lines.append, shipped=True)
    assert any(f"loaded the shipped model {name}" in line for line in lines)
    lines.clear()
    compare.compare(["dynat"], profile="smoke", out=tmp_path / "d", n_eval=8, n_check=0,
                    attacks=["clean"], overrides={**settings, "device": "cpu"},
                    log=lines.append)
    assert not any("loaded the shipped model" in line for line in lines)


# ------------------------------------------------------------------ what the kit ships
def test_every_shipped_model_is_one_a_lesson_trains_with_the_lessons_config():
    """A lesson whose config changed no longer finds its shipped model: this fails until the
    models are exported again (tools/export_lesson_models.py)."""
    manifest = lesson_models.read_manifest()
    wanted = export_lesson_models.unique_configs("cifar10")
    stale = sorted(set(manifest) - set(wanted))
    assert not stale, f"shipped models no lesson trains (a config changed?): {stale}"
    for name, entry in manifest.items():
        cfg, lessons = wanted[name]
        assert entry["lessons"] == lessons, name
        assert lesson_models.key(_shipped_config(entry)) == lesson_models.key(cfg), name


def _shipped_config(entry: dict) -> train.Config:
    """The Config a manifest entry was trained with (its dataset named as lessons name it)."""
    dataset = lesson_models.canonical_dataset(entry["config"]["dataset"])
    return train.Config.from_dict({**entry["config"], "dataset": dataset})


SHIPPED = [(profile, lesson) for profile, lessons in lesson_models.PROFILES.items()
           for lesson in lessons]


@pytest.mark.parametrize("profile, lesson", SHIPPED)
def test_every_model_a_lesson_trains_is_shipped(profile, lesson):
    manifest = lesson_models.read_manifest()
    settings = dict(dataset="cifar10") if profile == "cpu" else {}
    for cfg in lesson_models.lesson_configs(lesson, profile=profile, seed=0, **settings):
        name = f"{cfg.method}-{lesson_models.key_hash(cfg)}"
        assert name in manifest, (profile, cfg.method)
        assert manifest[name]["trained_on"] == lesson_models.TRAINED_ON[profile], name


def test_the_synthetic_images_of_the_smoke_models_are_the_ones_the_kit_generates():
    """The smoke models were trained on the synthetic set as ``data.load`` made it then: if the
    generator changes, they must be exported again (a lesson would load a model of other
    images)."""
    from dynat_lite import data

    entries = [e for e in lesson_models.read_manifest().values()
               if e["config"]["dataset"] == "synthetic"]
    assert entries, "no shipped smoke models"
    for entry in entries:
        c = entry["config"]
        ds = data.load("synthetic", n_train=c["n_train"], n_test=c["n_test"], seed=c["seed"])
        now = lesson_models.data_fingerprint(ds)
        then = entry["data"]
        assert now["labels_sha256"] == then["labels_sha256"], entry["file"]
        for stat in ("x_train_mean", "x_train_std", "x_test_mean", "x_test_std"):
            assert abs(now[stat] - then[stat]) < 1e-5, (entry["file"], stat)


def test_the_fingerprint_tells_another_generator_from_rounding():
    from dynat_lite import data

    ds = data.load("synthetic", n_train=256, n_test=64, seed=0)
    base = lesson_models.data_fingerprint(ds)
    rounded = data.Dataset(ds.name, ds.x_train.clone(), ds.y_train, ds.x_test, ds.y_test,
                           ds.classes)
    rounded.x_train.view(-1)[:50] += 1 / 255  # fifty pixels rounded the other way
    near = lesson_models.data_fingerprint(rounded)
    assert near["labels_sha256"] == base["labels_sha256"]
    assert all(abs(near[k] - base[k]) < 1e-5 for k in base if k != "labels_sha256")
    stronger = data.synthetic(n_train=256, n_test=64, seed=0, signal=0.13)
    assert abs(lesson_models.data_fingerprint(stronger)["x_train_std"] - base["x_train_std"]) > 1e-4
    reseeded = lesson_models.data_fingerprint(data.load("synthetic", n_train=256, n_test=64, seed=1))
    assert reseeded["labels_sha256"] != base["labels_sha256"]


def test_every_lesson_that_trains_is_shipped_on_cpu():
    assert set(lesson_models.PROFILES["cpu"]) == set(lesson_models.LESSONS)


def test_every_shipped_file_matches_its_sha256_and_loads():
    manifest = lesson_models.read_manifest()
    for name, entry in manifest.items():
        path = lesson_models.FOLDER / entry["file"]
        assert pretrained.sha256_of(path) == entry["sha256"], name
        tensors, history = lesson_models.load_file(name, entry)
        target, guide = lesson_models.split(tensors)
        cfg = _shipped_config(entry)
        nets = train.build(cfg, entry["num_classes"], torch.device("cpu"))
        nets.target.load_state_dict(target)
        assert (guide is None) == (nets.guide is None), name
        if guide is not None:
            nets.guide.load_state_dict(guide)
        assert len(history) == cfg.epochs


@pytest.mark.parametrize("lesson", sorted(lesson_models.LESSONS))
def test_each_lesson_names_its_shipped_methods_and_can_retrain(lesson):
    nb = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "RETRAIN = False" in params
    assert "RETRAIN" in code.replace(params, "")
    if lesson.startswith("06"):  # its lists are compare's
        assert "compare.DEFAULT_METHODS" in code and "compare.ABLATIONS" in code
        assert set(lesson_models.LESSONS[lesson]) == (
            set(compare.like_with_like(compare.DEFAULT_METHODS)) | set(compare.ABLATIONS))
    else:
        for method in lesson_models.LESSONS[lesson]:
            assert f'"{method}"' in code, f"{lesson} does not train {method}"

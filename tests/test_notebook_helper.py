"""dynat_lite.notebook.lesson: one call sets a lesson up, and lessons share their models."""
from __future__ import annotations

import json

import pytest
import torch

from dynat_lite import train
from dynat_lite.notebook import Lesson, lesson

# A run small enough to train in a second or two on a CPU.
TINY = dict(n_train=128, n_test=64, n_eval=16, batch_size=32, epochs=1, eval_steps=1)


def make(tmp_path, **settings) -> Lesson:
    return lesson("smoke", "synthetic", "cpu", 3, tmp_path / "out", tmp_path / "models",
                  progress=False, quiet=True, **{**TINY, **settings})


def test_lesson_builds_the_profile_config_dataset_and_device(tmp_path):
    L = make(tmp_path)
    expected = train.config("smoke", dataset="synthetic", device="cpu", seed=3,
                            data_root="../data", **TINY)
    assert L.cfg == expected
    assert L.device == torch.device("cpu")
    assert (len(L.ds.y_train), len(L.ds.y_test)) == (128, 64)
    assert L.classes == L.ds.classes and len(L.classes) == 10
    assert (tmp_path / "out").is_dir(), "the output folder is created"
    assert L.results == {"profile": "smoke", "dataset": L.ds.name, "seed": 3}


def test_none_means_the_profiles_value(tmp_path):
    L = lesson("smoke", None, "cpu", 0, tmp_path / "o", tmp_path / "m", progress=False,
               quiet=True, epochs=None, n_train=64, n_test=32)
    assert L.cfg.epochs == train.PROFILES["smoke"]["epochs"]
    assert L.cfg.dataset == train.PROFILES["smoke"]["dataset"]
    assert make(tmp_path, epochs=3).cfg.epochs == 3


def test_lesson_seeds_torch(tmp_path):
    make(tmp_path)
    a = torch.rand(3)
    make(tmp_path)
    assert torch.equal(a, torch.rand(3))


def test_summary_is_printed_unless_quiet(tmp_path, capsys):
    lesson("smoke", "synthetic", "cpu", 0, tmp_path / "o", tmp_path / "m", progress=False,
           **TINY)
    out = capsys.readouterr().out
    assert "profile smoke: small-cnn, 1 epochs of 128 images, batch 32, device cpu" in out
    make(tmp_path)
    assert capsys.readouterr().out == ""


def test_unknown_profile_or_setting_is_explained(tmp_path):
    with pytest.raises(ValueError, match="Unknown profile 'laptop'.*smoke"):
        lesson("laptop", None, "cpu", 0, tmp_path / "o", tmp_path / "m", quiet=True)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['epoch'\].*epochs"):
        make(tmp_path, epoch=2)
    with pytest.raises(ValueError, match="L.trained"):
        make(tmp_path, method="dynat")


def test_config_of_a_method_keeps_the_lessons_settings(tmp_path):
    L = make(tmp_path)
    cfg = L.config("pgd_at", steps=3, eps=None)
    assert cfg.method == "pgd_at" and cfg.steps == 3
    assert cfg.eps == L.cfg.eps and cfg.n_train == 128 and cfg.seed == 3


def test_trained_trains_once_then_loads_from_the_shared_folder(tmp_path, capsys):
    first = make(tmp_path).trained("standard")
    assert "training it now" in capsys.readouterr().out
    cfg = train.config("smoke", method="standard", dataset="synthetic", device="cpu", seed=3,
                       **TINY)
    assert (train.run_folder(cfg, tmp_path / "models") / train.CHECKPOINT).exists()
    assert len(first.history) == 1 and not first.target.training
    # Another lesson with the same parameters finds the model instead of training it.
    again = make(tmp_path).trained("standard")
    assert "loading the trained model" in capsys.readouterr().out
    for p, q in zip(first.target.state_dict().values(), again.target.state_dict().values()):
        assert torch.equal(p, q)
    # A different setting is a different model.
    make(tmp_path).trained("standard", lr=0.05)
    assert "training it now" in capsys.readouterr().out


def test_trained_with_other_data_uses_its_own_dataset(tmp_path):
    L = make(tmp_path)
    result = L.trained("standard", n_train=64)
    assert len(result.dataset.y_train) == 64 and len(L.ds.y_train) == 128


def test_generator_is_seeded(tmp_path):
    L = make(tmp_path)
    assert torch.equal(torch.rand(4, generator=L.generator()),
                       torch.rand(4, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(torch.rand(4, generator=L.generator(7)),
                       torch.rand(4, generator=torch.Generator().manual_seed(7)))


def test_save_results_writes_json_with_the_time(tmp_path, capsys):
    L = make(tmp_path)
    L.results["curve"] = torch.tensor([0.5, 0.25])
    assert L.save_results() is None  # the last line of a cell: nothing to echo
    path = L.results_file
    assert path == tmp_path / "out" / "results.json"
    saved = json.loads(path.read_text())
    assert saved["curve"] == [0.5, 0.25] and saved["profile"] == "smoke"
    assert saved["seconds"] >= 0
    assert "wrote" in capsys.readouterr().out
    L.results["bad"] = object()
    with pytest.raises(TypeError, match="JSON cannot store"):
        L.save_results(quiet=True)

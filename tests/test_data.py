import urllib.error

import numpy as np
import pytest
import torch

from dynat_lite import data


def test_synthetic_is_cifar_shaped_in_range_and_seeded():
    a = data.load("synthetic", n_train=200, n_test=50, seed=3)
    b = data.load("synthetic", n_train=200, n_test=50, seed=3)
    c = data.load("synthetic", n_train=200, n_test=50, seed=4)
    assert a.x_train.shape == (200, 3, 32, 32) and a.x_test.shape == (50, 3, 32, 32)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1
    assert a.num_classes == 10 and len(a.classes) == 10
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert torch.bincount(a.y_train, minlength=10).tolist() == [20] * 10


def test_synthetic_patterns_survive_a_horizontal_flip():
    p = data._class_patterns()
    assert torch.allclose(p, p.flip(-1), atol=1e-6)


def _write_npz(path, n_train=60, n_test=20, **override):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
                  y_train=np.arange(n_train) % 3, x_test=rng.integers(0, 256, (n_test, 32, 32, 3),
                                                                       dtype=np.uint8),
                  y_test=np.arange(n_test) % 3)
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_npz_loads_as_float_nchw_and_stratified_subsets_keep_proportions(tmp_path):
    arrays = _write_npz(tmp_path / "d.npz")
    ds = data.load(str(tmp_path / "d.npz"))
    assert ds.x_train.shape == (60, 3, 32, 32)
    assert torch.allclose(ds.x_train[5].permute(1, 2, 0) * 255,
                          torch.from_numpy(arrays["x_train"][5]).float())
    sub = data.load(str(tmp_path / "d.npz"), n_train=30, n_test=9, seed=1)
    assert len(sub.y_train) == 30 and len(sub.y_test) == 9
    # Plain NCHW layout, not channels-last views of the NHWC arrays (AutoAttack needs it).
    assert all(t.is_contiguous() for t in (ds.x_train, ds.x_test, sub.x_train, sub.x_test))
    assert torch.bincount(sub.y_train).tolist() == [10, 10, 10]
    assert torch.bincount(sub.y_test).tolist() == [3, 3, 3]
    # A subset is made of examples of the full set.
    full = {tuple(v) for v in ds.x_train.flatten(1)[:, :8].tolist()}
    assert all(tuple(v) in full for v in sub.x_train.flatten(1)[:, :8].tolist())


@pytest.mark.parametrize("override, match", [
    (dict(y_test=None), "lacks the arrays"),
    (dict(x_train=np.zeros((60, 32, 32, 3), dtype=np.float32)), "uint8"),
    (dict(x_train=np.zeros((60, 3, 32, 32), dtype=np.uint8)), "uint8 of shape"),
    (dict(y_train=np.zeros(59, dtype=np.int64)), "integers of shape"),
    (dict(y_train=np.full(60, -1)), "labels must lie"),
])
def test_bad_npz_raises_a_helpful_error(tmp_path, override, match):
    _write_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(data.DatasetError, match=match):
        data.load(str(tmp_path / "bad.npz"))


def test_missing_npz_and_unknown_names_raise(tmp_path):
    with pytest.raises(data.DatasetError, match="No such"):
        data.load(str(tmp_path / "nope.npz"))
    with pytest.raises(data.DatasetError, match="cifar10, cifar100, synthetic"):
        data.load("imagenet")


def test_failed_download_says_how_to_proceed_offline(tmp_path, monkeypatch):
    import torchvision

    def offline(root, train, download):
        (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"half an archive")
        raise urllib.error.URLError("Temporary failure in name resolution")

    (tmp_path / "mine.txt").write_text("a file that was there before")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(data.DatasetError, match="offline.*npz.*synthetic"):
        data.load("cifar10", root=tmp_path)
    # Nothing half-written is left behind, and nothing that was there is touched.
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_missing_cifar_without_download_raises(tmp_path):
    with pytest.raises(data.DatasetError, match="cifar100"):
        data.load("cifar100", root=tmp_path, download=False)


def test_augment_gives_padded_crops_or_their_mirrors():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g)
    out = data.augment(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        crops = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)
    assert data.augment(x, g, pad=0, flip=False).equal(x)


def test_batches_are_seeded_per_epoch_and_cover_the_data():
    x = torch.rand(100, 3, 32, 32)
    y = torch.arange(100)
    b = data.Batches(x, y, 32, seed=0, drop_last=False)
    assert len(b) == 4
    ys = torch.cat([yb for _, yb in b.epoch(0)])
    assert sorted(ys.tolist()) == list(range(100))
    first = [xb for xb, _ in b.epoch(1)]
    again = [xb for xb, _ in data.Batches(x, y, 32, seed=0, drop_last=False).epoch(1)]
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    other = [yb for _, yb in b.epoch(2)]
    assert not torch.equal(torch.cat(other), ys)
    assert len(data.Batches(x, y, 32)) == 3  # drop_last by default
    with pytest.raises(ValueError, match="batch_size"):
        data.Batches(x, y, 0)

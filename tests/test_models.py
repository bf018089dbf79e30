import pytest
import torch

from dynat_lite import models


@pytest.mark.parametrize("name, classes, count", [
    ("wrn-34-10", 10, 46_160_474),   # the WRN of TRADES / LBGAT / DYNAT
    ("wrn-28-10", 10, 36_479_194),
    ("resnet18", 10, 11_173_962),
])
def test_parameter_counts_match_the_literature(name, classes, count):
    assert models.count_parameters(models.create(name, classes)) == count


@pytest.mark.parametrize("name", ["small-cnn", "resnet18", "preact-resnet18"])
def test_models_map_images_to_logits(name):
    m = models.create(name, num_classes=100).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 100) and torch.isfinite(out).all()


def test_small_cnn_is_small():
    assert 200_000 < models.count_parameters(models.create("small-cnn")) < 400_000


def test_models_normalize_inside_themselves():
    m = models.create("small-cnn")
    x = torch.rand(2, 3, 32, 32)
    z = m.normalize(x)
    mean = torch.tensor(models.CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.CIFAR_STD).view(1, 3, 1, 1)
    assert torch.allclose(z, (x - mean) / std)
    # Mean and std are buffers, not trained parameters.
    assert all("normalize" not in n for n, _ in m.named_parameters())


def test_bad_model_requests_raise():
    with pytest.raises(ValueError, match="wrn-34-10.*small-cnn"):
        models.create("vgg16")
    with pytest.raises(ValueError, match="num_classes"):
        models.create("small-cnn", num_classes=1)
    with pytest.raises(ValueError, match="6n\\+4"):
        models.WideResNet(depth=30)

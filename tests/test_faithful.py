"""The switches that make a run faithful to the DYNAT authors' released loop: their guide network,
the target's extra clean forward, the first epoch's learning rate."""
import copy

import pytest
import torch
import torch.nn.functional as F

from dynat_lite import methods, models, train
from conftest import TinyNet

EPS, STEP, STEPS = 8 / 255, 2 / 255, 3


def _authors_step(guide, target, x, y, *, clean_forward: bool):
    """One batch of the authors' DYNAT loop, transcribed: labels from the guide, PGD on the target
    in eval mode (no random start here), the target back in train mode for its adversarial
    forward, then -- their line ``out_natural = model(x_natural)`` -- a clean forward whose output
    is unused. Returns the loss (its gradients are left in the networks)."""
    guide.train()
    labels = guide(x).argmax(1).detach()
    target.eval()
    x_adv = x.clone()
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(target(x_adv), labels)
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + STEP * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS).clamp(0, 1)
    target.train()
    logits_adv = target(x_adv)
    if clean_forward:
        target(x)  # out_natural, unused
    loss = F.cross_entropy(guide(x), y) + F.cross_entropy(logits_adv, labels)
    loss.backward()
    return loss.detach()


def _kit_step(guide, target, x, y, *, clean_forward: bool):
    """The same batch as the kit's training loop computes it (train_epoch's order)."""
    guide.train(), target.train()
    loss, _ = methods.dynat_loss(guide, target, x, y, eps=EPS, step_size=STEP, steps=STEPS,
                                 random_start=None)
    if clean_forward:
        train.clean_forward(target, x)
    loss.backward()
    return loss.detach()


def _nets():
    return TinyNet(seed=1).double(), TinyNet(seed=2).double()


def _batch():
    g = torch.Generator().manual_seed(3)
    return (torch.rand(16, 3, 32, 32, generator=g, dtype=torch.float64),
            torch.randint(0, 10, (16,), generator=g))


def _grads(net):
    return [p.grad.clone() for p in net.parameters()]


def _stats(net):
    return [net.bn.running_mean.clone(), net.bn.running_var.clone()]


def _run(step, clean_forward):
    guide, target = _nets()
    x, y = _batch()
    loss = step(guide, target, x, y, clean_forward=clean_forward)
    return loss, _grads(guide) + _grads(target), _stats(target)


def test_clean_forward_leaves_loss_and_gradients_unchanged():
    loss_off, grads_off, _ = _run(_kit_step, False)
    loss_on, grads_on, _ = _run(_kit_step, True)
    assert torch.equal(loss_off, loss_on)
    for a, b in zip(grads_off, grads_on):
        assert torch.equal(a, b)


def test_clean_forward_updates_running_statistics_as_the_authors_loop_does():
    for clean_forward in (False, True):
        loss_kit, grads_kit, stats_kit = _run(_kit_step, clean_forward)
        loss_ref, grads_ref, stats_ref = _run(_authors_step, clean_forward)
        torch.testing.assert_close(loss_kit, loss_ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(grads_kit + stats_kit, grads_ref + stats_ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # ... and the switch does change them: the clean images move the running mean.
    _, _, off = _run(_kit_step, False)
    _, _, on = _run(_kit_step, True)
    assert not torch.allclose(off[0], on[0])


def test_the_training_loop_applies_the_switch():
    cfg = dict(n_train=64, n_test=32, n_eval=16, epochs=1, batch_size=32, seed=0)
    plain = train.fit(train.config("smoke", **cfg), progress=False)
    forward = train.fit(train.config("smoke", target_clean_forward=True, **cfg), progress=False)
    a, b = plain.target.state_dict(), forward.target.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if "running_mean" in k)
    # The guide never sees the extra forward: after one step (a single batch) it is identical.
    one = dict(cfg, n_train=32)
    plain = train.fit(train.config("smoke", **one), progress=False)
    forward = train.fit(train.config("smoke", target_clean_forward=True, **one), progress=False)
    for k, v in plain.guide.state_dict().items():
        assert torch.equal(v, forward.guide.state_dict()[k])


def test_resnet18_cifar_has_resnet18s_parameters_and_an_8x8_final_map():
    plain, cifar = models.create("resnet18"), models.create("resnet18-cifar")
    assert models.count_parameters(plain) == models.count_parameters(cifar) == 11_173_962
    sizes = {}
    for name, net in (("plain", plain), ("cifar", cifar)):
        net.eval()
        out = net.layers(net.stem(torch.rand(2, 3, 32, 32)))
        sizes[name] = tuple(out.shape[-2:])
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert sizes == {"plain": (4, 4), "cifar": (8, 8)}
    # layer2 keeps the 32x32 resolution: stride 1 in the second stage's first block
    assert cifar.layers[2].conv1.stride == (1, 1) and plain.layers[2].conv1.stride == (2, 2)


def test_first_epoch_learning_rate_then_the_piecewise_schedule():
    cfg = train.config("paper")
    assert cfg.first_epoch_lr == 0.02 and cfg.target_clean_forward
    assert cfg.guide_model == "resnet18-cifar"
    lrs = [train.learning_rate(cfg, p) for p in (0.0, 0.99, 1.0, 74.99, 75.0, 89.99, 90.0)]
    assert lrs == pytest.approx([0.02, 0.02, 0.1, 0.1, 0.01, 0.01, 0.001], rel=1e-12)
    # Unset, the first epoch runs at cfg.lr as before.
    assert train.learning_rate(train.config("paper", first_epoch_lr=None), 0.5) == 0.1

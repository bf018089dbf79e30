"""The DYNAT step, checked piece by piece against the method as the paper describes it."""
import copy

import pytest
import torch
import torch.nn.functional as F

from dynat_lite import methods
from conftest import TinyNet

EPS = 8 / 255


def _pair():
    return TinyNet(seed=1), TinyNet(seed=2)


def _grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


def _dynat_grads(guide, target, x, y, beta):
    guide, target = copy.deepcopy(guide), copy.deepcopy(target)
    guide.train(), target.train()
    loss, out = methods.dynat_loss(guide, target, x, y, beta=beta, steps=3,
                                   generator=torch.Generator().manual_seed(0))
    loss.backward()
    return _grads(guide), _grads(target), out


def test_target_term_sends_no_gradient_into_the_guide(batch):
    x, y = batch
    guide, target = _pair()
    g1, t1, _ = _dynat_grads(guide, target, x, y, beta=1.0)
    g5, t5, _ = _dynat_grads(guide, target, x, y, beta=5.0)
    # The guide's gradient is that of CE(guide(x), y) alone, whatever beta weighs the target by.
    for a, b in zip(g1, g5):
        assert torch.equal(a, b)
    # ... and the target's gradient scales with beta (it has no other term).
    for a, b in zip(t1, t5):
        assert torch.allclose(5 * a, b, rtol=1e-3, atol=1e-5)  # float32 rounding
    assert any(a.abs().sum() > 0 for a in t1)


def test_guide_gradient_equals_that_of_its_clean_cross_entropy(batch):
    x, y = batch
    guide, target = _pair()
    g_dynat, _, _ = _dynat_grads(guide, target, x, y, beta=1.0)
    ref = copy.deepcopy(guide).train()
    F.cross_entropy(ref(x), y).backward()
    for a, b in zip(g_dynat, _grads(ref)):
        assert torch.allclose(a, b, atol=1e-6)


def test_loss_is_guide_ce_plus_beta_target_ce_on_dynamic_labels(batch):
    x, y = batch
    guide, target = _pair()
    loss, out = methods.dynat_loss(guide, target, x, y, beta=2.5, steps=2)
    assert torch.equal(out["labels"], out["guide_logits"].argmax(1))
    expected = (F.cross_entropy(out["guide_logits"], y)
                + 2.5 * F.cross_entropy(out["target_logits"], out["labels"]))
    assert torch.allclose(loss.detach(), expected, atol=1e-5)
    assert (out["x_adv"] - x).abs().max() <= EPS + 1e-6


def test_the_target_is_attacked_and_trained_on_the_guides_labels_not_y(batch):
    x, y = batch
    guide, target = _pair()
    with torch.no_grad():
        guide.fc.bias.fill_(0.0)
        guide.fc.bias[7] = 1e3  # the guide says "class 7" to everything
    _, out = methods.dynat_loss(guide, target, x, y, steps=2)
    assert (out["labels"] == 7).all()
    # x_adv maximizes CE to label 7, so it is what PGD on the target against 7 gives.
    from dynat_lite.attacks import pgd
    ref = pgd(target, x, torch.full_like(y, 7), steps=2, random_start="gaussian",
              generator=torch.Generator().manual_seed(0))
    _, out2 = methods.dynat_loss(guide, target, x, y, steps=2,
                                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(out2["x_adv"], ref)



def test_soft_labels_and_the_kl_target_loss_train_the_same_target(batch):
    """dynat_soft (CE to the guide's probabilities p) and dynat_kl (KL(p || softmax f_t)) differ
    by the entropy of p, which the target cannot move: the same adversarial examples, the same
    target gradient, losses apart by exactly that entropy."""
    x, y = batch
    guide, target = _pair()
    runs = {}
    for name in ("dynat_soft", "dynat_kl"):
        g, t = copy.deepcopy(guide).train(), copy.deepcopy(target).train()
        options = methods.get(name).defaults
        loss, out = methods.dynat_loss(g, t, x, y, steps=3, **options,
                                       generator=torch.Generator().manual_seed(0))
        loss.backward()
        runs[name] = (loss.detach(), out, _grads(t))
    (soft_loss, soft, soft_grads), (kl_loss, kl, kl_grads) = runs["dynat_soft"], runs["dynat_kl"]
    assert torch.equal(soft["x_adv"], kl["x_adv"])
    for a, b in zip(soft_grads, kl_grads):
        assert torch.allclose(a, b, atol=1e-6)
    p = F.softmax(soft["guide_logits"].detach(), 1)
    entropy = -(p * p.log()).sum(1).mean()
    assert torch.allclose(soft_loss - kl_loss, entropy, atol=1e-5)

def test_static_label_source_uses_ground_truth(batch):
    x, y = batch
    guide, target = _pair()
    _, out = methods.dynat_loss(guide, target, x, y, steps=1, label_source="static")
    assert torch.equal(out["labels"], y)


def test_target_outer_loss_is_computed_in_train_mode(batch):
    x, y = batch
    guide, target = _pair()
    guide.train(), target.train()
    before = target.bn.running_mean.clone()
    methods.dynat_loss(guide, target, x, y, steps=2)
    assert target.training and guide.training
    assert not torch.equal(target.bn.running_mean, before)  # train-mode forward on x_adv


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_registered_method_gives_a_finite_differentiable_loss(name, batch):
    x, y = batch
    guide, target = _pair()
    method = methods.get(name)
    options = dict(steps=2, generator=torch.Generator().manual_seed(0)) if method.attack else {}
    loss, out = method(guide, target, x, y, **options)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in target.parameters())
    assert out["x_adv"].shape == x.shape and out["labels"].shape == y.shape


@pytest.mark.parametrize("kwargs", [dict(label_source="soft-ish"), dict(target_loss="hinge")])
def test_bad_ablation_switches_raise(batch, kwargs):
    x, y = batch
    guide, target = _pair()
    with pytest.raises(ValueError, match="Valid"):
        methods.dynat_loss(guide, target, x, y, steps=1, **kwargs)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="dynat"):
        methods.get("dynamic")

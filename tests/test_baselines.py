"""The baselines and DYNAT's ablations: each loss on a tiny batch, and the per-example weights."""
import copy

import pytest
import torch
import torch.nn.functional as F

from dynat_lite import attacks, methods, train
from conftest import TinyNet

GUIDED = sorted(n for n, m in methods.METHODS.items() if m.uses_guide)
SINGLE = sorted(n for n, m in methods.METHODS.items() if not m.uses_guide)
# Methods whose target term must not train the guide (the guide learns from CE(f_g(x), y) only).
GUIDE_ONLY_CE = sorted(n for n in GUIDED if n.startswith("dynat"))


def _pair():
    return TinyNet(seed=1).train(), TinyNet(seed=2).train()


def _run(name, guide, target, x, y, **options):
    method = methods.get(name)
    if method.attack:
        options = {"steps": 2, "generator": torch.Generator().manual_seed(0), **options}
    return method(guide, target, x, y, **options)


def _grads(model):
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_loss_is_finite_and_reaches_the_right_networks(name, batch):
    x, y = batch
    guide, target = _pair()
    loss, out = _run(name, guide, target, x, y)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    assert out["labels"].shape == y.shape and not out["labels"].is_floating_point()
    assert (out["x_adv"] - x).abs().max() <= 8 / 255 + 1e-6
    for key in ("guide_loss", "target_loss"):
        if key in out:
            assert not out[key].requires_grad and torch.isfinite(out[key])
    loss.backward()
    assert all(g is not None and torch.isfinite(g).all() for g in _grads(target))
    assert any(g.abs().sum() > 0 for g in _grads(target))
    if methods.get(name).uses_guide:
        assert any(g is not None and g.abs().sum() > 0 for g in _grads(guide))
    else:
        assert all(g is None for g in _grads(guide))  # the guide is not even used


@pytest.mark.parametrize("name", GUIDE_ONLY_CE)
def test_dynat_variants_train_the_guide_only_with_its_clean_cross_entropy(name, batch):
    x, y = batch
    guide, target = _pair()
    ref = copy.deepcopy(guide)
    loss, _ = _run(name, guide, target, x, y, run_fraction=1.0) if methods.get(
        name).scheduled else _run(name, guide, target, x, y)
    loss.backward()
    F.cross_entropy(ref(x), y).backward()
    for a, b in zip(_grads(guide), _grads(ref)):
        assert torch.allclose(a, b, atol=1e-6)


def test_lbgat_pulls_the_guide_towards_the_target(batch):
    x, y = batch
    guide, target = _pair()
    ref = copy.deepcopy(guide)
    loss, _ = _run("lbgat", guide, target, x, y)
    loss.backward()
    F.cross_entropy(ref(x), y).backward()
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(_grads(guide), _grads(ref)))


def test_lbgat_trades_adds_the_kl_term(batch):
    x, y = batch
    guide, target = _pair()
    plain, _ = _run("lbgat", copy.deepcopy(guide), copy.deepcopy(target), x, y)
    with_kl, _ = _run("lbgat_trades", guide, target, x, y)
    assert with_kl.item() > plain.item()  # KL >= 0, times beta = 6


def test_trades_with_beta_zero_is_clean_cross_entropy(batch):
    x, y = batch
    target = TinyNet(seed=2).train()
    ref = copy.deepcopy(target)
    loss, _ = methods.trades_loss(target, x, y, beta=0.0, steps=2)
    loss.backward()
    expected = F.cross_entropy(ref(x), y)
    expected.backward()
    assert torch.allclose(loss, expected, atol=1e-6)
    for a, b in zip(_grads(target), _grads(ref)):
        assert torch.allclose(a, b, atol=1e-6)


def test_pgd_with_kappa_counts_surviving_iterates(batch):
    x, _ = batch
    net = TinyNet().eval()
    y = net(x).argmax(1)  # every point starts correctly classified
    gen = lambda: torch.Generator().manual_seed(3)
    x_adv, kappa = attacks.pgd_with_kappa(net, x, y, steps=5, random_start=None, generator=gen())
    assert torch.equal(x_adv, attacks.pgd(net, x, y, steps=5, random_start=None))
    assert ((kappa >= 1) & (kappa <= 5)).all()  # the start point is still correct
    wrong = (y + 1) % 10
    _, kappa_wrong = attacks.pgd_with_kappa(net, x, wrong, steps=5, random_start=None)
    assert kappa_wrong[0] <= kappa[0] and (kappa_wrong <= 5).all()


def test_gair_weights_are_normalized_and_favour_points_near_the_boundary():
    kappa = torch.tensor([0., 1., 2., 3., 5., 8., 10., 10.])
    for func in methods.GAIR_FUNCTIONS:
        w = methods.gair_weights(kappa, steps=10, func=func)
        assert torch.allclose(w.mean(), torch.tensor(1.0))
        assert (w[1:] <= w[:-1] + 1e-7).all() and w[0] > w[-1]  # fewer steps survived: heavier


def test_mail_weights_grow_with_the_probabilistic_margin():
    y = torch.zeros(3, dtype=torch.long)
    logits = torch.tensor([[5., 0., 0.], [0., 0., 0.], [0., 5., 0.]])  # safe, unsure, wrong
    margin = methods.probabilistic_margin(logits, y)
    assert margin[0] < 0 < margin[2] and abs(margin[1]) < 1e-6
    w = methods.mail_weights(logits, y)
    assert (w[:-1] < w[1:]).all() and ((w > 0) & (w < 3)).all()


@pytest.mark.parametrize("name,plain", [("gairat", "pgd_at"), ("mail", "pgd_at"),
                                        ("dynat_gairat", "dynat")])
def test_reweighting_waits_for_the_burn_in(name, plain, batch):
    x, y = batch
    guide, target = _pair()
    opts = {"random_start": None}
    before, out_before = _run(name, copy.deepcopy(guide), copy.deepcopy(target), x, y,
                              run_fraction=0.1, **opts)
    reference, _ = _run(plain, copy.deepcopy(guide), copy.deepcopy(target), x, y, **opts)
    assert "weights" not in out_before
    assert torch.allclose(before, reference, atol=1e-5)
    after, out_after = _run(name, guide, target, x, y, run_fraction=0.9, **opts)
    assert out_after["weights"].shape == y.shape
    if name != "mail":  # GAIR weights have mean 1; MAIL's are 3 sigmoid(...), unnormalized
        assert torch.allclose(out_after["weights"].mean(), torch.tensor(1.0), atol=1e-5)


def test_dynat_ablation_arguments(batch):
    x, y = batch
    guide, target = _pair()
    gen = lambda: torch.Generator().manual_seed(0)
    _, soft = methods.dynat_loss(guide, target, x, y, steps=1, label_source="soft",
                                 generator=gen())
    probs = F.softmax(soft["guide_logits"], 1)
    assert torch.allclose(soft["target_loss"],
                          F.cross_entropy(soft["target_logits"], probs), atol=1e-5)
    assert torch.equal(soft["labels"], probs.argmax(1))
    # (the attack sees the target before the loss's train-mode forward updates its BatchNorm)
    frozen = copy.deepcopy(target)
    _, inner_y = methods.dynat_loss(guide, target, x, y, steps=2, inner="y", generator=gen())
    assert torch.equal(inner_y["x_adv"], attacks.pgd(frozen, x, y, steps=2,
                                                     random_start="gaussian", generator=gen()))
    frozen = copy.deepcopy(target)
    _, inner_kl = methods.dynat_loss(guide, target, x, y, steps=2, inner="kl", generator=gen())
    assert torch.equal(inner_kl["x_adv"], attacks.pgd(frozen, x, None, steps=2, loss="kl",
                                                      random_start="gaussian", generator=gen()))
    _, mse = methods.dynat_loss(guide, target, x, y, steps=1, target_loss="mse")
    assert torch.allclose(mse["target_loss"],
                          F.mse_loss(mse["target_logits"], mse["guide_logits"]), atol=1e-6)
    with pytest.raises(ValueError, match="inner objective"):
        methods.dynat_loss(guide, target, x, y, inner="nonsense")


def test_option_defaults_follow_the_papers():
    assert methods.get("pgd_at").option_default("random_start") == "uniform"
    assert methods.get("gairat").option_default("random_start") == "uniform"
    assert methods.get("trades").option_default("beta") == 6.0
    assert methods.get("mart").option_default("beta") == 6.0
    assert methods.get("lbgat_trades").option_default("beta") == 6.0
    assert methods.get("dynat_gairat").option_default("beta") == 1.0


def test_the_training_loop_passes_the_run_fraction(monkeypatch):
    seen = []

    def recording_loss(target, x, y, run_fraction=None, **options):
        seen.append(run_fraction)
        return methods.pgd_at_loss(target, x, y, **options)

    monkeypatch.setitem(methods.METHODS, "recording", methods.Method(
        "recording", recording_loss, uses_guide=False, scheduled=True))
    cfg = train.config("smoke", method="recording", n_train=64, n_test=16, n_eval=16,
                       epochs=2, batch_size=32, steps=1)
    train.fit(cfg, progress=False)
    assert seen == [0.0, 0.0, 0.5, 0.5]

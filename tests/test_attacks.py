"""Property tests of the attacks on a tiny random network."""
import pytest
import torch

from dynat_lite import attacks

EPS = 8 / 255


@pytest.mark.parametrize("loss", ["ce", "cw", "kl"])
@pytest.mark.parametrize("start", ["uniform", "gaussian", None])
def test_pgd_stays_in_eps_ball_and_image_range(tiny_net, batch, loss, start):
    x, y = batch
    x = x.clone()
    x[0] = 0.0  # corners of the image range, where the clamp to [0, 1] matters
    x[1] = 1.0
    x_adv = attacks.pgd(tiny_net, x, y, eps=EPS, step_size=3 / 255, steps=5, loss=loss,
                        random_start=start, generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)  # it did move


@pytest.mark.parametrize("start", ["uniform", "gaussian", None])
def test_pgd_with_zero_eps_returns_x(tiny_net, batch, start):
    x, y = batch
    x_adv = attacks.pgd(tiny_net, x, y, eps=0.0, steps=5, random_start=start)
    assert torch.equal(x_adv, x)


@pytest.mark.parametrize("loss", ["ce", "cw", "kl"])
def test_pgd_loss_rises_over_the_steps(tiny_net, batch, loss):
    x, y = batch
    values = [v.sum().item() for _, v in attacks.pgd_iterates(
        tiny_net, x, y, eps=EPS, step_size=1 / 255, steps=8, loss=loss, random_start=None)]
    assert len(values) == 9
    assert values[-1] > values[0]
    # Sign steps need not be monotone, but the loss should rise at most steps.
    rises = sum(b >= a for a, b in zip(values, values[1:]))
    assert rises >= 6


def test_pgd_iterates_visits_the_points_pgd_returns(tiny_net, batch):
    x, y = batch
    kwargs = dict(eps=EPS, step_size=2 / 255, steps=4, random_start="uniform")
    final = attacks.pgd(tiny_net, x, y, generator=torch.Generator().manual_seed(3), **kwargs)
    points = [p for p, _ in attacks.pgd_iterates(
        tiny_net, x, y, generator=torch.Generator().manual_seed(3), **kwargs)]
    assert torch.equal(points[-1], final)


def test_pgd_is_deterministic_given_a_generator(tiny_net, batch):
    x, y = batch
    a = attacks.pgd(tiny_net, x, y, generator=torch.Generator().manual_seed(5))
    b = attacks.pgd(tiny_net, x, y, generator=torch.Generator().manual_seed(5))
    c = attacks.pgd(tiny_net, x, y, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("train_mode", [True, False])
def test_attacks_restore_the_model_mode(tiny_net, batch, train_mode):
    x, y = batch
    tiny_net.train(train_mode)
    attacks.pgd(tiny_net, x, y, steps=2)
    assert tiny_net.training is train_mode
    attacks.fgsm(tiny_net, x, y)
    assert tiny_net.training is train_mode
    for _ in attacks.pgd_iterates(tiny_net, x, y, steps=2):
        assert tiny_net.training is False  # attacks run in eval mode
    assert tiny_net.training is train_mode


def test_attacks_run_in_eval_mode_and_leave_batchnorm_stats_alone(tiny_net, batch):
    x, y = batch
    tiny_net.train()
    before = tiny_net.bn.running_mean.clone()
    attacks.pgd(tiny_net, x, y, steps=3)
    assert torch.equal(tiny_net.bn.running_mean, before)


def test_no_gradient_leaks_out(tiny_net, batch):
    x, y = batch
    x = x.clone().requires_grad_(True)
    x_adv = attacks.pgd(tiny_net, x, y, steps=3)
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x.grad is None
    assert all(p.grad is None for p in tiny_net.parameters())


def test_fgsm_takes_one_full_step(tiny_net, batch):
    x, y = batch
    x = x.clamp(0.1, 0.9)  # away from the borders so no clamping happens
    x_adv = attacks.fgsm(tiny_net, x, y, eps=EPS)
    assert torch.allclose((x_adv - x).abs(), torch.full_like(x, EPS), atol=1e-6)


def test_cw_loss_is_the_margin():
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    y = torch.tensor([1, 0])
    assert torch.allclose(attacks.attack_loss(logits, y, "cw"), torch.tensor([-3.0, 3.0]))


@pytest.mark.parametrize("bad, match", [
    (lambda x: x * 2, r"\[0, 1\]"),
    (lambda x: x - 0.5, r"\[0, 1\]"),
    (lambda x: x[0], "shape"),
    (lambda x: (x * 255).to(torch.uint8), "float"),
])
def test_bad_images_raise(tiny_net, batch, bad, match):
    x, y = batch
    with pytest.raises(ValueError, match=match):
        attacks.pgd(tiny_net, bad(x), y)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1), "eps"), (dict(eps=8), "eps"), (dict(step_size=2.0), "step_size"),
    (dict(steps=-1), "steps"), (dict(steps=2.5), "steps"), (dict(loss="hinge"), "Valid"),
    (dict(random_start="normal"), "Valid"),
])
def test_bad_budgets_raise(tiny_net, batch, kwargs, match):
    x, y = batch
    with pytest.raises(ValueError, match=match):
        attacks.pgd(tiny_net, x, y, **kwargs)


def test_bad_labels_raise(tiny_net, batch):
    x, y = batch
    with pytest.raises(ValueError, match="Labels"):
        attacks.pgd(tiny_net, x, y[:3])
    with pytest.raises(ValueError, match="Labels"):
        attacks.pgd(tiny_net, x, y.float())

"""The fast training attack gives the losses what the plain one gives: on the CPU exactly for a
model without batch norms to fold and within float tolerance for one with them (fast.folded),
within bf16 tolerance on CUDA (skipped without a GPU). Plus the pieces it is built from."""
import pytest
import torch

from conftest import TinyNet
from dynat_lite import attacks, bench, data, fast, methods, models, train

BUDGET = dict(eps=8 / 255, step_size=2 / 255, steps=3)


def fast_dynat_loss(guide, target, x, y, *, eps, step_size, steps, generator=None,
                    random_start="gaussian", **options):
    """methods.dynat_loss with the fast attack, as the training step runs it."""
    attack = fast.FastPGD(eps=eps, step_size=step_size, steps=steps, random_start=random_start,
                          generator=generator)
    return methods.dynat_loss(guide, target, x, y, attack=attack, **options)


def _pair(seed=0):
    return TinyNet(seed=seed), TinyNet(seed=seed + 1)


def _loss_and_grads(loss_fn, batch, seed=0, **options):
    guide, target = _pair()
    x, y = batch
    generator = torch.Generator().manual_seed(seed)
    loss, out = loss_fn(guide, target, x, y, generator=generator, **BUDGET, **options)
    loss.backward()
    grads = [p.grad.clone() for p in (*guide.parameters(), *target.parameters())]
    return loss.detach(), out, grads, (guide, target)


@pytest.mark.parametrize("options", [{}, {"label_source": "static"}, {"target_loss": "kl"},
                                     {"beta": 3.0, "random_start": "uniform"}])
@pytest.mark.parametrize("quick_loss", [fast_dynat_loss, fast.dynat_loss])
def test_fast_step_equals_plain_step_exactly_on_cpu(batch, options, quick_loss):
    plain = _loss_and_grads(methods.dynat_loss, batch, **options)
    quick = _loss_and_grads(quick_loss, batch, **options)
    assert torch.equal(plain[0], quick[0])
    for key in ("x_adv", "labels", "guide_loss", "target_loss"):
        assert torch.equal(plain[1][key], quick[1][key]), key
    for a, b in zip(plain[2], quick[2]):
        assert torch.equal(a, b)


def test_fast_step_restores_modes_and_requires_grad(batch):
    *_, (guide, target) = _loss_and_grads(fast_dynat_loss, batch)
    assert guide.training and target.training
    assert all(p.requires_grad for p in (*guide.parameters(), *target.parameters()))


def test_attack_computes_no_weight_gradients(batch):
    """The attack differentiates with respect to the input only: parameters get no .grad."""
    _, target = _pair()
    x, y = batch
    x_adv = fast.pgd_ce(target, x, y, **BUDGET)
    assert all(p.grad is None for p in target.parameters())
    assert not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1


ATTACKING = sorted(n for n, m in methods.METHODS.items() if m.attack)


def _one_epoch(method: str, **settings) -> tuple[dict, list[torch.Tensor]]:
    """One smoke epoch of ``method`` on 64 synthetic images: its record and the weights after."""
    ds = data.load("synthetic", n_train=64, n_test=32, seed=0)
    cfg = train.config("smoke", method=method, n_train=64, n_test=32, batch_size=32, steps=1,
                       **settings)
    nets = train.prepare(cfg, train.build(cfg, 10, torch.device("cpu")), torch.device("cpu"))
    optimizer = train.make_optimizer(cfg, nets)
    batches = data.Batches(ds.x_train, ds.y_train, cfg.batch_size, seed=cfg.seed)
    record = train.train_epoch(cfg, nets, optimizer, batches, 0)
    return record, [p.detach().clone() for p in nets.parameters()]


@pytest.mark.parametrize("method", ATTACKING)
def test_train_epoch_is_the_same_with_and_without_the_fast_step(method):
    weights = [_one_epoch(method, fast=use_fast) for use_fast in (True, False)]
    # The same numbers within float tolerance: on the CPU the fast attack runs the target with
    # its batch norms folded into the convolutions (fast.folded), which rounds differently; where
    # a pixel's gradient is within rounding of 0 its sign, and so its PGD step, can flip, which
    # moves the weights after the epoch (~0.1 to 1) by up to 1.4e-4 (measured with one thread and
    # with two, over every method).
    (fast_record, fast_weights), (plain_record, plain_weights) = weights
    for key, value in plain_record.items():
        if key != "steps":
            assert fast_record[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for a, b in zip(fast_weights, plain_weights):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=5e-4)


def test_without_folding_the_fast_epoch_is_the_plain_one_bit_for_bit():
    weights = [_one_epoch("dynat", fast=use_fast, fold_batchnorm=False)
               for use_fast in (True, False)]
    assert weights[0][0] == weights[1][0]
    assert all(torch.equal(a, b) for a, b in zip(weights[0][1], weights[1][1]))


def _with_running_stats(model):
    """``model`` after two train-mode forwards (running statistics away from 0 and 1)."""
    g = torch.Generator().manual_seed(3)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(32, 3, 32, 32, generator=g))
    return model.eval()


@pytest.mark.parametrize("name", ["small-cnn", "resnet18"])
def test_folded_model_is_the_same_function_and_leaves_the_model_alone(name):
    torch.manual_seed(0)
    model = _with_running_stats(models.create(name))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    twin = fast.folded(model)
    assert twin is not model and not twin.training
    assert sum(isinstance(m, fast.FoldedConv) for m in twin.modules()) >= 1
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in twin.modules()) < n_bn
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    grads = []
    for net in (model, twin):
        xx = x.clone().requires_grad_(True)
        logits = net(xx)
        grads.append((logits.detach(), torch.autograd.grad(logits.logsumexp(1).sum(), xx)[0]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-4, atol=1e-5)
    # The input gradient, as a whole: rounding alone leaves ~4e-7 of its norm; a ReLU whose input
    # is within rounding of 0 in one network and not in the other routes the gradient otherwise
    # at a few pixels (3e-3 of the norm for the small CNN here).
    (_, folded_grad), (_, plain_grad) = grads[1], grads[0]
    assert (folded_grad - plain_grad).norm() <= 1e-2 * plain_grad.norm()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the model was changed"
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn
    assert twin.fc.weight is model.fc.weight  # unfolded layers are shared, not copied


def test_a_model_without_conv_bn_pairs_in_a_sequential_is_not_copied(tiny_net):
    assert fast.folded(tiny_net.eval()) is tiny_net


def test_the_folded_attack_finds_the_plain_attacks_points():
    """One step of FastPGD on the CPU (folded target) and of attacks.PGD (the model as it is):
    the same adversarial images, but where a pixel's gradient is so close to 0 that rounding
    flips its sign. (Over several steps a flipped pixel starts the next step elsewhere; the
    training-level test above bounds what that does to a run.)"""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        model = _with_running_stats(models.create("small-cnn"))
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    budget = dict(eps=8 / 255, step_size=2 / 255, steps=1, random_start=None)
    quick = fast.FastPGD(**budget)(model, x, y)
    plain = attacks.PGD(**budget)(model, x, y)
    same = torch.isclose(quick, plain, atol=1e-6)
    assert same.float().mean() >= 0.999


@pytest.mark.parametrize("use_fast", [True, False])
def test_the_training_step_hands_the_losses_the_fast_attack_exactly_when_asked(use_fast):
    cfg = train.config("smoke", eps=6 / 255, step_size=1 / 255, steps=4, fast=use_fast)
    generator = torch.Generator()
    attack = train.inner_attack(cfg, torch.device("cpu"), generator)
    assert isinstance(attack, attacks.PGD)
    assert isinstance(attack, fast.FastPGD) is use_fast
    assert (attack.eps, attack.step_size, attack.steps, attack.random_start) == (
        cfg.eps, cfg.step_size, cfg.steps, cfg.random_start)
    assert attack.generator is generator
    if use_fast:  # one process on the CPU: its own batch, no CUDA graph
        assert attack.shard == (0, 1) and not attack.graph


def test_an_attack_and_a_budget_together_are_refused(batch):
    x, y = batch
    guide, target = _pair()
    with pytest.raises(ValueError, match="attack carries its own budget"):
        methods.get("dynat")(guide, target, x, y, attack=attacks.PGD(steps=1), steps=3)


@pytest.mark.parametrize("kind", ["gaussian", "uniform", None])
def test_sharded_start_points_make_up_the_global_one(batch, kind):
    x, _ = batch
    whole = fast.start_point(x, 8 / 255, kind, torch.Generator().manual_seed(3))
    halves = [fast.start_point(x[r * 8:(r + 1) * 8], 8 / 255, kind,
                               torch.Generator().manual_seed(3), shard=(r, 2)) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), whole)


def test_reference_step_computes_nearly_the_same_loss(batch):
    """The reference is slower, not different: same labels, same loss up to its unprojected
    random start."""
    x, y = batch
    torch.manual_seed(0)
    guide, target = _pair()
    ref = bench.reference_dynat_loss(guide, target, x, y, **BUDGET)
    quick, *_ = _loss_and_grads(fast_dynat_loss, batch)
    assert ref.item() == pytest.approx(quick.item(), rel=0.05)


def test_reference_batches_are_augmented_copies():
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8)
    xb, yb = next(bench.reference_batches(x, y, 4, device="cpu", workers=0))
    assert xb.shape == (4, 3, 32, 32) and 0 <= xb.min() and xb.max() <= 1
    assert set(yb.tolist()) <= set(range(8))


def test_float32_islands_under_bf16_autocast():
    model = models.create("small-cnn").eval()
    x = torch.rand(2, 3, 32, 32)
    stem = model.stem(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        island = models.float32(model.stem, x)
        logits = model(x)
    assert island.dtype == torch.bfloat16 and torch.equal(island, stem.to(torch.bfloat16))
    assert logits.dtype == torch.float32
    assert torch.equal(models.float32(model.stem, x), stem)  # outside autocast: a plain call


def test_bench_flop_count_matches_the_issue_and_is_linear_in_steps():
    wrn = bench.step_flops("wrn-34-10", "resnet18", 10)
    assert 280e9 < wrn < 340e9  # "about 310 GFLOP per image"
    f0, f1, f5 = (bench.step_flops("resnet18", "resnet18", s) for s in (0, 1, 5))
    assert f5 - f0 == 5 * (f1 - f0) > 0


def test_bench_runs_end_to_end_on_a_small_target(capsys):
    figures = bench.run("cpu", compile="off", targets=("small-cnn",), guide="small-cnn",
                        lesson_iters=1)
    row, = figures["rows"]
    assert row["target"] == "small-cnn" and row["fast_img_s"] > 0 and row["speedup"] > 0
    lessons = figures["lesson_rows"]
    assert [(r["method"], r["fold_batchnorm"]) for r in lessons] == [
        ("dynat", False), ("dynat", True), ("pgd_at", False), ("pgd_at", True)]
    for r in lessons:
        assert r["profile"] == "cpu" and r["img_s"] > 0 and 0 < r["fraction_of_peak"]
        assert (r["batch"], r["pgd_steps"]) == (train.PROFILES["cpu"]["batch_size"],
                                                train.PROFILES["cpu"]["steps"])
    out = capsys.readouterr().out
    assert "small-cnn" in out and "The lessons' step (cpu profile" in out


def test_a_steps_flops_count_the_passes_its_method_makes():
    cfg = train.config("cpu", method="dynat")
    attack, trained = bench.pass_flops("small-cnn", True), bench.pass_flops("small-cnn", False)
    assert bench.method_flops(cfg) == cfg.steps * attack + 2 * trained  # guide = target's model
    pgd_at = train.config("cpu", method="pgd_at")
    assert bench.method_flops(pgd_at) == pgd_at.steps * attack + trained
    assert bench.method_flops(train.config("cpu", method="standard")) == trained


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_step_matches_plain_within_bf16_tolerance_on_cuda():
    torch.manual_seed(0)
    guide = models.create("resnet18").cuda()
    target = models.create("resnet18").cuda()
    x = torch.rand(64, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (64,), device="cuda")
    gen = torch.Generator(device="cuda")
    plain, _ = methods.dynat_loss(guide, target, x, y, generator=gen.manual_seed(0), **BUDGET)
    fast.prepare(guide, channels_last=True)
    fast.prepare(target, channels_last=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        quick, out = fast_dynat_loss(guide, target, fast.to_memory_format(x, True), y,
                                     generator=gen.manual_seed(0), **BUDGET)
    assert quick.dtype == torch.float32
    assert quick.item() == pytest.approx(plain.item(), rel=0.03)
    assert (out["x_adv"] - x).abs().max().item() <= 8 / 255 + 1e-6


def test_cuda_graph_attack_asks_for_a_cuda_device(batch):
    x, y = batch
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        fast.pgd_ce(TinyNet(), x, y, graph=True, **BUDGET)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_graph_attack_replays_the_eager_attack_with_new_weights_and_inputs():
    """The graph reads the weights, the batch, the labels and the start where the eager attack
    does: after an in-place weight update and on a new batch it still gives the same x_adv."""
    torch.manual_seed(0)
    model = models.create("resnet18").cuda()
    fast.prepare(model, channels_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(3):
        x = fast.to_memory_format(torch.rand(32, 3, 32, 32, device="cuda"), True)
        y = torch.randint(0, 10, (32,), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            eager, graphed = (fast.pgd_ce(model, x, y, generator=torch.Generator("cuda")
                                          .manual_seed(step), graph=g, **BUDGET)
                              for g in (False, True))
        assert (graphed - x).abs().max().item() <= BUDGET["eps"] + 1e-6
        same = (eager == graphed).float().mean().item()
        assert same > 0.999, (step, same)
        assert not torch.equal(graphed, x)
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()                               # weights change in place
    assert len(fast.AttackGraph._cache[model]) == 1    # one shape: recorded once


@needs_cuda
def test_train_epoch_with_the_cuda_graph_matches_eager_on_cuda(monkeypatch):
    # Deterministic cuDNN kernels: two eager runs then train alike, so what differs is the graph.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    ds = data.load("synthetic", n_train=512, n_test=32, seed=0)
    histories = []
    for graphs in (False, True):
        cfg = train.config("smoke", model="resnet18", guide_model="resnet18", device="cuda",
                           cuda_graphs=graphs)
        device = torch.device("cuda")
        nets = train.prepare(cfg, train.build(cfg, 10, device), device)
        optimizer = train.make_optimizer(cfg, nets)
        batches = data.Batches(ds.x_train, ds.y_train, cfg.batch_size, device=device)
        histories.append([train.train_epoch(cfg, nets, optimizer, batches, e)
                          for e in range(2)])
    for eager, graphed in zip(*histories):
        assert graphed["loss"] == pytest.approx(eager["loss"], rel=0.03)
        assert graphed["label_agreement"] == pytest.approx(eager["label_agreement"], abs=0.03)


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_autocast_only_where_the_gpu_has_it_natively(monkeypatch, capability, native):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert fast.native_bf16(torch.device("cuda")) is native
    assert fast.native_bf16(torch.device("cpu")) is False
    with fast.autocast(torch.device("cpu")):
        assert models._autocast_dtype("cuda") is None and models._autocast_dtype("cpu") is None

"""C&W-inf, the AutoAttack wrapper, the robustness report and its sanity checks, and compare."""
import csv
import json

import pytest
import torch
import torch.nn as nn

from dynat_lite import attacks, compare, evaluate
from conftest import TinyNet

EPS = 8 / 255


class Quantized(nn.Module):
    """A model that hides its gradient: inputs are rounded to 8 levels (zero gradient) first."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 8) / 8)


@pytest.fixture(scope="module")
def correct_batch():
    """24 images and the labels a TinyNet predicts for them: 100 % clean accuracy."""
    net = TinyNet().eval()
    x = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


def _acc(model, x_adv, y):
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def test_cw_inf_stays_in_the_ball_and_raises_the_margin(correct_batch):
    net, x, y = correct_batch
    x_adv = attacks.cw_inf(net, x, y, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    with torch.no_grad():
        before = attacks.attack_loss(net(x), y, "cw")
        after = attacks.attack_loss(net(x_adv), y, "cw")
    assert after.mean() > before.mean()


def test_autoattack_agrees_with_pgd_on_a_model_it_breaks(correct_batch):
    net, x, y = correct_batch
    eps = 16 / 255  # large enough that PGD breaks this random net on most points
    x_pgd = attacks.pgd(net, x, y, eps=eps, steps=20, generator=torch.Generator().manual_seed(0))
    x_aa = attacks.autoattack(net, x, y, eps=eps, version="fast", seed=0)
    assert (x_aa - x).abs().max() <= eps + 1e-6 and x_aa.min() >= 0 and x_aa.max() <= 1
    pgd_acc, aa_acc = _acc(net, x_pgd, y), _acc(net, x_aa, y)
    assert pgd_acc <= 0.25  # PGD breaks it ...
    assert aa_acc <= pgd_acc  # ... and AutoAttack never does worse than PGD
    assert not net.training


def test_autoattack_takes_images_laid_out_as_loaded_from_nhwc_arrays(correct_batch):
    """Images permuted from NHWC arrays (channels-last strides) give the same result as
    contiguous ones; AutoAttack itself calls ``.view`` on the input's gradient."""
    net, x, y = correct_batch
    x_nhwc = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not x_nhwc.is_contiguous()
    eps = 1 / 255  # small: points survive APGD-CE, so APGD-T runs on them too
    x_aa = attacks.autoattack(net, x, y, eps=eps, version="fast", seed=0)
    x_aa_nhwc = attacks.autoattack(net, x_nhwc, y, eps=eps, version="fast", seed=0)
    assert 0 < _acc(net, x_aa, y)
    torch.testing.assert_close(x_aa_nhwc, x_aa)


def test_autoattack_rejects_an_unknown_version(correct_batch):
    net, x, y = correct_batch
    with pytest.raises(ValueError, match="version"):
        attacks.autoattack(net, x, y, version="quick")


def test_zero_gradient_fraction(correct_batch):
    net, x, y = correct_batch
    assert evaluate.zero_gradient_fraction(net, x, y) == 0.0
    assert evaluate.zero_gradient_fraction(Quantized(net), x, y) == 1.0


def test_sanity_checks_flag_the_masked_model_and_pass_the_normal_one(correct_batch):
    net, x, y = correct_batch
    x, y = x[:12], y[:12]
    normal = evaluate.robustness_report(net, x, y, attacks=("clean", "pgd20"), n_check=None)
    masked = evaluate.robustness_report(Quantized(net), x, y, attacks=("clean", "pgd20"),
                                        n_check=None)
    assert normal.ok, str(normal)
    assert not masked.ok
    failed = {c.name for c in masked.failed}
    assert "input gradients are not zero" in failed
    assert "FAIL" in str(masked) and "FAIL" not in str(normal)


def test_report_worst_case_is_per_example(correct_batch):
    net, x, y = correct_batch
    report = evaluate.robustness_report(net, x, y, attacks=("clean", "fgsm", "pgd20", "cw"),
                                        checks=False)
    both = report.correct["pgd20"] & report.correct["cw"] & report.correct["fgsm"]
    assert report.accuracy["worst_case"] == pytest.approx(both.float().mean().item())
    assert all(report.accuracy["worst_case"] <= a for a in report.accuracy.values())
    json.dumps(report.to_dict())  # JSON-ready
    assert "| C&W∞ |" in report.table()
    assert evaluate.evaluate(net, x, y, attacks=("clean",)) == {"clean": 1.0}


def test_accuracy_vs_eps_is_fgsm_and_pgd_at_every_budget(correct_batch):
    net, x, y = correct_batch
    grid = [0, 4 / 255, 16 / 255]
    net.train()
    curves = evaluate.accuracy_vs_eps(net, x, y, grid, steps=5, batch_size=10, seed=2)
    assert net.training, "the model's mode is restored"
    assert list(curves) == ["FGSM", "PGD-5"] and all(len(c) == 3 for c in curves.values())
    assert curves["FGSM"][0] == curves["PGD-5"][0] == 1.0, "eps = 0 is the clean accuracy"
    assert curves["PGD-5"][-1] < 1.0, "a large ball breaks the random net somewhere"
    # The same attacks by hand, batch by batch, one generator per eps.
    for k, eps in enumerate(grid):
        gen = torch.Generator().manual_seed(2)
        right = {"FGSM": 0, "PGD-5": 0}
        for i in range(0, len(y), 10):
            xb, yb = x[i:i + 10], y[i:i + 10]
            right["FGSM"] += (net.eval()(attacks.fgsm(net, xb, yb, eps=eps)).argmax(1) == yb).sum()
            xp = attacks.pgd(net, xb, yb, eps=eps, step_size=eps / 4, steps=5, generator=gen)
            right["PGD-5"] += (net(xp).argmax(1) == yb).sum()
        for name in curves:
            assert curves[name][k] == pytest.approx(right[name].item() / len(y)), (name, eps)


def test_compare_writes_the_table_and_resumes(tmp_path, capsys):
    args = ["--methods", "pgd_at,dynat", "--profile", "smoke", "--out", str(tmp_path),
            "--n-train", "128", "--epochs", "1", "--n-eval", "16", "--attacks", "clean,pgd20",
            "--n-check", "0"]
    assert compare.main(args) == 0
    for name in ("results.csv", "results.md", "figure.html"):
        assert (tmp_path / name).exists(), name
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    # PGD-AT with DYNAT's start is added beside Madry's: DYNAT is compared with PGD-AT.
    assert [r["method"] for r in rows] == ["pgd_at", "pgd_at_gauss", "dynat"]
    assert [r["start"] for r in rows] == ["uniform", "gaussian", "gaussian"]
    assert all(0 <= float(r["pgd20"]) <= float(r["clean"]) <= 1 for r in rows)
    stamps = {m: (tmp_path / m / "checkpoint.pt").stat().st_mtime_ns
              for m in ("pgd_at", "pgd_at_gauss", "dynat")}
    capsys.readouterr()
    assert compare.main(args) == 0  # the second run trains and evaluates nothing
    assert "evaluation: reused" in capsys.readouterr().out
    assert stamps == {m: (tmp_path / m / "checkpoint.pt").stat().st_mtime_ns for m in stamps}


def test_write_outputs_draws_no_png_when_told_not_to(tmp_path):
    rows = [{"method": "pgd_at", "clean": 0.5, "pgd20": 0.25, "worst_case": 0.25}]
    paths = compare.write_outputs(rows, tmp_path, png=False)
    assert set(paths) == {"csv", "md", "html"} and not (tmp_path / "figure.png").exists()
    assert "| pgd_at | 50.0 | 25.0 | 25.0 |" in (tmp_path / "results.md").read_text()


def test_compare_reports_bad_arguments(tmp_path, capsys):
    assert compare.main(["--methods", "nonsense", "--out", str(tmp_path)]) == 2
    assert "Unknown method" in capsys.readouterr().err


def test_on_the_cpu_attacks_run_on_the_folded_model_with_the_plain_models_results(batch):
    """correct_under folds the batch norms on the CPU; an attack run by hand on the model as it
    is gets the same examples right, and the model is left as it was (mode, weights)."""
    from dynat_lite import models

    torch.manual_seed(0)
    model = models.create("small-cnn", 10)
    with torch.no_grad():  # batch norms with statistics of their own, not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch
    for name in ("clean", "fgsm", "pgd-10"):
        got = evaluate.correct_under(model, x, y, name, seed=3)
        with attacks.eval_mode(model):
            x_adv = evaluate.attack_function(name)(model, x, y, 8 / 255,
                                                   torch.Generator().manual_seed(3))
            with torch.no_grad():
                want = model(x_adv).argmax(1) == y
        assert torch.equal(got, want), name
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

"""The per-step diagnostics, the collapse rule, PGD-AT with DYNAT's start, and the two departures
from the paper (a pre-trained guide, y for the first steps)."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from dynat_lite import diagnostics, models, train


def _tiny(**overrides):
    return tiny_config(**{"eval_steps": 2, "diagnose_every": 1, **overrides})


def _weights(result):
    nets = [result.target] + ([result.guide] if result.guide is not None else [])
    return [t.detach().clone() for net in nets for t in net.state_dict().values()]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------------------- the records
def test_logit_spread_dead_units_and_top_class_share_on_known_tensors():
    flat = torch.zeros(4, 10)
    assert diagnostics.logit_spread(flat).item() == 0
    one_hot = torch.eye(10)[:4] * 10
    assert diagnostics.logit_spread(one_hot).item() == pytest.approx(
        torch.tensor([10.0] + [0.0] * 9).std().item())
    features = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    assert diagnostics.dead_units(features).item() == pytest.approx(1 / 3)
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    assert diagnostics.top_class_share(logits).item() == 0.75


def test_sample_changes_nothing_in_the_model_and_draws_no_random_numbers(batch):
    x, y = batch
    net = models.create("small-cnn", 10).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    out = {"labels": y.clone(), "target_loss": torch.tensor(1.5)}
    rec = diagnostics.sample(7, net, x, y, out)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert set(rec) == set(diagnostics.FIELDS) and rec["step"] == 7
    assert rec["label_agreement"] == 1.0 and rec["adv_loss"] == pytest.approx(1.5)
    assert 0 <= rec["dead_units"] <= 1 and 0 < rec["top_class_share"] <= 1
    net.eval()
    diagnostics.sample(7, net, x, y, out)
    assert not net.training


def _steps(agreement, spread):
    return [{"label_agreement": a, "logit_spread": s} for a, s in zip(agreement, spread)]


def test_late_median_is_the_median_of_a_field_over_the_second_half():
    steps = [{"dead_units": d} for d in (0.9, 0.9, 0.1, 0.3, 0.2)]  # second half: 0.1, 0.3, 0.2
    assert diagnostics.late_median(steps, "dead_units") == 0.2
    assert diagnostics.late_median(steps[:1], "dead_units") == 0.9  # one sample: itself
    assert diagnostics.late_medians(_steps([0.5, 0.25, 0.75, 1.0], [4.0, 2.0, 0.5, 0.25])) == (
        0.875, 0.375)


def test_the_collapse_rule_reads_the_second_half_of_the_epoch_with_medians():
    # Flat output while the labels agree: collapsed.
    assert diagnostics.is_collapsed(_steps([0.9] * 4, [0.2] * 4))
    # The first half does not count: a flat start that then learns is not collapsed ...
    assert not diagnostics.is_collapsed(_steps([0.9] * 4, [0.1, 0.1, 2.0, 2.0]))
    # ... and a learning start that then goes flat is.
    assert diagnostics.is_collapsed(_steps([0.9] * 4, [3.0, 3.0, 0.3, 0.3]))
    # A median, not a mean: one outlier in the second half does not decide.
    assert diagnostics.is_collapsed(_steps([0.9] * 6, [1, 1, 1, 0.2, 0.2, 9.0]))
    # Weak labels (the weak-label phase, or a capped target): not collapsed, whatever the spread.
    assert not diagnostics.is_collapsed(_steps([0.3] * 4, [0.1] * 4))
    # The thresholds themselves.
    at = diagnostics.AGREEMENT_MIN
    assert diagnostics.is_collapsed(_steps([at] * 2, [diagnostics.SPREAD_MAX - 1e-6] * 2))
    assert not diagnostics.is_collapsed(_steps([at] * 2, [diagnostics.SPREAD_MAX] * 2))
    assert not diagnostics.is_collapsed(_steps([at - 1e-6] * 2, [0.0] * 2))
    assert not diagnostics.is_collapsed([])
    assert diagnostics.is_collapsed(_steps([0.9], [0.1]))  # one sample: that one


def test_the_training_loop_flags_no_epoch_before_min_steps():
    def epoch(last_step):
        return [{"step": last_step - 1, "label_agreement": 1.0, "logit_spread": 0.1},
                {"step": last_step, "label_agreement": 1.0, "logit_spread": 0.1}]

    assert not diagnostics.epoch_collapsed(epoch(diagnostics.MIN_STEPS - 1))
    assert diagnostics.epoch_collapsed(epoch(diagnostics.MIN_STEPS))
    assert not diagnostics.epoch_collapsed([])
    history = [{"epoch": 1, "steps": epoch(10)}, {"epoch": 2, "steps": epoch(40)},
               {"epoch": 3, "steps": []}]
    assert diagnostics.collapsed_epochs(history) == [2]



def test_a_runs_collapse_summary_and_its_table_line():
    from dynat_lite import compare

    def epoch(number, last_step, spread):
        return {"epoch": number, "steps": [
            {"step": last_step - 1, "label_agreement": 1.0, "logit_spread": spread},
            {"step": last_step, "label_agreement": 1.0, "logit_spread": spread}]}

    history = [epoch(1, 10, 0.1), epoch(2, 30, 0.1), epoch(3, 50, 2.0), epoch(4, 70, 0.1)]
    got = diagnostics.collapse_summary(history)
    assert got == {"collapsed_epochs": [2, 4], "epochs": 4, "samples": 8, "last_step": 70,
                   "verdict": "epoch(s) 2, 4"}
    assert diagnostics.collapse_summary(history[2:3])["verdict"] == "no epoch"
    bare = diagnostics.collapse_summary([{"epoch": 1, "steps": []}, {"epoch": 2}])
    assert bare == {"collapsed_epochs": [], "epochs": 2, "samples": 0, "last_step": None,
                    "verdict": "no diagnostic samples recorded"}
    lines = compare.collapse_text({"pgd_at": bare, "dynat": got}).splitlines()
    assert lines[0].split() == ["method", "epochs", "samples", "last", "sample", "collapsed", "in"]
    assert lines[1].split() == ["pgd_at", "2", "0", "—", "no", "diagnostic", "samples", "recorded"]
    assert lines[2].split() == ["dynat", "4", "8", "step", "70", "epoch(s)", "2,", "4"]

# ----------------------------------------------------------------------- inside the training
def test_diagnostics_leave_the_run_bit_identical_and_record_every_kth_step(tiny_data, tmp_path):
    on = train.fit(_tiny(diagnose_every=2), out=tmp_path / "dynat", dataset=tiny_data,
                   progress=False)
    off = train.fit(_tiny(diagnose_every=0), dataset=tiny_data, progress=False)
    assert _same(_weights(on), _weights(off))
    assert [h["test_clean"] for h in on.history] == [h["test_clean"] for h in off.history]
    # 3 steps an epoch (96 / 32): step 1, then every 2nd step of the run.
    assert [s["step"] for h in on.history for s in h["steps"]] == [1, 2, 4, 6]
    assert all(h["steps"] == [] and h["collapsed"] is False for h in off.history)
    assert all(isinstance(h["collapsed"], bool) for h in on.history)
    assert train.run_folder(_tiny(diagnose_every=2), "r") == train.run_folder(
        _tiny(diagnose_every=0), "r")
    # compare.collapse_table reads the same history back from the run's checkpoint
    from dynat_lite import compare
    assert compare.collapse_table([{"method": "dynat"}], tmp_path) == {
        "dynat": diagnostics.collapse_summary(on.history)}


def test_the_epoch_line_says_when_the_target_collapsed():
    record = {"epoch": 2, "loss": 2.5, "guide_loss": 0.2, "target_loss": 2.3, "test_clean": 0.2,
              "test_pgd": 0.1, "lr": 0.01, "guide_clean": 0.9, "label_agreement": 0.95,
              "collapsed": True, "steps": _steps([0.95] * 4, [0.2] * 4)}
    line = train.epoch_summary(record, 2)
    assert "TARGET COLLAPSED" in line and "0.20" in line and "95%" in line
    assert "COLLAPSED" not in train.epoch_summary({**record, "collapsed": False}, 2)


# ------------------------------------------------------------------ like with like: the start
def test_pgd_at_gauss_is_pgd_at_with_dynats_start(tiny_data):
    assert train.config("smoke", method="pgd_at").random_start == "uniform"
    assert train.config("smoke", method="pgd_at_gauss").random_start == "gaussian"
    assert train.config("smoke", method="dynat").random_start == "gaussian"
    # The target of DYNAT with static labels trains exactly as PGD-AT with DYNAT's start:
    # the guide beside it never reaches the target.
    a = train.fit(_tiny(method="pgd_at_gauss"), dataset=tiny_data, progress=False)
    b = train.fit(_tiny(method="dynat_static"), dataset=tiny_data, progress=False)
    assert _same(list(a.target.state_dict().values()), list(b.target.state_dict().values()))
    c = train.fit(_tiny(method="pgd_at"), dataset=tiny_data, progress=False)
    assert not _same(list(a.target.state_dict().values()), list(c.target.state_dict().values()))


# ------------------------------------------------------------- the two departures from the paper
def test_label_warmup_gives_y_for_the_first_steps_then_the_guides_labels(tiny_data):
    result = train.fit(_tiny(label_warmup_steps=2), dataset=tiny_data, progress=False)
    steps = [s for h in result.history for s in h["steps"]]
    assert [s["label_agreement"] for s in steps[:2]] == [1.0, 1.0]
    assert any(s["label_agreement"] < 1.0 for s in steps[2:])
    # y for every step of the run is DYNAT with static labels, bit for bit.
    always = train.fit(_tiny(label_warmup_steps=10 ** 6), dataset=tiny_data, progress=False)
    static = train.fit(_tiny(method="dynat_static"), dataset=tiny_data, progress=False)
    assert _same(_weights(always), _weights(static))


def test_guide_init_starts_the_run_from_the_guide_trained_alone(tiny_data, monkeypatch):
    cfg = _tiny(guide_init_epochs=3, epochs=1)
    alone = train.train_guide(train.config("smoke", **{**cfg.to_dict(), "epochs": 3,
                                                       "guide_init_epochs": 0}),
                              dataset=tiny_data)
    seen = {}
    real = train.train_epoch

    def first_epoch(cfg_, nets, *args, **kwargs):
        if cfg_.method == "dynat":  # the joint run (train_guide's epochs are "standard")
            seen.setdefault("guide", {k: v.clone() for k, v in nets.guide.state_dict().items()})
        return real(cfg_, nets, *args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", first_epoch)
    train.fit(cfg, dataset=tiny_data, progress=False)
    expected = alone.state_dict()
    assert all(torch.equal(seen["guide"][k], expected[k]) for k in expected)


def test_departures_are_refused_where_they_mean_nothing():
    with pytest.raises(ValueError, match="guide_init_epochs .* has none"):
        train.config("smoke", method="pgd_at", guide_init_epochs=2)
    with pytest.raises(ValueError, match="label_warmup_steps .* does not train on the guide"):
        train.config("smoke", method="dynat_static", label_warmup_steps=5)
    with pytest.raises(ValueError, match="diagnose_every must be an integer >= 0"):
        train.config("smoke", diagnose_every=-1)
    # Off by default, and part of what defines a run (unlike diagnose_every).
    cfg = train.config("smoke")
    assert cfg.guide_init_epochs == 0 and cfg.label_warmup_steps == 0
    assert train.run_folder(cfg, "r") != train.run_folder(
        train.config("smoke", label_warmup_steps=5), "r")


def test_compare_adds_pgd_at_with_dynats_start_beside_madrys():
    from dynat_lite import compare

    assert compare.like_with_like(["dynat", "pgd_at"]) == ["dynat", "pgd_at", "pgd_at_gauss"]
    assert compare.like_with_like(["dynat", "pgd_at_gauss", "pgd_at"]) == [
        "dynat", "pgd_at_gauss", "pgd_at"]
    assert compare.like_with_like(["pgd_at", "trades"]) == ["pgd_at", "trades"]
    assert compare.like_with_like(["dynat", "trades"]) == ["dynat", "trades"]


def test_probe_tells_a_flat_model_from_a_learning_one(batch):
    x, y = batch
    flat = models.create("small-cnn", 10).eval()
    with torch.no_grad():
        flat.fc.weight.zero_()
        flat.fc.bias.copy_(torch.arange(10.0) / 100)
    got = diagnostics.probe(flat, x, y)
    assert got["classes_predicted"] == 1 and got["top_class_share"] == 1.0
    assert got["logit_spread"] == pytest.approx(torch.arange(10.0).std().item() / 100)
    assert got["clean_accuracy"] == pytest.approx((y == 9).float().mean().item())

    class Linear(torch.nn.Module):  # a model whose predictions vary with its input
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 32 * 32, 10)

        def forward(self, x):
            return self.fc(x.flatten(1) - 0.5) * 10

    torch.manual_seed(0)
    varied = diagnostics.probe(Linear(), x, y)
    assert varied["classes_predicted"] > 1 and varied["logit_spread"] > 1

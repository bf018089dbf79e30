"""Figures carry titles, axis labels and class names; the explorers build and redraw headless."""
from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest
import torch

from dynat_lite import viz, widgets
from dynat_lite.data import SYNTHETIC_CLASSES as CLASSES


def title(fig: go.Figure) -> str:
    return fig.layout.title.text or ""


def text_of(fig: go.Figure) -> str:
    """Everything a reader sees as text: title, axes, annotations, tick and trace names."""
    return json.dumps(fig.to_plotly_json(), default=str)


@pytest.fixture
def images():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def record():
    """A fake LabelRecorder.to_dict(): 5 records of 12 probes, labels growing right."""
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(12) % 10
    steps = [0, 2, 4, 6, 8]
    lab = torch.zeros(5, 12, dtype=torch.long)
    for i in range(5):
        right = torch.rand(12, generator=g) < i / 4
        lab[i] = torch.where(right, truth, torch.full_like(truth, 3))
    conf = torch.rand(5, 12, generator=g) * 0.9 + 0.1
    return {"steps": steps, "labels": lab.tolist(), "confidence": conf.tolist(),
            "truth": truth.tolist(),
            "agreement": (lab == truth[None]).float().mean(1).tolist()}


def test_image_uint8_and_amplify():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
    assert viz.image_uint8(x).tolist() == [[[[0, 128, 255]]]]
    d = viz.amplify(torch.tensor([-0.1, 0.0, 0.1]), eps=0.1)
    assert d.tolist() == pytest.approx([0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="shape"):
        viz.image_uint8(torch.rand(2, 5, 4, 4))


def test_adversarial_examples_names_rows_and_classes(images):
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    pred = torch.tensor([0, 1, 2, 3, 4, 9])
    fig = viz.adversarial_examples(images, images.flip(0), y, y, pred, CLASSES, eps=8 / 255)
    assert title(fig)
    t = text_of(fig)
    for word in ("clean", "perturbation", "adversarial", CLASSES[9], CLASSES[0]):
        assert word in t
    assert sum(isinstance(tr, go.Image) for tr in fig.data) == 3 * len(images)
    wrong = [a for a in fig.layout.annotations if a.text == CLASSES[9]]
    assert wrong and wrong[0].font.color == viz.WRONG


@pytest.mark.parametrize("make", [
    lambda r: viz.agreement_curve(r["steps"], r["agreement"], current=4, chance=0.1),
    lambda r: viz.label_flips(r["steps"], r["labels"], r["truth"], CLASSES, current=4),
    lambda r: viz.accuracy_vs_eps([0, 4 / 255, 8 / 255], {"m": [0.9, 0.5, 0.1]}),
    lambda r: viz.pgd_trace({"CE": [1, 2, 3]}),
    lambda r: viz.sweep([1, 2], {"a": [0.1, 0.2]}, title="t", xaxis="β"),
    lambda r: viz.history([{"epoch": 1, "loss": 2.0, "test_clean": .5, "test_pgd": .1,
                            "label_agreement": .3}]),
])
def test_curves_have_title_and_axis_labels(record, make):
    fig = make(record)
    assert title(fig)
    layout = fig.to_plotly_json()["layout"]
    x_titles = [v.get("title", {}).get("text") for k, v in layout.items() if k.startswith("xaxis")]
    y_titles = [v.get("title", {}).get("text") for k, v in layout.items() if k.startswith("yaxis")]
    assert any(x_titles) and any(y_titles)


def test_confusion_and_probabilities_use_class_names(record):
    fig = viz.confusion(record["truth"], record["labels"][0], CLASSES)
    assert list(fig.data[0].x) == list(CLASSES) and list(fig.data[0].y) == list(CLASSES)
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text and title(fig)
    counts = fig.data[0].z
    assert sum(map(sum, counts)) == len(record["truth"])
    bars = viz.probabilities({"clean": [0.1] * 10}, CLASSES, truth=2, label=3)
    names = list(bars.data[0].x)
    assert names[2].endswith("(truth)") and names[3].endswith("(dynamic label)")
    table = viz.bar_comparison({"A": {"clean": .9, "pgd20": .1}, "B": {"clean": .8}})
    assert [tr.name for tr in table.data] == ["clean", "pgd20"] and title(table)


def test_label_flips_marks_every_flip(record):
    fig = viz.label_flips(record["steps"], record["labels"], record["truth"], CLASSES)
    lab = torch.tensor(record["labels"])
    n_flips = int((lab[1:] != lab[:-1]).sum())
    assert len(fig.data[1].x) == n_flips


def test_headless_flag(monkeypatch):
    monkeypatch.setenv("DYNAT_HEADLESS", "1")
    assert widgets.headless()
    monkeypatch.setenv("DYNAT_HEADLESS", "0")
    assert not widgets.headless()
    monkeypatch.delenv("DYNAT_HEADLESS")
    assert widgets.headless()  # no kernel here: nobody can move a slider


def test_label_explorer_builds_headless_and_redraws_on_the_slider(record, monkeypatch):
    monkeypatch.setenv("DYNAT_HEADLESS", "1")
    probe = torch.rand(12, 3, 32, 32)
    ex = widgets.label_explorer(record, probe, CLASSES, show_images=8)
    assert widgets.LABEL_EXPLORER_CLASS in ex.box._dom_classes
    slider = ex.controls[0]
    assert slider.description == "step" and (slider.min, slider.max, slider.step) == (0, 8, 2)
    assert slider.value == widgets.default_step(record["steps"], record["agreement"])
    slider.value = 0
    before = [text_of(f) for f in ex.figures()]
    slider.value = 8
    after = [text_of(f) for f in ex.figures()]
    assert len(after) == 4 and all(title(f) for f in ex.figures())
    assert before[0] != after[0] and before[2] != after[2]  # images' labels, confusion matrix
    ex.show()  # no IPython shell here: displays nothing and must not fail or block


def test_default_step_is_halfway_up_the_agreement():
    assert widgets.default_step([0, 10, 20, 30], [0.1, 0.2, 0.6, 0.9]) == 20
    assert widgets.default_step([0, 10], [0.5, 0.5]) == 0


def test_eps_and_pgd_explorers(tiny_net, batch):
    x, y = batch
    x, y = x[:4], y[:4]
    adv = {e: (x + e).clamp(0, 1) for e in (0.0, 4 / 255, 8 / 255)}
    preds = {e: y.roll(1) for e in adv}
    ex = widgets.eps_explorer(x, y, CLASSES, adv, y, preds, default=8 / 255)
    assert ex.controls[0].value == 8 / 255 and title(ex.figures()[0])
    ex.controls[0].value = 0.0
    assert "ε = 0" in title(ex.figures()[0])

    traj = {"CE": widgets.pgd_trajectory(tiny_net, x, y, steps=3),
            "KL": widgets.pgd_trajectory(tiny_net, x, None, loss="kl", steps=3)}
    assert traj["CE"]["x"].shape == (4, *x.shape) and traj["CE"]["probs"].shape == (4, 4, 10)
    assert ((traj["CE"]["x"] - x).abs().max() <= 8 / 255 + 1e-6)
    pex = widgets.pgd_explorer(x, y, y.roll(1), CLASSES, traj, image=1)
    figs = pex.figures()
    assert len(figs) == 3 and all(title(f) for f in figs)
    pex.controls[0].value = 0
    assert "after 0 PGD steps" in title(pex.figures()[1])

"""Figures carry titles, axis labels and class names; the explorers build and redraw headless."""
from __future__ import annotations

import colorsys
import itertools
import json
import re

import numpy as np
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
    # The wrong prediction's caption: the class name, marked ✗ and coloured WRONG.
    wrong = [a for a in fig.layout.annotations if a.text == f"{viz.WRONG_MARK} {CLASSES[9]}"]
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


# ----------------------------------------------------------------- every student can read them
# Machado, Oliveira & Fernandes (2009): full-severity colour-vision deficiencies as 3x3 matrices
# on linear RGB.
CVD = {
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                   [-0.003882, -0.048116, 1.051998]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                   [0.004733, 0.691367, 0.303900]],
}
OLD_RIGHT, OLD_WRONG = "#1a9850", "#d73027"  # the green and red the figures used before


def rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)]) / 255


def simulate(srgb: np.ndarray, kind: str) -> np.ndarray:
    """sRGB values in [0, 1] (any shape ending in 3) as seen with the colour-vision ``kind``."""
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    out = np.clip(lin @ np.array(CVD[kind]).T, 0, 1)
    return np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)


def lab(srgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values in [0, 1]."""
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                          [0.0193, 0.1192, 0.9505]]).T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], -1)


def delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """Colour difference (CIE76): about 2 is just noticeable, above 30 clearly different."""
    return float(np.linalg.norm(lab(a) - lab(b)))


def hue_family(color: str) -> str:
    """"red", "green", "neutral" (greys, black, white) or "other"."""
    h, l, s = colorsys.rgb_to_hls(*rgb(color))
    if s < 0.25 or l < 0.1 or l > 0.95:
        return "neutral"
    deg = 360 * h
    return "red" if deg < 15 or deg >= 340 else "green" if 75 <= deg < 165 else "other"


def colors_used(fig: go.Figure) -> set[str]:
    """Every colour the figure sets itself (its template aside), as lower-case hex."""
    found = set()

    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                if k != "template":
                    walk(v, k)
        elif isinstance(node, (list, tuple)):
            if key == "colorscale":
                found.update(str(c).lower() for _, c in node)
            else:
                for v in node:
                    walk(v, key)
        elif isinstance(node, str) and key.endswith("color") and node.startswith("#"):
            found.add(node.lower())

    walk(fig.to_plotly_json())
    return found


def title_lines(text: str) -> list[tuple[str, int]]:
    """A plotly title as (plain text, font size in px) per line."""
    out = []
    for line in (text or "").split("<br>"):
        size = re.search(r"font-size:\s*(\d+)px", line)
        out.append((re.sub(r"<[^>]+>", "", line),
                    int(size.group(1)) if size else viz.TITLE_SIZE))
    return out


def text_width(text: str, size: int) -> float:
    """Width in px of ``text`` in DejaVu Sans (the browser's sans-serif fallback on Debian; a
    wide font) or, where it is absent, Pillow's own scalable font."""
    from PIL import ImageFont

    try:
        font = ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        try:
            font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", size)
        except OSError:
            font = ImageFont.load_default(size)
    return font.getlength(text)


def catalogue(record, images) -> dict[str, go.Figure]:
    """One of every figure, as the lessons draw them."""
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    pred = torch.tensor([0, 1, 2, 3, 4, 9])
    lab_ = torch.tensor(record["labels"])
    h = lambda s: [{"epoch": e, "loss": 2 - s * e / 10, "test_clean": .3 + s * e / 10,
                    "test_pgd": .1 + s * e / 20, "label_agreement": min(1, .2 + s * e / 5)}
                   for e in (1, 2, 3)]
    objectives = {"CE to dynamic label (DYNAT)": [1, 2, 3], "CE to ground truth (PGD-AT)": [1, 2, 2.5],
                  "KL to clean prediction (TRADES)": [0, .1, .2]}
    return {
        "image_grid": viz.image_grid(images, list(CLASSES[:6]), cols=10, title="One per class"),
        "adversarial_examples": viz.adversarial_examples(images, images.flip(0), y, y, pred,
                                                         CLASSES, eps=8 / 255),
        "accuracy_vs_eps": viz.accuracy_vs_eps([0, 4 / 255, 8 / 255],
                                               {"FGSM": [.9, .5, .2], "PGD-10": [.9, .3, 0]}),
        "history": viz.history({"standard": h(1), "PGD-AT": h(.6), "DYNAT": h(.8)},
                               title="Training history (label agreement is 100% for methods "
                                     "trained on the ground truth)"),
        "bar_comparison": viz.bar_comparison({"standard": {"clean": .9, "PGD-10": 0},
                                              "DYNAT": {"clean": .7, "PGD-10": .4}}),
        "probe_labels": viz.probe_labels(images, lab_[2, :6], record["truth"][:6],
                                         record["confidence"][2][:6], CLASSES, step=4,
                                         n_total=12),
        "agreement_curve": viz.agreement_curve(record["steps"], record["agreement"], current=4,
                                               chance=.1, n_probes=12),
        "confusion": viz.confusion(record["truth"], record["labels"][2], CLASSES),
        "label_flips": viz.label_flips(record["steps"], record["labels"], record["truth"],
                                       CLASSES, current=4),
        "pgd_trace": viz.pgd_trace(objectives, current=1,
                                   title="The attacker's objective over the PGD steps (mean over "
                                         "the images; each objective on its own scale)"),
        "probabilities": viz.probabilities({"clean": [.1] * 10, **{n: [.1] * 10 for n in objectives}},
                                           CLASSES, truth=2, label=3),
        "sweep": viz.sweep([1, 2, 3], {n: [.9, .5, .2] for n in objectives},
                           xaxis="PGD steps (count)", title="More steps, a stronger attack"),
        "step_diagnostics": viz.step_diagnostics(
            {"DYNAT": step_history(True), "DYNAT, static labels": step_history(False)},
            thresholds={"label_agreement": .5, "logit_spread": .5}),
    }


def step_history(collapses: bool, epochs: int = 2, per_epoch: int = 8) -> list[dict]:
    """A fake train.fit history with per-step diagnostics every 2 steps (and at step 1)."""
    history = []
    for e in range(epochs):
        steps = [k for k in range(e * per_epoch + 1, (e + 1) * per_epoch + 1)
                 if k == 1 or k % 2 == 0]
        samples = []
        for k in steps:
            t = k / (epochs * per_epoch)
            samples.append({"step": k, "label_agreement": min(1, .1 + t) if collapses else 1.0,
                            "logit_spread": (6 * (1 - t) if collapses else 2 + t),
                            "clean_accuracy": .5, "top_class_share": .9 if collapses else .2,
                            "adv_loss": 2.3 if collapses else 1.5,
                            "dead_units": .6 * t if collapses else 0.0})
        history.append({"epoch": e + 1, "steps": samples})
    return history


@pytest.fixture
def figures(record, images):
    return catalogue(record, images)


def test_right_and_wrong_stay_apart_for_colour_blind_readers():
    for kind in CVD:
        right, wrong = simulate(rgb(viz.RIGHT), kind), simulate(rgb(viz.WRONG), kind)
        assert delta_e(right, wrong) > 60, kind
    # The simulation has teeth: the old green/red pair merges for red-green blindness.
    for kind in ("deuteranopia", "protanopia"):
        assert delta_e(simulate(rgb(OLD_RIGHT), kind), simulate(rgb(OLD_WRONG), kind)) < 30
    assert {hue_family(OLD_RIGHT), hue_family(OLD_WRONG)} == {"red", "green"}
    assert {hue_family(viz.RIGHT), hue_family(viz.WRONG)} != {"red", "green"}


def test_methods_drawn_together_stay_apart_for_colour_blind_readers():
    together = [("clean", "DYNAT", "PGD-AT", "TRADES"),  # lesson 02: the PGD explorer's bars
                ("standard", "PGD-AT", "PGD-AT, DYNAT's start", "DYNAT"),  # lesson 03's history
                ("DYNAT", "DYNAT, static labels")]       # lesson 03: the step diagnostics
    for names in together:
        for a, b in itertools.combinations(names, 2):
            for kind in ("deuteranopia", "protanopia"):
                ca, cb = (simulate(rgb(viz.METHOD_COLORS[n]), kind) for n in (a, b))
                assert delta_e(ca, cb) > 30, (a, b, kind)
    assert not {viz.RIGHT, viz.WRONG} & set(viz.METHOD_COLORS.values())


def test_every_figure_draws_with_the_one_palette_and_no_red_green_pair(figures):
    allowed = {c.lower() for c in viz.PALETTE} | {"#ffffff"}
    for name, fig in figures.items():
        used = colors_used(fig)
        assert used and used <= allowed, (name, used - allowed)
        assert not {"red", "green"} <= {hue_family(c) for c in used}, name


def test_right_and_wrong_carry_a_glyph_as_well_as_a_colour(figures, record):
    def check_captions(fig, truth, shown):
        caps = [a for a in fig.layout.annotations if a.text.strip()][:len(truth)]
        for ann, t, s in zip(caps, truth, shown):
            right = int(s) == int(t)
            assert ann.text.startswith(viz.RIGHT_MARK if right else viz.WRONG_MARK), ann.text
            assert ann.font.color == (viz.RIGHT if right else viz.WRONG)

    check_captions(figures["adversarial_examples"], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5])
    lab_ = torch.tensor(record["labels"])
    probe = figures["probe_labels"]
    check_captions(probe, record["truth"][:6], lab_[2, :6])
    assert {viz.RIGHT_MARK, viz.WRONG_MARK} <= set("".join(a.text for a in probe.layout.annotations))

    conf = figures["confusion"].data[0]
    for i, row in enumerate(conf.text):
        for j, cell in enumerate(row):
            if cell:
                assert cell.endswith(viz.RIGHT_MARK if i == j else viz.WRONG_MARK), (i, j, cell)
            assert bool(cell) == bool(conf.customdata[i][j])

    flips = figures["label_flips"].data[0]
    wrong = (lab_ != torch.tensor(record["truth"])[None]).T.numpy()  # (probe, step)
    assert (np.array(flips.text) == viz.WRONG_MARK).tolist() == wrong.tolist()
    assert (np.array(flips.text) == "").tolist() == (~wrong).tolist()

    ticks = list(figures["probabilities"].data[0].x)
    assert ticks[2].startswith(viz.RIGHT_MARK) and ticks[3].startswith(viz.WRONG_MARK)


def test_every_axis_has_a_title_with_its_unit(figures):
    for name, fig in figures.items():
        layout = fig.to_plotly_json()["layout"]
        axes = {k: v for k, v in layout.items() if re.fullmatch(r"[xy]axis\d*", k)}
        if any(isinstance(tr, go.Image) for tr in fig.data):
            assert all(v.get("showticklabels") is False for v in axes.values()), name
            continue  # images: no axes to read
        for key, axis in axes.items():
            text = axis.get("title", {}).get("text") or ""
            ref = key[0] + key[5:]  # "xaxis2" -> "x2"
            values = [v for tr in fig.data if (getattr(tr, f"{key[0]}axis") or key[0]) == ref
                      for v in list(getattr(tr, key[0]) if getattr(tr, key[0]) is not None
                                    else ())]
            if values and all(isinstance(v, str) for v in values):
                assert text.strip(), f"{name}: {key} (categories) has no title"
            else:
                assert re.search(r"\(.+\)", text), f"{name}: {key} title {text!r} names no unit"


def test_titles_fit_the_figure_and_figures_fit_a_notebook(figures):
    for name, fig in figures.items():
        width, height = fig.layout.width, fig.layout.height
        assert width <= 800, f"{name} is {width} px wide"
        start = fig.layout.title.x * width  # the title is left-aligned there
        lines = title_lines(fig.layout.title.text)
        for text, size in lines:
            assert start + text_width(text, size) <= width - 4, f"{name}: {text!r} is cut"
        # The first line's baseline sits at y; the last line ends above the plot.
        first = (1 - fig.layout.title.y) * height
        last_bottom = first + (len(lines) - 1) * 1.3 * viz.TITLE_SIZE + 5
        assert first - viz.TITLE_SIZE >= 0, f"{name}: the title starts above the figure"
        assert last_bottom <= fig.layout.margin.t, f"{name}: the title runs into the plot"
    long = figures["pgd_trace"].layout.title.text
    assert "<br>" in long and "each objective on its own scale" in re.sub("<[^>]+>", " ", long)


def test_image_captions_fit_their_images(figures):
    for name in ("image_grid", "adversarial_examples", "probe_labels"):
        fig = figures[name]
        plot_w = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
        cell = (fig.layout.xaxis.domain[1] - fig.layout.xaxis.domain[0]) * plot_w
        gap = (fig.layout.xaxis2.domain[0] - fig.layout.xaxis.domain[1]) * plot_w
        for ann in fig.layout.annotations:
            if ann.xref == "paper" and ann.xanchor == "right":
                continue  # a row title, in the left margin
            for line in ann.text.split("<br>"):
                assert text_width(line, viz.CAPTION_SIZE) <= cell + gap, (name, line)


def test_one_colour_per_method_across_panels_and_figures(figures):
    def by_name(fig, attr):
        out = {}
        for tr in fig.data:
            color = tr.line.color if attr == "line" else tr.marker.color
            out.setdefault(tr.name, set()).add(color)
        return out

    hist = by_name(figures["history"], "line")
    assert hist == {m: {viz.METHOD_COLORS[m]} for m in ("standard", "PGD-AT", "DYNAT")}
    assert all(len([t for t in figures["history"].data if t.name == m]) == 4 for m in hist)
    lines = by_name(figures["pgd_trace"], "line")
    bars = by_name(figures["probabilities"], "marker")
    sweeps = by_name(figures["sweep"], "line")
    for name in lines:
        method = viz.method_of(name)
        assert lines[name] == bars[name] == sweeps[name] == {viz.METHOD_COLORS[method]}, name
    assert bars["clean"] == {viz.METHOD_COLORS["clean"]}
    assert viz.method_of("pgd_at") == "PGD-AT" and viz.method_of("clean (no attack)") == "clean"
    # Series that are no method take palette colours no method of the figure uses.
    colors = viz.series_colors(["FGSM", "DYNAT", "PGD-20"])
    assert colors["DYNAT"] == viz.METHOD_COLORS["DYNAT"]
    assert len(set(colors.values())) == 3
    assert not {colors["FGSM"], colors["PGD-20"]} & set(viz.METHOD_COLORS.values())


def test_captions_say_what_they_count(record, monkeypatch):
    monkeypatch.setenv("DYNAT_HEADLESS", "1")
    ex = widgets.label_explorer(record, torch.rand(12, 3, 32, 32), CLASSES, show_images=8)
    grid, curve, conf, flips = (re.sub("<[^>]+>", " ", title(f)) for f in ex.figures())
    shown = int(re.search(r"(\d+) of these 8 shown agree", grid).group(1))
    i = record["steps"].index(ex.controls[0].value)
    truth = torch.tensor(record["truth"][:8])
    assert shown == int((torch.tensor(record["labels"][i][:8]) == truth).sum())
    assert "the first 8 of the 12 probe images" in grid
    assert "all 12 probe images" in curve and f"{100 * record['agreement'][i]:.0f}%" in curve
    assert "of 12" in conf and "12 probe images" in flips


def test_eps_explorer_draws_every_perturbation_on_one_scale(monkeypatch):
    monkeypatch.setenv("DYNAT_HEADLESS", "1")
    x = torch.full((2, 3, 4, 4), 0.5)
    y = torch.tensor([0, 1])
    adv = {e: x + e for e in (0.0, 4 / 255, 8 / 255)}
    ex = widgets.eps_explorer(x, y, CLASSES, adv, y, {e: y for e in adv}, default=8 / 255)

    def perturbation_row(fig):
        imgs = [tr.z for tr in fig.data if isinstance(tr, go.Image)]
        return np.array(imgs[2:4], dtype=float)  # row 2: the perturbations of the 2 images

    seen = {}
    for e in adv:
        ex.controls[0].value = e
        fig = ex.figures()[0]
        seen[e] = (perturbation_row(fig).mean() - 127.5,
                   [a.text for a in fig.layout.annotations if a.xanchor == "right"])
        assert "the same for every ε" in re.sub("<[^>]+>", " ", title(fig))
    assert abs(seen[0.0][0]) < 1 and seen[8 / 255][0] > 120  # grey, then full contrast
    assert seen[4 / 255][0] == pytest.approx(seen[8 / 255][0] / 2, abs=1)  # on one scale
    assert seen[0.0][1] == seen[4 / 255][1] == seen[8 / 255][1]  # the same row titles


def test_controls_show_their_whole_label():
    ex = widgets.eps_explorer(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), CLASSES,
                              {8 / 255: torch.rand(2, 3, 4, 4)}, torch.tensor([0, 1]),
                              {8 / 255: torch.tensor([0, 1])})
    assert ex.controls[0].style.description_width == "initial"


def test_pgd_explorer_keeps_one_colour_per_objective_and_shows_whole_labels(tiny_net, batch):
    x, y = batch
    x, y = x[:4], y[:4]
    traj = {n: widgets.pgd_trajectory(tiny_net, x, lab, loss=loss, steps=2) for n, (loss, lab) in
            {"CE to dynamic label (DYNAT)": ("ce", y.roll(1)), "CE to ground truth (PGD-AT)":
             ("ce", y), "KL to clean prediction (TRADES)": ("kl", None)}.items()}
    ex = widgets.pgd_explorer(x, y, y.roll(1), CLASSES, traj, image=1)
    trace, grid, bars = ex.figures()
    for name in traj:
        color = viz.METHOD_COLORS[viz.method_of(name)]
        assert [t.line.color for t in trace.data if t.name == name] == [color]
        assert [t.marker.color for t in bars.data if t.name == name] == [color]
    assert {viz.RIGHT_MARK, viz.WRONG_MARK} & set("".join(a.text for a in grid.layout.annotations))
    step, pick = ex.controls
    assert step.style.description_width == pick.style.description_width == "initial"
    longest = max(len(label) for label, _ in pick.options)
    assert pick.layout.width.endswith("em") and float(pick.layout.width[:-2]) >= longest


@pytest.mark.browser
def test_rendered_figure_keeps_right_and_wrong_apart_for_deuteranopia(tmp_path, monkeypatch):
    """Render a figure to PNG (kaleido drives the system Chromium), then look at its pixels: the
    title is not clipped, and the right and wrong captions still differ after a deuteranopia
    simulation of the whole image."""
    pytest.importorskip("kaleido", reason="pip install kaleido (the test extra has it)")
    from PIL import Image

    from browser_support import chromium_executable

    exe = chromium_executable()
    if exe is None:
        pytest.skip("no Chromium found: apt-get install chromium (or set DYNAT_CHROMIUM)")
    monkeypatch.setenv("BROWSER_PATH", exe)  # where kaleido looks for the browser
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    fig = viz.adversarial_examples(x, x.flip(0), y, y, torch.tensor([0, 5, 6, 7]), CLASSES,
                                   eps=8 / 255)
    png = tmp_path / "adversarial_examples.png"
    fig.write_image(png, width=fig.layout.width, height=fig.layout.height)
    img = np.asarray(Image.open(png).convert("RGB")).astype(float) / 255
    assert img.shape[:2] == (fig.layout.height, fig.layout.width)
    white = (img > 0.97).all(-1)
    assert white[:4].all() and white[:, -3:].all(), "something is cut at the top or right edge"

    near = lambda c: np.linalg.norm(img - rgb(c), axis=-1) < 0.15
    right, wrong = near(viz.RIGHT), near(viz.WRONG)
    assert right.sum() > 30 and wrong.sum() > 30, "the captions' colours are not on the image"
    seen = simulate(img, "deuteranopia")
    assert delta_e(seen[right].mean(0), seen[wrong].mean(0)) > 50


def test_a_long_label_record_is_thinned_so_that_every_cell_keeps_its_glyph():
    g = torch.Generator().manual_seed(0)
    n, probes = 1000, 64
    labels = torch.randint(0, 10, (n, probes), generator=g)
    truth = torch.randint(0, 10, (probes,), generator=g)
    steps = list(range(0, 2 * n, 2))
    fig = viz.label_flips(steps, labels, truth, CLASSES, max_columns=120)
    heat = fig.data[0]
    shown = [steps.index(s) for s in heat.x]
    assert len(shown) <= 121 and shown[0] == 0 and shown[-1] == n - 1
    assert len(set(np.diff(shown)[:-1])) == 1  # evenly spaced
    assert heat.textfont.size >= 5  # a glyph one can read
    kept = labels[shown]
    assert (np.array(heat.text) == viz.WRONG_MARK).tolist() == (kept != truth[None]).T.tolist()
    assert len(fig.data[1].x) == int((kept[1:] != kept[:-1]).sum())
    assert f"{len(shown)} of the {n} records" in title(fig)
    few = viz.label_flips(steps[:50], labels[:50], truth, CLASSES)
    assert list(few.data[0].x) == steps[:50] and "records" not in title(few)


def test_step_diagnostics_draws_a_line_per_run_and_field_over_the_steps():
    histories = {"DYNAT": step_history(True), "DYNAT, static labels": step_history(False),
                 "trained before the diagnostics": [{"epoch": 1}, {"epoch": 2, "steps": []}]}
    fields = ("label_agreement", "logit_spread", "dead_units", "adv_loss", "top_class_share")
    fig = viz.step_diagnostics(histories, fields, thresholds={"logit_spread": 0.5})
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(lines) == len(histories) * len(fields)
    steps = [s["step"] for r in histories["DYNAT"] for s in r["steps"]]
    assert steps[:3] == [1, 2, 4] and steps[-1] == 16
    for name, hist in histories.items():
        mine = [t for t in lines if t.name == name]
        assert len(mine) == len(fields) and sum(bool(t.showlegend) for t in mine) == 1
        assert len({t.line.color for t in mine}) == 1, "one colour per run in every panel"
        expected = [s["step"] for r in hist for s in r.get("steps") or []]
        for trace, field in zip(mine, fields):
            assert list(trace.x) == expected
            scale = 100 if viz.STEP_FIELDS[field][2] else 1
            assert list(trace.y) == pytest.approx(
                [scale * s[field] for r in hist for s in r.get("steps") or []])
    dynat = [t for t in lines if t.name == "DYNAT"]
    assert {t.line.color for t in dynat} == {viz.METHOD_COLORS["DYNAT"]}
    assert list(dynat[0].customdata) == [s_epoch for r in histories["DYNAT"]
                                         for s_epoch in [r["epoch"]] * len(r["steps"])]
    titles = [a.text for a in fig.layout.annotations]
    assert [viz.STEP_FIELDS[f][0] for f in fields] == titles[:len(fields)]
    assert "rule: 0.5" in titles and len(fig.layout.shapes) == 1  # the threshold line
    assert len({t.xaxis for t in lines}) == len(fields), "one panel per field"
    with pytest.raises(ValueError, match="logit_spread"):
        viz.step_diagnostics(histories, ("spread",))

"""The lessons 00-04, executed by papermill with the smoke profile on synthetic data.

Each lesson runs in a fresh kernel with cwd notebooks/ (as `make run`), writes its results to a
JSON file in pytest's tmp_path, and shares trained models with the later lessons through one
folder (so 04 evaluates the targets that 03 trained). Every lesson also runs alone: it trains
what it does not find. The assertions are about the stories the lessons tell; lesson 01's run is
also exported to HTML and drawn in headless Chromium with the network off (tools/export_html.py),
and the README's `dynat` command trains, into that folder, the DYNAT run lesson 03 then loads.
"""
from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from browser_support import chromium  # noqa: F401  (a fixture)
from conftest import REPO
from dynat_lite import train

sys.path.insert(0, str(REPO / "tools"))
import export_html  # noqa: E402
from test_html import LESSONS as PAGES, SITE_BUDGET  # noqa: E402  (the site's lessons, its budget)

NOTEBOOKS = REPO / "notebooks"
LESSONS = ["00_threat_model", "01_dynamic_labels", "02_inner_optimizer", "03_dynat_training",
           "04_evaluation"]
CELL_TIMEOUT = 1800  # seconds per cell: lesson 03 trains three models in one cell on a loaded CPU
SETUP_LINES = ("from dynat_lite.notebook import setup", "ENV = setup()")
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]("


def read(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


# --------------------------------------------------------------------------- structure (fast)
@pytest.mark.parametrize("name", LESSONS)
def test_lesson_structure(name):
    nb = read(name)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and BADGE in cells[0].source
    code = [c for c in cells if c.cell_type == "code"]
    assert all(line in code[0].source for line in SETUP_LINES), "set-up must be the first code cell"
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert tagged[0] is code[1], "the parameters cell follows the set-up cell"
    params = {}
    for stmt in ast.parse(tagged[0].source).body:
        assert isinstance(stmt, ast.Assign), f"only assignments in the parameters cell: {stmt}"
        params[stmt.targets[0].id] = ast.literal_eval(stmt.value)  # literals only
    assert {"PROFILE", "DATASET", "DEVICE", "SEED", "OUT_DIR", "MODELS_DIR"} <= set(params)
    assert params["PROFILE"] in ("smoke", "cpu", "gpu")
    for c in code:
        assert not c.get("outputs") and c.get("execution_count") is None, "commit without outputs"
    assert "what to try next" in cells[-1].source.lower()


@pytest.mark.parametrize("name", ["03_dynat_training", "04_evaluation"])
def test_lessons_03_04_derive_ask_and_cite_only_the_project(name):
    nb = read(name)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert text.count("$$") >= 6, "the lesson derives its maths in LaTeX"
    assert "**Think!**" in text and "<details>" in text and "</details>" in text
    assert "DESIGN" + ".md" not in "\n".join(c.source for c in nb.cells)
    assert "lesson 07" in text.lower(), "the paper's claims point to what the kit measured"
    params = {stmt.targets[0].id: ast.literal_eval(stmt.value) for stmt in ast.parse(
        next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source).body}
    assert params["EPOCHS"] is None, "EPOCHS = None: the profile's number of epochs"


# ------------------------------------------------------------------------- papermill runs (slow)
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def run_lesson(name: str, tmp_path: Path, models_dir: Path, monkeypatch, **params) -> dict:
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("DYNAT_HEADLESS", "1")  # widgets also draw their default view
    out_dir = tmp_path / name
    output = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(output), cwd=str(NOTEBOOKS), kernel_name="python3",
        parameters=dict(PROFILE="smoke", DATASET="synthetic", DEVICE="cpu", SEED=0,
                        OUT_DIR=str(out_dir), MODELS_DIR=str(models_dir), **params),
        execution_timeout=CELL_TIMEOUT, engine_name="dynat", progress_bar=False)
    result = json.loads((out_dir / "results.json").read_text())
    result["_output"] = nbformat.read(output, as_version=4)
    return result


def plotly_outputs(nb) -> int:
    return sum("application/vnd.plotly.v1+json" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))




@pytest.mark.notebook
@pytest.mark.slow
def test_00_threat_model(tmp_path, models_dir, monkeypatch):
    r = run_lesson("00_threat_model", tmp_path, models_dir, monkeypatch)
    assert r["clean"] > 0.5, "the standard model learned the synthetic classes"
    assert r["pgd"] <= r["fgsm"] <= r["clean"]
    pgd_curve = r["acc_pgd_vs_eps"]
    assert math.isclose(pgd_curve[0], r["clean"]), "at eps = 0 the attack changes nothing"
    assert pgd_curve[-1] < pgd_curve[0], "accuracy falls as eps grows"
    assert plotly_outputs(r["_output"]) >= 4


@pytest.fixture(scope="module")
def lesson_01(tmp_path_factory, models_dir):
    """Lesson 01 executed once: its story and its HTML page are checked on the same run."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        folder = tmp_path_factory.mktemp("lesson-01")
        return folder, run_lesson("01_dynamic_labels", folder, models_dir, monkeypatch)


@pytest.mark.notebook
@pytest.mark.slow
def test_01_dynamic_labels(lesson_01):
    _, r = lesson_01
    agreement = r["agreement"]
    assert len(agreement) == len(r["steps"]) > 5
    assert agreement[0] < 0.35, "an untrained guide's labels are weak"
    assert agreement[-1] > agreement[0] + 0.3, "the labels grow strong over training"
    # The headless explorer drew its default view: probe grid, agreement, confusion, flips.
    assert plotly_outputs(r["_output"]) >= 4 + 3


@pytest.mark.notebook
@pytest.mark.slow
def test_01_page_is_small_and_draws_offline(lesson_01, tmp_path, chromium):  # noqa: F811
    """The run above as an HTML page (tools/export_html.py --executed): an explorer, progress
    bars, image grids; a page that fits the site's budget and draws with the network off."""
    folder, _ = lesson_01
    assert export_html.main([str(NOTEBOOKS / "01_dynamic_labels.ipynb"), "--out",
                             str(tmp_path / "html"), "--no-check", "--executed", str(folder)]) == 0
    page = tmp_path / "html" / "01_dynamic_labels.html"
    nb = nbformat.read(folder / "01_dynamic_labels.ipynb", as_version=4)
    text = page.read_text(encoding="utf-8")
    shared = export_html.site_size(page.parent) - page.stat().st_size - (
        page.parent / "index.html").stat().st_size  # plotly.js, the stylesheet and MathJax
    # Every lesson's page must fit in what the shared files leave of the budget.
    assert page.stat().st_size < (SITE_BUDGET - shared) / len(PAGES)
    assert text.count(export_html.EXPLORER_NOTE) >= 1
    assert re.search(r"100% \d+/\d+ \[", text), "a progress bar's last line"
    assert "widget-state" not in text
    seen = chromium.run(export_html.open_offline, page)
    assert seen["figures"] == seen["drawn"] == export_html.count_page_figures(nb) >= 4
    assert not seen["errors"] and seen["outside"] == [] and seen["missing"] == []
    assert export_html.typeset(seen["formulas"]), seen["formulas"]
    ran_with = json.dumps(nb.metadata.get("papermill", {}).get("parameters", {}))
    assert '"PROFILE": "smoke"' in ran_with


@pytest.mark.notebook
@pytest.mark.slow
def test_02_inner_optimizer(tmp_path, models_dir, monkeypatch):
    r = run_lesson("02_inner_optimizer", tmp_path, models_dir, monkeypatch)
    assert len(r["mean_loss"]) == 3
    for name, loss in r["mean_loss"].items():
        assert loss[-1] > loss[0], f"PGD raises its own loss ({name})"
    for name, still in r["still_attacked_label_vs_steps"].items():
        assert still[-1] <= still[0], f"more steps do not weaken the attack ({name})"
    assert 0 <= r["n_disagree"] <= r["n_images"]


@pytest.fixture(scope="module")
def readme_dynat(models_dir) -> tuple[str, Path]:
    """The README's command, `python -m dynat_lite train --profile smoke --method dynat`, run in
    the folder the lessons share, into the run folder of the run lesson 03 trains (the same
    config: how often per-step diagnostics are sampled is not part of a run's key). Lesson 03
    then loads that run instead of training it a second time. (its stdout, the run folder)"""
    out = train.run_folder(train.config("smoke", method="dynat", dataset="synthetic"), models_dir)
    done = subprocess.run(
        [sys.executable, "-m", "dynat_lite", "train", "--profile", "smoke", "--method", "dynat",
         "--device", "cpu", "--no-progress", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout, out


@pytest.mark.slow
def test_the_readmes_dynat_command_says_its_target_collapsed(readme_dynat):
    """On smoke DYNAT's target collapses in the weak-label phase; the command's last epoch line
    says so. (With static labels it does not: lesson 03's run, below.)"""
    stdout, _ = readme_dynat
    last = [line for line in stdout.splitlines() if line.startswith("epoch ")][-1]
    assert "TARGET COLLAPSED" in last, stdout


@pytest.mark.notebook
@pytest.mark.slow
def test_03_dynat_training(tmp_path, models_dir, monkeypatch, readme_dynat):
    r = run_lesson("03_dynat_training", tmp_path, models_dir, monkeypatch)
    # The lesson's DYNAT is the run the README's command trained, loaded: its per-step
    # diagnostics are the command's, every 10 steps (a run trained here samples every 2).
    trained = train.load_checkpoint(readme_dynat[1])["history"]
    assert r["history"]["DYNAT"] == json.loads(json.dumps(trained))
    steps = [s["step"] for s in r["history"]["DYNAT"][0]["steps"]]
    assert steps[1] - steps[0] == 9 and steps[2] - steps[1] == 10
    assert math.isclose(r["loss_by_hand"], r["loss_library"], rel_tol=1e-5)
    final = r["final"]
    assert final["DYNAT"]["pgd"] > final["standard"]["pgd"], "DYNAT's target is more robust"
    beta = r["beta"]
    guide, target = beta["guide's gradient"], beta["target's gradient"]
    assert max(guide) - min(guide) <= 1e-4 * max(guide), "beta leaves the guide's gradient alone"
    zero = beta["betas"].index(0.0)
    assert target[zero] == 0 and target[-1] > target[zero]
    # The derivation of section 2: the target's gradient is proportional to beta.
    per_beta = [t / b for t, b in zip(target, beta["betas"]) if b > 0]
    assert max(per_beta) - min(per_beta) <= 1e-4 * max(per_beta)
    # The weak-label phase on smoke (section 4): DYNAT's target collapses by the rule of
    # diagnostics; the target of DYNAT with static labels (the model the kit ships for
    # smoke, trained by tools/export_lesson_models.py) does not.
    weak = r["weak_label_phase"]
    assert weak["DYNAT"]["collapsed_epochs"][-1] == len(r["history"]["DYNAT"])
    assert weak["DYNAT, static labels"]["collapsed_epochs"] == []
    for name, peak in r["robust_peak"].items():  # where robust test accuracy peaked
        pgd = [h["test_pgd"] for h in r["history"][name]]
        assert peak["peak"] == max(pgd) == pgd[peak["epoch"] - 1] and peak["last"] == pgd[-1]


@pytest.mark.notebook
@pytest.mark.slow
def test_04_evaluation(tmp_path, models_dir, monkeypatch):
    r = run_lesson("04_evaluation", tmp_path, models_dir, monkeypatch)
    assert set(r["table"]) == {"standard", "PGD-AT", "DYNAT"}
    for name, row in r["table"].items():
        assert row["pgd20"] <= row["fgsm"] <= row["clean"], name
        if "cw" in row:
            assert row["cw"] <= row["clean"], name
    # AutoAttack runs on the first fifth of the images on a CPU, next to PGD-20 on those same
    # images: it is the stronger attack (a tolerance of 2 images for PGD's random start).
    same = r["same_images"]
    assert same["n"] == train.PROFILES["smoke"]["n_eval"] // 5 and set(same["accuracy"]) == {"standard", "PGD-AT", "DYNAT"}
    for name, row in same["accuracy"].items():
        assert row["aa_fast"] <= row["pgd20"] + 2 / same["n"], name
        assert r["table"][name]["aa_fast"] == row["aa_fast"], name
    for name, curve in r["curves"].items():
        assert curve["PGD-10"][0] == curve["FGSM"][0], "eps = 0 is the clean accuracy"
        assert curve["PGD-10"][-1] <= curve["PGD-10"][0], name
    # Exercise 4.1: the margin's sign is the clean error (ties aside: one image of slack).
    margin = r["cw_margin"]
    assert abs(margin["positive"] - margin["clean_error"]) <= 1 / train.PROFILES["smoke"]["n_eval"]
    # Exercise 4.2: the per-example worst case is at most every single attack, clean included.
    worst = r["worst_case"]
    assert worst["n"] == same["n"] and set(worst["models"]) == set(r["table"])
    for name, w in worst["models"].items():
        assert set(w["attacks"]) == {"clean", "fgsm", "pgd20", "cw", "aa_fast"}, name
        assert w["worst_case"] <= min(w["attacks"].values()), name

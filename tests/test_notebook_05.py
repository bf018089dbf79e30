"""Lesson 05 executed by papermill on the CPU: it falls back to the smoke profile, says so,
trains with checkpoints, resumes when run again, and evaluates (cwd notebooks/)."""
from __future__ import annotations

import ast
import json

import nbformat
import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "05_wrn34_10_gpu.ipynb"
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]("
SETUP = '''# Set-up: in JupyterLab the package is already installed; on Colab, install it.
try:
    import dynat_lite
except ImportError:  # on Colab
    %pip install -q "dynat-lite @ git+https://github.com/dynat-lite/dynat-lite"
    import dynat_lite
from dynat_lite.notebook import setup
ENV = setup()'''


def test_lesson_05_structure():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and BADGE in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == SETUP
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[1]
    params = {}
    for stmt in ast.parse(tagged[0].source).body:
        assert isinstance(stmt, ast.Assign)
        params[stmt.targets[0].id] = ast.literal_eval(stmt.value)  # literals only
    assert {"PROFILE", "DATASET", "DEVICE", "SEED", "CKPT_DIR", "OUT_DIR"} <= set(params)
    assert params["PROFILE"] == "paper"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert "what to try next" in nb.cells[-1].source.lower()


def test_lesson_05_asks_and_cites_only_the_project():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "**Think!**" in text and "<details>" in text and "</details>" in text
    assert "DESIGN" + ".md" not in "\n".join(c.source for c in nb.cells)


def _run(tmp_path, name):
    papermill = pytest.importorskip("papermill")
    output = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(output), cwd=str(NOTEBOOK.parent), kernel_name="python3",
        engine_name="dynat", progress_bar=False, execution_timeout=900,
        parameters=dict(PROFILE="paper", DEVICE="cpu", SEED=0, OUT_DIR=str(tmp_path / name),
                        CKPT_DIR=str(tmp_path / "checkpoints"), N_EVAL=16, EPOCHS=1,
                        N_TRAIN=128))
    text = "".join(o.get("text", "") for c in nbformat.read(output, as_version=4).cells
                   for o in c.get("outputs", []))
    return json.loads((tmp_path / name / "results.json").read_text()), text


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_lesson_05_falls_back_trains_resumes_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAT_HEADLESS", "1")
    r, text = _run(tmp_path, "first")
    assert r["requested_profile"] == "paper" and r["profile"] == "smoke" and r["fell_back"]
    assert "smoke" in text and "No CUDA GPU" in text
    # On a CPU the fast step is the plain step: to the last bit without folding, within
    # rounding with the batch norms folded into the attack's convolutions
    assert r["fast_check"]["identical_unfolded"]
    assert r["fast_check"]["relative_difference"] < 1e-4
    assert r["resumed_from_epoch"] == 0
    epochs = [h["epoch"] for h in r["history"]]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 1
    for h in r["history"]:
        assert h["images_per_second"] > 0 and 0 <= h["label_agreement"] <= 1
    acc = r["evaluation"]["accuracy"]
    assert r["evaluation"]["n"] == 16 and {"clean", "fgsm", "pgd20"} <= set(acc)
    assert all(0 <= v <= 1 for v in acc.values()) and acc["pgd20"] <= acc["clean"]
    assert r["published"]["LBGAT"] == {"clean": 88.22, "autoattack": 52.86}
    assert r["gflop_per_image"] > 0

    # Run again with the same checkpoint folder: it resumes at the end and trains nothing.
    again, _ = _run(tmp_path, "second")
    assert again["resumed_from_epoch"] == len(epochs)
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in r["history"]]

"""Studies: resumable runs, a summary computed from the histories only, and the shipped results."""
import csv
import json
import math
from pathlib import Path

import pytest

from dynat_lite import study

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent for p in (REPO / "results").glob("*/summary.csv"))


def test_wilson_interval_contains_the_estimate_and_narrows_with_n():
    lo, hi = study.wilson_interval(0.5, 100)
    assert (round(lo, 3), round(hi, 3)) == (0.404, 0.596)
    for p in (0.0, 0.1, 0.5, 0.97, 1.0):
        small, large = study.wilson_interval(p, 50), study.wilson_interval(p, 5000)
        assert 0 <= small[0] <= p <= small[1] <= 1
        assert large[1] - large[0] < small[1] - small[0]
    with pytest.raises(ValueError):
        study.wilson_interval(0.5, 0)


def test_every_study_states_its_budget_and_its_runs_have_unique_names():
    for s in study.STUDIES.values():
        assert s.budget and s.question
        names = [r.name for r in s.runs]
        assert len(names) == len(set(names))
        for run in s.runs:
            s.config(run)  # a valid config for every run


def test_a_method_name_trains_the_same_config_in_a_study_and_in_compare():
    from dynat_lite.compare import method_config

    s = study.get("tradeoff")
    for run in s.runs:
        cfg = s.config(run)
        same = method_config(run.method, s.profile, **{**s.base, **run.overrides,
                                                       "seed": run.seed})
        assert cfg == same


def _smoke(tmp_path, log):
    return study.run_study("smoke", tmp_path, only=("pgd_at-s0",), log=log.append)


def test_smoke_study_summarizes_its_histories_and_resumes(tmp_path):
    log = []
    rows = _smoke(tmp_path, log)
    assert len(rows) == 1
    row = rows[0]
    history = json.loads((tmp_path / "pgd_at-s0" / study.HISTORY).read_text())
    final = json.loads((tmp_path / "pgd_at-s0" / study.FINAL).read_text())
    pgd = [h["test_pgd"] for h in history]
    assert row["epochs"] == len(history) == 2
    assert row["best_test_pgd"] == max(pgd) and row["last_test_pgd"] == pgd[-1]
    assert row["best_epoch"] == pgd.index(max(pgd)) + 1
    assert row["last_train_pgd"] == history[-1]["train_pgd"]
    assert row["clean"] == final["accuracy"]["clean"] and row["n_test"] == final["n"]
    assert row["fgsm_n"] == 32 and "fgsm" in final["extra"]
    assert row["clean_lo"] <= row["clean"] <= row["clean_hi"]
    assert (tmp_path / "summary.md").read_text().startswith("| run |")
    # Again: nothing is trained or attacked a second time.
    stamp = (tmp_path / "pgd_at-s0" / study.FINAL).stat().st_mtime_ns
    log2 = []
    assert _smoke(tmp_path, log2) == rows
    assert not any("training" in line for line in log2)
    assert (tmp_path / "pgd_at-s0" / study.FINAL).stat().st_mtime_ns == stamp


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_summary_matches_the_shipped_histories(folder):
    rows = study.summarize(folder)
    with open(folder / "summary.csv") as f:
        saved = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [r["run"] for r in saved]
    for row, line in zip(rows, saved):
        for key, value in row.items():
            if isinstance(value, bool):
                assert line[key] == str(value)
            elif isinstance(value, (int, float)):
                assert math.isclose(float(line[key]), value, rel_tol=1e-9, abs_tol=1e-12), key
            else:
                assert line[key] == str(value)
    assert (folder / "summary.md").read_text() == study.markdown(rows) + "\n"


def _row(run, clean, pgd20, n=1000, **extra):
    return {"run": run, "clean": clean, "pgd20": pgd20, "n_test": n, **extra}


def _tradeoff(dynat=(0.60, 0.30), nocf=(0.60, 0.30), baseline=(0.50, 0.30)):
    rows = []
    for seed in (0, 1):
        rows += [_row(f"standard-s{seed}", 0.80, 0.01), _row(f"dynat-s{seed}", *dynat),
                 _row(f"dynat_nocf-s{seed}", *nocf)]
        rows += [_row(f"{b}-s{seed}", *baseline) for b in ("pgd_at", "pgd_at_cf", "trades",
                                                           "lbgat")]
    return {e["claim"][0]: e["verdict"] for e in study.tradeoff_evidence(rows)}


def test_tradeoff_verdicts_follow_the_numbers():
    # Clearly more accurate, as robust: claim 2 supported; the switch changes nothing: 3 not.
    verdicts = _tradeoff()
    assert verdicts == {"2": "supported", "3": "not supported", "4": "supported"}
    # Within the noise of 2,000 images: inconclusive.
    assert _tradeoff(dynat=(0.505, 0.30))["2"] == "inconclusive"
    # More accurate but clearly less robust: not at comparable robustness.
    assert _tradeoff(dynat=(0.60, 0.20))["2"] == "not supported"
    # Switching the clean forward off costs DYNAT clean accuracy: claim 3 supported.
    assert _tradeoff(nocf=(0.50, 0.30))["3"] == "supported"
    # As robust as standard training: the small guide does not work.
    assert _tradeoff(dynat=(0.80, 0.01))["4"] == "not supported"


def _overfit(run, best, last, train_best, train_last):
    return {"run": run, "best_test_pgd": best, "last_test_pgd": last, "drop": best - last,
            "train_pgd_at_best": train_best, "last_train_pgd": train_last, "n_eval": 500}


def test_strong_guide_and_steps_verdicts_follow_the_numbers():
    def rows_for(guided=(0.60, 0.30), baseline=(0.50, 0.30)):
        out = []
        for seed in (0, 1):
            out += [_row(f"dynat_guide_init-s{seed}", *guided),
                    _row(f"dynat_label_warmup-s{seed}", *guided), _row(f"dynat-s{seed}", *guided)]
            out += [_row(f"{b}-s{seed}", *baseline)
                    for b in ("dynat_static", "pgd_at_gauss", "pgd_at")]
        return out

    verdicts = [e["verdict"] for e in study.strong_guide_evidence(rows_for())]
    assert verdicts == ["supported", "supported"]
    assert {e["verdict"] for e in study.strong_guide_evidence(
        rows_for(guided=(0.505, 0.30)))} == {"inconclusive"}
    assert {e["verdict"] for e in study.strong_guide_evidence(
        rows_for(guided=(0.40, 0.30)))} == {"not supported"}

    def history(spreads):
        return [{"epoch": 1, "steps": [{"step": 5 * i + 21, "label_agreement": 0.9,
                                        "logit_spread": s, "dead_units": 0.1}
                                       for i, s in enumerate(spreads)]}]

    collapsed = history([0.1, 0.1, 0.2, 0.2])
    collapsed[0]["collapsed"] = True
    learning = history([0.1, 0.6, 2.0, 3.0])
    learning[0]["collapsed"] = False
    items = study.steps_evidence(rows_for(), {"dynat-s0": collapsed, "dynat-s1": learning})
    assert [e["verdict"] for e in items[:2]] == ["collapses", "does not collapse"]
    assert [e["claim"].split(".")[0] for e in items] == ["5a", "5b", "5c"]
    assert "first >= 0.5 at step 26" in items[1]["measured"]
    assert items[2]["verdict"] == "supported"


def test_overfitting_verdicts_follow_the_numbers():
    rows = [_overfit(f"pgd_at-s{s}", 0.40, 0.25, 0.45, 0.70) for s in (0, 1)]
    rows += [_overfit(f"dynat-s{s}", 0.38, 0.37, 0.40, 0.50) for s in (0, 1)]
    a, b = study.overfitting_evidence(rows)
    assert (a["verdict"], b["verdict"]) == ("supported", "supported")
    # No drop beyond the noise: the study cannot tell (a model too small to fit its training set
    # robustly need not overfit), so inconclusive, not "not supported"; nothing to reduce either.
    flat = [dict(r, last_test_pgd=r["best_test_pgd"] - 0.01, drop=0.01) for r in rows]
    a, b = study.overfitting_evidence(flat)
    assert (a["verdict"], b["verdict"]) == ("inconclusive", "inconclusive")
    # A drop while the training accuracy falls too is not robust overfitting.
    falling = [dict(r, last_train_pgd=0.30) for r in rows]
    assert study.overfitting_evidence(falling)[0]["verdict"] == "inconclusive"

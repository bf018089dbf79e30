"""One core: a method name means one run whoever asks for it; one PGD loop; evaluation attacks as
specs; the CLI's flags from the Config; imports that flow one way; the kept checkpoints chosen
without the test set; the two evaluation protocols."""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import TinyNet
from dynat_lite import attacks, compare, data, evaluate, fast, methods, study, train
from dynat_lite.__main__ import main, parser, train_config
from dynat_lite.notebook import lesson

PACKAGE = Path(__file__).resolve().parents[1] / "dynat_lite"
# The run every caller below asks for, in each caller's own words.
SETTINGS = dict(dataset="synthetic", seed=3, n_train=96, n_test=32, epochs=1, batch_size=32,
                n_eval=16, steps=1)


class Asked(Exception):
    """Raised by the stand-in for ``train.fit``: the caller's config was seen, nothing trained."""


@pytest.fixture
def asked(monkeypatch):
    """Replace ``train.fit`` by a recorder: ``asked`` lists (config, run folder) of each call."""
    seen = []

    def record(cfg, *, out=None, **_):
        seen.append((cfg, Path(out) if out is not None else None))
        raise Asked

    monkeypatch.setattr(train, "fit", record)
    return seen


def _cli_flags(name):
    flags = ["--profile", "smoke", "--method", name, "--device", "cpu", "--no-progress"]
    for key, value in SETTINGS.items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    return flags


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_caller_trains_the_same_run_for_a_method_name(name, tmp_path, asked, monkeypatch):
    root = tmp_path / "models"
    expected = train.config("smoke", method=name, **SETTINGS)
    # The method's own defaults, resolved in train.config.
    method = methods.get(name)
    assert expected.random_start == method.option_default("random_start",
                                                           fallback=train.Config.random_start)
    assert expected.method_options == method.settings()

    # The command line.
    with pytest.raises(Asked):
        main(["train", *_cli_flags(name), "--out", str(tmp_path / "cli")])
    # The lessons (every lesson builds its configs with Lesson.config / Lesson.trained).
    L = lesson("smoke", "synthetic", "cpu", 3, tmp_path / "out", root, progress=False,
               quiet=True, **{k: v for k, v in SETTINGS.items() if k not in ("dataset", "seed")})
    with pytest.raises(Asked):
        L.trained(name)
    # compare (and lesson 06, which calls it) ...
    with pytest.raises(Asked):
        compare.compare([name], profile="smoke", out=tmp_path / "compare", dataset="synthetic",
                        seed=3, overrides={k: v for k, v in SETTINGS.items()
                                           if k not in ("dataset", "seed")})
    # ... and a study.
    one = study.Study(name="one", question="", budget="", profile="smoke",
                      base={k: v for k, v in SETTINGS.items() if k != "seed"},
                      runs=(study.Run("run", name, 3),))
    monkeypatch.setitem(study.STUDIES, "one", one)
    with pytest.raises(Asked):
        study.run_study("one", tmp_path / "study", log=lambda _: None)

    assert len(asked) == 4
    for cfg, _ in asked:
        assert train.run_key(cfg) == train.run_key(expected), cfg
        assert train.run_folder(cfg, root) == train.run_folder(expected, root)
    assert asked[1][1] == train.run_folder(expected, root)   # where the lesson keeps it
    assert compare.method_config(name, "smoke", **SETTINGS) == expected


def test_a_run_saved_before_the_settings_were_recorded_resumes(tmp_path):
    """A checkpoint whose config lacks the method's settings (as every checkpoint written before
    train.config recorded them) is the same run: it resumes instead of being refused."""
    cfg = train.config("smoke", method="trades", **SETTINGS)
    old = {**cfg.to_dict(), "method_options": {}}
    assert train._comparable(old) == train._comparable(cfg.to_dict())
    changed = {**old, "method_options": {"beta": 1.0}}
    assert train._comparable(changed) != train._comparable(cfg.to_dict())


def test_a_setting_the_method_does_not_have_is_refused():
    with pytest.raises(ValueError, match="has no setting.*beta"):
        train.config("smoke", method="pgd_at", method_options={"beta": 2.0})
    with pytest.raises(ValueError, match="has no setting.*steps"):
        train.config("smoke", method="dynat", method_options={"steps": 2})


def test_dynat_gairat_is_dynat_with_its_defaults():
    variant, dynat = methods.get("dynat_gairat"), methods.get("dynat")
    assert variant.loss is dynat.loss is methods.dynat_loss
    assert variant.settings() == {**dynat.settings(), "reweight": "gairat"}


def test_mail_defaults_follow_the_official_mail_at_code():
    settings = methods.get("mail").settings()
    assert settings == {"burn_in": 76 / 120, "bias": -0.5, "slope": 10.0}
    assert methods.get("mail").option_default("random_start") == "gaussian"


# ------------------------------------------------------------------------------ one PGD loop
@pytest.mark.parametrize("loss", ["ce", "kl", "cw"])
def test_every_pgd_is_the_one_loop(tiny_net, batch, loss):
    x, y = batch
    budget = dict(eps=8 / 255, step_size=2 / 255, steps=4, random_start="gaussian")
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    plain = attacks.pgd(tiny_net, x, y, loss=loss, generator=gen(), **budget)
    points = [p for p, _ in attacks.pgd_iterates(tiny_net, x, y, loss=loss, generator=gen(),
                                                 **budget)]
    assert len(points) == 5 and torch.equal(points[-1], plain)
    start = attacks.random_start_point(x, budget["eps"], "gaussian", gen())
    clean = attacks._clean_probs(tiny_net.eval(), x, loss)
    assert torch.equal(attacks.pgd_endpoint(tiny_net, x, y, start, eps=budget["eps"],
                                            step_size=budget["step_size"], steps=4, loss=loss,
                                            clean_probs=clean), plain)
    quick = fast.FastPGD(generator=gen(), **budget)(tiny_net, x, y, loss=loss)
    assert torch.equal(quick, plain)
    if loss == "ce":
        x_kappa, kappa = attacks.PGD(generator=gen(), **budget).with_kappa(tiny_net, x, y)
        fast_kappa = fast.FastPGD(generator=gen(), **budget).with_kappa(tiny_net, x, y)
        assert torch.equal(x_kappa, plain) and torch.equal(fast_kappa[0], plain)
        assert torch.equal(kappa, fast_kappa[1])


# --------------------------------------------------------------------- evaluation attack specs
def test_attack_specs_name_what_runs(tiny_net, batch):
    x, y = batch
    assert evaluate.attack_function("pgd-50") == evaluate.PGDAttack(50)
    assert evaluate.attack_function("pgd20") == evaluate.attack_function("pgd-20")
    assert evaluate.attack_title("pgd-50") == "PGD-50"
    for bad in ("pgd-0", "pgd", "pgd-x", "madry"):
        with pytest.raises(ValueError, match="pgd-N"):
            evaluate.attack_function(bad)
    # pgd-3 is three steps of 2/255 from a uniform start, nothing else.
    by_hand = attacks.pgd(tiny_net, x, y, steps=3, step_size=2 / 255, random_start="uniform",
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = (tiny_net.eval()(by_hand).argmax(1) == y)
    assert torch.equal(evaluate.correct_under(tiny_net, x, y, "pgd-3", seed=0), expected)


@pytest.mark.parametrize("eval_steps", [3, 50])
def test_a_profiles_eval_steps_is_the_pgd_that_runs(monkeypatch, eval_steps):
    asked_for = []

    def spy(model, x, y, *, attacks, **kw):
        asked_for.extend(attacks)
        return {a: 0.5 for a in attacks}

    monkeypatch.setattr(train, "evaluate", spy)
    cfg = train.config("smoke", eval_steps=eval_steps)
    nets = train.build(cfg, 10, torch.device("cpu"))
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8)
    train.eval_epoch(cfg, nets, x, y)
    assert f"pgd-{eval_steps}" in asked_for


# ------------------------------------------------------------------- the CLI from the Config
def test_every_config_field_has_a_train_flag_and_the_old_spellings_work(tmp_path):
    args = parser().parse_args([
        "train", "--out", str(tmp_path), "--profile", "smoke", "--no-amp", "--no-fast",
        "--no-channels-last", "--no-cuda-graphs", "--compile", "--n-train", "all",
        "--eps", "6/255", "--method", "trades", "--method-options", '{"beta": 2}',
        "--random-start", "none", "--milestones", "0.5,0.8", "--first-epoch-lr", "0.02",
        "--target-clean-forward", "--keep-last", "3", "--n-holdout", "16"])
    cfg = train_config(args)
    assert (cfg.amp, cfg.fast, cfg.channels_last, cfg.cuda_graphs, cfg.compile) == (
        False, False, False, False, True)
    assert cfg.n_train is None and cfg.eps == pytest.approx(6 / 255)
    assert cfg.method_options == {"beta": 2} and cfg.random_start is None
    assert cfg.milestones == (0.5, 0.8) and cfg.first_epoch_lr == 0.02
    assert cfg.target_clean_forward and (cfg.keep_last, cfg.n_holdout) == (3, 16)
    flags = {a.dest for a in parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert {f.name for f in dataclasses.fields(train.Config)} <= flags
    # A flag not given leaves the profile's value.
    plain = train_config(parser().parse_args(["train", "--out", str(tmp_path), "--profile",
                                              "cpu"]))
    assert plain == train.config("cpu")


# ---------------------------------------------------------------------- imports flow one way
#: Each module may import only modules before it (the figures import none of the rest).
LAYERS = ("plotstyle", "study_figures", "viz", "attacks", "models", "data", "distributed",
          "evaluate", "methods", "fast", "config", "runs", "diagnostics", "train", "labels",
          "pretrained", "lesson_models", "compare", "evidence", "study", "bench", "exercises",
          "papermill_engine", "nbgrader_stubs", "widgets", "notebook", "__main__", "__init__")


def _package_imports(path: Path, level: int = 1) -> set[str]:
    """The package's modules that ``path`` imports (``level``: how many dots name the package
    from there: 1 for a module of the package, 2 for a module of one of its subpackages)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == level:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dynat_lite."):
            found.add(node.module.split(".")[1])
    return found


def _modules() -> dict[str, set[str]]:
    """Each module of the package (a subpackage counts as one) -> the modules it imports."""
    found = {p.stem: _package_imports(p) for p in PACKAGE.glob("*.py")}
    for sub in (d for d in PACKAGE.iterdir() if (d / "__init__.py").exists()):
        found[sub.name] = set().union(*(_package_imports(p, level=2) for p in sub.glob("*.py")))
    return found


def test_imports_flow_one_way():
    modules = _modules()
    assert set(modules) <= set(LAYERS), f"place {sorted(set(modules) - set(LAYERS))} in LAYERS"
    assert "exercises" in modules  # the subpackage is checked too
    for module, imported in modules.items():
        allowed = set(LAYERS[:LAYERS.index(module)])
        assert imported <= allowed, f"{module} imports {sorted(imported - allowed)}"


def test_no_module_is_over_600_lines():
    files = list(PACKAGE.glob("*.py")) + list(PACKAGE.glob("*/*.py"))
    long = {str(p.relative_to(PACKAGE)): n for p in files
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, f"modules over 600 lines: {long}"


# --------------------------------------------------------- kept checkpoints, chosen honestly
class Forbidden:
    """A test split that must not be read: any use raises."""

    def __getattr__(self, name):
        raise AssertionError("the test split was read")

    def __getitem__(self, item):
        raise AssertionError("the test split was read")

    def __len__(self):
        raise AssertionError("the test split was read")


def test_kept_epochs_are_chosen_on_held_out_training_images_never_the_test_set(tmp_path,
                                                                                monkeypatch):
    ds = data.load("synthetic", n_train=160, n_test=32, seed=0)
    cfg = train.config("smoke", n_train=160, n_test=32, epochs=4, batch_size=32, steps=1,
                       n_eval=16, eval_steps=1, keep_last=2, n_holdout=32)
    trained_on = []
    real_batches = data.Batches

    def recording_batches(x, y, *args, **kwargs):
        trained_on.append(x)
        return real_batches(x, y, *args, **kwargs)

    monkeypatch.setattr(data, "Batches", recording_batches)
    result = train.fit(cfg, out=tmp_path, dataset=ds, progress=False)
    monkeypatch.setattr(data, "Batches", real_batches)
    x_held = ds.x_train[-32:]
    assert trained_on and all(len(x) == 128 and torch.equal(x, ds.x_train[:128])
                              for x in trained_on)
    kept = train.kept_checkpoints(tmp_path)
    assert list(kept) == [3, 4]  # the last keep_last epochs
    assert torch.equal(train.load_model(kept[4])(x_held), result.target(x_held))

    blind = data.Dataset(ds.name, ds.x_train, ds.y_train, Forbidden(), Forbidden(), ds.classes)
    path, pick = train.pick_kept(tmp_path, dataset=blind)
    by_hand = {e: evaluate.correct_under(train.load_model(p), x_held, ds.y_train[-32:], "pgd-1",
                                         seed=cfg.seed).float().mean().item()
               for e, p in kept.items()}
    assert pick.accuracy == by_hand and pick.n == 32 and pick.attack == "pgd-1"
    assert pick.epoch == max(by_hand, key=lambda e: (by_hand[e], e)) and path == kept[pick.epoch]

    report = tmp_path / "best.json"
    assert main(["evaluate", str(tmp_path), "--epoch", "best", "--n", "8", "--attacks", "clean",
                 "--device", "cpu", "--json", str(report)]) == 0
    saved = json.loads(report.read_text())
    assert saved["epoch"] == pick.epoch and saved["picked"]["epoch"] == pick.epoch


def test_choosing_needs_kept_epochs_and_held_out_images(tmp_path):
    ds = data.load("synthetic", n_train=64, n_test=16, seed=0)
    base = dict(n_train=64, n_test=16, epochs=2, batch_size=32, steps=1, n_eval=8, eval_steps=1)
    train.fit(train.config("smoke", **base), out=tmp_path / "one", dataset=ds, progress=False)
    with pytest.raises(train.CheckpointError, match="keep_last"):
        train.pick_kept(tmp_path / "one", dataset=ds)
    train.fit(train.config("smoke", keep_last=2, **base), out=tmp_path / "two", dataset=ds,
              progress=False)
    with pytest.raises(ValueError, match="n_holdout"):
        train.pick_kept(tmp_path / "two", dataset=ds)


# --------------------------------------------------------------------------- the protocols
@pytest.mark.parametrize("name, eps, n", [("authors", 0.031, 20), ("standard", 8 / 255, 24)])
def test_protocols_fix_budget_and_images_and_label_the_report(name, eps, n):
    net = TinyNet().eval()
    x, y = torch.rand(24, 3, 32, 32), torch.randint(0, 10, (24,))
    chosen = dataclasses.replace(evaluate.PROTOCOLS[name], n=None if name == "standard" else 20)
    protocols = {**evaluate.PROTOCOLS, name: chosen}
    with pytest.MonkeyPatch.context() as m:
        m.setattr(evaluate, "PROTOCOLS", protocols)
        report = evaluate.protocol_report(net, x, y, name, attacks=("clean", "pgd-2"),
                                          checks=False)
        text = str(report)
    assert report.eps == pytest.approx(eps) and report.n == n
    assert report.to_dict()["protocol"] == name and chosen.title in text
    clean = evaluate.correct_under(net, x[:n], y[:n]).float().mean().item()
    assert report.accuracy["clean"] == clean
    with pytest.raises(ValueError, match="authors, standard|standard, authors"):
        evaluate.protocol_report(net, x, y, "paper")


def test_the_authors_protocol_is_standard_autoattack_at_0031_on_1000_images():
    authors, standard = evaluate.PROTOCOLS["authors"], evaluate.PROTOCOLS["standard"]
    assert (authors.eps, authors.n, authors.attacks) == (0.031, 1000, ("clean", "aa_standard"))
    assert (standard.eps, standard.n) == (8 / 255, None) and "aa_standard" in standard.attacks


def test_evaluate_command_labels_the_protocol(tmp_path):
    ds = data.load("synthetic", n_train=64, n_test=16, seed=0)
    cfg = train.config("smoke", n_train=64, n_test=16, epochs=1, batch_size=32, steps=1,
                       n_eval=8, eval_steps=1)
    train.fit(cfg, out=tmp_path, dataset=ds, progress=False)
    report = tmp_path / "authors.json"
    assert main(["evaluate", str(tmp_path), "--protocol", "authors", "--attacks", "clean",
                 "--device", "cpu", "--json", str(report)]) == 0
    saved = json.loads(report.read_text())
    assert saved["protocol"] == "authors" and saved["eps"] == 0.031 and saved["n"] == 16
    assert main(["evaluate", str(tmp_path), "--protocol", "authors", "--n", "8"]) == 2


def test_the_bench_reference_is_the_authors_step():
    from dynat_lite import bench

    assert bench.GUIDE == train.PROFILES["paper"]["guide_model"] == "resnet18-cifar"
    assert train.PROFILES["paper"]["target_clean_forward"]
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    losses, stats = [], []
    for clean_forward in (True, False):
        guide, target = TinyNet(seed=1).train(), TinyNet(seed=2).train()
        torch.manual_seed(0)
        losses.append(bench.reference_dynat_loss(guide, target, x, y, steps=1,
                                                 clean_forward=clean_forward))
        stats.append(target.bn.running_mean.clone())
    # The clean forward changes the target's BatchNorm statistics, not the loss.
    assert torch.equal(losses[0], losses[1])
    assert not torch.equal(stats[0], stats[1])

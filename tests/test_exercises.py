"""The exercise checker: every reference solution and correct variants pass; unwritten
exercises (a `raise NotImplementedError` or a blank `...` left) say so; the checkers' inputs show
every mistake. The plausible mistakes and their messages: tests/test_exercise_mistakes.py."""
from __future__ import annotations

import copy
import statistics
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dynat_lite import attacks, diagnostics, evaluate, exercises, methods
from dynat_lite.exercises import ExerciseError, check
from exercise_support import CORRECT, REFERENCES, fgsm
from mistake_support import MISTAKES


# --------------------------------------------------------------------------------------- tests
def _id(fn) -> str:
    return getattr(fn, "__name__", "fn")


@pytest.mark.parametrize("name", exercises.NAMES)
def test_reference_passes_with_one_check_line(name, capsys):
    check(name, REFERENCES[name])
    out = capsys.readouterr().out
    assert out.startswith(f"✓ {name}: ") and out.count("\n") == 1, out


@pytest.mark.parametrize("name, fn", [(n, f) for n, fs in CORRECT.items() for f in fs],
                         ids=lambda v: v if isinstance(v, str) else _id(v))
def test_correct_variant_passes(name, fn, capsys):
    check(name, fn)
    assert capsys.readouterr().out.startswith(f"✓ {name}: ")


@pytest.mark.parametrize("name", exercises.NAMES)
def test_an_unwritten_exercise_says_so_without_a_library_traceback(name):
    def stub(*args):
        raise NotImplementedError("Exercise: write this function")

    with pytest.raises(ExerciseError) as info:
        check(name, stub)
    err = info.value
    assert "not written yet" in str(err) and exercises.TASKS[name] in str(err)
    assert err.__cause__ is None and err.__suppress_context__  # raise ... from None
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if Path(f.filename).parent.name == "exercises"]
    assert [f.name for f in frames] == ["check"]


def test_a_crash_in_the_students_function_is_reported_with_its_own_traceback():
    def broken(logits, y):
        return logits[:, 99]  # IndexError in the student's code

    with pytest.raises(ExerciseError, match="raised IndexError") as info:
        check("cw_margin", broken)
    assert isinstance(info.value.__cause__, IndexError)
    frames = traceback.extract_tb(info.value.__cause__.__traceback__)
    assert frames[-1].name == "broken"


def test_jupyter_shows_the_message_without_the_checkers_frames():
    with pytest.raises(ExerciseError) as info:
        check("fgsm", lambda model, x, y, eps: x + eps)     # no gradient at all
    lines = info.value._render_traceback_()
    assert lines[-1].endswith(str(info.value)) and "ExerciseError" in lines[-1]
    assert not any(str(Path(exercises.__file__).parent) in line for line in lines), lines


def test_jupyter_shows_the_students_frames_when_their_function_crashed():
    def broken(logits, y):
        return logits[:, 99]  # IndexError in the student's code

    with pytest.raises(ExerciseError) as info:
        check("cw_margin", broken)
    text = "\n".join(info.value._render_traceback_())
    assert "in broken" in text and "logits[:, 99]" in text and "IndexError" in text
    assert str(Path(exercises.__file__).parent) not in text
    assert text.splitlines()[-1].endswith(str(info.value))


def test_ipython_uses_the_short_rendering():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    with pytest.raises(ExerciseError) as info:
        check("label_agreement", lambda labels, y: 2.0)
    error = {}
    shell._showtraceback = lambda etype, evalue, stb: error.update(stb=stb)
    try:
        raise info.value
    except ExerciseError:
        shell.showtraceback()
    assert error["stb"] == info.value._render_traceback_()


def test_check_rejects_an_unknown_name_or_a_non_function():
    with pytest.raises(ValueError, match="fgsm"):
        check("fgms", fgsm)
    with pytest.raises(TypeError, match="your function"):
        check("fgsm", None)


# ---------------------------------------------------- the checker's inputs show every mistake
def test_dynat_case_separates_every_label_source():
    case = exercises.lesson03._DynatCase()
    assert (case.labels != case.y).any(), "y must differ from the dynamic labels"
    for labels_eval in case.labels_eval:
        assert (case.labels != labels_eval).any(), "eval-mode labels must differ"
    library = methods.dynat_loss(*case.nets(), case.x, case.y, eps=case.EPS,
                                 step_size=case.STEP, steps=case.STEPS, beta=2.0,
                                 random_start=None)[0]
    assert torch.allclose(library, case.loss(2.0), rtol=1e-10)


def test_pgd_inputs_reach_the_box_and_the_ball():
    x = exercises.support._edge_images(5)
    reference = attacks.pgd(exercises.support._TinyNet(4).eval(), x, exercises.support._classes(5),
                            eps=0.06, step_size=0.025, steps=6, random_start=None)
    assert ((reference == 0) | (reference == 1)).any(), "the clamp to [0, 1] matters"
    assert torch.isclose((reference - x).abs(), torch.tensor(0.06, dtype=x.dtype)).any()


def test_margin_case_has_a_right_row_and_a_row_of_negative_logits():
    logits, y = exercises.lesson04._margin_case()
    assert (logits.argmax(1) == y).any() and (logits.argmax(1) != y).any()
    others = logits.detach().masked_fill(F.one_hot(y, 5).bool(), float("-inf"))
    assert ((others.max(1).values < 0) & (logits.argmax(1) == y)).any()


def test_the_masked_models_zero_gradient_fractions():
    net = exercises.support._TinyNet(19).float()
    x = exercises.support._images(20, n=8, dtype=torch.float32)
    x[:, 0, 0, 0] = torch.tensor([0.9, 0.1, 0.2, 0.7, 0.3, 0.6, 0.4, 0.2])
    y = exercises.support._classes(21, n=8)
    assert evaluate.zero_gradient_fraction(net, x, y) == 0.0
    assert evaluate.zero_gradient_fraction(evaluate.Quantized(net, 4), x, y) == 1.0
    masked = exercises.lesson06._PartlyMasked(copy.deepcopy(net))
    assert evaluate.zero_gradient_fraction(masked, x, y) == 3 / 8


def test_collapse_history_separates_every_mistake_whatever_the_median():
    history = exercises.lesson03._collapse_history()
    expected = exercises.lesson03._collapse_rule(history)
    assert expected == [r["epoch"] for r in history if diagnostics.is_collapsed(r["steps"])]
    assert all("collapsed" not in r for r in history), "the function must apply the rule itself"
    for median in (statistics.median_low, statistics.median_high, np.median,
                   lambda v: torch.tensor(v).median().item()):
        assert exercises.lesson03._collapse_rule(history, average=median) == expected
    answers = [tuple(a) for a, _ in exercises.lesson03._collapse_mistakes(history)]
    assert len(set(answers)) == len(answers) and tuple(expected) not in answers


@pytest.mark.parametrize("name", ["fgsm", "pgd", "inner_max", "project"])
def test_an_answer_in_the_wrong_dtype_is_told_its_dtype(name):
    from dynat_lite import attacks

    def as_float32(*args):
        if name == "project":
            return attacks.project(*args).float()
        model, x, lab, eps, *rest = args
        if name == "fgsm":
            return attacks.fgsm(model, x, lab, eps=eps).float()
        step, steps = rest
        was = model.training
        model.eval()
        out = attacks.pgd(model, x, lab, eps=eps, step_size=step, steps=steps,
                          random_start=None)
        model.train(was)
        return out.float()

    with pytest.raises(ExerciseError, match="has dtype torch.float32, but the inputs are "
                                            "torch.float64"):
        check(name, as_float32)


def test_every_exercise_has_two_variants_and_three_mistakes():
    assert len(exercises.NAMES) == 18 and exercises.NAMES == tuple(exercises.TASKS)
    for name in exercises.NAMES:
        assert len(CORRECT[name]) >= 2, name
        assert sum(m.name == name for m in MISTAKES) >= 3, name


# ------------------------------------------------------------------------------------ blanks
def fgsm_one_blank(model, x, y, eps):
    with attacks.eval_mode(model):
        x_in = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x_in), y)
        grad = ...  # YOUR CODE
        print(loss)
    return (x + eps * grad.sign()).clamp(0, 1)


def wilson_blank_return(successes, n, z=1.96):
    return ...


def _calls_a_helper_with_a_blank(guide, target, optimizer, x, y, eps, step_size, steps, beta):
    loss = _helper_with_a_blank(guide, target, x, y, eps, step_size, steps, beta)
    loss.backward()
    return loss.detach()


def _helper_with_a_blank(guide, target, x, y, eps, step_size, steps, beta):
    labels = ...  # YOUR CODE
    return F.cross_entropy(guide(x), y) + beta * F.cross_entropy(target(x), labels)


@pytest.mark.parametrize("name, fn", [("fgsm", fgsm_one_blank),
                                      ("wilson_interval", wilson_blank_return)])
def test_a_blank_left_in_the_function_says_not_written_yet(name, fn):
    with pytest.raises(ExerciseError) as info:
        check(name, fn)
    message = str(info.value)
    assert f"{name} is not written yet: fill in the blanks (`...`)" in message, message
    assert exercises.TASKS[name] in message
    assert "= ..." in message or "return ..." in message
    assert info.value.__cause__ is None


def test_a_student_version_with_blanks_and_stubs_names_both():
    def wilson_interval(successes, n, z=1.96):
        raise NotImplementedError("Exercise: write this function")
        centre = ...  # YOUR CODE
        return centre

    with pytest.raises(ExerciseError) as info:
        check("wilson_interval", wilson_interval)
    message = str(info.value)
    assert "fill in the blanks (`...`)" in message and "the first: `centre = ...  # YOUR CODE`" \
        in message
    assert "replace its 1 line `raise NotImplementedError(...)`" in message


def test_a_blank_in_a_function_it_calls_says_not_written_yet():
    with pytest.raises(ExerciseError) as info:
        check("dynat_step", _calls_a_helper_with_a_blank)
    message = str(info.value)
    assert "dynat_step is not written yet" in message and "Fill in the blanks (`...`)" in message
    assert "ellipsis" in message and exercises.TASKS["dynat_step"] in message


def test_a_blank_whose_source_cannot_be_read_is_still_recognized():
    namespace = {}
    exec("def cw_margin(logits, y):\n    return ...\n", namespace)  # no source file
    assert exercises.support._blanks(namespace["cw_margin"]) == ([], 0)
    with pytest.raises(ExerciseError, match="cw_margin is not written yet: a blank"):
        check("cw_margin", namespace["cw_margin"])


def test_code_that_only_looks_like_a_blank_is_not_one():
    lines = ["x[..., 0] = 1", "y = x[...]", "if a == ...:", "z = f(...)", "    w = ... + 1"]
    assert not any(exercises.support._BLANK_LINE.match(line) for line in lines)
    blanks = ["x = ...", "    x_adv = ...  # YOUR CODE", "a, b = ...", "self.w = ...",
              "    return ..."]
    assert all(exercises.support._BLANK_LINE.match(line) for line in blanks)


# -------------------------------------------------------------------- the new exercises' inputs
def test_step_cost_counts_come_from_hooks_on_the_library_step(monkeypatch):
    from dynat_lite import methods as library
    from dynat_lite.exercises import lesson05

    lesson05.counted_passes.cache_clear()
    assert lesson05.counted_passes("dynat", 2) == dict(
        target_forward=3, target_backward=3, guide_forward=1, guide_backward=1)
    # A library step that ran the guide at every PGD step would be counted so.
    real = library.dynat_loss

    def guide_each_step(guide, target, x, y, **kw):
        for _ in range(kw["attack"].steps):
            guide(x)
        return real(guide, target, x, y, **kw)

    monkeypatch.setitem(library.METHODS, "dynat", library.Method("dynat", guide_each_step,
                                                                 uses_guide=True))
    lesson05.counted_passes.cache_clear()
    try:
        assert lesson05.counted_passes("dynat", 2)["guide_forward"] == 3
    finally:
        lesson05.counted_passes.cache_clear()


def test_the_dynat_step_case_shows_the_leftover_gradients():
    case = exercises.lesson03._StepCase()
    guide, target, _ = case.prepared()
    assert not guide.training and not target.training
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0)
               for p in [*guide.parameters(), *target.parameters()] if p.requires_grad)
    (g, t), _ = case.updates(case.BETA)
    for variant, _message in exercises.lesson03._STEP_MISTAKES:
        (g2, t2), _ = case.updates(case.BETA, variant)
        assert not (exercises.lesson03._same(g, g2) and exercises.lesson03._same(t, t2)), variant


def test_wilson_cases_reach_the_rounding_that_needs_the_clamp():
    import math

    def unclamped(p, n, z=1.96):
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half

    assert any(unclamped(0.0, n)[0] < 0 for n in range(1, 41))
    assert any(unclamped(1.0, n)[1] > 1 for n in range(1, 41))

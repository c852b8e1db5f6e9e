"""One time budget per student: a forged "JAX-only" error buys no more time than Keras 2 code gets, and nothing
outlasts the budget.

Each hostile case has its own submission.  Assertions are on the limits and budgets the grader recorded
(never on wall time), so machine load cannot decide them.
"""
import dataclasses
import re
import shutil
import time
from pathlib import Path

import pytest

from conftest import TUTORIAL6, needs_sandbox


#: a first cell that raises what the JAX backend would (the grader then re-runs on TensorFlow), then busy loops
FORGED_JAX_ERROR = ("# %%\nraise RuntimeError('TracerArrayConversionError: The numpy.ndarray conversion method "
                    "__array__() was called on traced array with shape float32[32,1]')\n"
                    "# %%\nwhile True:\n    pass\n"
                    "# %%\nwhile True:\n    pass\n")


def _timings(assignment, *backends):
    """The assignment's recorded timings, with a TensorFlow entry as if the reference had been timed there."""
    jax = assignment.timings.get("jax")
    extra = [dataclasses.replace(jax, backend=b, notebook_s=jax.notebook_s * 10, slowest_cell_s=jax.slowest_cell_s * 10)
             for b in backends]
    return dataclasses.replace(assignment.timings, backends=(jax, *extra))


def test_a_tensorflow_rerun_gets_the_limits_of_a_run_on_tensorflow_never_the_fixed_maximums(assignment):
    """Without timings on TensorFlow, a re-run there keeps JAX's limits, or, where the batch has them, takes
    the Keras 2 path's (a TensorFlow fit is as slow there: H5 saw the sheet's 2a of a student using tf.nn
    activations, re-run on TensorFlow, cut at JAX's 30 s); never the fixed maximums a forged error would buy."""
    from grader.execute.limits import BACKENDS, KERAS2, KERAS2_LOOP_FACTOR, BatchLimits, time_limits

    settings = dataclasses.replace(assignment.notebooks, min_cell_limit_s=1, min_notebook_limit_s=1)
    only_jax = BatchLimits(tuple((b, time_limits(settings, assignment.timings, b, 1.0)) for b in BACKENDS))
    jax, tf = only_jax.for_backend("jax"), only_jax.for_backend("tensorflow")
    assert (tf.cell.seconds, tf.notebook.seconds) == (settings.cell_timeout_s, settings.notebook_timeout_s)
    rerun = only_jax.for_rerun("tensorflow", "jax")
    assert (rerun.backend, rerun.cell.seconds, rerun.notebook.seconds) == \
        ("tensorflow", jax.cell.seconds, jax.notebook.seconds)
    assert "kept for the re-run on tensorflow" in rerun.cell.why and "kept" in rerun.notebook.why

    keras2 = time_limits(settings, assignment.timings, "jax", 1.0, KERAS2_LOOP_FACTOR, run_on="tensorflow")
    with_keras2 = BatchLimits(only_jax.by_backend + ((KERAS2, keras2),))
    rerun = with_keras2.for_rerun("tensorflow", "jax")
    assert (rerun.backend, rerun.cell.seconds, rerun.notebook.seconds) == \
        ("tensorflow", keras2.cell.seconds, keras2.notebook.seconds)
    assert rerun.cell.seconds > jax.cell.seconds and rerun.notebook.seconds > jax.notebook.seconds
    assert "the Keras 2 path's" in rerun.cell.why and "the Keras 2 path's" in rerun.notebook.why

    timed = _timings(assignment, "tensorflow")  # the reference's own timings on TensorFlow decide
    both = BatchLimits(tuple((b, time_limits(settings, timed, b, 1.0)) for b in BACKENDS))
    assert both.for_rerun("tensorflow", "jax") == both.for_backend("tensorflow")
    assert both.for_backend("tensorflow").cell.seconds > jax.cell.seconds

    fixed = dataclasses.replace(settings, time_limits="fixed")
    fixed_limits = BatchLimits(tuple((b, time_limits(fixed, None, b, None)) for b in BACKENDS))
    assert fixed_limits.for_rerun("tensorflow", "jax") == fixed_limits.for_backend("tensorflow")


def test_the_student_clock_caps_a_run_at_what_is_left(assignment):
    from grader.execute.limits import StudentClock, time_limits

    limits = time_limits(assignment.notebooks, assignment.timings, "jax", 1.0)
    roomy = StudentClock(10_000, "the budget")
    assert roomy.cap(limits) == limits
    short = StudentClock(100, "the budget", started=time.monotonic() - 95)  # 5 s left at most
    capped = short.cap(limits)
    assert capped.notebook.seconds <= 5 and capped.cell.seconds <= 5
    assert "what was left of the budget (100 s)" in capped.notebook.why
    spent = StudentClock(100, "the budget", started=time.monotonic() - 200)
    assert spent.left() == 0 and spent.cap(limits).notebook.seconds == 0


def _spec_with_small_minimums(tmp_path) -> Path:
    """tutorial6 with a small minimum cell limit, so that the busy loops end soon (the limits still come from the
    reference's recorded timings on JAX; TensorFlow has none).  The notebook's minimum is roomy: its limit counts
    the kernels' starts, and on a machine that gets busy after the probe's reading two TensorFlow kernel starts
    could use up 40 s, leaving no loop to be stopped at the cell limit under test."""
    spec = tmp_path / "assignment"
    shutil.copytree(TUTORIAL6, spec)
    toml = spec / "assignment.toml"
    text = re.sub(r"\nmin_cell_limit_s = \d+", "\nmin_cell_limit_s = 5", toml.read_text())
    text = re.sub(r"\nmin_notebook_limit_s = \d+", "\nmin_notebook_limit_s = 600", text)
    toml.write_text(text)
    return spec


@needs_sandbox
def test_a_forged_jax_only_error_buys_no_more_time_than_keras2_code_gets(tmp_path):
    """Hostile: a first cell raising a forged TracerArrayConversionError, then two busy loops.  Before, the
    re-run on TensorFlow ran under the fixed maximums; now under the limits of a run on TensorFlow, which any
    Keras 2 import gets too (the assignment's cell maximum set to 10 s here, so that the loops end soon)."""
    from grader.execute import execute_notebook
    from grader.execute.limits import batch_limits, secs
    from grader.harvest import Harvester
    from grader.intake import collect_one
    from grader.spec import load_assignment

    spec = _spec_with_small_minimums(tmp_path)
    toml = spec / "assignment.toml"
    toml.write_text(re.sub(r"\ncell_timeout_s = \d+", "\ncell_timeout_s = 10", toml.read_text()))
    assignment = load_assignment(spec)
    limits = batch_limits(assignment)
    keras2 = limits.for_keras2("jax")  # what any Keras 2 import gets: the reference's times, not the fixed limits
    assert keras2.scale is not None and limits.for_backend("tensorflow").scale is None
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "forged.py").write_text(FORGED_JAX_ERROR)
    sub = collect_one(tmp_path / "s", assignment, "s")
    with execute_notebook(assignment, sub.files[0], sub.root, harvester=Harvester(assignment), limits=limits,
                          seed=1) as ex:
        summary = ex.summary()
        cells = ex.run.cells
        failures = ex.failures
    assert summary["backend"] == "tensorflow"  # the forged error did make it re-run
    assert any("run again on the TensorFlow backend" in n for n in summary["notes"])
    recorded = summary["limits"]
    assert (recorded["backend"], recorded["cell_s"], recorded["notebook_s"]) == \
        ("tensorflow", keras2.cell.seconds, keras2.notebook.seconds)
    assert "the Keras 2 path's), for the re-run on tensorflow" in recorded["cell_why"]
    loops = cells[1:]
    assert all(c.status in ("timeout", "skipped") for c in loops), [(c.status, c.error_name) for c in loops]
    assert any(c.status == "timeout" for c in loops)
    assert all(c.limit_s <= keras2.cell.seconds for c in loops if c.status == "timeout")
    stopped = [f for f in failures if f["status"] == "timeout"]
    assert stopped and all(f"{secs(keras2.cell.seconds)} s" in f["explanation"] for f in stopped)


SLOW_RECIPE = ("# %%\nimport numpy as np\nfrom tensorflow.keras.models import Sequential\n"
               "from tensorflow.keras.layers import Dense\n"
               "x = np.linspace(0, 1, 200)\ny = x.copy()\ny[x < 0.1] = 0\ny[x >= 0.1] = 0.5*(x[x >= 0.1] - 0.1)\n"
               "y[x >= 0.6] = 0.25 - 0.25/0.2*(x[x >= 0.6] - 0.6)\ny[x > 0.8] = 0\n"
               "# %%\nmodel = Sequential()\nmodel.add(Dense(units=150, activation='relu', input_dim=1))\n"
               "model.add(Dense(units=1, activation='linear'))\n"
               "model.compile(loss='mean_squared_error', optimizer='sgd')\n"
               "model.fit(x, y, epochs=2, batch_size=1, verbose=0)\n")


@needs_sandbox
def test_retraining_gets_only_what_is_left_of_the_gradescope_budget(tmp_path, assignment, evaluator):
    """Hostile: a 1c recipe (150 ReLUs) trained with batch size 1 that misses the pass threshold, so the grader
    re-trains it: on Gradescope the re-training gets only what the run's budget has left, never its own 600 s."""
    from grader.gradescope import RESULTS_RESERVE_S, submission_clock
    from grader.intake import collect_one
    from grader.session import GradingSession

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "slow.py").write_text(SLOW_RECIPE)
    sub = collect_one(tmp_path / "s", assignment, "s")
    budget_s = 150.0
    clock = submission_clock(budget_s, time.monotonic())
    assert clock.total_s == budget_s - RESULTS_RESERVE_S
    measured = GradingSession(assignment, evaluator.seeds, evaluator=evaluator).measure(sub, clock=clock)
    records = [e.retraining for _, e in measured.evaluated if e.retraining is not None]
    assert records, "the recipe was not re-trained: the test no longer shows the budget"
    record = records[0]
    own = assignment.limits.retraining.budget_s
    notebook_s = measured.notebooks[0]["seconds"]
    assert record.budget < own
    assert record.budget <= clock.total_s - notebook_s + 0.1  # the notebook's time was spent before it
    assert "autograder" in record.budget_of
    assert measured.notebooks[0]["limits"]["notebook_s"] <= clock.total_s


@needs_sandbox
def test_a_spent_budget_runs_loads_and_evaluates_nothing_more(tmp_path, assignment, evaluator, model_dir):
    """A student whose whole time is spent: the notebook's limit is what is left (nothing), and a model file
    is not evaluated; each says why."""
    from grader.execute.limits import StudentClock
    from grader.intake import collect_one
    from grader.session import GradingSession

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "nb.py").write_text("# %%\nprint('never')\n# %%\nwhile True:\n    pass\n")
    shutil.copy(model_dir / "2a.h5", tmp_path / "s" / "2a.h5")
    sub = collect_one(tmp_path / "s", assignment, "s")
    spent = StudentClock(30, "the test's budget", started=time.monotonic() - 60)
    measured = GradingSession(assignment, evaluator.seeds, evaluator=evaluator).measure(sub, clock=spent)
    nb = measured.notebooks[0]
    assert nb["limits"]["notebook_s"] == 0 and "what was left of the test's budget (30 s)" in nb["limits"]["notebook_why"]
    assert nb["cells_run"] == 0
    model = next(f for f in measured.files if f.name == "2a.h5")
    assert model.outcome == "error" and "used up the test's budget" in model.message

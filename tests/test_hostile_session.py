"""Hostile submissions against what session 2026-12-07 added: a saved model.h5 credited by its fit's recipe, and
Keras 2 runs' longer time limits inside the student's whole time budget.

Each case is its own hostile submission, graded by the real parts (capture hook, evaluation and training
workers, scoring).  Assertions are on grades and words, never on time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from conftest import TEST_SECRET, TUTORIAL6, needs_sandbox, task_of
from test_retrain import _measure, stuck  # noqa: F401 (stuck: the real stuck capture of the sheet's 2a recipe)
from grader.measure import Measurements
from grader.records import Provenance
from grader.score import score_student


def _with_saved(evaluator, measured, path):
    """``measured`` with ``path`` as the model.h5 the same run saved."""
    from grader.intake.formats import sniff_format
    from grader.records import Source

    source = Source("model.h5 (saved by work.py)", sniff_format(path), "3", provenance=Provenance("saved"))
    evaluation = evaluator.evaluate(path, None, provenance=source.provenance)
    return Measurements("s", [], [], [], {}, measured.evaluated + [(source, evaluation)])


def test_a_saved_file_with_the_fits_weights_in_another_network_gets_no_recipe_credit(assignment, evaluator, stuck,
                                                                                       tmp_path):
    """Hostile: model.h5 holds, byte for byte, the weights of the notebook's stuck 2a fit (whose recipe the
    grader re-trains to a pass), but under other activations (sigmoid outputs, linear hidden layers): the
    weights' digest is the fit's, the network is not.  Before, it was called 'the model your notebook trained'
    and given task 3's full marks."""
    import keras

    measured = _measure(assignment, evaluator, stuck, tmp_path)
    (_, fit), = measured.evaluated
    assert fit.retraining is not None and task_of(score_student(assignment, measured), "2a").score > 0  # premise
    trained = keras.saving.load_model(stuck.model_path)
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="linear"),
                              keras.layers.Dense(4, activation="linear"), keras.layers.Dense(2, activation="sigmoid")])
    other.set_weights(trained.get_weights())
    other.save(tmp_path / "model.h5")
    with_saved = _with_saved(evaluator, measured, tmp_path / "model.h5")
    (_, saved) = with_saved.evaluated[-1]
    assert saved.weights_sha256 == fit.weights_sha256  # the premise: the digest cannot tell them apart
    three = task_of(score_student(assignment, with_saved), "3")
    assert "your notebook trained" not in three.message and "re-trained" not in three.message, three.message
    assert three.score < 10, three.message


#: Keras 2 code (the scan sends it to tf_keras) that trains a model, then spends the rest of the student's time
KERAS2_THEN_HANG = ("# %%\nimport numpy as np\nfrom tensorflow.python.keras.models import Sequential\n"
                    "from tensorflow.python.keras.layers import Dense\n"
                    "x = np.linspace(-1, 1, 40).reshape(-1, 1)\n"
                    "model = Sequential([Dense(8, activation='relu', input_dim=1), Dense(1)])\n"
                    "model.compile(loss='mse', optimizer='sgd')\nmodel.fit(x, x ** 2, epochs=3, verbose=0)\n"
                    "# %%\nwhile True:\n    pass\n"
                    "# %%\nprint('never reached')\n")


@needs_sandbox
def test_a_keras2_run_that_spends_the_budget_keeps_its_models(tmp_path):
    """Hostile (and what a slow honest tf_keras fit does under the x100 limits): a Keras 2 script trains a model,
    then loops until the student's whole time is spent; a classmate is graded beside it (``-j 2``).  Its cell
    failed on Keras 2, so it is run again on Keras 3, which the spent budget gives no time: every cell is
    skipped.  Before, 'none failed' there, so the empty Keras 3 run replaced the Keras 2 run and its model; now
    that run is not even started (its kernel's start came on top of the spent budget)."""
    spec = tmp_path / "assignment"
    shutil.copytree(TUTORIAL6, spec)
    toml = spec / "assignment.toml"
    # the premise, whatever the calibration's timings: no cell limit stops the loop before the budget does (90 s:
    # room for a Keras 2 kernel's start and its 3-epoch fit on a busy machine, and no more of the suite's time)
    text = re.sub(r"\nstudent_time_s = \d+", "\nstudent_time_s = 90", toml.read_text())
    text = re.sub(r'\ntime_limits = "reference"', '\ntime_limits = "fixed"', text)
    toml.write_text(re.sub(r"\ncell_timeout_s = \d+", "\ncell_timeout_s = 1200", text))
    for sid, code in (("hangs", KERAS2_THEN_HANG), ("quick", "# %%\nprint('hello')\n")):
        (tmp_path / "subs" / sid).mkdir(parents=True)
        (tmp_path / "subs" / sid / "work.py").write_text(code)
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", "subs", "-a", spec, "-o", "out", "-j", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "GRADER_SECRET": TEST_SECRET})
    assert done.returncode == 0, done.stderr[-3000:]
    students = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    assert set(students) == {"hangs", "quick"}
    (nb,) = students["hangs"]["notebooks"]
    assert nb["limits"]["notebook_s"] <= 90, nb["limits"]  # the budget caps the Keras 2 run's limits
    assert nb["limits"]["cell_s"] == nb["limits"]["notebook_s"], nb["limits"]
    assert nb["keras"] == "2", nb["notes"]
    assert any(f["status"] == "timeout" for f in nb["failures"]), nb["failures"]  # the premise: the loop stopped
    assert nb["models_captured"] >= 1, nb["notes"]
    assert not any("where none failed" in n for n in nb["notes"]), nb["notes"]
    # and the budget spent, no run on current Keras is started at all (it was: a kernel start past the budget)
    assert not any("run again on current Keras" in n or "also run on current Keras" in n for n in nb["notes"]), \
        nb["notes"]


def test_a_keras3_rerun_whose_cells_were_skipped_did_not_do_better():
    """A Keras 3 re-run with a little of the budget left runs a cell or two and skips the rest at the notebook's
    limit: its skipped cells did not run, so it did no better than the Keras 2 run whose one cell failed."""
    from grader.execute import keras2
    from grader.execute.runner import CellRun

    on_keras2 = [CellRun(0, "fit", "ok"), CellRun(1, "loop", "timeout", "CellTimeout"),
                 CellRun(2, "print", "skipped", "NotebookTimeout")]
    on_keras3 = [CellRun(0, "fit", "ok"), CellRun(1, "loop", "skipped", "NotebookTimeout"),
                 CellRun(2, "print", "skipped", "NotebookTimeout")]
    assert not keras2.keras3_did_better(on_keras2, 1, on_keras3, 1)
    assert not keras2.keras3_did_better(on_keras2, 1, [CellRun(i, "", "skipped", "NotebookTimeout")
                                                       for i in range(3)], 0)


@needs_sandbox
def test_scripts_met_after_the_budget_is_spent_start_no_kernel(tmp_path, assignment, evaluator):
    """Hostile: one script spends the student's whole time (a Keras 2 run may now take all of it), and many more
    follow (a submission may hold 500 files).  Each later one started a sandbox and a kernel, past the budget, to
    skip every cell.  Now none is started: each says it was not run because the budget was used up."""
    import time

    from grader.execute.limits import StudentClock
    from grader.intake import collect_one
    from grader.session import GradingSession

    (tmp_path / "s").mkdir()
    for i in range(3):
        (tmp_path / "s" / f"more{i}.py").write_text("# %%\nfrom tensorflow.python.keras.models import Sequential\n"
                                                     "# %%\nwhile True:\n    pass\n")
    sub = collect_one(tmp_path / "s", assignment, "s")
    spent = StudentClock(30, "the test's budget", started=time.monotonic() - 60)
    measured = GradingSession(assignment, evaluator.seeds, evaluator=evaluator).measure(sub, clock=spent)
    assert len(measured.notebooks) == 3
    for nb in measured.notebooks:
        assert nb["limits"]["notebook_s"] == 0 and "what was left of the test's budget" in nb["limits"]["notebook_why"]
        assert nb["cells_run"] == 0 and nb["kernel_restarts"] == 0
        assert any(f"{nb['name']} was not run: the test's budget (30 s) was used up" in n for n in nb["notes"]), \
            nb["notes"]
        assert nb["seconds"] == 0  # no run was timed: no sandbox, no kernel

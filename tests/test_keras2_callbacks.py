"""Keras 2 fits with callbacks: tf_keras trains them epoch by epoch, and the time limits allow for it.

A Keras 2 run's limits are the reference's (timed on Keras 3, every fit fused) times ``KERAS2_LOOP_FACTOR``, so
a student's 2000-epoch fit with ``EarlyStopping`` or their own ``Callback`` is not cut by the grader's speed; a
fit whose callbacks hear no batches runs 64 batches per TensorFlow call (the same weights as tf_keras's own fit).
Limits are set from chosen inputs (a probe reading, the assignment's minimum), never from wall time: the old
rule gives these runs 2 s per cell, the new one 103 s; a cell cut anyway tells the student time ran out.
"""
import dataclasses
import json
import os

import pytest

from conftest import grade_one, needs_sandbox, task_of
from test_keras2 import CURVE

HEAD = """# %%
import numpy as np
import matplotlib.pyplot as plt
from tensorflow.python.keras.models import Sequential
from tensorflow.python.keras.layers import Dense
from tensorflow.python.keras.optimizers import Adam
from tensorflow.python.keras.callbacks import Callback, EarlyStopping
# %%
""" + CURVE + """
# %%
model = Sequential()
model.add(Dense(units=150, activation='relu', input_dim=1))
model.add(Dense(units=1, activation='linear'))
model.compile(loss='mean_squared_error', optimizer=Adam(lr=0.01))
"""

#: the sheet's 1c network and 2000 epochs, each with a callback: EarlyStopping (patient enough to train them
#: all), and a student's own Callback subclass
PATTERNS = {
    "early_stopping": HEAD + """h = model.fit(x, y, epochs=2000, batch_size=32, verbose=0,
              callbacks=[EarlyStopping(monitor='loss', patience=2000)])
print('epochs', len(h.history['loss']))
""",
    "callback_subclass": HEAD + """class Every500(Callback):
    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % 500 == 0:
            print('epoch', epoch + 1, 'loss', logs['loss'])
h = model.fit(x, y, epochs=2000, batch_size=32, verbose=0, callbacks=[Every500()])
print('epochs', len(h.history['loss']))
""",
}


def _limits(assignment, **settings):
    """The batch's limits from a probe that reads half the calibration's time (scale 0.5, the least it may be)
    and the assignment's settings changed by ``settings``: no wall time decides them."""
    from grader.execute.limits import batch_limits

    changed = dataclasses.replace(assignment, notebooks=dataclasses.replace(assignment.notebooks, **settings))
    return changed, batch_limits(changed, probe=lambda: assignment.timings.probe_s * 0.5)


def test_a_keras2_run_gets_limits_that_allow_for_tf_keras_epoch_loop(assignment):
    """With the cell minimum at 1 s, the old rule (the JAX limits, kept for a run on TensorFlow) gives a Keras 2
    run 2 s per cell, which no 2000-epoch fit with a callback makes; the Keras 2 run's limits are the reference's
    times the loop factor, within the assignment's maximums, and say so."""
    from grader.execute.limits import KERAS2_LOOP_FACTOR, secs

    _, limits = _limits(assignment, min_cell_limit_s=1)
    assert limits.for_backend("jax").cell.seconds == 2.0  # the old rule's: JAX's limit, kept on TensorFlow
    keras2 = limits.for_keras2("jax")
    ref = assignment.timings.get("jax")
    assert keras2.backend == "tensorflow" and keras2.scale == 0.5
    assert keras2.cell.seconds == -(-3 * ref.slowest_cell_s * KERAS2_LOOP_FACTOR * 0.5 // 1) == 103.0
    assert keras2.notebook.seconds == min(assignment.notebooks.notebook_timeout_s,
                                          -(-3 * ref.notebook_s * KERAS2_LOOP_FACTOR * 0.5 // 1))
    assert f"×{KERAS2_LOOP_FACTOR} for tf_keras's epoch-by-epoch loop" in keras2.cell.why
    assert f"{secs(ref.slowest_cell_s * 0.5)} s on Keras 3 here" in keras2.cell.why
    assert "keras2: cell 103 s" in limits.describe()  # the TA's line names them
    assert limits.to_json()["backends"]["keras2"]["cell_s"] == 103.0  # and results.json
    # within the assignment's maximums, whatever the machine
    from grader.execute.limits import time_limits

    huge = time_limits(assignment.notebooks, assignment.timings, "jax", 8.0, KERAS2_LOOP_FACTOR, run_on="tensorflow")
    assert (huge.cell.seconds, huge.notebook.seconds) == (assignment.notebooks.cell_timeout_s,
                                                          assignment.notebooks.notebook_timeout_s)
    assert huge.cell.why.startswith("the assignment's maximum (cell_timeout_s)")
    # a batch without the Keras 2 entry (calibration's fixed limits) keeps the re-run rule
    from grader.execute.limits import BatchLimits

    two = BatchLimits(tuple((b, lim) for b, lim in limits.by_backend if b != "keras2"))
    assert two.for_keras2("jax") == two.for_rerun("tensorflow", "jax")


FITS = r"""
import importlib.util, json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
spec = importlib.util.spec_from_file_location("k2", sys.argv[1])
k = importlib.util.module_from_spec(spec); spec.loader.exec_module(k)
if sys.argv[2] == "grader":
    k.install()
else:  # tf_keras's own fit, with the kernel's TensorFlow settings
    os.environ.update(k.TENSORFLOW_ENV)
    import tensorflow as tf
    tf.config.optimizer.set_experimental_options(dict(k.GRAPPLER))
import numpy as np, tf_keras as keras
from tf_keras.callbacks import Callback, EarlyStopping
from tf_keras.layers import Dense

class Epochs(Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.seen = getattr(self, "seen", 0) + 1
        self.per_call = int(self.model._steps_per_execution.numpy())  # batches per TensorFlow call

class Batches(Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.seen = getattr(self, "seen", 0) + 1
        self.per_call = int(self.model._steps_per_execution.numpy())

x = np.linspace(0, 1, 200); y = np.sin(4 * x)
out = {}
for name, make in (("early stopping", lambda: EarlyStopping(monitor='loss', patience=2, min_delta=0.02)),
                   ("epochs", Epochs), ("batches", Batches)):
    keras.utils.set_random_seed(3)
    m = keras.Sequential([Dense(16, activation='relu', input_dim=1), Dense(1)])
    m.compile(loss='mse', optimizer=keras.optimizers.Adam(learning_rate=0.01))
    cb = make()
    h = m.fit(x, y, epochs=40, batch_size=32, verbose=0, callbacks=[cb])
    out[name] = {"weights": [w.tolist() for w in m.get_weights()], "history": h.history,
                 "seen": getattr(cb, "seen", None), "stopped": getattr(cb, "stopped_epoch", None),
                 "per_call": getattr(cb, "per_call", None),
                 "report": dict(k.last_report)}
json.dump(out, open(sys.argv[3], "w"))
"""


def test_a_fit_with_epoch_callbacks_trains_what_tf_keras_trains(tmp_path):
    """A fit whose callbacks hear only epochs runs its batches 64 to a TensorFlow call: the same weights,
    history and early stop as tf_keras's own fit (one batch a call), bit for bit; a callback of batches hears
    every batch, as in tf_keras's own fit."""
    import subprocess
    import sys

    from grader.execute import keras2_kernel

    done = {}
    for mode in ("grader", "keras"):
        out = tmp_path / f"{mode}.json"
        proc = subprocess.run([sys.executable, "-c", FITS, keras2_kernel.__file__, mode, str(out)],
                              capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        done[mode] = json.loads(out.read_text())
    grader, keras = done["grader"], done["keras"]
    for name in keras:
        for key in ("weights", "history", "seen", "stopped"):
            assert grader[name][key] == keras[name][key], (name, key)
        assert grader[name]["report"] == {"fused": False, "fused_fallback": "callbacks"}
        assert keras[name]["report"] == {}  # tf_keras's own fit: no grader in that process
    assert len(keras["early stopping"]["history"]["loss"]) < 40  # it did stop early
    assert keras["epochs"]["seen"] == 40 and keras["batches"]["seen"] == 40 * 7
    # the grader's kernel ran the epochs' callback's fit up to 64 batches a call (tf_keras caps it at the epoch's
    # 7), the batches' one a batch a call
    assert (grader["epochs"]["per_call"], keras["epochs"]["per_call"]) == (7, 1)
    assert (grader["batches"]["per_call"], keras["batches"]["per_call"]) == (1, 1)


@needs_sandbox
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_a_keras2_fit_with_callbacks_is_not_cut_by_the_graders_speed(assignment, evaluator, tmp_path, pattern):
    """The sheet's 1c network, 2000 epochs, with a callback, on Keras 2: under the old rule its cell had 2 s
    (it was cut and 1c was missing); now it runs under the Keras 2 limits and earns full marks."""
    from grader.session import grade_student
    from grader.intake import collect

    folder = tmp_path / "subs" / "k2cb"
    folder.mkdir(parents=True)
    (folder / "tut6_1c.py").write_text(PATTERNS[pattern])
    changed, limits = _limits(assignment, min_cell_limit_s=1)
    subs = {s.student_id: s for s in collect(tmp_path / "subs", changed)}
    result = grade_student(changed, subs["k2cb"], evaluator, limits=limits)
    [nb] = result.notebooks
    assert nb["keras"] == "2" and nb["cells_failed"] == 0, nb["failures"]
    assert nb["limits"]["cell_s"] == limits.for_keras2("jax").cell.seconds == 103.0
    assert "tf_keras's epoch-by-epoch loop" in nb["limits"]["cell_why"]
    assert nb["training"]["fits"] == 1 and nb["training"]["fallbacks"] == {"callbacks": 1}
    t = task_of(result, "1c")
    assert t.status == "passed" and t.score == t.max_score, (t.message, t.metrics)


@needs_sandbox
def test_a_keras2_fit_cut_at_its_limit_says_time_ran_out(assignment, evaluator, tmp_path):
    """When a limit cuts a fit anyway (here the assignment's maximum for a cell, 45 s, and a fit of a million
    epochs), the notebook says it was stopped at the limit, how long that is and where it comes from, and the
    task's message says the cell ran out of time, not only that no model was found."""
    from grader.session import grade_student
    from grader.intake import collect

    folder = tmp_path / "subs" / "slow"
    folder.mkdir(parents=True)
    (folder / "tut6_1c.py").write_text(PATTERNS["early_stopping"].replace("epochs=2000", "epochs=1000000")
                                       .replace("patience=2000", "patience=1000000"))
    changed, limits = _limits(assignment, min_cell_limit_s=1, cell_timeout_s=45)
    subs = {s.student_id: s for s in collect(tmp_path / "subs", changed)}
    result = grade_student(changed, subs["slow"], evaluator, limits=limits)
    [nb] = result.notebooks
    [failure] = nb["failures"]
    assert failure["status"] == "timeout" and failure["cell"] == 3
    assert failure["explanation"].startswith("Stopped after ")
    assert "the grader's limit for a cell is 45 s (the assignment's maximum (cell_timeout_s)" in \
        failure["explanation"]
    assert "tf_keras's epoch-by-epoch loop" in failure["explanation"]
    t = task_of(result, "1c")
    assert t.score == 0
    assert "cell 3 of tut6_1c.py ran out of time (the grader stopped it at its time limit)" in t.message
    assert "A cell stopped at a time limit never finished" in t.message

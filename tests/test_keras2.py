"""The Keras 2 path: code written for Keras 2 runs on Keras 2 (tf_keras) and earns what its models earn.

A folder of Keras 2 scripts, as a 2022 student wrote them on TensorFlow 2.x (``tensorflow.python.keras``,
``np_utils``, ``Adam(lr=0.01)``), is graded under several secrets; the page names the Keras it ran on and the
line to change for current Keras.  The APIs even Keras 2 removed run as they meant.
"""
import json
import os

import nbformat
import pytest

from conftest import TUTORIAL6, grade_one, needs_sandbox, task_of


CURVE = """x = np.linspace(0, 1, 200)
y = x.copy()
y[x < 0.1] = 0
y[x >= 0.1] = 0.5*(x[x >= 0.1] - 0.1)
y[x >= 0.6] = 0.25 - 0.25/0.2*(x[x >= 0.6] - 0.6)
y[x > 0.8] = 0"""

# task 1c as a 2022 student's script: the private tensorflow.python.keras, Keras 2's lr=
SCRIPT_1C = f"""# %%
import numpy as np
import matplotlib.pyplot as plt
from tensorflow.python.keras.models import Sequential
from tensorflow.python.keras.layers import Dense
from tensorflow.python.keras.optimizers import Adam
# %%
{CURVE}
# %%
model = Sequential()
model.add(Dense(units=150, activation='relu', input_dim=1))
model.add(Dense(units=1, activation='linear'))
model.compile(loss='mean_squared_error', optimizer=Adam(lr=0.01))
model.fit(x, y, epochs=2000, batch_size=32, verbose=0)
plt.plot(x, y, x, model.predict(x))
"""

# task 2a, and the model.h5 of task 3, saved by Keras 2
SCRIPT_2A = """# %%
import numpy as np
from tensorflow.python.keras.models import Sequential
from tensorflow.python.keras.layers import Dense
from tensorflow.python.keras.utils.np_utils import to_categorical
from tensorflow.python.keras.optimizers import SGD
from tools import *
# %%
X, y = gen_simple_circular_distribution(200)
model = Sequential()
model.add(Dense(units=4, activation='relu', input_dim=2))
model.add(Dense(units=4, activation='relu'))
model.add(Dense(units=2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer=SGD(lr=0.01))
model.fit(X, to_categorical(y), epochs=250, batch_size=32, verbose=0)
# %%
model.save('model.h5')
"""


def keras2_folder(root, student="k2"):
    folder = root / student
    folder.mkdir(parents=True)
    (folder / "tut6_1c.py").write_text(SCRIPT_1C)
    (folder / "tut6_2a.py").write_text(SCRIPT_2A)
    return folder


def keras2_notes(result):
    return [n for n in result.notes if "ran on Keras 2" in n]


def evaluator_for(assignment, secret):
    from grader.evaluate import Evaluator, dataset_seeds

    return Evaluator(assignment, dataset_seeds(assignment, secret))


@needs_sandbox
@pytest.mark.parametrize("secret", ["keras2-1", "keras2-2", "keras2-3", "keras2-4", "keras2-5"])
def test_a_folder_of_keras2_scripts_gets_full_marks(assignment, tmp_path, secret):
    keras2_folder(tmp_path / "subs")
    with evaluator_for(assignment, secret) as ev:
        result = grade_one(assignment, ev, tmp_path / "subs", "k2")
    for nb in result.notebooks:
        assert nb["keras"] == "2" and nb["backend"] == "tensorflow", nb
        assert nb["cells_failed"] == 0, nb["failures"]
    for tid in ("1c", "2a", "3"):
        t = task_of(result, tid)
        assert t.status == "passed" and t.score == t.max_score, (tid, t.message, t.metrics)
    assert "model.h5" in task_of(result, "3").source
    notes = keras2_notes(result)
    assert len(notes) == 2 and all("no points are taken" in n for n in notes), result.notes
    # the one-line change for current Keras, from the student's own line
    assert any("`from tensorflow.python.keras.models import Sequential` → "
               "`from tensorflow.keras.models import Sequential`" in n for n in notes)
    assert any("`model.compile(loss='mean_squared_error', optimizer=Adam(lr=0.01))` → "
               "`model.compile(loss='mean_squared_error', optimizer=Adam(learning_rate=0.01))`" in n for n in notes)
    assert any("tf_keras 2." in n and "TensorFlow 2." in n for n in notes)


REMOVED_APIS = """# %%
import numpy as np
from keras.models import Sequential
from keras.layers.core import Dense
from keras.utils import np_utils
from tools import *
# %%
X, y = gen_simple_circular_distribution(200)
Y = np_utils.to_categorical(y)
model = Sequential()
model.add(Dense(units=4, activation='relu', input_dim=2))
model.add(Dense(units=4, activation='relu'))
model.add(Dense(units=2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='sgd')
def batches():
    while True:
        for i in range(0, 200, 32):
            yield X[i:i + 32], Y[i:i + 32]
model.fit_generator(batches(), steps_per_epoch=7, epochs=3, verbose=0)
model.fit(X, Y, epochs=250, batch_size=32, verbose=0)
# %%
classes = model.predict_classes(X)
assert classes.shape == (200,) and (classes == np.argmax(model.predict(X), axis=-1)).all()
sigmoid = Sequential([Dense(1, activation='sigmoid', input_dim=2)])
one = sigmoid.predict_classes(X)
assert one.shape == (200, 1) and (one == (sigmoid.predict(X) > 0.5).astype('int32')).all()
# %%
model.save('model')
from keras.models import load_model
again = load_model('model')
assert np.allclose(again.predict(X), model.predict(X))
"""


@needs_sandbox
def test_apis_even_keras2_removed_run_as_they_meant(assignment, evaluator, tmp_path):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / "old_keras.py").write_text(REMOVED_APIS)
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    nb = result.notebooks[0]
    assert nb["keras"] == "2" and nb["cells_failed"] == 0, nb["failures"]
    assert task_of(result, "2a").status == "passed"
    saved = task_of(result, "3")  # model.save('model'): Keras 2's SavedModel folder, saved as model.h5
    assert saved.status == "passed" and "model.h5 (saved by old_keras.py)" in saved.source, saved.message
    [note] = keras2_notes(result)
    for named in ("predict_classes", "fit_generator", "model.save('name')", "keras.layers.core", "np_utils"):
        assert named in note, (named, note)
    assert "`from keras.layers.core import Dense` → `from keras.layers import Dense`" in note


MISSED_BY_THE_SCAN = """import numpy as np
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense
from tensorflow.keras import optimizers
settings = {'lr': 0.05}
""" + CURVE + """
model = Sequential()
model.add(Dense(units=3, activation='relu', input_dim=1))
model.add(Dense(units=1, activation='linear'))
model.compile(loss='mean_squared_error', optimizer=optimizers.Adam(**settings))
model.fit(x, y, epochs=200, batch_size=32, verbose=0)
"""


@needs_sandbox
def test_a_keras2_only_failure_the_scan_missed_is_rerun_on_keras2(assignment, evaluator, tmp_path):
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    assert not keras2.scan(script_to_notebook(MISSED_BY_THE_SCAN))  # Adam(**settings): no lr= to read
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / "tut6.py").write_text(MISSED_BY_THE_SCAN)
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    nb = result.notebooks[0]
    assert nb["keras"] == "2" and nb["cells_failed"] == 0, nb["failures"]
    [note] = keras2_notes(result)
    assert "on current Keras (Keras 3) it failed with" in note and "'lr'" in note
    assert task_of(result, "1a").status != "missing"  # Keras 3: "Argument(s) not recognized: {'lr': 0.05}"


@needs_sandbox
def test_the_demos_heidi_earns_what_her_keras2_models_earn(assignment, evaluator, tmp_path):
    import shutil

    from conftest import ROOT

    shutil.copytree(ROOT / "submissions" / "tutorial6" / "heidi", tmp_path / "subs" / "heidi")
    result = grade_one(assignment, evaluator, tmp_path / "subs", "heidi")
    nb = result.notebooks[0]
    assert nb["keras"] == "2" and nb["cells_failed"] == 0, nb["failures"]
    for tid in ("1a", "2a"):
        t = task_of(result, tid)
        assert t.status == "passed" and t.score == t.max_score, (tid, t.message)
    [note] = keras2_notes(result)
    assert "Adam(lr=0.01)" in note and "Adam(learning_rate=0.01)" in note


RECIPES = """import numpy as np
import keras
from keras.models import Sequential
from keras.layers import Dense
from keras.optimizers import Adam, SGD
from keras.utils.np_utils import to_categorical
from tools import *
X, y = gen_simple_circular_distribution(200)
def net():
    model = Sequential()
    model.add(Dense(units=4, activation='relu', input_dim=2))
    model.add(Dense(units=2, activation='softmax'))
    return model
a = net()
a.compile(loss=keras.losses.CategoricalCrossentropy(), optimizer=Adam(lr=0.02))
a.fit(X, to_categorical(y), epochs=3, batch_size=16, verbose=0)
b = net()
b.compile(loss='categorical_crossentropy', optimizer=keras.optimizers.legacy.SGD(lr=0.03, momentum=0.5))
b.fit(X, to_categorical(y), epochs=2, verbose=0, shuffle=False)
c = net()
c.compile(loss='categorical_crossentropy', optimizer=SGD(lr=0.1, decay=1e-3))
c.fit(X, to_categorical(y), epochs=1, verbose=0)
"""


@needs_sandbox
def test_a_keras2_recipe_is_recorded_in_the_recipe_format_keras3_retrains(assignment, tmp_path):
    from grader.evaluate import retrain
    from grader.execute import execute_notebook
    from grader.harvest import Harvester
    from grader.intake import collect

    (tmp_path / "subs" / "s").mkdir(parents=True)
    (tmp_path / "subs" / "s" / "recipes.py").write_text(RECIPES)
    sub = collect(tmp_path / "subs", assignment)[0]
    with execute_notebook(assignment, sub.files[0], sub.root, harvester=Harvester(assignment), seed=5) as ex:
        assert ex.keras == "2" and [c.status for c in ex.run.cells] == ["ok"] * len(ex.run.cells)
        fits = [c for c in ex.captures if c.event == "fit"]
        assert len(fits) == 3 and all(c.model_path.suffix == ".h5" for c in fits)
        vetted = [retrain.vet(retrain.recipe_from_capture(c.settings, c.x, c.y)) for c in fits[:2]]
        with pytest.raises(retrain.RecipeRefused, match="learning_rate"):  # Keras 2's decay: a schedule
            retrain.vet(retrain.recipe_from_capture(fits[2].settings, fits[2].x, fits[2].y))
    name, settings = vetted[0]["optimizer"]
    assert name == "Adam" and settings["learning_rate"] == pytest.approx(0.02)  # lr=, as Keras 2 meant it
    assert vetted[0]["loss"] == ("CategoricalCrossentropy", {"from_logits": False, "label_smoothing": 0.0,
                                                              "axis": -1, "reduction": "sum_over_batch_size"})
    assert (vetted[0]["epochs"], vetted[0]["batch_size"], vetted[0]["shuffle"]) == (3, 16, True)
    name, settings = vetted[1]["optimizer"]  # a legacy optimizer without decay: Keras 3's SGD
    assert name == "SGD" and settings["learning_rate"] == pytest.approx(0.03) and settings["momentum"] == 0.5
    assert vetted[1]["loss"] == ("categorical_crossentropy", None) and vetted[1]["shuffle"] is False
    import keras  # every vetted optimizer and loss builds in Keras 3, as the re-training builds them

    for v in vetted:
        getattr(keras.optimizers, v["optimizer"][0]).from_config(v["optimizer"][1])
        if v["loss"][1] is not None:
            getattr(keras.losses, v["loss"][0]).from_config(v["loss"][1])


@needs_sandbox
def test_the_calibrated_thresholds_hold_on_keras2(assignment, evaluator, tmp_path):
    """The fairness check of the Keras 2 path: the reference solution's recipes, trained on tf_keras as a kernel on
    this path trains them (two seeds a task, the calibrated reference seed first), each pass their task's
    thresholds calibrated on Keras 3, graded as a submitted file (no re-training to help)."""
    import shutil

    from grader.execute import keras2

    tasks = ("1a", "1b", "2a", "2b", "2c")
    runs = [(tid, assignment.task(tid).reference_seed + k) for tid in tasks for k in range(2)]
    files = keras2.reference_runs(assignment, runs, tmp_path / "runs")
    for (tid, seed), path in files.items():
        (tmp_path / "subs" / f"{tid}-{seed}").mkdir(parents=True)
        shutil.copy(path, tmp_path / "subs" / f"{tid}-{seed}" / f"{tid}.h5")
    for tid, seed in runs:
        t = task_of(grade_one(assignment, evaluator, tmp_path / "subs", f"{tid}-{seed}"), tid)
        assert t.status == "passed" and t.score == t.max_score, (tid, seed, t.metrics, t.message)


def test_the_scan_reads_keras2_lines_and_writes_them_for_current_keras():
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    code = keras2.scan(script_to_notebook(
        "import numpy as np\n"
        "# model.compile(optimizer=Adam(lr=0.1))   (a comment: not code)\n"
        "from keras.utils import np_utils\n"
        "opt = SGD(lr=0.1, decay=1e-6, momentum=0.9)\n"
        "np.save('points', X)\n"
        "model.save('my_model')\n"
        "model.save('model.h5')\n"
        "labels = model.predict_classes(X)\n"))
    assert [(s.line, s.what) for s in code.signs] == [(3, "keras.utils.np_utils"), (4, "decay="), (6, "save('name')"),
                                                      (8, "predict_classes")]
    assert [s.current for s in code.signs] == [
        "from keras.utils import to_categorical",
        "opt = SGD(learning_rate=keras.optimizers.schedules.InverseTimeDecay(0.1, 1, 1e-6), momentum=0.9)",
        "model.save('my_model.keras')",
        "labels = np.argmax(model.predict(X), axis=-1)"]
    # a dotted name is rewritten whole (it was 'self.np.argmax(model.predict(x), ...)')
    [sign] = keras2.scan(script_to_notebook("preds = self.model.predict_classes(x_test)\n")).signs
    assert sign.current == "preds = np.argmax(self.model.predict(x_test), axis=-1)"
    # current Keras, even with Keras 2's habits that still run there (input_dim, tensorflow.keras): no sign
    assert not keras2.scan(script_to_notebook(
        "from tensorflow.keras.optimizers import Adam\nfrom keras.utils import to_categorical\n"
        "model.add(Dense(3, input_dim=1))\nmodel.compile(optimizer=Adam(learning_rate=0.01))\n"
        "model.save('model.keras')\nplt.savefig('fig')\n"))


def test_the_scan_takes_no_other_librarys_code_for_keras2():
    """A student's own ``def sgd(w, g, lr=0.1)`` and scikit-learn's ``predict_proba`` are no sign of Keras 2:
    taken as one, a Keras 3 notebook ran on tf_keras and the report told the student to rewrite sklearn code
    (found by a review)."""
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    assert not keras2.scan(script_to_notebook("def sgd(w, g, lr=0.1):\n    return w - lr * g\n\n"
                                              "w = sgd(w, g, lr=0.01)\n"))
    assert not keras2.scan(script_to_notebook("from sklearn.linear_model import LogisticRegression\n"
                                              "p = LogisticRegression().fit(X, y).predict_proba(X)\n"))
    # Keras 2's own spellings are still read
    assert [s.what for s in keras2.scan(script_to_notebook("opt = keras.optimizers.adam(lr=0.01)\n")).signs] == ["lr="]
    assert [s.what for s in keras2.scan(script_to_notebook("p = model.predict_proba(X)\n")).signs] == ["predict_proba"]


# trains the same networks with the Keras 2 kernel's fit (argv[1] "fused": install(); "keras": tf_keras's own fit,
# nothing installed but the kernel's TensorFlow settings) and saves every weight, history and report to argv[2]
FITS = """
import importlib.util, json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
spec = importlib.util.spec_from_file_location("grader_keras2", sys.argv[3])
kernel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernel)
if sys.argv[1] == "fused":
    kernel.install()
else:  # tf_keras's own fit, with the kernel's TensorFlow settings
    os.environ.update(kernel.TENSORFLOW_ENV)
    import tensorflow as tf
    tf.config.optimizer.set_experimental_options(dict(kernel.GRAPPLER))
import numpy as np
import tf_keras as keras
from tf_keras.layers import Dense, Dropout
x = np.linspace(0, 1, 203)
y = np.where((x > 0.1) & (x < 0.6), 0.5 * (x - 0.1), 0.0)
X = np.random.default_rng(0).normal(size=(203, 2))
Y = (X[:, 0] * X[:, 1] > 0).astype(int)


def branching_loss(y_true, y_pred):  # a student's own loss, with a tf.cond
    import tensorflow as tf
    error = tf.reduce_mean(tf.square(tf.cast(y_true, y_pred.dtype) - y_pred))
    return tf.cond(error > 0.5, lambda: tf.sqrt(error), lambda: error)


cases = {
    "sheet 1c": (lambda: [Dense(30, activation='relu', input_dim=1), Dense(1)], 'mean_squared_error', 'adam', None,
                 (x, y), dict(epochs=40, batch_size=32)),
    "validation, dropout, accuracy": (
        lambda: [Dense(16, activation='relu', input_dim=2), Dropout(0.3), Dense(2, activation='softmax')],
        'categorical_crossentropy', 'sgd', ['accuracy'], (X, keras.utils.to_categorical(Y, 2)),
        dict(epochs=12, batch_size=20, validation_split=0.2)),
    "class_weight, no shuffle": (lambda: [Dense(4, activation='tanh', input_dim=2), Dense(1, activation='sigmoid')],
                                 'binary_crossentropy', 'rmsprop', ['accuracy'], (X, Y),
                                 dict(epochs=8, batch_size=64, shuffle=False, class_weight={0: 1.0, 1: 3.0},
                                      validation_data=(X[:50], Y[:50]))),
    "a loss with a branch": (lambda: [Dense(4, activation='relu', input_dim=2), Dense(1)], branching_loss, 'adam',
                             None, (X, Y.astype(float)), dict(epochs=4, batch_size=32)),
    "a legacy optimizer": (lambda: [Dense(4, activation='relu', input_dim=2), Dense(1)], 'mse',
                           keras.optimizers.legacy.SGD(learning_rate=0.03, momentum=0.5), None, (X, Y.astype(float)),
                           dict(epochs=4, batch_size=16)),
    "no partial batch": (lambda: [Dense(8, activation='relu', input_dim=2), Dropout(0.2), Dense(1)], 'mse', 'adam',
                         None, (X[:200], Y[:200].astype(float)), dict(epochs=5, batch_size=40)),
    "sample_weight, whole validation batches": (
        lambda: [Dense(8, activation='tanh', input_dim=2), Dense(2, activation='softmax')],
        'sparse_categorical_crossentropy', 'adam', ['accuracy'], (X[:160], Y[:160]),
        dict(epochs=6, batch_size=16, sample_weight=np.linspace(0.5, 2, 160), validation_data=(X[160:200], Y[160:200]),
             validation_batch_size=20)),
    "a schedule, amsgrad": (lambda: [Dense(6, activation='relu', input_dim=2), Dense(6, activation='relu'), Dense(1)],
                            'mse', keras.optimizers.Adam(keras.optimizers.schedules.InverseTimeDecay(0.01, 1, 1e-3),
                                                         amsgrad=True), None, (X, Y.astype(float)),
                            dict(epochs=5, batch_size=16)),
    "shuffle='batch'": (lambda: [Dense(4, activation='relu', input_dim=2), Dense(1)], 'mse', 'adam', None,
                        (X, Y.astype(float)), dict(epochs=3, shuffle='batch')),
    "a callback": (lambda: [Dense(4, activation='relu', input_dim=2), Dense(1)], 'mse', 'adam', None,
                   (X, Y.astype(float)), dict(epochs=3, callbacks=[keras.callbacks.LambdaCallback()])),
}
out = {}
for name, (layers, loss, optimizer, metrics, (a, b), fit) in cases.items():
    keras.utils.set_random_seed(7)
    model = keras.Sequential(layers())
    model.compile(loss=loss, optimizer=optimizer, metrics=metrics)
    history = model.fit(a, b, verbose=0, **fit)
    report = dict(kernel.last_report)
    again = {k: v for k, v in fit.items() if k.startswith("validation")}
    model.fit(a, b, verbose=0, epochs=2, batch_size=50, **again)  # a second fit goes on from the first
    out[name] = {"weights": [w.tolist() for w in model.get_weights()], "history": history.history,
                 "epochs": history.epoch, "steps": int(model.optimizer.iterations.numpy()),
                 "metrics": [float(m.result()) for m in model.metrics],
                 "optimizer": [v.name for v in model.optimizer.variables()],
                 "reports": [report, dict(kernel.last_report)]}
    # predict: the training rows, and a grid of many batches, the last one partial
    out[name]["predictions"] = [model.predict(a, verbose=0).tolist(),
                                model.predict(np.repeat(a, 50, axis=0)[:10007], batch_size=64, verbose=0).tolist()]
    out[name]["predict_report"] = dict(getattr(kernel, "predict_report", {})) if sys.argv[1] == "fused" else {}
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
"""


def _in_a_keras2_kernel(code: str) -> list[str]:
    """``code`` run in a fresh process after the Keras 2 kernel's ``install()`` (as ``kernel``): its printed words."""
    import subprocess
    import sys

    from grader.execute import keras2_kernel

    start = ("import importlib.util, sys\n"
             "spec = importlib.util.spec_from_file_location('grader_keras2', sys.argv[1])\n"
             "kernel = importlib.util.module_from_spec(spec)\n"
             "spec.loader.exec_module(kernel)\n"
             "assert kernel.install()\n")
    proc = subprocess.run([sys.executable, "-c", start + code, keras2_kernel.__file__], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_the_keras2_kernel_imports_tensorflow_without_jax_and_jax_stays_importable():
    """TensorFlow's import loads JAX (installed beside it) only for TFLite's converter; the Keras 2 kernel's
    start skips it, and a student's ``import jax`` still works."""
    assert _in_a_keras2_kernel("print('jax' in sys.modules, 'tensorflow' in sys.modules)\n"
                               "import jax, tensorflow as tf\n"
                               "print(jax.numpy.add(1, 2).item(), tf.keras.__name__)\n") == \
        ["False", "True", "3", "tf_keras.api._v2.keras"]


def test_keras2_code_that_imports_keras_from_the_tensorflow_python_package_gets_tf_keras():
    """``from tensorflow.python import keras`` (a real student's 2021 line) reads the package's attribute, not the
    import system: it was TensorFlow's leftover Keras, whose ``optimizers.Adam`` is gone, and the cell failed."""
    assert _in_a_keras2_kernel(
        "from tensorflow.python import keras\n"
        "from tensorflow.python.keras.layers import Dense\n"
        "opt = keras.optimizers.Adam(lr=0.01)\n"
        "model = keras.Sequential([Dense(2, input_dim=2)])\n"
        "print(keras.__name__, type(opt).__module__, round(float(opt.learning_rate), 6), sorted(kernel.USED))\n") == \
        ["tf_keras", "tf_keras.src.optimizers.adam", "0.01", "['lr']"]


def test_the_keras2_fused_fit_trains_what_tf_keras_fit_trains(tmp_path):
    """The Keras 2 kernel's fit (every epoch in one TensorFlow call) against tf_keras's own, in fresh processes:
    the same weights, history and metrics' state, bit for bit, with validation, Dropout, class_weight, no
    shuffle, sample weights, batches of one size (no partial one), a learning-rate schedule with amsgrad (the
    program's updates share one read of the step count and rate) and ``shuffle='batch'`` (whose batches come
    from tf_keras's dataset; every other fit's are cut in the program); the optimizer's variables named as
    tf_keras names them; a fit with a callback is tf_keras's own, and the report says why.  Each fit on TensorFlow's
    single-threaded executor, but where the program has a branch (a student's loss) or an iterator; tf_keras's
    own with the kernel's TensorFlow settings (``GRAPPLER``, ``TENSORFLOW_ENV``).  ``predict``, every batch in one
    call, gives tf_keras's numbers."""
    import subprocess
    import sys

    from grader.execute import keras2_kernel

    done = {}
    for mode in ("fused", "keras"):
        out = tmp_path / f"{mode}.json"
        proc = subprocess.run([sys.executable, "-c", FITS, mode, str(out), keras2_kernel.__file__],
                              capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        done[mode] = json.loads(out.read_text())
    fused, keras = done["fused"], done["keras"]
    for name in keras:
        assert fused[name]["weights"] == keras[name]["weights"], name
        assert fused[name]["history"] == keras[name]["history"], name
        assert fused[name]["epochs"] == keras[name]["epochs"] and fused[name]["steps"] == keras[name]["steps"]
        assert fused[name]["metrics"] == keras[name]["metrics"], name
        if name != "a legacy optimizer":  # its variables are made in the program's first trace
            assert fused[name]["optimizer"] == keras[name]["optimizer"], name
    assert set(fused["validation, dropout, accuracy"]["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    # predict, every batch in one call: what tf_keras's predict gives, bit for bit
    for name in keras:
        assert fused[name]["predictions"] == keras[name]["predictions"], name
        assert fused[name]["predict_report"] == {"fused": True, "why": None, "executor": "single-threaded"}, name
    # every epoch's order drawn at once (the same batches: the weights above), and cut into batches in the
    # program, but where tf_keras shuffles within batches
    # on TensorFlow's single-threaded executor, but a program with a branch (a student's loss) or an iterator
    # (shuffle='batch'), on the threaded one
    executors = {name: [r.pop("executor") for r in fused[name]["reports"] if r["fused"]] for name in fused}
    assert executors == {name: ["single-threaded"] if name == "a callback" else
                         ["threaded"] * 2 if name in ("a loss with a branch", "shuffle='batch'") else
                         ["single-threaded"] * 2 for name in fused}
    for key in ("orders_at_once", "in_graph"):
        done_so = {name: [r.pop(key) for r in fused[name]["reports"] if r["fused"]] for name in fused}
        assert done_so == {name: [True] if name == "a callback" else [name != "shuffle='batch'", True]
                           for name in fused}, key
    was_fused = {"fused": True, "fused_fallback": None, "fused_program": None}
    for name in fused:  # every fit fused but the one with a callback
        assert fused[name]["reports"] == ([{"fused": False, "fused_fallback": "callbacks"}, was_fused]
                                          if name == "a callback" else [was_fused, was_fused]), name


def test_the_scan_takes_no_pictures_save_for_a_keras2_model_save():
    """``img.save('name')`` (PIL, matplotlib) is no Keras model's save: taken for one, a Keras 3 notebook ran on
    Keras 2; a model's is still read, by the name the code binds it to or by its name."""
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    assert not keras2.scan(script_to_notebook("from PIL import Image\nimg = Image.open('a.png').rotate(90)\n"
                                              "img.save('rotated')\nimage.save('copy')\n"))
    assert [s.line for s in keras2.scan(script_to_notebook("net = Sequential()\nimg.save('x')\nnet.save('trained')\n"
                                                           "best_model.save('best')\n")).signs] == [3, 4]


# Keras 3 code with one Keras 2 habit, model.save('name'): the scan sends it to Keras 2, where keras.ops fails
KERAS3_WITH_A_SAVE = """import numpy as np
import keras
from keras import layers
""" + CURVE + """
# %%
keras.utils.set_random_seed(1000)
model = keras.Sequential([keras.Input((1,)), layers.Dense(3, activation='relu'), layers.Dense(1)])
model.compile(loss='mean_squared_error', optimizer=keras.optimizers.Adam(learning_rate=0.01))
model.fit(x, y, epochs=200, batch_size=32, verbose=0)
# %%
y_pred = keras.ops.convert_to_numpy(model(x.reshape(-1, 1)))
# %%
hidden = keras.ops.relu(x)
# %%
model.save('curve_model')
"""


@needs_sandbox
def test_a_failed_keras2_run_the_scan_chose_is_run_again_on_keras3(assignment, evaluator, tmp_path):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / "tut6.py").write_text(KERAS3_WITH_A_SAVE)
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    [nb] = result.notebooks
    assert nb["keras"] == "3", nb  # Keras 2: 2 cells failed (keras.ops); Keras 3: 1 (save without an extension)
    assert [f["cell"] for f in nb["failures"]] == [5], nb["failures"]
    [note] = [n for n in result.notes if "looked like Keras 2 code" in n]
    assert "2 cell(s) failed" in note and "where 1 failed" in note and "from the Keras 3 run" in note, note
    assert not [n for n in result.notes if "no points are taken" in n]  # graded from its Keras 3 run
    assert task_of(result, "1a").status == "passed"


# Keras 2 code with a bug of its own: Keras 3 does worse (lr=), so the Keras 2 run and its models are kept
KERAS2_WITH_A_BUG = SCRIPT_2A.replace("# %%\nmodel.save('model.h5')\n", "# %%\nraise ValueError('my own bug')\n")


@needs_sandbox
def test_a_keras2_run_that_failed_is_kept_when_keras3_does_no_better(assignment, evaluator, tmp_path):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / "tut6_2a.py").write_text(KERAS2_WITH_A_BUG)
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    [nb] = result.notebooks
    assert nb["keras"] == "2" and [f["cell"] for f in nb["failures"]] == [3], nb["failures"]
    assert len(keras2_notes(result)) == 1
    [second] = [n for n in result.notes if "also run on current Keras (Keras 3)" in n]
    assert "failed 1 cell(s) (cell 3: ValueError)" in second and "from the Keras 2 run" in second, second
    assert task_of(result, "2a").status == "passed"  # the Keras 2 run's model, taken back


@needs_sandbox
def test_check_states_the_keras2_paths_time_limits_before_a_keras2_run(tmp_path):
    """`grader check` says the time limits a run will have before it starts: for a script the scan sends to
    Keras 2, the Keras 2 path's (TensorFlow's), named as such, not the JAX backend's."""
    from grader.api import check as api_check
    from grader.check import CheckEvents

    said = {}
    for name, code in (("old.py", "import numpy as np\nfrom keras.optimizers import Adam\nopt = Adam(lr=0.01)\n"),
                       ("new.py", "import numpy as np\nfrom keras.optimizers import Adam\n"
                                  "opt = Adam(learning_rate=0.01)\n")):
        (tmp_path / name[:-3]).mkdir()
        (tmp_path / name[:-3] / name).write_text(code)
        said[name] = []
        events = CheckEvents()
        events.limits = said[name].append  # the session's events, as check tells them
        api_check(tmp_path / name[:-3], TUTORIAL6, events=events)
    [keras2_limits] = said["old.py"]
    assert keras2_limits.startswith("Time limits on this machine for Keras 2 code (old.py, run on tf_keras): ")
    assert "tensorflow" in keras2_limits  # the limits of the TensorFlow run, and where they come from
    [keras3_limits] = said["new.py"]
    assert keras3_limits.startswith("Time limits on this machine: ") and "Keras 2" not in keras3_limits


def test_calibration_records_the_keras2_path_and_its_thresholds_are_the_spec_s():
    """calibration.toml's ``[keras2]`` (``grader calibrate --keras 2``): every calibrated task trained on the Keras 2
    path with the seeds of its Keras 3 calibration, checked against the Keras 3 thresholds recorded now (not a
    stale check); each verdict follows from its runs; a metric that does not hold there has thresholds of its own,
    never stricter than Keras 3's, which the spec gives the task for a Keras 2 run's models only."""
    import tomllib

    from grader.calibrate_keras2 import metric_entry
    from grader.assess import judge, passes
    from grader.spec import load_assignment

    recorded = tomllib.loads((TUTORIAL6 / "calibration.toml").read_text())
    section = recorded["keras2"]
    assignment = load_assignment(TUTORIAL6)
    calibrated = [t for t in assignment.model_tasks() if t.reference and t.calibration]
    assert set(section["tasks"]) == {t.id for t in calibrated}
    own = []
    for t in calibrated:
        entry = section["tasks"][t.id]
        assert entry["seeds"] == recorded["tasks"][t.id]["seeds"]
        for m in t.calibration:
            keras3 = recorded["tasks"][t.id][m]
            assert (entry[m]["keras3_pass"], entry[m]["keras3_partial"]) == (keras3["pass"], keras3["partial"])
            assert entry[m] == metric_entry(t, m, entry[m]["runs"], keras3, assignment.limits.retraining)
            if entry[m]["holds"]:
                assert m not in t.keras2_thresholds and t.for_keras("2").threshold(m) == t.threshold(m)
                continue
            own.append((t.id, m))
            th = t.keras2_thresholds[m]
            assert (th.passing, th.partial) == (entry[m]["pass"], entry[m]["partial"]) and "Keras 2" in th.source
            assert passes(m, keras3["pass"], th.passing) and passes(m, keras3["partial"], th.partial)
            assert t.for_keras("2").threshold(m) is th and t.for_keras("3").threshold(m) == t.threshold(m)
            # a Keras 2 run that misses Keras 3's pass threshold and makes its own path's is judged a pass there
            missed = [v for v in entry[m]["runs"] if not passes(m, v, keras3["pass"]) and passes(m, v, th.passing)]
            for v in missed:
                assert judge(t.for_keras("2"), m, v, {})[1] == "pass" and judge(t, m, v, {})[1] != "pass"
    assert section["holds"] == (not own)


def test_scoring_judges_a_keras2_runs_model_by_the_keras2_paths_thresholds(assignment, tmp_path):
    """The run of the Keras 2 path's calibration that misses Keras 3's pass threshold of a task that does not hold
    there, trained again as a Keras 2 kernel trains it and evaluated like a submission: scored as a Keras 2 run's
    model (the provenance the grader's harvester gives it, which no kernel can write) it passes; the same model
    with any other provenance is judged by Keras 3's thresholds and does not."""
    import tomllib
    from dataclasses import replace

    from grader.evaluate import Evaluator, dataset_seeds
    from grader.execute import keras2
    from grader.harvest import Capture
    from grader.assess import assess, passes
    from grader.records import Provenance

    recorded = tomllib.loads((TUTORIAL6 / "calibration.toml").read_text())
    missed = [(tid, m, seed, v) for tid, e in recorded["keras2"]["tasks"].items() for m, x in e.items()
              if isinstance(x, dict) and not x["holds"] for seed, v in zip(e["seeds"], x["runs"])
              if not passes(m, v, x["keras3_pass"]) and m == assignment.task(tid).metric]
    tid, metric, seed, value = missed[0]
    task = assignment.task(tid)
    [path] = keras2.reference_runs(assignment, [(tid, seed)], tmp_path).values()
    import numpy as np

    data = np.load(path.with_suffix(".npz"))
    with Evaluator(assignment, dataset_seeds(assignment, recorded["meta"]["heldout_secret"])) as ev:
        evaluation = ev.evaluate(path, {"dataset": task.dataset, "datasets": [task.dataset], "x": data["x"],
                                        "y": data["y"]})
    assert evaluation.datasets[task.dataset].metrics[metric] == value  # the calibration's run, again
    capture = Capture(path, "fit", 1, 0, keras="2")
    assert capture.provenance().keras == "2" and "keras" not in Capture(path, "fit", 1, 0).provenance().to_json()
    as_keras2 = assess(task, replace(evaluation, provenance=Provenance("file", keras="2")))
    as_keras3 = assess(task, replace(evaluation, provenance=Provenance("file")))
    assert as_keras2.metric_fraction == 1.0 and as_keras2.threshold["pass"] == task.keras2_thresholds[metric].passing
    assert as_keras3.metric_fraction < 1.0 and as_keras3.threshold["pass"] == task.threshold(metric).passing
    # a Keras 2 run's fit, whose recipe is re-trained on Keras 3: judged by Keras 3's thresholds (one ``lr=`` buys
    # no looser ones), and re-training is asked for; only a recipe that could not be re-trained falls back
    from grader.assess import wants_retraining
    from grader.records import Retraining, RetrainingRun

    fit = replace(evaluation, provenance=Provenance("fit", keras="2"))
    assert assess(task, fit).metric_fraction < 1.0 and assess(task, fit).threshold["pass"] == task.threshold(
        metric).passing
    assert wants_retraining(task, fit)
    missed_again = RetrainingRun(1, None, True, {task.dataset: {metric: value}})
    for retraining, keras2_bar in ((Retraining([tid], [task.dataset], [missed_again]), False),
                                   (Retraining([tid], [task.dataset], refused="its data are not the task's"), True),
                                   (Retraining([tid], [task.dataset], error="a re-training failed"), True)):
        judged = assess(task, replace(fit, retraining=retraining))
        assert (judged.metric_fraction == 1.0) == keras2_bar, retraining


def test_keras2_reference_runs_do_not_import_from_the_folder_they_are_started_in(assignment, tmp_path, monkeypatch):
    # a TA who calibrates from inside a folder of students' files: a json.py there is not the stdlib's
    from grader.execute import keras2

    planted = tmp_path / "cwd"
    planted.mkdir()
    (planted / "json.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n"
                                     "from importlib import import_module as _i\n")
    monkeypatch.chdir(planted)
    files = keras2.reference_runs(assignment, [("1b", 0)], tmp_path / "runs")
    assert not (tmp_path / "ran").exists()
    assert [p.name for p in files.values()] == ["1b-0.h5"]

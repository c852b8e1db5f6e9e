"""The deferred TensorFlow import of the JAX kernel: a sheet-style notebook never pays for TensorFlow, and any
use of TensorFlow itself gets the real module, seeded as it would have been."""
import json
import os
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT, TUTORIAL6, needs_sandbox


PRELUDE = f"""
import json, sys
sys.path.insert(0, {str(ROOT / "grader" / "execute")!r})
import deferred_tf
DEFERRED = deferred_tf.install() if sys.argv[1] == "deferred" else False
def real_tf_loaded():
    return "tensorflow.python" in sys.modules
"""


def run(code: str, mode: str = "deferred") -> dict:
    """``code`` in a fresh Python on the JAX backend, after the deferred import is installed (``mode``
    "deferred") or not ("real"); returns the JSON it prints last."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", PRELUDE + code, mode], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


SHEET = """
import numpy as np
import matplotlib.pyplot as plt
import tensorflow as tf
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense
from tensorflow.keras.utils import *
from tensorflow import keras
set_random_seed(1000)
x = np.linspace(0, 1, 50)
model = Sequential()
model.add(Dense(units=3, activation='relu', input_dim=1))
model.add(Dense(units=1, activation='linear'))
model.compile(loss='mean_squared_error', optimizer='adam')
model.fit(x, x, epochs=3, batch_size=32, verbose=0)
plt.plot(x, model.predict(x, verbose=0))
model.save(sys.argv[2] + '/model.h5')
print(json.dumps({"deferred": DEFERRED, "loaded": real_tf_loaded(), "same_dense": Dense is keras.layers.Dense,
                  "weights": [w.tolist() for w in model.get_weights()]}))
"""


@pytest.mark.slow
def test_a_sheet_style_notebook_never_loads_tensorflow_and_trains_the_same(tmp_path):
    code = SHEET.replace("sys.argv[2]", repr(str(tmp_path)))
    deferred = run(code)
    assert deferred["deferred"] and not deferred["loaded"]  # imported, seeded, trained, plotted, saved: unloaded
    assert deferred["same_dense"]
    assert (tmp_path / "model.h5").stat().st_size > 0
    real = run(code, "real")
    assert real["loaded"] and not real["deferred"]
    assert deferred["weights"] == real["weights"]  # the same seed, the same training


SEEDED = """
import keras
import tensorflow as tf
keras.utils.set_random_seed(7)   # before TensorFlow is loaded: kept
loaded_before = real_tf_loaded()
values = tf.random.uniform([4]).numpy().tolist()   # loads it: the seed applies
tf.random.set_seed(11)
more = tf.random.normal([3]).numpy().tolist()
print(json.dumps({"before": loaded_before, "values": values, "more": more, "version": tf.__version__}))
"""


@pytest.mark.slow
def test_tensorflow_used_after_a_seed_draws_what_a_real_import_draws():
    deferred, real = run(SEEDED), run(SEEDED, "real")
    assert deferred["before"] is False and real["before"] is True
    assert deferred["values"] == real["values"] and deferred["more"] == real["more"]
    assert deferred["version"] == real["version"]


ODD_USES = """
import numpy as np
import tensorflow as tf
checks = {"ndarray_is_tensor": isinstance(np.zeros(2), tf.Tensor), "is_tensor": tf.is_tensor(np.zeros(2)),
          "eager": tf.executing_eagerly(), "loaded_by_checks": real_tf_loaded()}
class Shape(tf.TensorShape):   # derived from a stand-in: derived from the real class
    def rank(self):
        return len(self)
import tensorflow.compat.v1 as tf1   # a module of TensorFlow's own: loads it first
t = tf.constant([1.0, 2.0])
checks.update(subclass_rank=Shape([1, 2, 3]).rank(), subclass_real=issubclass(Shape, tf.TensorShape),
              tensor=isinstance(t, tf.Tensor), is_tensor_after=bool(tf.is_tensor(t)),
              compat=hasattr(tf1, "placeholder"), loaded=real_tf_loaded())
from tensorflow.python.framework import ops
checks["private_module"] = ops.__name__
print(json.dumps(checks))
"""


@pytest.mark.slow
def test_anything_else_of_tensorflow_loads_the_real_module():
    got = run(ODD_USES)
    assert got["ndarray_is_tensor"] is False and got["is_tensor"] is False and got["eager"] is True
    assert got["loaded_by_checks"] is False  # the checks Keras and matplotlib make load nothing
    assert got["subclass_rank"] == 3 and got["subclass_real"] and got["tensor"] and got["is_tensor_after"]
    assert got["compat"] and got["loaded"] and got["private_module"] == "tensorflow.python.framework.ops"


def test_nothing_is_deferred_where_tensorflow_is_already_imported_or_missing(monkeypatch):
    import importlib.util
    import types

    from grader.execute import deferred_tf

    imported = types.ModuleType("tensorflow")
    monkeypatch.setitem(sys.modules, "tensorflow", imported)
    assert deferred_tf.install() is False and sys.modules["tensorflow"] is imported
    monkeypatch.delitem(sys.modules, "tensorflow")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert deferred_tf.install() is False  # not installed: `import tensorflow` fails as it would
    assert "tensorflow" not in sys.modules


def _sheet_notebook(folder):
    nb = nbformat.read(TUTORIAL6 / "solution.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys\nprint('TF-STATE', type(sys.modules['tensorflow']).__name__, 'tensorflow.python' in sys.modules)"))
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "solution.ipynb")
    return nb


@needs_sandbox
@pytest.mark.slow
@pytest.mark.parametrize("setting", ["on", "0"])
def test_the_sandboxed_kernel_defers_tensorflow_unless_turned_off(assignment, tmp_path, monkeypatch, setting):
    import grader.execute as execute
    from grader.intake import collect

    if setting == "0":
        monkeypatch.setenv("GRADER_DEFERRED_TF", "0")
    _sheet_notebook(tmp_path / "subs" / "s")
    ran = {}
    reader = execute.read_notebook

    def keep(file):
        ran["nb"] = reader(file)
        return ran["nb"]

    monkeypatch.setattr(execute, "read_notebook", keep)
    sub = collect(tmp_path / "subs", assignment)[0]
    from grader.harvest import Harvester

    done = execute.execute_notebook(assignment, sub.files[0], harvester=Harvester(assignment), seed=3)
    assert [c.status for c in done.run.cells] == ["ok"] * len(done.run.cells)
    assert len(done.captures) >= 9  # every task's model harvested
    said = "".join(o.get("text", "") for o in ran["nb"].cells[-1].outputs)
    if setting == "on":
        assert "TF-STATE _DeferredTensorFlow False" in said
    else:
        assert "TF-STATE module True" in said

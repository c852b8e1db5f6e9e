"""Real students' code, second corpus: patterns of 2019-2023 work the first corpus leaves out, graded by the CLI.

A helper building 1c-1f in a loop, ``sparse_categorical_crossentropy`` on 0/1 labels for 2a, the functional API,
Keras 2 seeded by ``tf.compat.v1.set_random_seed`` with ``Dense`` + ``Activation`` layers, Keras 2's hand-set 1b,
its overfitting 2c (``metrics=['acc']``, ``validation_data``), its task 4 stopped by ``EarlyStopping``, networks
built after ``K.clear_session()`` and saved by task name, a Colab notebook of TensorFlow 1 days
(``%tensorflow_version 1.x``, ``tf.set_random_seed``, ``tf.logging``), and a fit ``EarlyStopping`` ended early on
an ordered ``validation_split``. One ``grader grade`` run grades them all, one student a pattern; each test reads
its student's grades from ``results.json``.
"""
import json
import os
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT, TEST_SECRET, TUTORIAL6, needs_sandbox
from test_colab import notebook  # fixed cell ids: the same bytes, the same seed, on every run
from test_keras2 import CURVE  # the sheet's piecewise-linear target, as students write it

# -- the submissions --------------------------------------------------------------------------------------------

# tf.keras; one helper builds every network of 1c-1f, called in a loop; input_shape=(1,); plt.show() cells
HELPER_LOOP = f"""# %%
import numpy as np
import matplotlib.pyplot as plt
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense

# %%
{CURVE}

def make_model(n_layers, units, act):
    model = Sequential()
    model.add(Dense(units, activation=act, input_shape=(1,)))
    for _ in range(n_layers - 1):
        model.add(Dense(units, activation=act))
    model.add(Dense(1, activation='linear'))
    model.compile(loss='mean_squared_error', optimizer='adam')
    return model

# %%
models = {{}}
for name, (n, units, act) in {{'1c': (1, 150, 'relu'), '1d': (1, 150, 'tanh'),
                               '1e': (3, 10, 'relu'), '1f': (3, 10, 'tanh')}}.items():
    model = make_model(n, units, act)
    model.fit(x, y, epochs=2000, batch_size=32, verbose=0)
    models[name] = model
    plt.plot(x, y, label='target')
    plt.plot(x, model.predict(x, verbose=0), label=name)
    plt.legend()
    plt.show()
"""

# tf.keras; 2a trained on the 0/1 labels themselves with sparse_categorical_crossentropy, saved as model.h5
SPARSE_2A = notebook(
    "import numpy as np\nimport matplotlib.pyplot as plt\n%matplotlib inline\nimport tensorflow as tf\n"
    "from tensorflow import keras\nfrom tools import *",
    "X, y = gen_simple_circular_distribution(200)\n"
    "model = keras.Sequential([\n    keras.layers.Dense(4, activation='relu', input_shape=(2,)),\n"
    "    keras.layers.Dense(4, activation='relu'),\n    keras.layers.Dense(2, activation='softmax')])\n"
    "model.compile(loss='sparse_categorical_crossentropy', optimizer='adam', metrics=['accuracy'])\n"
    "history = model.fit(X, y, epochs=250, batch_size=32, verbose=0)\n"
    "print(history.history['accuracy'][-1])",
    "Xgrid, x1line, x2line = gen_sample_grid(200, 200, 10)\np = model.predict(Xgrid)\n"
    "plt.imshow(p[:, 0].reshape(200, 200), extent=[-10, 10, -10, 10], origin='lower')\n"
    "plt.scatter(X[:, 0], X[:, 1], c=y)\nplt.show()",
    "model.save('model.h5')",
)

# standalone Keras 2 (np_utils: the Keras 2 path), seeded by TensorFlow 1's compat call; 1c's hidden layer is
# Dense then Activation; input_shape=(1,)
KERAS2_SEEDED = f"""# %%
import numpy as np
import tensorflow as tf
import matplotlib.pyplot as plt
from keras.models import Sequential
from keras.layers import Dense, Activation
from keras.utils import np_utils
np.random.seed(7)
tf.compat.v1.set_random_seed(7)

# %%
{CURVE}
model = Sequential()
model.add(Dense(150, input_shape=(1,)))
model.add(Activation('relu'))
model.add(Dense(1))
model.add(Activation('linear'))
model.compile(loss='mse', optimizer='adam')
model.fit(x, y, epochs=2000, batch_size=32, verbose=0)
plt.plot(x, y, 'b', x, model.predict(x), 'r')
plt.show()
"""

# Keras 2 (keras.layers.core): 1b's weights set by hand, never trained, only predicted
KERAS2_HAND_SET = f"""# %%
import numpy as np
from keras.models import Sequential
from keras.layers.core import Dense

# %%
{CURVE}
model = Sequential()
model.add(Dense(3, input_dim=1, activation='relu'))
model.add(Dense(1, activation='linear'))
model.compile(loss='mean_squared_error', optimizer='adam')
w1 = np.array([[0.5, 1.75, 1.25]])
b1 = np.array([-0.05, -1.05, -1.0])
w2 = np.array([[1.0], [-1.0], [1.0]])
b2 = np.array([0.0])
model.set_weights([w1, b1, w2, b2])
y_pred = model.predict(x)
print(np.abs(y_pred[:, 0] - y).max())
"""

# Keras 2's overfitting 2c: metrics=['acc'] and its history keys, validation_data from the same generator
KERAS2_OVERFIT = """# %%
import numpy as np
import matplotlib.pyplot as plt
from keras.models import Sequential
from keras.layers import Dense
from keras.utils import np_utils
from tools import *

# %%
X, y = gen_simple_circular_distribution(30, 2)
Xv, yv = gen_simple_circular_distribution(1000, 2)
Y, Yv = np_utils.to_categorical(y), np_utils.to_categorical(yv)
model = Sequential()
model.add(Dense(6, input_dim=2, activation='relu'))
model.add(Dense(6, activation='relu'))
model.add(Dense(6, activation='relu'))
model.add(Dense(2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['acc'])
history = model.fit(X, Y, epochs=1000, batch_size=32, validation_data=(Xv, Yv), verbose=0)
plt.plot(history.history['acc'], label='train')
plt.plot(history.history['val_acc'], label='validation')
plt.legend()
plt.show()
"""

# a Colab notebook of TensorFlow 1 days: %tensorflow_version 1.x, tf.set_random_seed, standalone keras
COLAB_TF1 = notebook(
    "%tensorflow_version 1.x\nimport numpy as np\nimport tensorflow as tf\nnp.random.seed(0)\n"
    "tf.set_random_seed(0)\ntf.logging.set_verbosity(tf.logging.ERROR)\nimport keras\nfrom keras.models import Sequential\nfrom keras.layers import Dense\n"
    "from keras.utils import to_categorical\n!wget -q https://example.org/course/tools.py\nfrom tools import *",
    "X, y = gen_simple_circular_distribution(200)\nmodel = Sequential()\n"
    "model.add(Dense(4, input_dim=2, activation='relu'))\nmodel.add(Dense(4, activation='relu'))\n"
    "model.add(Dense(2, activation='softmax'))\n"
    "model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])\n"
    "model.fit(X, to_categorical(y), epochs=250, batch_size=32, verbose=0)\nmodel.save('model.h5')",
)

# Keras 2's task 4: as few epochs as still give a good result, found by EarlyStopping on a validation set
KERAS2_RING_EARLY_STOP = """# %%
import numpy as np
import keras
from keras.models import Sequential
from keras.layers import Dense
from keras.optimizers import Adam
from keras.callbacks import EarlyStopping
from tools import *
np.random.seed(3)

# %%
X, y = gen_circular_distribution(500)
Xv, yv = gen_circular_distribution(500)
Y, Yv = keras.utils.to_categorical(y, num_classes=2), keras.utils.to_categorical(yv, num_classes=2)
model = Sequential()
model.add(Dense(6, activation='relu', input_dim=2))
model.add(Dense(6, activation='relu'))
model.add(Dense(6, activation='relu'))
model.add(Dense(2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer=Adam(lr=0.01), metrics=['accuracy'])
stop = EarlyStopping(monitor='val_loss', patience=20, restore_best_weights=True)
history = model.fit(X, Y, epochs=400, batch_size=32, validation_data=(Xv, Yv), callbacks=[stop], verbose=0)
print(len(history.history['loss']), 'epochs')
loss, acc = model.evaluate(Xv, Yv, verbose=0)
"""

# tf.keras's task 4 stopped early on validation_split of the generator's data as it comes (class 0 first, so the
# validation set is all class 1): training stops after a few epochs with a poor model
ORDERED_SPLIT_EARLY_STOP = notebook(
    "import numpy as np\nfrom tensorflow import keras\nfrom tensorflow.keras.callbacks import EarlyStopping\n"
    "from tools import *",
    "X, y = gen_circular_distribution(500)\nmodel = keras.Sequential([keras.Input(shape=(2,)),\n"
    "    keras.layers.Dense(6, activation='relu'), keras.layers.Dense(6, activation='relu'),\n"
    "    keras.layers.Dense(6, activation='relu'), keras.layers.Dense(2, activation='softmax')])\n"
    "model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])\n"
    "history = model.fit(X, keras.utils.to_categorical(y), epochs=400, batch_size=32, validation_split=0.2,\n"
    "                    callbacks=[EarlyStopping(monitor='val_loss', patience=5)], verbose=0)\n"
    "ran = len(history.epoch)",
)

# Keras 2: a helper that clears the session before each network, x and y as columns, each task saved by name
KERAS2_CLEAR_SESSION_SAVES = """# %%
import numpy as np
from keras import backend as K
from keras.models import Sequential
from keras.layers.core import Dense

# %%
x = np.linspace(0, 1, 200).reshape(-1, 1)
y = np.zeros_like(x)
for i, xi in enumerate(x[:, 0]):
    if 0.1 <= xi < 0.6:
        y[i] = 0.5 * (xi - 0.1)
    elif 0.6 <= xi <= 0.8:
        y[i] = 0.25 - 0.25 / 0.2 * (xi - 0.6)

def deep(act):
    K.clear_session()
    model = Sequential()
    model.add(Dense(10, activation=act, input_dim=1))
    model.add(Dense(10, activation=act))
    model.add(Dense(10, activation=act))
    model.add(Dense(1, activation='linear'))
    model.compile(loss='mean_squared_error', optimizer='adam')
    return model

# %%
for task, act in [('1e', 'relu'), ('1f', 'tanh')]:
    model = deep(act)
    model.fit(x, y, epochs=2000, batch_size=32, verbose=0)
    model.save(f'{task}.h5')
"""

# tf.keras's functional API for 2a, labels one-hot by NumPy
FUNCTIONAL_2A = notebook(
    "import numpy as np\nfrom tensorflow.keras.layers import Input, Dense\nfrom tensorflow.keras.models import Model\n"
    "from tools import *",
    "X, y = gen_simple_circular_distribution(200)\ninputs = Input(shape=(2,))\n"
    "h = Dense(4, activation='relu')(inputs)\nh = Dense(4, activation='relu')(h)\n"
    "outputs = Dense(2, activation='softmax')(h)\nmodel = Model(inputs=inputs, outputs=outputs)\n"
    "model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])\n"
    "model.fit(X, np.eye(2)[y.astype(int)], epochs=250, batch_size=32, verbose=0)",
)

# 1b's weights set layer by layer and checked by evaluate's loss, never predicted
HAND_SET_EVALUATED = f"""# %%
import numpy as np
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense
{CURVE}
model = Sequential()
model.add(Dense(3, input_dim=1, activation='relu'))
model.add(Dense(1, activation='linear'))
model.compile(loss='mean_squared_error', optimizer='adam')
model.layers[0].set_weights([np.array([[0.5, 1.75, 1.25]]), np.array([-0.05, -1.05, -1.0])])
model.layers[1].set_weights([np.array([[1.0], [-1.0], [1.0]]), np.array([0.0])])
print('mse', model.evaluate(x, y, verbose=0))
"""

# JupyterLab's interactive plots: %matplotlib widget (ipympl, which the grader's kernel lacks) before the imports
MATPLOTLIB_WIDGET = notebook(
    "%matplotlib widget\nimport numpy as np\nimport matplotlib.pyplot as plt\n"
    "from tensorflow.keras.models import Sequential\nfrom tensorflow.keras.layers import Dense",
    CURVE + "\nmodel = Sequential()\nmodel.add(Dense(3, input_dim=1, activation='relu'))\nmodel.add(Dense(1))\n"
    "model.compile(loss='mean_squared_error', optimizer='adam')\n"
    "model.fit(x, y, epochs=200, batch_size=32, verbose=0)\nplt.figure()\nplt.plot(x, y, x, model.predict(x))\n"
    "plt.show()",
)

# a 2018 tutorial's way of saving: the architecture as JSON, the weights by save_weights('model.h5')
JSON_AND_WEIGHTS = """# %%
import numpy as np
from keras.models import Sequential
from keras.layers import Dense
from keras.utils import to_categorical
from tools import *
# %%
X, y = gen_simple_circular_distribution(200)
model = Sequential()
model.add(Dense(4, input_dim=2, activation='relu'))
model.add(Dense(4, activation='relu'))
model.add(Dense(2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
model.fit(X, to_categorical(y), epochs=250, batch_size=32, verbose=0)
# %%
model_json = model.to_json()
with open("model.json", "w") as json_file:
    json_file.write(model_json)
model.save_weights("model.h5")
"""

STUDENTS = {
    "helper_loop": {"tut6.py": HELPER_LOOP},
    "sparse_2a": {"tutorial6.ipynb": SPARSE_2A},
    "keras2_seeded": {"tut6_1c.py": KERAS2_SEEDED},
    "keras2_hand_set": {"tut6_1b.py": KERAS2_HAND_SET},
    "keras2_overfit": {"tut6_2c.py": KERAS2_OVERFIT},
    "colab_tf1": {"tutorial6.ipynb": COLAB_TF1},
    "keras2_ring": {"tut6_4.py": KERAS2_RING_EARLY_STOP},
    "keras2_saves": {"tut6_1ef.py": KERAS2_CLEAR_SESSION_SAVES},
    "functional_2a": {"tutorial6.ipynb": FUNCTIONAL_2A},
    "ordered_split": {"tutorial6.ipynb": ORDERED_SPLIT_EARLY_STOP},
    "hand_set_evaluated": {"tut6_1b.py": HAND_SET_EVALUATED},
    "matplotlib_widget": {"tutorial6.ipynb": MATPLOTLIB_WIDGET},
    "json_and_weights": {"tut6.py": JSON_AND_WEIGHTS},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every student above, graded in one run of ``grader grade`` (the CLI, the tests' secret)."""
    root = tmp_path_factory.mktemp("real2")
    for student, files in STUDENTS.items():
        (root / "subs" / student).mkdir(parents=True)
        for name, content in files.items():
            if isinstance(content, nbformat.NotebookNode):
                nbformat.write(content, root / "subs" / student / name)
            else:
                (root / "subs" / student / name).write_text(content)
    return graded_by_cli(root)


def graded_by_cli(root):
    """``root/subs`` graded in one run of ``grader grade`` into ``root/out`` (the CLI, the tests' secret):
    student id -> the student's entry in results.json."""
    env = dict(os.environ, GRADER_SECRET=TEST_SECRET)
    proc = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(root / "subs"), "-a", str(TUTORIAL6),
                           "-o", str(root / "out")], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((root / "out" / "results.json").read_text())
    return {s["id"]: s for s in data["students"]}


def task(student, tid):
    return next(t for t in student["tasks"] if t["id"] == tid)


def passed(student, *tids):
    for tid in tids:
        t = task(student, tid)
        assert t["status"] == "passed" and t["score"] == t["max_score"], (
            tid, t["status"], t["message"], t.get("metrics"), student.get("notes"),
            [nb.get("failures") for nb in student.get("notebooks", [])])


def ran_clean(student, keras=None):
    assert student["notebooks"], student
    for nb in student["notebooks"]:
        assert nb["cells_failed"] == 0, nb["failures"]
        if keras:
            assert nb["keras"] == keras, nb


@needs_sandbox
def test_a_helper_that_builds_every_network_in_a_loop_earns_each_tasks_marks(results):
    s = results["helper_loop"]
    ran_clean(s)
    passed(s, "1c", "1d", "1e", "1f")


@needs_sandbox
def test_sparse_labels_for_2a_earn_its_marks(results):
    s = results["sparse_2a"]
    ran_clean(s)
    passed(s, "2a", "3")


@needs_sandbox
def test_a_keras2_script_seeded_by_tf_compat_v1_with_activation_layers_earns_1c(results):
    s = results["keras2_seeded"]
    ran_clean(s, keras="2")
    passed(s, "1c")


@needs_sandbox
def test_keras2s_hand_set_1b_earns_its_marks(results):
    s = results["keras2_hand_set"]
    ran_clean(s, keras="2")
    passed(s, "1b")


@needs_sandbox
def test_keras2s_overfitting_2c_with_acc_metrics_earns_its_marks(results):
    s = results["keras2_overfit"]
    ran_clean(s, keras="2")
    passed(s, "2c")


@needs_sandbox
def test_a_colab_notebook_of_tensorflow1_days_earns_its_marks(results):
    # TensorFlow 1 ran Keras 2: tf.set_random_seed and tf.logging send the notebook there, where they run as
    # TensorFlow 2's compat.v1 has them (before: cell 1 failed on current Keras, every task missing, and the
    # message was the bare AttributeError)
    s = results["colab_tf1"]
    ran_clean(s, keras="2")
    passed(s, "2a", "3")
    [note] = [n for n in s["notes"] if "ran on Keras 2" in n]
    assert "TensorFlow 1's tf.set_random_seed" in note, note
    assert "`tf.set_random_seed(0)` → `tf.random.set_seed(0)`" in note, note
    assert "`tf.logging.set_verbosity(tf.logging.ERROR)` → " in note, note


def test_the_scan_reads_tensorflow1s_seed_and_logging_as_keras2():
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    code = keras2.scan(script_to_notebook("import tensorflow as tf\ntf.set_random_seed(1)\n"
                                          "tf.logging.set_verbosity(tf.logging.ERROR)\n"))
    assert [(s.line, s.what, s.current) for s in code.signs] == [
        (2, "tf.set_random_seed", "tf.random.set_seed(1)"),
        (3, "tf.logging", "tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)")]
    # TensorFlow 2's own spellings are no sign; a Keras 3 run failing on TensorFlow 1's names is re-run on Keras 2
    assert not keras2.scan(script_to_notebook("tf.random.set_seed(1)\ntf.compat.v1.set_random_seed(1)\n"
                                              "tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)\n"))
    assert keras2.KERAS2_ONLY.search("AttributeError: module 'tensorflow' has no attribute 'set_random_seed'")


@needs_sandbox
def test_keras2s_task4_stopped_early_on_a_validation_split_earns_its_marks(results):
    s = results["keras2_ring"]
    ran_clean(s, keras="2")
    passed(s, "4")


@needs_sandbox
def test_keras2_networks_built_after_clear_session_and_saved_by_task_name_earn_their_marks(results):
    s = results["keras2_saves"]
    ran_clean(s, keras="2")
    passed(s, "1e", "1f")
    saved = {f["name"]: f["task"] for f in s["files"] if not f["captured"] and f["outcome"] == "graded"}
    assert saved == {"1e.h5 (saved by tut6_1ef.py)": "1e", "1f.h5 (saved by tut6_1ef.py)": "1f"}, s["files"]


@needs_sandbox
def test_a_functional_2a_earns_its_marks(results):
    s = results["functional_2a"]
    ran_clean(s)
    passed(s, "2a")


@needs_sandbox
def test_a_fit_a_callback_stopped_early_is_retrained_for_the_epochs_it_ran(results):
    # the recipe of a fit EarlyStopping ended is the epochs it ran, not the epochs it asked for: re-training
    # 400 epochs gave this poor model (validation set all of one class, stopped after a few epochs) full credit
    # for training the student never did ("Your recipe (Adam ..., 400 epochs, ...) ... earns full credit")
    import re

    t = task(results["ordered_split"], "4")
    assert t["metrics"]["accuracy"] < 0.8, t["metrics"]  # its own run: a poor model
    recipe = re.search(r"Your recipe \(.*?(\d+) epochs", t["message"])
    assert recipe, t["message"]
    assert int(recipe.group(1)) < 100, t["message"]


@needs_sandbox
def test_a_fits_validation_is_no_capture_of_its_own(results):
    # Keras' fit validates by calling evaluate, which the capture now hears: a model a fit trains is still one
    # capture (validation_data on Keras 2, validation_split with a callback on Keras 3, the fused fit's)
    for student in ("keras2_overfit", "keras2_ring", "ordered_split", "sparse_2a"):
        [nb] = results[student]["notebooks"]
        assert nb["models_captured"] == 1, (student, nb)


@needs_sandbox
def test_a_hand_set_1b_checked_by_evaluate_earns_its_marks(results):
    # only predict was captured: a 1b whose weights were set and evaluated, never predicted, was missing
    s = results["hand_set_evaluated"]
    ran_clean(s)
    passed(s, "1b")
    assert "model used by model.evaluate" in task(s, "1b")["source"], task(s, "1b")["source"]


@needs_sandbox
def test_matplotlib_widget_without_ipympl_draws_inline_and_the_cell_runs(results):
    # `%matplotlib widget` failed its cell ("'widget' is not a recognised GUI loop or backend name"), and with it
    # the imports after it: every task that used them was missing
    s = results["matplotlib_widget"]
    ran_clean(s)
    passed(s, "1a")


@needs_sandbox
def test_keras2s_save_weights_h5_runs_on_keras2_and_the_weights_file_is_named(results):
    # Keras 3 refuses save_weights('model.h5') (a ValueError the student's Keras 2 never raised): the script
    # runs on Keras 2, its 2a earns its marks, and the weights-only model.h5 is told what task 3 needs
    s = results["json_and_weights"]
    ran_clean(s, keras="2")
    passed(s, "2a")
    [note] = [n for n in s["notes"] if "ran on Keras 2" in n]
    assert '`model.save_weights("model.h5")` → `model.save_weights("model.weights.h5")`' in note, note
    three = task(s, "3")
    assert three["score"] == 0 and "weights only" in three["message"], three
    assert "model.save('model.h5')" in three["message"], three


def test_the_scan_reads_save_weights_of_an_h5_as_keras2():
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    code = keras2.scan(script_to_notebook("model.save_weights('model.h5')\nmodel.save_weights('m.weights.h5')\n"
                                          "net.save_weights(\"w/net.h5\", overwrite=True)\n"))
    assert [(s.line, s.current) for s in code.signs] == [
        (1, "model.save_weights('model.weights.h5')"), (3, "net.save_weights(\"w/net.weights.h5\", overwrite=True)")]
    assert keras2.KERAS2_ONLY.search("ValueError: The filename must end in `.weights.h5`. Received: filepath=a.h5")

"""Real students' code: the styles students of 2019-2024 wrote the sheet in, each graded by the real grader.

Standalone Keras 2 (``import keras``, ``keras.layers.core``, ``from keras.optimizers import adam``), Keras 1
leftovers Keras 2 still ran (``nb_epoch``, ``output_dim``, ``init``), Keras 2's predictions and callbacks (the
``model.h5`` a ``ModelCheckpoint`` writes), Colab's Drive, tensorboard and ``!wget tools.py``, ``tf.compat.v1`` in
a Keras 2 notebook, and Keras 2's ways of saving: each earns what its models earn, or is told what to change.
"""
import nbformat
import pytest

from conftest import grade_one, needs_sandbox, task_of
from test_colab import notebook  # fixed cell ids: the same bytes, the same seed, on every run
from test_keras2 import CURVE  # the sheet's piecewise-linear target, as students write it


def grade(assignment, evaluator, tmp_path, files: dict):
    """Hand in ``files`` (name -> text, a notebook or bytes) as student ``s`` and grade them."""
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, nbformat.NotebookNode):
            nbformat.write(content, folder / name)
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    return grade_one(assignment, evaluator, tmp_path / "subs")


def passed(result, *tids):
    for tid in tids:
        t = task_of(result, tid)
        assert t.status == "passed" and t.score == t.max_score, (tid, t.status, t.message, t.metrics, result.notes,
                                                                 [nb.get("failures") for nb in result.notebooks])


def ran_clean(result, keras=None):
    for nb in result.notebooks:
        assert nb["cells_failed"] == 0, nb["failures"]
        if keras:
            assert nb["keras"] == keras, nb


# -- standalone Keras 2 ---------------------------------------------------------------------------------------

# a 2019 script: `import keras`, keras.layers.core with Activation layers, the lower-case optimizer aliases of
# Keras 2.2 (`from keras.optimizers import adam`), SGD's lr= and decay=, keras.utils.to_categorical, seeds
STANDALONE_KERAS2 = f"""# %%
import numpy as np
import matplotlib.pyplot as plt
import tensorflow as tf
import keras
from keras.models import Sequential
from keras.layers.core import Dense, Activation
from keras.optimizers import adam, SGD
from tools import *
np.random.seed(42)
tf.random.set_seed(42)
# %%
{CURVE}
model = Sequential()
model.add(Dense(3, input_dim=1))
model.add(Activation('relu'))
model.add(Dense(1))
model.add(Activation('linear'))
model.compile(loss='mean_squared_error', optimizer=adam(lr=0.01))
model.fit(x, y, epochs=200, batch_size=32, verbose=0)
# %%
X, y = gen_simple_circular_distribution(200)
y_binary = keras.utils.to_categorical(y)
model = Sequential()
model.add(Dense(4, input_dim=2, activation='relu'))
model.add(Dense(4, activation='relu'))
model.add(Dense(2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer=SGD(lr=0.1, decay=1e-6), metrics=['accuracy'])
model.fit(X, y_binary, epochs=250, batch_size=32, verbose=0)
"""


@needs_sandbox
def test_a_standalone_keras2_script_with_lowercase_optimizers_earns_its_marks(assignment, evaluator, tmp_path):
    result = grade(assignment, evaluator, tmp_path, {"tut6.py": STANDALONE_KERAS2})
    ran_clean(result, keras="2")
    passed(result, "1a", "2a")
    [note] = [n for n in result.notes if "ran on Keras 2" in n]
    assert "`from keras.optimizers import adam, SGD` → `from keras.optimizers import Adam, SGD`" in note, note


def test_the_scan_reads_keras2s_lowercase_optimizers_and_keras1s_arguments():
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    code = keras2.scan(script_to_notebook(
        "from keras.optimizers import adam, SGD\n"
        "model.add(Dense(output_dim=4, input_dim=2, init='uniform'))\n"
        "model.fit(X, Y, nb_epoch=250, batch_size=32)\n"
        "opt = adam(lr=0.001)\n"))
    assert [(s.line, s.what) for s in code.signs] == [(1, "optimizers.adam"), (2, "output_dim="), (3, "nb_epoch="),
                                                      (4, "lr=")]
    assert [s.current for s in code.signs] == [
        "from keras.optimizers import Adam, SGD",
        "model.add(Dense(units=4, input_dim=2, kernel_initializer='uniform'))",
        "model.fit(X, Y, epochs=250, batch_size=32)", "opt = Adam(learning_rate=0.001)"]
    assert code.signs[3].source == "opt = adam(lr=0.001)"  # the student's own line, quoted as written
    # nb_epoch as a name of the student's own is no sign; a fit's keyword on a line of its own is
    assert [s.what for s in keras2.scan(script_to_notebook(
        "nb_epoch = 250\nmodel.fit(X, Y, epochs=nb_epoch)\nmodel.fit(X, Y,\n    nb_epoch=250,\n    verbose=0)\n"
        "emb = Embedding(input_dim=10, output_dim=4)\n")).signs] == ["nb_epoch="]
    # current Keras' own spellings are no sign
    assert not keras2.scan(script_to_notebook("from keras.optimizers import Adam\nopt = Adam()\n"
                                              "model.add(Dense(units=4, kernel_initializer='uniform'))\n"
                                              "model.fit(X, Y, epochs=3)\nadam = Adam(learning_rate=0.1)\n"))


# -- Keras 1 leftovers that Keras 2 still ran -----------------------------------------------------------------

KERAS1_LEFTOVERS = """import numpy as np
from keras.models import Sequential
from keras.layers import Dense
from keras.utils import np_utils
from tools import *
X, y = gen_simple_circular_distribution(200)
Y = np_utils.to_categorical(y)
model = Sequential()
model.add(Dense(output_dim=4, input_dim=2, init='glorot_uniform', activation='relu'))
model.add(Dense(output_dim=4, init='glorot_uniform', activation='relu'))
model.add(Dense(output_dim=2, init='uniform', activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
model.fit(X, Y, nb_epoch=250, batch_size=32, verbose=0)
model.save('model.h5')
"""


@needs_sandbox
def test_keras1_leftovers_keras2_still_ran_earn_their_marks(assignment, evaluator, tmp_path):
    result = grade(assignment, evaluator, tmp_path, {"tut6.py": KERAS1_LEFTOVERS})
    ran_clean(result, keras="2")
    passed(result, "2a", "3")
    [note] = [n for n in result.notes if "ran on Keras 2" in n]
    assert "nb_epoch=250" in note and "epochs=250" in note, note
    assert "units=4" in note and "kernel_initializer='glorot_uniform'" in note, note


# -- Keras 2's predictions and callbacks ----------------------------------------------------------------------

# the model.h5 of task 3 is written by the ModelCheckpoint alone; predictions by predict_proba/predict_classes.
# (100 epochs: a fit with callbacks and validation runs tf_keras's own epoch loop, about 20 s for the sheet's 250
# under load, near the Keras 2 path's cell limit of 30 s.)
PREDICT_AND_CALLBACKS = notebook(
    "import numpy as np\nimport matplotlib.pyplot as plt\n%matplotlib inline\n"
    "from keras.models import Sequential\nfrom keras.layers import Dense\n"
    "from keras.callbacks import EarlyStopping, ModelCheckpoint\nfrom keras.optimizers import Adam\n"
    "from keras.utils import to_categorical\n"
    "from tools import *",
    "np.random.seed(1)\nX, y = gen_simple_circular_distribution(200)\ny_binary = to_categorical(y)",
    "model = Sequential()\nmodel.add(Dense(4, input_dim=2, activation='relu'))\n"
    "model.add(Dense(4, activation='relu'))\nmodel.add(Dense(2, activation='softmax'))\n"
    "model.compile(loss='categorical_crossentropy', optimizer=Adam(lr=0.01), metrics=['accuracy'])\n"
    "checkpoint = ModelCheckpoint('model.h5', monitor='val_loss', save_best_only=True, verbose=0)\n"
    "stop = EarlyStopping(monitor='val_loss', patience=30)\n"
    "history = model.fit(X, y_binary, epochs=100, batch_size=32, validation_split=0.1,\n"
    "                    callbacks=[checkpoint, stop], verbose=0)",
    "Xgrid, x1line, x2line = gen_sample_grid(100, 100, 10)\nproba = model.predict_proba(Xgrid)\n"
    "classes = model.predict_classes(X)\nsame = np.argmax(model.predict(X), axis=-1)\n"
    "assert (classes == same).all() and proba.shape == (10000, 2)\n"
    "plt.imshow(proba[:, 0].reshape(100, 100), extent=[-10, 10, -10, 10], origin='lower')",
)


@needs_sandbox
def test_keras2_predictions_and_a_checkpoint_written_model_h5_earn_their_marks(assignment, evaluator, tmp_path):
    result = grade(assignment, evaluator, tmp_path, {"tutorial6.ipynb": PREDICT_AND_CALLBACKS})
    ran_clean(result, keras="2")
    passed(result, "2a", "3")
    assert "model.h5 (saved by tutorial6.ipynb)" in task_of(result, "3").source


# -- Colab: Drive, tensorboard, !wget tools.py ----------------------------------------------------------------

COLAB_DRIVE_CELLS = (
    "%matplotlib inline\n%load_ext tensorboard",
    "from google.colab import drive\ndrive.mount('/content/drive')",
    "import os\nos.chdir('/content')\n!wget -q https://example.org/course/tools.py\nfrom tools import *",
    "import numpy as np\nimport tensorflow as tf\nfrom tensorflow import keras\n"
    "from tensorflow.keras.models import Sequential\nfrom tensorflow.keras.layers import Dense\n"
    "from tensorflow.keras.utils import to_categorical",
    "X, y = gen_simple_circular_distribution(200)\nmodel = Sequential()\n"
    "model.add(Dense(4, input_dim=2, activation='relu'))\nmodel.add(Dense(4, activation='relu'))\n"
    "model.add(Dense(2, activation='softmax'))\nmodel.compile(loss='categorical_crossentropy', optimizer='sgd',\n"
    "              metrics=['accuracy'])\n"
    "tb = keras.callbacks.TensorBoard(log_dir='logs')\n"
    "model.fit(X, to_categorical(y), epochs=250, batch_size=32, verbose=0, callbacks=[tb])",
    "%tensorboard --logdir logs",
    "model.save('/content/drive/MyDrive/model.h5')\n"
    "again = keras.models.load_model('/content/drive/MyDrive/model.h5')",
)
COLAB_DRIVE = notebook(*COLAB_DRIVE_CELLS)


@needs_sandbox
def test_a_colab_notebook_that_saves_to_drive_earns_its_marks(assignment, evaluator, tmp_path):
    result = grade(assignment, evaluator, tmp_path, {"tutorial6.ipynb": COLAB_DRIVE})
    ran_clean(result)
    # graded as the models earn: this notebook's seed trains the sheet's SGD network well, its own run passes 2a
    # (no re-training needed) and the model saved to Drive is task 3's; before the fix the save failed and task 3
    # was missing
    passed(result, "2a", "3")
    two_a = task_of(result, "2a")
    assert two_a.metrics["accuracy"] > 0.97 and "retrained_accuracy" not in two_a.metrics, two_a.metrics
    assert task_of(result, "3").source.startswith("drive/MyDrive/model.h5")
    assert "holds a trained model of task 2a" in task_of(result, "3").message
    notes = " ".join(result.notes)
    assert "drive.mount" in notes and "/content/drive/MyDrive" in notes, notes
    assert "`!wget -q https://example.org/course/tools.py`" in notes and "course's tools.py" in notes


def test_a_notebook_the_tests_hand_in_is_the_same_bytes_on_every_run(assignment, tmp_path):
    # the grader seeds a run from the submission's bytes, cell ids included; nbformat draws each new cell's id at
    # random, so the Drive notebook was another submission, with another seed, on every run of its test (once in
    # about nine its SGD network got stuck at 0.67 and task 3 was rightly partial: seen under load, but load
    # played no part)
    from conftest import TEST_SECRET
    from grader.evaluate import dataset_seeds
    from grader.intake import collect
    from grader.measure.student import run_seed

    assert nbformat.writes(notebook(*COLAB_DRIVE_CELLS)) == nbformat.writes(COLAB_DRIVE)
    seeds = dataset_seeds(assignment, TEST_SECRET)

    def seed(nb, where):
        (tmp_path / where / "s").mkdir(parents=True)
        nbformat.write(nb, tmp_path / where / "s" / "tutorial6.ipynb")
        [sub] = collect(tmp_path / where, assignment)
        return run_seed(seeds, sub, sub.files[0])

    assert seed(COLAB_DRIVE, "a") == seed(notebook(*COLAB_DRIVE_CELLS), "b") != seed(
        notebook(*COLAB_DRIVE_CELLS, ids="e"), "c")


@needs_sandbox
def test_a_colab_notebook_whose_training_got_stuck_is_graded_so_and_told(assignment, evaluator, tmp_path):
    # the same code, other cell ids: another seed (under the tests' secret), under which the sheet's SGD network
    # gets stuck at the majority class, the run seen in the flaky runs; its grade says so, and is the same each run.
    # model.h5 is that stuck model, saved: its recipe re-trained earns 2a its marks, and so the file's (it was 5/10,
    # "an untrained one", for the grader's unlucky seed)
    result = grade(assignment, evaluator, tmp_path, {"tutorial6.ipynb": notebook(*COLAB_DRIVE_CELLS, ids="e")})
    ran_clean(result)
    two_a, three = task_of(result, "2a"), task_of(result, "3")
    assert two_a.metrics["accuracy"] == pytest.approx(two_a.metrics["majority_baseline"]), two_a.metrics
    passed(result, "2a")  # by its recipe, re-trained
    assert two_a.metrics["retrained_accuracy"] > 0.97, two_a.metrics
    assert (three.status, three.score) == ("passed", 10), (three.status, three.message)
    assert three.source.startswith("drive/MyDrive/model.h5")
    assert "training got stuck on the seed the grader gave it" in three.message, three.message
    assert "re-trained, reached 0.9" in three.message, three.message


@needs_sandbox
def test_a_model_file_whose_save_a_time_limit_stopped_is_named(assignment, evaluator, tmp_path):
    # a cell stopped at its limit (as load can make happen) while it saved model.h5 leaves the file empty: the
    # report said only "No model.h5 was found"; now it names the file and why it holds no model
    from grader.execute.limits import BatchLimits, Limit, TimeLimits
    from grader.intake import collect
    from grader.session import grade_student

    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    nbformat.write(notebook("from google.colab import drive\ndrive.mount('/content/drive')", "import numpy as np",
                            "f = open('/content/drive/MyDrive/model.h5', 'wb')  # model.save, at its start\n"
                            "while True:\n    pass"), folder / "tutorial6.ipynb")
    limits = BatchLimits(tuple((b, TimeLimits(b, Limit(10, "test"), Limit(400, "test")))
                               for b in ("jax", "tensorflow")))
    [sub] = collect(tmp_path / "subs", assignment)
    result = grade_student(assignment, sub, evaluator, limits=limits)
    assert [(f["cell"], f["status"]) for f in result.notebooks[0]["failures"]] == [(3, "timeout")]
    assert task_of(result, "3").status == "missing"
    [note] = [n for n in result.notes if "no model is in it" in n]
    assert "drive/MyDrive/model.h5 (empty)" in note and "time limit" in note, note


@needs_sandbox
def test_reading_from_an_empty_drive_says_to_hand_the_file_in(assignment, evaluator, tmp_path):
    nb = notebook("from google.colab import drive\ndrive.mount('/content/drive')",
                  "import numpy as np\ndata = np.loadtxt('/content/drive/MyDrive/tut6/data.csv')")
    result = grade(assignment, evaluator, tmp_path, {"tutorial6.ipynb": nb})
    [failure] = result.notebooks[0]["failures"]
    assert failure["cell"] == 2
    assert "Google Drive" in failure["explanation"] and "beside" in failure["explanation"], failure


# -- tf.compat.v1 -----------------------------------------------------------------------------------------------

COMPAT_V1 = """import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
from keras.models import Sequential
from keras.layers import Dense
from keras.optimizers import Adam
from tools import *
X, y = gen_simple_circular_distribution(200)
Y = np.eye(2)[y.astype(int)]
model = Sequential()
model.add(Dense(4, input_dim=2, activation='relu'))
model.add(Dense(4, activation='relu'))
model.add(Dense(2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer=Adam(lr=0.01), metrics=['accuracy'])
model.fit(X, Y, epochs=250, batch_size=32, verbose=0)
model.save('model.h5')
"""


@needs_sandbox
def test_a_keras2_notebook_without_eager_execution_earns_its_marks(assignment, evaluator, tmp_path):
    result = grade(assignment, evaluator, tmp_path, {"tut6.py": COMPAT_V1})
    ran_clean(result, keras="2")
    passed(result, "2a", "3")


# 2018-2019's GPU set-up, kept in later notebooks: a session configured for Keras 2 (nothing else Keras 2 only,
# so the scan sends it to Keras 3, where K.set_session fails: run again on Keras 2)
SESSION_CONFIG = """import numpy as np
import tensorflow as tf
from keras import backend as K
from keras.backend.tensorflow_backend import get_session
config = tf.compat.v1.ConfigProto()
config.gpu_options.allow_growth = True
K.set_session(tf.compat.v1.Session(config=config))
from keras.models import Sequential
from keras.layers import Dense
from keras.utils import to_categorical
from tools import *
X, y = gen_simple_circular_distribution(200)
model = Sequential()
model.add(Dense(4, input_dim=2, activation='relu'))
model.add(Dense(4, activation='relu'))
model.add(Dense(2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='sgd', metrics=['accuracy'])
model.fit(X, to_categorical(y), epochs=250, batch_size=32, verbose=0)
"""


@needs_sandbox
def test_a_keras2_session_set_up_runs_on_keras2(assignment, evaluator, tmp_path):
    result = grade(assignment, evaluator, tmp_path, {"tut6.py": SESSION_CONFIG.replace(
        "from keras.backend.tensorflow_backend import get_session\n", "")})
    ran_clean(result, keras="2")  # K.set_session: Keras 3 failed, so Keras 2 ran it
    passed(result, "2a")
    [note] = [n for n in result.notes if "ran on Keras 2" in n]
    assert "has no attribute 'set_session'" in note, note


def test_the_scan_reads_multi_backend_keras2s_tensorflow_backend():
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    [sign] = keras2.scan(script_to_notebook(SESSION_CONFIG)).signs
    assert (sign.what, sign.current) == ("keras.backend.tensorflow_backend",
                                         "(delete it: current Keras has no sessions, and TensorFlow 2 needs none)")


TF1_GRAPH = """import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
from tools import *
X, y = gen_simple_circular_distribution(200)
x_in = tf.compat.v1.placeholder(tf.float32, [None, 2])
y_in = tf.compat.v1.placeholder(tf.float32, [None, 2])
W1 = tf.Variable(tf.random.normal([2, 4]))
b1 = tf.Variable(tf.zeros([4]))
W2 = tf.Variable(tf.random.normal([4, 2]))
b2 = tf.Variable(tf.zeros([2]))
logits = tf.matmul(tf.nn.relu(tf.matmul(x_in, W1) + b1), W2) + b2
loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y_in, logits=logits))
step = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
with tf.compat.v1.Session() as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    for i in range(100):
        sess.run(step, {x_in: X, y_in: np.eye(2)[y.astype(int)]})
"""


@needs_sandbox
def test_a_tf1_graph_notebook_is_told_what_to_change(assignment, evaluator, tmp_path):
    result = grade(assignment, evaluator, tmp_path, {"tut6.py": TF1_GRAPH})
    ran_clean(result)
    notes = " ".join(result.notes)
    assert "TensorFlow 1" in notes and "Keras" in notes and "model.fit" in notes, result.notes
    assert task_of(result, "2a").status == "missing"


# -- Keras 2's ways of saving -----------------------------------------------------------------------------------

SAVES = """import numpy as np
import tensorflow as tf
from keras.models import Sequential
from keras.layers import Dense
from keras.optimizers import Adam
from tools import *
X, y = gen_simple_circular_distribution(200)
model = Sequential()
model.add(Dense(4, input_dim=2, activation='relu'))
model.add(Dense(4, activation='relu'))
model.add(Dense(2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer=Adam(lr=0.01))
model.fit(X, np.eye(2)[y.astype(int)], epochs=250, batch_size=32, verbose=0)
tf.keras.models.save_model(model, 'model')
model.save('circles', save_format='tf')
import os
assert os.path.isdir('circles') and os.path.exists('circles/saved_model.pb')
"""


@needs_sandbox
def test_keras2s_ways_of_saving_are_graded_or_named(assignment, evaluator, tmp_path):
    result = grade(assignment, evaluator, tmp_path, {"tut6.py": SAVES})
    ran_clean(result, keras="2")
    passed(result, "2a", "3")  # save_model(model, 'model') wrote model.h5, as model.save('model') does
    assert "model.h5 (saved by tut6.py)" in task_of(result, "3").source
    [note] = [n for n in result.notes if "ran on Keras 2" in n]
    assert "circles.h5" not in note, note  # the SavedModel folder is not said to be an .h5
    assert "save_format" not in note.split("→")[-1] or "save('circles.keras', save_format" not in note, note
    assert "`tf.keras.models.save_model(model, 'model')` → `tf.keras.models.save_model(model, 'model.keras')`" in note
    notes = " ".join(result.notes)
    assert "SavedModel folder, circles/" in notes, notes


def test_the_scan_writes_a_savedmodel_save_for_keras3_without_its_format():
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    code = keras2.scan(script_to_notebook("net = Sequential()\nmodel.save('x', save_format='tf')\n"
                                          "tf.keras.models.save_model(model, 'y')\n"
                                          "keras.models.save_model(net, \"z\", overwrite=True)\n"))
    assert [s.current for s in code.signs] == ["model.save('x.keras')",
                                               "tf.keras.models.save_model(model, 'y.keras')",
                                               "keras.models.save_model(net, \"z.keras\", overwrite=True)"]
    assert "saved x.h5" not in keras2.note(code, "tut6.py")
    assert "save_format='tf'" in keras2.note(code, "tut6.py")


def keras21_h5(path, version="2.1.6"):
    """A real student's Keras 2 model (TensorFlow 2.6) with the configuration Keras up to 2.1 wrote (a
    ``Sequential``'s layers as a bare list), or Keras 2.2-2.3 (``version``: under ``layers``); both without an
    ``InputLayer``, the input's shape on the first layer."""
    import json

    import h5py

    from conftest import real_file

    path.write_bytes(real_file("tf26_student_circle_model.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        if layers[0]["class_name"] == "InputLayer":
            layers[1]["config"]["batch_input_shape"] = layers.pop(0)["config"]["batch_input_shape"]
        listed = version < "2.2"
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": layers} if listed else config)
        f.attrs["keras_version"] = version
    return path


def test_a_keras21_h5_with_a_list_of_layers_is_read_in_the_current_form(tmp_path):
    """Keras up to 2.1 wrote a Sequential's configuration as a list of layers ("'list' object has no attribute
    'get'" before): read as its layers; any other model written so gets a clear message."""
    import json

    import h5py

    from grader.errors import SubmissionError
    from grader.intake.formats import HDF5
    from grader.keras_io import read_config

    path = keras21_h5(tmp_path / "old.h5")
    vetted = read_config(path, HDF5, 1_000_000)
    assert [layer["class_name"] for layer in vetted["config"]["config"]["layers"]] == ["InputLayer"] + ["Dense"] * 3
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": [{"class_name": "Dense"}]})
    with pytest.raises(SubmissionError) as e:
        read_config(path, HDF5, 1_000_000)
    text = str(e.value) + " " + str(getattr(e.value, "hint", ""))
    assert "AttributeError" not in text and "'list'" not in text, text
    assert "Keras 2.1.6" in text and "model.save" in text, text

def test_a_keras2_runs_failure_is_not_blamed_on_the_keras2_imports_of_its_cell():
    """A Keras 2 run has keras.layers.core and np_utils: a cell that imports them and fails for another reason
    was told "np_utils was removed in Keras 3" (a Keras 1 Dense(output_dim=...) TypeError, before the Keras 2
    path took it)."""
    from grader.execute.diagnose import explain
    from grader.execute.runner import CellRun

    source = ("from keras.layers.core import Dense\nfrom keras.utils import np_utils\n"
              "from tensorflow.python.keras.layers import Dropout\nmodel.add(Dense(oops=4))")
    said = explain(CellRun(0, source, "error", "TypeError", "Dense.__init__() got an unexpected keyword 'oops'"))
    assert "removed in Keras 3" not in said and "no longer supports" not in said and "TypeError" in said, said


def test_a_keras21_or_22_model_h5_earns_what_the_same_network_earns(assignment, evaluator, tmp_path):
    from conftest import real_file

    # Keras 2.2-2.3's form (no InputLayer, the first Dense with batch_input_shape): Keras 3 rebuilt it with an
    # extra axis, and the file's tasks were an error
    for student, write in (("k21", keras21_h5), ("k22", lambda p: keras21_h5(p, "2.2.4")),
                           ("tf26", lambda p: p.write_bytes(real_file("tf26_student_circle_model.h5").read_bytes()))):
        (tmp_path / "subs" / student).mkdir(parents=True)
        write(tmp_path / "subs" / student / "model.h5")
    k21, k22, tf26 = (grade_one(assignment, evaluator, tmp_path / "subs", s) for s in ("k21", "k22", "tf26"))
    for old in (k21, k22):
        assert [(t.id, t.status, t.score, t.metrics) for t in old.tasks] == [
            (t.id, t.status, t.score, t.metrics) for t in tf26.tasks]
    assert task_of(tf26, "2a").status == "passed", task_of(tf26, "2a").message

def test_the_scan_of_a_hostile_line_of_many_calls_is_linear():
    """The scan runs in the grader on the student's text: its patterns that look for one thing after another
    (``Dense(`` ... ``output_dim=``, ``save(`` ... ``save_format=``) are found in linear time, and a line is read
    up to ``MAX_LINE``; a pattern ``Dense\\(.*output_dim`` on a 6 MB line of ``Dense(`` takes the square of it
    (about 10^12 steps: this test would not end)."""
    from grader.execute import keras2
    from grader.execute.scripts import script_to_notebook

    hostile = "Dense(" * 10**6 + "output_dim=4)\n" + "save(" * 10**6 + "\nmodel.add(Dense(output_dim=4))\n"
    code = keras2.scan(script_to_notebook(hostile))
    assert [(s.line, s.what) for s in code.signs] == [(3, "output_dim=")]
    assert len(keras2.scan(script_to_notebook("from keras.optimizers import " + "sgd, " * 10**5 + "\n")).signs) == 1

"""Hostile and real students' code against what runs it the way they wrote it: the Colab shim (its skipped lines,
files.download), the course's tools.py completed in the kernel, the Keras 2 path and its retry on Keras 3.  Each
test writes its own submission into tmp_path and grades it through the real sandbox, kernel and evaluation
worker; each would fail if the behaviour it names broke."""
import nbformat
import pytest

from conftest import grade_one, needs_sandbox


def notebook(*cells):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def run(assignment, evaluator, tmp_path, nb, extra=None, name="tutorial6.ipynb"):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / name)
    for rel, data in (extra or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return grade_one(assignment, evaluator, tmp_path / "subs")


# -- Colab's lines: a skipped line never breaks the code around it ---------------------------------------------

@needs_sandbox
def test_a_continued_pip_line_is_skipped_whole_and_the_cells_code_still_runs(assignment, evaluator, tmp_path):
    """``!pip install -q \\`` continued on the next line (IPython joins an escaped command's continued lines): the
    shim skipped its first line only, left the indented continuation as Python, and the whole cell, imports and
    all, failed with IndentationError."""
    nb = notebook("!pip install -q \\\n    tensorflow==2.15 \\\n    keras==2.15\nimport numpy as np\n"
                  "total = int(np.arange(4).sum())",
                  "assert total == 6\nimport traceback\ndef where():\n    return traceback.extract_stack()[-2].lineno\n"
                  "!pip install \\\n  foo\nassert where() == 7, where()  # the lines after keep their numbers")
    result = run(assignment, evaluator, tmp_path, nb)
    ran = result.notebooks[0]
    assert ran["cells_failed"] == 0, ran["failures"]
    notes = " ".join(result.notes)
    assert "cell 1 `!pip install -q tensorflow==2.15 keras==2.15`" in notes, notes


@needs_sandbox
def test_colabs_gpu_check_snippet_runs_with_its_skipped_command_giving_no_lines(assignment, evaluator, tmp_path):
    """Colab's own snippet ``gpu_info = !nvidia-smi`` then ``'\\n'.join(gpu_info)``: the shim skipped the
    command and left ``gpu_info`` unbound, so the cell failed with NameError; in IPython ``x = !cmd`` binds the
    command's output lines (an ``SList``): the skipped command binds an empty one."""
    nb = notebook("gpu_info = !nvidia-smi\ngpu_info = '\\n'.join(gpu_info)\nif gpu_info.find('failed') >= 0:\n"
                  "  print('Not connected to a GPU')\nelse:\n  print(gpu_info)\nran_to_the_end = True",
                  "lines = !pip freeze\nassert lines == [] and lines.n == '' and ran_to_the_end")
    result = run(assignment, evaluator, tmp_path, nb)
    ran = result.notebooks[0]
    assert ran["cells_failed"] == 0, ran["failures"]
    assert "cell 1 `gpu_info = !nvidia-smi`" in " ".join(result.notes)


# -- model files: a configuration names only what the grader allows, in every corner Keras builds from ---------

def _hostile_h5(path, edit, functional=False):
    """A real Keras model saved as .h5 at ``path``, its configuration then changed by ``edit(config)`` (what a
    student can do to any file they hand in, or to a capture in their kernel's folder)."""
    import json

    import h5py
    import keras

    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(12, activation="relu")
    if functional:
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden(inputs)))
    else:
        model = keras.Sequential([inputs, hidden, keras.layers.Dense(2, activation="softmax")])
    model.save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config)
    return path


def _dense(config, index=0):
    return [layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense"][index]


def _fn(module, name):
    return {"module": module, "class_name": "function", "config": name, "registered_name": None}


def _gallery_writer(target):
    """A Dense layer's activation that Keras builds in safe mode: a nested model (Reshape, then a Lambda layer of
    Keras' own ``plot_image_gallery`` with the file's arguments), which writes a PNG at ``target``."""
    lam = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None, "config": {
        "name": "gallery", "function": _fn("keras.visualization", "plot_image_gallery"), "output_shape": [2, 2, 3],
        "arguments": {"path": str(target), "value_range": [0, 1], "rows": 1, "cols": 1,
                      "data_format": "channels_last"}}}
    layers = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
               "config": {"batch_shape": [None, 12], "name": "i"}},
              {"module": "keras.layers", "class_name": "Reshape", "registered_name": None,
               "config": {"target_shape": [2, 2, 3], "name": "r"}}, lam]
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "inner", "layers": layers}}


@pytest.mark.usefixtures("evaluator")
def test_a_model_file_cannot_make_the_evaluation_worker_write_a_file(assignment, evaluator, tmp_path):
    """A Dense layer whose activation is a nested model holding a Lambda layer of ``plot_image_gallery``: the layer
    allow-list looked at the layers only, Keras 3.15 builds it in safe mode (no Python code in the file, only the
    names of Keras' own functions), and the evaluation worker, predicting the held-out data, wrote a PNG at the
    file's path: any file the TA can write (the gradebook, the pages) overwritten by a handed-in model."""
    target = tmp_path / "outside" / "written-by-a-model.png"
    target.parent.mkdir()
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    _hostile_h5(folder / "2a.h5", lambda c: _dense(c)["config"].update(activation=_gallery_writer(target)))
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    assert not target.exists(), "the evaluation worker ran a function the model file chose"
    said = " ".join(f.message for f in result.files if f.name == "2a.h5")
    assert "holds a Keras object of class 'Sequential'" in said and "does not load" in said, said
    assert next(t for t in result.tasks if t.id == "2a").status != "passed"


HOSTILE_CONFIGS = {
    # a Keras function as the activation: called on the held-out data
    "keras function as activation": lambda c: _dense(c)["config"].update(activation=_fn("keras.utils", "plot_model")),
    # a Lambda layer as the activation: past the layer allow-list, which refuses Lambda layers
    "Lambda layer as activation": lambda c: _dense(c)["config"].update(activation={
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
        "config": {"name": "l", "function": _fn("keras.ops", "exp")}}),
    # any exported Keras class as an initializer (built from the file's arguments)
    "exported class as initializer": lambda c: _dense(c)["config"].update(kernel_initializer={
        "module": "keras.layers", "class_name": "StringLookup", "registered_name": None,
        "config": {"vocabulary": "/etc/hostname"}}),
    # a string the HDF5 loader replaces by the keras.layers function it names
    "keras.layers function by name": lambda c: _dense(c)["config"].update(kernel_initializer="deserialize"),
    # a registered name that is not the class's
    "forged registered name": lambda c: _dense(c)["config"].update(kernel_regularizer={
        "module": "keras.regularizers", "class_name": "L2", "registered_name": "Custom>L2", "config": {"l2": 0.1}}),
    # an unknown activation name
    "activation not Keras' own": lambda c: _dense(c)["config"].update(activation="system"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONFIGS))
def test_a_configuration_naming_more_than_layers_allow_is_refused_before_keras_reads_it(case, tmp_path):
    from grader import keras_io
    from grader.errors import UnsafeModel

    path = _hostile_h5(tmp_path / "model.h5", HOSTILE_CONFIGS[case])
    with pytest.raises(UnsafeModel, match="does not load"):
        keras_io.read_config(path, "hdf5", 100_000)


def test_an_object_in_a_functional_models_call_arguments_is_refused(tmp_path):
    """A functional model's ``inbound_nodes`` (each layer call's arguments) are built by Keras too."""
    from grader import keras_io
    from grader.errors import UnsafeModel

    def edit(config):
        node = _dense(config, 1)["inbound_nodes"][0]
        node["kwargs"]["mask"] = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                                  "config": {"name": "l", "function": _fn("keras.ops", "exp")}}

    path = _hostile_h5(tmp_path / "model.h5", edit, functional=True)
    with pytest.raises(UnsafeModel, match="class 'Lambda'"):
        keras_io.read_config(path, "hdf5", 100_000)


KERAS2_MODELS = """
import os, sys
import tf_keras as keras
L = keras.layers
inp = keras.Input((2,))
x = L.Dense(4, activation="relu", kernel_regularizer=keras.regularizers.L1L2(0.01, 0.01), bias_regularizer="l2",
            kernel_constraint=keras.constraints.MaxNorm(2), kernel_initializer="he_normal")(inp)
x = L.BatchNormalization()(x)
x = L.Dropout(0.2)(x)
x = L.LeakyReLU()(x)
x = L.PReLU()(x)
keras.Model(inp, L.Dense(2, activation="softmax", bias_initializer=keras.initializers.Constant(0.1))(x)).save(
    os.path.join(sys.argv[1], "k2_functional.h5"))
keras.Sequential([L.Dense(3, activation=keras.activations.swish, input_dim=2), L.Activation("tanh"),
                  L.Dense(3, activation=L.LeakyReLU(alpha=0.1)), L.Dense(1, activation="sigmoid")]).save(
    os.path.join(sys.argv[1], "k2_sequential.h5"))
"""


def test_real_keras2_and_keras3_models_with_initializers_regularizers_and_constraints_still_load(tmp_path):
    """The allow-list of objects refuses nothing Keras 2 (tf_keras, as the Keras 2 path saves) or Keras 3 writes
    for the allowed layers."""
    import os
    import subprocess
    import sys

    import keras

    from grader import keras_io
    from grader.intake.formats import sniff_format

    subprocess.run([sys.executable, "-c", KERAS2_MODELS, str(tmp_path)], check=True, capture_output=True,
                   env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
    L = keras.layers
    inp = keras.Input((2,))
    x = L.Dense(4, activation="relu", kernel_regularizer=keras.regularizers.L1L2(0.01, 0.01), bias_regularizer="l2",
                kernel_constraint=keras.constraints.MaxNorm(2), bias_constraint=keras.constraints.NonNeg(),
                kernel_initializer="he_normal", activity_regularizer=keras.regularizers.L1(0.1))(inp)
    for layer in (L.BatchNormalization(), L.Dropout(0.2), L.LayerNormalization(), L.GaussianNoise(0.1),
                  L.GaussianDropout(0.1), L.AlphaDropout(0.1), L.ReLU(), L.LeakyReLU(), L.ELU(), L.PReLU(),
                  L.Dense(4, kernel_initializer=keras.initializers.RandomNormal(0, 1, seed=1),
                          bias_initializer=keras.initializers.Constant(0.1)),
                  L.Activation("tanh"), L.Rescaling(0.5), L.Dense(2), L.Softmax()):
        x = layer(x)
    functional = keras.Model(inp, x)
    sequential = keras.Sequential([keras.Input((2,)), L.Normalization(mean=[0.0, 1.0], variance=[1.0, 2.0]),
                                   L.Dense(3, activation=keras.activations.swish,
                                           kernel_initializer=keras.initializers.Orthogonal()),
                                   L.Dense(3, use_bias=False, kernel_constraint=keras.constraints.UnitNorm()),
                                   L.Dense(3, activation=L.LeakyReLU(negative_slope=0.1)),  # a layer as activation
                                   L.Dense(1, activation="sigmoid")])
    sequential.compile(optimizer="adam", loss="binary_crossentropy")  # a .keras file's compile_config is not read
    for model, name in ((functional, "k3_functional"), (sequential, "k3_sequential")):
        model.save(tmp_path / f"{name}.h5")
        model.save(tmp_path / f"{name}.keras")
    files = sorted(p for p in tmp_path.iterdir() if p.suffix in (".h5", ".keras"))
    assert len(files) == 6
    for path in files:
        keras_io.read_config(path, sniff_format(path), 100_000)
        assert keras_io.load(path).count_params() > 0, path.name


# -- the Keras 2 path: what its code saves is graded, or said why not -------------------------------------------

KERAS2_FIT = """import numpy as np
import tensorflow as tf
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense
from tensorflow.keras.optimizers import SGD
from tools import *
X, y = gen_simple_circular_distribution(200)
model = Sequential([Dense(4, activation='relu', input_dim=2), Dense(2, activation='softmax')])
model.compile(loss='categorical_crossentropy', optimizer=SGD(lr=0.01))
model.fit(X, tf.keras.utils.to_categorical(y), epochs=5, verbose=0)"""


@needs_sandbox
def test_a_savedmodel_folder_the_notebook_wrote_is_named_not_silently_ignored(assignment, evaluator, tmp_path):
    """Keras 2 code saves TensorFlow SavedModel folders (``save_format='tf'``, ``tf.saved_model.save``): the
    grader grades none, and said nothing of them, so a student whose task 3 was such a folder read only that
    task 3 was missing."""
    nb = notebook(KERAS2_FIT, "model.save('exported', save_format='tf')\ntf.saved_model.save(model, 'nested/sm')")
    result = run(assignment, evaluator, tmp_path, nb)
    ran = result.notebooks[0]
    assert ran["keras"] == "2" and ran["cells_failed"] == 0, ran["failures"]
    notes = " ".join(result.notes)
    for folder in ("exported", "nested/sm"):
        assert f"saved a TensorFlow SavedModel folder, {folder}/" in notes, notes
    assert "model.save('exported.h5')" in notes, notes


@needs_sandbox
def test_colabs_shell_cell_magic_runs_with_its_installation_lines_skipped(assignment, evaluator, tmp_path):
    """``%%shell`` is Colab's own cell magic (a cell run by the shell, where Colab notebooks install packages):
    Jupyter has none, so the cell failed with UsageError; and ``%%bash``'s ``pip install`` ran against a network
    that is not there.  Both run their other lines; their installation lines are skipped with a note."""
    nb = notebook("%%shell\npip install -q tensorflow==2.15\nsudo apt-get install -y \\\n  graphviz\n"
                  "echo done > shell-ran.txt",
                  "%%bash\npip3 install nothing-at-all > pip-ran.txt\necho ok > bash-ran.txt",
                  "import os\nassert open('shell-ran.txt').read().strip() == 'done'\n"
                  "assert open('bash-ran.txt').read().strip() == 'ok' and not os.path.exists('pip-ran.txt')")
    result = run(assignment, evaluator, tmp_path, nb)
    ran = result.notebooks[0]
    assert ran["cells_failed"] == 0, ran["failures"]
    notes = " ".join(result.notes)
    for said in ("cell 1 `pip install -q tensorflow==2.15`", "cell 1 `sudo apt-get install -y graphviz`",
                 "cell 2 `pip3 install nothing-at-all > pip-ran.txt`"):
        assert said in notes, notes


def test_every_activation_of_the_installed_keras_is_one_a_configuration_may_name():
    """``keras_io.ACTIVATIONS`` is written out (the configuration is vetted before Keras is imported): an upgrade
    of Keras that adds an activation must add it there, or models using it would be refused."""
    from keras.src import activations

    from grader import keras_io

    assert set(activations.ALL_OBJECTS_DICT) <= keras_io.ACTIVATIONS

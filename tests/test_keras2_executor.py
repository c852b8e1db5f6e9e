"""The Keras 2 kernel's fused fit and predict against hostile students' Keras 2 code, beside tf_keras's own.

One process runs every case with the kernel installed, another with tf_keras's own fit and predict (and the
kernel's TensorFlow settings), each under a hard time limit (a deadlock of TensorFlow's single-threaded executor
fails the test instead of hanging it): branches, nested functions, loops, Python ops in a model or loss, custom
metrics and steps, models not built yet, XLA, odd predict inputs.  Each case ends with the same numbers and errors
as tf_keras's, and the kernel's reports (``last_report``, ``predict_report``) say which path and executor ran.
"""
import json
import os
import subprocess
import sys

import pytest

# runs CASES (argv[1] "fused": the kernel installed; "keras": tf_keras's own with the kernel's TensorFlow settings)
# and saves each case's weights and their names, history, predictions, errors and the kernel's reports to argv[2]
CASES = r'''
import importlib.util, json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
spec = importlib.util.spec_from_file_location("grader_keras2", sys.argv[3])
kernel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernel)
FUSED = sys.argv[1] == "fused"
if FUSED:
    kernel.install()
else:
    os.environ.update(kernel.TENSORFLOW_ENV)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)  # not inter-op's: one thread hangs tf_keras's own fit
    # of a py_function that calls a tf.function, which the kernel runs (``_patch_py_functions``)
    tf.config.optimizer.set_experimental_options(dict(kernel.GRAPPLER))
import numpy as np, tensorflow as tf, tf_keras as keras
from tf_keras import layers

rng = np.random.default_rng(0)
X = rng.normal(size=(96, 4)).astype("float32")
Y = (X[:, :1] * X[:, 1:2] + 0.1 * X[:, 2:3]).astype("float32")
S = rng.normal(size=(96, 5, 2)).astype("float32")
T = np.random.default_rng(3).integers(0, 20, size=(96, 6))  # token ids


def reports():
    return {"fit": dict(kernel.last_report), "predict": dict(kernel.predict_report)} if FUSED else {}


def error(e):
    """The error's type and message without its stack (TensorFlow names the frames and the function it ran)."""
    lines = [line for line in str(e).splitlines() if line.strip() and not line.startswith("  File ")]
    return f"{type(e).__name__}: " + "\n".join(line.split(" [Op:")[0] for line in lines)


def dense(*extra, inputs=4):
    return keras.Sequential([layers.Dense(6, activation="tanh", input_dim=inputs), *extra, layers.Dense(1)])


def run(model, loss="mse", metrics=None, x=X, y=Y, px=None, fit=None, predict=None, optimizer="adam", **compile):
    out = {}
    model.compile(optimizer, loss, metrics=metrics, **compile)
    try:
        out["history"] = model.fit(x, y, verbose=0, **(fit or dict(epochs=2, batch_size=16))).history
    except Exception as e:
        out["fit_error"] = error(e)
    out["fit_report"] = reports().get("fit")
    try:
        out["weights"] = [w.numpy().tolist() for w in model.weights]
        out["names"] = [w.name for w in model.weights] + [v.name for v in model.optimizer.variables()]
    except Exception as e:  # a model its fit left without weights
        out["weights_error"] = error(e)
    try:
        out["predicted"] = tf.nest.map_structure(
            lambda a: np.asarray(a).tolist(), model.predict(x if px is None else px, verbose=0, **(predict or {})))
    except Exception as e:
        out["predict_error"] = error(e)
    out["predict_report"] = reports().get("predict")
    return out


class CondLayer(layers.Layer):  # a branch on a tensor, written both ways
    def call(self, x):
        x = tf.cond(tf.reduce_mean(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
        if tf.reduce_sum(x) > 0:
            x = tf.nn.relu(x)
        return x


class FunctionLayer(layers.Layer):
    @tf.function
    def call(self, x):
        return tf.nn.relu(x) + 1.0


class CondMetric(keras.metrics.Metric):
    def __init__(self, name="cond_metric", **kw):
        super().__init__(name=name, **kw)
        self.total = self.add_weight("total", initializer="zeros")
        self.count = self.add_weight("count", initializer="zeros")

    def update_state(self, t, p, sample_weight=None):
        e = tf.reduce_mean(tf.abs(t - p))
        if e > 0.5:
            self.total.assign_add(e)
        else:
            self.total.assign_add(e * 2.0)
        self.count.assign_add(1.0)

    def result(self):
        return tf.cond(self.count > 0, lambda: self.total / self.count, lambda: 0.0)


class OwnTrainStep(keras.Model):  # subclassed, built by its first step
    def __init__(self):
        super().__init__()
        self.a, self.b = layers.Dense(6, activation="tanh"), layers.Dense(1)

    def call(self, x):
        return self.b(self.a(x))

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            p = self(x, training=True)
            loss = self.compiled_loss(y, p) * 0.5
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.compiled_metrics.update_state(y, p)
        return {m.name: m.result() for m in self.metrics}


def functional(predict_step=None, outputs=1):
    i = keras.Input((4,))
    h = layers.Dense(6, activation="tanh")(i)
    o = [layers.Dense(k + 1)(h) for k in range(outputs)]
    cls = type("OwnPredictStep", (keras.Model,), {"predict_step": predict_step}) if predict_step else keras.Model
    return cls(i, o if outputs > 1 else o[0])


def map_fn_loss(t, p):
    return tf.reduce_mean(tf.map_fn(lambda r: tf.reduce_sum(tf.square(r)), t - p))


def py_function_loss(t, p):
    return tf.reduce_mean(tf.square(t - p)) * tf.py_function(lambda: tf.constant(1.0), [], tf.float32)


def numpy_function_metric(t, p):
    return tf.reshape(tf.numpy_function(lambda a, b: np.float32(np.mean(np.abs(a - b))), [t, p], tf.float32), [])


inner = tf.function(lambda a: tf.reduce_sum(a) * 0.0 + 1.0)


def py_function_calling_a_function_loss(t, p):
    return tf.reduce_mean(tf.square(t - p)) * tf.py_function(lambda a: inner(a), [p], tf.float32)


def mapped(a, b):  # a tf.data map's Python op, running beside the fit's steps
    return tf.ensure_shape(tf.py_function(lambda x: inner(x) * x, [a], tf.float32), [4]), b


def failing_loss(t, p):
    loss = tf.reduce_mean(tf.square(t - p))
    tf.debugging.assert_less(loss, 0.0, message="a student assertion")
    return loss


class PredictEachEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.model.predict(X[:30], verbose=0).tolist())


def predict_in_callback():
    spy = PredictEachEpoch()
    out = run(dense(layers.Dropout(0.2)), fit=dict(epochs=2, batch_size=16, callbacks=[spy]))
    return dict(out, seen=spy.seen)


def recompiled():
    model = dense()
    first = run(model)
    model.layers[0].activation = tf.nn.relu  # seen by the next compile's fit and predict, as in tf_keras
    return {"first": first, "second": run(model, loss="mae", optimizer="sgd")}


cases = {
    "a layer with branches": lambda: run(dense(CondLayer())),
    "a layer whose call is a tf.function": lambda: run(dense(FunctionLayer())),
    "a loss with tf.map_fn": lambda: run(dense(), loss=map_fn_loss),
    "a loss with tf.py_function": lambda: run(dense(), loss=py_function_loss, metrics=[numpy_function_metric]),
    "a py_function calling a tf.function": lambda: run(dense(), loss=py_function_calling_a_function_loss),
    "the same with a callback": lambda: run(dense(), loss=py_function_calling_a_function_loss,
                                            fit=dict(epochs=2, batch_size=16, callbacks=[keras.callbacks.History()])),
    "a tf.data map with tf.py_function": lambda: run(
        dense(), x=tf.data.Dataset.from_tensor_slices((X, Y)).map(mapped).batch(16), y=None, fit=dict(epochs=2)),
    "an Embedding": lambda: run(keras.Sequential([layers.Embedding(20, 3, input_length=6),
                                                   layers.GlobalAveragePooling1D(), layers.Dense(1)]), x=T,
                                fit=dict(epochs=3, batch_size=16)),
    "an LSTM": lambda: run(keras.Sequential([layers.LSTM(3, input_shape=(5, 2)), layers.Dense(1)]), x=S),
    "BatchNormalization and Dropout": lambda: run(dense(layers.BatchNormalization(), layers.Dropout(0.3))),
    "a failing assertion": lambda: run(dense(), loss=failing_loss),
    "a custom metric": lambda: run(dense(), metrics=[CondMetric(), "mae"]),
    "a subclass with its own train_step": lambda: run(OwnTrainStep(), metrics=["mae"]),
    "a Sequential without an input shape": lambda: run(keras.Sequential([layers.Dense(6), layers.Dense(1)])),
    "a predict_step of classes": lambda: run(functional(lambda s, d: tf.argmax(s(d, training=False), axis=-1))),
    "a predict_step of a dict": lambda: run(functional(lambda s, d: {"p": s(d, training=False)})),
    "two outputs": lambda: run(functional(outputs=2), y=[Y, np.concatenate([Y, Y], 1)]),
    "XLA": lambda: run(dense(), jit_compile=True),
    "integers": lambda: run(dense(), px=np.arange(40).reshape(10, 4)),
    "float64": lambda: run(dense(), px=X.astype("float64") / 3),
    "3-D input": lambda: run(dense(), px=rng.normal(size=(7, 5, 4))),
    "the wrong shape": lambda: run(dense(), px=X[:, :3]),
    "tensors": lambda: run(dense(), x=tf.constant(X), y=tf.constant(Y), px=tf.constant(X)),
    "a batch larger than the data": lambda: run(dense(), predict=dict(batch_size=1000)),
    "a batch size of 0": lambda: run(dense(), predict=dict(batch_size=0)),
    "a negative batch size": lambda: run(dense(), predict=dict(batch_size=-5)),
    "predict in a callback": predict_in_callback,
    "compiled again": recompiled,
}
out = {}
for name, case in cases.items():
    keras.utils.set_random_seed(7)
    out[name] = case()
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
'''

#: seconds either process may take (about 15 s on a quiet machine): a deadlock fails the test, not CI's run
LIMIT = 900


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case in both processes, run at once: {"fused": ..., "keras": ...}."""
    from grader.execute import keras2_kernel

    folder = tmp_path_factory.mktemp("keras2_executor")
    script = folder / "cases.py"  # a file: autograph converts only code whose source it can read
    script.write_text(CASES)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = {mode: subprocess.Popen([sys.executable, str(script), mode, str(folder / f"{mode}.json"),
                                     keras2_kernel.__file__], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env) for mode in ("fused", "keras")}
    done, errors = {}, {}
    try:
        for mode, proc in procs.items():
            try:
                _, errors[mode] = proc.communicate(timeout=LIMIT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {mode} process did not finish in {LIMIT} s (a deadlock?)")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for mode, proc in procs.items():
        assert proc.returncode == 0, f"{mode}: {errors[mode][-3000:]}"
        done[mode] = json.loads((folder / f"{mode}.json").read_text())
    return done


def _without_reports(case):
    return {k: _without_reports(v) if isinstance(v, dict) and k in ("first", "second") else v
            for k, v in case.items() if not k.endswith("report")}


def _executors(case):
    return (case["fit_report"].get("executor") if case["fit_report"].get("fused") else None,
            case["predict_report"].get("executor") if case["predict_report"].get("fused") else None)


def test_every_case_ends_with_tf_keras_s_numbers_names_and_errors(runs):
    """Weights (and their names and the optimizer's), history, predictions and errors: tf_keras's own, bit for bit,
    in every case (a fused program that ran differently, or left a model that tf_keras's fit could not train,
    differs here)."""
    fused, keras = runs["fused"], runs["keras"]
    assert set(fused) == set(keras)
    for name in keras:
        assert _without_reports(fused[name]) == _without_reports(keras[name]), name


def test_branches_calls_loops_and_python_ops_run_on_the_threaded_executor(runs):
    """A program with a branch, a nested function, a loop of its own, a Python op or an Embedding's sparse updates
    is traced again for the threaded executor (the single-threaded one deadlocks on a branch, and gave an
    Embedding's fit other weights); plain ones stay single-threaded."""
    fused = runs["fused"]
    threaded = ("a layer with branches", "a layer whose call is a tf.function", "an LSTM")
    for name in threaded:
        assert _executors(fused[name]) == ("threaded", "threaded"), name
    # not in predict's program: a loss, a metric, an Embedding's sparse updates (other last bits single-threaded)
    for name in ("a loss with tf.map_fn", "a loss with tf.py_function", "a custom metric", "an Embedding"):
        assert _executors(fused[name]) == ("threaded", "single-threaded"), name
    for name in ("BatchNormalization and Dropout", "integers", "a batch larger than the data"):
        assert _executors(fused[name]) == ("single-threaded", "single-threaded"), name


def test_a_student_s_failing_assertion_is_the_fused_fit_s_own_error(runs):
    """The fused fit ran and the student's assertion stopped it: tf_keras's error, and the report says it was
    the fused fit that ran."""
    case = runs["fused"]["a failing assertion"]
    assert case["fit_error"].startswith("InvalidArgumentError")
    assert "assertion failed: [a student assertion]" in case["fit_error"]
    assert case["fit_report"]["fused"] is True


def test_models_built_by_their_first_step_train_fused_with_tf_keras_s_names(runs):
    """A subclass with its own ``train_step`` and a Sequential without an input shape are built in the fused
    program's first step: fused, their weights and the optimizer's slots named as tf_keras names them (no
    ``while/`` prefix).  Their optimizer was built with no variables, and the fit failed, before."""
    fused = runs["fused"]
    for name in ("a subclass with its own train_step", "a Sequential without an input shape"):
        assert fused[name]["fit_report"]["fused"] is True and "fit_error" not in fused[name], name
        assert not any(n.startswith("while") or "/while" in n for n in fused[name]["names"]), name
    names = fused["a subclass with its own train_step"]["names"]
    assert any(n.startswith("Adam/m/own_train_step/dense") for n in names)


def test_predict_falls_back_where_its_program_would_not_be_tf_keras_s(runs):
    """tf_keras's own predict for a ``predict_step`` of another type or structure (it crashed fused), two
    outputs, XLA (``jit_compile``: other numbers), tensors, batch sizes tf_keras refuses, input of the wrong shape or
    rank (tf_keras's own error, not the kernel's); the report says why."""
    fused = runs["fused"]
    why = {name: fused[name]["predict_report"]["why"] for name in fused if "predict_report" in fused[name]}
    assert why["a predict_step of classes"] == why["a predict_step of a dict"] == (
        "a predict_step whose batches are not one tensor of the model's output's type and shape")
    assert fused["a predict_step of classes"]["predicted"] == [0] * 96
    assert "XLA" in why["two outputs"] and "XLA" in why["XLA"]
    assert fused["XLA"]["fit_report"]["fused_fallback"] == "the model's own training settings"
    assert why["tensors"] == "data that is not one array of numbers"
    for name, size in (("a batch size of 0", 0), ("a negative batch size", -5)):
        assert why[name] == "a batch size that is not a positive number"
        assert fused[name]["predict_error"] == f"ValueError: Expected batch_size to be positive. Received is {size}."
    # the wrong shape: tf_keras's own error, from tf_keras's own predict (the fused trace failed first)
    assert why["the wrong shape"].startswith("could not be traced (ValueError")
    assert "keras2_kernel" not in fused["the wrong shape"]["predict_error"]
    assert "incompatible" in fused["the wrong shape"]["predict_error"]
    assert "keras2_kernel" not in fused["3-D input"]["predict_error"]
    assert why["3-D input"].startswith("could not be traced (ValueError")
    assert _executors(fused["float64"])[1] == "single-threaded"


def test_predict_sees_a_recompiled_model_and_runs_inside_a_fit_s_callback(runs):
    """A layer changed and the model compiled again: predict traces again (tf_keras's ``predict_function`` is reset
    by ``compile``; the fused one predicted with the old layer).  ``predict`` in a callback during tf_keras's fit
    is fused, with tf_keras's numbers (the first test)."""
    fused, keras = runs["fused"], runs["keras"]
    again = fused["compiled again"]
    assert again["first"]["predicted"] != again["second"]["predicted"]
    assert again["second"]["predicted"] == keras["compiled again"]["second"]["predicted"]
    assert again["second"]["predict_report"]["fused"] is True
    callback = fused["predict in a callback"]
    assert callback["fit_report"]["fused_fallback"] == "callbacks" and len(callback["seen"]) == 2
    assert callback["predict_report"]["fused"] is True


def test_a_py_function_that_calls_a_tf_function_does_not_hang_the_kernel(runs):
    """A loss whose ``tf.py_function`` calls a ``tf.function``: with the kernel's one inter-op thread, which the
    Python op held while the function waited for it, fit never finished, fused or tf_keras's own (with a
    callback).  Now both train, with tf_keras's numbers (the first test), and so does a fit of a ``tf.data``
    pipeline whose map calls one."""
    fused = runs["fused"]
    case, own = fused["a py_function calling a tf.function"], fused["the same with a callback"]
    assert case["fit_report"]["fused"] is True and case["fit_report"]["executor"] == "threaded"
    assert own["fit_report"]["fused_fallback"] == "callbacks"
    assert "fit_error" not in case and "fit_error" not in own and len(case["history"]["loss"]) == 2
    assert case["weights"] == own["weights"]
    # a tf.data map's Python op calls it beside tf_keras's fit: its eager switch is its thread's only
    mapped = fused["a tf.data map with tf.py_function"]
    assert mapped["fit_report"]["fused_fallback"] == "data other than arrays" and len(mapped["history"]["loss"]) == 2

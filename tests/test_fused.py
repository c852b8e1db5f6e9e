"""Fused training is Keras' training: the same weights, History and random draws as Keras' own fit.

Each test trains two models built from the same seed (so the same initial weights) on the same data with
the same seeded NumPy generator: one with Keras' own ``fit`` (on JAX), one with the fused ``fit``, and
compares the weights, every per-epoch value of the History and the generator's state afterwards.  A fused
fit is recognised by markers, never by time: its report says so and Keras' own train function was never
made (``model.train_function`` stays None; Keras' fit makes it).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, needs_sandbox
from grader.execute import fused_fit


RTOL, ATOL = 1e-5, 1e-6  # float32: the programs are XLA's either way, so in practice the results are identical


def _data(n=50, inputs=2, kind="regression", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs))
    if kind == "regression":
        return x, np.sin(x.sum(axis=1, keepdims=True))
    labels = (x[:, 0] * x[:, 1] > 0).astype(int)
    if kind == "sparse":
        return x, labels
    if kind == "binary":
        return x, labels.astype(float)[:, None]
    return x, np.eye(2)[labels]


def _model(seed, *, inputs=2, hidden=(6,), out=(1, "linear"), optimizer="adam", loss="mse", metrics=None,
           dropout=None, functional=False, input_layer=True):
    import keras

    keras.utils.set_random_seed(seed)
    if functional:
        inp = keras.Input((inputs,))
        h = inp
        for units in hidden:
            h = keras.layers.Dense(units, activation="relu")(h)
            if dropout:
                h = keras.layers.Dropout(dropout)(h)
        h = keras.layers.Dense(out[0])(h)
        model = keras.Model(inp, keras.layers.Activation(out[1])(h))
    else:
        layers = [keras.Input((inputs,))] if input_layer else []
        for units in hidden:
            layers.append(keras.layers.Dense(units, activation="relu"))
            if dropout:
                layers.append(keras.layers.Dropout(dropout))
        layers.append(keras.layers.Dense(out[0], activation=out[1]))
        model = keras.Sequential(layers)
    opt = optimizer() if callable(optimizer) else optimizer
    model.compile(optimizer=opt, loss=loss() if isinstance(loss, type) else loss, metrics=metrics)
    return model


def _both(make, x, y, rng_seed=7, fits=1, **fit_kwargs):
    """Train ``make()`` with Keras' own fit and with the fused fit; (keras run, fused run, fused reports),
    each run {weights, history (the last fit's), rng (NumPy's state after), model}."""
    fit_kwargs.setdefault("verbose", 0)
    runs, reports = {}, []
    for how in ("keras", "fused"):
        model = make()
        np.random.seed(rng_seed)
        for _ in range(fits):
            if how == "keras":
                history = fused_fit.keras_fit()(model, x, y, **fit_kwargs)
            else:
                history = fused_fit.fit(model, x, y, **fit_kwargs)
                reports.append(dict(fused_fit.last_report))
        runs[how] = {"weights": model.get_weights(), "history": history.history, "epochs": history.epoch,
                     "rng": np.random.get_state(), "model": model}
    return runs["keras"], runs["fused"], reports


def _assert_same(keras_run, fused_run, reports):
    assert all(r["fused"] for r in reports), reports
    assert fused_run["model"].train_function is None  # Keras' own training loop was never built
    assert keras_run["model"].train_function is not None
    for a, b in zip(keras_run["weights"], fused_run["weights"], strict=True):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
    assert list(fused_run["history"]) == list(keras_run["history"])  # the same keys, in the same order
    for key, values in keras_run["history"].items():
        assert all(isinstance(v, float) for v in fused_run["history"][key])
        np.testing.assert_allclose(fused_run["history"][key], values, rtol=RTOL, atol=ATOL, err_msg=key)
    assert fused_run["epochs"] == keras_run["epochs"]
    assert fused_run["model"].history.history is fused_run["history"]
    # the same draws from NumPy's generator: a seeded notebook goes on exactly as under Keras
    k, f = keras_run["rng"], fused_run["rng"]
    assert np.array_equal(k[1], f[1]) and k[2] == f[2]


OPTIMIZERS = {
    "sgd": lambda: _keras().optimizers.SGD(learning_rate=0.05),
    "sgd-nesterov": lambda: _keras().optimizers.SGD(learning_rate=0.02, momentum=0.9, nesterov=True),
    "adam": lambda: _keras().optimizers.Adam(),
    "adam-amsgrad-clipnorm": lambda: _keras().optimizers.Adam(learning_rate=0.01, amsgrad=True, clipnorm=0.5),
    "rmsprop": lambda: _keras().optimizers.RMSprop(),
    "rmsprop-centered-momentum": lambda: _keras().optimizers.RMSprop(momentum=0.5, centered=True),
    "adagrad": lambda: _keras().optimizers.Adagrad(learning_rate=0.1),
    "adadelta": lambda: _keras().optimizers.Adadelta(learning_rate=1.0),
    "adamax": lambda: _keras().optimizers.Adamax(),
    "nadam": lambda: _keras().optimizers.Nadam(),
    "adamw": lambda: _keras().optimizers.AdamW(weight_decay=0.01),
    "sgd-schedule": lambda: _keras().optimizers.SGD(
        learning_rate=_keras().optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5)),
}


def _keras():
    import keras

    return keras


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains_as_under_keras(name):
    # 50 samples in batches of 16: three full batches and a partial one of 2, every epoch
    x, y = _data()
    k, f, reports = _both(lambda: _model(3, optimizer=OPTIMIZERS[name], metrics=["mae"]), x, y,
                          epochs=3, batch_size=16)
    _assert_same(k, f, reports)
    assert set(k["history"]) == {"loss", "mae"}


@pytest.mark.parametrize("case", ["categorical", "sparse", "binary", "huber", "mae", "string-optimizer"])
def test_losses_and_metrics_as_under_keras(case):
    import keras

    setups = {
        "categorical": dict(kind="onehot", out=(2, "softmax"), loss="categorical_crossentropy",
                            metrics=["accuracy"]),
        "sparse": dict(kind="sparse", out=(2, "softmax"), loss="sparse_categorical_crossentropy",
                       metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy()]),
        "binary": dict(kind="binary", out=(1, "sigmoid"), loss=keras.losses.BinaryCrossentropy(label_smoothing=0.1),
                       metrics=["binary_accuracy", keras.metrics.AUC()]),
        "huber": dict(kind="regression", out=(1, "linear"), loss=keras.losses.Huber(delta=0.5),
                      metrics=["mse", keras.metrics.RootMeanSquaredError()]),
        "mae": dict(kind="regression", out=(1, "linear"), loss="mean_absolute_error", metrics=None),
        "string-optimizer": dict(kind="onehot", out=(2, "softmax"), loss="categorical_crossentropy",
                                 metrics=["accuracy"], optimizer="sgd"),
    }
    s = setups[case]
    x, y = _data(n=70, kind=s["kind"])
    k, f, reports = _both(lambda: _model(5, out=s["out"], loss=s["loss"], metrics=s["metrics"],
                                         optimizer=s.get("optimizer", "adam")), x, y, epochs=3, batch_size=32)
    _assert_same(k, f, reports)


@pytest.mark.parametrize("n,batch", [(10, 32), (64, 16), (65, 16)])
def test_the_last_partial_batch_and_a_single_partial_one(n, batch):
    x, y = _data(n=n)
    k, f, reports = _both(lambda: _model(1), x, y, epochs=3, batch_size=batch)
    _assert_same(k, f, reports)


def test_the_default_batch_size_and_an_unbuilt_sequential_model():
    x, y = _data(n=70)
    k, f, reports = _both(lambda: _model(2, input_layer=False), x, y, epochs=2)
    _assert_same(k, f, reports)


def test_validation_split_takes_the_last_fraction_and_adds_val_logs():
    x, y = _data(n=80, kind="onehot")
    k, f, reports = _both(lambda: _model(4, out=(2, "softmax"), loss="categorical_crossentropy",
                                         metrics=["accuracy"]), x, y, epochs=4, batch_size=16,
                          validation_split=0.25)
    _assert_same(k, f, reports)
    assert set(f["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_validation_data_with_its_own_batch_size():
    x, y = _data(n=60)
    xv, yv = _data(n=23, seed=1)
    k, f, reports = _both(lambda: _model(6, metrics=["mae"]), x, y, epochs=3, batch_size=16,
                          validation_data=(xv, yv), validation_batch_size=10)
    _assert_same(k, f, reports)
    assert set(f["history"]) == {"loss", "mae", "val_loss", "val_mae"}


@pytest.mark.parametrize("shuffle", [False, "batch"])
def test_shuffle_off_and_by_batch(shuffle):
    x, y = _data(n=50)
    k, f, reports = _both(lambda: _model(7), x, y, epochs=3, batch_size=16, shuffle=shuffle)
    _assert_same(k, f, reports)


def test_class_weight():
    x, y = _data(n=60, kind="onehot")
    k, f, reports = _both(lambda: _model(8, out=(2, "softmax"), loss="categorical_crossentropy",
                                         metrics=["accuracy"]), x, y, epochs=3, batch_size=16,
                          class_weight={0: 0.3, 1: 2.0})
    _assert_same(k, f, reports)


@pytest.mark.parametrize("functional", [False, True])
def test_dropout_draws_as_under_keras(functional):
    x, y = _data(n=50)
    k, f, reports = _both(lambda: _model(9, hidden=(16, 8), dropout=0.3, functional=functional), x, y,
                          epochs=3, batch_size=16)
    _assert_same(k, f, reports)
    # and Dropout did draw: a model without it ends elsewhere
    k2, _, _ = _both(lambda: _model(9, hidden=(16, 8), functional=functional), x, y, epochs=3, batch_size=16)
    assert not np.allclose(k2["weights"][0], f["weights"][0])


def test_a_second_fit_continues_the_first():
    """The second fit on a built model: no order is drawn to build it, the optimizer's state goes on."""
    x, y = _data(n=50)
    k, f, reports = _both(lambda: _model(10), x, y, fits=2, epochs=2, batch_size=16)
    _assert_same(k, f, reports)
    iterations = f["model"].optimizer.iterations
    assert int(iterations.numpy() if hasattr(iterations, "numpy") else iterations) == 2 * 2 * 4


def test_many_epochs_cross_chunks_and_the_program_is_reused_whatever_the_epochs():
    """Epochs beyond one compiled chunk (masked, not recompiled), and a later fit with another number of
    epochs, on another model of the same shapes, runs the program already compiled."""
    x, y = _data(n=20)
    per = fused_fit.chunk_epochs(20)
    k, f, reports = _both(lambda: _model(11, hidden=(3,)), x, y, epochs=per + 3, batch_size=8)
    _assert_same(k, f, reports)
    assert len(f["history"]["loss"]) == per + 3
    model = _model(12, hidden=(3,))
    fused_fit.fit(model, x, y, epochs=5, batch_size=8, verbose=0)
    assert fused_fit.last_report["fused"] and fused_fit.last_report["fused_program"] == "memory"
    assert len(model.history.history["loss"]) == 5


def test_verbose_prints_one_summary_line(capsys):
    x, y = _data(n=40)
    fused_fit.fit(_model(13), x, y, epochs=30, batch_size=16, verbose=1)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("Epoch 30/30 - loss: ") and "(fused: 30 epochs in" in out[0]
    fused_fit.fit(_model(13), x, y, epochs=3, batch_size=16, verbose=0)
    assert capsys.readouterr().out == ""


def test_history_callback_given_by_the_student_is_filled():
    import keras

    x, y = _data(n=40)
    mine = keras.callbacks.History()
    history = fused_fit.fit(_model(14), x, y, epochs=4, batch_size=16, verbose=0, callbacks=[mine])
    assert fused_fit.last_report["fused"] and history is mine and len(mine.history["loss"]) == 4


# -- outside the subset: Keras' own fit, and the reason recorded ---------------------------------------------

def _falls_back(make, x, y=None, **kw):
    model = make()
    fused_fit.fit(model, x, y, **kw) if y is not None else fused_fit.fit(model, x, **kw)
    report = dict(fused_fit.last_report)
    assert report["fused"] is False and report["fused_fallback"]
    assert model.train_function is not None  # Keras' own training loop did the work
    return report["fused_fallback"], model


def test_a_custom_callback_falls_back_to_keras_and_still_runs():
    import keras

    seen = []

    class Counter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)

    x, y = _data(n=40)
    why, model = _falls_back(lambda: _model(15), x, y, epochs=3, batch_size=16, verbose=0, callbacks=[Counter()])
    assert "Counter" in why and seen == [0, 1, 2]
    # the same training as Keras' own fit gives: the fallback is Keras' fit, untouched
    ref, other = _model(15), _model(15)
    np.random.seed(7)
    fused_fit.keras_fit()(ref, x, y, epochs=3, batch_size=16, verbose=0)
    np.random.seed(7)
    fused_fit.fit(other, x, y, epochs=3, batch_size=16, verbose=0, callbacks=[Counter()])
    for a, b in zip(ref.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_generator_falls_back_to_keras():
    x, y = _data(n=32)

    def batches():
        while True:
            yield x[:16], y[:16]

    why, _ = _falls_back(lambda: _model(16), batches(), epochs=2, steps_per_epoch=2, verbose=0)
    assert "x of type generator" in why


@pytest.mark.parametrize("extra,named", [({"sample_weight": np.ones(40)}, "sample_weight"),
                                          ({"initial_epoch": 1}, "initial_epoch"),
                                          ({"validation_freq": 2}, "validation_freq")])
def test_arguments_outside_the_subset_fall_back(extra, named):
    x, y = _data(n=40)
    why, _ = _falls_back(lambda: _model(17), x, y, epochs=2, batch_size=16, verbose=0, **extra)
    assert named in why


def test_a_custom_layer_or_loss_falls_back():
    import keras

    class Twice(keras.layers.Layer):
        def call(self, inputs):
            return 2 * inputs

    def my_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_true - y_pred))

    x, y = _data(n=40)

    def with_layer():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), Twice(), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        return model

    why, _ = _falls_back(with_layer, x, y, epochs=2, verbose=0)
    assert "Twice" in why
    why, _ = _falls_back(lambda: _model(18, loss=my_loss), x, y, epochs=2, verbose=0)
    assert "loss" in why


def test_keras_errors_are_keras_errors():
    """A fit Keras refuses is refused the same way (the fused fit runs Keras' own preparation)."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="compile"):
        fused_fit.fit(model, *_data(n=10), epochs=1, verbose=0)
    x, y = _data(n=10, inputs=3)
    with pytest.raises(ValueError):
        fused_fit.fit(_model(19), x, y, epochs=1, verbose=0)


# -- programs found by key, without lowering them ----------------------------------------------------------

class _Traced(BaseException):
    """Stops a fit once its program's keys are known: these tests need no compilation."""


def _lowered_hash(lowered) -> str:
    import hashlib

    return hashlib.sha256("\0".join([lowered.as_text(debug_info=False), str(lowered.in_tree),
                                      str(lowered.out_tree)]).encode()).hexdigest()


def _traced(model, x, y, lower=False, **kw):
    """What ``fit(model, x, y, epochs=1, **kw)`` would look its program up by, stopped before anything is
    compiled: {"step": the traced steps, "key": their ``_program_key``} and, with ``lower``, "program": the hash
    of the lowered chunk program with what it reads and returns, and the chunk's settings."""
    seen = {}

    def spy(model, key_parts, n, batch, n_val, val_batch, has_sw, args):
        state, perms, active, reset, tx, ty, sw, vx, vy = args
        step, spec = fused_fit._step(model, n, batch, n_val, val_batch, has_sw, state, tx, ty, sw, vx, vy, reset)
        seen.update(step=step, key=fused_fit._program_key(step, spec, key_parts, args))
        if lower:
            lowered = fused_fit._lowered(model, n, batch, n_val, val_batch, has_sw, args, spec)
            seen["program"] = _lowered_hash(lowered) + repr(key_parts)
        raise _Traced

    kw.setdefault("batch_size", 8)
    original = fused_fit._compiled
    fused_fit._compiled = spy
    try:
        fused_fit.fit(model, x, y, epochs=1, verbose=0, **kw)
    except _Traced:
        return seen
    finally:
        fused_fit._compiled = original
    raise AssertionError(f"not fused: {fused_fit.last_report}")


@pytest.fixture
def keys():
    """A function giving (``_program_key``, the hash of the lowered chunk program with what it reads and
    returns) of the program ``fit(model, x, y, **kw)`` would run."""
    def keys(model, x, y, **kw):
        seen = _traced(model, x, y, lower=True, **kw)
        return seen["key"], seen["program"]

    return keys


def _dense_model(*layers, inputs=2, optimizer="adam", loss="mse", metrics=None, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((inputs,)), *layers])
    model.compile(optimizer=optimizer() if callable(optimizer) else optimizer, loss=loss, metrics=metrics)
    return model


def _variants():
    """Recipes that differ in one thing each: {name: (make the model, data, fit arguments)}."""
    import keras

    L, C = keras.layers, keras.constraints
    reg, clf, sparse = _data(n=40), _data(n=40, kind="onehot"), _data(n=40, kind="sparse")
    dense = lambda **kw: (lambda: _dense_model(L.Dense(6, activation="relu", **kw), L.Dense(1)))  # noqa: E731
    v = {
        "base": (dense(), reg, {}),
        "units": (lambda: _dense_model(L.Dense(7, activation="relu"), L.Dense(1)), reg, {}),
        "tanh": (lambda: _dense_model(L.Dense(6, activation="tanh"), L.Dense(1)), reg, {}),
        "deeper": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(6, activation="relu"), L.Dense(1)),
                   reg, {}),
        "no-bias": (dense(use_bias=False), reg, {}),
        "maxnorm-2": (dense(kernel_constraint=C.MaxNorm(2.0)), reg, {}),
        "maxnorm-3": (dense(kernel_constraint=C.MaxNorm(3.0)), reg, {}),
        "dropout-0.1": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dropout(0.1), L.Dense(1)), reg, {}),
        "dropout-0.2": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dropout(0.2), L.Dense(1)), reg, {}),
        "mae": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(1), loss="mae"), reg, {}),
        "huber-1": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(1), loss=keras.losses.Huber(1.0)),
                    reg, {}),
        "huber-2": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(1), loss=keras.losses.Huber(2.0)),
                    reg, {}),
        "metric-mae": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(1), metrics=["mae"]), reg, {}),
        "batch-16": (dense(), reg, {"batch_size": 16}),
        "fewer-samples": (dense(), _data(n=36), {}),
        "validation": (dense(), reg, {"validation_split": 0.25}),
        "softmax": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(2, activation="softmax"),
                                         loss="categorical_crossentropy", metrics=["accuracy"]), clf, {}),
        "class-weight": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(2, activation="softmax"),
                                              loss="categorical_crossentropy", metrics=["accuracy"]), clf,
                         {"class_weight": {0: 1.0, 1: 2.0}}),
        "sparse": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(2, activation="softmax"),
                                        loss="sparse_categorical_crossentropy", metrics=["accuracy"]), sparse, {}),
        "adam-beta": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(1),
                                           optimizer=lambda: keras.optimizers.Adam(beta_1=0.5)), reg, {}),
        "sgd-momentum-0.5": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(1),
                                                  optimizer=lambda: keras.optimizers.SGD(momentum=0.5)), reg, {}),
        "sgd-momentum-0.9": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(1),
                                                  optimizer=lambda: keras.optimizers.SGD(momentum=0.9)), reg, {}),
        "adamw": (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(1),
                                       optimizer=lambda: keras.optimizers.AdamW(weight_decay=0.01)), reg, {}),
    }
    for name, make in OPTIMIZERS.items():
        v[f"optimizer-{name}"] = (lambda make=make: _dense_model(L.Dense(6, activation="relu"), L.Dense(1),
                                                                 optimizer=make), reg, {})

    def adamw_excluding_biases():
        opt = keras.optimizers.AdamW(weight_decay=0.01)
        opt.exclude_from_weight_decay(var_names=["bias"])
        return opt

    v["adamw-no-bias-decay"] = (lambda: _dense_model(L.Dense(6, activation="relu"), L.Dense(1),
                                                     optimizer=adamw_excluding_biases), reg, {})

    def frozen():
        model = _dense_model(L.Dense(6, activation="relu"), L.Dense(1))
        model.layers[0].trainable = False
        model.compile(optimizer="adam", loss="mse")
        return model

    v["frozen-layer"] = (frozen, reg, {})

    def wired(order):  # the same two layers, connected in either order
        keras.utils.set_random_seed(0)
        inp = keras.Input((4,))
        a, b = L.Dense(4, activation="relu"), L.Dense(4, activation="tanh")
        out = L.Dense(1)((b(a(inp)) if order == "ab" else a(b(inp))))
        model = keras.Model(inp, out)
        model.compile(optimizer="adam", loss="mse")
        return model

    four = _data(n=40, inputs=4)
    v["functional-ab"] = (lambda: wired("ab"), four, {})
    v["functional-ba"] = (lambda: wired("ba"), four, {})
    return v


def test_a_program_key_never_stands_for_two_programs(keys):
    """The key a program is found by (one traced step, not the lowered program) of each of many recipes that
    differ in one thing: wherever two keys are equal, so are the programs (else a stored program would train
    another recipe), and the other way round."""
    found = {name: keys(make(), *data, **kw) for name, (make, data, kw) in _variants().items()}
    assert [name for name, (key, _) in found.items() if key is None] == []
    by_key = {}
    for name, (key, program) in found.items():
        by_key.setdefault(key, {})[name] = program
    assert [names for names in by_key.values() if len(set(names.values())) > 1] == []
    # and the same program has the same key (the variants share programs only where they are the same
    # recipe: the default Adam, given twice, and AdamW with its weight decay, given twice)
    by_program = {}
    for name, (key, program) in found.items():
        by_program.setdefault(program, set()).add(name)
    assert sorted(sorted(names) for names in by_program.values() if len(names) > 1) == \
        [["adamw", "optimizer-adamw"], ["base", "optimizer-adam"]]
    assert len(by_key) == len(by_program)


def test_a_program_key_finds_the_same_recipe_written_another_way(keys):
    """Names Keras numbers, an optimizer given by name or object, the input's shape given by ``Input`` or
    ``input_dim``: the same program, so the same key (a student's notebook finds the reference's program)."""
    import keras

    x, y = _data(n=40)
    a = keys(_dense_model(keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1)), x, y)
    b = keys(_dense_model(keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1), seed=5), x, y)
    model = keras.Sequential([keras.layers.Dense(6, activation="relu", input_dim=2), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    c = keys(model, x, y)
    assert a == b == c and a[0] is not None


def test_a_program_key_is_the_same_where_jax_prints_in_colour(keys, monkeypatch):
    """In a Jupyter kernel JAX prints jaxprs in colour: the key is made from the same text there as in the
    grader's builder, which runs in no kernel (else no notebook would find a stored program)."""
    import keras
    from jax._src import pretty_printer

    x, y = _data(n=40)
    make = lambda: _dense_model(keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1))  # noqa: E731
    plain = keys(make(), x, y)
    monkeypatch.setattr(pretty_printer, "CAN_USE_COLOR", True)
    monkeypatch.setattr(pretty_printer, "_can_use_color", lambda: True, raising=False)
    assert "\x1b[" in str(_traced(make(), x, y)["step"].jaxpr)  # JAX's own text is in colour now
    assert keys(make(), x, y) == plain


def test_keras_patched_by_the_notebook_or_a_setting_its_config_omits_changes_the_key(keras_epsilon, keys,
                                                                                       monkeypatch):
    """What the traced computation depends on beyond any configuration: Keras' epsilon, a Keras method a
    notebook replaced, Huber's delta (which ``Huber.get_config`` leaves out): another key each."""
    import keras

    x, y = _data(n=40, kind="onehot")
    make = lambda: _dense_model(keras.layers.Dense(6, activation="relu"),  # noqa: E731
                                keras.layers.Dense(2, activation="softmax"), loss="categorical_crossentropy")
    plain = keys(make(), x, y)
    keras.config.set_epsilon(1e-3)
    assert keys(make(), x, y)[0] != plain[0]
    keras.config.set_epsilon(keras_epsilon)
    with monkeypatch.context() as m:
        call = keras.layers.Dense.call
        m.setattr(keras.layers.Dense, "call", lambda self, inputs, training=None: call(self, inputs) * 2.0)
        assert keys(make(), x, y)[0] != plain[0]
    assert keys(make(), x, y) == plain  # all put back: the same key again
    reg = _data(n=40)
    huber = [keys(_dense_model(keras.layers.Dense(6), keras.layers.Dense(1), loss=keras.losses.Huber(d)), *reg)[0]
             for d in (1.0, 2.0)]
    assert huber[0] != huber[1]


def test_a_setting_that_acts_only_when_compiling_changes_the_key(keys):
    """``jax_threefry_partitionable`` changes how Dropout's random bits are compiled, not the traced step: the
    key covers JAX's settings, so a program compiled under one value is not reused under the other."""
    import jax
    import keras

    x, y = _data(n=40)
    make = lambda: _dense_model(keras.layers.Dense(6, activation="relu"), keras.layers.Dropout(0.5),  # noqa: E731
                                keras.layers.Dense(1))
    before = jax.config.jax_threefry_partitionable
    plain = keys(make(), x, y)
    try:
        jax.config.update("jax_threefry_partitionable", not before)
        flipped = keys(make(), x, y)
    finally:
        jax.config.update("jax_threefry_partitionable", before)
    assert flipped[1] != plain[1]  # another program (its lowered text differs too)...
    assert flipped[0] != plain[0]  # ...and another key, though the traced step is the same


def test_a_model_only_the_last_partial_batch_breaks_is_not_trained_with_anothers_program():
    """A Dropout whose noise shape names the batch size traces like a plain Dropout on a full batch and fails
    on the last partial one, as under Keras: it falls back to Keras' own fit, which says what is wrong,
    instead of training with a plain Dropout's program, already compiled (the steps are traced at the first
    batch's size only)."""
    import keras

    x, y = _data(n=40)
    make = lambda **kw: _dense_model(keras.layers.Dense(16, activation="relu"),  # noqa: E731
                                     keras.layers.Dropout(0.5, **kw), keras.layers.Dense(1))
    fused_fit.fit(make(), x, y, epochs=2, batch_size=16, verbose=0)
    assert fused_fit.last_report["fused"]
    with pytest.raises(ValueError):
        fused_fit.keras_fit()(make(noise_shape=(16, 16)), x, y, epochs=2, batch_size=16, verbose=0)
    with pytest.raises(ValueError):
        fused_fit.fit(make(noise_shape=(16, 16)), x, y, epochs=2, batch_size=16, verbose=0)
    assert fused_fit.last_report["fused_fallback"] == "a Dropout noise shape that names the batch size"
    fused_fit.fit(make(noise_shape=(None, 16)), x, y, epochs=2, batch_size=16, verbose=0)  # the batch left free
    assert fused_fit.last_report["fused"]


@pytest.fixture
def keras_epsilon():
    import keras

    before = keras.config.epsilon()
    yield before
    keras.config.set_epsilon(before)


# -- installed: beneath the capture hook, in the grader's own training ---------------------------------------

@pytest.fixture
def installed():
    """The fused fit installed and the capture hook on top of it, as in the kernel; put back afterwards."""
    import keras

    saved = keras.Model.fit, keras.Model.predict, fused_fit._state["installed"], fused_fit._state["original"]
    fused_fit.uninstall()
    yield
    keras.Model.fit, keras.Model.predict = saved[0], saved[1]
    fused_fit._state["installed"], fused_fit._state["original"] = saved[2], saved[3]


def test_the_capture_hook_records_whether_each_fit_was_fused(installed, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADER_CAPTURE_DIR", str(tmp_path))
    assert fused_fit.install()
    exec(compile((ROOT / "grader" / "execute" / "capture_kernel.py").read_text(), "capture_kernel.py", "exec"), {})
    x, y = _data(n=40)
    model = _model(20)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert model.train_function is None
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, sample_weight=np.ones(40))
    assert model.train_function is not None
    metas = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("capture-*.json"))]
    assert [m["fused"] for m in metas] == [True, False]
    assert metas[0]["fused_program"] in ("compiled", "memory", "disk", "stored") and metas[0]["fused_fallback"] is None
    assert metas[1]["fused_fallback"] == "sample_weight"
    # and harvest carries it into the grader's record, bounded
    from grader.harvest import take_capture

    caps = [take_capture(tmp_path, p.name, tmp_path / "taken") for p in sorted(tmp_path.glob("capture-*.json"))]
    assert [c.provenance().fused for c in caps] == [True, False]
    assert caps[1].settings["fused_fallback"] == "sample_weight"


def test_the_grader_retrains_recipes_with_the_fused_fit(installed, tmp_path):
    from grader.evaluate import retrain
    from grader.spec import load_assignment

    from conftest import TUTORIAL6

    x, y = _data(n=60, kind="onehot")
    template = _model(21, out=(2, "softmax"), loss="categorical_crossentropy")
    template.save(tmp_path / "m.keras")
    recipe = retrain.recipe_from_capture({"optimizer_config": {"module": "keras.optimizers", "class_name": "Adam",
                                                               "config": {"learning_rate": 0.01}},
                                          "loss": "categorical_crossentropy", "epochs": 5, "batch_size": 16},
                                         x, y)
    limits = load_assignment(TUTORIAL6).limits
    out = retrain.train(tmp_path / "m.keras", recipe, 3, 100, tmp_path / "out.keras", limits)
    assert out == {"epochs": 5, "fused": True}


def test_calibration_trains_its_reference_runs_fused(installed, tmp_path):
    import shutil

    from conftest import TUTORIAL6
    from grader.calibrate import calibrate

    spec = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, spec, ignore=shutil.ignore_patterns("__pycache__"))
    fused_fit.last_report.clear()
    calibrate(spec, runs=3, tasks=["1a"])
    assert fused_fit.last_report["fused"] is True and fused_fit.last_report["fused_epochs"] == 200


# -- the compile cache: built by the grader, read-only and hit in the sandbox ----------------------------------

TINY = """
import json, os, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np, keras
F = sys.modules.get("grader_fused_fit")
if F is None:
    sys.path.insert(0, {grader_root!r})
    from grader.execute import fused_fit as F
    F.install(cache_dir={cache!r}, cache_writable=True)
keras.utils.set_random_seed(1)
m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(1)])
m.compile(optimizer="rmsprop", loss="mse")
x = np.random.default_rng(0).normal(size=(30, 2)); y = x[:, :1] ** 2
m.fit(x, y, epochs=3, batch_size=8, verbose=0)
report = dict(F.last_report)
report["font_lists"] = {{f: open(os.path.join(os.environ["MPLCONFIGDIR"], f)).read()
                         for f in os.listdir(os.environ["MPLCONFIGDIR"]) if f.startswith("fontlist")}}
try:
    open(os.path.join({cache!r}, "poison"), "w").write("x")
    report["wrote"] = True
except OSError as e:
    report["wrote"] = e.strerror
print("REPORT " + json.dumps(report))
"""


@needs_sandbox
def test_the_compile_cache_is_read_only_in_the_sandbox_and_hits_there(tmp_path):
    from grader.execute import compile_cache
    from grader.execute.runner import FUSED_CALL, KERNEL_MODULE_LOADER
    from grader.execute.sandbox import Sandbox

    cache = tmp_path / "cache"
    cache.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras"),
           "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", **compile_cache.KERNEL_XLA_ENV,
           "MPLCONFIGDIR": str(cache / fused_fit.FONT_LIST_DIR)}  # as compile_cache.build runs its builder
    built = subprocess.run([sys.executable, "-c", TINY.format(grader_root=str(ROOT), cache=str(cache))], env=env,
                           capture_output=True, text=True, timeout=300)
    assert "REPORT" in built.stdout, built.stderr[-2000:]
    assert json.loads(built.stdout.split("REPORT ")[1])["fused_program"] == "compiled"
    assert list(cache.glob("jit_grader_fused_chunk-*"))  # the builder wrote the chunk program
    assert len(list((cache / fused_fit.PROGRAMS_DIR).glob("*.program"))) == 1  # and stored it by its key
    built_fonts = {}
    for path in (cache / fused_fit.FONT_LIST_DIR).glob("fontlist*"):
        # written again in a layout of its own (matplotlib's is indent=2): a list the sandboxed matplotlib made
        # for itself cannot pass for the copy
        built_fonts[path.name] = json.dumps(json.loads(path.read_text()), indent=1)
        path.write_text(built_fonts[path.name])
    assert built_fonts
    for dirpath, _, files in os.walk(cache):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    before = sorted(p.name for p in cache.iterdir())

    sandbox = Sandbox(tmp_path / "work", tmp_path / "runtime", readonly_dirs=((cache, compile_cache.INNER),))
    sandbox.prepare()
    runtime = sandbox.runtime_dir
    (runtime / "grader_fused_fit.py").write_text((ROOT / "grader" / "execute" / "fused_fit.py").read_text())
    loader = KERNEL_MODULE_LOADER.format(name="grader_fused_fit", path=str(runtime / "grader_fused_fit.py"),
                                         call=FUSED_CALL)
    code = loader + TINY.format(grader_root="/nonexistent", cache=compile_cache.INNER)
    try:
        cmd, run_env = sandbox.wrap([sys.executable, "-c", code],
                                    {"HOME": sandbox.inner_work, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
                                     "GRADER_JAX_CACHE": compile_cache.INNER, "PYTHONDONTWRITEBYTECODE": "1",
                                     "MPLCONFIGDIR": "/tmp/matplotlib", **compile_cache.KERNEL_XLA_ENV})
        done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=300)
    finally:
        sandbox.cleanup()
    assert "REPORT" in done.stdout, done.stderr[-2000:]
    report = json.loads(done.stdout.split("REPORT ")[1])
    assert report["fused"] and report["fused_program"] == "stored"  # compiled outside, loaded inside
    assert report["wrote"] == "Read-only file system"
    assert report["font_lists"] == built_fonts  # matplotlib's font list, copied from the cache before Keras' import
    assert "persistent compilation cache" not in done.stderr  # a miss or a refused write says nothing
    assert sorted(p.name for p in cache.iterdir()) == before


READER = """
import json, os, shutil, sys
sys.path.insert(0, {grader_root!r})
import numpy as np, keras
from grader.execute import fused_fit as F
F.install(cache_dir={cache!r})
program = {program!r}
kept = program + ".kept"
os.rename(program, kept)
x = np.random.default_rng(0).normal(size=(30, 2)); y = x[:, :1] ** 2
got = {{}}
for how in ("link", "garbage", "huge", "folder", "real"):
    if how == "link":
        os.symlink(kept, program)
    elif how == "garbage":
        open(program, "wb").write(os.urandom(1000))
    elif how == "huge":  # the real program, then a hole past the size cap (sparse: no disk used)
        shutil.copyfile(kept, program)
        os.truncate(program, F._MAX_STORED_BYTES + 1)
    elif how == "folder":
        os.mkdir(program)
    else:
        shutil.copyfile(kept, program)
    F._state["programs"].clear()
    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(1)])
    m.compile(optimizer="rmsprop", loss="mse")
    m.fit(x, y, epochs=3, batch_size=8, verbose=0)
    got[how] = [F.last_report.get("fused_program"), [w.tolist() for w in m.get_weights()]]
    if os.path.isdir(program) and not os.path.islink(program):
        os.rmdir(program)
    else:
        os.unlink(program)
print("REPORT " + json.dumps(got))
"""


@pytest.mark.slow
def test_a_stored_program_that_is_a_link_garbage_or_no_file_is_not_loaded(tmp_path):
    """The kernel loads a stored program only from a regular file of a bounded size that unpickles into one:
    a link (even to the real program), garbage, a file past the size cap or a folder in its place is passed
    over, and the program is compiled (JAX's persistent cache serves it) and trains the same network."""
    from grader.execute import compile_cache

    cache = tmp_path / "cache"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras"),
           "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", **compile_cache.KERNEL_XLA_ENV,
           "MPLCONFIGDIR": str(tmp_path / "mpl")}
    built = subprocess.run([sys.executable, "-c", TINY.format(grader_root=str(ROOT), cache=str(cache))], env=env,
                           capture_output=True, text=True, timeout=300)
    assert "REPORT" in built.stdout, built.stderr[-2000:]
    [program] = (cache / fused_fit.PROGRAMS_DIR).glob("*.program")
    done = subprocess.run([sys.executable, "-c", READER.format(grader_root=str(ROOT), cache=str(cache),
                                                               program=str(program))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert "REPORT" in done.stdout, done.stderr[-2000:]
    got = json.loads(done.stdout.split("REPORT ")[1])
    assert {how: g[0] for how, g in got.items()} == {"link": "disk", "garbage": "disk", "huge": "disk",
                                                    "folder": "disk", "real": "stored"}
    assert got["link"][1] == got["garbage"][1] == got["huge"][1] == got["folder"][1] == got["real"][1]


def test_the_cache_folder_is_keyed_by_versions_flags_and_the_fused_source(assignment, monkeypatch, tmp_path):
    from grader.execute import compile_cache

    monkeypatch.setenv("GRADER_CACHE_DIR", str(tmp_path))
    first = compile_cache.cache_dir(assignment)
    assert first.parent == tmp_path / "jax" and compile_cache.ready(assignment) is None
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9" if name == "jaxlib" else real(name))
    assert compile_cache.cache_dir(assignment) != first
    monkeypatch.setattr(importlib.metadata, "version", real)
    monkeypatch.setitem(compile_cache.KERNEL_XLA_ENV, "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    assert compile_cache.cache_dir(assignment) != first
    monkeypatch.setenv("GRADER_FUSED", "nocache")
    assert compile_cache.enabled() and not compile_cache.cache_enabled() and compile_cache.ready(assignment) is None
    monkeypatch.setenv("GRADER_FUSED", "0")
    assert not compile_cache.enabled() and compile_cache.build(assignment) is None
    assert fused_fit.install() is False  # nor do the grader's own processes train fused


def test_cache_folders_unused_for_a_month_and_dead_builds_are_pruned_and_a_used_one_is_kept(assignment, monkeypatch,
                                                                                           tmp_path):
    from grader.execute import compile_cache

    monkeypatch.setenv("GRADER_CACHE_DIR", str(tmp_path))
    base = tmp_path / "jax"
    current = compile_cache.cache_dir(assignment)
    now = time.time()
    month = compile_cache.UNUSED_DAYS * 86400

    def folder(name, age, manifest=True):
        path = base / name
        path.mkdir(parents=True)
        (path / "entry").write_bytes(b"compiled")
        if manifest:
            (path / compile_cache.MANIFEST).write_text("{}")
            os.utime(path / compile_cache.MANIFEST, (now - age, now - age))
        os.utime(path, (now - age, now - age))
        return path

    folder(current.name, 2 * month)  # old, but this batch's: ready() marks it used
    old = folder("jax0.1-old", month + 3600)
    recent = folder("jax0.1-recent", month - 3600)
    unfinished = folder("jax0.1-unfinished", month + 3600, manifest=False)
    dead_build = folder(".building-abc", 2 * 86400, manifest=False)
    live_build = folder(".building-def", 60, manifest=False)
    other = folder("not-a-cache", 10 * month, manifest=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / "jax0.1-link").symlink_to(outside)

    assert compile_cache.ready(assignment) == current
    assert time.time() - (current / compile_cache.MANIFEST).stat().st_mtime < 60
    real_utime = os.utime

    def read_only(path, *a, **k):  # a cache folder this user may read but not write (built by another)
        if str(path).endswith(compile_cache.MANIFEST):
            raise PermissionError(13, "Permission denied")
        return real_utime(path, *a, **k)

    monkeypatch.setattr(os, "utime", read_only)
    assert compile_cache.ready(assignment) == current  # still found: not built again
    monkeypatch.setattr(os, "utime", real_utime)
    removed = compile_cache.prune(base, keep=tmp_path / "nothing")
    assert sorted(p.name for p in removed) == sorted(p.name for p in (old, unfinished, dead_build))
    assert current.is_dir() and recent.is_dir() and live_build.is_dir() and other.is_dir()
    assert outside.is_dir() and (base / "jax0.1-link").is_symlink()  # a link is never followed nor removed
    assert not old.exists() and not unfinished.exists() and not dead_build.exists()


PREDICT = """
import json, os, sys
import numpy as np, keras, jax.monitoring
sys.path.insert(0, {grader_root!r})
from grader.execute import fused_fit
fused_fit.install(cache_dir={cache!r})   # read-only, as in the kernel
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event)
                                       if event == "/jax/compilation_cache/cache_hits" else None)
x = np.linspace(0, 1, 200)
counts = {{}}
for units in (150, 7):   # the sheet's task 1c network, and one no reference has
    m = keras.Sequential([keras.Input((1,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(1)])
    before = len(hits)
    m.predict(x, verbose=0)
    counts[units] = len(hits) - before
print(json.dumps(counts))
"""


def test_the_compile_cache_holds_the_predictions_a_notebook_plots(assignment, tmp_path):
    from grader.execute import compile_cache

    folder = compile_cache.build(assignment)
    assert folder is not None
    built = json.loads((folder / compile_cache.MANIFEST).read_text())["tasks"]
    assert all(task.get("predict") is True for task in built.values()), built
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras"),
           "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", **compile_cache.KERNEL_XLA_ENV}
    done = subprocess.run([sys.executable, "-c", PREDICT.format(grader_root=str(ROOT), cache=str(folder))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["150"] >= 2  # the full batches' program and the last batch's, both from the cache
    assert counts["7"] == 0  # a network no reference has: compiled in the process, as before
    assert list((folder / fused_fit.FONT_LIST_DIR).glob("fontlist-v*.json"))  # matplotlib's, for the kernels


FONTS = """
import logging, os, sys
sys.path.insert(0, {grader_root!r})
from grader.execute import fused_fit
logging.basicConfig(level=logging.INFO, format="LOG %(message)s")
copied = fused_fit.use_font_list({cache!r}) if {use!r} == "copy" else None
if {use!r} == "install":  # as calibration's and re-training's processes install the fused fit: no font list
    fused_fit.install(cache_dir={cache!r})
import matplotlib.font_manager
print("COPIED", copied)
"""


def test_a_kernel_takes_matplotlibs_font_list_from_the_cache_instead_of_making_one(tmp_path):
    cache = tmp_path / "cache"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLCONFIGDIR": str(cache / fused_fit.FONT_LIST_DIR)}
    made = subprocess.run([sys.executable, "-c", FONTS.format(grader_root=str(ROOT), cache=None, use="no")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert "generated new fontManager" in made.stderr, made.stderr[-2000:]  # the builder's matplotlib made it
    listed = sorted((cache / fused_fit.FONT_LIST_DIR).glob("fontlist-v*.json"))
    assert listed

    def kernel(config: Path, use: str) -> str:
        done = subprocess.run([sys.executable, "-c", FONTS.format(grader_root=str(ROOT), cache=str(cache), use=use)],
                              env={**env, "MPLCONFIGDIR": str(config)}, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    said = kernel(tmp_path / "fresh", use="copy")
    assert "COPIED True" in said and "generated new fontManager" not in said
    assert (tmp_path / "fresh" / listed[0].name).read_bytes() == listed[0].read_bytes()
    assert "generated new fontManager" in kernel(tmp_path / "without", use="no")  # what every kernel did
    # a TA's own MPLCONFIGDIR is not given the list by the grader's training processes
    assert "generated new fontManager" in kernel(tmp_path / "TA", use="install")
    own = tmp_path / "own"  # a list the kernel's matplotlib already has is left alone
    own.mkdir()
    (own / listed[0].name).write_text("{}")
    said = kernel(own, use="copy")
    assert "COPIED False" in said and (own / listed[0].name).read_text() != "{}"  # matplotlib remade its bad one

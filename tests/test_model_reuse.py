"""A network built once for a class's many files of it: every file still loads as a fresh load would load it."""
import h5py
import numpy as np
import pytest

from conftest import small_model
from grader import keras_io
from grader.errors import SubmissionError
from grader.intake.formats import HDF5


def _save(model, path):
    model.save(path)
    return path


def _vetted(path):
    return keras_io.read_config(path, HDF5, 2_000_000)


def _load(built, path):
    vetted = _vetted(path)
    return built.load(path, vetted["config"], vetted["config_text"])


def _same_model(a, b, inputs: int) -> bool:
    x = np.random.default_rng(0).normal(size=(256, inputs)).astype(np.float32)
    return (all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights(), strict=True))
            and np.array_equal(keras_io.predict(a, x), keras_io.predict(b, x))
            and keras_io.describe(a) == keras_io.describe(b))


def test_files_of_a_network_already_built_load_as_a_fresh_load_would(tmp_path):
    first = _save(small_model(hidden=((4, "relu"), (4, "relu")), seed=1), tmp_path / "first.h5")
    small_model(seed=9)  # layers made before: the next model's layers have other names, as in a notebook
    renamed = _save(small_model(hidden=((4, "relu"), (4, "relu")), seed=2), tmp_path / "renamed.h5")
    other = _save(small_model(hidden=((8, "tanh"),), seed=3), tmp_path / "other.h5")
    names = [[layer["config"]["name"] for layer in _vetted(p)["config"]["config"]["layers"]] for p in (first, renamed)]
    assert names[0] != names[1]
    built = keras_io.BuiltModels()
    for path in (first, renamed, other, renamed, first):
        assert _same_model(_load(built, path), keras_io.load(path), 2), path.name
    assert (built.built, built.hits) == (2, 3)  # one build per network, whatever its layers are called


def test_a_functional_model_is_reused_only_for_its_own_configuration(tmp_path):
    import keras

    def functional(seed, name):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((2,), name=f"{name}_in")
        hidden = keras.layers.Dense(4, activation="relu", name=f"{name}_hidden")(inputs)
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name=f"{name}_out")(hidden))

    a = _save(functional(1, "a"), tmp_path / "a.h5")
    b = _save(functional(2, "b"), tmp_path / "b.h5")  # the same network, but its graph is written with names
    built = keras_io.BuiltModels()
    for path in (a, b, a):
        assert _same_model(_load(built, path), keras_io.load(path), 2)
    assert (built.built, built.hits) == (2, 1)


def test_a_damaged_file_of_a_known_network_fails_as_a_fresh_load_fails(tmp_path):
    good = _save(small_model(seed=1), tmp_path / "good.h5")
    damaged = _save(small_model(seed=2), tmp_path / "damaged.h5")
    with h5py.File(damaged, "r+") as f:  # a weight gone: the configuration is fine, the weights are not
        group = f["model_weights"]
        layer = group[group.attrs["layer_names"][-1]]
        del layer[layer.attrs["weight_names"][0]]
    built = keras_io.BuiltModels()
    _load(built, good)
    with pytest.raises(SubmissionError) as reused:
        _load(built, damaged)
    with pytest.raises(SubmissionError) as fresh:
        keras_io.load(damaged)
    assert type(reused.value) is type(fresh.value) and reused.value.message == fresh.value.message
    assert _same_model(_load(built, good), keras_io.load(good), 2)  # the half-filled model was not kept
    assert built.built == 2  # good, then good again after the damaged file dropped it


def test_only_plain_sequential_models_lose_their_names_in_the_key():
    seq = {"class_name": "Sequential", "config": {"name": "s1", "layers": [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 2]}},
        {"class_name": "Dense", "config": {"name": "dense_7", "units": 4, "activation": "relu"}}]}}
    import json

    text = json.dumps(seq)
    renamed = text.replace("dense_7", "dense_40").replace('"s1"', '"s9"')
    assert keras_io.build_key(seq, text) == keras_io.build_key(json.loads(renamed), renamed)
    wider = text.replace('"units": 4', '"units": 5')
    assert keras_io.build_key(seq, text) != keras_io.build_key(json.loads(wider), wider)
    nested = json.loads(text)
    nested["config"]["layers"].append({"class_name": "Sequential", "config": {"name": "inner", "layers": []}})
    assert keras_io.build_key(nested, json.dumps(nested)).startswith("text:")

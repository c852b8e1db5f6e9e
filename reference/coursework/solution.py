"""Reference models of the coursework: one small classifier per dataset.

``task_<N>(seed) -> (model, (X, y), scaling)``: trained on synthetic data of
dataset N's form (datasets.py) with its inputs standardised; ``scaling`` is the
2 x 6 array the coursework's ``username-N.txt`` holds (row 0 the offsets, row 1
the scales: ``Xt = (X - s[0]) / s[1]``).  ``train(X, y, seed)`` trains the
same network on any data, the real datasets included.
"""
from __future__ import annotations

import numpy as np

from datasets import gen_catapult

SIZES = {1: 2000, 2: 4000}  # the real datasets' sizes
HIDDEN = (8, 8)
EPOCHS = 60


def train(X, y, seed: int, hidden=HIDDEN, epochs: int = EPOCHS):
    import keras

    keras.utils.set_random_seed(seed)
    scaling = np.array([X.mean(axis=0), X.std(axis=0)])
    Xt = (X - scaling[0]) / scaling[1]
    model = keras.Sequential([keras.Input((X.shape[1],))]
                             + [keras.layers.Dense(units, activation="relu") for units in hidden]
                             + [keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(Xt, keras.utils.to_categorical(y, 2), epochs=epochs, batch_size=32, verbose=0)
    return model, scaling


def _task(dataset: int, seed: int):
    X, y = gen_catapult(SIZES[dataset], dataset, np.random.default_rng(seed))
    model, scaling = train(X, y, seed)
    return model, (X, y), scaling


def task_1(seed: int):
    return _task(1, seed)


def task_2(seed: int):
    return _task(2, seed)
